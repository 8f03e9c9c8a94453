//! Fuzz target: the NGSI-LD decoder.
#![no_main]

mod common;

use cityops_config::SourceKind;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    common::decode_and_check(SourceKind::Mqtt, "golden/ngsi/son-tra", data);
    common::decode_and_check(SourceKind::Kafka, "golden.ngsi.parking", data);
});
