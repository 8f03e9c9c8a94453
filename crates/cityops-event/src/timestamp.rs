//! Event time: UTC milliseconds since the Unix epoch, within what ClickHouse `DateTime` holds.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A UTC instant with millisecond precision.
///
/// The range is 1970-01-01T00:00:00Z to 2106-02-07T06:28:15.999Z, the range of ClickHouse's
/// `DateTime` (seconds as UInt32) plus a milliseconds column; anything outside cannot be stored
/// and is rejected when a timestamp is built. Serialized as RFC 3339 with milliseconds and `Z`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

/// Why a value could not become a [`Timestamp`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    /// The instant lies outside 1970..2106.
    #[error("timestamp outside 1970-01-01..2106-02-07 (ClickHouse DateTime range)")]
    OutOfRange,
    /// The number was NaN or infinite.
    #[error("timestamp is not a finite number")]
    NotFinite,
    /// The text is not an RFC 3339 date-time.
    #[error("not an RFC 3339 timestamp: {0}")]
    Syntax(String),
}

impl Timestamp {
    /// The earliest storable instant, the Unix epoch.
    pub const MIN: Timestamp = Timestamp(0);
    /// The latest storable instant (`u32::MAX` seconds plus 999 ms).
    pub const MAX: Timestamp = Timestamp(u32::MAX as i64 * 1000 + 999);

    /// Builds a timestamp from milliseconds since the epoch.
    pub fn from_millis(ms: i64) -> Result<Self, TimestampError> {
        if (Self::MIN.0..=Self::MAX.0).contains(&ms) {
            Ok(Timestamp(ms))
        } else {
            Err(TimestampError::OutOfRange)
        }
    }

    /// Builds a timestamp from fractional seconds since the epoch, rounded to the millisecond.
    pub fn from_secs_f64(secs: f64) -> Result<Self, TimestampError> {
        Self::from_millis_f64(secs * 1000.0)
    }

    /// Builds a timestamp from fractional milliseconds since the epoch, rounded.
    pub fn from_millis_f64(ms: f64) -> Result<Self, TimestampError> {
        if !ms.is_finite() {
            return Err(TimestampError::NotFinite);
        }
        let rounded = ms.round();
        if rounded < Self::MIN.0 as f64 || rounded > Self::MAX.0 as f64 {
            return Err(TimestampError::OutOfRange);
        }
        Ok(Timestamp(rounded as i64))
    }

    /// Parses an RFC 3339 date-time with any offset; sub-millisecond digits are truncated.
    pub fn parse_rfc3339(text: &str) -> Result<Self, TimestampError> {
        let parsed = OffsetDateTime::parse(text, &Rfc3339)
            .map_err(|e| TimestampError::Syntax(e.to_string()))?;
        let ms = parsed.unix_timestamp_nanos().div_euclid(1_000_000);
        let ms = i64::try_from(ms).map_err(|_| TimestampError::OutOfRange)?;
        Self::from_millis(ms)
    }

    /// Milliseconds since the epoch.
    pub fn as_millis(self) -> i64 {
        self.0
    }

    /// Whole seconds since the epoch, as ClickHouse `DateTime` stores them.
    pub fn unix_seconds(self) -> u32 {
        // The range check at construction makes this lossless.
        (self.0 / 1000) as u32
    }

    /// The milliseconds within the second (0..=999).
    pub fn subsec_millis(self) -> u16 {
        (self.0 % 1000) as u16
    }

    /// This instant moved by a signed number of milliseconds, if still in range.
    pub fn checked_add_millis(self, delta: i64) -> Option<Self> {
        self.0
            .checked_add(delta)
            .and_then(|ms| Self::from_millis(ms).ok())
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The range check at construction makes the conversion infallible in practice; fall back
        // to the raw number rather than panic if that ever changes.
        match OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000_000) {
            Ok(t) => write!(
                f,
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second(),
                t.millisecond()
            ),
            Err(_) => write!(f, "{}ms", self.0),
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Timestamp::parse_rfc3339(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn formats_with_millis_and_z() {
        let t = Timestamp::from_millis(1_320_067_464_123).unwrap();
        assert_eq!(t.to_string(), "2011-10-31T13:24:24.123Z");
        assert_eq!(t.unix_seconds(), 1_320_067_464);
        assert_eq!(t.subsec_millis(), 123);
    }

    #[test]
    fn parses_offsets_and_truncates_below_millis() {
        let t = Timestamp::parse_rfc3339("2026-11-26T11:00:00.123456+07:00").unwrap();
        assert_eq!(t.to_string(), "2026-11-26T04:00:00.123Z");
    }

    #[test]
    fn rejects_out_of_range_and_non_finite() {
        assert_eq!(Timestamp::from_millis(-1), Err(TimestampError::OutOfRange));
        assert_eq!(
            Timestamp::from_secs_f64(5e9),
            Err(TimestampError::OutOfRange)
        );
        assert_eq!(
            Timestamp::from_secs_f64(f64::NAN),
            Err(TimestampError::NotFinite)
        );
        assert!(Timestamp::parse_rfc3339("1969-12-31T23:59:59Z").is_err());
        assert!(Timestamp::parse_rfc3339("yesterday").is_err());
        assert_eq!(Timestamp::MAX.to_string(), "2106-02-07T06:28:15.999Z");
    }

    proptest! {
        #[test]
        fn display_then_parse_round_trips(ms in 0i64..=Timestamp::MAX.as_millis()) {
            let t = Timestamp::from_millis(ms).unwrap();
            prop_assert_eq!(Timestamp::parse_rfc3339(&t.to_string()).unwrap(), t);
        }
    }
}
