//! The `[kafka]` and `[ingest]` sections: how `cityops ingest` consumes, batches and retries.

use crate::problem::Problems;
use serde::Deserialize;
use std::collections::BTreeMap;

/// The Kafka cluster the ingest consumes from, as one consumer group.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// `bootstrap.servers`: comma-separated `host:port` list.
    #[serde(default = "default_bootstrap_servers")]
    pub bootstrap_servers: String,
    /// Consumer group; run more processes with the same group to scale out.
    #[serde(default = "default_group_id")]
    pub group_id: String,
    /// `session.timeout.ms`: how long the group waits for a silent member (a killed process)
    /// before giving its partitions to another.
    #[serde(default = "default_session_timeout_ms")]
    pub session_timeout_ms: u32,
    /// `fetch.max.bytes`: most bytes one fetch response may carry.
    #[serde(default = "default_fetch_max_bytes")]
    pub fetch_max_bytes: u32,
    /// `max.partition.fetch.bytes`: most bytes per partition per fetch.
    #[serde(default = "default_max_partition_fetch_bytes")]
    pub max_partition_fetch_bytes: u32,
    /// `queued.max.messages.kbytes` in bytes: librdkafka's prefetch queue, part of the
    /// process's memory.
    #[serde(default = "default_queued_max_bytes")]
    pub queued_max_bytes: u32,
    /// `fetch.queue.backoff.ms`: how long librdkafka waits before fetching again once the
    /// prefetch queue was full. librdkafka's own 1,000 ms left the ingest idle for most of
    /// each second once it read faster than the queue refilled (measured in BENCHMARKS.md).
    #[serde(default = "default_fetch_queue_backoff_ms")]
    pub fetch_queue_backoff_ms: u32,
    /// Further librdkafka settings (`security.protocol`, `sasl.mechanism`, ...), passed as
    /// they are. Put secrets here with `${ENV}` or in `settings_files`; the values of secret
    /// keys (`*password*`, `*secret*`, `ssl.key.pem`) never show in logs or debug output.
    #[serde(default)]
    pub settings: KafkaSettings,
    /// librdkafka settings read from files (relative to the config file), e.g.
    /// `"sasl.password" = "/run/secrets/kafka-password"` (one value per file, without its
    /// trailing newline). A key may not be in both tables.
    #[serde(default)]
    pub settings_files: BTreeMap<String, std::path::PathBuf>,
    /// How long the group may leave a process without partitions (or, with no other member,
    /// with fewer than its topics have) before it warns, reports
    /// `cityops_*_kafka_assignment_stalled_state 1` and `/readyz` says not ready (0: never).
    /// A process kept as a standby beyond the partition count wants 0.
    #[serde(default = "default_assignment_timeout_ms")]
    pub assignment_timeout_ms: u64,
}

/// librdkafka settings passed through as they are; `Debug` hides the values of secret keys.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct KafkaSettings(pub BTreeMap<String, String>);

impl KafkaSettings {
    /// Whether a librdkafka setting holds a secret (`sasl.password`, `ssl.key.password`,
    /// `sasl.oauthbearer.client.secret`, `ssl.key.pem`, ...).
    pub fn is_secret_key(key: &str) -> bool {
        let key = key.to_ascii_lowercase();
        key.contains("password") || key.contains("secret") || key.ends_with("key.pem")
    }

    /// The settings, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.0.iter()
    }
}

impl<'a> IntoIterator for &'a KafkaSettings {
    type Item = (&'a String, &'a String);
    type IntoIter = std::collections::btree_map::Iter<'a, String, String>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl std::fmt::Debug for KafkaSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(k, v)| {
                let shown = if Self::is_secret_key(k) {
                    "***"
                } else {
                    v.as_str()
                };
                (k, shown)
            }))
            .finish()
    }
}

fn default_bootstrap_servers() -> String {
    "127.0.0.1:9092".into()
}

