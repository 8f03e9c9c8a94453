//! A JSON tree that borrows its strings from the payload, for the JSON mapping decoder's hot
//! path: no allocation for strings without escapes, objects as vectors instead of maps.
//!
//! It answers exactly as a `serde_json::Value` parsed from the same text would: a repeated key
//! keeps its last value, numbers keep their integer or float form, and `preview` renders through
//! `Value` so that reject messages are byte-identical to the ones the goldens hold.

use crate::reject::Failure;
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Number, Value};
use std::borrow::Cow;
use std::fmt;

/// A parsed JSON value whose strings point into the payload when they can.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Json<'a> {
    Null,
    Bool(bool),
    Number(Number),
    String(Cow<'a, str>),
    Array(Vec<Json<'a>>),
    /// Members in payload order; look-ups take the last of a repeated key, as `Value` does.
    Object(Vec<(Cow<'a, str>, Json<'a>)>),
}

impl<'a> Json<'a> {
    /// Parses UTF-8 JSON text, telling `invalid_utf8` from `invalid_json`.
    pub(crate) fn parse(payload: &'a [u8]) -> Result<Json<'a>, Failure> {
        crate::jsonx::parse(payload)
    }

    pub(crate) fn is_null(&self) -> bool {
        matches!(self, Json::Null)
    }

    /// The member `key` of an object.
    pub(crate) fn get(&self, key: &str) -> Option<&Json<'a>> {
        match self {
            Json::Object(members) => members.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The same value as a `serde_json::Value` (for messages, off the hot path).
    pub(crate) fn to_value(&self) -> Value {
        match self {
            Json::Null => Value::Null,
            Json::Bool(b) => Value::Bool(*b),
            Json::Number(n) => Value::Number(n.clone()),
            Json::String(s) => Value::String(s.to_string()),
            Json::Array(items) => Value::Array(items.iter().map(Json::to_value).collect()),
            Json::Object(members) => {
                let mut map = serde_json::Map::new();
                for (k, v) in members {
                    map.insert(k.to_string(), v.to_value());
                }
                Value::Object(map)
            }
        }
    }

    /// The JSON type of a value, for messages.
    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool(_) => "a boolean",
            Json::Number(_) => "a number",
            Json::String(_) => "a string",
            Json::Array(_) => "an array",
            Json::Object(_) => "an object",
        }
    }

    /// A short rendering for messages, the same as `jsonx::preview` of the equal `Value`.
    pub(crate) fn preview(&self) -> String {
        crate::jsonx::preview(&self.to_value())
    }

    /// Reads a number, accepting numeric strings (many devices quote their numbers).
    pub(crate) fn as_number(&self) -> Option<f64> {
        match self {
            Json::Number(n) => n.as_f64(),
            Json::String(s) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
            _ => None,
        }
    }

    /// Reads a scalar as text: strings as they are, numbers and booleans rendered.
    pub(crate) fn as_text(&self) -> Option<String> {
        self.as_text_cow().map(Cow::into_owned)
    }

    /// `as_text` without copying a string, for comparisons.
    pub(crate) fn as_text_cow(&self) -> Option<Cow<'_, str>> {
        match self {
            Json::String(s) => Some(Cow::Borrowed(s)),
            Json::Number(n) => Some(Cow::Owned(n.to_string())),
            Json::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
            _ => None,
        }
    }

    /// Reads an identifier: a non-empty string or an integer.
    pub(crate) fn as_id(&self) -> Option<String> {
        match self {
            Json::String(s) if !s.is_empty() => Some(s.to_string()),
            Json::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
            _ => None,
        }
    }

    /// `Value::pointer` (RFC 6901) without allocating for tokens that have no `~` escape: it
    /// runs for every mapped field of every message.
    pub(crate) fn pointer(&self, pointer: &str) -> Option<&Json<'a>> {
        if pointer.is_empty() {
            return Some(self);
        }
        let rest = pointer.strip_prefix('/')?;
        let mut target = self;
        for token in rest.split('/') {
            let unescaped;
            let key = if token.contains('~') {
                unescaped = token.replace("~1", "/").replace("~0", "~");
                unescaped.as_str()
            } else {
                token
            };
            target = match target {
                Json::Object(_) => target.get(key)?,
                Json::Array(items) => {
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
}

impl<'de> Deserialize<'de> for Json<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, b: bool) -> Result<Self::Value, E> {
        Ok(Json::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Self::Value, E> {
        Ok(Json::Number(n.into()))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Self::Value, E> {
        Ok(Json::Number(n.into()))
    }

    fn visit_f64<E>(self, n: f64) -> Result<Self::Value, E> {
        // serde_json hands over finite floats only; `Value` maps anything else to null.
        Ok(Number::from_f64(n).map_or(Json::Null, Json::Number))
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(Json::String(Cow::Borrowed(s)))
    }

    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Json::String(Cow::Owned(s.to_owned())))
    }

    fn visit_string<E>(self, s: String) -> Result<Self::Value, E> {
        Ok(Json::String(Cow::Owned(s)))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Json::Null)
    }

    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Json::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        Deserialize::deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = Vec::with_capacity(map.size_hint().unwrap_or(0).min(64));
        while let Some(key) = map.next_key::<Key<'de>>()? {
            let value: Json<'de> = map.next_value()?;
            members.push((key.0, value));
        }
        Ok(Json::Object(members))
    }
}

