//! `cityops rejects replay` on real services: messages rejected under a wrong config are
//! decoded again after the fix and stored once, with the coordinates the ingest would have
//! given them; what still does not decode stays a reject.

use crate::ingest_kafka::Rig;
use crate::ingest_support::ProofTables;
use std::time::Duration;

fn replay(config: &std::path::Path, extra: &[&str]) -> String {
    let mut args = vec!["rejects", "replay", "--config", config.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = crate::cityops(&args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{stdout}");
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_decoded_again_after_a_config_fix_are_stored_once_and_the_rest_stay_rejects() {
    let rig = Rig::start(false, "").await;
    let base = crate::ingest_support::base_ms();
    let mut messages = Vec::new();
    // 100 reports whose time is RFC 3339 text while the feed expects epoch milliseconds (the
    // config mistake), 50 good ones, 20 that are not JSON at all.
    for i in 0..170 {
        let id = format!("replay-{i:03}");
        let payload = match i {
            0..100 => {
                let at = cityops_event::Timestamp::from_millis(base + i).unwrap();
                format!(r#"{{"id":"{id}","ts":"{at}","v":{i},"note":"x"}}"#)
            }
            100..150 => format!(r#"{{"id":"{id}","ts":{},"v":{i},"note":"x"}}"#, base + i),
            _ => format!("{{\"id\":\"{id}\", not json"),
        };
        messages.push(("proof.reports", id, payload.into_bytes()));
    }
    let bootstrap = rig.kafka.bootstrap();
    tokio::task::spawn_blocking(move || {
        let mut producer =
            cityops_kafka::Producer::new(&cityops_kafka::ProducerSettings::new(bootstrap)).unwrap();
        for (topic, key, payload) in &messages {
            producer.send(topic, Some(key), payload).unwrap();
        }
        producer.flush(Duration::from_secs(60)).unwrap();
    })
    .await
    .unwrap();
    let ingest = rig.ingest("ingest");
    rig.wait_for_rows(100.0, Duration::from_secs(60)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while rig.count("SELECT count() FROM {db}.rejects").await < 120.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            ingest.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ingest.wait_settled().await;
    assert_eq!(rig.count("SELECT count() FROM {db}.events").await, 100.0);
    let mistaken = rig
        .clickhouse
        .sql("SELECT DISTINCT reason FROM proof.rejects WHERE raw LIKE '%\"ts\":\"%' FORMAT TSV")
        .await
        .unwrap();
    let reason = mistaken.trim().to_owned();
    assert!(!reason.is_empty() && !reason.contains('\n'), "{mistaken:?}");

    // The fix: the feed reads RFC 3339 times too.
    let fixed = rig.dir.path().join("fixed.toml");
    let text = std::fs::read_to_string(&rig.config).unwrap();
    let at = text.find("name = \"reports\"").unwrap();
    let (head, tail) = text.split_at(at);
    let tail = tail.replacen("ts_format = \"epoch_ms\"", "ts_format = \"auto\"", 1);
    std::fs::write(&fixed, format!("{head}{tail}")).unwrap();

    let dry = replay(
        &fixed,
        &["--feed", "reports", "--reason", &reason, "--dry-run"],
    );
    assert!(
        dry.contains("100 rejects read; 100 decode now: would store 200 events"),
        "{dry}"
    );
    assert_eq!(rig.count("SELECT count() FROM {db}.events").await, 100.0);
    let first = replay(&fixed, &["--feed", "reports", "--reason", &reason]);
    assert!(
        first.contains("100 decode now: stored 200 events (0 already stored)"),
        "{first}"
    );
    assert_eq!(rig.count("SELECT count() FROM {db}.events").await, 300.0);
    // Stored with the coordinates of the rejected records, as the ingest would have.
    assert_eq!(
        rig.count(
            "SELECT count() FROM {db}.events WHERE (source_partition, source_offset) IN \
             (SELECT source_partition, source_offset FROM {db}.rejects WHERE reason = 'REASON')"
                .replace("REASON", &reason)
                .as_str()
        )
        .await,
        200.0
    );
    // Once: a second replay, and one over the whole feed, store nothing more.
    let again = replay(&fixed, &["--feed", "reports"]);
    assert!(
        again.contains("120 rejects read; 100 decode now: stored 0 events (200 already stored)"),
        "{again}"
    );
    assert!(
        again.contains("still rejected: invalid_json: 20"),
        "{again}"
    );
    assert_eq!(rig.count("SELECT count() FROM {db}.events").await, 300.0);
    assert_eq!(
        rig.count("SELECT uniqExact(event_id) FROM {db}.events")
            .await,
        300.0
    );
    // A time window that holds none of them reads nothing.
    let none = replay(&fixed, &["--until", "2001-01-01T00:00:00Z"]);
    assert!(none.starts_with("0 rejects read"), "{none}");
}
