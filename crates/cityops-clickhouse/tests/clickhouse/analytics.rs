//! The `alert_episodes` view and the alert analytics queries of docs/engineers.md over a known
//! history, on ClickHouse 18.16 and on the current engine (chDB): the same figures on both, and
//! the figures the history implies.

use super::examples::queries_under;
use super::modern::run_on_chdb;
use super::schema::migrated;
use cityops_clickhouse::MIGRATIONS;
use serde_json::Value;

/// One row of the seeded history.
struct Seed {
    rule: &'static str,
    fingerprint: &'static str,
    state: &'static str,
    previous: &'static str,
    severity: &'static str,
    district: &'static str,
    entity: &'static str,
    /// Milliseconds after the start of the history.
    at_ms: i64,
    actor: &'static str,
    escalation: u8,
    replica: &'static str,
}

#[allow(clippy::too_many_arguments)]
fn seed(
    rule: &'static str,
    fingerprint: &'static str,
    (state, previous): (&'static str, &'static str),
    (severity, district, entity): (&'static str, &'static str, &'static str),
    at_ms: i64,
    actor: &'static str,
    escalation: u8,
    replica: &'static str,
) -> Seed {
    Seed {
        rule,
        fingerprint,
        state,
        previous,
        severity,
        district,
        entity,
        at_ms,
        actor,
        escalation,
        replica,
    }
}

const FLOOD: (&str, &str, &str) = ("critical", "Cẩm Lệ", "wl-cam-le-03");
const FLOOD_2: (&str, &str, &str) = ("critical", "Liên Chiểu", "wl-lien-chieu-01");
const SILENT: (&str, &str, &str) = ("warning", "Hải Châu", "aq-hai-chau-02");
const PM25: (&str, &str, &str) = ("warning", "Sơn Trà", "");

/// The history: what two replicas and the on-call staff wrote over six hours.
#[rustfmt::skip]
fn history() -> Vec<Seed> {
    let s = 1_000;
    let mut rows = vec![
        // A flood alert both replicas saw (7 ms apart), acknowledged after 2 minutes with a
        // comment, resolved after 10 minutes.
        seed("FloodGaugeHigh", "00000000000000a1", ("pending", "inactive"), FLOOD, -60 * s, "", 0, "a"),
        seed("FloodGaugeHigh", "00000000000000a1", ("firing", "pending"), FLOOD, 0, "", 0, "a"),
        seed("FloodGaugeHigh", "00000000000000a1", ("firing", "pending"), FLOOD, 7, "", 0, "b"),
        seed("FloodGaugeHigh", "00000000000000a1", ("acknowledged", "firing"), FLOOD, 120 * s, "lan", 0, "a"),
        seed("FloodGaugeHigh", "00000000000000a1", ("commented", "firing"), FLOOD, 130 * s, "lan", 0, "a"),
        seed("FloodGaugeHigh", "00000000000000a1", ("resolved", "firing"), FLOOD, 600 * s, "", 0, "a"),
        seed("FloodGaugeHigh", "00000000000000a1", ("resolved", "firing"), FLOOD, 600 * s + 5, "", 0, "b"),
        // Another gauge: not acknowledged in 15 minutes, escalated, acknowledged at 1000 s,
        // resolved at 30 minutes.
        seed("FloodGaugeHigh", "00000000000000a2", ("firing", "inactive"), FLOOD_2, 3_600 * s, "", 0, "a"),
        seed("FloodGaugeHigh", "00000000000000a2", ("escalated", "firing"), FLOOD_2, 4_500 * s, "cityops", 1, "a"),
        seed("FloodGaugeHigh", "00000000000000a2", ("acknowledged", "firing"), FLOOD_2, 4_600 * s, "minh", 0, "a"),
        seed("FloodGaugeHigh", "00000000000000a2", ("resolved", "firing"), FLOOD_2, 5_400 * s, "", 0, "a"),
        // Still firing, nobody has acknowledged it.
        seed("PM25AboveLastWeek", "00000000000000c1", ("firing", "inactive"), PM25, 20_000 * s, "", 0, "a"),
    ];
    // A flapping sensor: five episodes of two minutes, never acknowledged, and one pending
    // that never fired.
    for k in 0..5 {
        let start = (100 + k * 1_000) * s;
        rows.push(seed("SensorSilent", "00000000000000b1", ("pending", "inactive"), SILENT, start - 60 * s, "", 0, "a"));
        rows.push(seed("SensorSilent", "00000000000000b1", ("firing", "pending"), SILENT, start, "", 0, "a"));
        rows.push(seed("SensorSilent", "00000000000000b1", ("resolved", "firing"), SILENT, start + 120 * s, "", 0, "a"));
    }
    rows.push(seed("SensorSilent", "00000000000000b1", ("pending", "inactive"), SILENT, 9_000 * s, "", 0, "a"));
    rows.push(seed("SensorSilent", "00000000000000b1", ("inactive", "pending"), SILENT, 9_030 * s, "", 0, "a"));
    rows
}

/// One INSERT of the history, starting `start_s` (unix seconds).
fn insert_history(start_s: i64) -> String {
    let values: Vec<String> = history()
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let at = start_s * 1_000 + r.at_ms;
            format!(
                "(toUUID('00000000-0000-4000-8000-{i:012x}'), toDateTime({secs}, 'UTC'), {ms}, '{rule}', '{fp}', '{state}', '{previous}', '{severity}', 'water', '{entity}', '{district}', NULL, '', [], [], '{actor}', '', {escalation}, '{replica}')",
                secs = at.div_euclid(1_000),
                ms = at.rem_euclid(1_000),
                rule = r.rule,
                fp = r.fingerprint,
                state = r.state,
                previous = r.previous,
                severity = r.severity,
                entity = r.entity,
                district = r.district,
                actor = r.actor,
                escalation = r.escalation,
                replica = r.replica,
            )
        })
        .collect();
    format!(
        "INSERT INTO cityops.alert_events (alert_event_id, ts, ts_ms, rule, fingerprint, state, previous_state, severity, domain, entity_id, district, value, summary, label_keys, label_values, actor, comment, escalation, replica) VALUES {}",
        values.join(", ")
    )
}

