//! Injected incidents and their ground truth, for alert-quality tests and the demo.

use crate::devices::Device;
use crate::{DISTRICTS, SimMessage, SimOptions, Transport};
use cityops_event::Timestamp;
use serde::Serialize;
use std::fmt;
use std::str::FromStr;

/// The incidents the simulator can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScenarioKind {
    /// Heavy rain over one district; its gauges rise past 3 m with a lag.
    Flood,
    /// A PM2.5 and PM10 spike in one district.
    Pollution,
    /// Every sensor of one district goes silent.
    Outage,
    /// Ten times the usual citizen reports from one district, mostly about waste.
    ComplaintSpike,
    /// Public-service dossiers of one district run past their due date.
    Overdue,
    /// Every feed stops: the upstream pipeline stalls.
    PipelineStall,
}

impl ScenarioKind {
    /// Every scenario.
    pub const ALL: [ScenarioKind; 6] = [
        ScenarioKind::Flood,
        ScenarioKind::Pollution,
        ScenarioKind::Outage,
        ScenarioKind::ComplaintSpike,
        ScenarioKind::Overdue,
        ScenarioKind::PipelineStall,
    ];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            ScenarioKind::Flood => "flood",
            ScenarioKind::Pollution => "pollution",
            ScenarioKind::Outage => "outage",
            ScenarioKind::ComplaintSpike => "complaint-spike",
            ScenarioKind::Overdue => "overdue",
            ScenarioKind::PipelineStall => "pipeline-stall",
        }
    }

    /// The district it strikes by default (index into [`DISTRICTS`]).
    pub fn default_district(self) -> usize {
        match self {
            ScenarioKind::Flood => 5,          // Cẩm Lệ, by the river
            ScenarioKind::Pollution => 4,      // Liên Chiểu, the industrial zone
            ScenarioKind::Outage => 2,         // Sơn Trà
            ScenarioKind::ComplaintSpike => 1, // Thanh Khê
            ScenarioKind::Overdue => 0,        // Hải Châu
            ScenarioKind::PipelineStall => 0,
        }
    }
}

impl fmt::Display for ScenarioKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ScenarioKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ScenarioKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown scenario {s:?}; scenarios: {}",
                    ScenarioKind::ALL.map(ScenarioKind::name).join(", ")
                )
            })
    }
}

/// When and where an incident happens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScenarioSpec {
    /// What happens.
    pub kind: ScenarioKind,
    /// Milliseconds after the simulation start at which it begins (virtual time).
    pub at_ms: i64,
    /// How long it lasts, in milliseconds of virtual time.
    pub duration_ms: i64,
    /// Index of the district in [`DISTRICTS`].
    pub district: usize,
}

impl ScenarioSpec {
    /// A scenario of `kind` in its default district.
    pub fn new(kind: ScenarioKind, at_ms: i64, duration_ms: i64) -> Self {
        ScenarioSpec {
            kind,
            at_ms,
            duration_ms,
            district: kind.default_district(),
        }
    }

    /// Whether it is under way at `now`.
    pub fn active(&self, start: Timestamp, now: Timestamp) -> bool {
        let offset = now.as_millis() - start.as_millis();
        offset >= self.at_ms && offset < self.at_ms + self.duration_ms
    }

    /// Whether `kind` is under way at `now` in `district`.
    pub fn strikes(
        spec: Option<&ScenarioSpec>,
        kind: ScenarioKind,
        start: Timestamp,
        now: Timestamp,
        district: usize,
    ) -> bool {
        spec.is_some_and(|s| s.kind == kind && s.district == district && s.active(start, now))
    }
}

/// What was injected, where and when, written next to the data so that alert-quality tests can
/// score recall and false alerts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroundTruth {
    /// Scenario name.
    pub scenario: &'static str,
    /// District name (empty for city-wide scenarios).
    pub district: String,
    /// When it begins.
    pub start: Timestamp,
    /// When it ends.
    pub end: Timestamp,
    /// Feeds that show it.
    pub feeds: Vec<&'static str>,
    /// Entities that show it (gauges, stations, sensors); empty when the whole feed does.
    pub entities: Vec<String>,
    /// What a correct alert would say.
    pub expect: &'static str,
}

pub(crate) fn ground_truth(
    spec: &ScenarioSpec,
    options: &SimOptions,
    devices: &[Device],
) -> GroundTruth {
    let start =
        Timestamp::from_millis(options.start.as_millis() + spec.at_ms).unwrap_or(options.start);
    let end = Timestamp::from_millis(start.as_millis() + spec.duration_ms).unwrap_or(start);
    let district = DISTRICTS
        .get(spec.district)
        .map(|d| d.name.to_owned())
        .unwrap_or_default();
    let in_district = |feed: &str| -> Vec<String> {
        devices
            .iter()
            .filter(|d| d.feed_name() == feed && d.district() == Some(spec.district))
            .filter_map(|d| d.entity_id())
            .collect()
    };
    let (feeds, entities, expect) = match spec.kind {
        ScenarioKind::Flood => (
            vec!["water_level"],
            in_district("water_level"),
            "water_level above 3.0 m, rising with rainfall_1h",
        ),
        ScenarioKind::Pollution => (
            vec!["air_quality"],
            in_district("air_quality"),
            "pm25 above 150 ug/m3",
        ),
        ScenarioKind::Outage => (
            vec![
                "air_quality",
                "water_level",
                "traffic_counter",
                "streetlight",
                "parking",
                "waste_bin",
                "camera_ai",
            ],
            Vec::new(),
            "no message from the district's sensors",
        ),
        ScenarioKind::ComplaintSpike => (
            vec!["citizen_reports"],
            Vec::new(),
            "citizen reports about ten times the usual rate",
        ),
        ScenarioKind::Overdue => (
            vec!["public_service_dossiers"],
            Vec::new(),
            "dossiers with status overdue",
        ),
        ScenarioKind::PipelineStall => (
            crate::FeedKind::ALL.iter().map(|f| f.name()).collect(),
            Vec::new(),
            "no message on any feed",
        ),
    };
    GroundTruth {
        scenario: spec.kind.name(),
        district: if spec.kind == ScenarioKind::PipelineStall {
            String::new()
        } else {
            district
        },
        start,
        end,
        feeds,
        entities,
        expect,
    }
}

/// Whether a scenario keeps `message` from being sent.
pub(crate) fn silences(
    spec: Option<&ScenarioSpec>,
    start: Timestamp,
    message: &SimMessage,
    _devices: &[Device],
) -> bool {
    let Some(spec) = spec else { return false };
    if !spec.active(start, message.sent_at) {
        return false;
    }
    match spec.kind {
        ScenarioKind::PipelineStall => true,
        ScenarioKind::Outage => {
            message.feed.transport() == Transport::Mqtt
                && DISTRICTS
                    .get(spec.district)
                    .is_some_and(|d| message.topic.starts_with(&format!("danang/{}/", d.slug)))
        }
        _ => false,
    }
}
