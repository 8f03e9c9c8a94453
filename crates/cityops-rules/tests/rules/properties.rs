//! Properties of the engine over generated streams: `for` is honoured, hysteresis holds, a
//! stream shuffled within the lateness gives the sorted stream's transitions, and state stays
//! within its limit.

use crate::support::{event, rules};
use cityops_rules::{AlertState, Engine, Transition};
use proptest::prelude::*;

fn run(engine: &mut Engine, events: &[cityops_event::Event]) -> Vec<Transition> {
    let mut out = Vec::new();
    for e in events {
        engine.observe(e, &mut out);
    }
    engine.flush_all(&mut out);
    out
}

/// Event times: increasing by 1 ms to 2 min.
fn times(n: usize) -> impl Strategy<Value = Vec<i64>> {
    prop::collection::vec(1i64..120_000, n).prop_map(|gaps| {
        gaps.iter()
            .scan(0i64, |t, g| {
                *t += g;
                Some(*t)
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn an_alert_never_fires_before_its_for_has_elapsed(
        for_s in 0i64..600,
        values in prop::collection::vec(0.0f64..10.0, 1..80),
        ts in times(80),
    ) {
        let set = rules(&format!("groups:\n- name: g\n  lateness: 0s\n  rules:\n  - alert: A\n    match: '{{}}'\n    threshold: {{fire: '> 5'}}\n    for: {for_s}s\n"));
        let mut engine = Engine::new(set);
        let events: Vec<_> = values.iter().zip(&ts).map(|(v, t)| event("g", *t, *t, *v)).collect();
        for t in run(&mut engine, &events) {
            if t.to == AlertState::Firing {
                prop_assert_eq!(t.at_ms - t.active_since_ms, for_s * 1000, "{:?}", t);
            }
        }
    }

    #[test]
    fn no_fire_or_resolve_while_the_value_stays_between_the_bounds(
        between in prop::collection::vec(5.0f64..=10.0, 1..80),
        ts in times(81),
        firing_first in any::<bool>(),
    ) {
        let set = rules("groups:\n- name: g\n  lateness: 0s\n  rules:\n  - alert: A\n    match: '{}'\n    threshold: {fire: '> 10', clear: '< 5'}\n");
        let mut engine = Engine::new(set);
        let mut values = Vec::new();
        if firing_first {
            values.push(20.0);
        }
        values.extend(&between);
        let events: Vec<_> = values.iter().zip(&ts).map(|(v, t)| event("g", *t, *t, *v)).collect();
        let out = run(&mut engine, &events);
        let fired = out.iter().filter(|t| t.to == AlertState::Firing).count();
        let resolved = out.iter().filter(|t| t.to == AlertState::Resolved).count();
        prop_assert_eq!(fired, usize::from(firing_first), "{:?}", out);
        prop_assert_eq!(resolved, 0, "{:?}", out);
    }

    #[test]
    fn a_stream_shuffled_within_the_lateness_gives_the_sorted_streams_transitions(
        raw in prop::collection::vec((0usize..4, 0.0f64..100.0, 0i64..30_000), 1..120),
        ts in times(120),
    ) {
        let yaml = "groups:\n- name: g\n  lateness: 30s\n  rules:\n  - alert: PerGauge\n    match: '{}'\n    threshold: {fire: '> 60', clear: '< 40'}\n    for: 2m\n    clear_for: 1m\n  - alert: District\n    match: '{}'\n    by: [district]\n    window: {aggregate: avg, over: 10m, fire: '> 55', clear: '< 45'}\n    for: 1m\n  - alert: Rising\n    match: '{}'\n    rate_of_change: {over: 5m, fire: '> 20'}\n  - alert: Count\n    match: '{}'\n    by: [district]\n    window: {aggregate: count_distinct, over: 3m, fire: '>= 3'}\n";
        let sorted: Vec<_> = raw.iter().zip(&ts).map(|((entity, v, _), t)| event(&format!("e{entity}"), *t, *t, *v)).collect();
        // Arrival order: by event time plus a delay of at most the lateness.
        let mut order: Vec<usize> = (0..sorted.len()).collect();
        order.sort_by_key(|&i| (ts[i] + raw[i].2, i));
        let shuffled: Vec<_> = order.iter().map(|&i| sorted[i].clone()).collect();
        let mut a = Engine::new(rules(yaml));
        let mut b = Engine::new(rules(yaml));
        // Per series the order is the same; across series it follows arrival.
        let by_series = |mut t: Vec<Transition>| {
            t.sort_by(|x, y| (&x.rule, x.fingerprint).cmp(&(&y.rule, y.fingerprint)));
            t
        };
        let from_sorted = by_series(run(&mut a, &sorted));
        let from_shuffled = by_series(run(&mut b, &shuffled));
        prop_assert_eq!(&from_sorted, &from_shuffled);
        prop_assert!(b.rules().all(|(_, stats, _)| stats.late == 0));
    }

    #[test]
    fn tracked_series_never_grow_past_the_limit(entities in prop::collection::vec(0u32..300, 1..400)) {
        let set = rules("groups:\n- name: g\n  lateness: 0s\n  max_series: 50\n  rules:\n  - alert: A\n    match: '{}'\n    threshold: {fire: '> 5'}\n  - alert: B\n    match: '{}'\n    absence: {expected_interval: 1m}\n");
        let mut engine = Engine::new(set);
        let mut out = Vec::new();
        let mut distinct = std::collections::HashSet::new();
        for (i, entity) in entities.iter().enumerate() {
            engine.observe(&event(&format!("e{entity}"), i as i64, i as i64, 6.0), &mut out);
            distinct.insert(*entity);
            for (_, _, series) in engine.rules() {
                prop_assert!(series <= 50);
                prop_assert_eq!(series, distinct.len().min(50));
            }
        }
        let refused: u64 = engine.rules().map(|(_, s, _)| s.refused).sum();
        prop_assert!(distinct.len() <= 50 || refused > 0);
    }
}