const EPISODES_SQL: &str = "SELECT rule, fingerprint, fired_ms, resolved_ms, acknowledged_ms, acknowledged_by, seconds_to_acknowledge, seconds_to_resolve, escalation, comments, arraySort(replicas) AS replica_list, district FROM cityops.alert_episodes ORDER BY rule, fingerprint, fired_ms";

/// A cell as text, numbers normalised (18.16 quotes 64-bit integers, engines print floats
/// differently), so that rows from both engines compare equal.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => "NULL".into(),
        Value::Number(n) => normalise_number(&n.to_string()),
        Value::String(s) => normalise_number(s),
        Value::Array(items) => {
            format!("[{}]", items.iter().map(cell).collect::<Vec<_>>().join(","))
        }
        other => other.to_string(),
    }
}

fn normalise_number(s: &str) -> String {
    match s.parse::<f64>() {
        Ok(x)
            if x.is_finite()
                && !s.is_empty()
                && s.chars().all(|c| c.is_ascii_digit() || "-.eE+".contains(c)) =>
        {
            format!("{x}")
        }
        _ => s.to_owned(),
    }
}

fn table(rows: &[Value]) -> Vec<Vec<(String, String)>> {
    rows.iter()
        .map(|row| {
            row.as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), cell(v)))
                .collect()
        })
        .collect()
}

fn field<'a>(row: &'a [(String, String)], name: &str) -> &'a str {
    row.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no column {name} in {row:?}"))
}

fn find<'a>(
    rows: &'a [Vec<(String, String)>],
    key: &str,
    value: &str,
) -> Vec<&'a Vec<(String, String)>> {
    rows.iter().filter(|r| field(r, key) == value).collect()
}

