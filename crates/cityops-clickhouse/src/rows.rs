//! Rust row types of the cityops tables, in column order (RowBinary is positional). A test
//! compares each with `system.columns` on the real server, because the client's own schema
//! validation has to stay off on ClickHouse 18.16.

use cityops_event::Event;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A row type's table and its columns with their ClickHouse types, in order.
pub trait TableColumns {
    /// The table name (without database).
    const TABLE: &'static str;
    /// `(column, type)` pairs exactly as `system.columns` shows them.
    const COLUMNS: &'static [(&'static str, &'static str)];
}

/// Where a row came from, stored with it so that replays can be recognised.
#[derive(Debug, Clone, Copy)]
pub struct RowSource<'a> {
    /// `kafka`, `mqtt` or `file`.
    pub kind: &'static str,
    /// Topic the message arrived on.
    pub topic: &'a str,
    /// Kafka partition; -1 when the source has none.
    pub partition: i32,
    /// Kafka offset or MQTT spool sequence; -1 when the source has none.
    pub offset: i64,
}

/// A row of `events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clickhouse::Row)]
pub struct EventRow {
    /// See [`Event::event_id`].
    #[serde(with = "clickhouse::serde::uuid")]
    pub event_id: Uuid,
    /// Event time, whole seconds.
    pub ts: u32,
    /// Milliseconds within `ts`.
    pub ts_ms: u16,
    /// Arrival time, whole seconds.
    pub ingested_at: u32,
    /// Feed name.
    pub feed: String,
    /// Domain name.
    pub domain: String,
    /// Entity id.
    pub entity_id: String,
    /// Entity type.
    pub entity_type: String,
    /// Metric name.
    pub metric: String,
    /// Numeric value.
    pub value: Option<f64>,
    /// Text value.
    pub text: Option<String>,
    /// Unit.
    pub unit: String,
    /// District.
    pub district: String,
    /// Ward.
    pub ward: String,
    /// Latitude.
    pub lat: Option<f64>,
    /// Longitude.
    pub lon: Option<f64>,
    /// Attribute names (parallel to `attr_values`; 18.16 has no Map).
    pub attr_keys: Vec<String>,
    /// Attribute values.
    pub attr_values: Vec<String>,
    /// Quality flag.
    pub quality: String,
    /// Source kind.
    pub source_kind: String,
    /// Source topic.
    pub source_topic: String,
    /// Kafka partition or -1.
    pub source_partition: i32,
    /// Kafka offset, spool sequence, or -1.
    pub source_offset: i64,
}

impl TableColumns for EventRow {
    const TABLE: &'static str = "events";
    const COLUMNS: &'static [(&'static str, &'static str)] = &[
        ("event_id", "UUID"),
        ("ts", "DateTime('UTC')"),
        ("ts_ms", "UInt16"),
        ("ingested_at", "DateTime('UTC')"),
        ("feed", "LowCardinality(String)"),
        ("domain", "LowCardinality(String)"),
        ("entity_id", "String"),
        ("entity_type", "LowCardinality(String)"),
        ("metric", "LowCardinality(String)"),
        ("value", "Nullable(Float64)"),
        ("text", "Nullable(String)"),
        ("unit", "LowCardinality(String)"),
        ("district", "LowCardinality(String)"),
        ("ward", "LowCardinality(String)"),
        ("lat", "Nullable(Float64)"),
        ("lon", "Nullable(Float64)"),
        ("attr_keys", "Array(String)"),
        ("attr_values", "Array(String)"),
        ("quality", "LowCardinality(String)"),
        ("source_kind", "LowCardinality(String)"),
        ("source_topic", "String"),
        ("source_partition", "Int32"),
        ("source_offset", "Int64"),
    ];
}

impl EventRow {
    /// The row for `event`, received from `source`.
    pub fn new(event: &Event, source: &RowSource<'_>) -> Self {
        EventRow {
            event_id: event.event_id,
            ts: event.ts.unix_seconds(),
            ts_ms: event.ts.subsec_millis(),
            ingested_at: event.ingested_at.unix_seconds(),
            feed: event.feed.clone(),
            domain: event.domain.as_str().to_owned(),
            entity_id: event.entity_id.clone(),
            entity_type: event.entity_type.clone(),
            metric: event.metric.clone(),
            value: event.value,
            text: event.text.clone(),
            unit: event.unit.clone(),
            district: event.district.clone(),
            ward: event.ward.clone(),
            lat: event.lat,
            lon: event.lon,
            attr_keys: event.attrs.keys().cloned().collect(),
            attr_values: event.attrs.values().cloned().collect(),
            quality: event.quality.as_str().to_owned(),
            source_kind: source.kind.to_owned(),
            source_topic: source.topic.to_owned(),
            source_partition: source.partition,
            source_offset: source.offset,
        }
    }
}

