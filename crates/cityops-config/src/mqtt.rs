//! The `[mqtt]` section: the broker `cityops ingest` subscribes to, its sessions, and the
//! local spool that makes a message durable before it is acknowledged.

use crate::problem::Problems;
use crate::secret::Secret;
use serde::Deserialize;
use std::path::PathBuf;

/// MQTT protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum MqttProtocol {
    /// MQTT 5: session expiry and receive maximum are negotiated.
    #[default]
    #[serde(rename = "5")]
    V5,
    /// MQTT 3.1.1, for brokers and bridges without MQTT 5.
    #[serde(rename = "3.1.1")]
    V311,
}

/// The broker, the ingest's sessions on it, and the spool.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// Broker host name or address.
    #[serde(default = "default_host")]
    pub host: String,
    /// Broker port (1883 plain, 8883 usual for TLS).
    #[serde(default = "default_port")]
    pub port: u16,
    /// `"5"` or `"3.1.1"`.
    #[serde(default)]
    pub protocol: MqttProtocol,
    /// Client id prefix; connection `n` uses `<client_id>-<n>`. Every ingest process needs its
    /// own (its sessions and its spool belong to it).
    #[serde(default = "default_client_id")]
    pub client_id: String,
    /// Sessions this process opens. Each has its own in-flight window at the broker
    /// (mosquitto: 20 messages), so several connections multiply what can be unacknowledged
    /// while the spool syncs. With more than one, the subscriptions are shared
    /// (`$share/<shared_group>/<filter>`) so that each message reaches one connection.
    #[serde(default = "default_connections")]
    pub connections: u16,
    /// Shared subscription group: several processes with the same group split each feed
    /// (`$share/<group>/<filter>`). Defaults to `client_id` when `connections` > 1, so that one
    /// process's connections split the load; set it to scale out over processes.
    #[serde(default)]
    pub shared_group: Option<String>,
    /// How long the broker keeps a session (its subscriptions and queued messages) after a
    /// disconnect: MQTT 5 session expiry. 3.1.1 sessions are kept until the broker expires
    /// them (mosquitto: `persistent_client_expiration`).
    #[serde(default = "default_session_expiry_s")]
    pub session_expiry_s: u32,
    /// Keep-alive: a silent connection is declared dead after 1.5 times this.
    #[serde(default = "default_keep_alive_s")]
    pub keep_alive_s: u16,
    /// MQTT 5 Receive Maximum sent in CONNECT: how many unacknowledged QoS 1 messages the
    /// broker may send this connection. Brokers also apply their own limit. Keep it below the
    /// spool's resend window (`segment_bytes / (80 * connections)`, at most 16,384).
    #[serde(default = "default_receive_maximum")]
    pub receive_maximum: u16,
    /// Largest packet accepted.
    #[serde(default = "default_max_packet_bytes")]
    pub max_packet_bytes: u32,
    /// Time to wait for a CONNACK.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// First delay before reconnecting after a lost connection; doubles per failure, with
    /// jitter, up to `reconnect_max_ms`.
    #[serde(default = "default_reconnect_initial_ms")]
    pub reconnect_initial_ms: u64,
    /// Longest delay between reconnect attempts.
    #[serde(default = "default_reconnect_max_ms")]
    pub reconnect_max_ms: u64,
    /// Store messages the broker delivers as retained (the last value it kept for a topic,
    /// sent again on every subscribe). Off: they were stored when first published live, and
    /// storing them on every reconnect would duplicate rows.
    #[serde(default)]
    pub store_retained: bool,
    /// Subscribe to the broker's `$SYS/broker/...` counters (mosquitto publishes them every
    /// `sys_interval`) to see messages the broker dropped.
    #[serde(default = "default_true")]
    pub broker_sys_topics: bool,
    /// User name, if the broker requires one.
    #[serde(default)]
    pub username: Option<String>,
    /// Password. Prefer `password_file` or `"${MQTT_PASSWORD}"`; never logged.
    #[serde(default)]
    pub password: Option<Secret>,
    /// File whose content (without a trailing newline) is the password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// TLS; absent means plain TCP.
    #[serde(default)]
    pub tls: Option<MqttTlsConfig>,
    /// The local spool: what the broker delivered, made durable before the PUBACK.
    #[serde(default)]
    pub spool: SpoolConfig,
}

