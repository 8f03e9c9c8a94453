//! `cityops ingest` into a ClickHouse cluster (2 shards × 2 replicas of 18.16 with ZooKeeper,
//! the cluster schema of `[clickhouse] cluster`) while replicas are killed and restarted: every
//! row once in the cluster, the same through every node's `Distributed` table.

use crate::ingest_kafka::{PARTITIONS, TOPICS, good_load, ingest_config, produce_in_background};
use crate::ingest_support::{Ingest, Tables};
use cityops_testkit::{ClickHouseCluster, ClickHouseServer, KafkaBroker};
use std::time::{Duration, Instant};

const DB: &str = "proof";

async fn count(node: &ClickHouseServer, sql: &str) -> f64 {
    node.scalar(&sql.replace("{db}", DB)).await.unwrap_or(-1.0)
}

/// Rows the proof's load gives.
const TOTAL: f64 = 100_000.0;

/// Waits until the cluster holds more than `before` rows (read through `node`), or all of the
/// load's (on a slow machine the load can end before the schedule), or fails with the
/// ingest's log.
async fn wait_for_more(node: &ClickHouseServer, before: f64, ingest: &Ingest, after: &str) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let n = count(node, "SELECT count() FROM {db}.events").await;
        if n > before.min(TOTAL - 1.0) {
            return n;
        }
        assert!(
            Instant::now() < deadline,
            "no rows stored after {after} (still {n}):\n{}",
            ingest.log_text()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_through_the_cluster_survives_a_replica_killed_and_a_shard_restarted_in_turn() {
    let mut cluster = ClickHouseCluster::start(2, 2);
    let kafka = KafkaBroker::start();
    for topic in TOPICS {
        kafka.create_topic(topic, PARTITIONS).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let entry = cluster.node(1, 1);
    let clickhouse_toml = format!(
        "url = \"{}\"\ndatabase = \"{DB}\"\ncluster = \"{}\"\n",
        entry.url(),
        cluster.name()
    );
    let config = dir.path().join("ingest.toml");
    std::fs::write(
        &config,
        ingest_config(&clickhouse_toml, &kafka.bootstrap(), false, "", ""),
    )
    .unwrap();
    let out = crate::cityops(&["migrate", "--config", config.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.contains("ON CLUSTER cityops (2 shards, 4 replicas)"),
        "{said}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let load = good_load(50_000);
    let total = TOTAL;
    // Fifty slices a second apart: the load lasts through the kills and restarts.
    let producer = produce_in_background(
        kafka.bootstrap(),
        load.messages.clone(),
        50,
        Duration::from_millis(1_000),
    );
    let mut ingest = Ingest::spawn(&config, dir.path(), "ingest");
    let mut schedule = Vec::new();

    // One replica of shard 1 killed with -9 under load; while it is down the ingest is killed
    // too, and the next one's stored-offset check goes on without the dead replica (its shard's
    // other replica holds everything); the replica is restarted once more rows are stored.
    let n = wait_for_more(cluster.node(1, 1), 0.0, &ingest, "the start").await;
    cluster.node_mut(1, 2).kill9();
    schedule.push(format!("shard 1 replica 2 killed with -9 at {n} rows"));
    let n = wait_for_more(cluster.node(1, 1), n + 10_000.0, &ingest, "the kill").await;
    ingest.kill9();
    schedule.push(format!("the ingest killed with -9 at {n} rows"));
    let ingest = Ingest::spawn(&config, dir.path(), "ingest-2");
    let n = wait_for_more(
        cluster.node(1, 1),
        n + 10_000.0,
        &ingest,
        "the ingest's restart",
    )
    .await;
    cluster.node_mut(1, 2).start_again();
    schedule.push(format!("shard 1 replica 2 started again at {n} rows"));

    // Shard 2's replicas restarted in turn (SIGTERM, then started), rows stored in between.
    for replica in [1, 2] {
        let n = count(cluster.node(1, 1), "SELECT count() FROM {db}.events").await;
        cluster.node_mut(2, replica).restart();
        schedule.push(format!("shard 2 replica {replica} restarted at {n} rows"));
        wait_for_more(cluster.node(1, 1), n, &ingest, "a restart").await;
    }

    producer.join().unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut n = 0.0;
    while Instant::now() < deadline {
        n = count(cluster.node(1, 1), "SELECT count() FROM {db}.events").await;
        if n >= total {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    ingest.wait_settled().await;
    eprintln!("schedule: {schedule:?}; rows {n} of {total}");
    assert_eq!(n, total, "{}", ingest.log_text());

    // Every replica caught up; each shard's replicas hold the same rows, the shards together
    // the source's, and every node's Distributed table shows the source exactly.
    let mut shard_rows = Vec::new();
    for shard in 1..=2 {
        let mut replicas = Vec::new();
        for replica in 1..=2 {
            let node = cluster.node(shard, replica);
            node.sql(&format!("SYSTEM SYNC REPLICA {DB}.events_local"))
                .await
                .unwrap();
            replicas.push(count(node, "SELECT count() FROM {db}.events_local").await);
        }
        assert_eq!(replicas[0], replicas[1], "shard {shard}'s replicas differ");
        shard_rows.push(replicas[0]);
    }
    eprintln!("rows per shard: {shard_rows:?}");
    assert_eq!(shard_rows.iter().sum::<f64>(), total);
    for node in cluster.nodes() {
        Tables {
            clickhouse: node,
            db: DB,
        }
        .assert_rows_equal_source(&load.expected)
        .await;
    }
    drop(ingest);
}

/// `PYTHONPATH` for dashboards/verify.py: Grafana's schema models, installed by `make deps`.
fn grafana_sdk() -> std::path::PathBuf {
    let dir = cityops_testkit::cache_dir().join("grafana-foundation-sdk/1769699379-11.6.0");
    assert!(
        dir.join("grafana_foundation_sdk").is_dir(),
        "{} is missing: run `make deps`",
        dir.display()
    );
    dir
}

/// Every panel query of dashboards/ and every query of docs/engineers.md, on the cluster
/// (through its `Distributed` tables) filled by the simulator through the shipped config.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_runs_on_the_cluster() {
    let cluster = ClickHouseCluster::start(2, 2);
    // The shipped config, pointed at the cluster through its environment.
    let config = crate::repo_root().join("deploy/config/cityops.toml");
    let env = [
        ("CITYOPS_CLICKHOUSE_URL", cluster.node(1, 2).url()),
        ("CITYOPS_CLICKHOUSE_DATABASE", "cityops".to_owned()),
        ("CITYOPS_CLICKHOUSE_CLUSTER", cluster.name().to_owned()),
    ];
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_cityops"))
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cityops {}:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let config = config.to_str().unwrap();
    let _ = run(&["migrate", "--config", config, "--quiet"]);
    // Six hours of the city through the Distributed tables, as the demo's history.
    let _ = run(&[
        "sim",
        "--seed",
        "7",
        "--backfill",
        "6h",
        "--faulty-fraction",
        "0.02",
        "--to-clickhouse",
        "--config",
        config,
    ]);
    // Alert history on one shard (the panels read it through alert_events): a flood alert
    // that fired and resolved, and one still firing.
    let shard = cluster.node(1, 1);
    shard
        .sql(
            "INSERT INTO cityops.alert_events_local (alert_event_id, ts, rule, fingerprint, state, previous_state, severity, domain, entity_id, district, value, summary) VALUES \
             (toUUID('9d3c4e8a-51b2-4c7f-8a7e-000000000001'), now() - 5400, 'FloodWaterHigh', 'f1', 'firing', 'pending', 'critical', 'water', 'wl-hc-01', 'Hải Châu', 2.4, 'Mực nước 2.4 m'), \
             (toUUID('9d3c4e8a-51b2-4c7f-8a7e-000000000002'), now() - 1800, 'FloodWaterHigh', 'f1', 'resolved', 'firing', 'critical', 'water', 'wl-hc-01', 'Hải Châu', 1.1, 'Mực nước 1.1 m'), \
             (toUUID('9d3c4e8a-51b2-4c7f-8a7e-000000000003'), now() - 600, 'FloodWaterHigh', 'f2', 'firing', 'pending', 'warning', 'water', 'wl-st-03', 'Sơn Trà', 1.9, 'Mực nước 1.9 m')",
        )
        .await
        .unwrap();
    // The alerter's reads on the cluster: the shipped rules (query rules included, as the
    // read-only user) replayed over the six hours.
    let at = async |sql: &str| shard.sql(sql).await.unwrap().trim().to_owned();
    let from = at("SELECT formatDateTime(now() - 21600, '%Y-%m-%dT%H:%M:%SZ', 'UTC')").await;
    let to = at("SELECT formatDateTime(now(), '%Y-%m-%dT%H:%M:%SZ', 'UTC')").await;
    let replayed = run(&[
        "rules", "backtest", "--config", config, "--from", &from, "--to", &to, "--quiet", "--json",
    ]);
    let last: serde_json::Value =
        serde_json::from_str(replayed.lines().last().unwrap_or("{}")).unwrap();
    eprintln!(
        "backtest on the cluster: {} events, {} query evaluations ({} failed)",
        last["events"], last["evaluations"], last["failed_evaluations"]
    );
    assert!(
        last["events"].as_u64().unwrap_or(0) > 100_000
            && last["evaluations"].as_u64().unwrap_or(0) > 0
            && last["failed_evaluations"] == 0,
        "{last}"
    );
    let entry = cluster.node(2, 2);
    let rows = entry
        .scalar("SELECT count() FROM cityops.events")
        .await
        .unwrap();
    assert!(rows > 100_000.0, "the backfill stored {rows} events");

    let out = std::process::Command::new("python3")
        .arg(crate::repo_root().join("dashboards/verify.py"))
        .args(["--clickhouse", &entry.url(), "--database", "cityops"])
        .args(["--docs", "docs/engineers.md"])
        .current_dir(crate::repo_root())
        .env("PYTHONPATH", grafana_sdk())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let summary = text
        .lines()
        .find_map(|l| l.strip_prefix("verify: "))
        .unwrap_or_else(|| {
            panic!(
                "no summary:\n{text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let summary: serde_json::Value = serde_json::from_str(summary).unwrap();
    eprintln!("dashboards on the cluster: {summary}");
    assert!(out.status.success() && summary["failures"] == 0, "{text}");
    assert!(
        summary["sql_queries"].as_u64().unwrap_or(0) >= 100,
        "{summary}"
    );
}
