//! The simulated devices and systems, their state, and the payloads they send.

use crate::city::{DISTRICTS, activity, is_dark, local_hour, local_rfc3339, slug};
use crate::scenario::{ScenarioKind, ScenarioSpec};
use crate::text::{AGENCIES, CAMERA_ZONES, CHANNELS, HOSPITALS, REPORT_CATEGORIES};
use crate::{FeedKind, SimMessage, SimOptions};
use cityops_event::Timestamp;
use rand::Rng;
use rand_chacha::ChaCha12Rng;
use rand_distr::{Distribution, Exp, Normal};
use serde_json::{Value, json};

/// Work in the simulator's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Task {
    /// A device's next report.
    Device(usize),
    /// The next status change of a citizen report.
    Report(usize),
    /// The next status change of a dossier.
    Dossier(usize),
}

/// One waste bin of a district's collection hub.
#[derive(Debug, Clone)]
pub(crate) struct Bin {
    id: String,
    fill: f64,
    lat: f64,
    lon: f64,
}

/// One bus on a route.
#[derive(Debug, Clone)]
pub(crate) struct Bus {
    plate: String,
    progress: f64,
    passengers: u32,
}

/// A simulated device or system.
#[derive(Debug, Clone)]
pub(crate) enum Device {
    Air {
        id: String,
        district: usize,
        base_pm25: f64,
    },
    Water {
        id: String,
        district: usize,
        lat: f64,
        lon: f64,
        base_m: f64,
        seq: u64,
    },
    Traffic {
        id: String,
        district: usize,
        base_flow: f64,
    },
    Light {
        id: String,
        district: usize,
        ward: usize,
        lat: f64,
        lon: f64,
        faulty: bool,
    },
    Parking {
        id: String,
        name: String,
        district: usize,
        total: u32,
        lat: f64,
        lon: f64,
    },
    Waste {
        district: usize,
        bins: Vec<Bin>,
    },
    Camera {
        id: String,
        district: usize,
        zone: &'static str,
        events: u64,
    },
    Reports {
        next_number: u64,
    },
    Dossiers {
        next_number: u64,
    },
    Route {
        route: String,
        from: (f64, f64),
        to: (f64, f64),
        buses: Vec<Bus>,
    },
    Hospital {
        index: usize,
        occupied: f64,
    },
}

/// One citizen report's life.
#[derive(Debug, Clone)]
pub(crate) struct Report {
    id: String,
    district: usize,
    ward: usize,
    category: usize,
    channel: usize,
    lat: f64,
    lon: f64,
    stage: usize,
}

/// One dossier's life.
#[derive(Debug, Clone)]
pub(crate) struct Dossier {
    code: String,
    district: usize,
    agency: usize,
    level: u8,
    due_days: f64,
    opened_ms: i64,
    stage: usize,
}

/// State shared by devices: the weather per district, open reports and dossiers.
pub(crate) struct World {
    rain_mm_h: [f64; 7],
    /// Water held by the ground, between the rain and the rivers.
    soil: [f64; 7],
    wet: [f64; 7],
    /// Whether a flood scenario struck the district at its last reading.
    flooding: [bool; 7],
    /// Street and drain water on top of the river during a cloudburst, metres.
    surge_m: [f64; 7],
    weather_at_ms: [i64; 7],
    reports: Vec<Report>,
    dossiers: Vec<Dossier>,
}

impl World {
    pub(crate) fn new(options: &SimOptions) -> Self {
        let at = options.start.as_millis();
        World {
            rain_mm_h: [0.0; 7],
            soil: [0.0; 7],
            wet: [0.0; 7],
            flooding: [false; 7],
            surge_m: [0.0; 7],
            weather_at_ms: [at; 7],
            reports: Vec::new(),
            dossiers: Vec::new(),
        }
    }

