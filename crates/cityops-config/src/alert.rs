//! The `[alert]` section: how `cityops alert` reads the feeds, where it keeps its state, and
//! whom it notifies.

use crate::problem::Problems;
use crate::secret::Secret;
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
    /// How query rules reach ClickHouse.
    #[serde(default)]
    pub queries: AlertQueriesConfig,
    /// Bearer tokens that may acknowledge, unacknowledge and comment (the API and the
    /// console). Without any, those endpoints answer 401 to everyone.
    #[serde(default)]
    pub api_tokens: Vec<ApiTokenConfig>,
    /// When a firing alert nobody acknowledged is escalated (rules may say otherwise).
    #[serde(default)]
    pub escalation: EscalationConfig,
    /// This alerter's name among replicas that run the same rules (history rows carry it).
    #[serde(default = "default_replica")]
    pub replica: String,
    /// How often the history is read for acknowledgements made on other replicas (0: never;
    /// a single alerter needs none).
    #[serde(default = "default_peer_sync_ms")]
    pub peer_sync_ms: u64,
    /// After a restart with saved state: once the sources are ready, how long series that have
    /// had no event since the start are not moved on by processing time alone, and nothing is
    /// sent to Alertmanager, so that the events that waited in the brokers are applied first
    /// (0: no wait).
    #[serde(default = "default_catch_up_ms")]
    pub catch_up_ms: u64,
}

/// One bearer token of the API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiTokenConfig {
    /// Whose token it is (a person or a duty desk, `[a-z0-9_.-]`); recorded with every action
    /// taken with it.
    pub name: String,
    /// The token. Prefer `token_file` or `"${CITYOPS_TOKEN_...}"`; never logged.
    #[serde(default)]
    pub token: Option<Secret>,
    /// File whose content (without a trailing newline) is the token.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

/// `[alert.escalation]`: the default escalation policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EscalationConfig {
    /// A firing alert not acknowledged after this long is sent again with `escalation="1"`,
    /// after twice as long with `"2"`, and so on (0: no escalation unless a rule says).
    #[serde(default = "default_escalate_after_ms")]
    pub after_ms: u64,
    /// The highest escalation level.
    #[serde(default = "default_escalation_max_level")]
    pub max_level: u8,
}

impl Default for EscalationConfig {
    fn default() -> Self {
        EscalationConfig {
            after_ms: default_escalate_after_ms(),
            max_level: default_escalation_max_level(),
        }
    }
}

fn default_escalate_after_ms() -> u64 {
    900_000
}
fn default_escalation_max_level() -> u8 {
    2
}
fn default_replica() -> String {
    "a".into()
}
fn default_peer_sync_ms() -> u64 {
    0
}
fn default_catch_up_ms() -> u64 {
    5_000
}

/// `[alert.queries]`: the read-only ClickHouse user query rules run as, and their limits.
/// The server's URL and database are those of `[clickhouse]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertQueriesConfig {
    /// ClickHouse user of the query rules: one that can only read (`readonly = 2` in its
    /// profile, or `GRANT SELECT` only; docs/schema.md).
    #[serde(default = "default_query_user")]
    pub user: String,
    /// Its password. Prefer `password_file` or `"${CITYOPS_ALERT_QUERY_PASSWORD}"`; never logged.
    #[serde(default)]
    pub password: Option<Secret>,
    /// File whose content (without a trailing newline) is the password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// A query running longer than this fails (the server stops it) and its rule is unhealthy.
    #[serde(default = "default_query_timeout_ms")]
    pub timeout_ms: u64,
    /// A result with more rows than this fails (it is never cut short).
    #[serde(default = "default_query_max_rows")]
    pub max_rows: u64,
    /// Query rules evaluated at the same time at most; the others wait their turn.
    #[serde(default = "default_query_concurrency")]
    pub concurrency: usize,
}

impl Default for AlertQueriesConfig {
    fn default() -> Self {
        AlertQueriesConfig {
            user: default_query_user(),
            password: None,
            password_file: None,
            timeout_ms: default_query_timeout_ms(),
            max_rows: default_query_max_rows(),
            concurrency: default_query_concurrency(),
        }
    }
}

fn default_query_user() -> String {
    "cityops_alert_query".into()
}
fn default_query_timeout_ms() -> u64 {
    10_000
}
fn default_query_max_rows() -> u64 {
    10_000
}
fn default_query_concurrency() -> usize {
    2
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
            queries: AlertQueriesConfig::default(),
            api_tokens: Vec::new(),
            escalation: EscalationConfig::default(),
            replica: default_replica(),
            peer_sync_ms: default_peer_sync_ms(),
            catch_up_ms: default_catch_up_ms(),
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
        if self.replica.is_empty()
            || !self
                .replica
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        {
            problems.push("alert.replica", "must be letters, digits, _ . or -");
        }
        if self.escalation.max_level == 0 || self.escalation.max_level > 9 {
            problems.push("alert.escalation.max_level", "must be between 1 and 9");
        }
        if self.escalation.after_ms > 0 && self.escalation.after_ms < 1_000 {
            problems.push(
                "alert.escalation.after_ms",
                "must be 0 (off) or at least 1000",
            );
        }
        let mut token_names = std::collections::BTreeSet::new();
        for (i, token) in self.api_tokens.iter().enumerate() {
            let path = format!("alert.api_tokens[{i}]");
            if token.name.is_empty()
                || !token
                    .name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c))
            {
                problems.push(
                    format!("{path}.name"),
                    format!(
                        "{:?} must be lowercase letters, digits, _ . or -",
                        token.name
                    ),
                );
            } else if !token_names.insert(token.name.as_str()) {
                problems.push(
                    format!("{path}.name"),
                    format!("{:?} is already the name of another token", token.name),
                );
            }
            match (&token.token, &token.token_file) {
                (Some(_), Some(_)) => problems.push(
                    format!("{path}.token_file"),
                    "set either token or token_file, not both",
                ),
                (None, None) => problems.push(
                    format!("{path}.token"),
                    "give token (from an env var) or token_file",
                ),
                (Some(t), None) if t.expose().len() < 16 => problems.push(
                    format!("{path}.token"),
                    "must be at least 16 characters (openssl rand -hex 24)",
                ),
                _ => {}
            }
        }
        let q = &self.queries;
        if q.user.trim().is_empty() {
            problems.push("alert.queries.user", "must not be empty");
        }
        if q.password.is_some() && q.password_file.is_some() {
            problems.push(
                "alert.queries.password_file",
                "set either password or password_file, not both",
            );
        }
        if q.timeout_ms < 100 {
            problems.push("alert.queries.timeout_ms", "must be at least 100");
        }
        if q.max_rows == 0 {
            problems.push("alert.queries.max_rows", "must be at least 1");
        }
        if q.concurrency == 0 || q.concurrency > 64 {
            problems.push("alert.queries.concurrency", "must be between 1 and 64");
        }
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
