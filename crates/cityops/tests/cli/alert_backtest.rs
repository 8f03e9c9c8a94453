//! A backtest gives the live alerter's transitions: one simulated day with a flood (water
//! gauges over MQTT, hospital beds over Kafka) goes through the real brokers to the real ingest
//! and a live alerter (reading from the start); then `cityops rules backtest` replays what the
//! ingest stored, and the two sets of transitions are compared.

use crate::alert::{Rig, wait_for, wait_ready};
use crate::ingest_support::{Ingest as Service, metric_sum};
use cityops_testkit::KafkaBroker;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// The shipped example config with its `${CITYOPS_...}` settings given, the rule files made
/// absolute.
fn shipped_config(values: &BTreeMap<&str, String>) -> String {
    let root = crate::repo_root();
    let text = std::fs::read_to_string(root.join("deploy/config/cityops.toml")).unwrap();
    let mut out = String::new();
    let mut rest = text.as_str();
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').unwrap() + start;
        let inner = &rest[start + 2..end];
        let (name, default) = inner.split_once(":-").unwrap_or((inner, ""));
        out.push_str(values.get(name).map_or(default, String::as_str));
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out.replace(
        "\"../rules/",
        &format!("\"{}/deploy/rules/", root.display()),
    )
}

/// The rules compared: those whose series are one device each (a district series mixes
/// devices whose messages the brokers may deliver out of order across connections, which a
/// live alerter drops as late and a replay of sorted history does not).
const COMPARED: [&str; 3] = ["FloodGaugeHigh", "WaterRisingFast", "EmergencyWaitingHigh"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backtest_of_a_simulated_day_gives_the_transitions_the_live_alerter_made() {
    // A day sent as fast as it goes: the broker must queue what the two sessions have not
    // taken yet rather than drop it past its usual 1,000.
    let rig = Rig::start_with("cityops", "\nmax_queued_messages 1000000\n");
    let kafka = KafkaBroker::start();
    for line in std::fs::read_to_string(crate::repo_root().join("deploy/local/kafka-topics.txt"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let (topic, partitions) = line.split_once(' ').unwrap();
        kafka
            .create_topic(topic, partitions.trim().parse().unwrap())
            .unwrap();
    }
    let dir = rig.dir.path();
    let values = BTreeMap::from([
        ("CITYOPS_CLICKHOUSE_URL", rig.clickhouse.url()),
        ("CITYOPS_CLICKHOUSE_DATABASE", "cityops".to_owned()),
        ("CITYOPS_KAFKA_BOOTSTRAP", kafka.bootstrap()),
        ("CITYOPS_MQTT_PORT", rig.mosquitto.port().to_string()),
        // One connection end to end keeps each gauge's messages in order.
        ("CITYOPS_MQTT_CONNECTIONS", "1".to_owned()),
        ("CITYOPS_SPOOL_DIR", dir.join("spool").display().to_string()),
        (
            "CITYOPS_ALERT_STATE_DIR",
            dir.join("alert-state").display().to_string(),
        ),
        ("CITYOPS_ALERT_KAFKA_OFFSET_RESET", "earliest".to_owned()),
        ("CITYOPS_ALERTMANAGER_URL", rig.alertmanager.url()),
    ]);
    let config = dir.join("day.toml");
    std::fs::write(&config, shipped_config(&values)).unwrap();

    let ingest = Service::spawn_subcommand("ingest", &config, dir, "ingest");
    let alerter = Service::spawn_subcommand("alert", &config, dir, "alerter");
    wait_ready(&ingest).await;
    wait_ready(&alerter).await;

    // A day of two feeds with a flood six hours in, as fast as the brokers take it.
    let messages = dir.join("messages.jsonl");
    let out = crate::cityops(&[
        "sim",
        "--seed",
        "11",
        "--feeds",
        "water_level,hospital_beds",
        "--backfill",
        "1d",
        "--scenario",
        "flood",
        "--scenario-at",
        "6h",
        "--scenario-duration",
        "2h",
        "--to-mqtt",
        &format!("127.0.0.1:{}", rig.mosquitto.port()),
        "--mqtt-connections",
        "1",
        "--to-kafka",
        &kafka.bootstrap(),
        "--output",
        messages.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sent = std::fs::read_to_string(&messages).unwrap().lines().count() as f64;

    // Everything read by the alerter and stored by the ingest, the history written.
    wait_for(
        "the alerter read every message",
        Duration::from_secs(300),
        async || {
            let m = alerter.metrics().await;
            let read = metric_sum(&m, "cityops_alert_source_messages_total", &[]);
            eprintln!("alerter read {read} of {sent}");
            (read >= sent).then_some(())
        },
    )
    .await;
    ingest.wait_settled().await;
    let history = wait_for("the live alerter's history written", Duration::from_secs(120), async || {
        let m = alerter.metrics().await;
        if metric_sum(&m, "cityops_alert_history_backlog_events", &[]) > 0.0 {
            return None;
        }
        let rows = rig
            .clickhouse
            // State changes only: actions (escalations here) are not a backtest's business.
            .rows("SELECT rule, fingerprint, previous_state, state, toUInt64(ts) * 1000 + ts_ms AS at_ms FROM cityops.alert_events WHERE state IN ('pending', 'firing', 'resolved', 'inactive')")
            .await
            .ok()?;
        (!rows.is_empty()).then_some(rows)
    })
    .await;
    let range = rig
        .clickhouse
        .rows("SELECT toUInt32(min(ts)) AS first, toUInt32(max(ts)) AS last FROM cityops.events")
        .await
        .unwrap();
    let first = range[0]["first"].as_i64().unwrap();
    let last = range[0]["last"].as_i64().unwrap() + 1;
    let rfc3339 = |s: i64| {
        cityops_event::Timestamp::from_millis(s * 1000)
            .unwrap()
            .to_string()
    };

    let out = crate::cityops(&[
        "rules",
        "backtest",
        "--config",
        config.to_str().unwrap(),
        "--from",
        &rfc3339(first),
        "--to",
        &rfc3339(last),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();

    // The last hour is left out: after its data ended the live alerter kept its clocks
    // running in real time while the backtest stops at the end of the range.
    let until_ms = (last - 3_600) * 1_000;
    type Key = (String, String, String, String, i64);
    let live: BTreeSet<Key> = history
        .iter()
        .filter(|r| COMPARED.contains(&r["rule"].as_str().unwrap_or("")))
        .map(|r| {
            (
                r["rule"].as_str().unwrap().to_owned(),
                r["fingerprint"].as_str().unwrap().to_owned(),
                r["previous_state"].as_str().unwrap().to_owned(),
                r["state"].as_str().unwrap().to_owned(),
                // ClickHouse writes 64-bit integers in JSON as strings.
                r["at_ms"].as_str().unwrap().parse().unwrap(),
            )
        })
        .filter(|k| k.4 < until_ms)
        .collect();
    let replayed: BTreeSet<Key> = lines
        .iter()
        .filter(|l| l.get("rule").is_some())
        .filter(|l| COMPARED.contains(&l["rule"].as_str().unwrap_or("")))
        .map(|l| {
            (
                l["rule"].as_str().unwrap().to_owned(),
                l["fingerprint"].as_str().unwrap().to_owned(),
                l["from"].as_str().unwrap().to_owned(),
                l["to"].as_str().unwrap().to_owned(),
                l["at_ms"].as_i64().unwrap(),
            )
        })
        .filter(|k| k.4 < until_ms)
        .collect();
    let fired = live.iter().filter(|k| k.3 == "firing").count();
    assert!(
        fired >= 2,
        "the flood should make alerts fire live: {live:?}"
    );
    assert_eq!(
        live.symmetric_difference(&replayed).collect::<Vec<_>>(),
        Vec::<&Key>::new(),
        "live {} transitions, backtest {}",
        live.len(),
        replayed.len()
    );
    let summary = lines.iter().find(|l| l.get("summary").is_some()).unwrap();
    let flood = summary["summary"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["rule"] == "FloodGaugeHigh")
        .unwrap();
    assert!(flood["fired"].as_u64().unwrap() >= 1, "{summary}");
    eprintln!(
        "a simulated day: {sent} messages, {} events replayed; {} transitions of {COMPARED:?} equal live and in the backtest ({fired} firing)",
        summary["events"],
        live.len()
    );
}
