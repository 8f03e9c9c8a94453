//! What the ingest benchmarks' probes share: finding probes in ClickHouse as they become
//! queryable, and the latency summary line.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Queries ClickHouse for the run's probes (entities `<run>...` of `feed`) until `done`,
/// noting when each first shows up.
pub fn poll_probes(
    url: &str,
    database: &str,
    feed: &str,
    run: &str,
    seen: &std::sync::Mutex<BTreeMap<String, Instant>>,
    done: &std::sync::atomic::AtomicBool,
) {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    let config = cityops_config::ClickHouseConfig {
        url: url.to_owned(),
        database: database.to_owned(),
        ..Default::default()
    };
    let clickhouse = match runtime.block_on(cityops_clickhouse::ClickHouse::connect(&config)) {
        Ok(c) => c,
        Err(error) => {
            eprintln!("{error}");
            return;
        }
    };
    let sql = format!(
        "SELECT DISTINCT entity_id FROM {database}.events WHERE feed = '{feed}' AND entity_id LIKE '{run}%'"
    );
    while !done.load(std::sync::atomic::Ordering::Relaxed) {
        match runtime.block_on(clickhouse.fetch::<Seen>(&sql, "find probes")) {
            Ok(rows) => {
                let now = Instant::now();
                if let Ok(mut seen) = seen.lock() {
                    for row in rows {
                        seen.entry(row.entity_id).or_insert(now);
                    }
                }
            }
            Err(error) => eprintln!("{error}"),
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[derive(serde::Deserialize, clickhouse::Row)]
struct Seen {
    entity_id: String,
}

/// Prints `latency probes=N found=F p50_ms= p99_ms= max_ms=` from when each probe was
/// acknowledged and when it was first seen.
pub fn report(
    probes: usize,
    acked: &BTreeMap<String, (Instant, String)>,
    seen: &BTreeMap<String, Instant>,
) {
    let mut found = Vec::new();
    for (id, (at, wall)) in acked {
        match seen.get(id) {
            // Seen by a query that started before the acknowledgement returned: 0.
            Some(first) => found.push(first.saturating_duration_since(*at)),
            None => eprintln!("probe {id} acknowledged at {wall} was not seen in ClickHouse"),
        }
    }
    let mut latencies: Vec<f64> = found.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
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
}
