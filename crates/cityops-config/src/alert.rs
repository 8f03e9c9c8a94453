//! The `[alert]` section: how `cityops alert` reads the feeds, where it keeps its state, and
//! whom it notifies.

use crate::problem::Problems;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

/// The alerter service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertConfig {
    /// Rule files (YAML), relative to the config file's folder. All load, or none do.
    #[serde(default)]
    pub rule_files: Vec<PathBuf>,
    /// Where the alerter keeps its state (pending and firing alerts with their clocks), the
    /// history not yet in ClickHouse and the notifications not yet delivered. One per alerter.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Address of the alerter's HTTP endpoint: the API, `/metrics`, `/healthz`, `/readyz`.
    #[serde(default = "default_listen_addr")]
    pub listen_addr: SocketAddr,
    /// The address people reach the alerter at; Alertmanager's `generatorURL` points there.
    #[serde(default = "default_external_url")]
    pub external_url: String,
    /// Kafka consumer group of the alerter: its own, so that it reads every record whatever
    /// the ingest does.
    #[serde(default = "default_kafka_group_id")]
    pub kafka_group_id: String,
    /// Where the alerter's Kafka group starts in a partition it never committed: `latest`
    /// (judge the present; the warm start fills the windows) or `earliest` (read the
    /// partitions' history first: its alerts are notified as if new, so only for a replay).
    #[serde(default = "default_kafka_offset_reset")]
    pub kafka_offset_reset: String,
    /// MQTT client id prefix of the alerter's sessions (the ingest's are its own).
    #[serde(default = "default_mqtt_client_id")]
    pub mqtt_client_id: String,
    /// Shared-subscription group of the alerter's MQTT sessions.
    #[serde(default = "default_mqtt_shared_group")]
    pub mqtt_shared_group: String,
    /// How often processing time advances the rules (`for` of quiet series, absence).
    #[serde(default = "default_tick_ms")]
    pub tick_ms: u64,
    /// How far back the warm start reads recent events from ClickHouse (0: no warm start).
    #[serde(default = "default_warm_start_ms")]
    pub warm_start_ms: u64,
    /// How often the state file is written (transitions are in the outbox at once; a restart
    /// replays those after the last state file).
    #[serde(default = "default_snapshot_interval_ms")]
    pub snapshot_interval_ms: u64,
    /// How often a firing alert is sent to Alertmanager again, so that it does not expire
    /// there (Alertmanager's `resolve_timeout` is 5 minutes by default).
    #[serde(default = "default_resend_interval_ms")]
    pub resend_interval_ms: u64,
    /// Notifications held per receiver while it is failing; past it the oldest are dropped
    /// and counted (the history keeps every transition).
    #[serde(default = "default_queue_max")]
    pub queue_max: usize,
    /// Alertmanager instances; each gets every alert (an HA pair dedupes).
    #[serde(default)]
    pub alertmanagers: Vec<AlertmanagerConfig>,
    /// Generic webhooks, each sent every firing and resolved transition as JSON.
    #[serde(default)]
    pub webhooks: Vec<WebhookConfig>,
}

/// One Alertmanager.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerConfig {
    /// Its base URL, e.g. `http://127.0.0.1:9093` (alerts go to `/api/v2/alerts`).
    pub url: String,
    /// Timeout of one request.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

/// One webhook receiver.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// A short name for metrics and logs (`[a-z0-9_]`).
    pub name: String,
    /// The URL the JSON body is POSTed to.
    pub url: String,
    /// Timeout of one request.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// First delay before a retry; doubles with jitter up to `retry_max_ms`. Retries go on
    /// until the receiver takes the notification (or the queue overflows).
    #[serde(default = "default_retry_initial_ms")]
    pub retry_initial_ms: u64,
    /// Longest delay between retries.
    #[serde(default = "default_retry_max_ms")]
    pub retry_max_ms: u64,
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/cityops/alert")
}
fn default_listen_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9465))
}
fn default_external_url() -> String {
    "http://127.0.0.1:9465".into()
}
fn default_kafka_group_id() -> String {
    "cityops-alert".into()
}
fn default_kafka_offset_reset() -> String {
    "latest".into()
}
fn default_mqtt_client_id() -> String {
    "cityops-alert".into()
}
fn default_mqtt_shared_group() -> String {
    "cityops-alert".into()
}
fn default_tick_ms() -> u64 {
    250
}
fn default_warm_start_ms() -> u64 {
    86_400_000
}
fn default_snapshot_interval_ms() -> u64 {
    5_000
}
fn default_resend_interval_ms() -> u64 {
    60_000
}
fn default_queue_max() -> usize {
    10_000
}
fn default_timeout_ms() -> u64 {
    5_000
}
fn default_retry_initial_ms() -> u64 {
    500
}
fn default_retry_max_ms() -> u64 {
    30_000
}