/// A row of `rejects`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clickhouse::Row)]
pub struct RejectRow {
    /// Deterministic id of the reject (from its source coordinates when it has them).
    #[serde(with = "clickhouse::serde::uuid")]
    pub reject_id: Uuid,
    /// Arrival time, whole seconds.
    pub received_at: u32,
    /// Milliseconds within `received_at`.
    pub received_ms: u16,
    /// Feed that tried to decode it; empty for `no_matching_feed`.
    pub feed: String,
    /// Reject reason.
    pub reason: String,
    /// Human message naming the field.
    pub message: String,
    /// Raw payload bytes (bounded).
    #[serde(with = "serde_bytes_as_string")]
    pub raw: Vec<u8>,
    /// Length of the whole payload.
    pub raw_len: u32,
    /// 1 when `raw` was cut.
    pub raw_truncated: u8,
    /// Source kind.
    pub source_kind: String,
    /// Source topic.
    pub source_topic: String,
    /// Kafka partition or -1.
    pub source_partition: i32,
    /// Kafka offset, spool sequence, or -1.
    pub source_offset: i64,
}

/// ClickHouse `String` holds arbitrary bytes; RowBinary writes them length-prefixed, which is
/// what serde's bytes do.
mod serde_bytes_as_string {
    use serde::de::{Error, Visitor};
    use serde::{Deserializer, Serializer};
    use std::fmt;

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        struct BytesVisitor;
        impl Visitor<'_> for BytesVisitor {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
            fn visit_str<E: Error>(self, v: &str) -> Result<Vec<u8>, E> {
                Ok(v.as_bytes().to_vec())
            }
        }
        deserializer.deserialize_byte_buf(BytesVisitor)
    }
}

impl TableColumns for RejectRow {
    const TABLE: &'static str = "rejects";
    const COLUMNS: &'static [(&'static str, &'static str)] = &[
        ("reject_id", "UUID"),
        ("received_at", "DateTime('UTC')"),
        ("received_ms", "UInt16"),
        ("feed", "LowCardinality(String)"),
        ("reason", "LowCardinality(String)"),
        ("message", "String"),
        ("raw", "String"),
        ("raw_len", "UInt32"),
        ("raw_truncated", "UInt8"),
        ("source_kind", "LowCardinality(String)"),
        ("source_topic", "String"),
        ("source_partition", "Int32"),
        ("source_offset", "Int64"),
    ];
}

/// A row of `alert_events`: one alert state change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clickhouse::Row)]
pub struct AlertEventRow {
    /// Id of the state change.
    #[serde(with = "clickhouse::serde::uuid")]
    pub alert_event_id: Uuid,
    /// When the state changed, whole seconds.
    pub ts: u32,
    /// Milliseconds within `ts`.
    pub ts_ms: u16,
    /// Rule name.
    pub rule: String,
    /// Identity of the alert instance (rule + labels).
    pub fingerprint: String,
    /// New state.
    pub state: String,
    /// State before the change.
    pub previous_state: String,
    /// Severity.
    pub severity: String,
    /// Domain.
    pub domain: String,
    /// Entity the alert is about, if one.
    pub entity_id: String,
    /// District.
    pub district: String,
    /// The value that triggered it.
    pub value: Option<f64>,
    /// One-line summary for on-call staff.
    pub summary: String,
    /// Label names.
    pub label_keys: Vec<String>,
    /// Label values.
    pub label_values: Vec<String>,
    /// Who acted (acknowledged, unacknowledged, commented); empty for state changes.
    pub actor: String,
    /// What they wrote.
    pub comment: String,
    /// The escalation level (of an `escalated` row, or the alert's at the time).
    pub escalation: u8,
    /// The alerter replica that wrote the row.
    pub replica: String,
}

impl TableColumns for AlertEventRow {
    const TABLE: &'static str = "alert_events";
    const COLUMNS: &'static [(&'static str, &'static str)] = &[
        ("alert_event_id", "UUID"),
        ("ts", "DateTime('UTC')"),
        ("ts_ms", "UInt16"),
        ("rule", "LowCardinality(String)"),
        ("fingerprint", "String"),
        ("state", "LowCardinality(String)"),
        ("previous_state", "LowCardinality(String)"),
        ("severity", "LowCardinality(String)"),
        ("domain", "LowCardinality(String)"),
        ("entity_id", "String"),
        ("district", "LowCardinality(String)"),
        ("value", "Nullable(Float64)"),
        ("summary", "String"),
        ("label_keys", "Array(String)"),
        ("label_values", "Array(String)"),
        ("actor", "String"),
        ("comment", "String"),
        ("escalation", "UInt8"),
        ("replica", "LowCardinality(String)"),
    ];
}

#[cfg(test)]
mod tests {
    use super::*;
    use clickhouse::Row;

    #[test]
    fn declared_columns_follow_the_struct_fields() {
        fn names<T: TableColumns>() -> Vec<&'static str> {
            T::COLUMNS.iter().map(|(n, _)| *n).collect()
        }
        assert_eq!(names::<EventRow>(), EventRow::COLUMN_NAMES);
        assert_eq!(names::<RejectRow>(), RejectRow::COLUMN_NAMES);
        assert_eq!(names::<AlertEventRow>(), AlertEventRow::COLUMN_NAMES);
    }
}
