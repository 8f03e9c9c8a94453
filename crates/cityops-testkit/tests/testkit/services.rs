//! One lifecycle test per service, plus side-by-side instances and the missing-binary message.

use cityops_testkit::{
    Alertmanager, ClickHouseServer, KafkaBroker, Mosquitto, Prometheus, find_binary,
};
use std::time::Duration;

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

#[tokio::test(flavor = "multi_thread")]
async fn mosquitto_starts_answers_restarts_keeps_sessions_and_stops() {
    let mut broker = Mosquitto::start();
    let mut sub = broker.subscribe("danang/+/water/#").await.unwrap();
    broker
        .publish(
            "danang/cam-le/water/wl-03",
            &[b"{\"level_cm\":243}".to_vec()],
        )
        .await
        .unwrap();
    let (topic, payload) = sub
        .next(Duration::from_secs(30))
        .await
        .expect("message arrives");
    assert_eq!(topic, "danang/cam-le/water/wl-03");
    assert_eq!(payload, b"{\"level_cm\":243}");
    drop(sub);

    broker.restart();
    let mut sub = broker.subscribe("a/b").await.unwrap();
    broker
        .publish("a/b", &[b"after restart".to_vec()])
        .await
        .unwrap();
    assert_eq!(
        sub.next(Duration::from_secs(30)).await.unwrap().1,
        b"after restart"
    );
    drop(sub);

    let pid = broker.pid().unwrap();
    broker.kill9();
    assert!(!broker.is_running());
    assert!(!pid_alive(pid));
    broker.start_again();
    broker.publish("a/b", &[b"x".to_vec()]).await.unwrap();

    let pid = broker.pid().unwrap();
    broker.stop();
    assert!(!pid_alive(pid), "mosquitto {pid} still runs after stop");
}

