//! Each scenario shows in the ground truth and in the data.

use super::{decode, shipped_feeds, start};
use cityops_sim::{DISTRICTS, FeedKind, ScenarioKind, ScenarioSpec, SimOptions, Simulator};

const HOUR: i64 = 3600 * 1000;

fn run(kind: ScenarioKind, hours: i64) -> (Simulator, Vec<cityops_sim::SimMessage>) {
    let mut options = SimOptions::new(11, start());
    options.scenario = Some(ScenarioSpec::new(kind, HOUR, 2 * HOUR));
    let sim = Simulator::new(options.clone());
    let end = start().as_millis() + hours * HOUR;
    let messages = Simulator::new(options)
        .take_while(|m| m.sent_at.as_millis() < end)
        .collect();
    (sim, messages)
}

fn in_window(m: &cityops_sim::SimMessage) -> bool {
    let offset = m.sent_at.as_millis() - start().as_millis();
    (HOUR..3 * HOUR).contains(&offset)
}

#[test]
fn flood_raises_the_gauges_of_its_district_past_three_metres() {
    let (sim, messages) = run(ScenarioKind::Flood, 4);
    let truth = sim.ground_truth().unwrap();
    assert_eq!(truth.scenario, "flood");
    assert_eq!(truth.district, "Cẩm Lệ");
    assert!(!truth.entities.is_empty());
    let feeds = shipped_feeds();
    let mut peak_inside = 0.0_f64;
    let mut peak_before = 0.0_f64;
    for m in messages.iter().filter(|m| m.feed == FeedKind::WaterLevel) {
        for e in decode(&feeds, m).unwrap() {
            if e.metric == "water_level" && truth.entities.contains(&e.entity_id) {
                let v = e.value.unwrap();
                if in_window(m) {
                    peak_inside = peak_inside.max(v);
                } else if m.sent_at < truth.start {
                    peak_before = peak_before.max(v);
                }
            }
        }
    }
    assert!(
        peak_before < 3.0,
        "before the flood the river is low: {peak_before}"
    );
    assert!(
        peak_inside > 3.0,
        "during the flood a gauge passes 3 m: {peak_inside}"
    );
}

#[test]
fn pollution_spikes_pm25_in_its_district_only() {
    let (sim, messages) = run(ScenarioKind::Pollution, 3);
    let truth = sim.ground_truth().unwrap();
    let feeds = shipped_feeds();
    let (mut inside, mut elsewhere) = (0.0_f64, 0.0_f64);
    for m in messages
        .iter()
        .filter(|m| m.feed == FeedKind::AirQuality && in_window(m))
    {
        for e in decode(&feeds, m)
            .unwrap()
            .into_iter()
            .filter(|e| e.metric == "pm25")
        {
            if e.district == truth.district {
                inside = inside.max(e.value.unwrap());
            } else {
                elsewhere = elsewhere.max(e.value.unwrap());
            }
        }
    }
    assert!(
        inside > 150.0 && elsewhere < 150.0,
        "inside {inside}, elsewhere {elsewhere}"
    );
}

#[test]
fn outage_silences_one_district_and_pipeline_stall_silences_everything() {
    let (sim, messages) = run(ScenarioKind::Outage, 4);
    let slug = DISTRICTS[ScenarioKind::Outage.default_district()].slug;
    let prefix = format!("danang/{slug}/");
    assert!(
        messages
            .iter()
            .any(|m| m.topic.starts_with(&prefix) && !in_window(m))
    );
    assert!(
        !messages
            .iter()
            .any(|m| m.topic.starts_with(&prefix) && in_window(m))
    );
    assert!(
        messages
            .iter()
            .any(|m| !m.topic.starts_with(&prefix) && in_window(m)),
        "other districts keep sending"
    );
    assert_eq!(sim.ground_truth().unwrap().district, "Sơn Trà");

    let (sim, messages) = run(ScenarioKind::PipelineStall, 4);
    assert!(!messages.iter().any(in_window));
    assert!(
        messages
            .iter()
            .any(|m| m.sent_at.as_millis() - start().as_millis() >= 3 * HOUR),
        "feeds resume"
    );
    assert_eq!(sim.ground_truth().unwrap().feeds.len(), 11);
}

#[test]
fn complaint_spike_multiplies_reports_from_its_district() {
    let (_, messages) = run(ScenarioKind::ComplaintSpike, 3);
    let name = DISTRICTS[ScenarioKind::ComplaintSpike.default_district()].name;
    let received = |inside: bool| {
        messages
            .iter()
            .filter(|m| m.feed == FeedKind::CitizenReports && in_window(m) == inside)
            .filter(|m| {
                let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
                v["status"] == "received" && v["district"] == name
            })
            .count()
    };
    // Two hours inside against one hour before and after: compare per hour.
    let inside = received(true) as f64 / 2.0;
    let outside = received(false) as f64;
    assert!(
        inside > 4.0 * outside.max(1.0),
        "reports per hour: {inside} in the spike, {outside} outside"
    );
}

#[test]
fn overdue_shows_as_overdue_dossiers_in_its_district() {
    let (sim, messages) = run(ScenarioKind::Overdue, 4);
    let truth = sim.ground_truth().unwrap();
    let feeds = shipped_feeds();
    let overdue: Vec<_> = messages
        .iter()
        .filter(|m| m.feed == FeedKind::PublicServiceDossiers)
        .flat_map(|m| decode(&feeds, m).unwrap())
        .filter(|e| e.metric == "status" && e.text.as_deref() == Some("overdue"))
        .collect();
    assert!(!overdue.is_empty(), "no overdue dossier");
    assert!(
        overdue
            .iter()
            .all(|e| e.district == truth.district && e.ts >= truth.start && e.ts < truth.end)
    );
}
