//! Fuzz target: the SenML decoder, JSON and CBOR encodings.
#![no_main]

mod common;

use cityops_config::SourceKind;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    common::decode_and_check(SourceKind::Mqtt, "golden/senml/rfc", data);
    common::decode_and_check(SourceKind::Mqtt, "golden/senml/device/d-1", data);
    common::decode_and_check(SourceKind::Mqtt, "golden/senml-cbor/rfc", data);
});
