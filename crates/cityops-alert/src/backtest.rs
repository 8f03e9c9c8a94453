//! Backtests: the events stored in ClickHouse replayed through the same engine the alerter
//! runs, query rules evaluated at their interval against the same tables, and what would have
//! fired and resolved, with a summary per rule. Nothing is notified or written.
//!
//! Time: by default each event is taken to arrive at its event time (the city as it happened,
//! whatever the history's ingest times: imported and backfilled data too); `Arrival::Stored`
//! uses the stored `ingested_at` instead (to the second). Processing time moves along that
//! time in steps of `tick_ms`; transitions fall at exact instants whatever the step.

use crate::queries::{QueryRuleSpec, aligned, rows_of};
use crate::warm::event_of;
use cityops_clickhouse::{ClickHouse, EventRow, QueryLimits, ReadOnlyClient, TableColumns};
use cityops_config::Config;
use cityops_event::{Event, Timestamp};
use cityops_rules::{AlertState, Engine, Kind, MatchOp, RuleSet, Transition};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

/// Which time an event is taken to arrive at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Its event time.
    EventTime,
    /// The stored `ingested_at` (seconds).
    Stored,
}

/// What to replay.
#[derive(Debug, Clone)]
pub struct Options {
    /// From, ms (inclusive).
    pub from_ms: i64,
    /// To, ms (exclusive).
    pub to_ms: i64,
    /// The arrival model.
    pub arrival: Arrival,
    /// Processing-time step.
    pub tick_ms: i64,
    /// Events read per query: this much time.
    pub chunk_ms: i64,
}

/// Progress of a run, for a progress bar.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Time replayed so far, ms since `from`.
    pub done_ms: i64,
    /// The whole range, ms.
    pub total_ms: i64,
    /// Events replayed so far.
    pub events: u64,
}

/// What a run found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Every transition, in order.
    pub transitions: Vec<Transition>,
    /// Events replayed.
    pub events: u64,
    /// Query rule evaluations run.
    pub evaluations: u64,
    /// Query rule evaluations that failed (their rules' alerts stayed as they were).
    pub failed_evaluations: u64,
}

/// Per rule: how often it fired, how long it was firing, how often it flapped.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RuleSummary {
    /// The rule.
    pub rule: String,
    /// Times an alert of it fired.
    pub fired: u64,
    /// Alert instances that fired at least once.
    pub instances: u64,
    /// Firing time summed over its alerts, ms (an alert still firing at the end counts to it).
    pub firing_ms: i64,
    /// Fires of an alert less than [`FLAP_WINDOW_MS`] after the same alert resolved.
    pub flaps: u64,
}

/// An alert firing again this soon after resolving counts as a flap.
pub const FLAP_WINDOW_MS: i64 = 3_600_000;

/// The summary of `transitions` over a run ending at `to_ms`, one entry per rule in `rules`.
pub fn summarize(rules: &RuleSet, transitions: &[Transition], to_ms: i64) -> Vec<RuleSummary> {
    let mut out: BTreeMap<String, RuleSummary> = rules
        .rules
        .iter()
        .map(|r| {
            (
                r.name.to_string(),
                RuleSummary {
                    rule: r.name.to_string(),
                    fired: 0,
                    instances: 0,
                    firing_ms: 0,
                    flaps: 0,
                },
            )
        })
        .collect();
    let mut fired_at: HashMap<(String, u64), i64> = HashMap::new();
    let mut resolved_at: HashMap<(String, u64), i64> = HashMap::new();
    let mut instances: BTreeSet<(String, u64)> = BTreeSet::new();
    for t in transitions {
        let key = (t.rule.to_string(), t.fingerprint);
        let Some(summary) = out.get_mut(&*t.rule) else {
            continue;
        };
        match t.to {
            AlertState::Firing => {
                summary.fired += 1;
                if resolved_at
                    .get(&key)
                    .is_some_and(|r| t.at_ms - r < FLAP_WINDOW_MS)
                {
                    summary.flaps += 1;
                }
                instances.insert(key.clone());
                fired_at.insert(key, t.at_ms);
            }
            AlertState::Resolved => {
                if let Some(f) = fired_at.remove(&key) {
                    summary.firing_ms += t.at_ms - f;
                }
                resolved_at.insert(key, t.at_ms);
            }
            _ => {}
        }
    }
    for ((rule, _), f) in fired_at {
        if let Some(s) = out.get_mut(&rule) {
            s.firing_ms += (to_ms - f).max(0);
        }
    }
    for (rule, _) in instances {
        if let Some(s) = out.get_mut(&rule) {
            s.instances += 1;
        }
    }
    out.into_values().collect()
}

