//! The proofs of `cityops alert`: real mosquitto, Alertmanager and ClickHouse, the real binary
//! killed and restarted, a real HTTP receiver for webhooks. Every test owns its services.

use crate::ingest_support::{Ingest as Service, http_get, metric_sum};
use cityops_testkit::{Alertmanager, ClickHouseServer, Mosquitto};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

const FEEDS: &str = r#"
[[feeds]]
name = "water_level"
source = "mqtt"
topic = "proof/water/{entity_id}"
domain = "water"
[feeds.decoder]
type = "json"
ts = "/ts"
ts_format = "epoch_ms"
attrs = { station = "/station" }
fields = [{ metric = "water_level", pointer = "/level", unit = "m" }]
"#;

/// A flood rule that fires after 3 s above 2.5 m and clears below 2.3 m.
const FLOOD_RULES: &str = r#"
groups:
  - name: flood
    lateness: 500ms
    rules:
      - alert: FloodGaugeHigh
        match: '{feed="water_level", metric="water_level"}'
        by: [entity_id, station]
        threshold: {fire: "> 2.5", clear: "< 2.3"}
        for: 3s
        severity: critical
        labels: {team: flood}
        annotations:
          summary: "Mực nước tại {{ labels.station }} đạt {{ value }} m"
"#;

pub(crate) struct Rig {
    pub(crate) mosquitto: Mosquitto,
    pub(crate) alertmanager: Alertmanager,
    pub(crate) clickhouse: ClickHouseServer,
    pub(crate) dir: tempfile::TempDir,
    /// The ClickHouse database of the alerter (the read-only query user may read only
    /// `cityops`).
    pub(crate) database: String,
}

impl Rig {
    pub(crate) fn start() -> Rig {
        Rig::start_in("proof")
    }

    /// Services, a rule file and a migrated `database`.
    pub(crate) fn start_in(database: &str) -> Rig {
        Rig::start_with(database, "")
    }

    /// As [`Rig::start_in`], with `mosquitto_extra` appended to mosquitto's config.
    pub(crate) fn start_with(database: &str, mosquitto_extra: &str) -> Rig {
        Rig::start_around(database, mosquitto_extra, Alertmanager::start())
    }