/// Checks columns of the one row of `rows` whose `key` is `value`.
fn expect_row(rows: &[Vec<(String, String)>], key: &str, value: &str, expected: &[(&str, &str)]) {
    let found = find(rows, key, value);
    assert_eq!(found.len(), 1, "one row with {key} = {value}: {rows:#?}");
    for (column, want) in expected {
        assert_eq!(
            field(found[0], column),
            *want,
            "{key} = {value}, {column}: {rows:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn alert_episodes_and_the_analytics_queries_give_the_figures_of_a_known_history() {
    let (server, _ch) = migrated().await;
    let now_s = server.scalar("SELECT toUInt32(now())").await.unwrap() as i64;
    let start_s = now_s - 6 * 3_600;
    server.sql(&insert_history(start_s)).await.unwrap();

    // The view, on 18.16.
    let episodes = table(&server.rows(EPISODES_SQL).await.unwrap());
    let start_ms = (start_s * 1_000).to_string();
    let flood = find(&episodes, "fingerprint", "00000000000000a1");
    assert_eq!(
        flood.len(),
        1,
        "two replicas' rows are one episode: {episodes:#?}"
    );
    let flood = flood[0];
    assert_eq!(
        field(flood, "fired_ms"),
        start_ms,
        "the earliest replica's firing"
    );
    assert_eq!(field(flood, "seconds_to_acknowledge"), "120");
    assert_eq!(field(flood, "acknowledged_by"), "lan");
    assert_eq!(field(flood, "seconds_to_resolve"), "600");
    assert_eq!(field(flood, "comments"), "1");
    assert_eq!(field(flood, "escalation"), "0");
    assert_eq!(field(flood, "replica_list"), "[a,b]");

    let escalated = find(&episodes, "fingerprint", "00000000000000a2");
    assert_eq!(escalated.len(), 1, "{episodes:#?}");
    assert_eq!(field(escalated[0], "escalation"), "1");
    assert_eq!(field(escalated[0], "seconds_to_acknowledge"), "1000");
    assert_eq!(field(escalated[0], "acknowledged_by"), "minh");
    assert_eq!(field(escalated[0], "seconds_to_resolve"), "1800");

    let flapping = find(&episodes, "fingerprint", "00000000000000b1");
    assert_eq!(
        flapping.len(),
        5,
        "five episodes, the pending that never fired is none: {episodes:#?}"
    );
    for e in &flapping {
        assert_eq!(field(e, "seconds_to_resolve"), "120", "{e:?}");
        assert_eq!(field(e, "acknowledged_ms"), "0", "{e:?}");
        assert_eq!(field(e, "seconds_to_acknowledge"), "NULL", "{e:?}");
    }
    let open = find(&episodes, "fingerprint", "00000000000000c1");
    assert_eq!(open.len(), 1, "{episodes:#?}");
    assert_eq!(field(open[0], "resolved_ms"), "0");
    assert_eq!(field(open[0], "seconds_to_resolve"), "NULL");
    assert_eq!(episodes.len(), 8, "{episodes:#?}");

    // The documented queries, on 18.16.
    let queries = queries_under("docs/engineers.md", "## Alert analytics");
    assert_eq!(queries.len(), 3, "{queries:?}");
    let mut on_clickhouse = Vec::new();
    for (title, sql) in &queries {
        let rows = server
            .rows(sql)
            .await
            .unwrap_or_else(|e| panic!("{title:?} failed on 18.16: {e}\n{sql}"));
        on_clickhouse.push(table(&rows));
    }
    let by_rule = &on_clickhouse[0];
    #[rustfmt::skip]
    expect_row(by_rule, "rule", "FloodGaugeHigh", &[
        ("episodes", "2"), ("acknowledged", "2"), ("escalated", "1"), ("still_firing", "0"),
        ("median_minutes_to_ack", "9.3"), ("p90_minutes_to_ack", "15.2"),
        ("median_minutes_to_resolve", "20"), ("p90_minutes_to_resolve", "28"),
    ]);
    #[rustfmt::skip]
    expect_row(by_rule, "rule", "SensorSilent", &[
        ("episodes", "5"), ("acknowledged", "0"), ("median_minutes_to_resolve", "2"),
    ]);
    expect_row(
        by_rule,
        "rule",
        "PM25AboveLastWeek",
        &[("still_firing", "1")],
    );

    let by_district = &on_clickhouse[1];
    #[rustfmt::skip]
    expect_row(by_district, "district", "Cẩm Lệ", &[
        ("mean_minutes_to_ack", "2"), ("mean_minutes_to_resolve", "10"),
    ]);
    #[rustfmt::skip]
    expect_row(by_district, "district", "Hải Châu", &[
        ("episodes", "5"), ("never_acknowledged", "5"), ("mean_minutes_to_ack", "NULL"),
    ]);

    let noisiest = &on_clickhouse[2];
    assert_eq!(field(&noisiest[0], "rule"), "SensorSilent", "{noisiest:#?}");
    #[rustfmt::skip]
    expect_row(noisiest, "rule", "SensorSilent", &[
        ("over_within_5_minutes", "5"), ("hours_firing", "0.17"), ("percent_acknowledged", "0"),
    ]);
    #[rustfmt::skip]
    expect_row(noisiest, "rule", "FloodGaugeHigh", &[
        ("hours_firing", "0.67"), ("percent_acknowledged", "100"),
    ]);

    // The same statements on the current engine give the same rows (only the still-firing
    // episode's hours depend on the clock, so it is left out of the comparison).
    let mut statements: Vec<String> = MIGRATIONS
        .iter()
        .flat_map(|m| m.statements("cityops"))
        .collect();
    let first_query = statements.len() + 1;
    statements.push(insert_history(start_s));
    statements.push(EPISODES_SQL.to_owned());
    statements.extend(queries.iter().map(|(_, sql)| sql.clone()));
    let report = run_on_chdb(&statements);
    let results = report["results"].as_array().unwrap();
    for (i, result) in results.iter().enumerate() {
        assert_eq!(
            result["ok"], true,
            "statement {i} failed on chDB: {}\n{}",
            result["error"], statements[i]
        );
    }
    let on_chdb: Vec<_> = results[first_query..]
        .iter()
        .map(|r| table(r["data"].as_array().unwrap()))
        .collect();
    assert_eq!(
        on_chdb[0], episodes,
        "alert_episodes differs between 18.16 and chDB"
    );
    let comparable = |rows: &[Vec<(String, String)>]| -> Vec<Vec<(String, String)>> {
        rows.iter()
            .filter(|r| r.iter().all(|(_, v)| v != "PM25AboveLastWeek"))
            .cloned()
            .collect()
    };
    for (q, (title, _)) in queries.iter().enumerate() {
        assert_eq!(
            comparable(&on_chdb[q + 1]),
            comparable(&on_clickhouse[q]),
            "{title:?} differs between 18.16 and chDB"
        );
    }
}
