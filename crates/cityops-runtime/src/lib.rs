//! What every cityops service shares around its sources: the MQTT session options and the
//! Kafka topics of the config's feeds (the ingest and the alerter read the same feeds, each
//! with its own sessions and group), and the retry backoff.

mod backoff;
mod sources;

pub use backoff::Backoff;
pub use sources::{SourceError, kafka_topics, read_tls, subscriber_options};