fn default_group_id() -> String {
    "cityops-ingest".into()
}

fn default_session_timeout_ms() -> u32 {
    10_000
}

fn default_fetch_max_bytes() -> u32 {
    4 * 1024 * 1024
}

fn default_max_partition_fetch_bytes() -> u32 {
    512 * 1024
}

fn default_queued_max_bytes() -> u32 {
    4 * 1024 * 1024
}

fn default_fetch_queue_backoff_ms() -> u32 {
    10
}

fn default_assignment_timeout_ms() -> u64 {
    60_000
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            bootstrap_servers: default_bootstrap_servers(),
            group_id: default_group_id(),
            session_timeout_ms: default_session_timeout_ms(),
            fetch_max_bytes: default_fetch_max_bytes(),
            max_partition_fetch_bytes: default_max_partition_fetch_bytes(),
            queued_max_bytes: default_queued_max_bytes(),
            fetch_queue_backoff_ms: default_fetch_queue_backoff_ms(),
            settings: KafkaSettings::default(),
            settings_files: BTreeMap::new(),
            assignment_timeout_ms: default_assignment_timeout_ms(),
        }
    }
}

/// Settings the ingest owns itself or sets from typed keys; ours would silently win over the
/// same setting in `settings`.
const OWNED_SETTINGS: [&str; 12] = [
    "bootstrap.servers",
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "auto.offset.reset",
    "session.timeout.ms",
    "partition.assignment.strategy",
    "statistics.interval.ms",
    "fetch.max.bytes",
    "max.partition.fetch.bytes",
    "queued.max.messages.kbytes",
    "fetch.queue.backoff.ms",
];

impl KafkaConfig {
    pub(crate) fn validate(&self, problems: &mut Problems) {
        if self.bootstrap_servers.trim().is_empty() {
            problems.push(
                "kafka.bootstrap_servers",
                "must name at least one host:port",
            );
        }
        if self.group_id.trim().is_empty() {
            problems.push("kafka.group_id", "must not be empty");
        }
        if !(1_000..=300_000).contains(&self.session_timeout_ms) {
            problems.push(
                "kafka.session_timeout_ms",
                format!("{} is outside 1000..=300000", self.session_timeout_ms),
            );
        }
        if self.max_partition_fetch_bytes > self.fetch_max_bytes {
            problems.push(
                "kafka.max_partition_fetch_bytes",
                format!(
                    "{} is above fetch_max_bytes ({})",
                    self.max_partition_fetch_bytes, self.fetch_max_bytes
                ),
            );
        }
        if self.queued_max_bytes < 1024 {
            problems.push("kafka.queued_max_bytes", "must be at least 1024");
        }
        if self.fetch_queue_backoff_ms > 300_000 {
            problems.push(
                "kafka.fetch_queue_backoff_ms",
                format!("{} is above 300000", self.fetch_queue_backoff_ms),
            );
        }
        for key in self.settings.0.keys().chain(self.settings_files.keys()) {
            if OWNED_SETTINGS.contains(&key.as_str()) {
                problems.push(
                    format!("kafka.settings.{key:?}"),
                    "is set by cityops itself (use the [kafka] keys)",
                );
            }
        }
        for key in self.settings_files.keys() {
            if self.settings.0.contains_key(key) {
                problems.push(
                    format!("kafka.settings_files.{key:?}"),
                    "is also in kafka.settings: set it in one of them",
                );
            }
        }
    }
}

