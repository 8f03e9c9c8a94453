//! Events for the unit tests.

use cityops_event::{Domain, Event, Timestamp};

/// A water-level event of gauge-07 in Hải Châu at `ts` ms, arriving then, value 2.6.
pub fn event() -> Event {
    at("gauge-07", 0, Some(2.6))
}

/// A water-level event of `entity` at `ts` ms (arriving at the same time) with `value`.
pub fn at(entity: &str, ts: i64, value: Option<f64>) -> Event {
    Event {
        ts: Timestamp::from_millis(ts).expect("test time"),
        ingested_at: Timestamp::from_millis(ts).expect("test time"),
        feed: "flood_gauges".into(),
        domain: Domain::Water,
        entity_id: entity.into(),
        entity_type: "WaterLevelObserved".into(),
        metric: "water_level".into(),
        value,
        unit: "m".into(),
        district: "Hải Châu".into(),
        ward: "Thạch Thang".into(),
        attrs: [("station".to_string(), "Cầu Rồng".to_string())].into(),
        ..Event::default()
    }
}
