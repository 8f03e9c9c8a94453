//! The warm start: before the live feeds, recent events from ClickHouse fill the windows (a
//! 30-minute average is right at once) and tell absence rules which sensors were alive, without
//! a transition (what was notified before is in the state file). With ClickHouse away the
//! alerter starts cold and the windows fill as events arrive.

use cityops_clickhouse::{ClickHouse, EventRow, TableColumns};
use cityops_config::ClickHouseConfig;
use cityops_event::{Domain, Event, Quality, Timestamp};
use cityops_rules::{Kind, MatchOp, RuleSet};
use std::collections::BTreeSet;

/// Events a warm start reads at most (the oldest beyond it are left out).
pub const MAX_WARM_EVENTS: usize = 2_000_000;

/// How far back a rule needs events: its window, or a few absence intervals; `None` for rules
/// that need no history (threshold).
fn lookback_ms(kind: &Kind) -> Option<i64> {
    match kind {
        Kind::Window { over_ms, .. } | Kind::RateOfChange { over_ms, .. } => Some(*over_ms),
        Kind::Absence {
            expected_ms,
            intervals,
            factor,
            ..
        } => {
            let longest = intervals
                .values()
                .copied()
                .chain(*expected_ms)
                .max()
                .unwrap_or(60_000);
            Some(((longest as f64 * factor * 2.0) as i64).max(600_000))
        }
        // A query rule reads ClickHouse itself at each evaluation.
        Kind::Threshold { .. } | Kind::Query { .. } => None,
    }
}

/// The query of the warm start: the events the rules need, oldest first. When every rule
/// that needs history names its feeds (or metrics) by equality, only those are read.
pub fn query(database: &str, rules: &RuleSet, now_ms: i64, max_lookback_ms: i64) -> Option<String> {
    let needing: Vec<_> = rules
        .rules
        .iter()
        .filter_map(|r| lookback_ms(&r.kind).map(|l| (r, l.min(max_lookback_ms))))
        .collect();
    let lookback = needing.iter().map(|(_, l)| *l).max()?;
    if lookback <= 0 {
        return None;
    }
    let equal = |name: &str| -> Option<BTreeSet<String>> {
        let mut values = BTreeSet::new();
        for (rule, _) in &needing {
            let m = rule
                .selector
                .matchers
                .iter()
                .find(|m| m.name == name && m.op == MatchOp::Equal)?;
            values.insert(m.value.clone());
        }
        Some(values)
    };
    let quote = |s: &str| format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"));
    let mut filter = format!("ts >= toDateTime({})", (now_ms - lookback) / 1000);
    if let Some(feeds) = equal("feed") {
        filter.push_str(&format!(
            " AND feed IN ({})",
            feeds
                .iter()
                .map(|f| quote(f))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if let Some(metrics) = equal("metric") {
        filter.push_str(&format!(
            " AND metric IN ({})",
            metrics
                .iter()
                .map(|m| quote(m))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let columns: Vec<&str> = EventRow::COLUMNS.iter().map(|(name, _)| *name).collect();
    // The newest events when there are more than the bound; sorted oldest first afterwards.
    Some(format!(
        "SELECT * FROM (SELECT {cols} FROM {database}.events WHERE {filter} ORDER BY ts DESC, ts_ms DESC LIMIT {MAX_WARM_EVENTS}) ORDER BY ts, ts_ms",
        cols = columns.join(", ")
    ))
}

/// The event of a stored row (its arrival is known to the second).
pub fn event_of(row: EventRow) -> Option<Event> {
    let quality = match row.quality.as_str() {
        "good" => Quality::Good,
        "suspect" => Quality::Suspect,
        "bad" => Quality::Bad,
        _ => return None,
    };
    Some(Event {
        event_id: row.event_id,
        ts: Timestamp::from_millis(i64::from(row.ts) * 1000 + i64::from(row.ts_ms)).ok()?,
        ingested_at: Timestamp::from_millis(i64::from(row.ingested_at) * 1000).ok()?,
        feed: row.feed,
        domain: row.domain.parse::<Domain>().ok()?,
        entity_id: row.entity_id,
        entity_type: row.entity_type,
        metric: row.metric,
        value: row.value,
        text: row.text,
        unit: row.unit,
        district: row.district,
        ward: row.ward,
        lat: row.lat,
        lon: row.lon,
        attrs: row.attr_keys.into_iter().zip(row.attr_values).collect(),
        quality,
    })
}

/// Reads the recent events the rules need.
pub async fn recent_events(
    config: &ClickHouseConfig,
    rules: &RuleSet,
    now_ms: i64,
    max_lookback_ms: i64,
) -> Result<Vec<Event>, String> {
    let Some(sql) = query(&config.database, rules, now_ms, max_lookback_ms) else {
        return Ok(Vec::new());
    };
    let clickhouse = ClickHouse::connect(config)
        .await
        .map_err(|e| e.to_string())?;
    let rows: Vec<EventRow> = clickhouse
        .fetch(&sql, "read recent events for the warm start")
        .await
        .map_err(|e| e.to_string())?;
    Ok(rows.into_iter().filter_map(event_of).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(yaml: &str) -> RuleSet {
        RuleSet::parse(&[("r.yaml".into(), yaml.into())]).unwrap()
    }

    #[test]
    fn the_query_reads_only_what_the_rules_need() {
        let set = rules(
            "groups:\n- name: g\n  rules:\n  - alert: A\n    match: '{feed=\"air_quality\", metric=\"pm25\"}'\n    window: {aggregate: avg, over: 24h, fire: '> 50'}\n  - alert: B\n    match: '{feed=\"water_level\"}'\n    absence: {expected_interval: 1m}\n  - alert: C\n    match: '{metric=~\".*\"}'\n    threshold: {fire: '> 1'}\n",
        );
        let sql = query("cityops", &set, 1_000_000_000_000, 86_400_000).unwrap();
        assert!(sql.contains("ts >= toDateTime(999913600)"), "{sql}");
        assert!(
            sql.contains("feed IN ('air_quality', 'water_level')"),
            "{sql}"
        );
        assert!(!sql.contains("metric IN"), "B names no metric: {sql}");
        let limited = query("cityops", &set, 1_000_000_000_000, 3_600_000).unwrap();
        assert!(limited.contains("ts >= toDateTime(999996400)"), "{limited}");
        let none = rules(
            "groups:\n- name: g\n  rules:\n  - alert: C\n    match: '{}'\n    threshold: {fire: '> 1'}\n",
        );
        assert!(query("cityops", &none, 1_000_000_000_000, 86_400_000).is_none());
    }
}
