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

/// Waits until the cluster holds more than `before` rows (read through `node`), or fails with
/// the ingest's log.
async fn wait_for_more(node: &ClickHouseServer, before: f64, ingest: &Ingest, after: &str) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let n = count(node, "SELECT count() FROM {db}.events").await;
        if n > before {
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
    let total = 100_000.0;
    let producer = produce_in_background(
        kafka.bootstrap(),
        load.messages.clone(),
        25,
        Duration::from_millis(1_000),
    );
    let ingest = Ingest::spawn(&config, dir.path(), "ingest");
    let mut schedule = Vec::new();

    // One replica of shard 1 killed with -9 under load, restarted once more rows are stored.
    let n = wait_for_more(cluster.node(1, 1), 0.0, &ingest, "the start").await;
    cluster.node_mut(1, 2).kill9();
    schedule.push(format!("shard 1 replica 2 killed with -9 at {n} rows"));
    let n = wait_for_more(cluster.node(1, 1), n + 10_000.0, &ingest, "the kill").await;
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