/// TLS towards the broker.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttTlsConfig {
    /// PEM file of the CA(s) that signed the broker's certificate.
    pub ca_file: PathBuf,
    /// PEM client certificate, for brokers that require one (with `client_key_file`).
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key of the client certificate.
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
}

/// The crash-safe local spool.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolConfig {
    /// Directory of the spool's segment files (one spool per process: do not share it).
    #[serde(default = "default_spool_dir")]
    pub dir: PathBuf,
    /// Disk bound: when the segments not yet stored in ClickHouse reach this, the ingest
    /// stops acknowledging (the broker keeps the messages) until ClickHouse catches up.
    #[serde(default = "default_spool_max_bytes")]
    pub max_bytes: u64,
    /// Size at which a segment is closed and a new one started; stored segments are deleted.
    #[serde(default = "default_segment_bytes")]
    pub segment_bytes: u64,
    /// Longest a received message waits for the next sync (fdatasync), which also waits for
    /// more messages to share it. 0 syncs as soon as nothing more is waiting.
    #[serde(default)]
    pub sync_delay_ms: u64,
    /// While the spool is full, QoS 0 deliveries (of which the broker keeps no copy) wait in
    /// memory up to this many bytes of payload and topic; beyond it the oldest are dropped and
    /// counted. QoS 1 deliveries are never dropped: the broker keeps them.
    #[serde(default = "default_held_qos0_max_bytes")]
    pub held_qos0_max_bytes: u64,
}

fn default_host() -> String {
    "127.0.0.1".into()
}
fn default_port() -> u16 {
    1883
}
fn default_client_id() -> String {
    "cityops-ingest".into()
}
fn default_connections() -> u16 {
    4
}
fn default_session_expiry_s() -> u32 {
    86_400
}
fn default_keep_alive_s() -> u16 {
    15
}
fn default_receive_maximum() -> u16 {
    1000
}
fn default_max_packet_bytes() -> u32 {
    1024 * 1024
}
fn default_connect_timeout_ms() -> u64 {
    5_000
}
fn default_reconnect_initial_ms() -> u64 {
    200
}
fn default_reconnect_max_ms() -> u64 {
    30_000
}
fn default_true() -> bool {
    true
}
fn default_spool_dir() -> PathBuf {
    PathBuf::from("/var/lib/cityops/spool")
}
fn default_spool_max_bytes() -> u64 {
    1024 * 1024 * 1024
}
fn default_segment_bytes() -> u64 {
    64 * 1024 * 1024
}
fn default_held_qos0_max_bytes() -> u64 {
    64 * 1024 * 1024
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig {
            dir: default_spool_dir(),
            max_bytes: default_spool_max_bytes(),
            segment_bytes: default_segment_bytes(),
            sync_delay_ms: 0,
            held_qos0_max_bytes: default_held_qos0_max_bytes(),
        }
    }
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            host: default_host(),
            port: default_port(),
            protocol: MqttProtocol::default(),
            client_id: default_client_id(),
            connections: default_connections(),
            shared_group: None,
            session_expiry_s: default_session_expiry_s(),
            keep_alive_s: default_keep_alive_s(),
            receive_maximum: default_receive_maximum(),
            max_packet_bytes: default_max_packet_bytes(),
            connect_timeout_ms: default_connect_timeout_ms(),
            reconnect_initial_ms: default_reconnect_initial_ms(),
            reconnect_max_ms: default_reconnect_max_ms(),
            store_retained: false,
            broker_sys_topics: true,
            username: None,
            password: None,
            password_file: None,
            tls: None,
            spool: SpoolConfig::default(),
        }
    }
}

fn valid_share_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(['/', '+', '#'])
}

impl MqttConfig {
    /// The shared-subscription group in effect, if subscriptions are shared.
    pub fn effective_shared_group(&self) -> Option<&str> {
        match &self.shared_group {
            Some(group) => Some(group),
            None if self.connections > 1 => Some(&self.client_id),
            None => None,
        }
    }

