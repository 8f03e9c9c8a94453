//! `cityops sim`: a Da Nang city simulator that speaks each feed's real wire format.
//!
//! The simulator is a pure, deterministic generator: from a seed and a start time it yields an
//! ordered stream of [`SimMessage`]s (topic, key, payload bytes, virtual time) for the feeds of
//! `deploy/config/cityops.toml` — SenML air stations, JSON flood gauges whose level follows the
//! rain with a lag, traffic counters with rush hours, NGSI-LD street lights, parking and waste
//! bins, camera AI events, and citizen reports, public-service dossiers, bus GPS and hospital
//! beds for Kafka. Scenarios inject incidents and record a ground truth. Publishing, pacing and
//! ClickHouse backfill are the caller's job (the `cityops sim` command); this crate does no I/O.

mod city;
mod devices;
mod scenario;
mod text;

pub use city::{DISTRICTS, District, activity, local_hour, slug};
pub use scenario::{GroundTruth, ScenarioKind, ScenarioSpec};

use cityops_event::Timestamp;
use devices::{Device, Task};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha12Rng;
use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::fmt;
use std::str::FromStr;

/// The feeds the simulator speaks, named as in the example config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FeedKind {
    /// SenML air-quality stations (MQTT).
    AirQuality,
    /// JSON flood and river gauges with rainfall (MQTT).
    WaterLevel,
    /// JSON traffic counters (MQTT).
    TrafficCounter,
    /// NGSI-LD Streetlight entities (MQTT).
    Streetlight,
    /// NGSI-LD OffStreetParking, keyValues (MQTT).
    Parking,
    /// NGSI-LD WasteContainer notifications (MQTT).
    WasteBin,
    /// JSON camera AI events (MQTT).
    CameraAi,
    /// Citizen reports and their status changes (Kafka).
    CitizenReports,
    /// Online public-service dossiers (Kafka).
    PublicServiceDossiers,
    /// Bus GPS per route (Kafka).
    BusGps,
    /// Hospital bed occupancy (Kafka).
    HospitalBeds,
}

impl FeedKind {
    /// Every feed, in order.
    pub const ALL: [FeedKind; 11] = [
        FeedKind::AirQuality,
        FeedKind::WaterLevel,
        FeedKind::TrafficCounter,
        FeedKind::Streetlight,
        FeedKind::Parking,
        FeedKind::WasteBin,
        FeedKind::CameraAi,
        FeedKind::CitizenReports,
        FeedKind::PublicServiceDossiers,
        FeedKind::BusGps,
        FeedKind::HospitalBeds,
    ];

    /// The feed's name in the example config.
    pub fn name(self) -> &'static str {
        match self {
            FeedKind::AirQuality => "air_quality",
            FeedKind::WaterLevel => "water_level",
            FeedKind::TrafficCounter => "traffic_counter",
            FeedKind::Streetlight => "streetlight",
            FeedKind::Parking => "parking",
            FeedKind::WasteBin => "waste_bin",
            FeedKind::CameraAi => "camera_ai",
            FeedKind::CitizenReports => "citizen_reports",
            FeedKind::PublicServiceDossiers => "public_service_dossiers",
            FeedKind::BusGps => "bus_gps",
            FeedKind::HospitalBeds => "hospital_beds",
        }
    }

    /// The transport the feed arrives on.
    pub fn transport(self) -> Transport {
        match self {
            FeedKind::CitizenReports
            | FeedKind::PublicServiceDossiers
            | FeedKind::BusGps
            | FeedKind::HospitalBeds => Transport::Kafka,
            _ => Transport::Mqtt,
        }
    }

    /// File extension of its payloads.
    pub fn extension(self) -> &'static str {
        match self {
            FeedKind::AirQuality => "senml.json",
            FeedKind::Streetlight | FeedKind::Parking | FeedKind::WasteBin => "ngsild.json",
            _ => "json",
        }
    }
}

impl fmt::Display for FeedKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for FeedKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FeedKind::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown feed {s:?}; feeds: {}",
                    FeedKind::ALL.map(FeedKind::name).join(", ")
                )
            })
    }
}

/// MQTT or Kafka.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// Published at QoS 1.
    Mqtt,
    /// Produced with a key (the entity) so that one entity's messages stay in order.
    Kafka,
}

impl Transport {
    /// `mqtt` or `kafka`, as `cityops decode --source` takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Mqtt => "mqtt",
            Transport::Kafka => "kafka",
        }
    }
}

/// One message as a device or system would send it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimMessage {
    /// Which feed it belongs to.
    pub feed: FeedKind,
    /// MQTT topic or Kafka topic.
    pub topic: String,
    /// Kafka record key (the entity); `None` for MQTT.
    pub key: Option<String>,
    /// The payload bytes, exactly as sent.
    pub payload: Vec<u8>,
    /// Virtual time at which it is sent.
    pub sent_at: Timestamp,
}

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Seed: the same seed and start give byte-identical output.
    pub seed: u64,
    /// Virtual start time.
    pub start: Timestamp,
    /// Device counts are multiplied by this (1 = a plausible city).
    pub scale: u32,
    /// Feeds to simulate (all when empty).
    pub feeds: BTreeSet<FeedKind>,
    /// Devices report this many times more often than in the real city (for benchmark rates).
    pub speed: f64,
    /// An incident to inject.
    pub scenario: Option<ScenarioSpec>,
    /// Fraction of messages sent broken, as real feeds send some (a firmware bug, a cut
    /// connection): the payload cut short or replaced by bytes that are not the feed's format.
    /// Drawn from a stream of its own, so the rest of the city stays the same.
    pub faulty_fraction: f64,
}

