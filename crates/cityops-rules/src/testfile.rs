//! Rule tests, as `promtool test rules` has them: a test file names rule files, gives input
//! series over time in a compact notation, and the alerts expected at given times. Running a
//! test is pure: the caller reads the files.

use crate::condition::Value;
use crate::duration::DurationMs;
use crate::engine::{ActiveAlert, Engine};
use crate::error::RuleError;
use crate::lifecycle::AlertState;
use crate::notation;
use crate::rule::RuleSet;
use crate::selector::{MatchOp, Selector};
use cityops_event::{Event, Quality, Timestamp};
use serde::Deserialize;
use serde_saphyr::Spanned;
use std::collections::BTreeMap;
use std::fmt::Write as _;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFileSpec {
    rule_files: Vec<String>,
    #[serde(default)]
    evaluation_interval: Option<Spanned<String>>,
    tests: Vec<TestSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestSpec {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    interval: Option<Spanned<String>>,
    #[serde(default)]
    start: Option<Spanned<String>>,
    #[serde(default)]
    input_series: Vec<SeriesSpec>,
    #[serde(default)]
    input_query_results: Vec<QueryResultSpec>,
    #[serde(default)]
    alert_rule_test: Vec<AlertTestSpec>,
}

/// What a query rule's query returns for one instance, one value per evaluation of the rule
/// (`_`: the instance is not in that result).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryResultSpec {
    alert: Spanned<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    values: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SeriesSpec {
    series: Spanned<String>,
    values: Spanned<String>,
    #[serde(default)]
    arrival_delay: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertTestSpec {
    eval_time: Spanned<String>,
    alertname: Spanned<String>,
    #[serde(default)]
    exp_alerts: Vec<ExpectedSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectedSpec {
    #[serde(default)]
    exp_labels: BTreeMap<String, String>,
    #[serde(default)]
    exp_annotations: BTreeMap<String, String>,
    #[serde(default)]
    exp_state: Option<Spanned<String>>,
}

/// A parsed test file.
#[derive(Debug)]
pub struct TestFile {
    /// The file's name as given.
    pub name: String,
    /// The rule files it tests, as written (relative to the test file).
    pub rule_files: Vec<String>,
    tests: Vec<Test>,
}

#[derive(Debug)]
struct Test {
    name: String,
    start_ms: i64,
    events: Vec<Event>,
    /// What query rules' queries return, one value per evaluation of the rule.
    queries: Vec<QueryInput>,
    checks: Vec<Check>,
}

#[derive(Debug)]
struct QueryInput {
    line: u64,
    alert: String,
    labels: BTreeMap<String, String>,
    values: Vec<Option<Value>>,
}

#[derive(Debug)]
struct Check {
    line: u64,
    at_ms: i64,
    at_text: String,
    alertname: String,
    expected: Vec<Expected>,
}

#[derive(Debug, Clone, PartialEq)]
struct Expected {
    state: AlertState,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
}

/// The default start of a test's time: 2026-01-01T00:00:00Z.
const DEFAULT_START_MS: i64 = 1_767_225_600_000;

impl TestFile {
    /// Parses a test file; every problem found is returned.
    pub fn parse(name: &str, text: &str) -> Result<TestFile, Vec<RuleError>> {
        let spec: TestFileSpec =
            serde_saphyr::from_str(text).map_err(|e| vec![RuleError::from_yaml(name, &e)])?;
        let mut errors = Vec::new();
        let mut err = |at: &serde_saphyr::Location, message: String| {
            errors.push(RuleError::at(name, *at, message))
        };
        let duration =
            |text: &Spanned<String>,
             what: &str,
             err: &mut dyn FnMut(&serde_saphyr::Location, String)| {
                match DurationMs::parse(&text.value) {
                    Ok(d) => d.ms(),
                    Err(e) => {
                        err(&text.referenced, format!("{what}: {e}"));
                        0
                    }
                }
            };
        let evaluation_interval = spec
            .evaluation_interval
            .as_ref()
            .map_or(60_000, |d| duration(d, "evaluation_interval", &mut err));
        let mut tests = Vec::new();
        for (index, test) in spec.tests.iter().enumerate() {
            let interval = test
                .interval
                .as_ref()
                .map_or(evaluation_interval, |d| duration(d, "interval", &mut err));
            if interval <= 0 {
                let at = test
                    .interval
                    .as_ref()
                    .map(|i| i.referenced)
                    .or(spec.evaluation_interval.as_ref().map(|i| i.referenced));
                if let Some(at) = at {
                    err(&at, "interval: must be longer than 0".into());
                }
            }
            let start = match &test.start {
                None => DEFAULT_START_MS,
                Some(s) => match Timestamp::parse_rfc3339(&s.value) {
                    Ok(t) => t.as_millis(),
                    Err(e) => {
                        err(&s.referenced, format!("start: {e}"));
                        DEFAULT_START_MS
                    }
                },
            };
            let mut events = Vec::new();
            for series in &test.input_series {
                let template = match input_event(&series.series.value) {
                    Ok(e) => e,
                    Err(e) => {
                        err(&series.series.referenced, format!("series: {e}"));
                        continue;
                    }
                };
                let delay = series
                    .arrival_delay
                    .as_ref()
                    .map_or(0, |d| duration(d, "arrival_delay", &mut err));
                let values = match notation::expand(&series.values.value) {
                    Ok(v) => v,
                    Err(e) => {
                        err(&series.values.referenced, format!("values: {e}"));
                        continue;
                    }
                };
                for (i, value) in values.into_iter().enumerate() {
                    let Some(value) = value else { continue };
                    let ts = start + interval.max(1) * i as i64;
                    let mut event = template.clone();
                    match value {
                        Value::Num(n) => event.value = Some(n),
                        Value::Text(t) => event.text = Some(t.into()),
                    }
                    match (
                        Timestamp::from_millis(ts),
                        Timestamp::from_millis(ts + delay),
                    ) {
                        (Ok(t), Ok(a)) => {
                            event.ts = t;
                            event.ingested_at = a;
                            events.push(event);
                        }
                        _ => err(
                            &series.values.referenced,
                            "values: the times run past what a timestamp holds".into(),
                        ),
                    }
                }
            }
            let mut queries = Vec::new();
            for q in &test.input_query_results {
                match notation::expand(&q.values.value) {
                    Ok(values) => queries.push(QueryInput {
                        line: q.alert.referenced.line(),
                        alert: q.alert.value.clone(),
                        labels: q.labels.clone(),
                        values,
                    }),
                    Err(e) => err(&q.values.referenced, format!("values: {e}")),
                }
            }
            let mut checks = Vec::new();
            for check in &test.alert_rule_test {
                let at = duration(&check.eval_time, "eval_time", &mut err);
                let mut expected = Vec::new();
                for exp in &check.exp_alerts {
                    let state = match exp.exp_state.as_ref().map(|s| (s, s.value.as_str())) {
                        None | Some((_, "firing")) => AlertState::Firing,
                        Some((_, "pending")) => AlertState::Pending,
                        Some((s, other)) => {
                            err(
                                &s.referenced,
                                format!("exp_state {other:?} must be firing or pending"),
                            );
                            AlertState::Firing
                        }
                    };
                    expected.push(Expected {
                        state,
                        labels: exp.exp_labels.clone(),
                        annotations: exp.exp_annotations.clone(),
                    });
                }
                expected.sort_by(|a, b| (&a.labels, a.state).cmp(&(&b.labels, b.state)));
                checks.push(Check {
                    line: check.eval_time.referenced.line(),
                    at_ms: start + at,
                    at_text: check.eval_time.value.clone(),
                    alertname: check.alertname.value.clone(),
                    expected,
                });
            }
            checks.sort_by_key(|c| c.at_ms);
            events.sort_by_key(|e| (e.ingested_at.as_millis(), e.ts.as_millis()));
            tests.push(Test {
                name: test
                    .name
                    .clone()
                    .unwrap_or_else(|| format!("test {}", index + 1)),
                start_ms: start,
                events,
                queries,
                checks,
            });
        }
        if errors.is_empty() {
            Ok(TestFile {
                name: name.to_owned(),
                rule_files: spec.rule_files,
                tests,
            })
        } else {
            Err(errors)
        }
    }

    /// Runs every test against `rules`; returns one readable report per failed check.
    pub fn run(&self, rules: &RuleSet) -> Vec<String> {
        let mut failures = Vec::new();
        for test in &self.tests {
            let mut engine = Engine::new(rules.clone());
            let mut transitions = Vec::new();
            let mut next = 0;
            let evaluations = match query_evaluations(rules, &test.queries, test.start_ms) {
                Ok(e) => e,
                Err((line, message)) => {
                    failures.push(format!("{}:{line}: {:?}: {message}", self.name, test.name));
                    continue;
                }
            };
            let mut next_evaluation = 0;
            for check in &test.checks {
                if rules.get(&check.alertname).is_none() {
                    failures.push(format!(
                        "{}:{}: {:?}: no rule named {:?} in {}",
                        self.name,
                        check.line,
                        test.name,
                        check.alertname,
                        self.rule_files.join(", ")
                    ));
                    continue;
                }
                loop {
                    let event_at = test
                        .events
                        .get(next)
                        .map(|e| e.ingested_at.as_millis())
                        .filter(|t| *t <= check.at_ms);
                    let query_at = evaluations
                        .get(next_evaluation)
                        .map(|e| e.at_ms)
                        .filter(|t| *t <= check.at_ms);
                    match (event_at, query_at) {
                        (Some(e), Some(q)) if e <= q => {
                            engine.observe(&test.events[next], &mut transitions);
                            next += 1;
                        }
                        (Some(_), None) => {
                            engine.observe(&test.events[next], &mut transitions);
                            next += 1;
                        }
                        (_, Some(_)) => {
                            let e = &evaluations[next_evaluation];
                            engine.query_result(&e.rule, e.at_ms, &e.rows, &mut transitions);
                            next_evaluation += 1;
                        }
                        (None, None) => break,
                    }
                }
                engine.settle(check.at_ms, &mut transitions);
                let mut got: Vec<Expected> = engine
                    .active()
                    .into_iter()
                    .filter(|a| *a.rule == *check.alertname)
                    .map(|a| expected_of(&a, &transitions))
                    .collect();
                got.sort_by(|a, b| (&a.labels, a.state).cmp(&(&b.labels, b.state)));
                // Annotations: those the test lists are compared; the others are not.
                for alert in &mut got {
                    let listed = check
                        .expected
                        .iter()
                        .find(|e| e.labels == alert.labels && e.state == alert.state);
                    let keys: Vec<&String> = listed
                        .map(|e| e.annotations.keys().collect())
                        .unwrap_or_default();
                    alert.annotations.retain(|k, _| keys.contains(&k));
                }
                if got != check.expected {
                    let mut report = format!(
                        "{}:{}: {:?}: alertname {} at {}:\n",
                        self.name, check.line, test.name, check.alertname, check.at_text
                    );
                    report.push_str("    expected:\n");
                    describe(&mut report, &check.expected);
                    report.push_str("    got:\n");
                    describe(&mut report, &got);
                    failures.push(report);
                }
            }
        }
        failures
    }

    /// Number of tests and of checks in them.
    pub fn counts(&self) -> (usize, usize) {
        (
            self.tests.len(),
            self.tests.iter().map(|t| t.checks.len()).sum(),
        )
    }
}

fn expected_of(alert: &ActiveAlert, transitions: &[crate::engine::Transition]) -> Expected {
    let mut labels = alert.labels.clone();
    labels.remove("alertname");
    // The annotations an alert carries are those rendered when it entered its current state.
    let annotations = transitions
        .iter()
        .rev()
        .find(|t| {
            t.fingerprint == alert.fingerprint && *t.rule == *alert.rule && t.to == alert.state
        })
        .map(|t| t.annotations.clone())
        .unwrap_or_default();
    Expected {
        state: alert.state,
        labels,
        annotations,
    }
}

fn describe(out: &mut String, alerts: &[Expected]) {
    if alerts.is_empty() {
        out.push_str("      (none)\n");
    }
    for a in alerts {
        let _ = writeln!(out, "      {} {}", a.state.as_str(), braces(&a.labels));
        if !a.annotations.is_empty() {
            let _ = writeln!(out, "        annotations {}", braces(&a.annotations));
        }
    }
}

fn braces(map: &BTreeMap<String, String>) -> String {
    let inner: Vec<String> = map.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", inner.join(", "))
}

/// One evaluation of a query rule in a test.
struct Evaluation {
    at_ms: i64,
    rule: String,
    rows: Vec<crate::engine::QueryRow>,
}

/// The evaluations the test's query results make: each named query rule evaluated every
/// `interval` from the start, as many times as its longest value list.
fn query_evaluations(
    rules: &RuleSet,
    inputs: &[QueryInput],
    start: i64,
) -> Result<Vec<Evaluation>, (u64, String)> {
    let mut by_rule: BTreeMap<&str, Vec<&QueryInput>> = BTreeMap::new();
    for input in inputs {
        by_rule.entry(&input.alert).or_default().push(input);
    }
    let mut out = Vec::new();
    for (name, inputs) in by_rule {
        let line = inputs[0].line;
        let Some(rule) = rules.get(name) else {
            return Err((line, format!("input_query_results: no rule named {name:?}")));
        };
        let crate::rule::Kind::Query { interval_ms, .. } = rule.kind else {
            return Err((
                line,
                format!("input_query_results: {name} is not a query rule"),
            ));
        };
        for input in &inputs {
            let names: Vec<&str> = rule.by.iter().map(|(n, _)| n.as_str()).collect();
            let given: Vec<&str> = input.labels.keys().map(String::as_str).collect();
            let mut sorted = names.clone();
            sorted.sort_unstable();
            if given != sorted {
                return Err((
                    input.line,
                    format!(
                        "input_query_results: labels {given:?} must be the rule's by {names:?}"
                    ),
                ));
            }
        }
        let evaluations = inputs.iter().map(|i| i.values.len()).max().unwrap_or(0);
        for n in 0..evaluations {
            let rows = inputs
                .iter()
                .filter_map(|input| {
                    let value = input.values.get(n)?.as_ref()?;
                    Some(crate::engine::QueryRow {
                        labels: rule
                            .by
                            .iter()
                            .map(|(name, _)| input.labels[name].clone())
                            .collect(),
                        value: value.as_f64(),
                    })
                })
                .collect();
            out.push(Evaluation {
                at_ms: start + interval_ms * n as i64,
                rule: name.to_owned(),
                rows,
            });
        }
    }
    out.sort_by_key(|e| e.at_ms);
    Ok(out)
}

/// The event an input series stands for: its labels say the event's fields; other labels are
/// attributes.
fn input_event(series: &str) -> Result<Event, String> {
    let selector = Selector::parse(series)?;
    let mut event = Event::default();
    for m in &selector.matchers {
        if m.op != MatchOp::Equal {
            return Err(format!("label {}: input series take = only", m.name));
        }
        let v = m.value.clone();
        match m.name.as_str() {
            "feed" => event.feed = v,
            "domain" => {
                event.domain = v.parse().map_err(|_| {
                    format!("domain {v:?} is not a domain (water, environment, ...)")
                })?
            }
            "metric" => event.metric = v,
            "entity_id" => event.entity_id = v,
            "entity_type" => event.entity_type = v,
            "district" => event.district = v,
            "ward" => event.ward = v,
            "unit" => event.unit = v,
            "quality" => {
                event.quality = match v.as_str() {
                    "good" => Quality::Good,
                    "suspect" => Quality::Suspect,
                    "bad" => Quality::Bad,
                    _ => return Err(format!("quality {v:?} must be good, suspect or bad")),
                }
            }
            _ => {
                event.attrs.insert(m.name.clone(), v);
            }
        }
    }
    Ok(event)
}
