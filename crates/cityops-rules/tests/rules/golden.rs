//! Data-driven rule tests: each directory under `tests/golden/` has `rules.yaml`, `input.jsonl`
//! (events, ticks, flushes) and `expected.jsonl` (the transitions, then each rule's counters).
//! `UPDATE_GOLDEN=1` rewrites the expected files (review the diff before committing).

use crate::support::BASE_MS;
use cityops_event::{Domain, Event, Quality, Timestamp};
use cityops_rules::{DurationMs, Engine, RuleSet, Transition, Value};
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InputEvent {
    /// Event time after the base, as a duration (`-7h` for a clock that is behind).
    ts: String,
    /// Arrival after the base (default: the event time).
    #[serde(default)]
    arrival: Option<String>,
    entity_id: String,
    #[serde(default)]
    feed: Option<String>,
    #[serde(default)]
    metric: Option<String>,
    #[serde(default)]
    value: Option<f64>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    quality: Option<String>,
    #[serde(default)]
    district: Option<String>,
    #[serde(default)]
    ward: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    #[serde(default)]
    note: Option<String>,
    #[serde(default)]
    event: Option<InputEvent>,
    /// Processing time passes to this (after the base).
    #[serde(default)]
    tick: Option<String>,
    /// Apply every buffered event.
    #[serde(default)]
    flush: Option<bool>,
}

fn offset(text: &str) -> i64 {
    match text.strip_prefix('-') {
        Some(rest) => -DurationMs::parse(rest).expect("duration").ms(),
        None => DurationMs::parse(text).expect("duration").ms(),
    }
}

fn event_of(input: &InputEvent) -> Event {
    let ts = BASE_MS + offset(&input.ts);
    let arrival = input.arrival.as_deref().map_or(ts, |a| BASE_MS + offset(a));
    Event {
        ts: Timestamp::from_millis(ts).expect("time"),
        ingested_at: Timestamp::from_millis(arrival).expect("time"),
        feed: input.feed.clone().unwrap_or_else(|| "f".into()),
        domain: Domain::Water,
        entity_id: input.entity_id.clone(),
        metric: input.metric.clone().unwrap_or_else(|| "level".into()),
        value: input.value,
        text: input.text.clone(),
        district: input.district.clone().unwrap_or_default(),
        ward: input.ward.clone().unwrap_or_default(),
        quality: match input.quality.as_deref() {
            None | Some("good") => Quality::Good,
            Some("suspect") => Quality::Suspect,
            Some("bad") => Quality::Bad,
            Some(other) => panic!("quality {other}"),
        },
        ..Event::default()
    }
}

fn at(ms: i64) -> String {
    let offset = ms - BASE_MS;
    if offset < 0 {
        format!("-{}", DurationMs(-offset))
    } else {
        DurationMs(offset).to_string()
    }
}

fn transition_json(t: &Transition) -> serde_json::Value {
    let mut labels = t.labels.clone();
    labels.remove("alertname");
    json!({
        "rule": &*t.rule,
        "from": t.from.as_str(),
        "to": t.to.as_str(),
        "at": at(t.at_ms),
        "since": at(t.active_since_ms),
        "labels": labels,
        "value": match &t.value { Some(Value::Num(n)) => json!(n), Some(Value::Text(s)) => json!(&**s), None => json!(null) },
        "annotations": t.annotations,
    })
}

fn run(dir: &Path) -> String {
    let rules_text = std::fs::read_to_string(dir.join("rules.yaml")).expect("rules.yaml");
    let rules = RuleSet::parse(&[("rules.yaml".into(), rules_text)])
        .unwrap_or_else(|e| panic!("{}: {e:?}", dir.display()));
    let mut engine = Engine::new(rules);
    let mut out = Vec::new();
    let input = std::fs::read_to_string(dir.join("input.jsonl")).expect("input.jsonl");
    for (n, text) in input
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let line: Line = serde_json::from_str(text)
            .unwrap_or_else(|e| panic!("{}:{}: {e}", dir.display(), n + 1));
        let _ = line.note;
        if let Some(e) = &line.event {
            engine.observe(&event_of(e), &mut out);
        }
        if let Some(t) = &line.tick {
            engine.tick(BASE_MS + offset(t), &mut out);
        }
        if line.flush == Some(true) {
            engine.flush_all(&mut out);
        }
    }
    let mut text = String::new();
    for t in &out {
        text.push_str(&transition_json(t).to_string());
        text.push('\n');
    }
    let stats: BTreeMap<String, serde_json::Value> = engine
        .rules()
        .map(|(rule, stats, series)| {
            (rule.name.to_string(), json!({"evaluated": stats.evaluated, "late": stats.late, "bad_skipped": stats.bad_skipped, "refused": stats.refused, "series": series}))
        })
        .collect();
    text.push_str(&json!({ "stats": stats }).to_string());
    text.push('\n');
    text
}

fn golden_dirs() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("golden dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

#[test]
fn every_golden_case_gives_its_expected_transitions() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let dirs = golden_dirs();
    assert!(dirs.len() >= 6, "expected the golden cases, found {dirs:?}");
    let mut mismatches = Vec::new();
    for dir in &dirs {
        let got = run(dir);
        let expected_path = dir.join("expected.jsonl");
        if update {
            std::fs::write(&expected_path, &got).expect("write expected");
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if got != expected {
            mismatches.push(format!(
                "{}:\n--- expected\n{expected}--- got\n{got}",
                dir.display()
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} golden case(s) differ (UPDATE_GOLDEN=1 rewrites):\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}