    /// Advances a district's rain and its lagged effect on the rivers up to `now`; returns
    /// (rain now in mm/h, the smoothed "wetness" that drives river levels, the flash surge in
    /// metres).
    fn weather(
        &mut self,
        d: usize,
        now: Timestamp,
        rng: &mut ChaCha12Rng,
        flood: bool,
    ) -> (f64, f64, f64) {
        let dt_h = ((now.as_millis() - self.weather_at_ms[d]).max(0) as f64) / 3_600_000.0;
        self.weather_at_ms[d] = now.as_millis();
        if flood {
            self.rain_mm_h[d] = 70.0 + rng.random_range(0.0..30.0);
        } else if self.flooding[d] {
            // The cloudburst passes.
            self.rain_mm_h[d] = 0.0;
        } else {
            // A rain cell starts with a small chance per hour and dies out over an hour or two.
            let start_chance = (0.08 * dt_h).min(1.0);
            if self.rain_mm_h[d] < 0.5 && rng.random_bool(start_chance) {
                self.rain_mm_h[d] = rng.random_range(2.0..25.0);
            } else {
                self.rain_mm_h[d] *= (-dt_h / 1.5).exp();
            }
        }
        self.flooding[d] = flood;
        // The river answers through the ground, in two stages of about 1.5 hours each: hardly
        // at all in the first minutes, most in the hours after.
        let k = 1.0 - (-dt_h / 1.5).exp();
        self.soil[d] += (self.rain_mm_h[d] - self.soil[d]) * k;
        self.wet[d] += (self.soil[d] - self.wet[d]) * k;
        // A cloudburst overwhelms the drains within minutes (Da Nang, October 2022): the gauges
        // of a flood-prone district jump long before the river answers, and fall back about as
        // fast once the rain stops and the drains catch up.
        let surge_target_m = 2.0 * DISTRICTS[d].flood_prone;
        let dt_min = dt_h * 60.0;
        if flood {
            let k = 1.0 - (-dt_min / 4.0).exp();
            self.surge_m[d] += (surge_target_m - self.surge_m[d]) * k;
        } else {
            self.surge_m[d] *= (-dt_min / 1.0).exp();
        }
        (self.rain_mm_h[d], self.wet[d], self.surge_m[d])
    }
}

fn jitter(rng: &mut ChaCha12Rng, lat: f64, lon: f64, spread: f64) -> (f64, f64) {
    (
        lat + rng.random_range(-spread..spread),
        lon + rng.random_range(-spread..spread),
    )
}

fn round(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}

