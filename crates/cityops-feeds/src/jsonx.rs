//! Small JSON helpers shared by the JSON-based decoders: parsing with the right reject reason,
//! type names and previews for messages, times and positions.

use crate::reject::{Failure, RejectReason};
use cityops_event::Timestamp;
use serde_json::Value;

/// Parses a payload as UTF-8 JSON (into a `Value`, or the borrowed tree), telling
/// `invalid_utf8` from `invalid_json`. One UTF-8 pass over the whole payload, then a parse that
/// trusts it: measured faster than `from_slice`, which checks every string as it reads it.
pub(crate) fn parse<'a, T: serde::Deserialize<'a>>(payload: &'a [u8]) -> Result<T, Failure> {
    let text = std::str::from_utf8(payload).map_err(|e| {
        Failure::new(
            RejectReason::InvalidUtf8,
            format!(
                "payload is not UTF-8: invalid byte at offset {}",
                e.valid_up_to()
            ),
        )
    })?;
    serde_json::from_str(text).map_err(|e| {
        Failure::new(
            RejectReason::InvalidJson,
            format!("payload is not JSON: {e}"),
        )
    })
}

/// The JSON type of a value, for messages.
pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A short rendering of a value for messages, cut to keep messages bounded.
pub(crate) fn preview(v: &Value) -> String {
    let mut s = v.to_string();
    if s.len() > 80 {
        let mut cut = 77;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

/// Reads an RFC 3339 string as a timestamp; `field` names it in the failure (built only then:
/// names are formatted on the hot path otherwise).
pub(crate) fn rfc3339(field: impl Fn() -> String, text: &str) -> Result<Timestamp, Failure> {
    Timestamp::parse_rfc3339(text).map_err(|e| {
        // A well-formed time ClickHouse cannot store is out of range, like such a number.
        let reason = match e {
            cityops_event::TimestampError::OutOfRange => RejectReason::TsOutOfRange,
            _ => RejectReason::InvalidTimestamp,
        };
        Failure::new(
            reason,
            format!("{}: {text:?} is not a valid time: {e}", field()),
        )
    })
}

/// Checks a latitude/longitude pair.
pub(crate) fn check_position(
    field: impl Fn() -> String,
    lat: f64,
    lon: f64,
) -> Result<(), Failure> {
    if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
        return Err(Failure::new(
            RejectReason::OutOfRange,
            format!(
                "{}: position lat {lat}, lon {lon} is outside -90..90, -180..180",
                field()
            ),
        ));
    }
    Ok(())
}