    pub(crate) fn validate(&self, problems: &mut Problems) {
        if self.host.trim().is_empty() {
            problems.push("mqtt.host", "must not be empty");
        }
        if self.port == 0 {
            problems.push("mqtt.port", "must not be 0");
        }
        if self.client_id.is_empty() || self.client_id.len() > 200 {
            problems.push("mqtt.client_id", "must be 1 to 200 bytes");
        }
        if !(1..=64).contains(&self.connections) {
            problems.push(
                "mqtt.connections",
                format!("{} is outside 1..=64", self.connections),
            );
        }
        if let Some(group) = &self.shared_group
            && !valid_share_name(group)
        {
            problems.push(
                "mqtt.shared_group",
                format!("{group:?} must be non-empty without '/', '+' or '#'"),
            );
        }
        if self.shared_group.is_none() && self.connections > 1 && !valid_share_name(&self.client_id)
        {
            problems.push(
                "mqtt.client_id",
                "is the shared group of the connections and must not contain '/', '+' or '#' (or set shared_group)",
            );
        }
        if self.keep_alive_s < 5 {
            problems.push("mqtt.keep_alive_s", "must be at least 5");
        }
        if self.receive_maximum == 0 {
            problems.push("mqtt.receive_maximum", "must be at least 1");
        }
        if self.max_packet_bytes < 1024 {
            problems.push("mqtt.max_packet_bytes", "must be at least 1024");
        }
        if self.connect_timeout_ms < 100 {
            problems.push("mqtt.connect_timeout_ms", "must be at least 100");
        }
        if self.reconnect_initial_ms == 0 {
            problems.push("mqtt.reconnect_initial_ms", "must be at least 1");
        }
        if self.reconnect_max_ms < self.reconnect_initial_ms {
            problems.push(
                "mqtt.reconnect_max_ms",
                format!(
                    "{} is below reconnect_initial_ms ({})",
                    self.reconnect_max_ms, self.reconnect_initial_ms
                ),
            );
        }
        if self.password.is_some() && self.password_file.is_some() {
            problems.push(
                "mqtt.password_file",
                "set either password or password_file, not both",
            );
        }
        if (self.password.is_some() || self.password_file.is_some()) && self.username.is_none() {
            problems.push("mqtt.username", "a password needs a username");
        }
        if let Some(tls) = &self.tls
            && tls.client_cert_file.is_some() != tls.client_key_file.is_some()
        {
            problems.push(
                "mqtt.tls.client_key_file",
                "client_cert_file and client_key_file must be set together",
            );
        }
        let spool = &self.spool;
        if spool.dir.as_os_str().is_empty() {
            problems.push("mqtt.spool.dir", "must not be empty");
        }
        if spool.segment_bytes < 64 * 1024 {
            problems.push("mqtt.spool.segment_bytes", "must be at least 65536");
        }
        if spool.max_bytes < 2 * spool.segment_bytes {
            problems.push(
                "mqtt.spool.max_bytes",
                format!(
                    "{} is below twice segment_bytes ({})",
                    spool.max_bytes, spool.segment_bytes
                ),
            );
        }
        if spool.sync_delay_ms > 1_000 {
            problems.push("mqtt.spool.sync_delay_ms", "must be at most 1000");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_share_over_the_connections() {
        let config = MqttConfig::default();
        let mut problems = Problems::default();
        config.validate(&mut problems);
        assert!(problems.is_empty(), "{:?}", problems.into_vec());
        assert_eq!(config.effective_shared_group(), Some("cityops-ingest"));
        let single = MqttConfig {
            connections: 1,
            ..MqttConfig::default()
        };
        assert_eq!(single.effective_shared_group(), None);
    }

    #[test]
    fn reports_every_problem_with_its_path() {
        let config = MqttConfig {
            connections: 0,
            shared_group: Some("a/b".into()),
            reconnect_initial_ms: 500,
            reconnect_max_ms: 100,
            password: Some(Secret::new("x")),
            spool: SpoolConfig {
                max_bytes: 1,
                ..SpoolConfig::default()
            },
            ..MqttConfig::default()
        };
        let mut problems = Problems::default();
        config.validate(&mut problems);
        let paths: Vec<String> = problems.into_vec().into_iter().map(|p| p.path).collect();
        assert_eq!(
            paths,
            [
                "mqtt.connections",
                "mqtt.shared_group",
                "mqtt.reconnect_max_ms",
                "mqtt.username",
                "mqtt.spool.max_bytes"
            ]
        );
    }
}