    /// As [`Rig::start_with`], around a given Alertmanager.
    pub(crate) fn start_around(
        database: &str,
        mosquitto_extra: &str,
        alertmanager: Alertmanager,
    ) -> Rig {
        let rig = Rig {
            mosquitto: Mosquitto::start_with_config(mosquitto_extra),
            alertmanager,
            clickhouse: ClickHouseServer::start(),
            dir: tempfile::tempdir().unwrap(),
            database: database.to_owned(),
        };
        let config = rig.config("migrate", "");
        let out = crate::cityops(&["migrate", "--config", config.to_str().unwrap(), "--quiet"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        rig
    }

    pub(crate) fn rules_path(&self) -> PathBuf {
        self.dir.path().join("rules.yaml")
    }

    /// Writes the config of alerter `name` with extra `[alert]` keys (webhooks go after).
    pub(crate) fn config(&self, name: &str, alert_extra: &str) -> PathBuf {
        self.config_with(name, alert_extra, "")
    }

    /// As [`Rig::config`], with `extra` sections (more feeds, `[kafka]`) at the end.
    pub(crate) fn config_with(&self, name: &str, alert_extra: &str, extra: &str) -> PathBuf {
        if !self.rules_path().exists() {
            std::fs::write(self.rules_path(), FLOOD_RULES).unwrap();
        }
        let text = format!(
            r#"
[telemetry]
log_level = "info,cityops_alert=debug"

[clickhouse]
url = "{url}"
database = "{database}"

[mqtt]
host = "127.0.0.1"
port = {port}
client_id = "unused-by-the-alerter"
keep_alive_s = 5
reconnect_initial_ms = 100
reconnect_max_ms = 1000
[mqtt.spool]
dir = "{dir}/spool"

[alert]
rule_files = ["rules.yaml"]
state_dir = "{dir}/state-{name}"
external_url = "http://alerter.test:9465"
mqtt_client_id = "proof-alert-{name}"
mqtt_shared_group = "proof-alert-{name}"
tick_ms = 100
snapshot_interval_ms = 1000
resend_interval_ms = 2000
[[alert.alertmanagers]]
url = "{am}"
timeout_ms = 2000
{alert_extra}
{feeds}
{extra}"#,
            url = self.clickhouse.url(),
            port = self.mosquitto.port(),
            dir = self.dir.path().display(),
            am = self.alertmanager.url(),
            feeds = FEEDS,
            database = self.database,
        );
        let path = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        path
    }

    pub(crate) async fn alerter(&self, name: &str, alert_extra: &str) -> Service {
        let config = self.config(name, alert_extra);
        self.spawn_ready(&config, name).await
    }

    pub(crate) async fn spawn_ready(&self, config: &std::path::Path, name: &str) -> Service {
        let service = Service::spawn_subcommand("alert", config, self.dir.path(), name);
        wait_ready(&service).await;
        service
    }

    /// The config of alerter `name` with the state file written only every `ms`.
    fn config_snapshot_every(&self, name: &str, alert_extra: &str, ms: u64) -> PathBuf {
        let path = self.config(name, alert_extra);
        let text = std::fs::read_to_string(&path).unwrap().replace(
            "snapshot_interval_ms = 1000",
            &format!("snapshot_interval_ms = {ms}"),
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    pub(crate) async fn publish(&self, gauge: &str, station: &str, level: f64, ts: i64) {
        let payload = serde_json::json!({"ts": ts, "level": level, "station": station})
            .to_string()
            .into_bytes();
        self.mosquitto
            .publish(&format!("proof/water/{gauge}"), &[payload])
            .await
            .unwrap();
    }

    /// Alertmanager's alerts named `alertname` (active ones).
    pub(crate) async fn am_alerts(&self, alertname: &str) -> Vec<Value> {
        self.alertmanager
            .alerts()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|a| a["labels"]["alertname"] == alertname)
            .collect()
    }
}

/// Waits until `/readyz` answers 200 (every MQTT session subscribed, Kafka assigned).
pub(crate) async fn wait_ready(service: &Service) {
    let what = format!("the alerter ready (log: {})", service.log.display());
    wait_for(&what, Duration::from_secs(60), async || {
        (http_get(service.port, "/readyz").await.0 == 200).then_some(())
    })
    .await;
}

/// Publishes `level` of the gauge wl-cam-le-03 every 200 ms until `done` says so or the
/// deadline passes; returns what `done` returned.
pub(crate) async fn publish_until<T>(
    rig: &Rig,
    level: f64,
    what: &str,
    done: impl AsyncFnMut() -> Option<T>,
) -> T {
    publish_gauge_until(rig, "wl-cam-le-03", level, what, done).await
}

/// As [`publish_until`], for `gauge`.
pub(crate) async fn publish_gauge_until<T>(
    rig: &Rig,
    gauge: &str,
    level: f64,
    what: &str,
    mut done: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        rig.publish(gauge, "Cầu Rồng", level, now_ms()).await;
        if let Some(found) = done().await {
            return found;
        }
        assert!(Instant::now() < deadline, "{what}: not seen after 60 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proof_1_a_flood_series_over_mqtt_raises_an_alert_in_alertmanager_and_falling_below_the_clear_bound_resolves_it()
 {
    let rig = Rig::start();
    let alerter = rig.alerter("a", "").await;
    let started = Instant::now();
    let alert = publish_until(&rig, 2.6, "the alert in Alertmanager", async || {
        rig.am_alerts("FloodGaugeHigh").await.into_iter().next()
    })
    .await;
    let latency = started.elapsed();
    eprintln!(
        "proof 1: first reading above 2.5 m to the alert in Alertmanager: {latency:?} (for: 3 s)"
    );
    assert!(
        latency >= Duration::from_secs(3),
        "fired before `for` elapsed: {latency:?}"
    );
    assert_eq!(alert["labels"]["entity_id"], "wl-cam-le-03");
    assert_eq!(alert["labels"]["station"], "Cầu Rồng");
    assert_eq!(alert["labels"]["severity"], "critical");
    assert_eq!(alert["labels"]["team"], "flood");
    assert_eq!(
        alert["annotations"]["summary"],
        "Mực nước tại Cầu Rồng đạt 2.6 m"
    );
    assert!(
        alert["generatorURL"]
            .as_str()
            .unwrap()
            .starts_with("http://alerter.test:9465/api/v1/alerts?fingerprint="),
        "{alert}"
    );
    // amtool, as on-call staff query it.
    let amtool = std::process::Command::new("amtool")
        .args([
            "alert",
            "query",
            "--alertmanager.url",
            &rig.alertmanager.url(),
            "alertname=FloodGaugeHigh",
            "-o",
            "extended",
        ])
        .output()
        .expect("amtool runs (apt install prometheus-alertmanager: make deps)");
    let listed = String::from_utf8_lossy(&amtool.stdout);
    assert!(
        listed.contains("FloodGaugeHigh") && listed.contains("Mực nước tại Cầu Rồng đạt 2.6 m"),
        "amtool: {listed}"
    );
    // The API shows it firing.
    let (_, body) = http_get(
        alerter.port,
        "/api/v1/alerts?state=firing&station=C%E1%BA%A7u%20R%E1%BB%93ng",
    )
    .await;
    let api: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        api["data"]["alerts"].as_array().map(Vec::len),
        Some(1),
        "{body}"
    );

    // Falling below the clear bound resolves it there.
    let started = Instant::now();
    publish_until(&rig, 2.2, "the resolve in Alertmanager", async || {
        rig.am_alerts("FloodGaugeHigh")
            .await
            .is_empty()
            .then_some(())
    })
    .await;
    eprintln!(
        "proof 1: first reading below 2.3 m to the alert gone from Alertmanager: {:?}",
        started.elapsed()
    );
    let m = alerter.metrics().await;
    assert!(
        metric_sum(
            &m,
            "cityops_alert_notifications_sent_total",
            &["alertmanager:0"]
        ) >= 2.0,
        "{m}"
    );
    let mut alerter = alerter;
    assert_eq!(
        alerter.terminate(Duration::from_secs(30)),
        Some(0),
        "SIGTERM stops it cleanly:\n{}",
        alerter.log_text()
    );
    assert!(
        !alerter.log_text().contains("still held"),
        "the MQTT sessions did not close cleanly:\n{}",
        alerter.log_text()
    );
}

/// A webhook receiver: an HTTP server on 127.0.0.1 that answers 500 until `fail_until`, then
/// 200, keeping every body it took.
pub(crate) struct Receiver {
    pub(crate) port: u16,
    taken: Arc<Mutex<Vec<Value>>>,
    refused: Arc<Mutex<usize>>,
}

impl Receiver {
    pub(crate) async fn start(fail_until: Instant) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let taken = Arc::new(Mutex::new(Vec::new()));
        let refused = Arc::new(Mutex::new(0));
        let (t, r) = (Arc::clone(&taken), Arc::clone(&refused));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (t, r) = (Arc::clone(&t), Arc::clone(&r));
                tokio::spawn(serve_connection(stream, fail_until, t, r));
            }
        });
        Receiver {
            port,
            taken,
            refused,
        }
    }

