//! The non-feed sections of the config file: telemetry, rejects and ClickHouse.

use crate::problem::Problems;
use crate::secret::Secret;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Logs and the metrics/health endpoint, shared by every service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// Log filter in `tracing` syntax: a level (`info`) or per-module directives
    /// (`info,cityops_feeds=debug`). The `CITYOPS_LOG` environment variable overrides it.
    #[serde(default = "default_log_level")]
    pub log_level: String,
    /// `human` (one readable line per record) or `json` (one JSON object per record).
    #[serde(default)]
    pub log_format: LogFormat,
    /// Address of the HTTP endpoint serving `/metrics`, `/healthz` and `/readyz`.
    #[serde(default = "default_listen_addr")]
    pub listen_addr: SocketAddr,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Readable lines for a terminal.
    #[default]
    Human,
    /// JSON lines for a log collector.
    Json,
}

fn default_log_level() -> String {
    "info".into()
}

fn default_listen_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9464))
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            log_level: default_log_level(),
            log_format: LogFormat::default(),
            listen_addr: default_listen_addr(),
        }
    }
}

impl TelemetryConfig {
    pub(crate) fn validate(&self, problems: &mut Problems) {
        if let Err(e) = check_log_filter(&self.log_level) {
            problems.push("telemetry.log_level", e);
        }
    }
}

/// Checks a `tracing` filter: comma-separated `level` or `target=level` directives.
pub fn check_log_filter(filter: &str) -> Result<(), String> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    for directive in filter.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let level = directive.rsplit_once('=').map_or(directive, |(_, l)| l);
        if !LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
            return Err(format!(
                "{directive:?}: expected a level (trace, debug, info, warn, error, off) or target=level"
            ));
        }
    }
    Ok(())
}

/// What is kept of rejected payloads.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RejectsConfig {
    /// Raw payload bytes kept with each reject; longer payloads are cut and flagged truncated.
    #[serde(default = "default_max_raw_bytes")]
    pub max_raw_bytes: usize,
}

fn default_max_raw_bytes() -> usize {
    64 * 1024
}

impl Default for RejectsConfig {
    fn default() -> Self {
        RejectsConfig {
            max_raw_bytes: default_max_raw_bytes(),
        }
    }
}

impl RejectsConfig {
    pub(crate) fn validate(&self, problems: &mut Problems) {
        if self.max_raw_bytes > 16 * 1024 * 1024 {
            problems.push(
                "rejects.max_raw_bytes",
                format!("{} is above 16777216", self.max_raw_bytes),
            );
        }
    }
}

/// The ClickHouse server events and rejects are written to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClickHouseConfig {
    /// HTTP(S) URL of the server, e.g. `http://127.0.0.1:8123`.
    #[serde(default = "default_clickhouse_url")]
    pub url: String,
    /// Database holding the cityops tables.
    #[serde(default = "default_database")]
    pub database: String,
    /// User name.
    #[serde(default = "default_user")]
    pub user: String,
    /// Password. Prefer `password_file` or `"${CLICKHOUSE_PASSWORD}"`; never logged.
    #[serde(default)]
    pub password: Option<Secret>,
    /// File whose content (without a trailing newline) is the password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// PEM file of the certificate authority (or authorities) that signed the server's
    /// certificate, for an `https://` url: only these are trusted. Without it an `https://`
    /// url is checked against the system's roots. Relative to the config file's folder.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Compression of the data sent and received: `lz4` (across a network) or `none` (same
    /// host: saves CPU on both sides).
    #[serde(default)]
    pub compression: ClickHouseCompression,
    /// Days of raw events kept (`events`); 0 keeps them forever.
    #[serde(default = "default_events_retention_days")]
    pub events_retention_days: u32,
    /// Days of per-minute rollups kept (`events_1m_*`); 0 keeps them forever.
    #[serde(default = "default_rollups_retention_days")]
    pub rollups_retention_days: u32,
    /// Days of rejects kept; 0 keeps them forever.
    #[serde(default = "default_rejects_retention_days")]
    pub rejects_retention_days: u32,
    /// Days of alert history kept (`alert_events`); 0 keeps it forever.
    #[serde(default = "default_alert_events_retention_days")]
    pub alert_events_retention_days: u32,
    /// Name of a cluster in the servers' `remote_servers` for the cluster schema: replicated
    /// `<table>_local` tables on every node, `Distributed` tables under the plain names, DDL
    /// `ON CLUSTER` (docs/deployment.md). Unset or empty (`"${CITYOPS_CLICKHOUSE_CLUSTER:-}"`):
    /// the single-server schema.
    #[serde(default, deserialize_with = "empty_is_unset")]
    pub cluster: Option<String>,
}

