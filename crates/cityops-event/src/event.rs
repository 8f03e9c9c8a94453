//! The [`Event`] struct itself.

use crate::{Domain, Quality, Timestamp};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use uuid::Uuid;

/// Free-form string labels of an event, sorted by key so output is deterministic.
pub type Attrs = BTreeMap<String, String>;

/// One measured quantity of one city entity at one time.
///
/// Wide device payloads (a station reporting six pollutants) become six events. This "long"
/// shape lets one table, one rollup and one rule engine serve every feed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// Deterministic id (see [`crate::EventId`]): a replay of the same source message yields
    /// the same id, which is what deduplication keys on.
    pub event_id: Uuid,
    /// When the quantity was measured or the state changed (event time), UTC, milliseconds.
    /// Taken from the payload when it carries one, else the arrival time.
    pub ts: Timestamp,
    /// When cityops received the message carrying this event, UTC, milliseconds.
    pub ingested_at: Timestamp,
    /// Name of the feed (from config) that decoded the message.
    pub feed: String,
    /// City domain, from the feed's config.
    pub domain: Domain,
    /// Stable id of the thing measured: a station, gauge, light, bus, dossier, report.
    pub entity_id: String,
    /// Kind of entity, e.g. `AirQualityObserved`, `Streetlight`, `Bus`; may be empty.
    pub entity_type: String,
    /// Name of the measured quantity, e.g. `pm25`, `water_level`, `status`.
    pub metric: String,
    /// Numeric value; booleans are 1.0 / 0.0. `None` when the value is text only.
    pub value: Option<f64>,
    /// Text value: a status, a category, a citizen's report text (UTF-8, often Vietnamese).
    pub text: Option<String>,
    /// Unit of `value` as the source states it (`ug/m3`, `Cel`, `m`); empty when unitless.
    pub unit: String,
    /// District (quận/huyện), e.g. `Hải Châu`; empty when unknown.
    pub district: String,
    /// Ward (phường/xã); empty when unknown.
    pub ward: String,
    /// WGS 84 latitude in degrees, when known.
    pub lat: Option<f64>,
    /// WGS 84 longitude in degrees, when known.
    pub lon: Option<f64>,
    /// Other string labels (device model, dataset id, relationships), sorted by key.
    pub attrs: Attrs,
    /// Trust in the value (see [`Quality`]).
    pub quality: Quality,
}

impl Default for Event {
    /// An event with every field empty (domain `other`, quality `good`, time the epoch): a
    /// base for events built field by field, such as a rule test's input series.
    fn default() -> Self {
        Event {
            event_id: Uuid::nil(),
            ts: Timestamp::MIN,
            ingested_at: Timestamp::MIN,
            feed: String::new(),
            domain: Domain::Other,
            entity_id: String::new(),
            entity_type: String::new(),
            metric: String::new(),
            value: None,
            text: None,
            unit: String::new(),
            district: String::new(),
            ward: String::new(),
            lat: None,
            lon: None,
            attrs: Attrs::new(),
            quality: Quality::Good,
        }
    }
}
