//! Data-driven decoder tests: every payload under `tests/golden/<decoder>/`, decoded with
//! `tests/golden/feeds.toml`, must give its `<name>.expected.jsonl`. `UPDATE_GOLDEN=1` rewrites
//! the expected files (review the diff before committing).

use cityops_config::{Config, SourceKind};
use cityops_event::{SourceCoordinates, Timestamp};
use cityops_feeds::{FeedSet, Message, Outcome, RejectReason};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const DECODER_DIRS: [&str; 4] = ["json", "senml", "senml_cbor", "ngsi_ld"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Cases {
    case: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    note: String,
    source: String,
    topic: String,
    received_at: String,
    payload: String,
    partition: Option<i32>,
    offset: Option<i64>,
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn feed_set() -> FeedSet {
    let text = std::fs::read_to_string(golden_dir().join("feeds.toml")).unwrap();
    let config = Config::from_str_with_env(&text, &|_| None).unwrap();
    FeedSet::new(&config.feeds, config.rejects.max_raw_bytes)
        .unwrap()
        .with_label_names(&config.labels)
}

fn run_case(feeds: &FeedSet, dir: &Path, case: &Case) -> Outcome {
    let payload = std::fs::read(dir.join(&case.payload)).unwrap();
    let source = match case.source.as_str() {
        "mqtt" => SourceKind::Mqtt,
        "kafka" => SourceKind::Kafka,
        other => panic!("case {}: unknown source {other}", case.name),
    };
    let coordinates = case.partition.map(|partition| SourceCoordinates::Kafka {
        topic: case.topic.clone(),
        partition,
        offset: case.offset.expect("offset goes with partition"),
    });
    let message = Message {
        source,
        topic: &case.topic,
        payload: &payload,
        received_at: Timestamp::parse_rfc3339(&case.received_at).unwrap(),
        coordinates: coordinates.as_ref(),
    };
    feeds.decode(&message)
}

#[test]
fn every_golden_case_gives_its_expected_output() {
    let feeds = feed_set();
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut mismatches = Vec::new();
    let mut reasons = BTreeSet::new();
    let mut total = 0;
    for decoder in DECODER_DIRS {
        let dir = golden_dir().join(decoder);
        let cases: Cases =
            toml::from_str(&std::fs::read_to_string(dir.join("cases.toml")).unwrap()).unwrap();
        let (mut events, mut rejects) = (0, 0);
        for case in &cases.case {
            assert!(
                !case.note.is_empty(),
                "case {} needs a note saying what it shows",
                case.name
            );
            let outcome = run_case(&feeds, &dir, case);
            match &outcome {
                Outcome::Events(_) => events += 1,
                Outcome::Reject(r) => {
                    rejects += 1;
                    reasons.insert(r.reason);
                }
            }
            let actual = outcome.to_json_lines();
            let expected_path = dir.join(format!("{}.expected.jsonl", case.name));
            if update {
                std::fs::write(&expected_path, &actual).unwrap();
                continue;
            }
            let expected = std::fs::read_to_string(&expected_path).unwrap_or_else(|e| {
                panic!(
                    "{}: {e} (run with UPDATE_GOLDEN=1)",
                    expected_path.display()
                )
            });
            if actual != expected {
                mismatches.push(format!(
                    "{decoder}/{}:\n--- expected\n{expected}--- actual\n{actual}",
                    case.name
                ));
            }
            total += 1;
        }
        assert!(
            events > 0 && rejects > 0,
            "{decoder}: goldens must cover both events and rejects"
        );
    }
    assert!(
        mismatches.is_empty(),
        "{} golden mismatch(es):\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
    if !update {
        assert!(total >= 60, "only {total} golden cases");
    }
    // Every reject reason a decoder can produce is shown by at least one golden.
    let missing: Vec<_> = RejectReason::ALL
        .iter()
        .filter(|r| !reasons.contains(r))
        .collect();
    assert!(
        missing.is_empty(),
        "no golden case shows reject reason(s) {missing:?}"
    );
}

#[test]
fn rfc8428_examples_resolve_to_the_names_and_values_the_rfc_gives() {
    let feeds = feed_set();
    let dir = golden_dir().join("senml");
    let cases: Cases =
        toml::from_str(&std::fs::read_to_string(dir.join("cases.toml")).unwrap()).unwrap();
    let get = |name: &str| {
        let case = cases.case.iter().find(|c| c.name == name).unwrap();
        match run_case(&feeds, &dir, case) {
            Outcome::Events(events) => events,
            Outcome::Reject(r) => panic!("{name} rejected: {r:?}"),
        }
    };
    // 5.1.2: names resolve to base name + name.
    let e = get("rfc8428_5_1_2_multiple_datapoints");
    let names: Vec<&str> = e.iter().map(|e| e.attrs["senml_name"].as_str()).collect();
    assert_eq!(
        names,
        [
            "urn:dev:ow:10e2073a01080063:voltage",
            "urn:dev:ow:10e2073a01080063:current"
        ]
    );
    assert_eq!((e[0].value, e[0].unit.as_str()), (Some(120.1), "V"));
    assert_eq!((e[1].value, e[1].unit.as_str()), (Some(1.2), "A"));
    // 5.1.2 with time: current each second for the 5 seconds before 2010-06-08T18:01:16.001Z.
    let e = get("rfc8428_5_1_2_multiple_datapoints_time");
    assert_eq!(e.len(), 7);
    assert_eq!(e[0].ts.to_string(), "2010-06-08T18:01:16.001Z");
    assert_eq!(e[1].ts.to_string(), "2010-06-08T18:01:11.001Z");
    assert_eq!(e[1].unit, "A");
    assert_eq!(e[6].value, Some(1.7));
    // 5.1.3 and its resolved form 5.1.4 describe the same 13 measurements.
    let unresolved = get("rfc8428_5_1_3_multiple_measurements");
    let resolved = get("rfc8428_5_1_4_resolved_data");
    assert_eq!(unresolved.len(), 13);
    let key = |e: &cityops_event::Event| {
        (
            e.attrs["senml_name"].clone(),
            e.unit.clone(),
            e.ts,
            e.value.map(f64::to_bits),
        )
    };
    assert_eq!(
        unresolved.iter().map(key).collect::<Vec<_>>(),
        resolved.iter().map(key).collect::<Vec<_>>()
    );
    assert_eq!(unresolved[9].unit, "%EL");
    assert_eq!(unresolved[9].ts.to_string(), "2011-10-31T13:26:54.000Z");
    // 5.1.6: the last record uses the base name of the third and the base time of the first.
    let e = get("rfc8428_5_1_6_collection_of_resources");
    assert_eq!(e[3].attrs["senml_name"], "2001:db8::1/humidity");
    assert_eq!(e[3].ts.to_string(), "2011-10-31T16:27:09.000Z");
    assert_eq!(e[3].value, Some(67.0));
    // Section 6: the CBOR encoding decodes to the same events as the JSON one.
    let cbor_dir = golden_dir().join("senml_cbor");
    let cbor_cases: Cases =
        toml::from_str(&std::fs::read_to_string(cbor_dir.join("cases.toml")).unwrap()).unwrap();
    let cbor_case = cbor_cases
        .case
        .iter()
        .find(|c| c.name == "rfc8428_6_cbor")
        .unwrap();
    let Outcome::Events(cbor) = run_case(&feeds, &cbor_dir, cbor_case) else {
        panic!("CBOR rejected")
    };
    let json = get("rfc8428_5_1_2_multiple_datapoints_time");
    let strip = |e: &cityops_event::Event| {
        (
            e.attrs["senml_name"].clone(),
            e.unit.clone(),
            e.ts,
            e.value.map(f64::to_bits),
        )
    };
    assert_eq!(
        cbor.iter().map(strip).collect::<Vec<_>>(),
        json.iter().map(strip).collect::<Vec<_>>()
    );
}
