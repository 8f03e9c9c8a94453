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

/// Rows stored now, once they have stopped growing for two seconds.
async fn settled_rows(tables: &impl ProofTables) -> f64 {
    let mut last = tables.count("SELECT count() FROM {db}.events").await;
    let mut since = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(120);
    while since.elapsed() < Duration::from_secs(2) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let n = tables.count("SELECT count() FROM {db}.events").await;
        if n != last {
            last = n;
            since = Instant::now();
        }
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mqtt_ingest_retired_for_good_strands_nothing_of_its_share() {
    use crate::ingest_mqtt::{Rig as MqttRig, good_load, publish, roomy_broker, wait_connected};
    let rig = MqttRig::with_broker(roomy_broker()).await;
    let load = good_load(30_000);
    let shared = "shared_group = \"proof\"\nconnections = 2";
    let a = rig.ingest_run("a", "a", shared, "");
    let mut b = rig.ingest_run("b", "b", shared, "");
    wait_connected(&a, 2.0).await;
    wait_connected(&b, 2.0).await;
    let port = rig.mosquitto.port();
    let (first, rest) = load.messages.split_at(10_000);
    let (second, third) = rest.split_at(10_000);
    assert_eq!(publish(port, first).await, 10_000);
    rig.wait_for_rows(20_000.0, Duration::from_secs(60)).await;

    // b stops for good; its sessions stay at the broker, which keeps handing them their share.
    assert_eq!(
        b.terminate(Duration::from_secs(30)),
        Some(0),
        "{}",
        b.log_text()
    );
    assert_eq!(publish(port, second).await, 10_000);
    a.wait_settled().await;
    let before = settled_rows(&rig).await;
    let stranded = 40_000.0 - before;
    eprintln!("with b stopped: {before} rows of 40000, {stranded} waiting for b's sessions");
    assert!(
        stranded > 2_000.0,
        "b's sessions got no share: {before} rows"
    );

    let config = rig.config("b", shared, "");
    // A retire stopped half way (SIGTERM) keeps the sessions: it says so and exits 1.
    let log_path = rig.dir.path().join("retire-stopped.log");
    let mut stopped = std::process::Command::new(env!("CARGO_BIN_EXE_cityops"))
        .args(["ingest", "--retire", "--config", config.to_str().unwrap()])
        .args(["--listen-addr", "127.0.0.1:0"])
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&log_path)
        .unwrap_or_default()
        .contains("spool opened")
    {
        assert!(Instant::now() < deadline, "the retire did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(stopped.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = stopped.wait().unwrap();
    let said = std::fs::read_to_string(&log_path).unwrap();
    // Retiring takes at least 3 quiet seconds after the sessions unsubscribe, so the signal
    // comes first on any machine that runs this test at all.
    assert!(
        status.code() == Some(1) && said.contains("not retired"),
        "{status}\n{said}"
    );

    // Retired: b's config, --retire. It takes what the broker queued for its sessions, stores
    // it, ends the sessions and exits 0.
    let started = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cityops"))
        .args(["ingest", "--retire", "--config", config.to_str().unwrap()])
        .args(["--listen-addr", "127.0.0.1:0"])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "retire failed:\n{log}");
    assert!(
        log.contains("retired: everything the sessions received is stored"),
        "{log}"
    );
    let n = rig.wait_for_rows(40_000.0, Duration::from_secs(60)).await;
    eprintln!(
        "retired in {:.1} s; {n} rows of 40000",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(n, 40_000.0, "{log}");

    // The broker no longer has b's sessions: everything published now goes to a.
    assert_eq!(publish(port, third).await, 10_000);
    let n = rig.wait_for_rows(60_000.0, Duration::from_secs(60)).await;
    assert_eq!(n, 60_000.0, "{}", a.log_text());
    a.wait_settled().await;
    rig.assert_rows_equal_source(&load.expected).await;
}