impl SimOptions {
    /// All feeds, scale 1, real speed, no scenario.
    pub fn new(seed: u64, start: Timestamp) -> Self {
        SimOptions {
            seed,
            start,
            scale: 1,
            feeds: BTreeSet::new(),
            speed: 1.0,
            scenario: None,
            faulty_fraction: 0.0,
        }
    }

    fn wants(&self, feed: FeedKind) -> bool {
        self.feeds.is_empty() || self.feeds.contains(&feed)
    }
}

/// The simulator: an iterator over messages in virtual-time order.
pub struct Simulator {
    options: SimOptions,
    rng: ChaCha12Rng,
    /// Decides which messages go out broken (`faulty_fraction`).
    fault_rng: ChaCha12Rng,
    world: devices::World,
    devices: Vec<Device>,
    /// Pending work ordered by virtual time in microseconds, then by insertion.
    queue: BinaryHeap<Reverse<(i64, u64, Task)>>,
    sequence: u64,
    pending: std::collections::VecDeque<SimMessage>,
}

impl Simulator {
    /// Builds the city for `options`.
    pub fn new(options: SimOptions) -> Self {
        let mut rng = ChaCha12Rng::seed_from_u64(options.seed);
        let devices = devices::build(&options, &mut rng);
        let world = devices::World::new(&options);
        let fault_rng = ChaCha12Rng::seed_from_u64(options.seed ^ 0x6661_756c_7479);
        let mut sim = Simulator {
            options,
            rng,
            fault_rng,
            world,
            devices,
            queue: BinaryHeap::new(),
            sequence: 0,
            pending: std::collections::VecDeque::new(),
        };
        let start_us = sim.options.start.as_millis() * 1000;
        for index in 0..sim.devices.len() {
            let first = sim.devices[index].first_offset_us(&mut sim.rng, sim.options.speed);
            sim.schedule(start_us + first, Task::Device(index));
        }
        sim
    }

    /// Breaks `message` with probability `faulty_fraction`: half the time it is cut short,
    /// otherwise it becomes a line of device debug text.
    fn break_some(&mut self, message: &mut SimMessage) {
        let fraction = self.options.faulty_fraction;
        if fraction <= 0.0 || !self.fault_rng.random_bool(fraction.min(1.0)) {
            return;
        }
        if self.fault_rng.random_bool(0.5) {
            let keep = message.payload.len() / 2;
            message.payload.truncate(keep);
        } else {
            message.payload = b"ERR watchdog reset; sensor offline".to_vec();
        }
    }

    /// Queues `task` at virtual time `at_us` (microseconds since the epoch).
    fn schedule(&mut self, at_us: i64, task: Task) {
        self.sequence += 1;
        self.queue.push(Reverse((at_us, self.sequence, task)));
    }

    /// Messages per second the simulated city sends at `speed` 1 (its natural rate).
    pub fn natural_rate(&self) -> f64 {
        self.devices.iter().map(Device::natural_rate).sum()
    }

    /// Events per second the simulated city yields at `speed` 1, as the shipped config decodes
    /// its messages.
    pub fn natural_event_rate(&self) -> f64 {
        self.devices
            .iter()
            .map(|d| d.natural_rate() * d.events_per_message())
            .sum()
    }

    /// The ground truth of the injected scenario, if any.
    pub fn ground_truth(&self) -> Option<GroundTruth> {
        self.options
            .scenario
            .as_ref()
            .map(|spec| scenario::ground_truth(spec, &self.options, &self.devices))
    }

    /// The options this simulator runs with.
    pub fn options(&self) -> &SimOptions {
        &self.options
    }
}

impl Iterator for Simulator {
    type Item = SimMessage;

    fn next(&mut self) -> Option<SimMessage> {
        loop {
            if let Some(message) = self.pending.pop_front() {
                return Some(message);
            }
            let Reverse((at_us, _, task)) = self.queue.pop()?;
            let now = Timestamp::from_millis(at_us.div_euclid(1000)).ok()?;
            let mut out = Vec::new();
            let next = devices::run(
                task,
                now,
                &mut self.devices,
                &mut self.world,
                &mut self.rng,
                &self.options,
                &mut out,
            );
            for (delay_us, task) in next {
                self.schedule(at_us + delay_us.max(1), task);
            }
            let silenced = |m: &SimMessage| {
                scenario::silences(
                    self.options.scenario.as_ref(),
                    self.options.start,
                    m,
                    &self.devices,
                )
            };
            out.retain(|m| !silenced(m));
            for mut message in out {
                self.break_some(&mut message);
                self.pending.push_back(message);
            }
        }
    }
}
