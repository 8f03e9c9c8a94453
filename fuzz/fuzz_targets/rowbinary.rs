//! Fuzz target: RowBinary rows of `events`. Any event encodes and decodes back to the row its
//! struct gives; arbitrary bytes decode to rows or an error, never a panic.
#![no_main]

use cityops_clickhouse::{EventRow, RowSource, decode_events, encode_event};
use cityops_event::{Domain, Event, Quality, Timestamp};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    events: Vec<FuzzEvent>,
    topic: String,
    partition: i32,
    offset: i64,
    kind: u8,
    garbage: Vec<u8>,
}

#[derive(Debug, Arbitrary)]
struct FuzzEvent {
    id: u128,
    ts_ms: u64,
    ingested_ms: u64,
    feed: String,
    domain: u8,
    entity_id: String,
    entity_type: String,
    metric: String,
    value: Option<f64>,
    text: Option<String>,
    unit: String,
    district: String,
    ward: String,
    lat: Option<f64>,
    lon: Option<f64>,
    attrs: Vec<(String, String)>,
    quality: u8,
}

fn timestamp(ms: u64) -> Timestamp {
    let max = Timestamp::MAX.as_millis() as u64;
    Timestamp::from_millis((ms % (max + 1)) as i64).expect("in range")
}

impl FuzzEvent {
    fn event(self) -> Event {
        Event {
            event_id: uuid::Uuid::from_u128(self.id),
            ts: timestamp(self.ts_ms),
            ingested_at: timestamp(self.ingested_ms),
            feed: self.feed,
            domain: Domain::ALL[usize::from(self.domain) % Domain::ALL.len()],
            entity_id: self.entity_id,
            entity_type: self.entity_type,
            metric: self.metric,
            value: self.value,
            text: self.text,
            unit: self.unit,
            district: self.district,
            ward: self.ward,
            lat: self.lat,
            lon: self.lon,
            attrs: self.attrs.into_iter().collect(),
            quality: [Quality::Good, Quality::Suspect, Quality::Bad][usize::from(self.quality % 3)],
        }
    }
}

fuzz_target!(|input: Input| {
    let _ = decode_events(&input.garbage);
    let source = RowSource {
        kind: ["kafka", "mqtt", "file"][usize::from(input.kind % 3)],
        topic: &input.topic,
        partition: input.partition,
        offset: input.offset,
    };
    let events: Vec<Event> = input.events.into_iter().map(FuzzEvent::event).collect();
    let mut bytes = Vec::new();
    for event in &events {
        encode_event(&mut bytes, event, &source);
    }
    let rows = decode_events(&bytes).expect("what was encoded decodes");
    let want: Vec<EventRow> = events.iter().map(|e| EventRow::new(e, &source)).collect();
    // Debug text compares NaN values too (NaN != NaN).
    assert_eq!(format!("{rows:?}"), format!("{want:?}"));
    if !bytes.is_empty() {
        assert!(
            decode_events(&bytes[..bytes.len() - 1]).is_err(),
            "a cut row is an error"
        );
    }
});
