//! The closed sets an event is classified by: its city domain and its quality flag.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The area of city operations an event belongs to.
///
/// A closed set on purpose: dashboards, rollups and alert routing group by it, so a new value is
/// a schema decision, not a typo in one feed's config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Domain {
    /// Air quality, noise, weather.
    Environment,
    /// Flood and river levels, rainfall, drainage, water quality.
    Water,
    /// Traffic counters, congestion, intersections.
    Traffic,
    /// Buses, public transport vehicles and stops.
    Transport,
    /// Street lighting.
    Lighting,
    /// Parking spots and garages.
    Parking,
    /// Waste bins and collection.
    Waste,
    /// Camera AI events, incidents, public safety.
    Safety,
    /// Online public-service dossiers (hồ sơ dịch vụ công).
    PublicService,
    /// Citizen reports from the Danang Smart City app and the hotline.
    CitizenReport,
    /// Hospitals, beds, health services.
    Health,
    /// Power and energy consumption.
    Energy,
    /// Anything not covered above.
    Other,
}

impl Domain {
    /// Every domain, in declaration order.
    pub const ALL: [Domain; 13] = [
        Domain::Environment,
        Domain::Water,
        Domain::Traffic,
        Domain::Transport,
        Domain::Lighting,
        Domain::Parking,
        Domain::Waste,
        Domain::Safety,
        Domain::PublicService,
        Domain::CitizenReport,
        Domain::Health,
        Domain::Energy,
        Domain::Other,
    ];

    /// The lowercase name used in config, JSON and ClickHouse.
    pub fn as_str(self) -> &'static str {
        match self {
            Domain::Environment => "environment",
            Domain::Water => "water",
            Domain::Traffic => "traffic",
            Domain::Transport => "transport",
            Domain::Lighting => "lighting",
            Domain::Parking => "parking",
            Domain::Waste => "waste",
            Domain::Safety => "safety",
            Domain::PublicService => "public_service",
            Domain::CitizenReport => "citizen_report",
            Domain::Health => "health",
            Domain::Energy => "energy",
            Domain::Other => "other",
        }
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Domain {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Domain::ALL
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| format!("unknown domain {s:?}"))
    }
}

/// How far an event's value can be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quality {
    /// Nothing known against it.
    #[default]
    Good,
    /// Plausibility failed (outside the configured valid range) or the device flagged it as
    /// doubtful (calibrating, warming up). Kept, shown, but not trusted for alerts.
    Suspect,
    /// The device itself reported the measurement as faulty.
    Bad,
}

impl Quality {
    /// The lowercase name used in JSON and ClickHouse.
    pub fn as_str(self) -> &'static str {
        match self {
            Quality::Good => "good",
            Quality::Suspect => "suspect",
            Quality::Bad => "bad",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_names_round_trip_through_str_and_serde() {
        for d in Domain::ALL {
            assert_eq!(d.as_str().parse::<Domain>().unwrap(), d);
            let json = serde_json::to_string(&d).unwrap();
            assert_eq!(json, format!("\"{}\"", d.as_str()));
        }
        assert!("air".parse::<Domain>().is_err());
    }
}