/// An empty string (an environment variable left unset) as no value.
fn empty_is_unset<'de, D>(deserializer: D) -> Result<Option<String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let text: Option<String> = Option::deserialize(deserializer)?;
    Ok(text.filter(|t| !t.is_empty()))
}

fn default_events_retention_days() -> u32 {
    365
}

fn default_rollups_retention_days() -> u32 {
    730
}

fn default_rejects_retention_days() -> u32 {
    30
}

fn default_alert_events_retention_days() -> u32 {
    730
}

fn default_clickhouse_url() -> String {
    "http://127.0.0.1:8123".into()
}

fn default_database() -> String {
    "cityops".into()
}

fn default_user() -> String {
    "default".into()
}

impl Default for ClickHouseConfig {
    fn default() -> Self {
        ClickHouseConfig {
            url: default_clickhouse_url(),
            database: default_database(),
            user: default_user(),
            password: None,
            password_file: None,
            ca_file: None,
            compression: ClickHouseCompression::default(),
            events_retention_days: default_events_retention_days(),
            rollups_retention_days: default_rollups_retention_days(),
            rejects_retention_days: default_rejects_retention_days(),
            alert_events_retention_days: default_alert_events_retention_days(),
            cluster: None,
        }
    }
}

impl ClickHouseConfig {
    pub(crate) fn validate(&self, problems: &mut Problems) {
        let rest = self
            .url
            .strip_prefix("http://")
            .or_else(|| self.url.strip_prefix("https://"));
        match rest {
            Some(host) if !host.is_empty() => {}
            _ => problems.push(
                "clickhouse.url",
                format!("{:?} must be an http:// or https:// URL", self.url),
            ),
        }
        if self.database.is_empty()
            || !self
                .database
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            problems.push(
                "clickhouse.database",
                format!("{:?} must be letters, digits and '_'", self.database),
            );
        }
        if let Some(cluster) = &self.cluster
            && (cluster.is_empty()
                || !cluster
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        {
            problems.push(
                "clickhouse.cluster",
                format!("{cluster:?} must be letters, digits, '_' and '-'"),
            );
        }
        if self.password.is_some() && self.password_file.is_some() {
            problems.push(
                "clickhouse.password_file",
                "set either password or password_file, not both",
            );
        }
        if self.ca_file.is_some() && !self.url.starts_with("https://") {
            problems.push(
                "clickhouse.ca_file",
                format!("is for an https:// url, and url is {:?}", self.url),
            );
        }
    }
}

/// Wire compression between cityops and ClickHouse.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClickHouseCompression {
    /// LZ4 blocks (ClickHouse's native HTTP compression).
    #[default]
    Lz4,
    /// Plain bytes.
    None,
}

/// Canonical spellings of label values, so that a district is one value on the wall whether a
/// feed sends `hai-chau` in its topic or `Hải Châu` in its payload.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelsConfig {
    /// District names: any spelling a feed uses (a topic slug) to the canonical name.
    #[serde(default)]
    pub district: std::collections::BTreeMap<String, String>,
    /// Ward names: any spelling a feed uses to the canonical name.
    #[serde(default)]
    pub ward: std::collections::BTreeMap<String, String>,
}

impl LabelsConfig {
    pub(crate) fn validate(&self, problems: &mut Problems) {
        for (kind, map) in [("district", &self.district), ("ward", &self.ward)] {
            for (from, to) in map {
                if to.trim().is_empty() {
                    problems.push(
                        format!("labels.{kind}.{from}"),
                        "the canonical name must not be empty",
                    );
                }
            }
        }
    }
}