    pub(crate) fn taken(&self) -> Vec<Value> {
        self.taken.lock().unwrap().clone()
    }
}

/// Serves HTTP/1.1 requests on one connection (keep-alive) until the peer closes it.
async fn serve_connection(
    mut stream: tokio::net::TcpStream,
    fail_until: Instant,
    taken: Arc<Mutex<Vec<Value>>>,
    refused: Arc<Mutex<usize>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buffer = Vec::new();
    loop {
        let head_end = loop {
            if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).to_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buffer.len() < head_end + length {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        }
        let body: Vec<u8> = buffer[head_end..head_end + length].to_vec();
        buffer.drain(..head_end + length);
        let status = if Instant::now() < fail_until {
            *refused.lock().unwrap() += 1;
            "500 Internal Server Error"
        } else {
            taken
                .lock()
                .unwrap()
                .push(serde_json::from_slice(&body).unwrap_or(Value::Null));
            "200 OK"
        };
        let response = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
        if stream.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

pub(crate) fn webhook(port: u16) -> String {
    format!(
        "[[alert.webhooks]]\nname = \"ops\"\nurl = \"http://127.0.0.1:{port}/hook\"\nretry_initial_ms = 200\nretry_max_ms = 2000\n"
    )
}

pub(crate) async fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not seen after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) fn ms_of(rfc3339: &str) -> i64 {
    cityops_event::Timestamp::parse_rfc3339(rfc3339)
        .unwrap()
        .as_millis()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proof_3_an_alerter_killed_with_9_while_an_alert_is_pending_fires_it_at_the_original_time_once()
 {
    let rig = Rig::start();
    let receiver = Receiver::start(Instant::now()).await;
    // The state file is written only every 10 minutes: the pending transition is in the outbox
    // alone when the alerter is killed, and comes back from there.
    let config = rig.config_snapshot_every("a", &webhook(receiver.port), 600_000);
    let mut alerter = rig.spawn_ready(&config, "a").await;
    // Readings above 2.5 m until the alert is pending; then none: the condition holds on.
    let pending = publish_until(&rig, 2.6, "the pending alert", async || {
        let (_, body) = http_get(alerter.port, "/api/v1/alerts?state=pending").await;
        let api: Value = serde_json::from_str(&body).ok()?;
        api["data"]["alerts"].as_array()?.first().cloned()
    })
    .await;
    alerter.kill9();
    let active_at = ms_of(pending["activeAt"].as_str().unwrap());
    let restarted = rig.spawn_ready(&config, "a-again").await;
    assert!(
        restarted.log_text().contains("replayed=1"),
        "the pending transition comes back from the outbox:\n{}",
        restarted.log_text()
    );
    let alert = wait_for(
        "the alert in Alertmanager after the restart",
        Duration::from_secs(60),
        async || rig.am_alerts("FloodGaugeHigh").await.into_iter().next(),
    )
    .await;
    let starts_at = ms_of(alert["startsAt"].as_str().unwrap());
    eprintln!("proof 3: pending since {active_at}, fired at {starts_at} (for: 3000 ms)");
    assert_eq!(
        starts_at,
        active_at + 3_000,
        "the alert fires at its original time: pending since + for"
    );
    // Once: the webhook got one firing notification, and the history has one firing row.
    let firing = wait_for("the firing webhook", Duration::from_secs(60), async || {
        let taken = receiver.taken();
        taken
            .iter()
            .any(|b| b["status"] == "firing")
            .then_some(taken)
    })
    .await;
    let rows = wait_for(
        "the firing row in alert_events",
        Duration::from_secs(60),
        async || {
            let n = rig
                .clickhouse
                .scalar("SELECT count() FROM proof.alert_events WHERE state = 'firing'")
                .await
                .ok()?;
            (n >= 1.0).then_some(n)
        },
    )
    .await;
    let m = restarted.metrics().await;
    assert!(
        metric_sum(
            &m,
            "cityops_alert_notifications_sent_total",
            &["alertmanager:0"]
        ) >= 1.0,
        "{m}"
    );
    assert_eq!(
        firing.iter().filter(|b| b["status"] == "firing").count(),
        1,
        "{firing:?}"
    );
    assert_eq!(rows, 1.0, "firing rows in alert_events");
    let pendings = rig
        .clickhouse
        .scalar("SELECT count() FROM proof.alert_events WHERE state = 'pending'")
        .await
        .unwrap();
    assert_eq!(pendings, 1.0, "pending rows in alert_events");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proof_4_a_rule_file_with_an_error_is_refused_whole_and_the_old_rules_still_fire() {
    let rig = Rig::start();
    let alerter = rig.alerter("a", "").await;
    std::fs::write(
        rig.rules_path(),
        FLOOD_RULES
            .replace("for: 3s", "for: 3 seconds")
            .replace("fire: \"> 2.5\"", "fire: \"> two\""),
    )
    .unwrap();
    let answer = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}/-/reload", alerter.port))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 400);
    let body: Value = answer.json().await.unwrap();
    let errors: Vec<String> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_owned())
        .collect();
    let file = rig.rules_path().display().to_string();
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with(&format!("{file}:9:")) && e.contains("\"> two\"")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with(&format!("{file}:10:")) && e.contains("3 seconds")),
        "{errors:?}"
    );
    let m = alerter.metrics().await;
    assert_eq!(
        metric_sum(&m, "cityops_alert_reload_success_state", &[]),
        0.0,
        "{m}"
    );
    // The file change is noticed too, and refused the same way (logged with file and line).
    wait_for(
        "the refused reload in the log",
        Duration::from_secs(30),
        async || {
            alerter
                .log_text()
                .contains("rule reload refused")
                .then_some(())
        },
    )
    .await;
    // The old rules keep running.
    let alert = publish_until(&rig, 2.6, "the alert of the old rules", async || {
        rig.am_alerts("FloodGaugeHigh").await.into_iter().next()
    })
    .await;
    assert_eq!(
        alert["annotations"]["summary"],
        "Mực nước tại Cầu Rồng đạt 2.6 m"
    );
    let (_, rules) = http_get(alerter.port, "/api/v1/rules").await;
    let rules: Value = serde_json::from_str(&rules).unwrap();
    assert_eq!(rules["data"]["rules"][0]["name"], "FloodGaugeHigh");
    assert!(
        rules["data"]["rules"][0]["evaluated"].as_u64().unwrap() > 0,
        "{rules}"
    );
    // Fixed and signalled (SIGHUP): the reload succeeds and the metric says so.
    std::fs::write(rig.rules_path(), FLOOD_RULES.replace("for: 3s", "for: 4s")).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(alerter.child.id() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    wait_for("a successful reload", Duration::from_secs(30), async || {
        (metric_sum(
            &alerter.metrics().await,
            "cityops_alert_reload_success_state",
            &[],
        ) == 1.0)
            .then_some(())
    })
    .await;
    // The metrics pass Prometheus' own lint.
    let scrape = alerter.metrics().await;
    let mut lint = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool runs (make deps)");
    std::io::Write::write_all(lint.stdin.as_mut().unwrap(), scrape.as_bytes()).unwrap();
    let linted = lint.wait_with_output().unwrap();
    let complaints = String::from_utf8_lossy(&linted.stdout).to_string()
        + &String::from_utf8_lossy(&linted.stderr);
    assert!(
        linted.status.success(),
        "promtool check metrics: {complaints}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proof_6_a_webhook_that_fails_for_30_s_gets_every_notification_after_it_recovers_none_doubled()
 {
    let rig = Rig::start();
    let fail_until = Instant::now() + Duration::from_secs(30);
    let receiver = Receiver::start(fail_until).await;
    let alerter = rig.alerter("a", &webhook(receiver.port)).await;
    publish_until(&rig, 2.6, "the alert", async || {
        rig.am_alerts("FloodGaugeHigh").await.into_iter().next()
    })
    .await;
    publish_until(&rig, 2.2, "the resolve", async || {
        rig.am_alerts("FloodGaugeHigh")
            .await
            .is_empty()
            .then_some(())
    })
    .await;
    assert!(
        Instant::now() < fail_until,
        "the alert fired and resolved after the receiver recovered: the test proves nothing"
    );
    let taken = wait_for(
        "both notifications at the receiver",
        Duration::from_secs(90),
        async || {
            let taken = receiver.taken();
            (taken.len() >= 2).then_some(taken)
        },
    )
    .await;
    // Settled: the sender has nothing more for it.
    wait_for(
        "the webhook sender settled",
        Duration::from_secs(30),
        async || {
            let m = alerter.metrics().await;
            (metric_sum(
                &m,
                "cityops_alert_notifications_sent_total",
                &["webhook:ops"],
            ) == 2.0)
                .then_some(())
        },
    )
    .await;
    let taken = if receiver.taken().len() > taken.len() {
        receiver.taken()
    } else {
        taken
    };
    let statuses: Vec<&str> = taken
        .iter()
        .map(|b| b["status"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(statuses, ["firing", "resolved"], "{taken:?}");
    assert_ne!(taken[0]["id"], taken[1]["id"]);
    assert_eq!(
        taken[0]["annotations"]["summary"],
        "Mực nước tại Cầu Rồng đạt 2.6 m"
    );
    let refused = *receiver.refused.lock().unwrap();
    let m = alerter.metrics().await;
    eprintln!(
        "proof 6: {refused} deliveries refused while the receiver failed; then {} taken",
        taken.len()
    );
    assert!(
        refused >= 2
            && metric_sum(
                &m,
                "cityops_alert_notifications_failed_total",
                &["webhook:ops"]
            ) >= 2.0,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proof_2_alerts_flow_while_clickhouse_is_down_and_the_history_arrives_once_it_is_back_none_missing()
 {
    let mut rig = Rig::start();
    let mut alerter = rig.alerter("a", "").await;
    rig.clickhouse.stop();
    publish_until(&rig, 2.6, "the alert with ClickHouse down", async || {
        rig.am_alerts("FloodGaugeHigh").await.into_iter().next()
    })
    .await;
    // A crash while ClickHouse is away loses none of the history: it waits on local disk.
    alerter.kill9();
    let alerter =
        Service::spawn_subcommand("alert", &rig.config("a", ""), rig.dir.path(), "a-again");
    wait_ready(&alerter).await;
    publish_until(&rig, 2.2, "the resolve with ClickHouse down", async || {
        rig.am_alerts("FloodGaugeHigh")
            .await
            .is_empty()
            .then_some(())
    })
    .await;
    let backlog = wait_for(
        "three transitions waiting for ClickHouse",
        Duration::from_secs(30),
        async || {
            let n = metric_sum(
                &alerter.metrics().await,
                "cityops_alert_history_backlog_events",
                &[],
            );
            (n >= 3.0).then_some(n)
        },
    )
    .await;
    rig.clickhouse.start_again();
    let rows = wait_for(
        "the history in alert_events",
        Duration::from_secs(90),
        async || {
            let n = rig
                .clickhouse
                .scalar("SELECT count() FROM proof.alert_events")
                .await
                .ok()?;
            (n >= 3.0).then_some(n)
        },
    )
    .await;
    wait_for("the outbox emptied", Duration::from_secs(30), async || {
        (metric_sum(
            &alerter.metrics().await,
            "cityops_alert_history_backlog_events",
            &[],
        ) == 0.0)
            .then_some(())
    })
    .await;
    let states = rig.clickhouse.sql("SELECT groupArray(state) FROM (SELECT state FROM proof.alert_events ORDER BY ts, ts_ms) FORMAT TSV").await.unwrap();
    let distinct = rig
        .clickhouse
        .scalar("SELECT uniqExact(alert_event_id) FROM proof.alert_events")
        .await
        .unwrap();
    eprintln!(
        "proof 2: {backlog} transitions held while ClickHouse was down; then {rows} rows: {}",
        states.trim()
    );
    assert_eq!(rows, 3.0);
    assert_eq!(distinct, 3.0);
    assert_eq!(states.trim(), "['pending','firing','resolved']");
    let summary = rig
        .clickhouse
        .sql("SELECT summary FROM proof.alert_events WHERE state = 'firing' FORMAT TSV")
        .await
        .unwrap();
    assert_eq!(summary.trim(), "Mực nước tại Cầu Rồng đạt 2.6 m");
}

const REPORT_FEED: &str = r#"
[[feeds]]
name = "citizen_reports"
source = "kafka"
topic = "proof.citizen.reports"
domain = "citizen_report"
entity_type = "CitizenReport"
[feeds.decoder]
type = "json"
entity_id = "/report_id"
district = "/district"
ward = "/ward"
ts = "/ts"
ts_format = "epoch_ms"
attrs = { category = "/category" }
fields = [{ metric = "status", pointer = "/status", type = "string" }]
"#;

const SPIKE_RULE: &str = r#"
      - alert: FloodReportsSpike
        match: '{feed="citizen_reports", metric="status", category="ngap_ung"}'
        by: [district, ward]
        window: {aggregate: count_distinct, over: 30m, fire: ">= 5", clear: "< 2"}
        severity: critical
        annotations:
          summary: "{{ value | int }} phản ánh ngập úng tại phường {{ labels.ward }}, {{ labels.district }} trong 30 phút"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proof_5_a_spike_of_citizen_flood_reports_over_kafka_raises_the_ward_alert() {
    let rig = Rig::start();
    let kafka = cityops_testkit::KafkaBroker::start();
    kafka.create_topic("proof.citizen.reports", 2).unwrap();
    std::fs::write(rig.rules_path(), format!("{FLOOD_RULES}{SPIKE_RULE}")).unwrap();
    let extra = format!(
        "{REPORT_FEED}\n[kafka]\nbootstrap_servers = \"{}\"\nsession_timeout_ms = 6000\n",
        kafka.bootstrap()
    );
    let config = rig.config_with("a", "", &extra);
    let alerter = Service::spawn_subcommand("alert", &config, rig.dir.path(), "a");
    wait_ready(&alerter).await;
    let producer = kafka.producer().unwrap();
    let report = |id: String, ward: &str, category: &str| {
        serde_json::json!({"report_id": id, "district": "Cẩm Lệ", "ward": ward, "category": category, "status": "received", "ts": now_ms()}).to_string()
    };
    // Two waste reports and two flood reports in another ward: neither makes the alert.
    for (i, (ward, category)) in [
        ("Hòa Thọ Đông", "moi_truong"),
        ("Hòa Thọ Đông", "moi_truong"),
        ("Khuê Trung", "ngap_ung"),
        ("Khuê Trung", "ngap_ung"),
    ]
    .iter()
    .enumerate()
    {
        kafka
            .produce(
                &producer,
                "proof.citizen.reports",
                b"k",
                report(format!("PA-other-{i}"), ward, category).as_bytes(),
            )
            .await
            .unwrap();
    }
    // A new flood report from Hòa Thọ Đông every 200 ms until the ward's alert is in Alertmanager.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut sent = 0;
    let alert = loop {
        kafka
            .produce(
                &producer,
                "proof.citizen.reports",
                format!("r{sent}").as_bytes(),
                report(format!("PA-{sent}"), "Hòa Thọ Đông", "ngap_ung").as_bytes(),
            )
            .await
            .unwrap();
        sent += 1;
        if let Some(a) = rig.am_alerts("FloodReportsSpike").await.into_iter().next() {
            break a;
        }
        assert!(
            Instant::now() < deadline,
            "no ward alert after {sent} reports:\n{}",
            alerter.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!("proof 5: the ward alert after {sent} flood reports were produced");
    assert!(sent >= 5, "fired after {sent} reports");
    assert_eq!(alert["labels"]["ward"], "Hòa Thọ Đông");
    assert_eq!(alert["labels"]["district"], "Cẩm Lệ");
    let summary = alert["annotations"]["summary"].as_str().unwrap();
    assert!(
        summary.ends_with("phản ánh ngập úng tại phường Hòa Thọ Đông, Cẩm Lệ trong 30 phút"),
        "{summary}"
    );
    assert_eq!(
        rig.am_alerts("FloodReportsSpike").await.len(),
        1,
        "only the ward with five or more flood reports"
    );
}

const AVERAGE_RULE: &str = r#"
      - alert: WaterAverageHigh
        match: '{feed="water_level", metric="water_level"}'
        window: {aggregate: avg, over: 30m, fire: "> 2.5", min_samples: 10}
        annotations:
          summary: "{{ labels.entity_id }}: {{ value | round(2) }} m on average"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_start_fills_the_windows_from_clickhouse_and_a_cold_start_says_so() {
    let mut rig = Rig::start();
    std::fs::write(rig.rules_path(), format!("{FLOOD_RULES}{AVERAGE_RULE}")).unwrap();
    // Twenty minutes of readings at 2.8 m, stored by an ingest before the alerter starts.
    let now_s = now_ms() / 1000;
    let values: Vec<String> = (1..=20)
        .map(|m| {
            let t = now_s - 60 * m;
            format!("(toDateTime({t}), 0, toDateTime({t}), 'water_level', 'water', 'wl-warm', 'water_level', 2.8, 'good')")
        })
        .collect();
    rig.clickhouse
        .sql(&format!("INSERT INTO proof.events (ts, ts_ms, ingested_at, feed, domain, entity_id, metric, value, quality) VALUES {}", values.join(", ")))
        .await
        .unwrap();
    let alerter = rig.alerter("a", "").await;
    let m = alerter.metrics().await;
    assert_eq!(
        metric_sum(&m, "cityops_alert_warm_start_state", &[]),
        1.0,
        "{m}\n{}",
        alerter.log_text()
    );
    // One live reading: with the stored twenty, the 30-minute mean has its ten samples at once.
    rig.publish("wl-warm", "Cầu Rồng", 2.8, now_ms()).await;
    let alert = wait_for(
        "the average alert after one live reading",
        Duration::from_secs(30),
        async || rig.am_alerts("WaterAverageHigh").await.into_iter().next(),
    )
    .await;
    assert_eq!(alert["annotations"]["summary"], "wl-warm: 2.8 m on average");
    assert!(
        alerter
            .log_text()
            .contains("warm start: windows filled from ClickHouse"),
        "{}",
        alerter.log_text()
    );

    // ClickHouse away: the alerter starts all the same, cold, and says so.
    rig.clickhouse.stop();
    let cold = rig.alerter("b", "").await;
    let m = cold.metrics().await;
    assert_eq!(
        metric_sum(&m, "cityops_alert_warm_start_state", &[]),
        0.0,
        "{m}"
    );
    assert!(
        cold.log_text().contains("cold start"),
        "{}",
        cold.log_text()
    );
}

/// The alerter watches its consumer group as the ingest does: a group that gives it no
/// partitions (two members that sort before it hold both) is a warning, a gauge and
/// `/readyz` not ready, and it is ready again once the group gives it partitions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_that_gives_the_alerter_no_partitions_is_a_warning_a_metric_and_not_ready_until_it_does()
 {
    let rig = Rig::start();
    // The durable broker: members come and go, which can wedge the in-memory one's group.
    let kafka = cityops_testkit::KafkaBroker::start_durable();
    kafka.create_topic("proof.citizen.reports", 2).unwrap();
    let extra = |client_id: &str| {
        let settings = if client_id.is_empty() {
            String::new()
        } else {
            format!("settings = {{ \"client.id\" = \"{client_id}\" }}\n")
        };
        format!(
            "{REPORT_FEED}\n[kafka]\nbootstrap_servers = \"{}\"\nsession_timeout_ms = 6000\nassignment_timeout_ms = 3000\n{settings}",
            kafka.bootstrap()
        )
    };
    let assigned = |m: &str| metric_sum(m, "cityops_alert_kafka_assigned_partitions", &[]);
    let stalled = |m: &str| metric_sum(m, "cityops_alert_kafka_assignment_stalled_state", &[]);
    // Member ids begin with the client id (the alerter's own is librdkafka's "rdkafka"): the
    // assignor (roundrobin) gives the two holders one partition each and the alerter none.
    let mut holders = Vec::new();
    for name in ["0-holder-a", "0-holder-b"] {
        let config = rig.config_with(name, "", &extra(name));
        holders.push(rig.spawn_ready(&config, name).await);
    }
    wait_for(
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

    let config = rig.config_with("starved", "", &extra(""));
    let alerter = Service::spawn_subcommand("alert", &config, rig.dir.path(), "starved");
    let started = Instant::now();
    wait_for(
        "the starved alerter reported: stalled, no partitions, not ready, the holders with one each",
        Duration::from_secs(60),
        async || {
            let m = alerter.metrics().await;
            let mut counts = Vec::new();
            for holder in &holders {
                counts.push(assigned(&holder.metrics().await));
            }
            let starved = stalled(&m) == 1.0 && assigned(&m) == 0.0;
            (starved && counts == [1.0, 1.0] && http_get(alerter.port, "/readyz").await.0 == 503)
                .then_some(())
        },
    )
    .await;
    eprintln!(
        "the alerter given no partitions: reported after {:?} (assignment_timeout_ms 3000)",
        started.elapsed()
    );
    assert!(
        alerter
            .log_text()
            .contains("the consumer group gives this process no partitions"),
        "{}",
        alerter.log_text()
    );

    // The holders leave, one at a time: the group gives the alerter one partition, then both,
    // and it is ready. One at a time because the durable test broker (nisshi 0.7) wedges the
    // group when a member leaves while it is the leader of a rebalance still in progress: it
    // answers every later JoinGroup with the departed leader (seen under load when both left
    // back to back). A Kafka coordinator drops a member that leaves; the alerter reports the
    // wedge (stalled, not ready) either way.
    let mut holders = holders.into_iter();
    let mut first = holders.next().unwrap();
    let second = holders.next().unwrap();
    assert_eq!(first.terminate(Duration::from_secs(30)), Some(0));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seen = (
            assigned(&alerter.metrics().await),
            assigned(&second.metrics().await),
        );
        if seen == (1.0, 1.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "one holder left: the alerter and the other holder with a partition each; not after \
             60 s, seen (alerter, holder) {seen:?}\n{}",
            alerter.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut second = second;
    assert_eq!(second.terminate(Duration::from_secs(30)), Some(0));
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let m = alerter.metrics().await;
        let seen = (
            assigned(&m),
            stalled(&m),
            http_get(alerter.port, "/readyz").await,
        );
        if seen.0 == 2.0 && seen.1 == 0.0 && seen.2.0 == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the alerter with both partitions, not stalled, ready: not after 90 s; \
             seen (assigned, stalled, /readyz) {seen:?}\n{}",
            alerter.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        alerter
            .log_text()
            .contains("the consumer group gives this process its partitions again"),
        "{}",
        alerter.log_text()
    );
}
