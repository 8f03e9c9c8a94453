//! Helpers of `make bench-kafka` (deploy/bench/kafka.sh): a bare consume-and-count loop as the
//! baseline, and publish-to-queryable latency probes.
//!
//! `kafka_bench count BOOTSTRAP TOPICS N` consumes N records with a fresh group and prints
//! `count messages=N bytes=B seconds=S`.
//! `kafka_bench latency BOOTSTRAP CLICKHOUSE_URL DATABASE PROBES INTERVAL_MS` produces PROBES
//! citizen reports INTERVAL_MS apart, polls ClickHouse for each, and prints the p50/p99 of the
//! time from acknowledged publish to first seen in a query.

mod probes;

use cityops_kafka::{GroupConsumer, GroupEvents, NextOffset, TopicPartition};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Quiet;

impl GroupEvents for Quiet {
    fn revoking(&self) -> Vec<NextOffset> {
        Vec::new()
    }
    fn assigned(&self, _: &[TopicPartition]) {}
    fn lag(&self, _: &[(TopicPartition, i64)]) {}
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("count") if args.len() == 4 => count(&args[1], &args[2], args[3].parse()?),
        Some("latency") if args.len() == 6 => latency(
            &args[1],
            &args[2],
            &args[3],
            args[4].parse()?,
            args[5].parse()?,
        ),
        _ => anyhow::bail!(
            "usage: kafka_bench count BOOTSTRAP TOPICS N | latency BOOTSTRAP CLICKHOUSE_URL DATABASE PROBES INTERVAL_MS"
        ),
    }
}

/// The baseline: what librdkafka delivers to a loop that only counts.
fn count(bootstrap: &str, topics: &str, want: u64) -> anyhow::Result<()> {
    let config = cityops_config::KafkaConfig {
        bootstrap_servers: bootstrap.to_owned(),
        group_id: format!("bench-count-{}", std::process::id()),
        ..Default::default()
    };
    let topics: Vec<String> = topics.split(',').map(str::to_owned).collect();
    let consumer = GroupConsumer::new(&config, &topics, Arc::new(Quiet))?;
    let mut messages = 0u64;
    let mut bytes = 0u64;
    let mut first: Option<Instant> = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    while messages < want && Instant::now() < deadline {
        if let Some(Ok(len)) = consumer.poll(Duration::from_millis(100), |r| r.payload.len()) {
            first.get_or_insert_with(Instant::now);
            messages += 1;
            bytes += len as u64;
        }
    }
    let seconds = first.map_or(0.0, |f| f.elapsed().as_secs_f64());
    println!("count messages={messages} bytes={bytes} seconds={seconds:.3}");
    Ok(())
}

/// Probes: one citizen report every `interval_ms`, acknowledged one by one, while a second
/// thread polls ClickHouse and notes when each first shows up.
fn latency(
    bootstrap: &str,
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
            probes::poll_probes(&url, &database, "citizen_reports", &run, &seen, &done);
        })
    };
    let mut producer =
        cityops_kafka::Producer::new(&cityops_kafka::ProducerSettings::new(bootstrap))?;
    let mut acked: BTreeMap<String, (Instant, String)> = BTreeMap::new();
    let start = Instant::now();
    for n in 0..probes {
        let due = start + Duration::from_millis(interval_ms * n as u64);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        let id = format!("{run}{n:05}");
        let now = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)?;
        let payload = serde_json::json!({
            "report_id": id, "district": "Hải Châu", "ward": "Thạch Thang",
            "location": {"lat": 16.0748, "lon": 108.2210}, "updated_at": now,
            "channel": "app", "category": "lighting", "status": "received",
            "content": "Đèn đường không sáng (probe)"
        });
        producer.send(
            "danang.citizen.reports",
            Some(&id),
            &serde_json::to_vec(&payload)?,
        )?;
        // Publish time: when the broker acknowledged it.
        producer.flush(Duration::from_secs(10))?;
        acked.insert(id, (Instant::now(), now));
    }
    // Wait for the stragglers, at most 30 s after the last probe.
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && seen.lock().map_or(0, |s| s.len()) < probes {
        std::thread::sleep(Duration::from_millis(50));
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = poller.join();
    let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
    probes::report(probes, &acked, &seen);
    Ok(())
}