/// Batching, memory and retry settings of `cityops ingest`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// A batch is written when it holds this many event rows.
    #[serde(default = "default_batch_max_rows")]
    pub batch_max_rows: usize,
    /// ... or this many bytes of rows.
    #[serde(default = "default_batch_max_bytes")]
    pub batch_max_bytes: usize,
    /// ... or when its first message is this old.
    #[serde(default = "default_linger_ms")]
    pub linger_ms: u64,
    /// Bytes of rows decoded but not yet stored; above it consumption pauses (memory bound
    /// while ClickHouse is slow or down).
    #[serde(default = "default_max_in_flight_bytes")]
    pub max_in_flight_bytes: usize,
    /// Timeout of one INSERT.
    #[serde(default = "default_insert_timeout_ms")]
    pub insert_timeout_ms: u64,
    /// First delay before retrying a failed INSERT; doubles up to `retry_max_ms`, with jitter.
    #[serde(default = "default_retry_initial_ms")]
    pub retry_initial_ms: u64,
    /// Longest delay between retries.
    #[serde(default = "default_retry_max_ms")]
    pub retry_max_ms: u64,
    /// On SIGTERM: time allowed to write what is buffered and commit before exiting.
    #[serde(default = "default_shutdown_deadline_ms")]
    pub shutdown_deadline_ms: u64,
    /// On a rebalance: time allowed to store what was read from the partitions being taken
    /// away; after it, unstored rows are left to the next owner (nothing is committed for them).
    #[serde(default = "default_rebalance_deadline_ms")]
    pub rebalance_deadline_ms: u64,
}

fn default_batch_max_rows() -> usize {
    100_000
}

fn default_batch_max_bytes() -> usize {
    16 * 1024 * 1024
}

fn default_linger_ms() -> u64 {
    500
}

fn default_max_in_flight_bytes() -> usize {
    48 * 1024 * 1024
}

fn default_insert_timeout_ms() -> u64 {
    30_000
}

fn default_retry_initial_ms() -> u64 {
    100
}

fn default_retry_max_ms() -> u64 {
    10_000
}

fn default_shutdown_deadline_ms() -> u64 {
    20_000
}

fn default_rebalance_deadline_ms() -> u64 {
    5_000
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            batch_max_rows: default_batch_max_rows(),
            batch_max_bytes: default_batch_max_bytes(),
            linger_ms: default_linger_ms(),
            max_in_flight_bytes: default_max_in_flight_bytes(),
            insert_timeout_ms: default_insert_timeout_ms(),
            retry_initial_ms: default_retry_initial_ms(),
            retry_max_ms: default_retry_max_ms(),
            shutdown_deadline_ms: default_shutdown_deadline_ms(),
            rebalance_deadline_ms: default_rebalance_deadline_ms(),
        }
    }
}

/// ClickHouse splits an INSERT into blocks of this many rows and commits each on its own; a
/// batch must stay within one block to be stored all or nothing.
const MAX_INSERT_BLOCK_ROWS: usize = 1_048_576;

impl IngestConfig {
    pub(crate) fn validate(&self, problems: &mut Problems) {
        if self.batch_max_rows == 0 || self.batch_max_rows > MAX_INSERT_BLOCK_ROWS / 2 {
            problems.push(
                "ingest.batch_max_rows",
                format!(
                    "{} is outside 1..={} (a batch must fit one ClickHouse insert block to be atomic)",
                    self.batch_max_rows,
                    MAX_INSERT_BLOCK_ROWS / 2
                ),
            );
        }
        if self.batch_max_bytes < 1024 {
            problems.push("ingest.batch_max_bytes", "must be at least 1024");
        }
        if self.max_in_flight_bytes < self.batch_max_bytes {
            problems.push(
                "ingest.max_in_flight_bytes",
                format!(
                    "{} is below batch_max_bytes ({})",
                    self.max_in_flight_bytes, self.batch_max_bytes
                ),
            );
        }
        if self.insert_timeout_ms < 100 {
            problems.push("ingest.insert_timeout_ms", "must be at least 100");
        }
        if self.retry_initial_ms == 0 || self.retry_initial_ms > self.retry_max_ms {
            problems.push(
                "ingest.retry_initial_ms",
                format!(
                    "{} must be above 0 and at most retry_max_ms ({})",
                    self.retry_initial_ms, self.retry_max_ms
                ),
            );
        }
    }
}
