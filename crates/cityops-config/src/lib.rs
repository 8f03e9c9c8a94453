//! cityops configuration: one TOML file, `${ENV}` substitution, `*_file` secrets, and pure
//! validation that reports every problem with its path.
//!
//! Loading runs in stages so that `cityops check` can report as much as possible at once:
//! read the file, substitute the environment, parse TOML, deserialize each section and each
//! feed separately (so an unknown key in one feed does not hide a mistake in another),
//! validate (pure), and only then read secret files.

mod alert;
mod env;
mod feed;
mod ingest;
mod mqtt;
mod problem;
mod secret;
mod sections;
mod topic;

pub use alert::{
    AlertConfig, AlertQueriesConfig, AlertmanagerConfig, ApiTokenConfig, EscalationConfig,
    WebhookConfig,
};
pub use env::substitute;
pub use feed::{
    DecoderConfig, FeedConfig, FieldMapping, JsonMappingConfig, NgsiLdConfig, QualityMapping,
    SenmlConfig, SenmlEncoding, SourceKind, TsFormat, ValueKind, is_metric_name,
    validate_json_pointer,
};
pub use ingest::{IngestConfig, KafkaConfig, KafkaSettings};
pub use mqtt::{MqttConfig, MqttProtocol, MqttTlsConfig, SpoolConfig};
pub use problem::{Problem, Problems};
pub use secret::{Secret, cleartext_secrets};
pub use sections::{
    ClickHouseCompression, ClickHouseConfig, LabelsConfig, LogFormat, RejectsConfig,
    TelemetryConfig, check_log_filter,
};
pub use topic::{TopicPattern, is_label_name};

use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::path::Path;

/// The whole configuration file.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// `[telemetry]`: logs and the metrics endpoint.
    pub telemetry: TelemetryConfig,
    /// `[rejects]`: what is kept of rejected payloads.
    pub rejects: RejectsConfig,
    /// `[clickhouse]`: where events go.
    pub clickhouse: ClickHouseConfig,
    /// `[labels]`: canonical spellings of district and ward names.
    pub labels: LabelsConfig,
    /// `[kafka]`: the cluster and consumer group `cityops ingest` reads.
    pub kafka: KafkaConfig,
    /// `[mqtt]`: the broker and sessions `cityops ingest` subscribes with, and its spool.
    pub mqtt: MqttConfig,
    /// `[ingest]`: batching, memory bound and retries of `cityops ingest`.
    pub ingest: IngestConfig,
    /// `[alert]`: the alerter service, `cityops alert`.
    pub alert: AlertConfig,
    /// `[[feeds]]`: one entry per feed.
    pub feeds: Vec<FeedConfig>,
}

/// Why a configuration could not be loaded: every problem found.
#[derive(Debug, thiserror::Error)]
#[error("{} problem(s) in {path}:\n{}", problems.len(), render(problems))]
pub struct ConfigError {
    /// The file that was loaded (or `<string>`).
    pub path: String,
    /// Every problem, in file order where possible.
    pub problems: Vec<Problem>,
}

