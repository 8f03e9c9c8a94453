//! Helpers of `make bench-mqtt` (deploy/bench/mqtt.sh): a bare subscribe-and-count client as the
//! baseline, and publish-to-queryable latency probes.
//!
//! `mqtt_bench count HOST PORT FILTERS N CONNECTIONS [SESSION]` subscribes (QoS 1, MQTT 5,
//! acknowledged on receipt by rumqttc, the subscription shared over CONNECTIONS sessions as the
//! ingest does), prints `ready` on stderr, counts N messages and prints
//! `count messages=N bytes=B seconds=S` (first to last message). With SESSION the sessions are
//! persistent under that client id: a run with N = 0 only creates them, so that the broker
//! queues a burst for a later run to drain.
//! `mqtt_bench latency HOST PORT CLICKHOUSE_URL DATABASE PROBES INTERVAL_MS` publishes PROBES
//! water-level readings INTERVAL_MS apart, each acknowledged before the next, polls ClickHouse
//! for each, and prints the p50/p99 of the time from acknowledged publish to first seen.

mod probes;

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    match args.first().map(String::as_str) {
        Some("count") if args.len() == 6 || args.len() == 7 => runtime.block_on(count(
            &args[1],
            args[2].parse()?,
            &args[3],
            args[4].parse()?,
            args[5].parse()?,
            args.get(6).map(String::as_str),
        )),
        Some("latency") if args.len() == 7 => runtime.block_on(latency(
            &args[1],
            args[2].parse()?,
            &args[3],
            &args[4],
            args[5].parse()?,
            args[6].parse()?,
        )),
        _ => anyhow::bail!(
            "usage: mqtt_bench count HOST PORT FILTERS N CONNECTIONS [SESSION] | latency HOST PORT CLICKHOUSE_URL DATABASE PROBES INTERVAL_MS"
        ),
    }
}

/// The baseline: what rumqttc delivers to a loop that only counts (and acknowledges on
/// receipt, as clients without a durability guarantee do).
async fn count(
    host: &str,
    port: u16,
    filters: &str,
    want: u64,
    connections: u16,
    session: Option<&str>,
) -> anyhow::Result<()> {
    let messages = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let first: Arc<std::sync::Mutex<Option<Instant>>> = Arc::default();
    let mut tasks = Vec::new();
    let mut subscribed = Vec::new();
    for n in 0..connections {
        let id = match session {
            Some(session) => format!("{session}-{n}"),
            None => format!("bench-count-{}-{n}", std::process::id()),
        };
        let mut options = MqttOptions::new(id, host, port);
        options.set_keep_alive(Duration::from_secs(15));
        if session.is_some() {
            options.set_clean_start(false);
            options.set_session_expiry_interval(Some(3600));
        }
        options.set_receive_maximum(Some(1000));
        options.set_max_packet_size(Some(1024 * 1024));
        let (client, mut events) = AsyncClient::new(options, 4096);
        for filter in filters.split(',') {
            let filter = if connections > 1 {
                format!("$share/bench-count/{filter}")
            } else {
                filter.to_owned()
            };
            client.subscribe(filter, QoS::AtLeastOnce).await?;
        }
        let (m, b, f) = (
            Arc::clone(&messages),
            Arc::clone(&bytes),
            Arc::clone(&first),
        );
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
        subscribed.push(ready_rx);
        tasks.push(tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            let _client = client;
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(tx) = ready.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if let Ok(mut first) = f.lock() {
                            first.get_or_insert_with(Instant::now);
                        }
                        b.fetch_add(p.payload.len() as u64, Ordering::Relaxed);
                        m.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(error) => {
                        eprintln!("bench client: {error}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        }));
    }
    for ready in subscribed {
        ready.await?;
    }
    eprintln!("ready");
    let deadline = Instant::now() + Duration::from_secs(1800);
    let mut last = Instant::now();
    while messages.load(Ordering::Relaxed) < want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
        last = Instant::now();
    }
    let started = first.lock().ok().and_then(|f| *f).unwrap_or(last);
    let seconds = last.duration_since(started).as_secs_f64();
    println!(
        "count messages={} bytes={} seconds={seconds:.3}",
        messages.load(Ordering::Relaxed),
        bytes.load(Ordering::Relaxed)
    );
    // Let the last acknowledgements go out before the sessions are left.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for task in tasks {
        task.abort();
    }
    Ok(())
}

/// Probes: one water-level reading every `interval_ms` on a gauge of its own, acknowledged
/// one by one, while a thread polls ClickHouse and notes when each first shows up.
async fn latency(
    host: &str,
    port: u16,
    url: &str,
    database: &str,
    probes: usize,
    interval_ms: u64,
) -> anyhow::Result<()> {
    let run = format!("probe-{}-", std::process::id());
    let seen: Arc<std::sync::Mutex<BTreeMap<String, Instant>>> = Arc::default();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poller = {
        let (seen, done, run) = (Arc::clone(&seen), Arc::clone(&done), run.clone());
        let (url, database) = (url.to_owned(), database.to_owned());
        std::thread::spawn(move || {
            probes::poll_probes(&url, &database, "water_level", &run, &seen, &done);
        })
    };
    let mut publisher = cityops_mqtt::Publisher::connect(host, port, &format!("{run}pub"), 1);
    let mut acked: BTreeMap<String, (Instant, String)> = BTreeMap::new();
    let start = Instant::now();
    for n in 0..probes {
        let due = start + Duration::from_millis(interval_ms * n as u64);
        tokio::time::sleep(due.saturating_duration_since(Instant::now())).await;
        let id = format!("{run}{n:05}");
        let now = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)?;
        let payload = serde_json::json!({
            "ts": now, "water_level_cm": 85, "lat": 16.06, "lon": 108.22,
            "status": "ok", "seq": n
        });
        publisher
            .publish(
                &format!("danang/hai-chau/water/{id}"),
                &serde_json::to_vec(&payload)?,
            )
            .await?;
        // Publish time: when the broker acknowledged it.
        let wait = Instant::now() + Duration::from_secs(10);
        while publisher.acked() < publisher.sent() && Instant::now() < wait {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        acked.insert(id, (Instant::now(), now));
    }
    publisher.finish(Duration::from_secs(10)).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && seen.lock().map_or(0, |s| s.len()) < probes {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    done.store(true, Ordering::Relaxed);
    let _ = poller.join();
    let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
    probes::report(probes, &acked, &seen);
    Ok(())
}
