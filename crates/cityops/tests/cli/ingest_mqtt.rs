//! The proofs of `cityops ingest` from MQTT: real mosquitto, real ClickHouse, the real binary
//! killed and restarted. Every test owns its services.

use crate::ingest_support::{
    Ingest, ProofTables, Tables, base_ms, expected_rows, http_get, metric_sum,
};
use cityops_testkit::{ClickHouseServer, Mosquitto};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn feeds_toml() -> &'static str {
    r#"
[[feeds]]
name = "levels"
source = "mqtt"
topic = "proof/levels/{entity_id}"
domain = "water"
sequence_attr = "seq"
[feeds.decoder]
type = "json"
ts = "/ts"
ts_format = "epoch_ms"
attrs = { seq = "/seq" }
fields = [
  { metric = "value", pointer = "/v", valid_min = -1000000.0, valid_max = 1000000.0 },
  { metric = "note", pointer = "/note", type = "string" },
]

[[feeds]]
name = "air"
source = "mqtt"
topic = "proof/air/{entity_id}"
domain = "environment"
max_payload_bytes = 4096
[feeds.decoder]
type = "json"
ts = "/ts"
ts_format = "epoch_ms"
fields = [
  { metric = "value", pointer = "/v" },
  { metric = "note", pointer = "/note", type = "string" },
]

[[feeds]]
name = "counts"
source = "mqtt"
topic = "proof/counts/{entity_id}"
domain = "traffic"
max_events_per_payload = 10
[feeds.decoder]
type = "json"
records = "/items"
ts = "/ts"
ts_format = "epoch_ms"
fields = [
  { metric = "value", pointer = "/v" },
  { metric = "note", pointer = "/note", type = "string" },
]
"#
}

/// Services and a migrated database.
pub(crate) struct Rig {
    pub(crate) clickhouse: ClickHouseServer,
    pub(crate) mosquitto: Mosquitto,
    pub(crate) dir: tempfile::TempDir,
    db: String,
}