fn render(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

const SECTIONS: [&str; 9] = [
    "telemetry",
    "rejects",
    "clickhouse",
    "labels",
    "kafka",
    "mqtt",
    "ingest",
    "alert",
    "feeds",
];

impl Config {
    /// Loads, validates and resolves secrets of the file at `path`, with the process
    /// environment for substitution.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let fail = |problems| ConfigError {
            path: path.display().to_string(),
            problems,
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            fail(vec![Problem::new(
                "",
                format!("cannot read config file: {e}"),
            )])
        })?;
        let mut config = Config::from_str_with_env(&text, &|name| std::env::var(name).ok())
            .map_err(|e| fail(e.problems))?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve_secrets(base).map_err(fail)?;
        if let Some(ca) = &mut config.clickhouse.ca_file {
            *ca = base.join(&*ca);
        }
        // Rule files are named relative to the config file, as secret files are.
        for file in &mut config.alert.rule_files {
            if file.is_relative() {
                *file = base.join(&*file);
            }
        }
        Ok(config)
    }

    /// Parses and validates config text with `lookup` for `${ENV}`; does no I/O and does not
    /// read secret files.
    pub fn from_str_with_env(
        text: &str,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let fail = |problems| ConfigError {
            path: "<string>".into(),
            problems,
        };
        let text = substitute(text, lookup).map_err(fail)?;
        let table: toml::Table = toml::from_str(&text)
            .map_err(|e| fail(vec![Problem::new("", format!("invalid TOML: {e}"))]))?;
        let mut problems = Problems::default();
        let mut config = Config::default();
        // Position of each deserialized feed in the file, so that paths stay right when an
        // earlier feed failed to deserialize.
        let mut feed_positions = Vec::new();
        for (key, value) in table {
            match key.as_str() {
                "telemetry" => section(&key, value, &mut problems, &mut config.telemetry),
                "rejects" => section(&key, value, &mut problems, &mut config.rejects),
                "clickhouse" => section(&key, value, &mut problems, &mut config.clickhouse),
                "labels" => section(&key, value, &mut problems, &mut config.labels),
                "kafka" => section(&key, value, &mut problems, &mut config.kafka),
                "mqtt" => section(&key, value, &mut problems, &mut config.mqtt),
                "ingest" => section(&key, value, &mut problems, &mut config.ingest),
                "alert" => section(&key, value, &mut problems, &mut config.alert),
                "feeds" => feed_positions = feeds(value, &mut problems, &mut config.feeds),
                other => problems.push(
                    other,
                    format!("unknown section, expected one of: {}", SECTIONS.join(", ")),
                ),
            }
        }
        config.validate(&feed_positions, &mut problems);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(fail(problems.into_vec()))
        }
    }

    /// Pure validation of everything deserialized so far.
    fn validate(&self, feed_positions: &[usize], problems: &mut Problems) {
        self.telemetry.validate(problems);
        self.rejects.validate(problems);
        self.clickhouse.validate(problems);
        self.labels.validate(problems);
        self.kafka.validate(problems);
        self.mqtt.validate(problems);
        self.ingest.validate(problems);
        self.alert.validate(problems);
        let mut names = BTreeMap::new();
        let mut topics = BTreeMap::new();
        for (feed, &i) in self.feeds.iter().zip(feed_positions) {
            let path = format!("feeds[{i}]");
            feed.validate(&path, problems);
            if let Some(first) = names.insert(feed.name.as_str(), i) {
                problems.at(
                    &path,
                    "name",
                    format!("{:?} is already the name of feeds[{first}]", feed.name),
                );
            }
            if let Some(first) = topics.insert((feed.source, feed.topic.as_str()), i) {
                problems.at(
                    &path,
                    "topic",
                    format!("{:?} is already read by feeds[{first}]", feed.topic),
                );
            }
        }
    }

    /// Reads `*_file` secrets (relative paths are relative to `base`, the config's folder).
    pub fn resolve_secrets(&mut self, base: &Path) -> Result<(), Vec<Problem>> {
        let mut problems = Vec::new();
        let slots = [
            (
                "clickhouse.password_file",
                &mut self.clickhouse.password_file,
                &mut self.clickhouse.password,
            ),
            (
                "mqtt.password_file",
                &mut self.mqtt.password_file,
                &mut self.mqtt.password,
            ),
            (
                "alert.queries.password_file",
                &mut self.alert.queries.password_file,
                &mut self.alert.queries.password,
            ),
        ];
        let tokens = self.alert.api_tokens.iter_mut().enumerate().map(|(i, t)| {
            (
                format!("alert.api_tokens[{i}].token_file"),
                &mut t.token_file,
                &mut t.token,
            )
        });
        let slots = slots
            .into_iter()
            .map(|(path, file, secret)| (path.to_owned(), file, secret))
            .chain(tokens);
        for (path, file_slot, secret_slot) in slots {
            let Some(file) = file_slot.take() else {
                continue;
            };
            let full = base.join(&file);
            match std::fs::read_to_string(&full) {
                Ok(text) => {
                    let value = text.strip_suffix('\n').unwrap_or(&text);
                    let value = value.strip_suffix('\r').unwrap_or(value);
                    *secret_slot = Some(Secret::new(value));
                }
                Err(e) => {
                    problems.push(Problem::new(
                        path,
                        format!("cannot read {}: {e}", full.display()),
                    ));
                    *file_slot = Some(file);
                }
            }
        }
        for (key, file) in std::mem::take(&mut self.kafka.settings_files) {
            let full = base.join(&file);
            match std::fs::read_to_string(&full) {
                Ok(text) => {
                    let value = text.strip_suffix('\n').unwrap_or(&text);
                    let value = value.strip_suffix('\r').unwrap_or(value);
                    self.kafka.settings.0.insert(key, value.to_owned());
                }
                Err(e) => problems.push(Problem::new(
                    format!("kafka.settings_files.\"{key}\""),
                    format!("cannot read {}: {e}", full.display()),
                )),
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

fn section<T: DeserializeOwned>(
    key: &str,
    value: toml::Value,
    problems: &mut Problems,
    slot: &mut T,
) {
    match deserialize::<T>(value) {
        Ok(v) => *slot = v,
        Err((path, message)) => problems.push(problem::join_path(key, &path), message),
    }
}

/// Deserializes each feed on its own into `out`, returning each one's position in the file.
fn feeds(value: toml::Value, problems: &mut Problems, out: &mut Vec<FeedConfig>) -> Vec<usize> {
    let toml::Value::Array(items) = value else {
        problems.push("feeds", "must be an array of tables ([[feeds]])");
        return Vec::new();
    };
    let mut positions = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        match deserialize::<FeedConfig>(item) {
            Ok(feed) => {
                out.push(feed);
                positions.push(i);
            }
            Err((path, message)) => {
                problems.push(problem::join_path(&format!("feeds[{i}]"), &path), message);
            }
        }
    }
    positions
}

/// Deserializes one value, returning the failing path within it and the message.
fn deserialize<T: DeserializeOwned>(value: toml::Value) -> Result<T, (String, String)> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        // The TOML deserializer appends a line locating the key; the path already says it.
        let message = e.into_inner().to_string();
        let first_line = message.lines().next().unwrap_or_default().to_owned();
        (path, first_line)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        match Config::from_str_with_env(text, &|_| None) {
            Ok(_) => Vec::new(),
            Err(e) => e.problems.iter().map(ToString::to_string).collect(),
        }
    }

    const AIR: &str = r#"
[[feeds]]
name = "air"
source = "mqtt"
topic = "danang/{district}/air/{entity_id}"
domain = "environment"
decoder = { type = "senml" }
"#;

    #[test]
    fn a_minimal_config_is_valid_and_gets_defaults() {
        let config = Config::from_str_with_env(AIR, &|_| None).unwrap();
        assert_eq!(config.feeds.len(), 1);
        assert_eq!(config.feeds[0].max_payload_bytes, 1024 * 1024);
        assert_eq!(config.telemetry.listen_addr.to_string(), "127.0.0.1:9464");
        assert_eq!(config.clickhouse.database, "cityops");
        assert_eq!(config.rejects.max_raw_bytes, 65536);
    }

    #[test]
    fn the_alert_section_reports_every_problem_with_its_path() {
        let text = format!(
            "{AIR}\n[alert]\ntick_ms = 0\nexternal_url = \"localhost\"\nmqtt_shared_group = \"a/b\"\n\
             [[alert.alertmanagers]]\nurl = \"ftp://x\"\n\
             [[alert.webhooks]]\nname = \"Ops\"\nurl = \"http://127.0.0.1:1/hook\"\n\
             [[alert.webhooks]]\nname = \"ops2\"\nurl = \"http://127.0.0.1:1/hook\"\nretry_initial_ms = 60000\n"
        );
        assert_eq!(
            problems(&text),
            [
                "alert.tick_ms: must be between 1 and 10000",
                "alert.mqtt_shared_group: must be a non-empty name without /, + or #",
                "alert.external_url: \"localhost\" must be an http:// or https:// URL",
                "alert.alertmanagers[0].url: \"ftp://x\" must be an http:// or https:// URL",
                "alert.webhooks[0].name: \"Ops\" must be lowercase letters, digits and _",
                "alert.webhooks[1].retry_initial_ms: must be at least 1 and at most retry_max_ms",
            ]
        );
        let defaults = Config::from_str_with_env(AIR, &|_| None).unwrap().alert;
        assert_eq!(defaults.listen_addr.to_string(), "127.0.0.1:9465");
        assert_eq!(defaults.kafka_group_id, "cityops-alert");
    }

    #[test]
    fn duplicate_names_and_topics_are_reported_against_the_later_feed() {
        let text = format!("{AIR}{AIR}");
        assert_eq!(
            problems(&text),
            [
                "feeds[1].name: \"air\" is already the name of feeds[0]",
                "feeds[1].topic: \"danang/{district}/air/{entity_id}\" is already read by feeds[0]",
            ]
        );
    }

    #[test]
    fn json_feeds_need_an_entity_id_from_somewhere() {
        let text = r#"
[[feeds]]
name = "beds"
source = "kafka"
topic = "danang.health.beds"
domain = "health"
decoder = { type = "json", fields = [{ metric = "beds", pointer = "/beds" }] }
"#;
        let found = problems(text);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("feeds[0].decoder.entity_id: no entity id"));
        // A static entity id is enough.
        assert!(
            problems(&text.replace(
                "domain = \"health\"",
                "domain = \"health\"\nentity_id = \"bv-1\""
            ))
            .is_empty()
        );
    }

    #[test]
    fn kafka_topics_and_pointers_are_checked() {
        let text = r#"
[[feeds]]
name = "beds"
source = "kafka"
topic = "danang/health/beds"
domain = "health"
decoder = { type = "json", records = "^/x", entity_id = "id", fields = [{ metric = "a b", pointer = "/a" }] }
"#;
        let found = problems(text);
        assert_eq!(found.len(), 4, "{found:?}");
        assert!(
            found[0].starts_with("feeds[0].topic: \"danang/health/beds\": Kafka topics use only")
        );
        assert!(found[1].starts_with(
            "feeds[0].decoder.records: \"^/x\": '^' (payload root) is not allowed here"
        ));
        assert!(found[2].starts_with("feeds[0].decoder.entity_id: \"id\" is not a JSON Pointer"));
        assert!(
            found[3].starts_with(
                "feeds[0].decoder.fields[0].metric: \"a b\" is not a valid metric name"
            )
        );
    }

    #[test]
    fn unknown_sections_and_keys_are_errors_with_paths() {
        let found = problems("[telemetri]\nlog_level = \"info\"\n[clickhouse]\nurll = \"x\"\n");
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].starts_with("telemetri: unknown section"));
        assert!(found[1].starts_with("clickhouse.urll: unknown field `urll`"));
    }

    #[test]
    fn the_password_is_hidden_in_debug_output() {
        let config = Config::from_str_with_env("[clickhouse]\npassword = \"${PW}\"\n", &|name| {
            (name == "PW").then(|| "hunter2".to_owned())
        })
        .unwrap();
        assert_eq!(
            config.clickhouse.password.as_ref().map(Secret::expose),
            Some("hunter2")
        );
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    #[test]
    fn secret_kafka_settings_are_hidden_in_debug_output_and_read_from_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("kafka.pw"), "from-a-file\n").unwrap();
        std::fs::write(
            dir.path().join("c.toml"),
            "[kafka.settings]\n\"sasl.username\" = \"ingest\"\n\"ssl.key.password\" = \"in-the-file\"\n\
             [kafka.settings_files]\n\"sasl.password\" = \"kafka.pw\"\n",
        )
        .unwrap();
        let config = Config::load(&dir.path().join("c.toml")).unwrap();
        let settings = &config.kafka.settings.0;
        assert_eq!(settings["sasl.password"], "from-a-file");
        assert_eq!(settings["sasl.username"], "ingest");
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("from-a-file") && !shown.contains("in-the-file"),
            "{shown}"
        );
        assert!(shown.contains("ingest"), "{shown}");
        assert!(
            problems("[kafka.settings]\n\"sasl.password\" = \"x\"\n[kafka.settings_files]\n\"sasl.password\" = \"f\"\n")
                .iter()
                .any(|p| p.starts_with("kafka.settings_files.\"sasl.password\": is also in kafka.settings"))
        );
    }
}
