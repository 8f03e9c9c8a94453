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

/// What the live demo needs: a cloudburst shows on the gauges within a minute or two and the
/// water goes down within minutes of the rain stopping, so that a rate-of-change rule both
/// fires and resolves while someone watches.
#[test]
fn a_cloudburst_raises_the_gauges_within_minutes_and_they_fall_back_after() {
    const MINUTE: i64 = 60 * 1000;
    let mut options = SimOptions::new(5, start());
    options.feeds = [FeedKind::WaterLevel].into_iter().collect();
    options.scenario = Some(ScenarioSpec::new(
        ScenarioKind::Flood,
        20 * MINUTE,
        3 * MINUTE,
    ));
    let truth = Simulator::new(options.clone()).ground_truth().unwrap();
    let end = start().as_millis() + 40 * MINUTE;
    let feeds = shipped_feeds();
    // Per gauge of the district: the last level before the onset, the highest level in the
    // incident's second and third minutes, the highest level from ten minutes after its end.
    let mut before = std::collections::BTreeMap::new();
    let mut rise = std::collections::BTreeMap::new();
    let mut after = std::collections::BTreeMap::new();
    for m in Simulator::new(options).take_while(|m| m.sent_at.as_millis() < end) {
        let offset = m.sent_at.as_millis() - start().as_millis();
        for e in decode(&feeds, &m).unwrap() {
            if e.metric != "water_level" || !truth.entities.contains(&e.entity_id) {
                continue;
            }
            let v = e.value.unwrap();
            if offset < 20 * MINUTE {
                before.insert(e.entity_id.clone(), v);
            } else if (21 * MINUTE..23 * MINUTE).contains(&offset) {
                let r = rise.entry(e.entity_id.clone()).or_insert(f64::MIN);
                *r = f64::max(*r, v);
            } else if offset >= 33 * MINUTE {
                let a = after.entry(e.entity_id.clone()).or_insert(f64::MIN);
                *a = f64::max(*a, v);
            }
        }
    }
    assert!(!before.is_empty());
    for (gauge, level) in &before {
        let (up, down) = (rise[gauge], after[gauge]);
        assert!(
            up - level > 0.3,
            "{gauge}: {level} m before, {up} m in the 2nd-3rd minute"
        );
        assert!(
            down - level < 0.05,
            "{gauge}: {level} m before, {down} m ten minutes after the rain"
        );
    }
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

#[test]
fn faulty_messages_are_rejected_and_leave_the_rest_of_the_city_unchanged() {
    let end = start().as_millis() + HOUR;
    let clean: Vec<_> = Simulator::new(SimOptions::new(3, start()))
        .take_while(|m| m.sent_at.as_millis() < end)
        .collect();
    let mut options = SimOptions::new(3, start());
    options.faulty_fraction = 0.02;
    let faulty: Vec<_> = Simulator::new(options)
        .take_while(|m| m.sent_at.as_millis() < end)
        .collect();
    assert_eq!(clean.len(), faulty.len());
    let feeds = shipped_feeds();
    let mut broken = 0;
    for (a, b) in clean.iter().zip(&faulty) {
        assert_eq!((&a.topic, a.sent_at), (&b.topic, b.sent_at));
        if a.payload != b.payload {
            broken += 1;
            assert!(
                decode(&feeds, b).is_err(),
                "a broken {} payload decoded: {:?}",
                b.feed.name(),
                String::from_utf8_lossy(&b.payload)
            );
        }
    }
    let share = f64::from(broken) / clean.len() as f64;
    assert!(
        (0.01..0.03).contains(&share),
        "{broken} of {} broken",
        clean.len()
    );
}
