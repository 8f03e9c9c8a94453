//! Shared set-up of the fuzz targets: the golden feeds, compiled once.

use cityops_config::{Config, SourceKind};
use cityops_event::Timestamp;
use cityops_feeds::{FeedSet, Message, Outcome};
use std::sync::OnceLock;

fn feeds() -> &'static FeedSet {
    static FEEDS: OnceLock<FeedSet> = OnceLock::new();
    FEEDS.get_or_init(|| {
        let text = include_str!("../../crates/cityops-feeds/tests/golden/feeds.toml");
        let config = Config::from_str_with_env(text, &|_| None).expect("golden feeds are valid");
        FeedSet::new(&config.feeds, 4096).expect("golden feeds compile")
    })
}

/// Decodes `payload` as if it arrived on `topic`, and checks what must hold for any input.
pub fn decode_and_check(source: SourceKind, topic: &str, payload: &[u8]) {
    let message = Message {
        source,
        topic,
        payload,
        received_at: Timestamp::from_millis(1_795_654_800_000).expect("in range"),
        coordinates: None,
    };
    match feeds().decode(&message) {
        Outcome::Events(events) => {
            assert!(!events.is_empty());
            assert!(events.iter().all(|e| e.value.is_none_or(f64::is_finite)));
        }
        Outcome::Reject(reject) => {
            assert_eq!(reject.raw_len, payload.len());
            assert!(!reject.message.is_empty());
        }
    }
}