/// Builds every device of the selected feeds.
pub(crate) fn build(options: &SimOptions, rng: &mut ChaCha12Rng) -> Vec<Device> {
    let scale = options.scale.max(1) as usize;
    let mut devices = Vec::new();
    for (d, district) in DISTRICTS.iter().enumerate() {
        let code = district
            .slug
            .split('-')
            .map(|w| &w[..1])
            .collect::<String>();
        if options.wants(FeedKind::AirQuality) {
            for i in 0..2 * scale {
                devices.push(Device::Air {
                    id: format!("aq-{code}-{:02}", i + 1),
                    district: d,
                    base_pm25: rng.random_range(18.0..38.0),
                });
            }
        }
        if options.wants(FeedKind::WaterLevel) {
            let gauges = if district.flood_prone >= 0.5 { 3 } else { 1 };
            for i in 0..gauges * scale {
                let (lat, lon) = jitter(rng, district.lat, district.lon, 0.015);
                devices.push(Device::Water {
                    id: format!("wl-{}-{:02}", district.slug, i + 1),
                    district: d,
                    lat: round(lat, 5),
                    lon: round(lon, 5),
                    base_m: rng.random_range(0.4..1.2),
                    seq: rng.random_range(1000..50_000),
                });
            }
        }
        if options.wants(FeedKind::TrafficCounter) {
            for i in 0..4 * scale {
                devices.push(Device::Traffic {
                    id: format!("tc-{code}-{:02}", i + 1),
                    district: d,
                    base_flow: rng.random_range(250.0..650.0),
                });
            }
        }
        if options.wants(FeedKind::Streetlight) {
            for i in 0..12 * scale {
                let ward = i % district.wards.len();
                let (lat, lon) = jitter(rng, district.lat, district.lon, 0.02);
                devices.push(Device::Light {
                    id: format!("{code}-{:04}", i + 1),
                    district: d,
                    ward,
                    lat: round(lat, 5),
                    lon: round(lon, 5),
                    faulty: rng.random_bool(0.03),
                });
            }
        }
        if options.wants(FeedKind::Parking) {
            for i in 0..3 * scale {
                let (lat, lon) = jitter(rng, district.lat, district.lon, 0.015);
                devices.push(Device::Parking {
                    id: format!("pk-{}-{:02}", district.slug, i + 1),
                    name: format!("Bãi đỗ xe {} số {}", district.name, i + 1),
                    district: d,
                    total: rng.random_range(80..600),
                    lat: round(lat, 5),
                    lon: round(lon, 5),
                });
            }
        }
        if options.wants(FeedKind::WasteBin) {
            let bins = (0..8 * scale)
                .map(|i| {
                    let (lat, lon) = jitter(rng, district.lat, district.lon, 0.02);
                    Bin {
                        id: format!("{code}-{:04}", i + 1),
                        fill: rng.random_range(0.0..0.7),
                        lat: round(lat, 5),
                        lon: round(lon, 5),
                    }
                })
                .collect();
            devices.push(Device::Waste { district: d, bins });
        }
        if options.wants(FeedKind::CameraAi) {
            for i in 0..3 * scale {
                devices.push(Device::Camera {
                    id: format!("cam-{code}-{:02}", i + 1),
                    district: d,
                    zone: CAMERA_ZONES[(d * 3 + i) % CAMERA_ZONES.len()],
                    events: 0,
                });
            }
        }
    }
    if options.wants(FeedKind::CitizenReports) {
        devices.push(Device::Reports {
            next_number: 118_000,
        });
    }
    if options.wants(FeedKind::PublicServiceDossiers) {
        devices.push(Device::Dossiers { next_number: 1 });
    }
    if options.wants(FeedKind::BusGps) {
        for r in 0..10 * scale {
            let from = DISTRICTS[r % 7];
            let to = DISTRICTS[(r * 3 + 1) % 7];
            let buses = (0..6)
                .map(|b| Bus {
                    plate: format!("43B-{:03}.{:02}", r + 10, b + 11),
                    progress: b as f64 / 6.0,
                    passengers: rng.random_range(0..30),
                })
                .collect();
            devices.push(Device::Route {
                route: format!("R{:02}", r + 1),
                from: (from.lat, from.lon),
                to: (to.lat, to.lon),
                buses,
            });
        }
    }
    if options.wants(FeedKind::HospitalBeds) {
        for (index, (_, _, _, beds)) in HOSPITALS
            .iter()
            .enumerate()
            .take(HOSPITALS.len().min(8 * scale))
        {
            devices.push(Device::Hospital {
                index,
                occupied: f64::from(*beds) * rng.random_range(0.75..0.92),
            });
        }
    }
    devices
}

impl Device {
    /// Mean interval between this device's messages in the real city, milliseconds.
    fn interval_ms(&self, scale: u32) -> f64 {
        match self {
            Device::Air { .. }
            | Device::Water { .. }
            | Device::Traffic { .. }
            | Device::Parking { .. } => 60_000.0,
            Device::Light { .. } | Device::Waste { .. } | Device::Hospital { .. } => 300_000.0,
            Device::Camera { .. } => 180_000.0,
            Device::Reports { .. } => 30_000.0 / f64::from(scale.max(1)),
            Device::Dossiers { .. } => 20_000.0 / f64::from(scale.max(1)),
            Device::Route { .. } => 10_000.0,
        }
    }

    /// Messages per second at speed 1 (status changes of reports and dossiers included).
    pub(crate) fn natural_rate(&self) -> f64 {
        let followups = match self {
            Device::Reports { .. } => 3.0,
            Device::Dossiers { .. } => 3.0,
            _ => 1.0,
        };
        followups * 1000.0 / self.interval_ms(1)
    }

    /// Events the shipped config decodes from one of this device's messages, on average.
    pub(crate) fn events_per_message(&self) -> f64 {
        match self {
            Device::Air { .. } => 6.0,
            Device::Water { .. } => 3.0,
            Device::Traffic { .. } => 5.0,
            Device::Light { .. } | Device::Parking { .. } | Device::Hospital { .. } => 4.0,
            Device::Waste { bins, .. } => 2.5 * bins.len() as f64,
            Device::Camera { .. } => 3.0,
            // The first message of a report carries its text too.
            Device::Reports { .. } => 1.25,
            Device::Dossiers { .. } => 3.0,
            Device::Route { buses, .. } => 2.0 * buses.len() as f64,
        }
    }

