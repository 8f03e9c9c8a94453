//! The cluster schema on 2 shards × 2 replicas of ClickHouse 18.16 with ZooKeeper, all
//! started by the test kit on loopback ports.

use super::schema::RETENTION;
use cityops_clickhouse::{ClickHouse, MigrationOutcome, apply_retention, migrate};
use cityops_testkit::{ClickHouseCluster, ClickHouseServer};
use std::time::{Duration, Instant};

/// Waits until `sql` answers `expected` on `node`; panics with what it last saw.
async fn wait_for(node: &ClickHouseServer, sql: &str, expected: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seen = node.sql(sql).await.map(|s| s.trim().to_owned());
        if seen.as_deref().ok() == Some(expected) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{sql} on {}: expected {expected}, last answer {seen:?}",
            node.url()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn scalar(node: &ClickHouseServer, sql: &str) -> u64 {
    node.sql(sql)
        .await
        .unwrap()
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cluster_schema_replicates_deduplicates_and_retains_on_every_node() {
    let cluster = ClickHouseCluster::start(2, 2);
    let ch = ClickHouse::connect(&cluster.config("cityops", (1, 1)))
        .await
        .unwrap();
    let topology = ch.cluster().expect("the config names a cluster");
    assert_eq!(topology.shards, 2);
    assert_eq!(topology.replicas.len(), 4);

    let first = migrate(&ch, RETENTION, false).await.unwrap();
    for (version, name, outcome, _) in &first.migrations {
        let expected_applied = *version < 1000;
        assert!(
            matches!(
                (expected_applied, outcome),
                (true, MigrationOutcome::Applied) | (false, MigrationOutcome::NeedsServer(_))
            ),
            "migration {version} {name}: {outcome:?}"
        );
    }
    for node in cluster.nodes() {
        let tables = node
            .sql("SELECT name, engine FROM system.tables WHERE database = 'cityops' ORDER BY name FORMAT TSV")
            .await
            .unwrap();
        for expected in [
            "alert_episodes\tView",
            "alert_events\tDistributed",
            "alert_events_local\tReplicatedMergeTree",
            "events\tDistributed",
            "events_1m_district\tDistributed",
            "events_1m_district_local\tReplicatedAggregatingMergeTree",
            "events_1m_entity_mv\tMaterializedView",
            "events_local\tReplicatedMergeTree",
            "rejects\tDistributed",
            "rejects_local\tReplicatedMergeTree",
            "schema_migrations\tReplicatedMergeTree",
        ] {
            assert!(
                tables.lines().any(|l| l == expected),
                "{} lacks {expected:?}; it has:\n{tables}",
                node.url()
            );
        }
        // Every node knows what was applied: migrating through any of them changes nothing.
        wait_for(
            node,
            "SELECT count() FROM cityops.schema_migrations",
            &first
                .migrations
                .iter()
                .filter(|m| m.2 == MigrationOutcome::Applied)
                .count()
                .to_string(),
        )
        .await;
    }
    let through_other = ClickHouse::connect(&cluster.config("cityops", (2, 2)))
        .await
        .unwrap();
    let again = migrate(&through_other, RETENTION, false).await.unwrap();
    assert!(
        !again.changed(),
        "a second run changed something: {again:?}"
    );

    // 3,000 events over three days, written through the Distributed table (synchronously).
    let insert = "INSERT INTO cityops.events (event_id, ts, ingested_at, feed, domain, entity_id, metric, value, source_kind, source_topic, source_partition, source_offset) \
        SELECT generateUUIDv4(), toDateTime(1796169600 - (number % 3) * 86400, 'UTC'), now(), 'water_level', 'water', concat('gauge-', toString(number % 97)), 'water_level', number, 'kafka', 't', toInt32(number % 4), toInt64(number) FROM system.numbers LIMIT 3000";
    ch.execute(insert, "seed events").await.unwrap();
    for node in cluster.nodes() {
        wait_for(node, "SELECT count() FROM cityops.events", "3000").await;
        node.sql("SYSTEM SYNC REPLICA cityops.events_local")
            .await
            .unwrap();
    }
    let shard_rows = [
        scalar(
            cluster.node(1, 1),
            "SELECT count() FROM cityops.events_local",
        )
        .await,
        scalar(
            cluster.node(2, 1),
            "SELECT count() FROM cityops.events_local",
        )
        .await,
    ];
    assert_eq!(shard_rows[0] + shard_rows[1], 3000, "{shard_rows:?}");
    assert!(
        shard_rows.iter().all(|n| *n > 500),
        "the rows are spread over both shards: {shard_rows:?}"
    );
    for (shard, rows) in [(1, shard_rows[0]), (2, shard_rows[1])] {
        assert_eq!(
            scalar(
                cluster.node(shard, 2),
                "SELECT count() FROM cityops.events_local"
            )
            .await,
            rows,
            "replica 2 of shard {shard} holds what replica 1 holds"
        );
    }
    // The rollups are fed on each shard and read through their Distributed tables.
    wait_for(
        cluster.node(2, 2),
        "SELECT countMerge(samples) FROM cityops.events_1m_entity",
        "3000",
    )
    .await;

    // The same INSERT sent again (a retry whose first attempt landed) is dropped by every
    // shard as a duplicate block, whichever node it enters through.
    let values: Vec<String> = (0..40)
        .map(|i| {
            format!(
                "(toUUID('6f1c8a52-7d7e-4a8e-9c3b-{i:012}'), toDateTime(1796169600, 'UTC'), 'water_level', 'water', 'g-{i}', 'water_level', {i}, 'kafka', 'u', 0, {i})"
            )
        })
        .collect();
    let fixed = format!(
        "INSERT INTO cityops.events (event_id, ts, feed, domain, entity_id, metric, value, source_kind, source_topic, source_partition, source_offset) VALUES {}",
        values.join(", ")
    );
    ch.execute(&fixed, "insert 40 rows").await.unwrap();
    through_other
        .execute(&fixed, "insert the same 40 rows again")
        .await
        .unwrap();
    ch.execute(&fixed, "and once more").await.unwrap();
    assert_eq!(
        scalar(
            cluster.node(1, 2),
            "SELECT count() FROM cityops.events WHERE source_topic = 'u'"
        )
        .await,
        40
    );

    // What the stored-offset check reads: every replica's rows.
    let (events, _) = ch
        .stored_offsets("kafka", &["t".to_owned(), "u".to_owned()])
        .await
        .unwrap();
    let highest = |topic: &str, partition: i32| {
        events
            .get(&(topic.to_owned(), partition))
            .and_then(|days| days.values().max().copied())
    };
    assert_eq!(highest("t", 3), Some(2999));
    assert_eq!(highest("t", 0), Some(2996));
    assert_eq!(highest("u", 0), Some(39));
    assert!(ch.running_ingest_queries().await.unwrap().is_empty());

    // Retention drops a partition on every replica of every shard.
    ch.execute(
        "INSERT INTO cityops.events (event_id, ts, feed, domain, entity_id, metric, value) SELECT generateUUIDv4(), now() - 400 * 86400, 'f', 'water', toString(number), 'm', 1 FROM system.numbers LIMIT 200",
        "old events",
    )
    .await
    .unwrap();
    let report = apply_retention(&ch, RETENTION, false).await.unwrap();
    let dropped: Vec<&str> = report
        .actions
        .iter()
        .filter(|a| a.table == "events")
        .map(|a| a.statement.as_str())
        .collect();
    assert_eq!(dropped.len(), 1, "{report:?}");
    assert!(
        dropped[0].contains("events_local ON CLUSTER cityops DROP PARTITION"),
        "{}",
        dropped[0]
    );
    for node in cluster.nodes() {
        wait_for(
            node,
            "SELECT count() FROM cityops.events_local WHERE ts < now() - 300 * 86400",
            "0",
        )
        .await;
    }
    assert_eq!(
        scalar(cluster.node(2, 1), "SELECT count() FROM cityops.events").await,
        3040
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_the_servers_do_not_define_is_a_clear_error() {
    let cluster = ClickHouseCluster::start(1, 2);
    let mut config = cluster.config("cityops", (1, 1));
    config.cluster = Some("elsewhere".to_owned());
    let error = ClickHouse::connect(&config)
        .await
        .err()
        .expect("an unknown cluster is refused")
        .to_string();
    assert!(
        error.contains("\"elsewhere\"") && error.contains("no such cluster"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_that_is_down_is_left_out_only_when_its_shard_has_all_it_held() {
    let mut cluster = ClickHouseCluster::start(2, 2);
    let ch = ClickHouse::connect(&cluster.config("cityops", (2, 1)))
        .await
        .unwrap();
    migrate(&ch, RETENTION, false).await.unwrap();
    let insert = |offset: u32| {
        format!(
            "INSERT INTO cityops.events_local (event_id, ts, feed, domain, entity_id, metric, value, source_kind, source_topic, source_partition, source_offset) \
             VALUES (toUUID('0b6f3c52-1d2e-4f5a-9b8c-{offset:012}'), toDateTime(1796169600, 'UTC'), 'water_level', 'water', 'g', 'water_level', 1, 'kafka', 't', 0, {offset})"
        )
    };
    let highest = async |ch: &ClickHouse| {
        ch.stored_offsets("kafka", &["t".to_owned()])
            .await
            .map(|(events, _)| events[&("t".to_owned(), 0)].values().copied().max())
    };
    cluster.node(1, 1).sql(&insert(10)).await.unwrap();
    for replica in [1, 2] {
        cluster
            .node(1, replica)
            .sql("SYSTEM SYNC REPLICA cityops.events_local")
            .await
            .unwrap();
    }

    // Shard 1's replica 2 down, replica 1 has everything: the check answers without it.
    cluster.node_mut(1, 2).kill9();
    assert_eq!(highest(&ch).await.unwrap(), Some(10));
    cluster.node_mut(1, 2).start_again();

    // Replica 1 stops fetching; replica 2 takes offset 20 and dies before replica 1 has it.
    cluster
        .node(1, 1)
        .sql("SYSTEM STOP FETCHES cityops.events_local")
        .await
        .unwrap();
    cluster.node(1, 2).sql(&insert(20)).await.unwrap();
    wait_for(
        cluster.node(1, 1),
        "SELECT inserts_in_queue FROM system.replicas WHERE table = 'events_local'",
        "1",
    )
    .await;
    cluster.node_mut(1, 2).kill9();
    cluster
        .node(1, 1)
        .sql("SYSTEM START FETCHES cityops.events_local")
        .await
        .unwrap();
    let refused = highest(&ch)
        .await
        .expect_err("offset 20 is only on the dead replica");
    let said = refused.to_string();
    assert!(
        said.contains("/clickhouse/tables/01/cityops/events_local")
            && said.contains("1 of 2 replicas answer, none up to date"),
        "{said}"
    );
    // Back, it hands offset 20 over and the check sees it.
    cluster.node_mut(1, 2).start_again();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match highest(&ch).await {
            Ok(Some(20)) => break,
            seen => assert!(Instant::now() < deadline, "after the restart: {seen:?}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
