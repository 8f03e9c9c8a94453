//! Helpers of `make bench-kafka` (deploy/bench/kafka.sh): a bare consume-and-count loop as the
//! baseline, and publish-to-queryable latency probes.
//!
//! `kafka_bench count BOOTSTRAP TOPICS N` consumes N records with a fresh group and prints
//! `count messages=N bytes=B seconds=S`.
//! `kafka_bench latency BOOTSTRAP CLICKHOUSE_URL DATABASE PROBES INTERVAL_MS` produces PROBES
//! citizen reports INTERVAL_MS apart, polls ClickHouse for each, and prints the p50/p99 of the
//! time from acknowledged publish to first seen in a query.

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

#[derive(serde::Deserialize, clickhouse::Row)]
struct Seen {
    entity_id: String,
}

/// Probes: one citizen report every `interval_ms`, each found by polling ClickHouse.
fn latency(
    bootstrap: &str,
    url: &str,
    database: &str,
    probes: usize,
    interval_ms: u64,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let clickhouse = runtime.block_on(cityops_clickhouse::ClickHouse::connect(
        &cityops_config::ClickHouseConfig {
            url: url.to_owned(),
            database: database.to_owned(),
            ..Default::default()
        },
    ))?;
    let run = format!("probe-{}-", std::process::id());
    let mut producer =
        cityops_kafka::Producer::new(&cityops_kafka::ProducerSettings::new(bootstrap))?;
    let mut sent: BTreeMap<String, Instant> = BTreeMap::new();
    let mut sent_wall: BTreeMap<String, String> = BTreeMap::new();
    let mut seen: BTreeMap<String, Duration> = BTreeMap::new();
    let start = Instant::now();
    let mut next_probe = 0usize;
    let deadline_after_last = Duration::from_secs(30);
    loop {
        // Every probe that is due (a slow query can make several due at once).
        while next_probe < probes
            && Instant::now() >= start + Duration::from_millis(interval_ms * next_probe as u64)
        {
            let id = format!("{run}{next_probe:05}");
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
            sent_wall.insert(
                id.clone(),
                time::OffsetDateTime::now_utc()
                    .format(&time::format_description::well_known::Rfc3339)?,
            );
            sent.insert(id, Instant::now());
            next_probe += 1;
        }
        let sql = format!(
            "SELECT DISTINCT entity_id FROM {database}.events WHERE feed = 'citizen_reports' AND entity_id LIKE '{run}%'"
        );
        let rows: Vec<Seen> = match runtime.block_on(clickhouse.fetch(&sql, "find probes")) {
            Ok(rows) => rows,
            Err(error) => {
                eprintln!("{error}");
                Vec::new()
            }
        };
        let now = Instant::now();
        for row in rows {
            if let Some(at) = sent.get(&row.entity_id) {
                seen.entry(row.entity_id).or_insert(now - *at);
            }
        }
        if seen.len() == probes {
            break;
        }
        // Sending can fall behind the schedule (each probe waits for its acknowledgement and a
        // query): the wait runs from the last probe actually sent.
        let last_sent = sent.values().max().copied().unwrap_or(start);
        if next_probe == probes && now > last_sent + deadline_after_last {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    for (id, at) in &sent_wall {
        if !seen.contains_key(id) {
            eprintln!("probe {id} acknowledged at {at} was not seen in ClickHouse");
        }
    }
    let mut latencies: Vec<f64> = seen.values().map(|d| d.as_secs_f64() * 1000.0).collect();
    latencies.sort_by(f64::total_cmp);
    let pick = |q: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    println!(
        "latency probes={probes} found={} p50_ms={:.0} p99_ms={:.0} max_ms={:.0}",
        latencies.len(),
        pick(0.5),
        pick(0.99),
        pick(1.0)
    );
    Ok(())
}