impl Rig {
    pub(crate) async fn with_broker(mosquitto: Mosquitto) -> Rig {
        let clickhouse = ClickHouseServer::start();
        let dir = tempfile::tempdir().unwrap();
        let rig = Rig {
            clickhouse,
            mosquitto,
            dir,
            db: "proof".to_owned(),
        };
        let config = rig.config("migrate", "", "");
        let out = crate::cityops(&["migrate", "--config", config.to_str().unwrap(), "--quiet"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        rig
    }

    /// Writes the config of ingest process `name` (its own client id and spool), with extra
    /// `[mqtt]` keys and extra sections.
    pub(crate) fn config(&self, name: &str, mqtt_extra: &str, extra: &str) -> PathBuf {
        let text = format!(
            r#"
[telemetry]
log_level = "info,cityops_ingest=debug"
listen_addr = "127.0.0.1:0"

[clickhouse]
url = "{url}"
database = "{db}"

[ingest]
batch_max_rows = 5000
linger_ms = 200
retry_initial_ms = 50
retry_max_ms = 1000
shutdown_deadline_ms = 10000
{extra}

[mqtt]
host = "127.0.0.1"
port = {port}
client_id = "proof-{name}"
keep_alive_s = 5
reconnect_initial_ms = 100
reconnect_max_ms = 2000
{mqtt_extra}

[mqtt.spool]
dir = "{spool}"
segment_bytes = 1048576
max_bytes = 268435456
{feeds}"#,
            url = self.clickhouse.url(),
            db = self.db,
            port = self.mosquitto.port(),
            spool = self.dir.path().join(format!("spool-{name}")).display(),
            feeds = feeds_toml(),
        );
        let path = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Starts `cityops ingest` as process `name` (client id and spool `proof-<name>`).
    fn ingest(&self, name: &str, mqtt_extra: &str) -> Ingest {
        self.ingest_run(name, name, mqtt_extra, "")
    }

    /// Starts run `run` of ingest process `name`: a restart keeps the client id and spool,
    /// the log is the run's own.
    pub(crate) fn ingest_run(
        &self,
        name: &str,
        run: &str,
        mqtt_extra: &str,
        extra: &str,
    ) -> Ingest {
        let config = self.config(name, mqtt_extra, extra);
        Ingest::spawn(&config, self.dir.path(), run)
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

/// Good messages, two events each, spread over the three feeds, and the rows each must give.
pub(crate) struct Load {
    pub(crate) messages: Vec<(String, Vec<u8>)>,
    pub(crate) expected: BTreeMap<String, Vec<String>>,
}

pub(crate) fn good_load(messages: usize) -> Load {
    let base = base_ms();
    let mut load = Load {
        messages: Vec::with_capacity(messages),
        expected: BTreeMap::new(),
    };
    for i in 0..messages {
        let feed = ["levels", "air", "counts"][i % 3];
        let id = format!("{feed}-{i:07}");
        let ts = base + i as i64;
        let v = (i as f64) * 0.25 - 1000.0;
        let note = format!("Mực nước số {i}: cảnh báo ngập ở Hòa Vang");
        let record = serde_json::json!({"ts": ts, "v": v, "note": note, "seq": i / 3});
        let payload = if feed == "counts" {
            serde_json::json!({"items": [record]})
        } else {
            record
        };
        load.messages.push((
            format!("proof/{feed}/{id}"),
            serde_json::to_vec(&payload).unwrap(),
        ));
        load.expected
            .insert(id.clone(), expected_rows(&id, &note, v, ts, feed));
    }
    load
}

/// Publishes at QoS 1 over four connections and waits for every PUBACK; returns how many
/// the broker acknowledged.
pub(crate) async fn publish(port: u16, messages: &[(String, Vec<u8>)]) -> u64 {
    let id = format!("proof-pub-{}", cityops_testkit::free_port());
    let mut publisher = cityops_mqtt::Publisher::connect("127.0.0.1", port, &id, 4);
    for (topic, payload) in messages {
        publisher.publish(topic, payload).await.unwrap();
    }
    let acked = publisher.acked();
    let sent = publisher.sent();
    publisher.finish(Duration::from_secs(120)).await.unwrap();
    assert!(acked <= sent);
    sent
}

/// Waits until the ingest's metrics say the broker confirmed the subscriptions of `n`
/// connections (messages published from then on reach them).
pub(crate) async fn wait_connected(ingest: &Ingest, n: f64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let m = ingest.metrics().await;
        if metric_sum(&m, "cityops_ingest_mqtt_subscribed_connections", &[]) >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not connected:\n{}",
            ingest.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proof_1_every_qos1_message_lands_once_with_the_values_published() {
    let rig = Rig::with_broker(roomy_broker()).await;
    let mut ingest = rig.ingest("a", "");
    wait_connected(&ingest, 4.0).await;
    let load = good_load(50_000);
    let started = Instant::now();
    assert_eq!(publish(rig.mosquitto.port(), &load.messages).await, 50_000);
    let n = rig.wait_for_rows(100_000.0, Duration::from_secs(120)).await;
    eprintln!("50,000 messages stored in {:?}", started.elapsed());
    assert_eq!(n, 100_000.0, "{}", ingest.log_text());
    rig.assert_rows_equal_source(&load.expected).await;
    let metrics = ingest.metrics().await;
    assert_eq!(
        metric_sum(
            &metrics,
            "cityops_ingest_messages_total",
            &["source=\"mqtt\""]
        ),
        50_000.0
    );
    for feed in ["levels", "air", "counts"] {
        let published = load
            .messages
            .iter()
            .filter(|(topic, _)| topic.starts_with(&format!("proof/{feed}/")))
            .count();
        assert_eq!(
            metric_sum(
                &metrics,
                "cityops_ingest_rows_inserted_total",
                &["table=\"events\"", &format!("feed=\"{feed}\"")]
            ),
            (published * 2) as f64,
            "{feed}"
        );
    }
    assert_eq!(
        metric_sum(&metrics, "cityops_ingest_mqtt_sequence_gaps_total", &[]),
        0.0
    );
    assert_eq!(http_get(ingest.port, "/readyz").await.0, 200);
    // A clean stop: everything stored, the spool emptied down to its active segment; a second
    // run stores nothing again.
    assert_eq!(ingest.terminate(Duration::from_secs(30)), Some(0));
    assert!(ingest.log_text().contains("drained=true"));
    let again = rig.ingest("a", "");
    wait_connected(&again, 4.0).await;
    // Markers published now reach every session (shared subscriptions go round), after
    // whatever the broker or the spool still held for it: once they are stored, anything
    // stored again would be too.
    let markers: Vec<(String, Vec<u8>)> = (0..8)
        .map(|i| {
            let payload = serde_json::json!({"ts": base_ms(), "v": 1, "note": "x", "seq": 0});
            (
                format!("proof/levels/marker-{i}"),
                serde_json::to_vec(&payload).unwrap(),
            )
        })
        .collect();
    publish(rig.mosquitto.port(), &markers).await;
    let want = 100_000.0 + 2.0 * markers.len() as f64;
    assert_eq!(rig.wait_for_rows(want, Duration::from_secs(60)).await, want);
    again.wait_settled().await;
    let metrics = again.metrics().await;
    assert_eq!(
        metric_sum(&metrics, "cityops_ingest_rows_inserted_total", &[]),
        2.0 * markers.len() as f64,
        "the second run stored its markers only:\n{}",
        again.log_text()
    );
    assert_eq!(
        rig.count("SELECT count() FROM {db}.events WHERE entity_id NOT LIKE 'marker-%'")
            .await,
        100_000.0
    );
}

/// A broker sized for the proofs: the default queue of 1,000 messages per session would make
/// mosquitto drop (and the ingest report) messages while an ingest is down or restarting.
pub(crate) fn roomy_broker() -> Mosquitto {
    Mosquitto::start_with_config("max_queued_messages 1000000")
}

/// Publishes `messages` in `slices` with a pause after each, in the background.
pub(crate) fn publish_in_background(
    port: u16,
    messages: Vec<(String, Vec<u8>)>,
    slices: usize,
    pause: Duration,
) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let size = messages.len().div_ceil(slices);
        let mut sent = 0;
        for slice in messages.chunks(size) {
            sent += publish(port, slice).await;
            tokio::time::sleep(pause).await;
        }
        sent
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proof_2_kill_9_three_times_during_the_load_loses_and_duplicates_nothing() {
    let rig = Rig::with_broker(roomy_broker()).await;
    let load = good_load(100_000);
    let mut ingest = rig.ingest("a", "");
    wait_connected(&ingest, 4.0).await;
    let publisher = publish_in_background(
        rig.mosquitto.port(),
        load.messages.clone(),
        10,
        Duration::from_millis(400),
    );
    let seed = std::process::id() as u64 ^ base_ms() as u64;
    let mut kills = Vec::new();
    for round in 0..3u64 {
        // Kill at a different moment each round, after some rows of this run landed.
        let before = rig.count("SELECT count() FROM {db}.events").await;
        let deadline = Instant::now() + Duration::from_secs(60);
        while rig.count("SELECT count() FROM {db}.events").await <= before
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let delay = Duration::from_millis(100 + (seed.rotate_left(round as u32 * 7) % 700));
        tokio::time::sleep(delay).await;
        ingest.kill9();
        kills.push((delay, rig.count("SELECT count() FROM {db}.events").await));
        // The same client id and spool: the restarted process is the same ingest.
        ingest = rig.ingest_run("a", &format!("a-{round}"), "", "");
    }
    assert_eq!(
        publisher.await.unwrap(),
        100_000,
        "every message acknowledged by the broker"
    );
    let n = rig.wait_for_rows(200_000.0, Duration::from_secs(180)).await;
    eprintln!("kills (delay after first new rows, rows at the kill): {kills:?}");
    assert_eq!(n, 200_000.0, "{}", ingest.log_text());
    ingest.wait_settled().await;
    rig.assert_rows_equal_source(&load.expected).await;
    let metrics = ingest.metrics().await;
    eprintln!(
        "last run: replayed {} spooled messages already stored, {} resends recognised",
        metric_sum(&metrics, "cityops_ingest_replayed_messages_total", &[]),
        metric_sum(&metrics, "cityops_ingest_mqtt_resends_total", &[])
    );
    assert_eq!(ingest.terminate(Duration::from_secs(30)), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proof_3_a_broker_restart_mid_load_heals_by_itself_and_totals_stay_exact() {
    let mut rig = Rig::with_broker(roomy_broker()).await;
    let load = good_load(60_000);
    // Slow acknowledgements (a 20 ms sync) so that the broker holds a backlog when it stops.
    let ingest = rig.ingest_run("a", "a", "", "");
    let config = rig.config("a", "", "");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("[mqtt.spool]\n", "[mqtt.spool]\nsync_delay_ms = 20\n");
    std::fs::write(&config, text).unwrap();
    drop(ingest);
    let ingest = Ingest::spawn(&config, rig.dir.path(), "a-slow");
    wait_connected(&ingest, 4.0).await;
    let (first, second) = load.messages.split_at(30_000);
    assert_eq!(publish(rig.mosquitto.port(), first).await, 30_000);
    let at_restart = rig.count("SELECT count() FROM {db}.events").await;
    rig.mosquitto.restart();
    let restarted = Instant::now();
    // The ingest notices, then reconnects by itself; the broker's persisted backlog and new
    // messages flow.
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric_sum(
        &ingest.metrics().await,
        "cityops_ingest_mqtt_connection_errors_total",
        &[],
    ) < 4.0
    {
        assert!(Instant::now() < deadline, "{}", ingest.log_text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_connected(&ingest, 4.0).await;
    let reconnected = restarted.elapsed();
    assert_eq!(publish(rig.mosquitto.port(), second).await, 30_000);
    let n = rig.wait_for_rows(120_000.0, Duration::from_secs(180)).await;
    eprintln!(
        "rows at the restart: {at_restart}; all connections back {reconnected:?} after the broker"
    );
    assert_eq!(n, 120_000.0, "{}", ingest.log_text());
    ingest.wait_settled().await;
    rig.assert_rows_equal_source(&load.expected).await;
    let metrics = ingest.metrics().await;
    eprintln!(
        "resends recognised: {}",
        metric_sum(&metrics, "cityops_ingest_mqtt_resends_total", &[])
    );
}

/// Waits until `metric` (summed over its samples) of `ingest` reaches `want`; returns it.
pub(crate) async fn wait_metric(
    ingest: &Ingest,
    metric: &str,
    want: f64,
    timeout: Duration,
) -> f64 {
    let deadline = Instant::now() + timeout;
    loop {
        let value = metric_sum(&ingest.metrics().await, metric, &[]);
        if value >= want || Instant::now() >= deadline {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `ingest` handed over `want` acknowledgements in all; returns how many.
async fn wait_acks(ingest: &Ingest, want: f64, what: &str) -> f64 {
    let metric = "cityops_ingest_mqtt_acks_total";
    let acked = wait_metric(ingest, metric, want, Duration::from_secs(120)).await;
    assert!(
        acked >= want,
        "{what}: {acked} of {want} acknowledged:\n{}",
        ingest.log_text()
    );
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proof_7_a_broker_killed_with_9_comes_back_from_an_older_save_and_nothing_is_stored_twice()
{
    // The broker saves only when the test asks (SIGUSR1), so that at each crash its saved
    // state is known to be older than what the ingest acknowledged.
    let mut rig = Rig::with_broker(Mosquitto::start_with_config(
        "max_queued_messages 1000000\nautosave_interval 3600",
    ))
    .await;
    let config = rig.config("a", "", "");
    // A pause of the process must not look like a dead connection to the broker.
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("keep_alive_s = 5", "keep_alive_s = 60");
    std::fs::write(&config, text).unwrap();
    let ingest = Ingest::spawn(&config, rig.dir.path(), "a");
    wait_connected(&ingest, 4.0).await;
    let slice = 20_000;
    let load = good_load(3 * slice);
    let (mut acked, mut resends) = (0.0, 0.0);
    let mut crashes = Vec::new();
    for round in load.messages.chunks(slice) {
        // While the process is frozen the broker holds the whole slice unacknowledged, and
        // saves it so.
        ingest.pause();
        let published = publish(rig.mosquitto.port(), round).await;
        rig.mosquitto.save_now().unwrap();
        ingest.resume();
        assert_eq!(published, slice as u64);
        // Every message of the slice acknowledged after the save...
        acked = wait_acks(&ingest, acked + slice as f64, "the slice").await;
        let metrics = ingest.metrics().await;
        let backlog = metric_sum(&metrics, "cityops_ingest_spool_backlog_messages", &[]);
        let stored = rig.count("SELECT count() FROM {db}.events").await;
        // ...then the crash: the broker comes back from the save and sends the slice again.
        rig.mosquitto.kill9();
        rig.mosquitto.start_again();
        acked = wait_acks(&ingest, acked + slice as f64, "the redeliveries").await;
        let now = metric_sum(
            &ingest.metrics().await,
            "cityops_ingest_mqtt_resends_total",
            &[],
        );
        crashes.push((stored, backlog, now - resends));
        resends = now;
    }
    eprintln!(
        "crashes (rows stored, spooled messages not yet stored, resends recognised after): {crashes:?}"
    );
    let want = (load.messages.len() * 2) as f64;
    rig.wait_for_rows(want, Duration::from_secs(180)).await;
    ingest.wait_settled().await;
    rig.assert_rows_equal_source(&load.expected).await;
    for (_, _, recognised) in &crashes {
        assert!(
            *recognised >= slice as f64,
            "every message of the slice came again and was recognised: {crashes:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proof_4_clickhouse_down_for_20_s_loses_nothing_within_the_memory_and_disk_bounds() {
    let mut rig = Rig::with_broker(roomy_broker()).await;
    let load = good_load(40_000);
    // A small spool (256 KiB) fills during the outage: from then on nothing more is
    // acknowledged and the broker keeps the rest.
    let config = rig.config(
        "a",
        "",
        "batch_max_bytes = 262144\nmax_in_flight_bytes = 1048576",
    );
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("segment_bytes = 1048576", "segment_bytes = 65536")
        .replace("max_bytes = 268435456", "max_bytes = 262144");
    std::fs::write(&config, text).unwrap();
    let mut ingest = Ingest::spawn(&config, rig.dir.path(), "a");
    wait_connected(&ingest, 4.0).await;
    let (first, second) = load.messages.split_at(5_000);
    assert_eq!(publish(rig.mosquitto.port(), first).await, 5_000);
    rig.wait_for_rows(10_000.0, Duration::from_secs(60)).await;
    rig.clickhouse.stop();
    let stopped = Instant::now();
    let publisher = publish_in_background(
        rig.mosquitto.port(),
        second.to_vec(),
        10,
        Duration::from_millis(200),
    );
    let (mut rss_peak, mut spool_peak, mut saw_full, mut saw_unready) = (0u64, 0f64, false, false);
    let rss_before = ingest.rss_bytes();
    while stopped.elapsed() < Duration::from_secs(20) {
        let metrics = ingest.metrics().await;
        rss_peak = rss_peak.max(ingest.rss_bytes());
        spool_peak = spool_peak.max(metric_sum(&metrics, "cityops_ingest_spool_bytes", &[]));
        saw_full |= metric_sum(&metrics, "cityops_ingest_spool_full_state", &[]) == 1.0;
        saw_unready |= http_get(ingest.port, "/readyz").await.0 == 503;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    rig.clickhouse.start_again();
    assert_eq!(publisher.await.unwrap(), 35_000);
    let n = rig.wait_for_rows(80_000.0, Duration::from_secs(180)).await;
    eprintln!(
        "RSS {rss_before} -> peak {rss_peak} bytes; spool peak {spool_peak} bytes (bound 262144); spool full seen: {saw_full}"
    );
    assert_eq!(n, 80_000.0, "{}", ingest.log_text());
    assert!(saw_full, "the spool reached its bound");
    assert!(saw_unready, "/readyz said 503 while ClickHouse was down");
    assert!(spool_peak <= 262_144.0, "spool within its bound");
    assert!(rss_peak < 150 * 1024 * 1024, "RSS {rss_peak}");
    ingest.wait_settled().await;
    rig.assert_rows_equal_source(&load.expected).await;
    assert_eq!(http_get(ingest.port, "/readyz").await.0, 200);
    assert_eq!(ingest.terminate(Duration::from_secs(30)), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos0_deliveries_wait_in_bounded_memory_while_the_spool_is_full_and_the_rest_are_counted_dropped()
 {
    let mut rig = Rig::with_broker(roomy_broker()).await;
    let load = good_load(22_000);
    let config = rig.config("a", "", "");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("segment_bytes = 1048576", "segment_bytes = 65536")
        .replace(
            "max_bytes = 268435456",
            "max_bytes = 262144\nheld_qos0_max_bytes = 65536",
        );
    std::fs::write(&config, text).unwrap();
    let mut ingest = Ingest::spawn(&config, rig.dir.path(), "a");
    wait_connected(&ingest, 4.0).await;
    let (first, second) = load.messages.split_at(2_000);
    assert_eq!(publish(rig.mosquitto.port(), first).await, 2_000);
    rig.wait_for_rows(4_000.0, Duration::from_secs(60)).await;
    rig.clickhouse.stop();
    // 20,000 QoS 0 messages of about 170 bytes: far more than the spool (256 KiB) and the
    // memory bound (64 KiB) take while ClickHouse is down.
    let dropped = |m: &str| metric_sum(m, "cityops_ingest_mqtt_qos0_dropped_total", &[]);
    let held = |m: &str| metric_sum(m, "cityops_ingest_mqtt_held_qos0_bytes", &[]);
    let published = std::sync::atomic::AtomicBool::new(false);
    let publishing = async {
        let result = rig.mosquitto.publish_qos0_many(second).await;
        published.store(true, std::sync::atomic::Ordering::SeqCst);
        result
    };
    // The memory held, sampled while the messages come and until the first drops.
    let sampling = async {
        let mut peak = 0f64;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let metrics = ingest.metrics().await;
            peak = peak.max(held(&metrics));
            let done = published.load(std::sync::atomic::Ordering::SeqCst);
            if done && dropped(&metrics) > 0.0 {
                return peak;
            }
            assert!(
                Instant::now() < deadline,
                "published: {done}, dropped: {}, held peak {peak}\n{}",
                dropped(&metrics),
                ingest.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let (result, held_peak) = tokio::join!(publishing, sampling);
    result.unwrap();
    assert!(
        held_peak <= 65_536.0,
        "QoS 0 deliveries held in memory: peak {held_peak} bytes, bound 65536"
    );
    rig.clickhouse.start_again();
    // Stored and dropped together make every message published, exactly.
    let deadline = Instant::now() + Duration::from_secs(180);
    let (stored, dropped_total) = loop {
        let metrics = ingest.metrics().await;
        let stored = rig.count("SELECT count() FROM {db}.events").await / 2.0;
        let gone = dropped(&metrics);
        if stored + gone >= 22_000.0
            && metric_sum(&metrics, "cityops_ingest_spool_full_state", &[]) == 0.0
        {
            break (stored, gone);
        }
        assert!(
            Instant::now() < deadline,
            "messages stored {stored} + dropped {gone} of 22,000 (broker dropped: {})\n{}",
            metric_sum(&metrics, "cityops_ingest_mqtt_broker_dropped_messages", &[]),
            ingest.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!(
        "20,000 QoS 0 messages while ClickHouse was down: {} stored, {dropped_total} dropped; \
         memory held peak {held_peak} bytes",
        stored - 2_000.0
    );
    assert_eq!(stored + dropped_total, 22_000.0);
    assert!(
        dropped_total > 0.0 && stored > 2_000.0,
        "some QoS 0 messages stored, some dropped"
    );
    ingest.wait_settled().await;
    // What was stored is each message's rows exactly, once.
    let kept = rig
        .clickhouse
        .sql(&format!(
            "SELECT DISTINCT entity_id FROM {}.events FORMAT TSV",
            rig.db
        ))
        .await
        .unwrap();
    let expected: BTreeMap<String, Vec<String>> = kept
        .lines()
        .map(|id| (id.to_owned(), load.expected[id].clone()))
        .collect();
    assert_eq!(expected.len() as f64, stored);
    rig.assert_rows_equal_source(&expected).await;
    let log = ingest.log_text();
    assert_eq!(
        log.matches("dropping the oldest").count(),
        1,
        "one warning for the episode:\n{log}"
    );
    assert_eq!(rig.count("SELECT count() FROM {db}.rejects").await, 0.0);
    assert_eq!(ingest.terminate(Duration::from_secs(30)), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proof_5_two_processes_share_a_subscription_and_one_carries_on_when_the_other_dies() {
    let rig = Rig::with_broker(roomy_broker()).await;
    let load = good_load(60_000);
    let shared = "shared_group = \"proof\"\nconnections = 2";
    let mut a = rig.ingest_run("a", "a", shared, "");
    let b = rig.ingest_run("b", "b", shared, "");
    wait_connected(&a, 2.0).await;
    wait_connected(&b, 2.0).await;
    let consumed = |m: &str| metric_sum(m, "cityops_ingest_messages_total", &[]);
    let (first, second) = load.messages.split_at(20_000);
    assert_eq!(publish(rig.mosquitto.port(), first).await, 20_000);
    rig.wait_for_rows(40_000.0, Duration::from_secs(60)).await;
    let (a_first, b_first) = (consumed(&a.metrics().await), consumed(&b.metrics().await));
    eprintln!("first 20,000: a consumed {a_first}, b {b_first}");
    assert!(a_first > 2_000.0 && b_first > 2_000.0, "both take part");
    assert_eq!(a_first + b_first, 20_000.0);
    a.kill9();
    assert_eq!(publish(rig.mosquitto.port(), second).await, 40_000);
    // b's sessions have their share of the new messages (mosquitto keeps giving a's offline
    // sessions theirs).
    let b_after = wait_metric(
        &b,
        "cityops_ingest_messages_total",
        b_first + 10_001.0,
        Duration::from_secs(60),
    )
    .await;
    eprintln!("after a was killed: b consumed {} more", b_after - b_first);
    assert!(b_after - b_first > 10_000.0, "b carries on");
    // What the broker kept for a's sessions arrives when a comes back.
    let a = rig.ingest_run("a", "a-again", shared, "");
    let n = rig.wait_for_rows(120_000.0, Duration::from_secs(120)).await;
    assert_eq!(n, 120_000.0, "{}\n{}", a.log_text(), b.log_text());
    a.wait_settled().await;
    b.wait_settled().await;
    rig.assert_rows_equal_source(&load.expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proof_6_a_silently_dead_subscription_is_detected_and_healed_by_the_watchdog() {
    let rig = Rig::with_broker(roomy_broker()).await;
    let proxy = cityops_testkit::MqttProxy::start(rig.mosquitto.port())
        .await
        .unwrap();
    let config = rig.config("a", "connections = 2", "");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(
            &format!("port = {}", rig.mosquitto.port()),
            &format!("port = {}", proxy.port()),
        )
        .replace(
            "sequence_attr = \"seq\"",
            "sequence_attr = \"seq\"\nstall_timeout_ms = 3000",
        );
    std::fs::write(&config, text).unwrap();
    let ingest = Ingest::spawn(&config, rig.dir.path(), "a");
    wait_connected(&ingest, 2.0).await;
    // A steady trickle: 50 messages a second of the watched feed.
    let load = good_load(3 * 1_500);
    let levels: Vec<(String, Vec<u8>)> = load
        .messages
        .iter()
        .filter(|(t, _)| t.starts_with("proof/levels/"))
        .cloned()
        .collect();
    let expected: BTreeMap<String, Vec<String>> = load
        .expected
        .iter()
        .filter(|(k, _)| k.starts_with("levels-"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let port = rig.mosquitto.port();
    let trickle = tokio::spawn(async move {
        for chunk in levels.chunks(5) {
            publish(port, chunk).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    // The trickle flows into ClickHouse before the connections go silent.
    let before = rig.wait_for_rows(100.0, Duration::from_secs(60)).await;
    assert!(before >= 100.0, "{}", ingest.log_text());
    proxy.silence_open_connections();
    let silenced = Instant::now();
    let connections_before = proxy.connections();
    // Rows stop growing, then grow again once the watchdog reconnected.
    let mut healed = None;
    let mut stalled_at = before;
    while silenced.elapsed() < Duration::from_secs(90) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let n = rig.count("SELECT count() FROM {db}.events").await;
        if proxy.connections() > connections_before && n > stalled_at + 20.0 {
            healed = Some(silenced.elapsed());
            break;
        }
        if proxy.connections() == connections_before {
            stalled_at = n;
        }
    }
    let healed = healed.unwrap_or_else(|| panic!("not healed:\n{}", ingest.log_text()));
    eprintln!(
        "silenced; {} PUBLISH withheld; flowing again {healed:?} later",
        proxy.dropped_publishes()
    );
    // Not before the feed was silent for its timeout (3 s, less the trickle's 100 ms pace):
    // how much later depends on the machine's load, so it is reported, not asserted.
    assert!(
        healed >= Duration::from_millis(2_900),
        "the watchdog waited for the timeout: {healed:?}"
    );
    trickle.await.unwrap();
    let want = (expected.len() * 2) as f64;
    let n = rig.wait_for_rows(want, Duration::from_secs(60)).await;
    assert_eq!(n, want, "{}", ingest.log_text());
    ingest.wait_settled().await;
    rig.assert_rows_equal_source(&expected).await;
    let metrics = ingest.metrics().await;
    assert!(
        metric_sum(
            &metrics,
            "cityops_ingest_mqtt_stalls_total",
            &["feed=\"levels\""]
        ) >= 1.0
    );
    assert!(ingest.log_text().contains("feed silent while connected"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_a_password_file_connect_and_a_wrong_password_is_refused_loudly() {
    let rig = Rig::with_broker(Mosquitto::start_secured()).await;
    let secured = rig.mosquitto.secured().unwrap().clone();
    let config = secured_config(&rig, &secured, "a", "");
    let ingest = Ingest::spawn(&config, rig.dir.path(), "a");
    wait_connected(&ingest, 4.0).await;
    assert!(
        !ingest.log_text().contains(&secured.password),
        "the password is never logged"
    );
    let load = good_load(3_000);
    let mut publisher = secured_publisher(&rig, &secured);
    for (topic, payload) in &load.messages {
        publisher.publish(&in_city(topic), payload).await.unwrap();
    }
    publisher.finish(Duration::from_secs(60)).await.unwrap();
    let n = rig.wait_for_rows(6_000.0, Duration::from_secs(60)).await;
    assert_eq!(n, 6_000.0, "{}", ingest.log_text());
    rig.assert_rows_equal_source(&load.expected).await;
    drop(ingest);

    // A wrong password: refused, retried with backoff, reported; the process stays up.
    std::fs::write(rig.dir.path().join("mqtt-password"), "wrong\n").unwrap();
    let wrong = Ingest::spawn(&config, rig.dir.path(), "wrong");
    // Four refusals on each of the four connections.
    let errors = wait_metric(
        &wrong,
        "cityops_ingest_mqtt_connection_errors_total",
        16.0,
        Duration::from_secs(60),
    )
    .await;
    assert!(errors >= 16.0, "{}", wrong.log_text());
    let metrics = wrong.metrics().await;
    assert_eq!(
        metric_sum(&metrics, "cityops_ingest_mqtt_connections", &[]),
        0.0
    );
    assert_eq!(http_get(wrong.port, "/readyz").await.0, 503);
    // Each connection waits a doubling, jittered delay (half to all of 100 ms, 200 ms, ...,
    // capped at reconnect_max_ms = 2000) between attempts: read from its log lines.
    let log = wrong.log_text();
    let mut delays: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for line in log.lines().filter(|l| l.contains("MQTT connection lost")) {
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .map(str::to_owned)
        };
        if let (Some(connection), Some(ms)) = (field("connection="), field("retry_in_ms=")) {
            delays
                .entry(connection)
                .or_default()
                .push(ms.parse().unwrap());
        }
    }
    assert_eq!(delays.len(), 4, "{log}");
    for (connection, delays) in &delays {
        for (attempt, delay) in delays.iter().enumerate() {
            let step = (100u64 << attempt.min(20)).min(2_000);
            assert!(
                (step / 2..=step).contains(delay),
                "connection {connection}, attempt {attempt}: {delay} ms, not in the backoff's range: {delays:?}"
            );
        }
    }
}

/// The secured broker's topics: the ACL lets the ingest user read `danang/#` only.
fn in_city(topic: &str) -> String {
    topic.replacen("proof/", "danang/", 1)
}

/// The config of ingest `name` for the secured broker: TLS port, CA, the ingest user with its
/// password in a file, feeds under `danang/` (and `feed_topic_edits` applied, `from=to` pairs).
fn secured_config(
    rig: &Rig,
    secured: &cityops_testkit::Secured,
    name: &str,
    mqtt_extra: &str,
) -> PathBuf {
    let password_file = rig.dir.path().join("mqtt-password");
    std::fs::write(&password_file, format!("{}\n", secured.password)).unwrap();
    let tls = format!(
        "username = \"{user}\"\npassword_file = \"{pw}\"\n{mqtt_extra}\n[mqtt.tls]\nca_file = \"{ca}\"",
        user = secured.username,
        pw = password_file.display(),
        ca = secured.ca_file.display(),
    );
    let config = rig.config(name, "", "");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(
            &format!("port = {}", rig.mosquitto.port()),
            &format!("port = {}", secured.tls_port),
        )
        .replace("topic = \"proof/", "topic = \"danang/")
        .replace("\n[mqtt.spool]\n", &format!("\n{tls}\n\n[mqtt.spool]\n"));
    std::fs::write(&config, &text).unwrap();
    config
}

/// A publisher as the city's sensors: its user may write `danang/#` and `other/#`.
fn secured_publisher(rig: &Rig, secured: &cityops_testkit::Secured) -> cityops_mqtt::Publisher {
    cityops_mqtt::Publisher::connect_as(
        "127.0.0.1",
        rig.mosquitto.port(),
        "proof-pub",
        2,
        Some((&secured.publisher_username, &secured.publisher_password)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_the_acl_denies_is_reported_as_a_silent_feed_and_the_rest_flows() {
    let rig = Rig::with_broker(Mosquitto::start_secured()).await;
    let secured = rig.mosquitto.secured().unwrap().clone();
    assert_eq!(cityops_testkit::SECURED_TOPICS, "danang/#");
    let config = secured_config(&rig, &secured, "acl", "");
    // The air feed reads a topic outside what the ACL lets the ingest user read; the broker
    // grants the subscription (mosquitto does, ACLs are applied per message) and delivers
    // nothing. The watchdog is what sees it.
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "topic = \"danang/air/",
        "stall_timeout_ms = 2000\ntopic = \"other/air/",
    );
    assert!(text.contains("other/air/"), "{text}");
    std::fs::write(&config, &text).unwrap();
    let ingest = Ingest::spawn(&config, rig.dir.path(), "acl");
    wait_connected(&ingest, 4.0).await;
    let load = good_load(3_000);
    let mut publisher = secured_publisher(&rig, &secured);
    let mut allowed = 0usize;
    for (topic, payload) in &load.messages {
        let topic = if topic.starts_with("proof/air/") {
            topic.replacen("proof/", "other/", 1)
        } else {
            allowed += 1;
            in_city(topic)
        };
        publisher.publish(&topic, payload).await.unwrap();
    }
    publisher.finish(Duration::from_secs(60)).await.unwrap();
    let want = (allowed * 2) as f64;
    let n = rig.wait_for_rows(want, Duration::from_secs(60)).await;
    assert_eq!(n, want, "{}", ingest.log_text());
    let stalls = wait_metric(
        &ingest,
        "cityops_ingest_mqtt_stalls_total",
        2.0,
        Duration::from_secs(60),
    )
    .await;
    assert!(stalls >= 2.0, "{}", ingest.log_text());
    let metrics = ingest.metrics().await;
    assert_eq!(
        metric_sum(
            &metrics,
            "cityops_ingest_mqtt_stalls_total",
            &["feed=\"air\""]
        ),
        stalls,
        "only the denied feed is silent"
    );
    let log = ingest.log_text();
    assert!(
        log.lines().any(|l| l.contains("WARN")
            && l.contains("feed=\"air\"")
            && l.contains("nothing delivered since the start")
            && l.contains("ACL")),
        "a warning that names the feed and the likely cause: {log}"
    );
    assert!(
        !log.contains(&secured.password),
        "the password is never logged"
    );
    // Retried, not fatal: the process reconnects, stays up and stores the rest.
    assert_eq!(
        rig.wait_for_rows(want, Duration::from_secs(5)).await,
        want,
        "nothing of the denied topic arrived"
    );
    assert_eq!(http_get(ingest.port, "/healthz").await.0, 200);
}

/// Payloads that must each become one reject, with the reason the rejects table records.
fn poison(i: usize) -> (String, Vec<u8>, &'static str) {
    let ts = base_ms();
    let topic = format!("proof/levels/poison-{i:05}");
    match i % 9 {
        0 => (topic, b"{not json".to_vec(), "invalid_json"),
        1 => (topic, b"[1, 2, 3]".to_vec(), "missing_field"),
        2 => (
            topic,
            format!(r#"{{"ts": {ts}, "note": "no value"}}"#).into_bytes(),
            "missing_field",
        ),
        3 => (
            topic,
            format!(r#"{{"ts": {ts}, "v": "high", "note": "x"}}"#).into_bytes(),
            "wrong_type",
        ),
        4 => (topic, Vec::new(), "invalid_json"),
        5 => (
            topic,
            format!(r#"{{"ts": {}, "v": 1, "note": "x"}}"#, ts + 86_400_000).into_bytes(),
            "ts_out_of_range",
        ),
        6 => (
            format!("proof/air/poison-{i:05}"),
            vec![b' '; 5_000],
            "too_large",
        ),
        7 => (
            format!("proof/counts/poison-{i:05}"),
            serde_json::to_vec(&serde_json::json!({
                "items": (0..11).map(|_| serde_json::json!({"ts": ts, "v": 1, "note": "x"})).collect::<Vec<_>>()
            }))
            .unwrap(),
            "too_many_events",
        ),
        _ => (topic, vec![0xff, 0xfe, b'{'], "invalid_utf8"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_go_to_rejects_with_their_reason_and_raw_bytes() {
    let rig = Rig::with_broker(roomy_broker()).await;
    let ingest = rig.ingest("a", "");
    wait_connected(&ingest, 4.0).await;
    let load = good_load(9_900);
    let mut messages = load.messages.clone();
    let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
    let mut raws = Vec::new();
    for i in 0..100 {
        let (topic, payload, reason) = poison(i);
        *reasons.entry(reason).or_default() += 1;
        raws.push(payload.clone());
        messages.insert(i * 99, (topic, payload));
    }
    assert_eq!(publish(rig.mosquitto.port(), &messages).await, 10_000);
    let n = rig.wait_for_rows(19_800.0, Duration::from_secs(60)).await;
    let decoded_poison = rig
        .clickhouse
        .sql(&format!(
            "SELECT entity_id, metric, value, text FROM {}.events WHERE entity_id LIKE 'poison%' LIMIT 5 FORMAT TSV",
            rig.db
        ))
        .await
        .unwrap_or_default();
    assert_eq!(n, 19_800.0, "poison that decoded:\n{decoded_poison}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while rig.count("SELECT count() FROM {db}.rejects").await < 100.0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    rig.assert_rows_equal_source(&load.expected).await;
    let body = rig
        .clickhouse
        .sql(&format!(
            "SELECT reason, count() FROM {}.rejects WHERE source_kind = 'mqtt' GROUP BY reason ORDER BY reason FORMAT TSV",
            rig.db
        ))
        .await
        .unwrap();
    let stored: BTreeMap<String, usize> = body
        .lines()
        .map(|l| {
            let (r, n) = l.split_once('\t').unwrap();
            (r.to_owned(), n.parse().unwrap())
        })
        .collect();
    let want: BTreeMap<String, usize> =
        reasons.iter().map(|(r, n)| ((*r).to_owned(), *n)).collect();
    assert_eq!(stored, want);
    // Every raw payload is kept byte for byte (hex, so that invalid UTF-8 survives the query).
    let body = rig
        .clickhouse
        .sql(&format!(
            "SELECT hex(raw) FROM {}.rejects ORDER BY source_offset FORMAT TSV",
            rig.db
        ))
        .await
        .unwrap();
    let mut stored_raw: Vec<String> = body.lines().map(str::to_owned).collect();
    let mut want_raw: Vec<String> = raws
        .iter()
        .map(|r| r.iter().map(|b| format!("{b:02X}")).collect())
        .collect();
    stored_raw.sort();
    want_raw.sort();
    assert_eq!(stored_raw, want_raw);
    let metrics = ingest.metrics().await;
    assert_eq!(
        metric_sum(
            &metrics,
            "cityops_ingest_rejects_total",
            &["source=\"mqtt\""]
        ),
        100.0
    );
}

/// A payload of the sequenced feed: device `gauge-1`'s number `seq`.
fn numbered(base: i64, seq: i64) -> (String, Vec<u8>) {
    let payload = serde_json::json!({"ts": base + seq, "v": 1, "note": "x", "seq": seq});
    (
        "proof/levels/gauge-1".to_owned(),
        serde_json::to_vec(&payload).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_the_broker_drops_and_missing_sequence_numbers_are_counted_and_logged() {
    // A broker with a tiny queue and an ingest frozen (SIGSTOP, its connection open) during a
    // burst: mosquitto keeps the in-flight window and 50 queued messages and drops the rest,
    // silently; the ingest sees it in $SYS and in the device's sequence numbers.
    let rig = Rig::with_broker(Mosquitto::start_with_config(
        "max_queued_messages 50\nsys_interval 1",
    ))
    .await;
    let config = rig.config("a", "connections = 1", "");
    // The freeze must not look like a dead connection to the broker.
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("keep_alive_s = 5", "keep_alive_s = 60");
    std::fs::write(&config, text).unwrap();
    let ingest = Ingest::spawn(&config, rig.dir.path(), "a");
    wait_connected(&ingest, 1.0).await;
    // The broker's drop counter is read once before the burst, so that its rise is seen.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ingest.log_text().contains("count of dropped messages read") {
        assert!(Instant::now() < deadline, "{}", ingest.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // One device numbering its messages 0, 1, 2, ..., on one connection like a real device.
    let base = base_ms();
    let burst: Vec<(String, Vec<u8>)> = (0..5_000).map(|i| numbered(base, i)).collect();
    ingest.pause();
    let mut publisher =
        cityops_mqtt::Publisher::connect("127.0.0.1", rig.mosquitto.port(), "gauge-1", 1);
    for (topic, payload) in &burst {
        publisher.publish(topic, payload).await.unwrap();
    }
    publisher.finish(Duration::from_secs(60)).await.unwrap();
    ingest.resume();
    // Numbers after the last one that arrived cannot show as gaps: the device goes on
    // numbering after the burst until one of its messages arrives (the broker may still be
    // full at first), and every number up to it is then either stored or missing.
    let highest_stored = || async {
        rig.count(
            "SELECT max(toUInt64OrZero(attr_values[indexOf(attr_keys, 'seq')])) FROM {db}.events",
        )
        .await
    };
    let mut next = 5_000;
    let deadline = Instant::now() + Duration::from_secs(120);
    'trailer: loop {
        let (topic, payload) = numbered(base, next);
        publish(rig.mosquitto.port(), &[(topic, payload)]).await;
        let waited = Instant::now();
        while waited.elapsed() < Duration::from_secs(5) {
            if highest_stored().await >= 5_000.0 {
                break 'trailer;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(Instant::now() < deadline, "{}", ingest.log_text());
        next += 1;
    }
    let stored_and_missing = || async {
        let stored = rig
            .count("SELECT count() FROM {db}.events WHERE metric = 'value'")
            .await;
        let gaps = metric_sum(
            &ingest.metrics().await,
            "cityops_ingest_mqtt_sequence_gaps_total",
            &["feed=\"levels\""],
        );
        (stored, gaps, highest_stored().await)
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut stored, mut gaps, mut highest) = stored_and_missing().await;
    while stored + gaps != highest + 1.0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        (stored, gaps, highest) = stored_and_missing().await;
    }
    let seqs = rig
        .clickhouse
        .sql(&format!(
            "SELECT attr_values[indexOf(attr_keys, 'seq')] AS s, count() FROM {}.events WHERE metric = 'value' GROUP BY s ORDER BY toUInt64OrZero(s) FORMAT TSV",
            rig.db
        ))
        .await
        .unwrap_or_default();
    assert_eq!(
        stored + gaps,
        highest + 1.0,
        "every number up to the last that arrived is stored or counted missing:\n{seqs}"
    );
    eprintln!("stored {stored}; missing by sequence {gaps}; highest number {highest}");
    // The broker kept at most its in-flight window and queue of the 5,000.
    assert!(gaps > 0.0, "{seqs}");
    // $SYS is refreshed every second; it counts every message dropped broker-wide.
    let dropped = wait_metric(
        &ingest,
        "cityops_ingest_mqtt_broker_dropped_messages",
        gaps,
        Duration::from_secs(60),
    )
    .await;
    assert!(dropped >= gaps, "$SYS says {dropped}, sequences {gaps}");
    let log = ingest.log_text();
    assert!(log.contains("the broker dropped messages"), "{log}");
    assert!(log.contains("sequence numbers never arrived"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_load_stores_what_was_spooled_and_the_next_run_stores_nothing_twice() {
    let rig = Rig::with_broker(roomy_broker()).await;
    let load = good_load(30_000);
    let mut ingest = rig.ingest("a", "");
    wait_connected(&ingest, 4.0).await;
    let publisher = publish_in_background(
        rig.mosquitto.port(),
        load.messages.clone(),
        6,
        Duration::from_millis(300),
    );
    rig.wait_for_rows(10_000.0, Duration::from_secs(60)).await;
    assert_eq!(ingest.terminate(Duration::from_secs(30)), Some(0));
    let log = ingest.log_text();
    assert!(log.contains("drained=true"), "{log}");
    let after_stop = rig.count("SELECT count() FROM {db}.events").await;
    let again = rig.ingest_run("a", "a-again", "", "");
    assert_eq!(publisher.await.unwrap(), 30_000);
    let n = rig.wait_for_rows(60_000.0, Duration::from_secs(120)).await;
    eprintln!("rows when the first run stopped: {after_stop}");
    assert_eq!(n, 60_000.0, "{}", again.log_text());
    again.wait_settled().await;
    rig.assert_rows_equal_source(&load.expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_queued_while_the_ingest_was_away_drains_without_a_stall_or_a_duplicate() {
    // Found by `make bench-mqtt`: a large backlog arrives faster than rumqttc takes
    // acknowledgements; none may be dropped (the broker would wait for them forever).
    let rig = Rig::with_broker(roomy_broker()).await;
    let mut ingest = rig.ingest("a", "");
    wait_connected(&ingest, 4.0).await;
    assert_eq!(ingest.terminate(Duration::from_secs(30)), Some(0));
    let load = good_load(80_000);
    assert_eq!(publish(rig.mosquitto.port(), &load.messages).await, 80_000);
    let started = Instant::now();
    let ingest = rig.ingest_run("a", "a-drain", "", "");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut acked = 0.0;
    while Instant::now() < deadline {
        acked = metric_sum(
            &ingest.metrics().await,
            "cityops_ingest_mqtt_acks_total",
            &[],
        );
        if acked >= 80_000.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "80,000 queued messages acknowledged in {:?}",
        started.elapsed()
    );
    assert_eq!(acked, 80_000.0, "{}", ingest.log_text());
    let n = rig.wait_for_rows(160_000.0, Duration::from_secs(120)).await;
    assert_eq!(n, 160_000.0, "{}", ingest.log_text());
    ingest.wait_settled().await;
    rig.assert_rows_equal_source(&load.expected).await;
    let metrics = ingest.metrics().await;
    assert_eq!(
        metric_sum(&metrics, "cityops_ingest_mqtt_connection_errors_total", &[]),
        0.0,
        "{}",
        ingest.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_1_1_sessions_store_every_message_once_across_a_kill_9() {
    let rig = Rig::with_broker(roomy_broker()).await;
    let mut ingest = rig.ingest_run("a", "a", "protocol = \"3.1.1\"", "");
    wait_connected(&ingest, 4.0).await;
    let load = good_load(20_000);
    let (first, second) = load.messages.split_at(10_000);
    assert_eq!(publish(rig.mosquitto.port(), first).await, 10_000);
    rig.wait_for_rows(2_000.0, Duration::from_secs(60)).await;
    ingest.kill9();
    // Published while the ingest is dead: the 3.1.1 sessions (clean_session = false) keep it.
    assert_eq!(publish(rig.mosquitto.port(), second).await, 10_000);
    let ingest = rig.ingest_run("a", "a-again", "protocol = \"3.1.1\"", "");
    let n = rig.wait_for_rows(40_000.0, Duration::from_secs(120)).await;
    assert_eq!(n, 40_000.0, "{}", ingest.log_text());
    ingest.wait_settled().await;
    rig.assert_rows_equal_source(&load.expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_above_the_packet_limit_on_a_3_1_1_session_is_a_reject_not_a_stalled_session() {
    // MQTT 3.1.1 cannot tell the broker a packet limit: a larger message arrives anyway, and a
    // session that failed on it would get it again after every reconnect.
    let rig = Rig::with_broker(roomy_broker()).await;
    let ingest = rig.ingest_run(
        "a",
        "a",
        "protocol = \"3.1.1\"\nmax_packet_bytes = 65536",
        "",
    );
    wait_connected(&ingest, 4.0).await;
    let load = good_load(2_000);
    let mut messages = load.messages.clone();
    messages.insert(
        1_000,
        (
            "proof/air/huge-00001".to_owned(),
            vec![b' '; 2 * 1024 * 1024],
        ),
    );
    assert_eq!(publish(rig.mosquitto.port(), &messages).await, 2_001);
    let n = rig.wait_for_rows(4_000.0, Duration::from_secs(60)).await;
    assert_eq!(n, 4_000.0, "{}", ingest.log_text());
    ingest.wait_settled().await;
    rig.assert_rows_equal_source(&load.expected).await;
    assert_eq!(
        rig.count(
            "SELECT count() FROM {db}.rejects WHERE reason = 'too_large' AND raw_len = 2097152"
        )
        .await,
        1.0
    );
}