/// An object key, borrowed when it has no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E>(self, s: String) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(s)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::Json;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    // The reads as they were written against `Value`, before this tree replaced it.
    fn value_as_number(v: &Value) -> Option<f64> {
        match v {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
            _ => None,
        }
    }

    fn value_as_text(v: &Value) -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    fn value_as_id(v: &Value) -> Option<String> {
        match v {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
            _ => None,
        }
    }

    #[test]
    fn pointers_resolve_like_serde_json() {
        let v = json!({"a": {"b/c": [10, {"~x": 2}]}, "": 1, "0": "zero"});
        let text = v.to_string();
        let tree = Json::parse(text.as_bytes()).expect("parses");
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
            assert_eq!(
                tree.pointer(p).map(Json::to_value).as_ref(),
                v.pointer(p),
                "{p}"
            );
        }
    }

    fn both(text: &str) -> (Json<'_>, Value) {
        let json = Json::parse(text.as_bytes()).expect("parses");
        let value: Value = serde_json::from_str(text).expect("parses");
        (json, value)
    }

    #[test]
    fn repeated_keys_keep_the_last_value_as_value_does() {
        let (json, value) = both(r#"{"a": 1, "b": {"c": "x"}, "a": 2}"#);
        assert_eq!(json.to_value(), value);
        assert_eq!(json.pointer("/a").and_then(Json::as_number), Some(2.0));
        assert_eq!(json.preview(), crate::jsonx::preview(&value));
    }

    #[test]
    fn escaped_strings_are_owned_and_equal() {
        let (json, value) = both(r#"{"t\u00e9xt": "Cẩm Lệ \"ngập\"\n", "n": -3, "f": 1.5e3}"#);
        assert_eq!(json.to_value(), value);
        assert_eq!(
            json.pointer("/téxt").and_then(Json::as_text).as_deref(),
            Some("Cẩm Lệ \"ngập\"\n")
        );
        assert_eq!(
            json.pointer("/n").and_then(Json::as_id).as_deref(),
            Some("-3")
        );
        assert_eq!(
            json.pointer("/f").and_then(Json::as_text).as_deref(),
            Some("1500.0")
        );
    }

    #[test]
    fn failures_have_the_reasons_of_jsonx_parse() {
        for bad in [&b"\xff{}"[..], b"{\"a\":", b"[1,]", b"nul"] {
            let mine = Json::parse(bad).expect_err("fails");
            let theirs = crate::jsonx::parse::<Value>(bad).expect_err("fails");
            assert_eq!((mine.reason, mine.message), (theirs.reason, theirs.message));
        }
    }

    fn arbitrary_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            "[a-c~/\\\\\"é ]{0,4}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map("[a-c0-1~/]{0,2}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Bytes that are mostly JSON text, some of it broken, some not UTF-8.
    fn json_ish_bytes() -> impl Strategy<Value = Vec<u8>> {
        (
            arbitrary_json(),
            proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
        )
            .prop_map(|(v, edits)| {
                let mut bytes = v.to_string().into_bytes();
                for (at, byte) in edits {
                    if !bytes.is_empty() {
                        let i = at.index(bytes.len());
                        bytes[i] = byte;
                    }
                }
                bytes
            })
    }

    proptest! {
        #[test]
        fn parses_and_fails_as_the_value_parse_does(bytes in json_ish_bytes()) {
            match (Json::parse(&bytes), crate::jsonx::parse::<Value>(&bytes)) {
                (Ok(json), Ok(value)) => prop_assert_eq!(json.to_value(), value),
                (Err(mine), Err(theirs)) => {
                    prop_assert_eq!(mine.reason, theirs.reason);
                    prop_assert_eq!(mine.message, theirs.message);
                }
                (mine, theirs) => prop_assert!(false, "{:?} against {:?}", mine.map(|j| j.to_value()), theirs),
            }
        }

        #[test]
        fn answers_as_value_does(v in arbitrary_json(), tokens in proptest::collection::vec("[a-c0-1~/]{0,2}", 0..3)) {
            let text = v.to_string();
            let json = Json::parse(text.as_bytes()).expect("parses");
            let value: Value = serde_json::from_str(&text).expect("parses");
            prop_assert_eq!(json.to_value(), value.clone());
            let p: String = tokens.iter().map(|t| format!("/{t}")).collect();
            let mine = json.pointer(&p);
            let theirs = value.pointer(&p);
            prop_assert_eq!(mine.map(Json::to_value), theirs.cloned());
            prop_assert_eq!(mine.and_then(Json::as_text), theirs.and_then(value_as_text));
            prop_assert_eq!(mine.and_then(Json::as_id), theirs.and_then(value_as_id));
            prop_assert_eq!(mine.and_then(Json::as_number), theirs.and_then(value_as_number));
            prop_assert_eq!(mine.and_then(Json::as_text_cow).map(|t| t.into_owned()), theirs.and_then(value_as_text));
            prop_assert_eq!(mine.map(Json::type_name), theirs.map(crate::jsonx::type_name));
        }
    }
}