#[tokio::test(flavor = "multi_thread")]
async fn clickhouse_starts_answers_keeps_data_across_restart_and_kill9() {
    let mut ch = ClickHouseServer::start();
    assert!(
        ch.sql("SELECT version()")
            .await
            .unwrap()
            .starts_with("18.16")
            || ch.sql("SELECT 1").await.unwrap().trim() == "1"
    );
    ch.sql("CREATE TABLE default.t (x UInt32) ENGINE = MergeTree ORDER BY x")
        .await
        .unwrap();
    ch.sql("INSERT INTO default.t VALUES (1), (2), (3)")
        .await
        .unwrap();

    ch.restart();
    assert_eq!(
        ch.scalar("SELECT sum(x) FROM default.t").await.unwrap(),
        6.0
    );

    let pid = ch.pid().unwrap();
    ch.kill9();
    assert!(!pid_alive(pid));
    assert!(
        ch.sql("SELECT 1").await.is_err(),
        "a killed server must not answer"
    );
    ch.start_again();
    assert_eq!(
        ch.scalar("SELECT count() FROM default.t").await.unwrap(),
        3.0
    );

    let rows = ch.rows("SELECT x FROM default.t ORDER BY x").await.unwrap();
    assert_eq!(rows[2]["x"], 3);
    let pid = ch.pid().unwrap();
    ch.stop();
    assert!(!pid_alive(pid));
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_broker_starts_produces_consumes_and_restarts() {
    let mut kafka = KafkaBroker::start();
    kafka.create_topic("danang.citizen.reports", 3).unwrap();
    let producer = kafka.producer().unwrap();
    for i in 0..30 {
        let payload = format!("{{\"report_id\":\"PA-{i}\",\"status\":\"received\"}}");
        kafka
            .produce(
                &producer,
                "danang.citizen.reports",
                format!("PA-{i}").as_bytes(),
                payload.as_bytes(),
            )
            .await
            .unwrap();
    }
    let records = kafka
        .consume("danang.citizen.reports", 3, 30, Duration::from_secs(60))
        .unwrap();
    assert_eq!(records.len(), 30);
    let partitions: std::collections::BTreeSet<i32> = records.iter().map(|r| r.0).collect();
    assert!(
        partitions.len() > 1,
        "keys spread over partitions: {partitions:?}"
    );
    drop(producer);

    kafka.restart();
    kafka.create_topic("t2", 1).unwrap();
    let producer = kafka.producer().unwrap();
    kafka.produce(&producer, "t2", b"k", b"v").await.unwrap();
    assert_eq!(
        kafka
            .consume("t2", 1, 1, Duration::from_secs(60))
            .unwrap()
            .len(),
        1
    );
    drop(producer);

    let pid = kafka.pid().unwrap();
    kafka.kill9();
    assert!(!pid_alive(pid));
    kafka.start_again();
    let pid = kafka.pid().unwrap();
    kafka.stop();
    assert!(!pid_alive(pid));
}

/// Alertmanager ingests posted alerts asynchronously: poll until they show (or 60 s pass).
async fn wait_for_alerts(am: &Alertmanager, count: usize) -> Vec<serde_json::Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut alerts = Vec::new();
    while std::time::Instant::now() < deadline {
        alerts = am.alerts().await.unwrap();
        if alerts.len() >= count {
            return alerts;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("Alertmanager did not show {count} alert(s) within 60 s: {alerts:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_durable_broker_keeps_acknowledged_records_across_kill9() {
    let mut kafka = KafkaBroker::start_durable();
    kafka.create_topic("danang.dvc.dossiers", 2).unwrap();
    let producer = kafka.producer().unwrap();
    for i in 0..20 {
        let payload =
            format!("{{\"dossier_code\":\"000.00.20.H17-{i:04}\",\"status\":\"received\"}}");
        kafka
            .produce(&producer, "danang.dvc.dossiers", &[i], payload.as_bytes())
            .await
            .unwrap();
    }
    drop(producer);
    let pid = kafka.pid().unwrap();
    kafka.kill9();
    assert!(!pid_alive(pid));
    kafka.start_again();
    let records = kafka
        .consume("danang.dvc.dossiers", 2, 20, Duration::from_secs(60))
        .unwrap();
    assert_eq!(
        records.len(),
        20,
        "every acknowledged record survives a kill -9"
    );
    kafka.restart();
    assert_eq!(
        kafka
            .consume("danang.dvc.dossiers", 2, 20, Duration::from_secs(60))
            .unwrap()
            .len(),
        20
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_and_alertmanager_start_answer_restart_and_stop() {
    let mut am = Alertmanager::start();
    let mut prometheus = Prometheus::start(Some(am.port()));
    // A scrape target added at run time (file discovery) is scraped within seconds.
    prometheus
        .add_target("alertmanager", &format!("127.0.0.1:{}", am.port()))
        .unwrap();
    let mut scraped = false;
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while std::time::Instant::now() < deadline {
        let up = prometheus.query("up{job=\"cityops\"}").await.unwrap();
        if up.first().is_some_and(|s| s["value"][1] == "1") {
            scraped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        scraped,
        "Prometheus did not scrape the added target within 90 s"
    );

    let alert = serde_json::json!([{
        "labels": { "alertname": "FloodLevelHigh", "district": "Cẩm Lệ", "severity": "critical" },
        "annotations": { "summary": "Water level 2.43 m at wl-cam-le-03" }
    }]);
    am.post_alerts(&alert).await.unwrap();
    let alerts = wait_for_alerts(&am, 1).await;
    assert_eq!(alerts[0]["labels"]["district"], "Cẩm Lệ");

    am.restart();
    prometheus.restart();
    assert!(prometheus.query("vector(1)").await.unwrap().len() == 1);
    // Alertmanager keeps alerts in memory only (senders re-send them); it answers again.
    am.post_alerts(&alert).await.unwrap();
    wait_for_alerts(&am, 1).await;

    let (pid_am, pid_prom) = (am.pid().unwrap(), prometheus.pid().unwrap());
    am.kill9();
    prometheus.kill9();
    assert!(!pid_alive(pid_am) && !pid_alive(pid_prom));
    am.start_again();
    prometheus.start_again();
    assert!(prometheus.query("vector(1)").await.is_ok());
    let (pid_am, pid_prom) = (am.pid().unwrap(), prometheus.pid().unwrap());
    am.stop();
    prometheus.stop();
    assert!(!pid_alive(pid_am) && !pid_alive(pid_prom));
}

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_of_each_service_run_side_by_side() {
    let (ch1, ch2) = (ClickHouseServer::start(), ClickHouseServer::start());
    ch1.sql("CREATE TABLE default.only_here (x UInt8) ENGINE = Memory")
        .await
        .unwrap();
    assert!(
        ch2.sql("SELECT * FROM default.only_here").await.is_err(),
        "instances share no state"
    );

    let (m1, m2) = (Mosquitto::start(), Mosquitto::start());
    assert_ne!(m1.port(), m2.port());
    let mut sub2 = m2.subscribe("x").await.unwrap();
    m1.publish("x", &[b"to m1".to_vec()]).await.unwrap();
    m2.publish("x", &[b"to m2".to_vec()]).await.unwrap();
    // A last message to m2 marks the end: what m2's subscriber got up to it is all it gets.
    m2.publish("x", &[b"end".to_vec()]).await.unwrap();
    let mut got = Vec::new();
    while let Some((_, payload)) = sub2.next(Duration::from_secs(30)).await {
        let end = payload == b"end";
        got.push(String::from_utf8(payload).unwrap());
        if end {
            break;
        }
    }
    assert_eq!(got, ["to m2", "end"], "m1's message must not reach m2");

    let (k1, k2) = (KafkaBroker::start(), KafkaBroker::start());
    k1.create_topic("only-k1", 1).unwrap();
    assert!(
        k2.create_topic("only-k1", 1).is_ok(),
        "the same topic name is free on the other broker"
    );

    let (a1, a2) = (Alertmanager::start(), Alertmanager::start());
    a1.post_alerts(&serde_json::json!([{ "labels": { "alertname": "A" } }]))
        .await
        .unwrap();
    wait_for_alerts(&a1, 1).await;
    assert!(a2.alerts().await.unwrap().is_empty());
    let (p1, p2) = (
        Prometheus::start(Some(a1.port())),
        Prometheus::start(Some(a2.port())),
    );
    assert_ne!(p1.url(), p2.url());
}

#[test]
fn a_missing_binary_names_the_command_that_installs_it() {
    let error = find_binary("cityops-no-such-service").unwrap_err();
    assert!(error.contains("run `make deps`"), "{error}");
    assert!(find_binary("sh").is_ok());
}
