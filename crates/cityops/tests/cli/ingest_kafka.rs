//! The proofs of `cityops ingest` from Kafka: real Kafka-protocol broker, real ClickHouse,
//! the real binary killed and restarted. Every test owns its services.

use crate::ingest_support::{
    Ingest, ProofTables, Tables, base_ms, expected_rows, http_get, metric_sum,
};
use cityops_testkit::{ClickHouseServer, KafkaBroker};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Topics of the three proof feeds, two partitions each.
pub(crate) const TOPICS: [&str; 3] = ["proof.reports", "proof.dossiers", "proof.buses"];
pub(crate) const PARTITIONS: u32 = 2;

/// Services, a migrated database and a config for the ingest.
pub(crate) struct Rig {
    pub(crate) clickhouse: ClickHouseServer,
    pub(crate) kafka: KafkaBroker,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) config: PathBuf,
    db: String,
}

fn feeds_toml() -> &'static str {
    r#"
[[feeds]]
name = "reports"
source = "kafka"
topic = "proof.reports"
domain = "citizen_report"
max_payload_bytes = 4096
[feeds.decoder]
type = "json"
entity_id = "/id"
ts = "/ts"
ts_format = "epoch_ms"
lat = "/lat"
lon = "/lon"
fields = [
  { metric = "value", pointer = "/v", valid_min = -1000000.0, valid_max = 1000000.0 },
  { metric = "note", pointer = "/note", type = "string" },
]

[[feeds]]
name = "dossiers"
source = "kafka"
topic = "proof.dossiers"
domain = "public_service"
[feeds.decoder]
type = "json"
entity_id = "/id"
ts = "/ts"
ts_format = "epoch_ms"
fields = [
  { metric = "value", pointer = "/v" },
  { metric = "note", pointer = "/note", type = "string" },
]

[[feeds]]
name = "buses"
source = "kafka"
topic = "proof.buses"
domain = "transport"
max_events_per_payload = 10
[feeds.decoder]
type = "json"
records = "/items"
entity_id = "/id"
ts = "/ts"
ts_format = "epoch_ms"
fields = [
  { metric = "value", pointer = "/v" },
  { metric = "note", pointer = "/note", type = "string" },
]
"#
}

impl Rig {
    pub(crate) async fn start(durable: bool, ingest_toml: &str) -> Rig {
        let kafka = if durable {
            KafkaBroker::start_durable()
        } else {
            KafkaBroker::start()
        };
        for topic in TOPICS {
            kafka.create_topic(topic, PARTITIONS).unwrap();
        }
        Rig::with_broker(
            kafka,
            ClickHouseServer::start(),
            durable,
            ingest_toml,
            |_| String::new(),
        )
        .await
    }

    /// A rig on `kafka` (its topics made) and `clickhouse` (over HTTPS with its CA when it
    /// serves HTTPS), with `kafka_extra(dir)` appended to `[kafka]`.
    pub(crate) async fn with_broker(
        kafka: KafkaBroker,
        clickhouse: ClickHouseServer,
        durable: bool,
        ingest_toml: &str,
        kafka_extra: impl FnOnce(&std::path::Path) -> String,
    ) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let kafka_extra = kafka_extra(dir.path());
        let db = "proof".to_owned();
        let clickhouse_toml = format!(
            "url = \"{}\"\ndatabase = \"{db}\"\n{}",
            clickhouse.https_url().unwrap_or_else(|| clickhouse.url()),
            clickhouse
                .ca_file()
                .map(|ca| format!("ca_file = \"{}\"\n", ca.display()))
                .unwrap_or_default(),
        );
        let text = ingest_config(
            &clickhouse_toml,
            &kafka.bootstrap(),
            durable,
            &kafka_extra,
            ingest_toml,
        );
        let config = dir.path().join("ingest.toml");
        std::fs::write(&config, text).unwrap();
        let out = crate::cityops(&["migrate", "--config", config.to_str().unwrap(), "--quiet"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Rig {
            clickhouse,
            kafka,
            dir,
            config,
            db,
        }
    }

    /// Starts `cityops ingest` with its log in the rig's folder.
    pub(crate) fn ingest(&self, name: &str) -> Ingest {
        Ingest::spawn(&self.config, self.dir.path(), name)
    }
}

impl ProofTables for Rig {
    fn tables(&self) -> Tables<'_> {
        Tables {
            clickhouse: &self.clickhouse,
            db: &self.db,
        }
    }
}

/// The ingest config of the Kafka proofs: `[clickhouse]` as given, the broker at `bootstrap`
/// (with `kafka_extra` in `[kafka]`), `ingest_toml` appended to `[ingest]`, the proof feeds.
pub(crate) fn ingest_config(
    clickhouse_toml: &str,
    bootstrap: &str,
    durable: bool,
    kafka_extra: &str,
    ingest_toml: &str,
) -> String {
    // The durable broker stalls on large backlog fetches (shared/notes/services.md).
    let fetch = if durable {
        "fetch_max_bytes = 1048576\nmax_partition_fetch_bytes = 262144\n"
    } else {
        ""
    };
    format!(
        r#"
[telemetry]
log_level = "info,cityops_ingest=debug"
listen_addr = "127.0.0.1:0"

[clickhouse]
{clickhouse_toml}
[kafka]
bootstrap_servers = "{bootstrap}"
group_id = "proof"
session_timeout_ms = 6000
{fetch}{kafka_extra}
[ingest]
batch_max_rows = 5000
linger_ms = 200
retry_initial_ms = 50
retry_max_ms = 1000
rebalance_deadline_ms = 3000
shutdown_deadline_ms = 10000
{ingest_toml}
{feeds}"#,
        feeds = feeds_toml(),
    )
}

