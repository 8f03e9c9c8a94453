//! Every feed's payloads decode with the shipped config; the intended events come out.

use super::{decode, shipped_feeds, start};
use cityops_sim::{FeedKind, SimOptions, Simulator};
use std::collections::{BTreeMap, BTreeSet};

#[test]
fn six_hours_of_the_city_decode_without_a_single_reject() {
    let feeds = shipped_feeds();
    let sim = Simulator::new(SimOptions::new(7, start()));
    let end = start().as_millis() + 6 * 3600 * 1000;
    let mut messages = BTreeMap::<FeedKind, usize>::new();
    let mut metrics = BTreeMap::<FeedKind, BTreeSet<String>>::new();
    let mut districts = BTreeSet::new();
    let mut rejects = Vec::new();
    for message in sim.take_while(|m| m.sent_at.as_millis() < end) {
        *messages.entry(message.feed).or_default() += 1;
        match decode(&feeds, &message) {
            Ok(events) => {
                assert!(!events.is_empty());
                for event in events {
                    assert_eq!(
                        event.feed,
                        message.feed.name(),
                        "decoded by the feed it was made for"
                    );
                    metrics
                        .entry(message.feed)
                        .or_default()
                        .insert(event.metric.clone());
                    districts.insert(event.district.clone());
                }
            }
            Err(reject) => rejects.push(reject),
        }
    }
    assert!(
        rejects.is_empty(),
        "{} reject(s), first: {}",
        rejects.len(),
        rejects[0]
    );
    for feed in FeedKind::ALL {
        assert!(
            messages.get(&feed).copied().unwrap_or(0) > 0,
            "no message for {feed}"
        );
    }
    let expect = |feed: FeedKind, wanted: &[&str]| {
        let got = &metrics[&feed];
        for metric in wanted {
            assert!(
                got.contains(*metric),
                "{feed}: no {metric} events, got {got:?}"
            );
        }
    };
    expect(
        FeedKind::AirQuality,
        &["pm25", "pm10", "no2", "o3", "temperature", "humidity"],
    );
    expect(
        FeedKind::WaterLevel,
        &["water_level", "rainfall_1h", "battery"],
    );
    expect(
        FeedKind::TrafficCounter,
        &["motorbikes", "cars", "trucks", "buses", "mean_speed"],
    );
    expect(
        FeedKind::Streetlight,
        &[
            "powerState",
            "status",
            "illuminanceLevel",
            "powerConsumption",
        ],
    );
    expect(
        FeedKind::Parking,
        &[
            "availableSpotNumber",
            "totalSpotNumber",
            "occupancy",
            "status",
        ],
    );
    expect(
        FeedKind::WasteBin,
        &["fillingLevel", "temperature", "status"],
    );
    expect(
        FeedKind::CameraAi,
        &["detection", "confidence", "object_count"],
    );
    expect(FeedKind::CitizenReports, &["status", "report_text"]);
    expect(
        FeedKind::PublicServiceDossiers,
        &["status", "service_level", "days_to_due"],
    );
    expect(FeedKind::BusGps, &["speed", "passengers"]);
    expect(
        FeedKind::HospitalBeds,
        &["beds_total", "beds_occupied", "icu_occupied", "er_waiting"],
    );
    // Topic slugs and payload names meet in one spelling per district.
    let named: BTreeSet<&str> = cityops_sim::DISTRICTS.iter().map(|d| d.name).collect();
    let unknown: Vec<&String> = districts
        .iter()
        .filter(|d| !d.is_empty() && !named.contains(d.as_str()))
        .collect();
    assert!(
        unknown.is_empty(),
        "districts outside the canonical names: {unknown:?}"
    );
}

#[test]
fn the_same_seed_gives_byte_identical_output_and_another_seed_does_not() {
    let run = |seed| -> Vec<_> {
        Simulator::new(SimOptions::new(seed, start()))
            .take(3000)
            .collect()
    };
    assert_eq!(run(42), run(42));
    assert_ne!(run(42), run(43));
}

#[test]
fn scale_and_speed_raise_the_rate_and_feeds_can_be_chosen() {
    let base = Simulator::new(SimOptions::new(1, start()));
    let mut options = SimOptions::new(1, start());
    options.scale = 10;
    let scaled = Simulator::new(options);
    let ratio = scaled.natural_rate() / base.natural_rate();
    assert!(
        (7.0..=10.5).contains(&ratio),
        "scale 10 gives {ratio:.1} times the rate"
    );

    let mut options = SimOptions::new(1, start());
    options.speed = 100.0;
    options.feeds = [FeedKind::AirQuality].into_iter().collect();
    let fast: Vec<_> = Simulator::new(options).take(2000).collect();
    assert!(fast.iter().all(|m| m.feed == FeedKind::AirQuality));
    let span_s =
        (fast.last().unwrap().sent_at.as_millis() - fast[0].sent_at.as_millis()) as f64 / 1000.0;
    // 14 stations every 60 s sped up 100 times: about 23 messages per virtual second.
    let rate = 2000.0 / span_s;
    assert!((15.0..35.0).contains(&rate), "rate {rate:.1}/s");
}

#[test]
fn messages_come_in_time_order_with_kafka_keys() {
    let messages: Vec<_> = Simulator::new(SimOptions::new(5, start()))
        .take(5000)
        .collect();
    assert!(messages.windows(2).all(|w| w[0].sent_at <= w[1].sent_at));
    for m in &messages {
        assert_eq!(
            m.key.is_some(),
            m.feed.transport() == cityops_sim::Transport::Kafka,
            "{}",
            m.feed
        );
    }
}

#[test]
fn a_benchmark_rate_is_reached_in_virtual_time() {
    let options = SimOptions::new(3, start());
    let natural = Simulator::new(options.clone()).natural_rate();
    for wanted in [1_000.0, 50_000.0, 300_000.0] {
        let mut fast = options.clone();
        fast.speed = wanted / natural;
        let messages: Vec<_> = Simulator::new(fast).take(60_000).collect();
        let span_s = (messages.last().unwrap().sent_at.as_millis()
            - messages[0].sent_at.as_millis())
        .max(1) as f64
            / 1000.0;
        let rate = messages.len() as f64 / span_s;
        assert!(
            (0.7 * wanted..1.3 * wanted).contains(&rate),
            "asked {wanted}/s, got {rate:.0}/s"
        );
    }
}
