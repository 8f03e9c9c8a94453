//! `make bench-alert`'s measuring tools (deploy/bench/alert.sh drives them):
//!
//! - `alert_bench state N`: the engine with an absence rule and N series (one per entity):
//!   bytes per series as the engine counts them, the process's RSS growth per series, the cost
//!   of an event and of a tick, and the size and time of the state file's JSON.
//! - `alert_bench latency MQTT_PORT ALERTMANAGER_URL PROBES INTERVAL_MS`: publishes a water
//!   level of 9.9 m for a new gauge (`probe-...`, the water_level feed's topic and format)
//!   every INTERVAL_MS and times each from the publish until its alert is in Alertmanager's
//!   API (polled every 2 ms): publish-to-Alertmanager latency, p50/p99/max.

use cityops_event::{Domain, Event, Timestamp};
use cityops_rules::{Engine, RuleSet};
use std::time::{Duration, Instant};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("state") if args.len() == 2 => state(args[1].parse()?),
        Some("latency") if args.len() == 5 => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            runtime.block_on(latency(
                args[1].parse()?,
                &args[2],
                args[3].parse()?,
                args[4].parse()?,
            ))
        }
        _ => anyhow::bail!(
            "usage: alert_bench state N | alert_bench latency MQTT_PORT ALERTMANAGER_URL PROBES INTERVAL_MS"
        ),
    }
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn event(entity: &str, ms: i64) -> Event {
    Event {
        ts: Timestamp::from_millis(ms).expect("time"),
        ingested_at: Timestamp::from_millis(ms).expect("time"),
        feed: "water_level".into(),
        domain: Domain::Water,
        entity_id: entity.into(),
        metric: "water_level".into(),
        value: Some(1.0),
        ..Event::default()
    }
}

fn state(n: usize) -> anyhow::Result<()> {
    let yaml = format!(
        "groups:\n- name: bench\n  max_series: {n}\n  rules:\n  - alert: SensorSilent\n    match: '{{feed=\"water_level\"}}'\n    by: [entity_id]\n    absence: {{expected_interval: 1m, factor: 5}}\n"
    );
    let rules =
        RuleSet::parse(&[("bench.yaml".into(), yaml)]).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let mut engine = Engine::new(rules);
    let names: Vec<String> = (0..n).map(|i| format!("wl-{i:08}")).collect();
    let base = 1_800_000_000_000i64;
    let before = rss_bytes();
    let mut out = Vec::new();
    let started = Instant::now();
    for (i, name) in names.iter().enumerate() {
        engine.observe(&event(name, base + i as i64 / 1000), &mut out);
    }
    let observe = started.elapsed();
    let after = rss_bytes();
    let started = Instant::now();
    engine.tick(base + 10_000, &mut out);
    let tick = started.elapsed();
    let started = Instant::now();
    let json = serde_json::to_vec(&engine.snapshot())?;
    let snapshot = started.elapsed();
    println!(
        "state: series={} engine_bytes_per_series={} rss_growth_bytes_per_series={} observe_ns_per_event={} tick_ms={} snapshot_json_bytes={} snapshot_ms={}",
        engine.series_count(),
        engine.state_bytes() / n.max(1),
        after.saturating_sub(before) / n.max(1) as u64,
        observe.as_nanos() / n.max(1) as u128,
        tick.as_millis(),
        json.len(),
        snapshot.as_millis()
    );
    Ok(())
}

async fn latency(
    mqtt_port: u16,
    alertmanager: &str,
    probes: usize,
    interval_ms: u64,
) -> anyhow::Result<()> {
    let mut publisher = cityops_mqtt::Publisher::connect(
        "127.0.0.1",
        mqtt_port,
        &format!("alert-bench-{}", std::process::id()),
        1,
    );
    let client = reqwest::Client::new();
    let url = format!("{}/api/v2/alerts", alertmanager.trim_end_matches('/'));
    let run = std::process::id();
    let mut latencies = Vec::with_capacity(probes);
    let mut missed = 0;
    for i in 0..probes {
        let gauge = format!("probe-{run}-{i}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis() as i64;
        // The water_level feed's own topic and format (deploy/config/cityops.toml): 9.9 m.
        let ts = Timestamp::from_millis(now)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .to_string();
        let payload = serde_json::json!({"gauge": gauge, "ts": ts, "water_level_cm": 990, "status": "ok", "seq": i}).to_string();
        let sent = Instant::now();
        publisher
            .publish(
                &format!("danang/hai-chau/water/{gauge}"),
                payload.as_bytes(),
            )
            .await?;
        let deadline = sent + Duration::from_secs(10);
        loop {
            let body = client
                .get(&url)
                .query(&[("filter", format!("entity_id=\"{gauge}\""))])
                .send()
                .await?
                .bytes()
                .await?;
            let alerts: serde_json::Value = serde_json::from_slice(&body)?;
            if alerts.as_array().is_some_and(|a| !a.is_empty()) {
                latencies.push(sent.elapsed());
                break;
            }
            if Instant::now() > deadline {
                missed += 1;
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        tokio::time::sleep(Duration::from_millis(interval_ms)).await;
    }
    latencies.sort();
    let pick = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or_default()
    };
    println!(
        "latency: probes={} seen={} missed={} p50_ms={:.1} p99_ms={:.1} max_ms={:.1}",
        probes,
        latencies.len(),
        missed,
        pick(0.50).as_secs_f64() * 1000.0,
        pick(0.99).as_secs_f64() * 1000.0,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1000.0
    );
    Ok(())
}
