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

/// Reads an RFC 3339 string as a timestamp; `field` names it in the failure (built only then:
/// names are formatted on the hot path otherwise).
pub(crate) fn rfc3339(field: impl Fn() -> String, text: &str) -> Result<Timestamp, Failure> {
    Timestamp::parse_rfc3339(text).map_err(|e| {
        Failure::new(
            RejectReason::InvalidTimestamp,
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

/// `value.pointer(pointer)` (RFC 6901) without allocating for tokens that have no `~` escape:
/// it runs for every mapped field of every message.
pub(crate) fn pointer<'v>(value: &'v Value, pointer: &str) -> Option<&'v Value> {
    if pointer.is_empty() {
        return Some(value);
    }
    let rest = pointer.strip_prefix('/')?;
    let mut target = value;
    for token in rest.split('/') {
        let unescaped;
        let key = if token.contains('~') {
            unescaped = token.replace("~1", "/").replace("~0", "~");
            unescaped.as_str()
        } else {
            token
        };
        target = match target {
            Value::Object(map) => map.get(key)?,
            Value::Array(items) => {
                // RFC 6901: decimal, no leading zeros, no sign.
                if key.is_empty()
                    || (key.len() > 1 && key.starts_with('0'))
                    || !key.bytes().all(|b| b.is_ascii_digit())
                {
                    return None;
                }
                items.get(key.parse::<usize>().ok()?)?
            }
            _ => return None,
        };
    }
    Some(target)
}

#[cfg(test)]
mod pointer_tests {
    use super::pointer;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn resolves_like_serde_json() {
        let v = json!({"a": {"b/c": [10, {"~x": 2}]}, "": 1, "0": "zero"});
        for p in [
            "",
            "/a",
            "/a/b~1c",
            "/a/b~1c/0",
            "/a/b~1c/1/~0x",
            "/",
            "/0",
            "/a/b~1c/01",
            "/a/b~1c/-1",
            "/a/b~1c/9",
            "a",
            "/a/x/y",
        ] {
            assert_eq!(pointer(&v, p), v.pointer(p), "{p}");
        }
    }

    proptest! {
        #[test]
        fn agrees_with_serde_json_on_arbitrary_pointers(tokens in proptest::collection::vec("[a-c0-2~/]{0,3}", 0..4)) {
            let v = json!({"a": [1, {"b": 2, "~": 3, "/": 4}], "0": {"1": 5}, "": {"": 6}, "c~1": 7});
            let p: String = tokens.iter().map(|t| format!("/{t}")).collect();
            prop_assert_eq!(pointer(&v, &p), v.pointer(&p));
        }
    }
}
