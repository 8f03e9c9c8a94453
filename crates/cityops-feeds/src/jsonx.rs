//! Small JSON helpers shared by the JSON-based decoders: parsing with the right reject reason,
//! type names for messages, and lenient scalar reads.

use crate::reject::{Failure, RejectReason};
use cityops_event::Timestamp;
use serde_json::Value;

/// Parses a payload as UTF-8 JSON, telling `invalid_utf8` from `invalid_json`.
pub(crate) fn parse(payload: &[u8]) -> Result<Value, Failure> {
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

/// Reads a number, accepting numeric strings (many devices quote their numbers).
pub(crate) fn as_number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
        _ => None,
    }
}

/// Reads a scalar as text: strings as they are, numbers and booleans rendered.
pub(crate) fn as_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Reads an identifier: a non-empty string or an integer.
pub(crate) fn as_id(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        _ => None,
    }
}

/// Reads an RFC 3339 string as a timestamp, with `field` naming it in the failure.
pub(crate) fn rfc3339(field: &str, text: &str) -> Result<Timestamp, Failure> {
    Timestamp::parse_rfc3339(text).map_err(|e| {
        Failure::new(
            RejectReason::InvalidTimestamp,
            format!("{field}: {text:?} is not a valid time: {e}"),
        )
    })
}

/// Checks a latitude/longitude pair.
pub(crate) fn check_position(field: &str, lat: f64, lon: f64) -> Result<(), Failure> {
    if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
        return Err(Failure::new(
            RejectReason::OutOfRange,
            format!("{field}: position lat {lat}, lon {lon} is outside -90..90, -180..180"),
        ));
    }
    Ok(())
}
