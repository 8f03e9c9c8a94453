//! The bad-payload corpus (`tests/data/bad-payloads/`): every entry through `cityops decode`
//! with the shipped config, then all of them, between good samples, over MQTT and Kafka into a
//! running ingest on real services: each bad one is in `rejects` with its reason and raw bytes,
//! each good one stored, the ingest never stalls or stops.

use crate::ingest_support::{Ingest, http_get};
use cityops_testkit::{ClickHouseServer, KafkaBroker, Mosquitto};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(serde::Deserialize)]
struct Manifest {
    payload: Vec<Entry>,
}

#[derive(serde::Deserialize, Clone)]
struct Entry {
    file: String,
    source: String,
    topic: String,
    /// The reject reason, or `stored`.
    reason: String,
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/bad-payloads")
}

fn shipped_config() -> PathBuf {
    crate::repo_root().join("deploy/config/cityops.toml")
}

/// The corpus with each entry's bytes (generated entries made here).
fn corpus() -> Vec<(Entry, Vec<u8>)> {
    let text = std::fs::read_to_string(corpus_dir().join("manifest.toml")).unwrap();
    let manifest: Manifest = toml::from_str(&text).unwrap();
    manifest
        .payload
        .into_iter()
        .map(|entry| {
            let bytes = match entry.file.strip_prefix("generated:") {
                Some(kind) => generate(kind),
                None => std::fs::read(corpus_dir().join(&entry.file)).unwrap(),
            };
            (entry, bytes)
        })
        .collect()
}

