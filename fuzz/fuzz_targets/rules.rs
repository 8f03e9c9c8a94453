//! Fuzz target: the rule-file parser and the evaluator. The input is a rule file, then (after a
//! NUL byte) events fed to the rules it defines, with processing time moving on.
#![no_main]

use cityops_event::{Domain, Event, Timestamp};
use cityops_rules::{Engine, RuleSet};
use libfuzzer_sys::fuzz_target;

const FEEDS: [&str; 6] = [
    "water_level",
    "air_quality",
    "bus_gps",
    "citizen_reports",
    "hospital_beds",
    "streetlight",
];
const METRICS: [&str; 6] = [
    "water_level",
    "pm25",
    "speed",
    "status",
    "er_waiting",
    "count",
];
const DISTRICTS: [&str; 4] = ["Hải Châu", "Sơn Trà", "Liên Chiểu", ""];
const START_MS: i64 = 1_795_654_800_000;

fuzz_target!(|data: &[u8]| {
    let (text, events) = match data.iter().position(|b| *b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let rules = match RuleSet::parse(&[("fuzz.yaml".to_owned(), text.to_owned())]) {
        Ok(rules) => rules,
        Err(errors) => {
            assert!(!errors.is_empty());
            for e in &errors {
                let _ = e.to_string();
            }
            return;
        }
    };
    let mut engine = Engine::new(rules.clone());
    let mut out = Vec::new();
    let mut now = START_MS;
    // Each event: feed, metric, entity, district, a value (f32), milliseconds later (u16 * 50).
    for chunk in events.chunks_exact(9) {
        now += i64::from(u16::from_le_bytes([chunk[7], chunk[8]])) * 50;
        let value = f32::from_le_bytes([chunk[3], chunk[4], chunk[5], chunk[6]]);
        let time = Timestamp::from_millis(now).expect("in range");
        // Event time may lag processing time by up to a minute (late events).
        let ts = Timestamp::from_millis(now - i64::from(chunk[6]) * 250).expect("in range");
        let event = Event {
            ts,
            ingested_at: time,
            feed: FEEDS[usize::from(chunk[0]) % FEEDS.len()].to_owned(),
            domain: Domain::ALL[usize::from(chunk[0]) % Domain::ALL.len()],
            entity_id: format!("e-{}", chunk[2] % 8),
            metric: METRICS[usize::from(chunk[1]) % METRICS.len()].to_owned(),
            value: (chunk[1] & 0x80 == 0).then_some(f64::from(value)),
            text: (chunk[1] & 0x40 != 0).then(|| "hỏng".to_owned()),
            district: DISTRICTS[usize::from(chunk[2] >> 6)].to_owned(),
            ..Event::default()
        };
        engine.observe(&event, &mut out);
        if chunk[0] & 0x80 != 0 {
            engine.tick(now, &mut out);
        }
    }
    engine.tick(now + 3_600_000, &mut out);
    // A restart restores no more series than there were.
    let series = engine.series_count();
    let snapshot = engine.snapshot();
    let mut again = Engine::new(rules);
    assert!(again.restore(snapshot) <= series);
    let _ = again.active();
});
