//! The sources as the config describes them: the Kafka topics the feeds read and the MQTT
//! sessions' options (the filters come from `FeedSet`, which knows each feed's subscription).

use crate::Backoff;
use cityops_config::{Config, MqttConfig, MqttProtocol, SourceKind};
use cityops_mqtt::{Protocol, ReconnectDelay, SubscriberOptions, Tls};
use std::time::Duration;

/// What can stop a source from being set up.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A TLS file named in the config could not be read.
    #[error("cannot read {path}: {source}")]
    TlsFile {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The TLS files were read but cannot be used.
    #[error("TLS of [mqtt.tls] (CA file {path}): {source}")]
    Tls {
        /// The CA file.
        path: String,
        /// Why.
        source: cityops_mqtt::TlsError,
    },
}

impl ReconnectDelay for Backoff {
    fn next_delay(&mut self) -> Duration {
        Backoff::next_delay(self)
    }
    fn reset(&mut self) {
        Backoff::reset(self);
    }
}

/// The Kafka topics of the config's Kafka feeds, in config order.
pub fn kafka_topics(config: &Config) -> Vec<String> {
    config
        .feeds
        .iter()
        .filter(|f| f.source == SourceKind::Kafka)
        .map(|f| f.topic.clone())
        .collect()
}

/// The session options from the `[mqtt]` section, with the client id and shared group of the
/// service (the ingest and the alerter each have their own sessions).
pub fn subscriber_options(
    mqtt: &MqttConfig,
    client_id: &str,
    shared_group: Option<&str>,
    filters: Vec<String>,
    tls: Option<Tls>,
) -> SubscriberOptions {
    let (initial, max) = (
        Duration::from_millis(mqtt.reconnect_initial_ms),
        Duration::from_millis(mqtt.reconnect_max_ms),
    );
    let seed = u64::from(std::process::id()) << 16;
    SubscriberOptions {
        host: mqtt.host.clone(),
        port: mqtt.port,
        protocol: match mqtt.protocol {
            MqttProtocol::V5 => Protocol::V5,
            MqttProtocol::V311 => Protocol::V311,
        },
        client_id: client_id.to_owned(),
        connections: mqtt.connections,
        shared_group: shared_group.map(str::to_owned),
        filters,
        session_expiry: Duration::from_secs(u64::from(mqtt.session_expiry_s)),
        keep_alive: Duration::from_secs(u64::from(mqtt.keep_alive_s)),
        receive_maximum: mqtt.receive_maximum,
        max_packet_bytes: mqtt.max_packet_bytes,
        connect_timeout: Duration::from_millis(mqtt.connect_timeout_ms),
        credentials: mqtt.username.as_ref().map(|user| {
            let password = mqtt
                .password
                .as_ref()
                .map(|p| p.expose().to_owned())
                .unwrap_or_default();
            (user.clone(), password)
        }),
        tls,
        sys_topics: mqtt.broker_sys_topics,
        retire: false,
        reconnect_delay: Box::new(move |n| {
            Box::new(Backoff::new(initial, max, seed ^ u64::from(n)))
        }),
    }
}

/// Reads the TLS files named in the `[mqtt.tls]` section.
pub fn read_tls(mqtt: &MqttConfig) -> Result<Option<Tls>, SourceError> {
    let Some(tls) = &mqtt.tls else {
        return Ok(None);
    };
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|source| SourceError::TlsFile {
            path: path.display().to_string(),
            source,
        })
    };
    let client = match (&tls.client_cert_file, &tls.client_key_file) {
        (Some(cert), Some(key)) => Some((read(cert)?, read(key)?)),
        _ => None,
    };
    let ca = read(&tls.ca_file)?;
    let client = client.as_ref().map(|(c, k)| (c.as_slice(), k.as_slice()));
    Tls::from_pem(&ca, client)
        .map(Some)
        .map_err(|source| SourceError::Tls {
            path: tls.ca_file.display().to_string(),
            source,
        })
}
