//! Rejects: a payload that could not become events, with a machine-readable reason, a message
//! naming the field, and the raw bytes (bounded).

use serde::Serialize;
use std::fmt;

/// Why a payload was rejected. A closed set: it is a metric label and a ClickHouse `Enum`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// The payload is not valid UTF-8 (JSON decoders).
    InvalidUtf8,
    /// The payload is not valid JSON.
    InvalidJson,
    /// The payload is not valid CBOR (SenML CBOR).
    InvalidCbor,
    /// The payload exceeds the feed's `max_payload_bytes`.
    TooLarge,
    /// The payload would yield more events than the feed's `max_events_per_payload`.
    TooManyEvents,
    /// A required field is absent or null.
    MissingField,
    /// A field has the wrong JSON type (a string where a number belongs, ...).
    WrongType,
    /// A number is NaN or infinite after scaling or base-value arithmetic.
    NotFinite,
    /// A value is outside its hard bounds (latitude beyond 90 degrees, ...).
    OutOfRange,
    /// A timestamp field cannot be read as a time.
    InvalidTimestamp,
    /// The event time is outside the feed's accepted window or ClickHouse's range.
    TsOutOfRange,
    /// No feed reads this source and topic.
    NoMatchingFeed,
    /// The payload is well-formed but yields no event.
    Empty,
    /// The payload breaks a SenML rule of RFC 8428 (name syntax, value fields, version).
    InvalidSenml,
    /// The payload breaks an NGSI-LD rule (entity without id or type, ...).
    InvalidNgsiLd,
}

impl RejectReason {
    /// Every reason, in declaration order.
    pub const ALL: [RejectReason; 15] = [
        RejectReason::InvalidUtf8,
        RejectReason::InvalidJson,
        RejectReason::InvalidCbor,
        RejectReason::TooLarge,
        RejectReason::TooManyEvents,
        RejectReason::MissingField,
        RejectReason::WrongType,
        RejectReason::NotFinite,
        RejectReason::OutOfRange,
        RejectReason::InvalidTimestamp,
        RejectReason::TsOutOfRange,
        RejectReason::NoMatchingFeed,
        RejectReason::Empty,
        RejectReason::InvalidSenml,
        RejectReason::InvalidNgsiLd,
    ];

    /// The snake_case name used in JSON output, ClickHouse and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::InvalidUtf8 => "invalid_utf8",
            RejectReason::InvalidJson => "invalid_json",
            RejectReason::InvalidCbor => "invalid_cbor",
            RejectReason::TooLarge => "too_large",
            RejectReason::TooManyEvents => "too_many_events",
            RejectReason::MissingField => "missing_field",
            RejectReason::WrongType => "wrong_type",
            RejectReason::NotFinite => "not_finite",
            RejectReason::OutOfRange => "out_of_range",
            RejectReason::InvalidTimestamp => "invalid_timestamp",
            RejectReason::TsOutOfRange => "ts_out_of_range",
            RejectReason::NoMatchingFeed => "no_matching_feed",
            RejectReason::Empty => "empty",
            RejectReason::InvalidSenml => "invalid_senml",
            RejectReason::InvalidNgsiLd => "invalid_ngsi_ld",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A decoding failure before the raw bytes are attached: reason and message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct Failure {
    /// Machine-readable reason.
    pub reason: RejectReason,
    /// Human message naming the field (`/data/pm25 (metric pm25): expected a number, got "n/a"`).
    pub message: String,
}

impl Failure {
    /// A failure with `reason` and `message`.
    pub fn new(reason: RejectReason, message: impl Into<String>) -> Self {
        Failure {
            reason,
            message: message.into(),
        }
    }
}

/// A payload that did not become events. Never dropped: ingest writes it to the `rejects` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    /// Machine-readable reason.
    pub reason: RejectReason,
    /// Human message naming the field.
    pub message: String,
    /// The feed that tried to decode it; `None` for `no_matching_feed`.
    pub feed: Option<String>,
    /// The raw payload, cut to `rejects.max_raw_bytes`.
    pub raw: Vec<u8>,
    /// Length of the whole payload in bytes.
    pub raw_len: usize,
}

impl Reject {
    /// Builds a reject, keeping at most `max_raw_bytes` of the payload.
    pub fn new(failure: Failure, feed: Option<&str>, payload: &[u8], max_raw_bytes: usize) -> Self {
        Reject {
            reason: failure.reason,
            message: failure.message,
            feed: feed.map(str::to_owned),
            raw: payload[..payload.len().min(max_raw_bytes)].to_vec(),
            raw_len: payload.len(),
        }
    }

    /// Whether `raw` holds less than the whole payload.
    pub fn raw_truncated(&self) -> bool {
        self.raw.len() < self.raw_len
    }
}