/// The payloads too large to keep in the repository.
fn generate(kind: &str) -> Vec<u8> {
    let keys = |n: usize| {
        let mut s = String::from("{");
        for i in 0..n {
            s.push_str(&format!("\"{i:x}\":0,"));
        }
        s.pop();
        s.push('}');
        s.into_bytes()
    };
    let senml = |n: usize| {
        let mut s =
            String::from(r#"[{"bn":"urn:dev:danang:aq:big:","bt":1795651200,"n":"r0","v":1}"#);
        for i in 1..n {
            s.push_str(&format!(r#",{{"n":"r{i}","v":{i}}}"#));
        }
        s.push(']');
        s.into_bytes()
    };
    match kind {
        "10_mb" => {
            let mut s =
                String::from(r#"{"ts":"2026-11-26T07:00:00+07:00","water_level_cm":243,"note":""#);
            s.push_str(&"Mưa lớn ".repeat(10 * 1024 * 1024 / 10));
            s.push_str("\"}");
            s.into_bytes()
        }
        "300k_keys" => keys(300_000),
        "90k_keys_under_the_limit" => {
            let bytes = keys(90_000);
            assert!(bytes.len() < 1_048_576, "{} bytes", bytes.len());
            bytes
        }
        "200k_senml_records" => senml(200_000),
        "15k_senml_records" => senml(15_000),
        other => panic!("unknown generated payload {other}"),
    }
}

/// What `cityops decode` says of `payload`: the reject reason, or `stored` with the events.
fn decode(config: &Path, source: &str, topic: &str, payload: &[u8], at: &str) -> (String, usize) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("payload");
    std::fs::write(&file, payload).unwrap();
    let out = crate::cityops(&[
        "decode",
        "--config",
        config.to_str().unwrap(),
        "--source",
        source,
        "--topic",
        topic,
        "--file",
        file.to_str().unwrap(),
        "--received-at",
        at,
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.code().is_some(),
        "cityops decode crashed on {topic}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    match lines.first().and_then(|l| l.get("reject")) {
        Some(reject) => (reject["reason"].as_str().unwrap().to_owned(), 0),
        None => ("stored".to_owned(), lines.len()),
    }
}

#[test]
fn every_bad_payload_of_the_corpus_decodes_to_its_reason() {
    let corpus = corpus();
    assert!(corpus.len() >= 50, "{} kinds", corpus.len());
    let mut wrong = Vec::new();
    for (entry, bytes) in &corpus {
        let (got, _) = decode(
            &shipped_config(),
            &entry.source,
            &entry.topic,
            bytes,
            "2026-11-26T00:00:05Z",
        );
        if got != entry.reason {
            wrong.push(format!("{}: want {}, got {got}", entry.file, entry.reason));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// The shipped config with the test's services, an event-time window wide enough that the
/// corpus's fixed times stay inside it whatever the date (the rejects must not depend on it),
/// and MQTT packets up to 16 MiB: larger than that, an MQTT 5 broker does not deliver a message
/// at all, so it could not be recorded as `too_large` (docs/configuration.md).
fn live_config(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(shipped_config())
        .unwrap()
        .replace("[[feeds]]\n", "[[feeds]]\nmax_past_ms = 3153600000000\n")
        .replace("[mqtt]\n", "[mqtt]\nmax_packet_bytes = 16777216\n")
        .replace(
            "rule_files = [\"../rules/",
            &format!(
                "rule_files = [\"{}/deploy/rules/",
                crate::repo_root().display()
            ),
        )
        .replace(
            "\"../rules/",
            &format!("\"{}/deploy/rules/", crate::repo_root().display()),
        );
    let path = dir.join("cityops.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[derive(serde::Deserialize)]
struct Samples {
    sample: Vec<crate::Sample>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_corpus_over_mqtt_and_kafka_lands_in_rejects_with_reasons_and_raw_bytes_and_good_ones_are_stored()
 {
    let clickhouse = ClickHouseServer::start();
    let mosquitto = Mosquitto::start_with_config("max_queued_messages 1000000");
    let kafka = KafkaBroker::start();
    let topics =
        std::fs::read_to_string(crate::repo_root().join("deploy/local/kafka-topics.txt")).unwrap();
    for line in topics
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let (name, partitions) = line.split_once(' ').unwrap();
        kafka
            .create_topic(name, partitions.trim().parse().unwrap())
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let _keep = cityops_testkit::KeepLogs::new(dir.path(), "bad-payloads");
    let config = live_config(dir.path());
    let port = cityops_testkit::free_port();
    let env = [
        ("CITYOPS_CLICKHOUSE_URL", clickhouse.url()),
        ("CITYOPS_CLICKHOUSE_DATABASE", "corpus".to_owned()),
        ("CITYOPS_KAFKA_BOOTSTRAP", kafka.bootstrap()),
        ("CITYOPS_MQTT_PORT", mosquitto.port().to_string()),
        (
            "CITYOPS_SPOOL_DIR",
            dir.path().join("spool").display().to_string(),
        ),
        ("CITYOPS_LOG_LEVEL", "info".to_owned()),
    ];
    let run = |args: &[&str], log: &Path| {
        Command::new(env!("CARGO_BIN_EXE_cityops"))
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v.as_str())))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap()
    };
    let config_arg = config.to_str().unwrap();
    let mut migrate = run(
        &["migrate", "--config", config_arg, "--quiet"],
        &dir.path().join("migrate.log"),
    );
    assert!(
        migrate.wait().unwrap().success(),
        "{}",
        std::fs::read_to_string(dir.path().join("migrate.log")).unwrap()
    );
    let log = dir.path().join("ingest.log");
    let child = run(
        &[
            "ingest",
            "--config",
            config_arg,
            "--listen-addr",
            &format!("127.0.0.1:{port}"),
        ],
        &log,
    );
    let mut ingest = Ingest { child, port, log };

    // The good samples, one after each bad payload of the same source, with their events.
    let samples_dir = crate::repo_root().join("deploy/config/samples");
    let samples: Samples =
        toml::from_str(&std::fs::read_to_string(samples_dir.join("samples.toml")).unwrap())
            .unwrap();
    let mut good: BTreeMap<String, Vec<(String, Vec<u8>, usize)>> = BTreeMap::new();
    for s in &samples.sample {
        let bytes = std::fs::read(samples_dir.join(&s.file)).unwrap();
        let (outcome, events) = decode(&config, &s.source, &s.topic, &bytes, &s.received_at);
        assert_eq!(outcome, "stored", "sample {}", s.file);
        good.entry(s.source.clone())
            .or_default()
            .push((s.topic.clone(), bytes, events));
    }
    let corpus = corpus();
    let mut expected_events = 0;
    let mut expected_rejects: Vec<(String, String)> = Vec::new();
    let mut mqtt = Vec::new();
    let mut kafka_messages = Vec::new();
    for (i, (entry, bytes)) in corpus.iter().enumerate() {
        let samples = &good[&entry.source];
        let (topic, sample, events) = &samples[i % samples.len()];
        expected_events += events;
        if entry.reason == "stored" {
            let (_, n) = decode(
                &config,
                &entry.source,
                &entry.topic,
                bytes,
                "2026-11-26T00:00:05Z",
            );
            expected_events += n;
        } else {
            let kept: String = bytes
                .iter()
                .take(65_536)
                .map(|b| format!("{b:02X}"))
                .collect();
            expected_rejects.push((entry.reason.clone(), kept));
        }
        let messages = if entry.source == "mqtt" {
            &mut mqtt
        } else {
            &mut kafka_messages
        };
        messages.push((entry.topic.clone(), bytes.clone()));
        messages.push((topic.clone(), sample.clone()));
    }

    crate::ingest_mqtt::wait_connected(&ingest, 4.0).await;
    let mut publisher = cityops_mqtt::Publisher::connect(
        "127.0.0.1",
        mosquitto.port(),
        &format!("corpus-{}", cityops_testkit::free_port()),
        1,
    );
    for (topic, payload) in &mqtt {
        publisher.publish(topic, payload).await.unwrap();
    }
    publisher.finish(Duration::from_secs(120)).await.unwrap();
    let bootstrap = kafka.bootstrap();
    tokio::task::spawn_blocking(move || {
        let mut producer =
            cityops_kafka::Producer::new(&cityops_kafka::ProducerSettings::new(bootstrap)).unwrap();
        for (topic, payload) in &kafka_messages {
            producer.send(topic, None, payload).unwrap();
        }
        producer.flush(Duration::from_secs(60)).unwrap();
    })
    .await
    .unwrap();

    let count = |sql: &'static str| {
        let clickhouse = &clickhouse;
        async move { clickhouse.scalar(sql).await.unwrap_or(-1.0) }
    };
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let events = count("SELECT count() FROM corpus.events").await;
        let rejects = count("SELECT count() FROM corpus.rejects").await;
        if events >= expected_events as f64 && rejects >= expected_rejects.len() as f64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{events} of {expected_events} events, {rejects} of {} rejects:\n{}",
            expected_rejects.len(),
            ingest.log_text()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    ingest.wait_settled().await;
    assert_eq!(
        count("SELECT count() FROM corpus.events").await,
        expected_events as f64
    );
    let body = clickhouse
        .sql("SELECT reason, hex(raw) FROM corpus.rejects FORMAT TSV")
        .await
        .unwrap();
    let mut stored: Vec<(String, String)> = body
        .lines()
        .map(|l| {
            let (r, h) = l.split_once('\t').unwrap();
            (r.to_owned(), h.to_owned())
        })
        .collect();
    stored.sort();
    expected_rejects.sort();
    assert_eq!(stored.len(), expected_rejects.len(), "rejects");
    for (got, want) in stored.iter().zip(&expected_rejects) {
        assert_eq!(
            got.0,
            want.0,
            "reason of a reject (raw {}...)",
            &want.1[..want.1.len().min(40)]
        );
        assert!(got.1 == want.1, "raw bytes of a {} reject differ", want.0);
    }
    // Strings that look like injections are stored as they came.
    let text = clickhouse
        .sql("SELECT text FROM corpus.events WHERE entity_id = 'PA-INJECT-1' AND metric = 'report_text' FORMAT JSONEachRow")
        .await
        .unwrap();
    let row: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    let sent: serde_json::Value = serde_json::from_slice(
        &std::fs::read(corpus_dir().join("59-injection_like_strings.bin")).unwrap(),
    )
    .unwrap();
    assert_eq!(row["text"], sent["content"]);
    assert_eq!(
        http_get(ingest.port, "/readyz").await.0,
        200,
        "{}",
        ingest.log_text()
    );
    assert!(
        ingest.child.try_wait().unwrap().is_none(),
        "the ingest stopped"
    );
    eprintln!(
        "{} bad payloads ({} rejected, {} stored on purpose) and {} good messages: {expected_events} events",
        corpus.len(),
        expected_rejects.len(),
        corpus.len() - expected_rejects.len(),
        corpus.len()
    );
    assert_eq!(ingest.terminate(Duration::from_secs(30)), Some(0));
}