    /// Offset of the first report after the start, in microseconds: spread over one interval.
    pub(crate) fn first_offset_us(&self, rng: &mut ChaCha12Rng, speed: f64) -> i64 {
        (rng.random_range(0.0..1.0) * self.interval_ms(1) * 1000.0 / speed) as i64
    }

    pub(crate) fn feed_name(&self) -> &'static str {
        match self {
            Device::Air { .. } => "air_quality",
            Device::Water { .. } => "water_level",
            Device::Traffic { .. } => "traffic_counter",
            Device::Light { .. } => "streetlight",
            Device::Parking { .. } => "parking",
            Device::Waste { .. } => "waste_bin",
            Device::Camera { .. } => "camera_ai",
            Device::Reports { .. } => "citizen_reports",
            Device::Dossiers { .. } => "public_service_dossiers",
            Device::Route { .. } => "bus_gps",
            Device::Hospital { .. } => "hospital_beds",
        }
    }

    pub(crate) fn district(&self) -> Option<usize> {
        match self {
            Device::Air { district, .. }
            | Device::Water { district, .. }
            | Device::Traffic { district, .. }
            | Device::Light { district, .. }
            | Device::Parking { district, .. }
            | Device::Waste { district, .. }
            | Device::Camera { district, .. } => Some(*district),
            Device::Hospital { index, .. } => Some(HOSPITALS[*index].2),
            _ => None,
        }
    }

    /// The entity id its events carry, as the example config decodes it.
    pub(crate) fn entity_id(&self) -> Option<String> {
        match self {
            Device::Air { id, .. } => Some(format!("urn:dev:danang:aq:{id}")),
            Device::Water { id, .. } | Device::Traffic { id, .. } | Device::Camera { id, .. } => {
                Some(id.clone())
            }
            Device::Light { id, .. } => Some(format!("urn:ngsi-ld:Streetlight:danang:{id}")),
            Device::Parking { id, .. } => Some(format!("urn:ngsi-ld:OffStreetParking:danang:{id}")),
            Device::Hospital { index, .. } => Some(HOSPITALS[*index].0.to_owned()),
            _ => None,
        }
    }
}

fn mqtt(feed: FeedKind, topic: String, payload: &Value, now: Timestamp) -> SimMessage {
    SimMessage {
        feed,
        topic,
        key: None,
        payload: payload.to_string().into_bytes(),
        sent_at: now,
    }
}

fn kafka(feed: FeedKind, topic: &str, key: &str, payload: &Value, now: Timestamp) -> SimMessage {
    SimMessage {
        feed,
        topic: topic.to_owned(),
        key: Some(key.to_owned()),
        payload: payload.to_string().into_bytes(),
        sent_at: now,
    }
}

fn noise(rng: &mut ChaCha12Rng, sd: f64) -> f64 {
    Normal::new(0.0, sd).map_or(0.0, |n| n.sample(rng))
}