/// The `feed IN (...)` and `metric IN (...)` conditions that keep to the events the stream
/// rules can match (none when one of them matches any feed or metric).
pub fn event_filter(rules: &RuleSet) -> String {
    let stream: Vec<_> = rules
        .rules
        .iter()
        .filter(|r| !matches!(r.kind, Kind::Query { .. }))
        .collect();
    let quote = |s: &str| format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"));
    let mut filter = String::new();
    for field in ["feed", "metric"] {
        let mut values = BTreeSet::new();
        let mut all = stream.is_empty();
        for rule in &stream {
            match rule
                .selector
                .matchers
                .iter()
                .find(|m| m.name == field && m.op == MatchOp::Equal)
            {
                Some(m) => {
                    values.insert(m.value.clone());
                }
                None => all = true,
            }
        }
        if !all {
            filter.push_str(&format!(
                " AND {field} IN ({})",
                values
                    .iter()
                    .map(|v| quote(v))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    filter
}

/// The next query-rule evaluation: (instant, rule index).
fn next_evaluations(specs: &[QueryRuleSpec], from: i64, to: i64) -> Vec<(i64, usize)> {
    let mut out = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let mut at = aligned(from, spec.interval_ms);
        if at < from {
            at += spec.interval_ms;
        }
        while at < to {
            out.push((at, i));
            at += spec.interval_ms;
        }
    }
    out.sort_unstable();
    out
}

/// Replays `[from, to)` through `rules`. `progress` is called after every chunk.
pub async fn run(
    config: &Config,
    rules: &RuleSet,
    options: &Options,
    mut progress: impl FnMut(Progress),
) -> Result<Report, String> {
    let clickhouse = ClickHouse::connect(&config.clickhouse)
        .await
        .map_err(|e| e.to_string())?;
    let queries = &config.alert.queries;
    let readonly = ReadOnlyClient::new(
        &config.clickhouse,
        &queries.user,
        queries.password.as_ref().map(|p| p.expose()),
    )
    .map_err(|e| e.to_string())?;
    let limits = QueryLimits {
        timeout: Duration::from_millis(queries.timeout_ms),
        max_rows: queries.max_rows,
    };
    let specs: Vec<QueryRuleSpec> = rules.rules.iter().filter_map(QueryRuleSpec::of).collect();
    let evaluations = next_evaluations(&specs, options.from_ms, options.to_ms);
    let has_stream_rules = rules
        .rules
        .iter()
        .any(|r| !matches!(r.kind, Kind::Query { .. }));
    let mut engine = Engine::new(rules.clone());
    let mut report = Report::default();
    let mut next_tick = options.from_ms;
    let mut next_evaluation = 0;
    let filter = event_filter(rules);
    let columns: Vec<&str> = EventRow::COLUMNS.iter().map(|(name, _)| *name).collect();
    let (range_column, order) = match options.arrival {
        Arrival::EventTime => ("ts", "ts, ts_ms, entity_id, metric"),
        Arrival::Stored => ("ingested_at", "ingested_at, ts, ts_ms, entity_id, metric"),
    };
    let mut chunk_start = options.from_ms;
    while chunk_start < options.to_ms {
        let chunk_end = (chunk_start + options.chunk_ms).min(options.to_ms);
        let events: Vec<Event> = if has_stream_rules {
            let sql = format!(
                "SELECT {cols} FROM {db}.events WHERE {range_column} >= toDateTime({from}) AND {range_column} < toDateTime({to}){filter} ORDER BY {order}",
                cols = columns.join(", "),
                db = clickhouse.database(),
                from = chunk_start.div_euclid(1_000),
                to = chunk_end.div_euclid(1_000),
            );
            let rows: Vec<EventRow> = clickhouse
                .fetch(&sql, "read events for a backtest")
                .await
                .map_err(|e| e.to_string())?;
            rows.into_iter()
                .filter_map(event_of)
                .map(|mut e| {
                    if options.arrival == Arrival::EventTime {
                        e.ingested_at = e.ts;
                    }
                    e
                })
                .collect()
        } else {
            Vec::new()
        };
        for event in events
            .iter()
            .map(Some)
            .chain(std::iter::once(None::<&Event>))
        {
            // Everything due before this event (or, after the chunk's last, before its end):
            // ticks and query evaluations, in time order.
            let until = event.map_or(chunk_end, |e| e.ingested_at.as_millis());
            loop {
                let tick_due = (next_tick < until).then_some(next_tick);
                let evaluation_due = evaluations
                    .get(next_evaluation)
                    .filter(|(at, _)| *at < until)
                    .copied();
                match (tick_due, evaluation_due) {
                    (Some(t), Some((q, _))) if t <= q => {
                        engine.tick(t, &mut report.transitions);
                        next_tick += options.tick_ms;
                    }
                    (Some(t), None) => {
                        engine.tick(t, &mut report.transitions);
                        next_tick += options.tick_ms;
                    }
                    (_, Some((at, i))) => {
                        let spec = &specs[i];
                        let sql = cityops_rules::render_sql(&spec.sql, at);
                        report.evaluations += 1;
                        match readonly
                            .select(&sql, limits)
                            .await
                            .map_err(|e| e.to_string())
                            .and_then(|table| rows_of(spec, &table))
                        {
                            Ok(rows) => {
                                engine.query_result(&spec.name, at, &rows, &mut report.transitions);
                            }
                            Err(error) => {
                                report.failed_evaluations += 1;
                                engine.query_failed(&spec.name, at, error);
                            }
                        }
                        next_evaluation += 1;
                    }
                    (None, None) => break,
                }
            }
            if let Some(e) = event {
                engine.observe(e, &mut report.transitions);
                report.events += 1;
            }
        }
        progress(Progress {
            done_ms: chunk_end - options.from_ms,
            total_ms: options.to_ms - options.from_ms,
            events: report.events,
        });
        chunk_start = chunk_end;
    }
    engine.tick(options.to_ms, &mut report.transitions);
    Ok(report)
}

/// A transition as one line of text: time, rule, labels, change, value.
pub fn describe(t: &Transition) -> String {
    let at = Timestamp::from_millis(t.at_ms)
        .map(|t| t.to_string())
        .unwrap_or_default();
    let labels: Vec<String> = t
        .labels
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "alertname" | "severity"))
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect();
    let value = match &t.value {
        Some(cityops_rules::Value::Num(n)) => format!(" value {n}"),
        Some(cityops_rules::Value::Text(s)) => format!(" value {s:?}"),
        None => String::new(),
    };
    format!(
        "{at}  {rule}{{{labels}}}  {from} -> {to}{value}",
        rule = t.rule,
        labels = labels.join(", "),
        from = t.from.as_str(),
        to = t.to.as_str(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(yaml: &str) -> RuleSet {
        RuleSet::parse(&[("r.yaml".into(), yaml.into())]).unwrap()
    }

    #[test]
    fn the_filter_keeps_to_the_feeds_and_metrics_the_stream_rules_name() {
        let set = rules(
            "groups:\n- name: g\n  rules:\n  - alert: A\n    match: '{feed=\"water_level\", metric=\"water_level\"}'\n    threshold: {fire: '> 2.5'}\n  - alert: B\n    match: '{feed=\"air_quality\"}'\n    absence: {expected_interval: 1m}\n",
        );
        assert_eq!(
            event_filter(&set),
            " AND feed IN ('air_quality', 'water_level')"
        );
    }

    #[test]
    fn the_summary_counts_fires_firing_time_and_flaps() {
        let set = rules(
            "groups:\n- name: g\n  rules:\n  - alert: A\n    match: '{}'\n    threshold: {fire: '> 2.5'}\n",
        );
        let mut engine = Engine::new(set.clone());
        let mut out = Vec::new();
        let event = |ms: i64, v: f64| Event {
            ts: Timestamp::from_millis(ms).unwrap(),
            ingested_at: Timestamp::from_millis(ms).unwrap(),
            entity_id: "g".into(),
            value: Some(v),
            ..Event::default()
        };
        // Fires at 0, resolves at 10 min, fires again at 20 min (a flap), still firing at 60.
        for (ms, v) in [(0, 3.0), (600_000, 1.0), (1_200_000, 3.0)] {
            engine.observe(&event(1_767_225_600_000 + ms, v), &mut out);
        }
        engine.flush_all(&mut out);
        let summary = summarize(&set, &out, 1_767_225_600_000 + 3_600_000);
        assert_eq!(
            summary,
            [RuleSummary {
                rule: "A".into(),
                fired: 2,
                instances: 1,
                firing_ms: 600_000 + 2_400_000,
                flaps: 1,
            }]
        );
    }
}
