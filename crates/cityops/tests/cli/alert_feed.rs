//! One alert when the pipeline is the problem, on real mosquitto and a real alerter: a feed of
//! 500 gauges whose publisher stops gives exactly one FeedSilent and no per-gauge alert; back,
//! FeedSilent resolves and no per-gauge alert follows; then one gauge going silent alone still
//! alerts.

use crate::alert::{Rig, now_ms, wait_for};
use crate::ingest_support::http_get;
use serde_json::Value;
use std::time::{Duration, Instant};

const GAUGES: usize = 500;

const RULES: &str = r#"
groups:
  - name: devices
    max_series: 10000
    rules:
      - alert: FeedSilent
        match: '{feed="water_level"}'
        by: [feed]
        absence: {expected_interval: 500ms, factor: 4}
        severity: critical
      - alert: SensorSilent
        match: '{feed="water_level"}'
        by: [entity_id]
        absence: {expected_interval: 1s, factor: 5, hold_while_feed_silent: 2s}
"#;

/// One reading of every gauge (but `skip`).
async fn round(rig: &Rig, skip: Option<usize>) {
    let ts = now_ms();
    let messages: Vec<(String, Vec<u8>)> = (0..GAUGES)
        .filter(|g| Some(*g) != skip)
        .map(|g| {
            (
                format!("proof/water/wl-{g:04}"),
                serde_json::json!({"ts": ts, "level": 1.0, "station": "s"})
                    .to_string()
                    .into_bytes(),
            )
        })
        .collect();
    rig.mosquitto
        .publish_many(&messages)
        .await
        .expect("publish a round");
}

async fn alerts(port: u16) -> Vec<Value> {
    let (_, body) = http_get(port, "/api/v1/alerts").await;
    serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v["data"]["alerts"].as_array().cloned())
        .unwrap_or_default()
}

fn named<'a>(alerts: &'a [Value], rule: &str) -> Vec<&'a Value> {
    alerts.iter().filter(|a| a["alertname"] == rule).collect()
}

/// Publishes a round every second for `d`, checking after each that no gauge alert is active.
async fn publish_for(rig: &Rig, port: u16, d: Duration, skip: Option<usize>, what: &str) {
    let started = Instant::now();
    while started.elapsed() < d {
        let round_started = Instant::now();
        round(rig, skip).await;
        let active = alerts(port).await;
        let gauges = named(&active, "SensorSilent");
        assert!(
            skip.is_some() || gauges.is_empty(),
            "{what}: per-gauge alerts while the feed flows: {gauges:?}"
        );
        tokio::time::sleep(Duration::from_secs(1).saturating_sub(round_started.elapsed())).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_feed_of_500_gauges_is_one_alert_and_one_silent_gauge_is_still_its_own() {
    let rig = Rig::start();
    std::fs::write(rig.rules_path(), RULES).unwrap();
    let alerter = rig.alerter("feed", "").await;
    let port = alerter.port;

    // The feed flows until every gauge has a series.
    let started = Instant::now();
    loop {
        round(&rig, None).await;
        let (_, body) = http_get(port, "/api/v1/rules").await;
        let rules: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let series = rules["data"]["rules"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["name"] == "SensorSilent"))
            .and_then(|r| r["series"].as_u64())
            .unwrap_or(0);
        if series == GAUGES as u64 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{series} of {GAUGES} gauges tracked"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    publish_for(
        &rig,
        port,
        Duration::from_secs(3),
        None,
        "before the outage",
    )
    .await;

    // The publisher stops: one FeedSilent, in the API and in Alertmanager.
    let stopped = Instant::now();
    wait_for("FeedSilent firing", Duration::from_secs(60), async || {
        let active = alerts(port).await;
        named(&active, "FeedSilent")
            .iter()
            .any(|a| a["state"] == "firing")
            .then_some(())
    })
    .await;
    wait_for(
        "FeedSilent in Alertmanager",
        Duration::from_secs(60),
        async || (!rig.am_alerts("FeedSilent").await.is_empty()).then_some(()),
    )
    .await;
    // Three times a gauge's own 5 s limit, and still the one alert.
    while stopped.elapsed() < Duration::from_secs(15) {
        let active = alerts(port).await;
        assert_eq!(
            active.len(),
            1,
            "only FeedSilent during the outage: {:?}",
            active
                .iter()
                .map(|a| (&a["alertname"], &a["labels"]["entity_id"], &a["state"]))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let outage = stopped.elapsed();

    // Back: FeedSilent resolves, and for twice the gauge limit no gauge alert follows.
    round(&rig, None).await;
    wait_for("FeedSilent resolved", Duration::from_secs(60), async || {
        named(&alerts(port).await, "FeedSilent")
            .is_empty()
            .then_some(())
    })
    .await;
    publish_for(
        &rig,
        port,
        Duration::from_secs(10),
        None,
        "after the outage",
    )
    .await;

    // One gauge goes silent alone: its own alert, and only its.
    let alone = 7;
    let silent_since = Instant::now();
    let mut found = None;
    while found.is_none() {
        publish_for(
            &rig,
            port,
            Duration::from_secs(1),
            Some(alone),
            "one gauge silent",
        )
        .await;
        let active = alerts(port).await;
        let gauges = named(&active, "SensorSilent");
        if let Some(a) = gauges.iter().find(|a| a["state"] == "firing") {
            found = Some((*a).clone());
            assert_eq!(gauges.len(), 1, "{gauges:?}");
            assert!(named(&active, "FeedSilent").is_empty(), "the feed flows");
        }
        assert!(
            silent_since.elapsed() < Duration::from_secs(60),
            "gauge {alone} never alerted"
        );
    }
    let found = found.unwrap();
    assert_eq!(found["labels"]["entity_id"], format!("wl-{alone:04}"));
    // The history agrees: one FeedSilent episode, and SensorSilent only for that gauge.
    let rows = wait_for("the history of both rules", Duration::from_secs(60), async || {
        let rows = rig
            .clickhouse
            .rows("SELECT rule, entity_id, state FROM proof.alert_events WHERE rule IN ('FeedSilent', 'SensorSilent')")
            .await
            .ok()?;
        rows.iter().any(|r| r["rule"] == "SensorSilent" && r["state"] == "firing").then_some(rows)
    })
    .await;
    let gauges: std::collections::BTreeSet<&str> = rows
        .iter()
        .filter(|r| r["rule"] == "SensorSilent")
        .filter_map(|r| r["entity_id"].as_str())
        .collect();
    assert_eq!(
        gauges.into_iter().collect::<Vec<_>>(),
        [format!("wl-{alone:04}").as_str()]
    );
    let fired = rows
        .iter()
        .filter(|r| r["rule"] == "FeedSilent" && r["state"] == "firing")
        .count();
    assert_eq!(fired, 1, "{rows:?}");
    eprintln!(
        "feed outage of {outage:?}: 1 FeedSilent, 0 of {GAUGES} gauge alerts; one silent gauge alerted after {:?}",
        silent_since.elapsed()
    );
}
