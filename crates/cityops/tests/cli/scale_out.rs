//! Several ingest processes on one source: three Kafka ingests in one consumer group (one
//! killed with -9, one stopped gracefully under load), on the durable broker. The others take
//! over; nothing is lost or stored twice, and the takeover times are measured.

use crate::ingest_kafka::{PARTITIONS, Rig, TOPICS, good_load, produce_in_background};
use crate::ingest_support::{Ingest, ProofTables, metric_sum};
use std::time::{Duration, Instant};

/// Partitions the ingest says its group gave it now (0 when it does not answer).
async fn assigned(ingest: &Ingest) -> f64 {
    metric_sum(
        &ingest.metrics().await,
        "cityops_ingest_kafka_assigned_partitions",
        &[],
    )
}

/// Waits until `members` together hold `want` partitions, each at least one; returns when.
async fn wait_assigned(members: &[&Ingest], want: f64, after: &str) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut held = Vec::new();
        for m in members {
            held.push(assigned(m).await);
        }
        if held.iter().sum::<f64>() == want && held.iter().all(|n| *n >= 1.0) {
            return Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "after {after}, the members hold {held:?} partitions, not {want} between them:\n{}",
            members
                .iter()
                .map(|m| m.log_text())
                .collect::<Vec<_>>()
                .join("\n----\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_kafka_ingests_one_killed_one_stopped_the_others_take_over_losing_and_doubling_nothing()
 {
    let rig = Rig::start(true, "").await;
    let partitions = (TOPICS.len() as u32 * PARTITIONS) as f64;
    let load = good_load(60_000);
    let total = 120_000.0;
    let producer = produce_in_background(
        rig.kafka.bootstrap(),
        load.messages.clone(),
        30,
        Duration::from_millis(1_000),
    );
    let a = rig.ingest("a");
    let mut b = rig.ingest("b");
    let mut c = rig.ingest("c");
    wait_assigned(&[&a, &b, &c], partitions, "the start").await;
    let before = rig.count("SELECT count() FROM {db}.events").await;

    // kill -9 of b: its partitions move once the broker's session timeout (6 s) notices.
    let killed = Instant::now();
    b.kill9();
    let taken = wait_assigned(&[&a, &c], partitions, "b was killed").await;
    let after_kill = taken - killed;
    let at_kill = rig.count("SELECT count() FROM {db}.events").await;

    // c stopped gracefully: it stores and commits what it read, leaves the group, and a takes
    // everything over at once.
    let stopped = Instant::now();
    assert_eq!(
        c.terminate(Duration::from_secs(30)),
        Some(0),
        "{}",
        c.log_text()
    );
    let taken = wait_assigned(&[&a], partitions, "c stopped").await;
    let after_stop = taken - stopped;
    assert!(c.log_text().contains("drained=true"), "{}", c.log_text());
    let at_stop = rig.count("SELECT count() FROM {db}.events").await;

    producer.join().unwrap();
    let n = rig.wait_for_rows(total, Duration::from_secs(300)).await;
    a.wait_settled().await;
    eprintln!(
        "rows {before} when b was killed (taken over in {:.1} s), {at_kill} when c was stopped \
         (taken over in {:.1} s after SIGTERM), {at_stop} after; {n} of {total}",
        after_kill.as_secs_f64(),
        after_stop.as_secs_f64()
    );
    assert_eq!(n, total, "{}", a.log_text());
    rig.assert_rows_equal_source(&load.expected).await;
    assert!(
        at_stop < total,
        "the load was over before the takeovers: {at_stop} rows"
    );
}