impl Default for AlertConfig {
    fn default() -> Self {
        AlertConfig {
            rule_files: Vec::new(),
            state_dir: default_state_dir(),
            listen_addr: default_listen_addr(),
            external_url: default_external_url(),
            kafka_group_id: default_kafka_group_id(),
            kafka_offset_reset: default_kafka_offset_reset(),
            mqtt_client_id: default_mqtt_client_id(),
            mqtt_shared_group: default_mqtt_shared_group(),
            tick_ms: default_tick_ms(),
            warm_start_ms: default_warm_start_ms(),
            snapshot_interval_ms: default_snapshot_interval_ms(),
            resend_interval_ms: default_resend_interval_ms(),
            queue_max: default_queue_max(),
            alertmanagers: Vec::new(),
            webhooks: Vec::new(),
        }
    }
}

fn check_url(problems: &mut Problems, path: &str, url: &str) {
    if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() < 10 {
        problems.push(path, format!("{url:?} must be an http:// or https:// URL"));
    }
}

impl AlertConfig {
    pub(crate) fn validate(&self, problems: &mut Problems) {
        if self.tick_ms == 0 || self.tick_ms > 10_000 {
            problems.push("alert.tick_ms", "must be between 1 and 10000");
        }
        if self.snapshot_interval_ms == 0 {
            problems.push("alert.snapshot_interval_ms", "must be at least 1");
        }
        if self.resend_interval_ms < 1_000 {
            problems.push("alert.resend_interval_ms", "must be at least 1000");
        }
        if self.queue_max == 0 {
            problems.push("alert.queue_max", "must be at least 1");
        }
        if self.kafka_group_id.trim().is_empty() {
            problems.push("alert.kafka_group_id", "must not be empty");
        }
        if !matches!(self.kafka_offset_reset.as_str(), "latest" | "earliest") {
            problems.push(
                "alert.kafka_offset_reset",
                format!("{:?} must be latest or earliest", self.kafka_offset_reset),
            );
        }
        if self.mqtt_client_id.trim().is_empty() {
            problems.push("alert.mqtt_client_id", "must not be empty");
        }
        if self.mqtt_shared_group.is_empty() || self.mqtt_shared_group.contains(['/', '+', '#']) {
            problems.push(
                "alert.mqtt_shared_group",
                "must be a non-empty name without /, + or #",
            );
        }
        check_url(problems, "alert.external_url", &self.external_url);
        for (i, am) in self.alertmanagers.iter().enumerate() {
            check_url(problems, &format!("alert.alertmanagers[{i}].url"), &am.url);
            if am.timeout_ms == 0 {
                problems.push(
                    format!("alert.alertmanagers[{i}].timeout_ms"),
                    "must be at least 1",
                );
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, hook) in self.webhooks.iter().enumerate() {
            let path = format!("alert.webhooks[{i}]");
            check_url(problems, &format!("{path}.url"), &hook.url);
            if hook.name.is_empty()
                || !hook
                    .name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            {
                problems.push(
                    format!("{path}.name"),
                    format!("{:?} must be lowercase letters, digits and _", hook.name),
                );
            } else if !names.insert(hook.name.as_str()) {
                problems.push(
                    format!("{path}.name"),
                    format!("{:?} is already the name of another webhook", hook.name),
                );
            }
            if hook.timeout_ms == 0 {
                problems.push(format!("{path}.timeout_ms"), "must be at least 1");
            }
            if hook.retry_initial_ms == 0 || hook.retry_initial_ms > hook.retry_max_ms {
                problems.push(
                    format!("{path}.retry_initial_ms"),
                    "must be at least 1 and at most retry_max_ms",
                );
            }
        }
    }
}
