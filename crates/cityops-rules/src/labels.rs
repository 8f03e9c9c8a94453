//! The label names a rule can select and group events by, and how they are read off an event.

use cityops_event::Event;

/// A label of an event: one of the event's own fields, or an attribute by name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Field {
    /// `feed`: the feed that decoded the event.
    Feed,
    /// `domain`: the city domain (`water`, `environment`, ...).
    Domain,
    /// `metric`: the measured quantity (`water_level`, `pm25`, `status`).
    Metric,
    /// `entity_id`: the station, gauge, light, bus, report.
    EntityId,
    /// `entity_type`.
    EntityType,
    /// `district`.
    District,
    /// `ward`.
    Ward,
    /// `unit`.
    Unit,
    /// `quality`: `good`, `suspect` or `bad`.
    Quality,
    /// Any other name: the event attribute of that name (empty when absent).
    Attr(String),
}

impl Field {
    /// The field a label name refers to.
    pub fn from_name(name: &str) -> Field {
        match name {
            "feed" => Field::Feed,
            "domain" => Field::Domain,
            "metric" => Field::Metric,
            "entity_id" => Field::EntityId,
            "entity_type" => Field::EntityType,
            "district" => Field::District,
            "ward" => Field::Ward,
            "unit" => Field::Unit,
            "quality" => Field::Quality,
            other => Field::Attr(other.to_owned()),
        }
    }

    /// The label's value on `event`; an absent attribute reads as empty, as a missing label
    /// does in Prometheus.
    pub fn get<'a>(&self, event: &'a Event) -> &'a str {
        match self {
            Field::Feed => &event.feed,
            Field::Domain => event.domain.as_str(),
            Field::Metric => &event.metric,
            Field::EntityId => &event.entity_id,
            Field::EntityType => &event.entity_type,
            Field::District => &event.district,
            Field::Ward => &event.ward,
            Field::Unit => &event.unit,
            Field::Quality => event.quality.as_str(),
            Field::Attr(name) => event.attrs.get(name).map_or("", String::as_str),
        }
    }
}

/// Whether `name` can be an Alertmanager label name (`[a-zA-Z_][a-zA-Z0-9_]*`).
pub fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Label names an alert sets itself; a rule may not group by them or set them as labels.
pub const RESERVED: [&str; 2] = ["alertname", "severity"];