/// Runs one task: appends the messages it sends and returns the tasks it schedules
/// (delay in virtual microseconds, so that a device sped up past 1,000 reports a second still
/// keeps its rate, and the task).
pub(crate) fn run(
    task: Task,
    now: Timestamp,
    devices: &mut [Device],
    world: &mut World,
    rng: &mut ChaCha12Rng,
    options: &SimOptions,
    out: &mut Vec<SimMessage>,
) -> Vec<(i64, Task)> {
    let speed = options.speed.max(1e-9);
    let scenario = options.scenario.as_ref();
    let strikes = |kind: ScenarioKind, district: usize| {
        ScenarioSpec::strikes(scenario, kind, options.start, now, district)
    };
    let index = match task {
        Task::Report(index) => return report_update(index, now, world, rng, speed, out),
        Task::Dossier(index) => {
            let overdue = strikes(ScenarioKind::Overdue, world.dossiers[index].district);
            return dossier_update(index, now, world, rng, speed, overdue, out);
        }
        Task::Device(index) => index,
    };
    let interval = devices[index].interval_ms(options.scale);
    let mut next = vec![(
        (interval * 1000.0 * rng.random_range(0.95..1.05) / speed) as i64,
        Task::Device(index),
    )];
    let epoch_s = now.as_millis() / 1000;
    match &mut devices[index] {
        Device::Air {
            id,
            district,
            base_pm25,
        } => {
            let d = &DISTRICTS[*district];
            let night = if local_hour(now) < 6.0 || local_hour(now) > 21.0 {
                1.25
            } else {
                1.0
            };
            let spike = if strikes(ScenarioKind::Pollution, *district) {
                180.0
            } else {
                0.0
            };
            let pm25 = (*base_pm25 * (0.7 + 0.5 * activity(now)) * night + noise(rng, 3.0) + spike)
                .max(2.0);
            let pm10 = pm25 * rng.random_range(1.4..1.8) + if spike > 0.0 { 120.0 } else { 0.0 };
            let no2 = (12.0 + 25.0 * activity(now) + noise(rng, 3.0)).max(1.0);
            let o3 =
                (20.0 + 40.0 * ((local_hour(now) - 6.0).max(0.0) / 8.0).min(1.0) + noise(rng, 4.0))
                    .max(1.0);
            let temp =
                24.0 + 5.0 * (-((local_hour(now) - 14.0) / 5.0).powi(2)).exp() + noise(rng, 0.4);
            let humidity = (85.0 - 15.0 * (-((local_hour(now) - 14.0) / 5.0).powi(2)).exp()
                + noise(rng, 2.0))
            .clamp(30.0, 100.0);
            let pack = json!([
                {"bn": format!("urn:dev:danang:aq:{id}:"), "bt": epoch_s, "n": "pm25", "u": "ug/m3", "v": round(pm25, 1)},
                {"n": "pm10", "u": "ug/m3", "v": round(pm10, 1)},
                {"n": "no2", "u": "ug/m3", "v": round(no2, 1)},
                {"n": "o3", "u": "ug/m3", "v": round(o3, 1)},
                {"u": "Cel", "v": round(temp, 1)},
                {"u": "%RH", "v": round(humidity, 0)}
            ]);
            out.push(mqtt(
                FeedKind::AirQuality,
                format!("danang/{}/air/{id}", d.slug),
                &pack,
                now,
            ));
        }
        Device::Water {
            id,
            district,
            lat,
            lon,
            base_m,
            seq,
        } => {
            let d = &DISTRICTS[*district];
            let flood = strikes(ScenarioKind::Flood, *district);
            let (rain, wet, surge_m) = world.weather(*district, now, rng, flood);
            *seq += 1;
            let level_m =
                *base_m + wet * 0.045 * (0.5 + d.flood_prone) + surge_m + noise(rng, 0.01);
            let payload = json!({
                "gauge": id, "ts": local_rfc3339(now), "water_level_cm": (level_m * 100.0).round() as i64,
                "rain_mm_1h": round(rain, 1), "battery_v": round(3.7 + noise(rng, 0.05), 2), "status": "ok",
                "lat": lat, "lon": lon, "seq": *seq
            });
            out.push(mqtt(
                FeedKind::WaterLevel,
                format!("danang/{}/water/{id}", d.slug),
                &payload,
                now,
            ));
        }
        Device::Traffic {
            id,
            district,
            base_flow,
        } => {
            let d = &DISTRICTS[*district];
            let flow = *base_flow * activity(now) * rng.random_range(0.85..1.15);
            let congestion = (flow / 700.0).min(1.0);
            let payload = json!({
                "ts": now.as_millis(), "interval_s": 60,
                "counts": {"motorbike": (flow * 0.82) as u64, "car": (flow * 0.13) as u64, "truck": (flow * 0.03) as u64, "bus": (flow * 0.02) as u64},
                "mean_speed_kmh": round((42.0 - 30.0 * congestion + noise(rng, 2.0)).max(3.0), 1)
            });
            out.push(mqtt(
                FeedKind::TrafficCounter,
                format!("danang/{}/traffic/{id}", d.slug),
                &payload,
                now,
            ));
        }
        Device::Light {
            id,
            district,
            ward,
            lat,
            lon,
            faulty,
        } => {
            let d = &DISTRICTS[*district];
            if !*faulty && rng.random_bool(0.002) {
                *faulty = true;
            }
            let dark = is_dark(now);
            let on = dark && !*faulty;
            let at = now.to_string();
            let entity = json!({
                "id": format!("urn:ngsi-ld:Streetlight:danang:{id}"), "type": "Streetlight",
                "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [lon, lat]}},
                "powerState": {"type": "Property", "value": if on { "on" } else { "off" }, "observedAt": at},
                "status": {"type": "Property", "value": if *faulty { "defectiveLamp" } else { "ok" }, "observedAt": at},
                "illuminanceLevel": {"type": "Property", "value": if on { 0.8 } else { 0.0 }, "observedAt": at},
                "powerConsumption": {"type": "Property", "value": if on { round(95.0 + noise(rng, 3.0), 1) } else { 0.0 }, "unitCode": "WTT", "observedAt": at}
            });
            let ward_slug = slug(d.wards[*ward]);
            out.push(mqtt(
                FeedKind::Streetlight,
                format!("danang/{}/lighting/{ward_slug}/{id}", d.slug),
                &entity,
                now,
            ));
        }
        Device::Parking {
            id,
            name,
            district,
            total,
            lat,
            lon,
        } => {
            let d = &DISTRICTS[*district];
            let occupancy = (0.2 + 0.65 * activity(now) / 1.4 + noise(rng, 0.03)).clamp(0.0, 1.0);
            let available = (f64::from(*total) * (1.0 - occupancy)).round() as u32;
            let entity = json!({
                "id": format!("urn:ngsi-ld:OffStreetParking:danang:{id}"), "type": "OffStreetParking", "name": name,
                "availableSpotNumber": available, "totalSpotNumber": total, "occupancy": round(occupancy, 3),
                "status": if local_hour(now) < 5.0 { "closed" } else { "open" }, "dateObserved": now.to_string(),
                "location": {"type": "Point", "coordinates": [lon, lat]}
            });
            out.push(mqtt(
                FeedKind::Parking,
                format!("danang/{}/parking/{id}", d.slug),
                &entity,
                now,
            ));
        }
        Device::Waste { district, bins } => {
            let d = &DISTRICTS[*district];
            let hour = local_hour(now);
            let collection = (5.0..5.5).contains(&hour) || (17.0..17.5).contains(&hour);
            let mut data = Vec::with_capacity(bins.len());
            for bin in bins.iter_mut() {
                bin.fill = if collection {
                    rng.random_range(0.0..0.08)
                } else {
                    (bin.fill + rng.random_range(0.0..0.03)).min(1.0)
                };
                data.push(json!({
                    "id": format!("urn:ngsi-ld:WasteContainer:danang:{}", bin.id), "type": "WasteContainer",
                    "fillingLevel": {"type": "Property", "value": round(bin.fill, 2), "observedAt": now.to_string()},
                    "temperature": {"type": "Property", "value": round(28.0 + 4.0 * activity(now) + noise(rng, 0.5), 1), "unitCode": "CEL", "observedAt": now.to_string()},
                    "status": {"type": "Property", "value": if bin.fill > 0.9 { "full" } else { "ok" }},
                    "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [bin.lon, bin.lat]}}
                }));
            }
            let notification = json!({
                "id": format!("urn:ngsi-ld:Notification:{}-{}", d.slug, now.as_millis()), "type": "Notification",
                "subscriptionId": "urn:ngsi-ld:Subscription:waste-danang", "notifiedAt": now.to_string(), "data": data
            });
            out.push(mqtt(
                FeedKind::WasteBin,
                format!("danang/{}/waste/notifications", d.slug),
                &notification,
                now,
            ));
        }
        Device::Camera {
            id,
            district,
            zone,
            events,
        } => {
            let d = &DISTRICTS[*district];
            *events += 1;
            let roll: f64 = rng.random_range(0.0..1.0);
            let (event, objects) = if roll < 0.55 * activity(now) {
                ("congestion", rng.random_range(60..220))
            } else if roll < 0.75 {
                ("crowd", rng.random_range(30..150))
            } else if roll < 0.95 {
                ("wrong_way", 1)
            } else {
                ("accident", rng.random_range(2..5))
            };
            let payload = json!({
                "event_id": format!("{id}-{}", events), "event": event, "confidence": round(rng.random_range(0.6..0.99), 2),
                "object_count": objects, "zone": zone, "detected_at": local_rfc3339(now)
            });
            out.push(mqtt(
                FeedKind::CameraAi,
                format!("danang/{}/camera/{id}/events", d.slug),
                &payload,
                now,
            ));
            // Poisson arrivals, busier at rush hours.
            let mean = interval / activity(now).max(0.2) / speed;
            next[0].0 = (Exp::new(1.0 / mean).map_or(mean, |e| e.sample(rng)) * 1000.0) as i64;
        }
        Device::Reports { next_number } => {
            let spike_district = scenario
                .filter(|s| s.kind == ScenarioKind::ComplaintSpike && s.active(options.start, now))
                .map(|s| s.district);
            let district = match spike_district {
                Some(d) if rng.random_bool(0.9) => d,
                _ => rng.random_range(0..DISTRICTS.len()),
            };
            let d = &DISTRICTS[district];
            let category = if spike_district == Some(district) {
                0
            } else {
                rng.random_range(0..REPORT_CATEGORIES.len())
            };
            let (lat, lon) = jitter(rng, d.lat, d.lon, 0.012);
            let report = Report {
                id: format!("PA-{}-{:06}", 2026, *next_number),
                district,
                ward: rng.random_range(0..d.wards.len()),
                category,
                channel: rng.random_range(0..CHANNELS.len()),
                lat: round(lat, 5),
                lon: round(lon, 5),
                stage: 0,
            };
            *next_number += 1;
            world.reports.push(report);
            let index = world.reports.len() - 1;
            next.extend(report_update(index, now, world, rng, speed, out));
            let rate_factor =
                if spike_district.is_some() { 10.0 } else { 1.0 } * (0.3 + activity(now));
            let mean = interval / rate_factor / speed;
            next[0].0 = (Exp::new(1.0 / mean).map_or(mean, |e| e.sample(rng)) * 1000.0) as i64;
        }
        Device::Dossiers { next_number } => {
            let overdue_district = scenario
                .filter(|s| s.kind == ScenarioKind::Overdue && s.active(options.start, now))
                .map(|s| s.district);
            let district = overdue_district
                .filter(|_| rng.random_bool(0.5))
                .unwrap_or_else(|| rng.random_range(0..DISTRICTS.len()));
            let agency = rng.random_range(0..AGENCIES.len());
            let dossier = Dossier {
                code: format!(
                    "000.00.{:02}.H17-{}-{:04}",
                    20 + agency,
                    day_code(now),
                    *next_number % 10_000
                ),
                district,
                agency,
                level: if rng.random_bool(0.6) { 4 } else { 3 },
                due_days: rng.random_range(3.0..15.0),
                opened_ms: now.as_millis(),
                stage: 0,
            };
            *next_number += 1;
            world.dossiers.push(dossier);
            let index = world.dossiers.len() - 1;
            next.extend(dossier_update(
                index,
                now,
                world,
                rng,
                speed,
                overdue_district == Some(district),
                out,
            ));
            let mean = interval / (0.3 + activity(now)) / speed;
            next[0].0 = (Exp::new(1.0 / mean).map_or(mean, |e| e.sample(rng)) * 1000.0) as i64;
        }
        Device::Route {
            route,
            from,
            to,
            buses,
        } => {
            let mut vehicles = Vec::with_capacity(buses.len());
            for bus in buses.iter_mut() {
                let moving = rng.random_bool(0.8);
                let speed_kmh = if moving {
                    (28.0 - 12.0 * activity(now) + noise(rng, 4.0)).max(5.0)
                } else {
                    0.0
                };
                bus.progress = (bus.progress + speed_kmh / 3600.0 * 10.0 / 12.0).fract();
                let t = if bus.progress < 0.5 {
                    bus.progress * 2.0
                } else {
                    2.0 - bus.progress * 2.0
                };
                let lat = from.0 + (to.0 - from.0) * t;
                let lon = from.1 + (to.1 - from.1) * t;
                if !moving {
                    bus.passengers =
                        (i64::from(bus.passengers) + rng.random_range(-5..6)).clamp(0, 60) as u32;
                }
                vehicles.push(json!({"plate": bus.plate, "lat": round(lat, 5), "lon": round(lon, 5), "speed_kmh": round(speed_kmh, 1), "passengers": bus.passengers}));
            }
            let payload = json!({"route": route, "sent_at": epoch_s, "vehicles": vehicles});
            out.push(kafka(
                FeedKind::BusGps,
                "danang.transport.bus-gps",
                route,
                &payload,
                now,
            ));
        }
        Device::Hospital { index, occupied } => {
            let (id, name, district, beds) = HOSPITALS[*index];
            let total = f64::from(beds);
            *occupied = (*occupied + noise(rng, total * 0.01)).clamp(total * 0.5, total * 1.05);
            let payload = json!({
                "hospital_id": id, "name": name, "district": DISTRICTS[district].name, "reported_at": local_rfc3339(now),
                "beds": {"total": beds, "occupied": occupied.round() as u64, "icu_occupied": (total * 0.04 + noise(rng, 2.0)).max(0.0).round() as u64},
                "emergency_waiting": (activity(now) * 10.0 + noise(rng, 2.0)).max(0.0).round() as u64
            });
            out.push(kafka(
                FeedKind::HospitalBeds,
                "danang.health.beds",
                id,
                &payload,
                now,
            ));
        }
    }
    next
}

