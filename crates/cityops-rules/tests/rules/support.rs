//! Building events and rule sets for the tests.

use cityops_event::{Domain, Event, Timestamp};
use cityops_rules::RuleSet;

/// The tests' clock starts a day after the epoch, so that a device's clock can be behind.
pub const BASE_MS: i64 = 86_400_000;

/// A rule set from one YAML text; panics with every error.
pub fn rules(yaml: &str) -> RuleSet {
    RuleSet::parse(&[("test.yaml".to_string(), yaml.to_string())]).unwrap_or_else(|errors| {
        panic!(
            "rules do not load:\n{}",
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        )
    })
}

/// An event of `entity` with a numeric value, event time and arrival in ms after `BASE_MS`.
pub fn event(entity: &str, ts: i64, arrival: i64, value: f64) -> Event {
    Event {
        ts: Timestamp::from_millis(BASE_MS + ts).expect("test time"),
        ingested_at: Timestamp::from_millis(BASE_MS + arrival).expect("test time"),
        feed: "f".into(),
        domain: Domain::Water,
        entity_id: entity.into(),
        metric: "level".into(),
        value: Some(value),
        district: "Hải Châu".into(),
        ..Event::default()
    }
}
