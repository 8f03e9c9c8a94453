//! Secret strings that never show in logs or debug output.

use serde::{Deserialize, Deserializer};
use std::fmt;

/// A secret value (a password, a token). `Debug` prints `Secret(***)`; there is no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one place that hands it to a client library.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

/// The config paths of secrets written in clear in config `text` (as it is in the file,
/// before `${ENV}` substitution): passwords, API tokens and secret librdkafka settings whose
/// value is not exactly one `${NAME}` reference. Pure; `cityops check` and the services warn.
pub fn cleartext_secrets(text: &str) -> Vec<String> {
    let Ok(table) = text.parse::<toml::Table>() else {
        return Vec::new();
    };
    let in_clear = |value: Option<&toml::Value>| {
        value
            .and_then(toml::Value::as_str)
            .is_some_and(|v| !is_env_reference(v.trim()))
    };
    let get = |path: &[&str]| -> Option<&toml::Value> {
        let mut value = table.get(path[0])?;
        for key in &path[1..] {
            value = value.get(key)?;
        }
        Some(value)
    };
    let mut found = Vec::new();
    for path in [
        &["clickhouse", "password"][..],
        &["mqtt", "password"],
        &["alert", "queries", "password"],
    ] {
        if in_clear(get(path)) {
            found.push(path.join("."));
        }
    }
    if let Some(tokens) = get(&["alert", "api_tokens"]).and_then(toml::Value::as_array) {
        for (i, token) in tokens.iter().enumerate() {
            if in_clear(token.get("token")) {
                found.push(format!("alert.api_tokens[{i}].token"));
            }
        }
    }
    if let Some(settings) = get(&["kafka", "settings"]).and_then(toml::Value::as_table) {
        for (key, value) in settings {
            if crate::KafkaSettings::is_secret_key(key) && in_clear(Some(value)) {
                found.push(format!("kafka.settings.{key:?}"));
            }
        }
    }
    found
}

/// Whether `value` is exactly one `${NAME}` reference.
fn is_env_reference(value: &str) -> bool {
    value
        .strip_prefix("${")
        .and_then(|rest| rest.strip_suffix('}'))
        .is_some_and(|name| {
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_value() {
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "Secret(***)");
    }

    #[test]
    fn finds_every_secret_written_in_clear_and_only_those() {
        let text = r#"
[clickhouse]
password = "hunter2"
[mqtt]
password = "${MQTT_PASSWORD}"
[kafka.settings]
"sasl.password" = "s3cret"
"sasl.username" = "ingest"
"ssl.key.password" = "${KEY_PASSWORD}"
[alert.queries]
password = "pre-${X}"
[[alert.api_tokens]]
name = "duty"
token = "0123456789abcdef0123"
[[alert.api_tokens]]
name = "desk"
token_file = "desk.token"
"#;
        assert_eq!(
            cleartext_secrets(text),
            vec![
                "clickhouse.password",
                "alert.queries.password",
                "alert.api_tokens[0].token",
                "kafka.settings.\"sasl.password\"",
            ]
        );
        assert!(cleartext_secrets("[clickhouse]\nuser = \"x\"\n").is_empty());
    }
}