fn day_code(now: Timestamp) -> String {
    let t = now.to_string();
    format!("{}{}{}", &t[2..4], &t[5..7], &t[8..10])
}

const REPORT_STAGES: [&str; 4] = ["received", "assigned", "in_progress", "resolved"];

fn report_update(
    index: usize,
    now: Timestamp,
    world: &mut World,
    rng: &mut ChaCha12Rng,
    speed: f64,
    out: &mut Vec<SimMessage>,
) -> Vec<(i64, Task)> {
    let report = &mut world.reports[index];
    let d = &DISTRICTS[report.district];
    let (category, texts) = REPORT_CATEGORIES[report.category];
    let status = REPORT_STAGES[report.stage];
    let mut payload = json!({
        "report_id": report.id, "channel": CHANNELS[report.channel], "category": category,
        "district": d.name, "ward": d.wards[report.ward], "location": {"lat": report.lat, "lon": report.lon},
        "status": status, "updated_at": local_rfc3339(now)
    });
    if report.stage == 0 {
        payload["content"] = Value::String(texts[rng.random_range(0..texts.len())].to_owned());
    }
    out.push(kafka(
        FeedKind::CitizenReports,
        "danang.citizen.reports",
        &report.id,
        &payload,
        now,
    ));
    report.stage += 1;
    if report.stage < REPORT_STAGES.len() {
        // Hours between steps, shorter in a simulation run faster than real time.
        let hours = rng.random_range(0.2..6.0);
        vec![(
            (hours * 3_600_000_000.0 / speed) as i64,
            Task::Report(index),
        )]
    } else {
        Vec::new()
    }
}

