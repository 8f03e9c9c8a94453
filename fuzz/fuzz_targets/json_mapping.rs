//! Fuzz target: the JSON mapping decoder, through single-record and records-array feeds.
#![no_main]

mod common;

use cityops_config::SourceKind;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    common::decode_and_check(SourceKind::Mqtt, "golden/json/station/hai-chau/wl-1", data);
    common::decode_and_check(SourceKind::Kafka, "golden.json.fleet", data);
    common::decode_and_check(SourceKind::Kafka, "golden.json.reports", data);
});