/// Good messages, two events each, spread over the three feeds, and the rows each must give.
pub(crate) struct Load {
    pub(crate) messages: Vec<(&'static str, String, Vec<u8>)>,
    pub(crate) expected: BTreeMap<String, Vec<String>>,
}

pub(crate) fn good_load(messages: usize) -> Load {
    let base = base_ms();
    load_at(messages, |i, _| vec![base + i as i64])
}

/// Good messages spread over the three feeds with one record per time `times(i, feed)` gives
/// (a bus message carries them all, ids suffixed `-a`, `-b`, ... when more than one), two
/// events per record, and the rows each must give.
fn load_at(messages: usize, times: impl Fn(usize, &str) -> Vec<i64>) -> Load {
    let mut load = Load {
        messages: Vec::with_capacity(messages),
        expected: BTreeMap::new(),
    };
    for i in 0..messages {
        let (topic, feed) = match i % 3 {
            0 => (TOPICS[0], "reports"),
            1 => (TOPICS[1], "dossiers"),
            _ => (TOPICS[2], "buses"),
        };
        let id = format!("{feed}-{i:07}");
        // Values with fractions that survive Float64 exactly, and Vietnamese text.
        let v = (i as f64) * 0.25 - 1000.0;
        let note = format!("Phản ánh số {i}: đèn đường hỏng ở Hải Châu");
        let at = times(i, feed);
        let records: Vec<serde_json::Value> = at
            .iter()
            .enumerate()
            .map(|(k, &ts)| {
                let record_id = if at.len() == 1 {
                    id.clone()
                } else {
                    format!("{id}-{}", char::from(b'a' + k as u8))
                };
                load.expected.insert(
                    record_id.clone(),
                    expected_rows(&record_id, &note, v, ts, feed),
                );
                serde_json::json!({"id": record_id, "ts": ts, "v": v, "note": note})
            })
            .collect();
        let payload = if feed == "buses" {
            serde_json::json!({"route": "R16", "items": records})
        } else {
            records.into_iter().next().expect("a record per message")
        };
        load.messages
            .push((topic, id, serde_json::to_vec(&payload).unwrap()));
    }
    load
}

/// Produces `messages` (keyed by id) and waits for every acknowledgement.
fn produce(bootstrap: &str, messages: &[(&'static str, String, Vec<u8>)]) {
    let mut producer =
        cityops_kafka::Producer::new(&cityops_kafka::ProducerSettings::new(bootstrap)).unwrap();
    for (topic, key, payload) in messages {
        producer.send(topic, Some(key), payload).unwrap();
    }
    producer.flush(Duration::from_secs(60)).unwrap();
    assert_eq!(producer.deliveries().acked(), messages.len() as u64);
}

/// Produces in the background, in slices, so that the load runs while the test acts.
pub(crate) fn produce_in_background(
    bootstrap: String,
    messages: Vec<(&'static str, String, Vec<u8>)>,
    slices: usize,
    pause: Duration,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let size = messages.len().div_ceil(slices);
        for slice in messages.chunks(size) {
            produce(&bootstrap, slice);
            std::thread::sleep(pause);
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proof_1_every_event_lands_once_with_the_values_of_the_source() {
    let rig = Rig::start(false, "").await;
    let load = good_load(50_000);
    let bootstrap = rig.kafka.bootstrap();
    let messages = load.messages.clone();
    tokio::task::spawn_blocking(move || produce(&bootstrap, &messages))
        .await
        .unwrap();
    let mut ingest = rig.ingest("ingest");
    let n = rig.wait_for_rows(100_000.0, Duration::from_secs(120)).await;
    assert_eq!(n, 100_000.0, "{}", ingest.log_text());
    rig.assert_rows_equal_source(&load.expected).await;
    let metrics = ingest.metrics().await;
    assert_eq!(
        metric_sum(&metrics, "cityops_ingest_messages_total", &[]),
        50_000.0
    );
    assert_eq!(
        metric_sum(
            &metrics,
            "cityops_ingest_rows_inserted_total",
            &["table=\"events\""]
        ),
        100_000.0
    );
    // A clean stop commits: a second run reads nothing again.
    assert_eq!(ingest.terminate(Duration::from_secs(30)), Some(0));
    assert!(ingest.log_text().contains("drained=true"));
    let topics: Vec<(&str, i32)> = TOPICS.iter().map(|t| (*t, PARTITIONS as i32)).collect();
    // Offsets count from 0 in every partition: committed, they add up to what was produced.
    let committed = rig.kafka.committed_offsets("proof", &topics).unwrap();
    assert_eq!(
        committed.iter().map(|(_, _, offset)| offset).sum::<i64>(),
        50_000,
        "committed offsets are where the first run stopped: {committed:?}"
    );
    let mut again = rig.ingest("again");
    // One marker after the end of each partition: the second run reads each partition from
    // its committed offset, so once it stored the markers, it read all it ever will before them.
    let producer = rig.kafka.producer().unwrap();
    for (topic, feed) in TOPICS.iter().zip(["reports", "dossiers", "buses"]) {
        for partition in 0..PARTITIONS as i32 {
            let record = serde_json::json!({
                "id": format!("marker-{feed}-{partition}"), "ts": base_ms(), "v": 1, "note": "x"
            });
            let payload = if feed == "buses" {
                serde_json::json!({"route": "R16", "items": [record]})
            } else {
                record
            };
            rig.kafka
                .produce_to(&producer, topic, partition, payload.to_string().as_bytes())
                .await
                .unwrap();
        }
    }
    let markers = (TOPICS.len() * PARTITIONS as usize) as f64;
    let want = 100_000.0 + 2.0 * markers;
    assert_eq!(
        rig.wait_for_rows(want, Duration::from_secs(60)).await,
        want,
        "{}",
        again.log_text()
    );
    again.wait_settled().await;
    let metrics = again.metrics().await;
    assert_eq!(
        metric_sum(&metrics, "cityops_ingest_messages_total", &[]),
        markers,
        "the second run read the markers only"
    );
    assert_eq!(
        metric_sum(&metrics, "cityops_ingest_replayed_messages_total", &[]),
        0.0
    );
    assert_eq!(again.terminate(Duration::from_secs(30)), Some(0));
    assert_eq!(
        rig.count("SELECT count() FROM {db}.events WHERE entity_id NOT LIKE 'marker-%'")
            .await,
        100_000.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proof_2_kill_9_three_times_during_the_load_loses_and_duplicates_nothing() {
    let rig = Rig::start(false, "").await;
    let load = good_load(100_000);
    let producer = produce_in_background(
        rig.kafka.bootstrap(),
        load.messages.clone(),
        10,
        Duration::from_millis(500),
    );
    let seed = std::process::id() as u64 ^ base_ms() as u64;
    let mut ingest = rig.ingest("run-0");
    let mut stored = 0.0;
    for kill in 1..=3u64 {
        // A random moment while this run is storing: after its first rows, 0 to 1.5 s later.
        let wait_ms = seed.wrapping_mul(kill * 7919) % 1500;
        rig.wait_for_rows(stored + 1.0, Duration::from_secs(60))
            .await;
        tokio::time::sleep(Duration::from_millis(wait_ms)).await;
        ingest.kill9();
        stored = rig.count("SELECT count() FROM {db}.events").await;
        eprintln!(
            "kill -9 number {kill}, {wait_ms} ms after its first rows, with {stored} rows stored"
        );
        ingest = rig.ingest(&format!("run-{kill}"));
    }
    producer.join().unwrap();
    let n = rig.wait_for_rows(200_000.0, Duration::from_secs(180)).await;
    // A late duplicate would be stored by then.
    ingest.wait_settled().await;
    assert_eq!(n, 200_000.0, "{}", ingest.log_text());
    rig.assert_rows_equal_source(&load.expected).await;
    let replayed = metric_sum(
        &ingest.metrics().await,
        "cityops_ingest_replayed_messages_total",
        &[],
    );
    eprintln!("the last run skipped {replayed} messages already stored");
    assert_eq!(ingest.terminate(Duration::from_secs(30)), Some(0));
}

/// Good messages whose rows fall on two UTC days (yesterday's and today's, alternately), bus
/// messages with one record on each day, and the rows each must give.
fn two_day_load(messages: usize) -> Load {
    let today = base_ms();
    let yesterday = today - 86_400_000;
    load_at(messages, |i, feed| {
        let i = i as i64;
        if feed == "buses" {
            vec![yesterday + i, today + i]
        } else if i % 2 == 0 {
            vec![yesterday + i]
        } else {
            vec![today + i]
        }
    })
}

/// Waits (up to `timeout`) until an ingest INSERT runs on the server; whether one was seen.
async fn wait_for_an_insert(clickhouse: &ClickHouseServer, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let running = clickhouse
            .scalar(
                "SELECT count() FROM system.processes \
                 WHERE query_id LIKE 'cityops-ingest-%' AND query LIKE 'INSERT%'",
            )
            .await
            .unwrap_or(0.0);
        if running > 0.0 {
            return true;
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_killed_mid_insert_five_times_over_two_days_loses_and_duplicates_nothing() {
    // Large batches: each INSERT runs long enough to be caught, and would span both days.
    let mut rig = Rig::start(false, "").await;
    let text = std::fs::read_to_string(&rig.config).unwrap().replace(
        "batch_max_rows = 5000\nlinger_ms = 200\n",
        "batch_max_rows = 60000\nlinger_ms = 1000\n",
    );
    std::fs::write(&rig.config, text).unwrap();
    let load = two_day_load(90_000);
    let want: usize = load.expected.values().map(Vec::len).sum();
    let producer = produce_in_background(
        rig.kafka.bootstrap(),
        load.messages.clone(),
        30,
        Duration::from_millis(300),
    );
    let mut ingest = rig.ingest("run-0");
    let mut caught = 0;
    for kill in 1..=5 {
        rig.wait_for_rows(1.0, Duration::from_secs(60)).await;
        let mid_insert = wait_for_an_insert(&rig.clickhouse, Duration::from_secs(20)).await;
        rig.clickhouse.kill9();
        caught += usize::from(mid_insert);
        // Twice the ingest dies with the server: its successor's check reads what each day holds.
        let with_ingest = kill % 2 == 0;
        if with_ingest {
            ingest.kill9();
        }
        rig.clickhouse.start_again();
        let stored = rig.count("SELECT count() FROM {db}.events").await;
        eprintln!(
            "ClickHouse kill -9 number {kill}: an INSERT running {mid_insert}, ingest killed too {with_ingest}, {stored} rows stored"
        );
        if with_ingest {
            ingest = rig.ingest(&format!("run-{kill}"));
        }
        // Progress between kills, so that each kill meets new INSERTs.
        rig.wait_for_rows(stored + 1.0, Duration::from_secs(120))
            .await;
    }
    producer.join().unwrap();
    let n = rig
        .wait_for_rows(want as f64, Duration::from_secs(240))
        .await;
    ingest.wait_settled().await;
    let days = rig
        .count("SELECT uniqExact(toYYYYMMDD(ts)) FROM {db}.events")
        .await;
    eprintln!("{n} rows of {want} over {days} days; {caught} of 5 kills with an INSERT running");
    assert_eq!(n, want as f64, "{}", ingest.log_text());
    assert_eq!(days, 2.0);
    rig.assert_rows_equal_source(&load.expected).await;
    assert!(
        caught >= 3,
        "only {caught} of 5 kills caught an INSERT running"
    );
    assert_eq!(ingest.terminate(Duration::from_secs(30)), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_lost_from_the_last_inserts_is_stored_again_and_only_that_day() {
    // The state a server killed between the two parts of an INSERT leaves, made exactly: the
    // rows of yesterday's partition of the buses' last messages gone, today's kept. A fresh
    // group reads everything again; what each day holds decides what is written.
    let rig = Rig::start(false, "").await;
    let load = two_day_load(3_000);
    let want: usize = load.expected.values().map(Vec::len).sum();
    let bootstrap = rig.kafka.bootstrap();
    let messages = load.messages.clone();
    tokio::task::spawn_blocking(move || produce(&bootstrap, &messages))
        .await
        .unwrap();
    let mut first = rig.ingest("first");
    assert_eq!(
        rig.wait_for_rows(want as f64, Duration::from_secs(120))
            .await,
        want as f64
    );
    assert_eq!(first.terminate(Duration::from_secs(30)), Some(0));
    let yesterday = rig
        .count("SELECT min(toYYYYMMDD(ts)) FROM {db}.events")
        .await;
    let lost_rows = format!(
        "toYYYYMMDD(ts) = {yesterday} AND source_topic = 'proof.buses' AND source_offset > 250"
    );
    let lost = rig
        .count(&format!(
            "SELECT count() FROM {{db}}.events WHERE {lost_rows}"
        ))
        .await;
    assert!(
        lost > 0.0,
        "the buses have rows of yesterday past offset 250"
    );
    rig.clickhouse
        .sql(&format!(
            "ALTER TABLE {}.events DELETE WHERE {lost_rows}",
            rig.db
        ))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while rig.count("SELECT count() FROM {db}.events").await > want as f64 - lost {
        assert!(
            Instant::now() < deadline,
            "the mutation did not finish in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = std::fs::read_to_string(&rig.config)
        .unwrap()
        .replace("group_id = \"proof\"", "group_id = \"proof-again\"");
    std::fs::write(&rig.config, text).unwrap();
    let again = rig.ingest("again");
    let n = rig
        .wait_for_rows(want as f64, Duration::from_secs(120))
        .await;
    again.wait_settled().await;
    let replayed = metric_sum(
        &again.metrics().await,
        "cityops_ingest_replayed_messages_total",
        &[],
    );
    eprintln!(
        "{lost} rows of yesterday removed; {n} rows of {want} after the second read, which skipped {replayed} messages"
    );
    assert_eq!(n, want as f64, "{}", again.log_text());
    rig.assert_rows_equal_source(&load.expected).await;
    // Everything but the buses' messages past offset 250 was skipped whole.
    assert!(replayed >= 2_000.0, "only {replayed} messages skipped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proof_3_clickhouse_down_for_20_s_pauses_within_the_memory_bound_and_catches_up() {
    // A small bound so that it is reached while ClickHouse is down.
    let bound: u64 = 4 * 1024 * 1024;
    let mut rig = Rig::start(
        false,
        &format!("max_in_flight_bytes = {bound}\nbatch_max_bytes = 1048576\n"),
    )
    .await;
    // A small librdkafka prefetch too: the process's memory is what is measured.
    let text = std::fs::read_to_string(&rig.config).unwrap().replace(
        "session_timeout_ms = 6000\n",
        "session_timeout_ms = 6000\nqueued_max_bytes = 2097152\n",
    );
    std::fs::write(&rig.config, text).unwrap();
    // Produced over about 30 s, so that the load goes on while ClickHouse is down.
    let load = good_load(60_000);
    let producer = produce_in_background(
        rig.kafka.bootstrap(),
        load.messages.clone(),
        20,
        Duration::from_millis(1500),
    );
    let ingest = rig.ingest("ingest");
    rig.wait_for_rows(10_000.0, Duration::from_secs(60)).await;
    let (status, _) = http_get(ingest.port, "/readyz").await;
    assert_eq!(status, 200);
    let rss_before = ingest.rss_bytes();
    rig.clickhouse.stop();
    let down = Instant::now();
    let mut max_in_flight = 0.0f64;
    let mut max_rss = 0u64;
    let mut saw_paused = false;
    let mut saw_unready = false;
    while down.elapsed() < Duration::from_secs(20) {
        let metrics = ingest.metrics().await;
        max_in_flight =
            max_in_flight.max(metric_sum(&metrics, "cityops_ingest_in_flight_bytes", &[]));
        saw_paused |= metric_sum(&metrics, "cityops_ingest_paused_state", &[]) == 1.0;
        saw_unready |= http_get(ingest.port, "/readyz").await.0 == 503;
        max_rss = max_rss.max(ingest.rss_bytes());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    rig.clickhouse.start_again();
    producer.join().unwrap();
    let n = rig.wait_for_rows(120_000.0, Duration::from_secs(120)).await;
    ingest.wait_settled().await;
    eprintln!(
        "while ClickHouse was down: in-flight peak {max_in_flight} bytes (bound {bound}), RSS {rss_before} -> peak {max_rss} bytes, paused {saw_paused}, unready {saw_unready}"
    );
    assert_eq!(n, 120_000.0, "{}", ingest.log_text());
    rig.assert_rows_equal_source(&load.expected).await;
    assert!(saw_paused, "consumption paused at the bound");
    assert!(
        saw_unready,
        "/readyz said not ready while ClickHouse was down"
    );
    // One batch may be on its way when the bound is crossed.
    assert!(
        max_in_flight <= (bound + 1024 * 1024) as f64 * 1.1,
        "in-flight {max_in_flight} over the bound {bound}"
    );
    assert!(
        max_rss < rss_before + 3 * bound + 16 * 1024 * 1024,
        "RSS grew from {rss_before} to {max_rss} while ClickHouse was down"
    );
    assert_eq!(http_get(ingest.port, "/readyz").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proof_4_poison_messages_go_to_rejects_with_their_reason_and_never_stall_a_partition() {
    let rig = Rig::start(false, "").await;
    // ClickHouse itself refuses events whose value is 666.125 (a check a DBA might add).
    rig.clickhouse
        .sql(&format!(
            "ALTER TABLE {}.events ADD COLUMN guard UInt8 MATERIALIZED throwIf(ifNull(value, 0) = 666.125)",
            rig.db
        ))
        .await
        .unwrap();
    let base = base_ms();
    let record = |id: &str, v: serde_json::Value| {
        serde_json::json!({"id": id, "ts": base, "v": v, "note": "x"}).to_string()
    };
    // (topic, payload, expected reason): thirteen kinds of poison, eleven reasons.
    let poison: Vec<(&str, Vec<u8>, &str)> = vec![
        (TOPICS[0], b"\xff\xfe{\"id\":1}".to_vec(), "invalid_utf8"),
        (TOPICS[0], b"{\"id\": \"r\", ".to_vec(), "invalid_json"),
        (TOPICS[1], Vec::new(), "invalid_json"),
        (
            TOPICS[0],
            record("r", serde_json::json!("x".repeat(5000))).into_bytes(),
            "too_large",
        ),
        (
            TOPICS[1],
            serde_json::json!({"id": "d", "ts": base, "note": "x"})
                .to_string()
                .into_bytes(),
            "missing_field",
        ),
        (
            TOPICS[1],
            record("d", serde_json::json!("mười hai")).into_bytes(),
            "wrong_type",
        ),
        (
            TOPICS[1],
            serde_json::json!({"id": "d", "ts": "hôm qua", "v": 1, "note": "x"})
                .to_string()
                .into_bytes(),
            "invalid_timestamp",
        ),
        (
            TOPICS[1],
            serde_json::json!({"id": "d", "ts": base + 86_400_000 * 3, "v": 1, "note": "x"})
                .to_string()
                .into_bytes(),
            "ts_out_of_range",
        ),
        (
            TOPICS[0],
            serde_json::json!({"id": "", "ts": base, "v": 1, "note": "x"})
                .to_string()
                .into_bytes(),
            "wrong_type",
        ),
        (
            TOPICS[0],
            serde_json::json!({"id": "r", "ts": base, "v": 1, "note": "x", "lat": 95.0, "lon": 108.2})
                .to_string()
                .into_bytes(),
            "out_of_range",
        ),
        (
            TOPICS[2],
            br#"{"route": "R16", "items": []}"#.to_vec(),
            "empty",
        ),
        (
            TOPICS[2],
            serde_json::json!({"route": "R16", "items": (0..6).map(|i| serde_json::json!({"id": format!("b{i}"), "ts": base, "v": 1, "note": "x"})).collect::<Vec<_>>()})
                .to_string()
                .into_bytes(),
            "too_many_events",
        ),
        (
            TOPICS[1],
            record("d-refused", serde_json::json!(666.125)).into_bytes(),
            "clickhouse_refused",
        ),
    ];
    // 1 % poison: one poison message after every 99 good ones, cycling through the kinds.
    let good = good_load(19_800);
    let mut messages = Vec::new();
    let mut expected_rejects: BTreeMap<&str, usize> = BTreeMap::new();
    let mut kinds = poison.iter().cycle();
    for (i, message) in good.messages.iter().enumerate() {
        messages.push(message.clone());
        if i % 99 == 98 {
            let (topic, payload, reason) = kinds.next().unwrap();
            messages.push((topic, format!("poison-{i}"), payload.clone()));
            *expected_rejects.entry(reason).or_default() += 1;
        }
    }
    let poisoned: usize = expected_rejects.values().sum();
    assert_eq!(poisoned, 200);
    let bootstrap = rig.kafka.bootstrap();
    tokio::task::spawn_blocking(move || produce(&bootstrap, &messages))
        .await
        .unwrap();
    let mut ingest = rig.ingest("ingest");
    let n = rig.wait_for_rows(39_600.0, Duration::from_secs(120)).await;
    ingest.wait_settled().await;
    let strays = rig
        .clickhouse
        .sql(&format!(
            "SELECT feed, entity_id, metric, count() FROM {}.events WHERE entity_id NOT LIKE '%-0%' GROUP BY feed, entity_id, metric",
            rig.db
        ))
        .await
        .unwrap();
    assert_eq!(strays, "", "poison became events");
    assert_eq!(n, 39_600.0, "{}", ingest.log_text());
    // Rejects land after their batch's events.
    let deadline = Instant::now() + Duration::from_secs(60);
    while rig.count("SELECT count() FROM {db}.rejects").await < poisoned as f64
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    rig.assert_rows_equal_source(&good.expected).await;
    let rows = rig
        .clickhouse
        .rows(&format!(
            "SELECT reason, count() AS n, min(length(message)) AS shortest_message, \
             countIf(source_offset >= 0 AND source_topic != '') AS located, \
             countIf(raw_len = 0 OR length(raw) > 0) AS with_raw \
             FROM {}.rejects GROUP BY reason ORDER BY reason",
            rig.db
        ))
        .await
        .unwrap();
    let got: BTreeMap<String, usize> = rows
        .iter()
        .map(|r| {
            let n: usize = r["n"].as_str().unwrap().parse().unwrap();
            assert_eq!(r["located"].as_str().unwrap(), r["n"].as_str().unwrap());
            assert_eq!(r["with_raw"].as_str().unwrap(), r["n"].as_str().unwrap());
            assert_ne!(r["shortest_message"].as_str().unwrap(), "0");
            (r["reason"].as_str().unwrap().to_owned(), n)
        })
        .collect();
    let want: BTreeMap<String, usize> = expected_rejects
        .iter()
        .map(|(k, v)| ((*k).to_owned(), *v))
        .collect();
    assert_eq!(got, want, "rejects by reason");
    assert!(want.len() >= 10, "{want:?}");
    // The refused rows carry the server's error and the rows as JSON.
    let refused = rig
        .clickhouse
        .rows(&format!(
            "SELECT message, raw FROM {}.rejects WHERE reason = 'clickhouse_refused' LIMIT 1",
            rig.db
        ))
        .await
        .unwrap();
    assert!(
        refused[0]["message"].as_str().unwrap().contains("throwIf"),
        "{refused:?}"
    );
    assert!(refused[0]["raw"].as_str().unwrap().contains("d-refused"));
    let metrics = ingest.metrics().await;
    assert_eq!(
        metric_sum(&metrics, "cityops_ingest_rejects_total", &[]),
        poisoned as f64
    );
    assert!(
        metric_sum(
            &metrics,
            "cityops_ingest_insert_failures_total",
            &["action=\"split\""]
        ) > 0.0
    );
    assert_eq!(ingest.terminate(Duration::from_secs(30)), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proof_5_a_second_process_takes_over_the_partitions_of_a_killed_one() {
    let rig = Rig::start(false, "").await;
    let load = good_load(60_000);
    let first = load.messages[..30_000].to_vec();
    let rest = load.messages[30_000..].to_vec();
    let bootstrap = rig.kafka.bootstrap();
    tokio::task::spawn_blocking(move || produce(&bootstrap, &first))
        .await
        .unwrap();
    let mut a = rig.ingest("a");
    let b = rig.ingest("b");
    let n = rig.wait_for_rows(60_000.0, Duration::from_secs(120)).await;
    assert_eq!(n, 60_000.0, "{}\n{}", a.log_text(), b.log_text());
    // Both members got partitions and consumed.
    let consumed = |m: &str| metric_sum(m, "cityops_ingest_messages_total", &[]);
    let (ma, mb) = (consumed(&a.metrics().await), consumed(&b.metrics().await));
    assert!(ma > 0.0 && mb > 0.0, "a consumed {ma}, b consumed {mb}");
    // The rest arrives over a few seconds; a dies while both are storing it.
    let producer =
        produce_in_background(rig.kafka.bootstrap(), rest, 10, Duration::from_millis(400));
    rig.wait_for_rows(70_000.0, Duration::from_secs(60)).await;
    a.kill9();
    producer.join().unwrap();
    let n = rig.wait_for_rows(120_000.0, Duration::from_secs(120)).await;
    b.wait_settled().await;
    assert_eq!(n, 120_000.0, "{}", b.log_text());
    rig.assert_rows_equal_source(&load.expected).await;
    let mb_after = consumed(&b.metrics().await);
    eprintln!("before the kill: a consumed {ma}, b {mb}; after, b consumed {mb_after}");
    assert!(
        b.log_text()
            .contains("partitions assigned; reading what is already stored partitions=6"),
        "b took over all six partitions:\n{}",
        b.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proof_6_a_durable_broker_restart_mid_load_loses_and_duplicates_nothing() {
    let mut rig = Rig::start(true, "").await;
    let load = good_load(20_000);
    let first = load.messages[..10_000].to_vec();
    let rest = load.messages[10_000..].to_vec();
    let bootstrap = rig.kafka.bootstrap();
    tokio::task::spawn_blocking(move || produce(&bootstrap, &first))
        .await
        .unwrap();
    let ingest = rig.ingest("ingest");
    rig.wait_for_rows(5_000.0, Duration::from_secs(120)).await;
    rig.kafka.restart();
    let bootstrap = rig.kafka.bootstrap();
    tokio::task::spawn_blocking(move || produce(&bootstrap, &rest))
        .await
        .unwrap();
    let n = rig.wait_for_rows(40_000.0, Duration::from_secs(180)).await;
    ingest.wait_settled().await;
    assert_eq!(n, 40_000.0, "{}", ingest.log_text());
    rig.assert_rows_equal_source(&load.expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_load_stores_commits_and_leaves_so_the_next_run_reads_nothing_twice() {
    let rig = Rig::start(false, "").await;
    let load = good_load(30_000);
    let first = load.messages[..20_000].to_vec();
    let rest = load.messages[20_000..].to_vec();
    let producer =
        produce_in_background(rig.kafka.bootstrap(), first, 10, Duration::from_millis(300));
    let mut ingest = rig.ingest("first");
    rig.wait_for_rows(10_000.0, Duration::from_secs(60)).await;
    // Lag is reported from librdkafka's statistics (every 5 s).
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut metrics = ingest.metrics().await;
    while !metrics.contains("cityops_ingest_kafka_lag_messages{") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        metrics = ingest.metrics().await;
    }
    assert!(
        metrics
            .contains("cityops_ingest_kafka_lag_messages{partition=\"0\",topic=\"proof.reports\"}"),
        "{metrics}"
    );
    let code = ingest.terminate(Duration::from_secs(30));
    let log = ingest.log_text();
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("drained=true"), "{log}");
    producer.join().unwrap();
    let stored = rig.count("SELECT count() FROM {db}.events").await;
    assert_eq!(stored.rem_euclid(2.0), 0.0, "messages are stored whole");
    let bootstrap = rig.kafka.bootstrap();
    tokio::task::spawn_blocking(move || produce(&bootstrap, &rest))
        .await
        .unwrap();
    let next = rig.ingest("next");
    let n = rig.wait_for_rows(60_000.0, Duration::from_secs(120)).await;
    next.wait_settled().await;
    assert_eq!(n, 60_000.0, "{}", next.log_text());
    rig.assert_rows_equal_source(&load.expected).await;
    // The first run committed everything it stored: nothing was read twice.
    assert_eq!(
        metric_sum(
            &next.metrics().await,
            "cityops_ingest_replayed_messages_total",
            &[]
        ),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inserts_that_time_out_but_land_are_not_written_twice() {
    // INSERTs of 40,000 rows take ClickHouse longer than 100 ms: the client gives up on most of
    // them while the server finishes them. The look-up before each retry must find them.
    let rig = Rig::start(false, "insert_timeout_ms = 100\n").await;
    let text = std::fs::read_to_string(&rig.config)
        .unwrap()
        .replace("batch_max_rows = 5000\n", "batch_max_rows = 40000\n")
        .replace("linger_ms = 200\n", "linger_ms = 2000\n");
    std::fs::write(&rig.config, text).unwrap();
    let load = good_load(40_000);
    let bootstrap = rig.kafka.bootstrap();
    let messages = load.messages.clone();
    tokio::task::spawn_blocking(move || produce(&bootstrap, &messages))
        .await
        .unwrap();
    let mut ingest = rig.ingest("ingest");
    let n = rig.wait_for_rows(80_000.0, Duration::from_secs(120)).await;
    ingest.wait_settled().await;
    assert_eq!(n, 80_000.0, "{}", ingest.log_text());
    rig.assert_rows_equal_source(&load.expected).await;
    let retries = metric_sum(
        &ingest.metrics().await,
        "cityops_ingest_insert_failures_total",
        &["action=\"retry\""],
    );
    eprintln!("{retries} INSERTs timed out and were looked up before a retry");
    assert_eq!(ingest.terminate(Duration::from_secs(60)), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_that_gives_the_ingest_no_partitions_is_a_warning_a_metric_and_not_ready_until_it_does()
 {
    // The durable broker: the in-memory one can leave the group wedged when members come and
    // go (which this test would then report, but never see end).
    let rig = Rig::start(true, "").await;
    let text = std::fs::read_to_string(&rig.config).unwrap();
    assert!(text.contains("session_timeout_ms = 6000\n"));
    let with = |kafka_extra: &str| {
        text.replacen(
            "session_timeout_ms = 6000\n",
            &format!("session_timeout_ms = 6000\nassignment_timeout_ms = 3000\n{kafka_extra}"),
            1,
        )
    };
    // One feed, so one topic of two partitions, and two members that sort before the ingest
    // (member ids begin with the client id, the ingest's is librdkafka's "rdkafka"): the
    // round-robin assignor gives them a partition each, and the ingest none.
    let with = |kafka_extra: &str| {
        let text = with(kafka_extra);
        let second_feed = text.find("[[feeds]]\nname = \"dossiers\"").unwrap();
        text[..second_feed].to_owned()
    };
    std::fs::write(&rig.config, with("")).unwrap();
    let assigned = |m: &str| metric_sum(m, "cityops_ingest_kafka_assigned_partitions", &[]);
    let stalled = |m: &str| metric_sum(m, "cityops_ingest_kafka_assignment_stalled_state", &[]);
    let mut holders = Vec::new();
    for name in ["0-holder-a", "0-holder-b"] {
        let config = rig.dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &config,
            with(&format!("settings = {{ \"client.id\" = \"{name}\" }}\n")),
        )
        .unwrap();
        holders.push(Ingest::spawn(&config, rig.dir.path(), name));
    }
    crate::alert::wait_for(
        "the two holders with a partition each",
        Duration::from_secs(60),
        async || {
            let mut counts = Vec::new();
            for holder in &holders {
                counts.push(assigned(&holder.metrics().await));
            }
            (counts == [1.0, 1.0]).then_some(())
        },
    )
    .await;

    let ingest = rig.ingest("starved");
    let started = Instant::now();
    crate::alert::wait_for(
        "the starved ingest reported: stalled, no partitions, not ready, the holders with one each",
        Duration::from_secs(60),
        async || {
            let m = ingest.metrics().await;
            let mut counts = Vec::new();
            for holder in &holders {
                counts.push(assigned(&holder.metrics().await));
            }
            let starved = stalled(&m) == 1.0 && assigned(&m) == 0.0;
            (starved && counts == [1.0, 1.0] && http_get(ingest.port, "/readyz").await.0 == 503)
                .then_some(())
        },
    )
    .await;
    eprintln!(
        "a group giving no partitions: reported after {:?} (assignment_timeout_ms 3000)",
        started.elapsed()
    );
    assert!(
        ingest
            .log_text()
            .contains("the consumer group gives this process no partitions"),
        "{}",
        ingest.log_text()
    );

    // The holders die: once the group has dropped them, the ingest gets both partitions and
    // is ready again.
    for holder in &mut holders {
        holder.kill9();
    }
    let killed = Instant::now();
    let mut last = String::new();
    while killed.elapsed() < Duration::from_secs(90) {
        let m = ingest.metrics().await;
        let ready = http_get(ingest.port, "/readyz").await.0;
        last = format!(
            "stalled {}, assigned {}, /readyz {ready}",
            stalled(&m),
            assigned(&m)
        );
        if stalled(&m) == 0.0 && assigned(&m) == 2.0 && ready == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        last.starts_with("stalled 0, assigned 2, /readyz 200"),
        "90 s after the holders died: {last}\n{}",
        ingest.log_text()
    );
    eprintln!(
        "a group giving no partitions: the ingest had both {:?} after the holders died (session timeout 6 s)",
        killed.elapsed()
    );
    assert!(
        ingest
            .log_text()
            .contains("the consumer group gives this process its partitions again"),
        "{}",
        ingest.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_with_scram_everything_is_stored_and_a_wrong_password_is_a_clear_retried_error() {
    let topics: Vec<(&str, u32)> = TOPICS.iter().map(|t| (*t, PARTITIONS)).collect();
    let kafka = KafkaBroker::start_durable_secured(&topics);
    let secured = kafka.secured().unwrap();
    let (username, password) = (secured.username.clone(), secured.password.clone());
    let ca = secured.ca_file.display().to_string();
    let password_file = std::cell::OnceCell::new();
    let rig = Rig::with_broker(kafka, ClickHouseServer::start(), true, "", |dir| {
        let file = dir.join("kafka-password");
        std::fs::write(&file, format!("{password}\n")).unwrap();
        password_file.set(file.clone()).unwrap();
        format!(
            "assignment_timeout_ms = 3000\nsettings = {{ \"security.protocol\" = \"SASL_SSL\", \"sasl.mechanism\" = \"SCRAM-SHA-512\", \"sasl.username\" = \"{username}\", \"ssl.ca.location\" = \"{ca}\" }}\n[kafka.settings_files]\n\"sasl.password\" = \"{}\"\n",
            file.display()
        )
    })
    .await;
    let password_file = password_file.into_inner().unwrap();
    // The endpoint demands both: without TLS, or without the password, no metadata.
    let good = rig.kafka.client_settings();
    let without = |drop_keys: &[&str], extra: &[(&str, &str)]| {
        let mut settings: Vec<(String, String)> = good
            .iter()
            .filter(|(k, _)| !drop_keys.contains(&k.as_str()))
            .cloned()
            .collect();
        settings.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        cityops_testkit::metadata_with(&settings, Duration::from_secs(5))
    };
    let topics_seen = without(&[], &[]).expect("metadata with TLS and the password");
    assert!(topics_seen >= TOPICS.len(), "{topics_seen} topics");
    let plaintext = without(
        &["security.protocol", "ssl.ca.location"],
        &[("security.protocol", "SASL_PLAINTEXT")],
    );
    assert!(plaintext.is_err(), "no TLS, yet metadata: {plaintext:?}");
    let anonymous = without(
        &[
            "security.protocol",
            "sasl.mechanism",
            "sasl.username",
            "sasl.password",
        ],
        &[("security.protocol", "SSL")],
    );
    assert!(
        anonymous.is_err(),
        "TLS without SASL, yet metadata: {anonymous:?}"
    );
    let wrong = without(&["sasl.password"], &[("sasl.password", "not-the-password")]);
    assert!(wrong.is_err(), "a wrong password, yet metadata: {wrong:?}");
    // The test's own producer goes through the same TLS front with the same user.
    let load = good_load(5_000);
    let producer = rig.kafka.producer().unwrap();
    let messages: Vec<(&str, &str, &[u8])> = load
        .messages
        .iter()
        .map(|(t, k, p)| (*t, k.as_str(), p.as_slice()))
        .collect();
    rig.kafka.produce_all(&producer, &messages).await.unwrap();
    let ingest = rig.ingest("tls");
    let n = rig.wait_for_rows(10_000.0, Duration::from_secs(120)).await;
    assert_eq!(n, 10_000.0, "{}", ingest.log_text());
    rig.assert_rows_equal_source(&load.expected).await;
    assert!(
        !ingest.log_text().contains(&password),
        "the password is never logged"
    );
    drop(ingest);

    // A wrong password: librdkafka's error names the cause, the client retries, the process
    // stays up and says it is not ready; nothing crashes.
    std::fs::write(&password_file, "not-the-password\n").unwrap();
    let wrong = rig.ingest("wrong");
    let deadline = Instant::now() + Duration::from_secs(60);
    let failures = |log: &str| {
        log.lines()
            .filter(|l| l.contains("uthentication") && (l.contains("ERROR") || l.contains("WARN")))
            .count()
    };
    while failures(&wrong.log_text()) < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let log = wrong.log_text();
    if let Some(line) = log.lines().find(|l| l.contains("uthentication")) {
        eprintln!("the wrong password, as the ingest logs it: {line}");
    }
    assert!(
        failures(&log) >= 2,
        "two authentication failures logged (the first and a retry) within 60 s: {log}"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while http_get(wrong.port, "/readyz").await.0 != 503 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(http_get(wrong.port, "/readyz").await.0, 503, "{log}");
    assert_eq!(http_get(wrong.port, "/healthz").await.0, 200, "{log}");
    let log = wrong.log_text();
    assert!(
        !log.contains(&password) && !log.contains("not-the-password"),
        "{log}"
    );
    assert_eq!(rig.count("SELECT count() FROM {db}.events").await, 10_000.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn into_clickhouse_over_https_with_a_ca_file_and_a_wrong_password_is_a_clear_retried_error() {
    let kafka = KafkaBroker::start();
    for topic in TOPICS {
        kafka.create_topic(topic, PARTITIONS).unwrap();
    }
    let mut rig = Rig::with_broker(kafka, ClickHouseServer::start_https(), false, "", |_| {
        String::new()
    })
    .await;
    // The ingest's own user may write the `cityops` database only (users.xml).
    let text = std::fs::read_to_string(&rig.config)
        .unwrap()
        .replace("database = \"proof\"", "database = \"cityops\"");
    std::fs::write(&rig.config, text).unwrap();
    let out = crate::cityops(&[
        "migrate",
        "--config",
        rig.config.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    rig.db = "cityops".to_owned();
    // As the ingest's own user, its password in a file.
    let password_file = rig.dir.path().join("clickhouse-password");
    std::fs::write(&password_file, "ingest-local\n").unwrap();
    let text = std::fs::read_to_string(&rig.config).unwrap();
    assert!(
        text.contains("url = \"https://127.0.0.1:") && text.contains("ca_file = "),
        "{text}"
    );
    let text = text.replacen(
        "[clickhouse]\n",
        &format!(
            "[clickhouse]\nuser = \"cityops_ingest\"\npassword_file = \"{}\"\n",
            password_file.display()
        ),
        1,
    );
    std::fs::write(&rig.config, text).unwrap();
    let load = good_load(5_000);
    let bootstrap = rig.kafka.bootstrap();
    let messages = load.messages.clone();
    tokio::task::spawn_blocking(move || produce(&bootstrap, &messages))
        .await
        .unwrap();
    let mut ingest = rig.ingest("https");
    let n = rig.wait_for_rows(10_000.0, Duration::from_secs(120)).await;
    assert_eq!(n, 10_000.0, "{}", ingest.log_text());
    rig.assert_rows_equal_source(&load.expected).await;
    assert_eq!(ingest.terminate(Duration::from_secs(30)), Some(0));
    assert!(
        !ingest.log_text().contains("ingest-local"),
        "the password is never logged"
    );

    // A wrong password: the server's refusal is logged with its reason, retried, the process
    // stays up and not ready, and nothing is read from Kafka meanwhile.
    std::fs::write(&password_file, "not-the-password\n").unwrap();
    let wrong = rig.ingest("wrong");
    let refused = |log: &str| {
        log.lines()
            .filter(|l| l.contains("Wrong password") && (l.contains("WARN") || l.contains("ERROR")))
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while refused(&wrong.log_text()) < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let log = wrong.log_text();
    assert!(
        refused(&log) >= 2,
        "the refusal logged, then again on a retry: {log}"
    );
    if let Some(line) = log.lines().find(|l| l.contains("Wrong password")) {
        eprintln!("the wrong ClickHouse password, as the ingest logs it: {line}");
    }
    assert_eq!(http_get(wrong.port, "/readyz").await.0, 503, "{log}");
    assert_eq!(http_get(wrong.port, "/healthz").await.0, 200, "{log}");
    assert!(
        !log.contains("ingest-local") && !log.contains("not-the-password"),
        "{log}"
    );
}
