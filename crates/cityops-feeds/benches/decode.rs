//! Decoder throughput against a baseline in the same process: parsing the same payloads into
//! `serde_json::Value`. Run with `make bench`.

use cityops_config::{Config, SourceKind};
use cityops_feeds::{FeedSet, Message, Outcome};
use cityops_sim::{FeedKind, SimOptions, Simulator, Transport};
use std::time::Instant;

/// Measurement rounds per feed; the fastest counts.
const ROUNDS: usize = 7;

fn main() {
    let root = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/config/cityops.toml"
    );
    let config = Config::load(std::path::Path::new(root)).expect("the shipped config loads");
    let feeds = FeedSet::new(&config.feeds, config.rejects.max_raw_bytes)
        .expect("the shipped feeds compile")
        .with_label_names(&config.labels);
    let start =
        cityops_event::Timestamp::parse_rfc3339("2026-11-26T00:00:00Z").expect("valid time");
    println!(
        "{:<24} {:>10} {:>14} {:>14} {:>16}",
        "feed", "messages", "decode msg/s", "events/s", "decode / parse"
    );
    for feed in FeedKind::ALL {
        let mut options = SimOptions::new(1, start);
        options.feeds = [feed].into_iter().collect();
        options.speed = 1000.0;
        let messages: Vec<_> = Simulator::new(options).take(20_000).collect();
        let source = match feed.transport() {
            Transport::Kafka => SourceKind::Kafka,
            Transport::Mqtt => SourceKind::Mqtt,
        };
        // Rounds alternate baseline and decoder, and the fastest round of each counts: a
        // noisy neighbour slows single rounds, never speeds them up.
        let (mut parse_s, mut decode_s) = (f64::INFINITY, f64::INFINITY);
        let (mut parsed, mut events) = (0usize, 0usize);
        for _ in 0..ROUNDS {
            // Baseline: parse only.
            let t = Instant::now();
            parsed = 0;
            for m in &messages {
                let value: serde_json::Value =
                    serde_json::from_slice(&m.payload).expect("simulated payloads are JSON");
                parsed += usize::from(!value.is_null());
            }
            parse_s = parse_s.min(t.elapsed().as_secs_f64());
            // The decoder, as ingest runs it.
            let t = Instant::now();
            events = 0;
            for m in &messages {
                let outcome = feeds.decode(&Message {
                    source,
                    topic: &m.topic,
                    payload: &m.payload,
                    received_at: m.sent_at,
                    coordinates: None,
                });
                match outcome {
                    Outcome::Events(e) => events += e.len(),
                    Outcome::Reject(r) => panic!("{feed}: {}: {}", r.reason, r.message),
                }
            }
            decode_s = decode_s.min(t.elapsed().as_secs_f64());
        }
        assert_eq!(parsed, messages.len());
        println!(
            "{:<24} {:>10} {:>14.0} {:>14.0} {:>15.2}x",
            feed.name(),
            messages.len(),
            messages.len() as f64 / decode_s,
            events as f64 / decode_s,
            decode_s / parse_s
        );
    }
}
