//! ClickHouse and the brokers misbehaving under a running ingest, on real services: answering
//! slowly, hanging, doing the work and the answer lost, connections cut mid-request, made
//! read-only, stopped for a minute. Whatever they do, every row arrives once when they are
//! healthy again.

use crate::ingest_kafka::{Rig, good_load, produce_in_background};
use crate::ingest_support::{Ingest, ProofTables, metric_sum};
use cityops_testkit::FaultProxy;
use std::time::{Duration, Instant};

/// Waits until `what` holds (checked every 200 ms), or fails with `seen()` after `timeout`.
async fn wait_until<F: std::future::Future<Output = bool>>(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> F,
    seen: impl Fn() -> String,
) {
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "{what} not seen within {timeout:?}:\n{}",
            seen()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the ingest stores rows again and says it is ready: whatever it left unresolved
/// in the last fault is settled, so the next fault meets it writing.
async fn wait_recovered(rig: &Rig, ingest: &Ingest, after: &str) {
    let before = rig.count("SELECT count() FROM {db}.events").await;
    wait_until(
        Duration::from_secs(120),
        &format!("the ingest storing rows and ready again after {after}"),
        || async {
            rig.count("SELECT count() FROM {db}.events").await > before
                && crate::ingest_support::http_get(ingest.port, "/readyz")
                    .await
                    .0
                    == 200
        },
        || ingest.log_text(),
    )
    .await;
}

/// Failed INSERTs the ingest counted so far (all tables and actions).
async fn insert_failures(ingest: &Ingest) -> f64 {
    metric_sum(
        &ingest.metrics().await,
        "cityops_ingest_insert_failures_total",
        &[],
    )
}

/// Turns `readonly = 1` (reads only, no writes) on or off in the profile of the user the ingest
/// writes as; ClickHouse reloads `users.xml` by itself. Returns once new sessions see it.
async fn set_readonly(rig: &Rig, on: bool) {
    let users = rig.clickhouse.dir().join("conf/users.xml");
    let text = std::fs::read_to_string(&users).unwrap();
    let marker = "<load_balancing>random</load_balancing>";
    let readonly = "<readonly>1</readonly><!--fault-->";
    let text = if on {
        text.replacen(marker, &format!("{marker}{readonly}"), 1)
    } else {
        text.replace(readonly, "")
    };
    // ClickHouse notices a change by the file's modification time, in whole seconds: two
    // writes within one second look like one. Move it on by two seconds at least.
    let before = std::fs::metadata(&users).unwrap().modified().unwrap();
    std::fs::write(&users, text).unwrap();
    let later = (before + Duration::from_secs(2)).max(std::time::SystemTime::now());
    std::fs::File::options()
        .write(true)
        .open(&users)
        .unwrap()
        .set_modified(later)
        .unwrap();
    let want = if on { "1" } else { "0" };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seen = rig
            .clickhouse
            .sql("SELECT value FROM system.settings WHERE name = 'readonly'")
            .await
            .unwrap_or_default();
        if seen.trim() == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "readonly still {seen:?}, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_slow_hung_silent_cut_read_only_and_stopped_for_a_minute_loses_and_duplicates_nothing()
 {
    let mut rig = Rig::start(false, "insert_timeout_ms = 3000\n").await;
    let proxy = FaultProxy::start(rig.clickhouse.http_port()).await.unwrap();
    // The ingest reaches ClickHouse through the proxy.
    let text = std::fs::read_to_string(&rig.config).unwrap().replace(
        &format!("url = \"{}\"", rig.clickhouse.url()),
        &format!("url = \"http://127.0.0.1:{}\"", proxy.port()),
    );
    std::fs::write(&rig.config, text).unwrap();
    let load = good_load(60_000);
    let producer = produce_in_background(
        rig.kafka.bootstrap(),
        load.messages.clone(),
        30,
        Duration::from_millis(2_000),
    );
    let ingest = rig.ingest("faults");
    rig.wait_for_rows(4_000.0, Duration::from_secs(60)).await;
    let log = || ingest.log_text();
    let mut faults = Vec::new();

    // Slow: every chunk waits 400 ms.
    proxy.delay(Duration::from_millis(400));
    let before = rig.count("SELECT count() FROM {db}.events").await;
    wait_until(
        Duration::from_secs(60),
        "rows stored through a slow server",
        || async { rig.count("SELECT count() FROM {db}.events").await > before },
        log,
    )
    .await;
    proxy.pass();
    faults.push("slow".to_owned());

    // Hung: nothing goes through; the inserts time out and are retried.
    let failed = insert_failures(&ingest).await;
    proxy.stall();
    wait_until(
        Duration::from_secs(60),
        "an INSERT timing out on a hung server",
        || async { insert_failures(&ingest).await > failed },
        log,
    )
    .await;
    proxy.pass();
    faults.push(format!(
        "hung: {} failures",
        insert_failures(&ingest).await - failed
    ));
    wait_recovered(&rig, &ingest, "the hung server").await;

    // Silent: the server stores the rows but the answer never comes, and those connections
    // stay open and silent for good. The retry must not store the rows twice, and no query
    // may wait for an answer forever.
    let failed = insert_failures(&ingest).await;
    proxy.lose_responses();
    wait_until(
        Duration::from_secs(60),
        "an INSERT whose answer was lost",
        || async { insert_failures(&ingest).await > failed },
        log,
    )
    .await;
    // The look-ups that follow the failed INSERT lose their answers too, for a while.
    tokio::time::sleep(Duration::from_secs(15)).await;
    proxy.pass();
    faults.push(format!(
        "answers lost: {} failures",
        insert_failures(&ingest).await - failed
    ));
    wait_recovered(&rig, &ingest, "the lost answers").await;

    // Cut: three requests cut in the middle, then every connection at once.
    proxy.cut_mid_request(3);
    wait_until(
        Duration::from_secs(90),
        "three requests cut mid-way",
        || async { proxy.cuts_done() >= 3 },
        log,
    )
    .await;
    proxy.cut_all();
    faults.push("3 requests cut mid-way, all connections cut".to_owned());
    wait_recovered(&rig, &ingest, "the cuts").await;

    // Read-only: the server refuses every write of the ingest user.
    let failed = insert_failures(&ingest).await;
    set_readonly(&rig, true).await;
    wait_until(
        Duration::from_secs(60),
        "an INSERT refused in read-only mode",
        || async { insert_failures(&ingest).await > failed },
        log,
    )
    .await;
    set_readonly(&rig, false).await;
    faults.push(format!(
        "read-only: {} failures",
        insert_failures(&ingest).await - failed
    ));
    wait_recovered(&rig, &ingest, "read-only").await;

    // Stopped for a minute while the load goes on.
    rig.clickhouse.stop();
    tokio::time::sleep(Duration::from_secs(60)).await;
    rig.clickhouse.start_again();
    faults.push("stopped 60 s".to_owned());

    producer.join().unwrap();
    let n = rig.wait_for_rows(120_000.0, Duration::from_secs(240)).await;
    ingest.wait_settled().await;
    eprintln!("faults survived: {faults:?}; rows {n} of 120000");
    assert_eq!(n, 120_000.0, "{}", ingest.log_text());
    rig.assert_rows_equal_source(&load.expected).await;
    assert_eq!(
        rig.count("SELECT count() FROM {db}.rejects").await,
        0.0,
        "no good row went to rejects: {}",
        ingest.log_text()
    );
}

/// Waits until `ingest`'s log has `line` (it started consuming, or was given partitions).
async fn wait_for_log(ingest: &Ingest, line: &str) {
    wait_until(
        Duration::from_secs(120),
        &format!("{line:?} in the log"),
        || async { ingest.log_text().contains(line) },
        || ingest.log_text(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingests_killed_with_9_while_joining_and_during_rebalances_on_the_durable_broker_lose_and_duplicate_nothing()
 {
    let rig = Rig::start(true, "").await;
    let load = good_load(40_000);
    let producer = produce_in_background(
        rig.kafka.bootstrap(),
        load.messages.clone(),
        20,
        Duration::from_millis(1_500),
    );
    let seed = std::process::id() as u64 ^ crate::ingest_support::base_ms() as u64;
    let random_ms = |n: u64, below: u64| seed.wrapping_mul(n * 7919 + 13) % below;
    let (consuming, assigned) = ("consuming topics", "partitions assigned");
    let mut killed_joining = 0;
    let mut schedule = Vec::new();

    // Killed while joining the group: at a random moment after it starts consuming.
    let mut a = rig.ingest("a-0");
    for round in 1..=2u64 {
        wait_for_log(&a, consuming).await;
        let wait = random_ms(round, 1_000);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let joined = a.log_text().contains(assigned);
        a.kill9();
        killed_joining += u32::from(!joined);
        schedule.push(format!(
            "a killed {wait} ms after joining began (assigned: {joined})"
        ));
        a = rig.ingest(&format!("a-{round}"));
    }
    wait_for_log(&a, assigned).await;
    rig.wait_for_rows(1.0, Duration::from_secs(120)).await;

    // Killed during rebalances: a second member joins, then one of them dies mid-rebalance.
    let mut b = rig.ingest("b-0");
    wait_for_log(&b, consuming).await;
    let wait = random_ms(3, 2_000);
    tokio::time::sleep(Duration::from_millis(wait)).await;
    a.kill9();
    schedule.push(format!("a killed {wait} ms after b began joining"));
    a = rig.ingest("a-3");
    wait_for_log(&a, consuming).await;
    let wait = random_ms(4, 2_000);
    tokio::time::sleep(Duration::from_millis(wait)).await;
    b.kill9();
    schedule.push(format!("b killed {wait} ms after a began joining again"));
    b = rig.ingest("b-1");

    producer.join().unwrap();
    let n = rig.wait_for_rows(80_000.0, Duration::from_secs(300)).await;
    a.wait_settled().await;
    b.wait_settled().await;
    eprintln!("kill schedule: {schedule:?}; rows {n} of 80000");
    assert_eq!(n, 80_000.0, "a:\n{}\nb:\n{}", a.log_text(), b.log_text());
    rig.assert_rows_equal_source(&load.expected).await;
    assert!(
        killed_joining >= 1,
        "no kill landed before the group gave partitions: {schedule:?}"
    );
    assert_eq!(a.terminate(Duration::from_secs(30)), Some(0));
    assert_eq!(b.terminate(Duration::from_secs(30)), Some(0));
}

/// Waits until more than `before` rows are stored (or all `total` are), `/readyz` says ready
/// and the proxy carried the ingest's traffic again.
async fn wait_flowing(
    tables: &impl ProofTables,
    ingest: &Ingest,
    before: f64,
    total: f64,
    after: &str,
) {
    wait_until(
        Duration::from_secs(180),
        &format!("rows flowing and the ingest ready after {after}"),
        || async {
            let n = tables.count("SELECT count() FROM {db}.events").await;
            (n > before || n >= total)
                && crate::ingest_support::http_get(ingest.port, "/readyz")
                    .await
                    .0
                    == 200
        },
        || ingest.log_text(),
    )
    .await;
}

/// Cuts three requests to the broker in the middle, then every connection at once, and waits
/// until rows flow again; says what it did.
async fn cut_mid_way_then_all(
    proxy: &FaultProxy,
    tables: &impl ProofTables,
    ingest: &Ingest,
    total: f64,
) -> String {
    proxy.cut_mid_request(3);
    wait_until(
        Duration::from_secs(90),
        "three requests to the broker cut mid-way",
        || async { proxy.cuts_done() >= 3 },
        || ingest.log_text(),
    )
    .await;
    let at_cut = tables.count("SELECT count() FROM {db}.events").await;
    proxy.cut_all();
    wait_flowing(tables, ingest, at_cut, total, "the cuts").await;
    format!("3 requests cut mid-way, all connections cut at {at_cut} rows")
}

/// The network between the ingest and the durable Kafka broker misbehaves while the ingest
/// reads a backlog: slow, hung for longer than the group's session timeout (the broker may
/// drop the member, whose commits are then refused until it joins again), requests cut
/// mid-way, every connection cut. Every row arrives once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_network_to_the_kafka_broker_slow_hung_and_cut_loses_and_duplicates_nothing() {
    use crate::ingest_kafka::{PARTITIONS, TOPICS};
    let broker_port = cityops_testkit::free_port();
    let proxy = FaultProxy::start(broker_port).await.unwrap();
    // The broker advertises the proxy: after the bootstrap every client goes through it.
    let kafka = cityops_testkit::KafkaBroker::start_durable_advertising(broker_port, proxy.port());
    for topic in TOPICS {
        kafka.create_topic(topic, PARTITIONS).unwrap();
    }
    let rig = Rig::with_broker(
        kafka,
        cityops_testkit::ClickHouseServer::start(),
        true,
        "",
        |_| String::new(),
    )
    .await;
    // Small fetches (librdkafka wants fetch.max.bytes >= message.max.bytes, so only the
    // per-partition limit shrinks), so that the backlog takes a while through a slow network and the faults
    // meet the ingest mid-load; the bootstrap through the proxy too.
    let text = std::fs::read_to_string(&rig.config)
        .unwrap()
        .replace(
            &format!("bootstrap_servers = \"127.0.0.1:{broker_port}\""),
            &format!("bootstrap_servers = \"127.0.0.1:{}\"", proxy.port()),
        )
        .replace(
            "max_partition_fetch_bytes = 262144\n",
            "max_partition_fetch_bytes = 16384\n",
        );
    assert!(text.contains(&format!("127.0.0.1:{}", proxy.port())));
    assert!(text.contains("max_partition_fetch_bytes = 16384\n"));
    std::fs::write(&rig.config, text).unwrap();
    // The whole load first, while the proxy passes: the test's producer goes through it too,
    // and a producer's retry across a cut connection could write a message twice.
    let load = good_load(50_000);
    let total = 100_000.0;
    produce_in_background(
        rig.kafka.bootstrap(),
        load.messages.clone(),
        1,
        Duration::ZERO,
    )
    .join()
    .unwrap();

    proxy.delay(Duration::from_millis(100));
    let mut ingest = rig.ingest("through-faults");
    rig.wait_for_rows(1.0, Duration::from_secs(120)).await;
    let count = || rig.count("SELECT count() FROM {db}.events");
    let mut faults = vec!["slow (100 ms a chunk) from the start".to_owned()];

    // Hung for 15 s, over twice the session timeout (6 s).
    proxy.stall();
    let at_stall = count().await;
    tokio::time::sleep(Duration::from_secs(15)).await;
    proxy.delay(Duration::from_millis(100));
    faults.push(format!("hung 15 s at {at_stall} rows"));
    wait_flowing(&rig, &ingest, count().await, total, "the hung network").await;

    faults.push(cut_mid_way_then_all(&proxy, &rig, &ingest, total).await);

    proxy.pass();
    let n = rig.wait_for_rows(total, Duration::from_secs(300)).await;
    ingest.wait_settled().await;
    eprintln!("faults survived: {faults:?}; rows {n} of {total}");
    assert_eq!(n, total, "{}", ingest.log_text());
    rig.assert_rows_equal_source(&load.expected).await;
    assert_eq!(rig.count("SELECT count() FROM {db}.rejects").await, 0.0);
    assert_eq!(ingest.terminate(Duration::from_secs(30)), Some(0));
}

/// The network between the MQTT ingest and mosquitto misbehaves while sensors publish: slow,
/// hung past the keep-alive (the ingest reconnects; the broker resends what was not
/// acknowledged), packets cut mid-way, every connection cut. Every row arrives once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_network_to_mosquitto_slow_hung_and_cut_loses_and_duplicates_nothing() {
    use crate::ingest_mqtt::{good_load, publish_in_background, roomy_broker, wait_connected};
    let rig = crate::ingest_mqtt::Rig::with_broker(roomy_broker()).await;
    let proxy = FaultProxy::start(rig.mosquitto.port()).await.unwrap();
    let config = rig.config("a", "", "");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &format!("port = {}\n", rig.mosquitto.port()),
        &format!("port = {}\n", proxy.port()),
    );
    assert!(text.contains(&format!("port = {}\n", proxy.port())));
    std::fs::write(&config, text).unwrap();
    let mut ingest = Ingest::spawn(&config, rig.dir.path(), "through-faults");
    wait_connected(&ingest, 4.0).await;
    // The sensors publish straight to the broker, in slices, while the faults come and go.
    let load = good_load(60_000);
    let total = 120_000.0;
    let publisher = publish_in_background(
        rig.mosquitto.port(),
        load.messages.clone(),
        30,
        Duration::from_millis(1_000),
    );
    let count = || rig.count("SELECT count() FROM {db}.events");
    rig.wait_for_rows(1.0, Duration::from_secs(120)).await;
    let mut faults = Vec::new();

    proxy.delay(Duration::from_millis(200));
    let before = count().await;
    wait_flowing(&rig, &ingest, before, total, "a slow network").await;
    faults.push("slow (200 ms a chunk)".to_owned());

    // Hung: the keep-alive (5 s) runs out, the ingest reconnects into the hung network until
    // it passes again.
    let errors = |m: &str| metric_sum(m, "cityops_ingest_mqtt_connection_errors_total", &[]);
    let errors_before = errors(&ingest.metrics().await);
    proxy.stall();
    let stalled = Instant::now();
    wait_until(
        Duration::from_secs(90),
        "a connection hung past its keep-alive counted as an error",
        || async { errors(&ingest.metrics().await) > errors_before },
        || ingest.log_text(),
    )
    .await;
    // Hung for 15 s at least, so that reconnects meet the hung network too.
    tokio::time::sleep(Duration::from_secs(15).saturating_sub(stalled.elapsed())).await;
    proxy.pass();
    faults.push(format!(
        "hung {:?}: {} connection errors",
        stalled.elapsed(),
        errors(&ingest.metrics().await) - errors_before
    ));
    wait_connected(&ingest, 4.0).await;
    wait_flowing(&rig, &ingest, count().await, total, "the hung network").await;

    faults.push(cut_mid_way_then_all(&proxy, &rig, &ingest, total).await);

    assert_eq!(
        publisher.await.unwrap(),
        60_000,
        "every message acknowledged by the broker"
    );
    let n = rig.wait_for_rows(total, Duration::from_secs(300)).await;
    ingest.wait_settled().await;
    let resends = metric_sum(
        &ingest.metrics().await,
        "cityops_ingest_mqtt_resends_total",
        &[],
    );
    eprintln!("faults survived: {faults:?}; rows {n} of {total}; resends recognised {resends}");
    assert_eq!(n, total, "{}", ingest.log_text());
    rig.assert_rows_equal_source(&load.expected).await;
    assert_eq!(ingest.terminate(Duration::from_secs(30)), Some(0));
}