const DOSSIER_STAGES: [&str; 3] = ["received", "in_process", "done"];

fn dossier_update(
    index: usize,
    now: Timestamp,
    world: &mut World,
    rng: &mut ChaCha12Rng,
    speed: f64,
    overdue: bool,
    out: &mut Vec<SimMessage>,
) -> Vec<(i64, Task)> {
    let dossier = &mut world.dossiers[index];
    let (agency, procedure) = AGENCIES[dossier.agency];
    let elapsed_days = (now.as_millis() - dossier.opened_ms) as f64 * speed / 86_400_000.0;
    let mut days_to_due = (dossier.due_days - elapsed_days).round();
    let finishing = dossier.stage + 1 >= DOSSIER_STAGES.len();
    let status = if overdue && dossier.stage > 0 {
        days_to_due = -rng.random_range(1.0..5.0_f64).round();
        "overdue"
    } else {
        DOSSIER_STAGES[dossier.stage.min(DOSSIER_STAGES.len() - 1)]
    };
    let payload = json!({
        "dossier_code": dossier.code, "agency": agency, "procedure_code": procedure,
        "district": DISTRICTS[dossier.district].name, "status": status, "service_level": dossier.level,
        "days_to_due": days_to_due, "event_time": local_rfc3339(now)
    });
    out.push(kafka(
        FeedKind::PublicServiceDossiers,
        "danang.dvc.dossiers",
        &dossier.code,
        &payload,
        now,
    ));
    dossier.stage += 1;
    if finishing || status == "overdue" {
        Vec::new()
    } else {
        let hours = rng.random_range(1.0..48.0);
        vec![(
            (hours * 3_600_000_000.0 / speed) as i64,
            Task::Dossier(index),
        )]
    }
}
