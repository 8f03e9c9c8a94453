//! Property tests: no decoder panics on any input, and decoding is a pure function.

use cityops_config::{Config, SourceKind};
use cityops_event::Timestamp;
use cityops_feeds::{FeedSet, Message, Outcome};
use proptest::prelude::*;
use serde_json::{Map, Value};
use std::sync::OnceLock;

/// At least 10,000 cases per decoder in CI; `PROPTEST_CASES` can raise it locally.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
        .max(10_000)
}

fn feeds() -> &'static FeedSet {
    static FEEDS: OnceLock<FeedSet> = OnceLock::new();
    FEEDS.get_or_init(|| {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/feeds.toml");
        let text = std::fs::read_to_string(path).unwrap();
        let config = Config::from_str_with_env(&text, &|_| None).unwrap();
        FeedSet::new(&config.feeds, 1024).unwrap()
    })
}

/// One topic per decoder configuration of the golden feeds.
const TOPICS: [(SourceKind, &str); 8] = [
    (SourceKind::Mqtt, "golden/json/station/hai-chau/wl-1"),
    (SourceKind::Mqtt, "golden/json/counter/tc-1"),
    (SourceKind::Kafka, "golden.json.fleet"),
    (SourceKind::Kafka, "golden.json.reports"),
    (SourceKind::Mqtt, "golden/senml/rfc"),
    (SourceKind::Mqtt, "golden/senml/device/d-1"),
    (SourceKind::Mqtt, "golden/senml-cbor/rfc"),
    (SourceKind::Mqtt, "golden/ngsi/son-tra"),
];

fn decode(topic_index: usize, payload: &[u8], received_ms: i64) -> Outcome {
    let (source, topic) = TOPICS[topic_index % TOPICS.len()];
    let message = Message {
        source,
        topic,
        payload,
        received_at: Timestamp::from_millis(received_ms).unwrap(),
        coordinates: None,
    };
    feeds().decode(&message)
}

/// Checks what every outcome must satisfy, whatever the input.
fn check_invariants(outcome: &Outcome, payload: &[u8]) -> Result<(), TestCaseError> {
    match outcome {
        Outcome::Events(events) => {
            prop_assert!(!events.is_empty());
            for e in events {
                prop_assert!(e.value.is_none_or(f64::is_finite));
                prop_assert!(!e.entity_id.is_empty());
                prop_assert!(!e.metric.is_empty());
            }
        }
        Outcome::Reject(r) => {
            prop_assert!(!r.message.is_empty());
            prop_assert_eq!(r.raw_len, payload.len());
            prop_assert!(r.raw.len() <= 1024);
            prop_assert_eq!(&r.raw[..], &payload[..r.raw.len()]);
        }
    }
    Ok(())
}

/// Arbitrary JSON with the keys decoders look at, so that the search reaches deep paths.
fn arb_json() -> impl Strategy<Value = Value> {
    let keys = prop::sample::select(vec![
        "bn",
        "bt",
        "bu",
        "bv",
        "bs",
        "bver",
        "n",
        "u",
        "v",
        "vs",
        "vb",
        "vd",
        "s",
        "t",
        "ut",
        "id",
        "type",
        "value",
        "observedAt",
        "unitCode",
        "location",
        "coordinates",
        "data",
        "notifiedAt",
        "datasetId",
        "object",
        "languageMap",
        "ts",
        "level_cm",
        "rain",
        "mm_1h",
        "status",
        "vehicles",
        "plate",
        "pos",
        "lat",
        "lon",
        "speed_kmh",
        "sent_at",
        "Property",
        "Notification",
        "Point",
        "x_",
    ]);
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        (-3_000_000_000i64..5_000_000_000_000).prop_map(|i| Value::Number(i.into())),
        prop::sample::select(vec![
            "Property",
            "GeoProperty",
            "Relationship",
            "Notification",
            "Point",
            "LanguageProperty",
            "2026-11-26T00:00:00Z",
            "urn:dev:x:",
            "Cel",
            "Ngập nặng",
            "",
            "1e308",
        ])
        .prop_map(|s| Value::String(s.to_owned())),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec((keys.clone(), inner), 0..8).prop_map(|kv| Value::Object(
                kv.into_iter()
                    .map(|(k, v)| (k.to_owned(), v))
                    .collect::<Map<_, _>>()
            )),
        ]
    })
}

fn config(decoder_topics: std::ops::Range<usize>) -> ProptestConfig {
    let _ = decoder_topics;
    ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

macro_rules! decoder_properties {
    ($name:ident, $topics:expr) => {
        mod $name {
            use super::*;

            proptest! {
                #![proptest_config(config($topics))]

                #[test]
                fn arbitrary_bytes_never_panic(topic in $topics, payload in prop::collection::vec(any::<u8>(), 0..512), now in 1_600_000_000_000i64..1_900_000_000_000) {
                    let outcome = decode(topic, &payload, now);
                    check_invariants(&outcome, &payload)?;
                }

                #[test]
                fn arbitrary_json_never_panics_and_is_deterministic(topic in $topics, doc in arb_json(), now in 1_600_000_000_000i64..1_900_000_000_000) {
                    let payload = serde_json::to_vec(&doc).unwrap();
                    let first = decode(topic, &payload, now);
                    check_invariants(&first, &payload)?;
                    prop_assert_eq!(first, decode(topic, &payload, now));
                }
            }
        }
    };
}

decoder_properties!(json_mapping, 0usize..4);
decoder_properties!(senml_json, 4usize..6);
decoder_properties!(senml_cbor, 6usize..7);
decoder_properties!(ngsi_ld, 7usize..8);

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    /// CBOR built from arbitrary JSON-shaped values, so the CBOR decoder sees valid CBOR too.
    #[test]
    fn senml_cbor_from_arbitrary_values_never_panics(doc in arb_json()) {
        let mut payload = Vec::new();
        ciborium::into_writer(&doc, &mut payload).unwrap();
        let outcome = decode(6, &payload, 1_800_000_000_000);
        check_invariants(&outcome, &payload)?;
    }
}
