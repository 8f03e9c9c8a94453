//! The simulator against the shipped config: every payload decodes, the intended events come
//! out, the same seed gives the same bytes, and scenarios show in the data and the ground truth.

// Test helpers may unwrap: a failure there is a test failure with its message.
#![allow(clippy::unwrap_used)]

mod decode;
mod scenarios;

use cityops_config::{Config, SourceKind};
use cityops_event::{Event, Timestamp};
use cityops_feeds::{FeedSet, Message, Outcome};
use cityops_sim::{SimMessage, Transport};

/// A Thursday morning in Da Nang, 07:00 local time.
pub fn start() -> Timestamp {
    Timestamp::parse_rfc3339("2026-11-26T00:00:00Z").unwrap()
}

/// The feeds of the shipped example config.
pub fn shipped_feeds() -> FeedSet {
    let config =
        Config::load(&cityops_testkit::repo_root().join("deploy/config/cityops.toml")).unwrap();
    FeedSet::new(&config.feeds, config.rejects.max_raw_bytes)
        .unwrap()
        .with_label_names(&config.labels)
}

/// Decodes a simulated message as ingest would, received when it was sent.
pub fn decode(feeds: &FeedSet, message: &SimMessage) -> Result<Vec<Event>, String> {
    let source = match message.feed.transport() {
        Transport::Mqtt => SourceKind::Mqtt,
        Transport::Kafka => SourceKind::Kafka,
    };
    let outcome = feeds.decode(&Message {
        source,
        topic: &message.topic,
        payload: &message.payload,
        received_at: message.sent_at,
        coordinates: None,
    });
    match outcome {
        Outcome::Events(events) => Ok(events),
        Outcome::Reject(r) => Err(format!(
            "{} on {}: {}: {}\n{}",
            message.feed,
            message.topic,
            r.reason,
            r.message,
            String::from_utf8_lossy(&message.payload)
        )),
    }
}
