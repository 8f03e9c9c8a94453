//! Compiled rules and the rule set: what a rule file means once every value is checked.

use crate::condition::Condition;
use crate::duration::DurationMs;
use crate::error::RuleError;
use crate::file::{
    AbsenceSpec, FileSpec, QuerySpec, RateSpec, RuleSpec, ThresholdSpec, WindowSpec,
};
use crate::labels::{Field, RESERVED, is_label_name};
use crate::selector::Selector;
use crate::template;
use serde_saphyr::{Location, Spanned};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::hash::Hasher;
use std::sync::Arc;

/// Allowed lateness when neither the rule nor its group says.
pub const DEFAULT_LATENESS_MS: i64 = 1_000;
/// Series a rule tracks at most when neither the rule nor its group says.
pub const DEFAULT_MAX_SERIES: u32 = 10_000;
/// Samples a window keeps per series at most; older ones are dropped early (counted).
pub const MAX_WINDOW_SAMPLES: usize = 100_000;

/// How urgent an alert is; a label of every alert.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Act now: people or property at risk.
    Critical,
    /// Look soon.
    Warning,
    /// For the record.
    Info,
}

impl Severity {
    /// Every severity, most urgent first.
    pub const ALL: [Severity; 3] = [Severity::Critical, Severity::Warning, Severity::Info];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }

    fn parse(text: &str) -> Option<Severity> {
        match text {
            "critical" => Some(Severity::Critical),
            "warning" => Some(Severity::Warning),
            "info" => Some(Severity::Info),
            _ => None,
        }
    }
}

/// What a window aggregates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Aggregate {
    /// Mean of the values.
    Avg,
    /// Smallest value.
    Min,
    /// Largest value.
    Max,
    /// Sum of the values.
    Sum,
    /// Number of events.
    Count,
    /// Number of distinct entities.
    CountDistinct,
    /// Per-second increase of a counter (resets counted as restarts from zero).
    Rate,
    /// Last value minus the first.
    Delta,
    /// The quantile (0..1), nearest rank.
    Quantile(f64),
}

impl Aggregate {
    fn parse(text: &str) -> Option<Aggregate> {
        Some(match text {
            "avg" => Aggregate::Avg,
            "min" => Aggregate::Min,
            "max" => Aggregate::Max,
            "sum" => Aggregate::Sum,
            "count" => Aggregate::Count,
            "count_distinct" => Aggregate::CountDistinct,
            "rate" => Aggregate::Rate,
            "delta" => Aggregate::Delta,
            p => {
                let n: u8 = p.strip_prefix('p')?.parse().ok()?;
                if !(1..=99).contains(&n) {
                    return None;
                }
                Aggregate::Quantile(f64::from(n) / 100.0)
            }
        })
    }

    /// Whether the aggregate needs the events' values (count and count_distinct do not).
    pub fn needs_values(self) -> bool {
        !matches!(self, Aggregate::Count | Aggregate::CountDistinct)
    }
}

/// The kind of a rule, with its parameters.
#[derive(Debug, Clone)]
pub enum Kind {
    /// The latest value against a bound.
    Threshold {
        /// Fires while this holds.
        fire: Condition,
        /// Clears while this holds (None: while `fire` does not).
        clear: Option<Condition>,
    },
    /// An aggregate over a sliding window of event time.
    Window {
        /// What is computed.
        aggregate: Aggregate,
        /// The window's length.
        over_ms: i64,
        /// Only events whose value satisfies this are samples.
        filter: Option<Condition>,
        /// Fires while this holds.
        fire: Condition,
        /// Clears while this holds.
        clear: Option<Condition>,
        /// Fewest samples for the aggregate to count.
        min_samples: u32,
    },
    /// `(last - first) / (t_last - t_first) * per` over the window.
    RateOfChange {
        /// The window's length.
        over_ms: i64,
        /// The change is per this long.
        per_ms: i64,
        /// The samples must span at least this long.
        min_span_ms: i64,
        /// Fires while this holds.
        fire: Condition,
        /// Clears while this holds.
        clear: Option<Condition>,
    },
    /// No event for longer than the expected interval times `factor`, judged by arrival time.
    Absence {
        /// The interval when nothing more specific is known.
        expected_ms: Option<i64>,
        /// The label that picks an interval from `intervals`.
        interval_by: Option<Field>,
        /// Intervals by that label's value.
        intervals: BTreeMap<String, i64>,
        /// Learn each series' interval from its arrivals.
        learn: bool,
        /// How many intervals of silence fire.
        factor: f64,
        /// Hold the series back while their feed has been silent this long.
        hold_while_feed_silent_ms: Option<i64>,
    },
    /// ClickHouse SQL run every `interval_ms`: each result row is one alert instance, its
    /// `by` columns the labels and `value_column` the value. A row holds until the next
    /// evaluation; an instance missing from a result no longer holds.
    Query {
        /// The SELECT as written, `$now` standing for the evaluation time ([`render_sql`]).
        sql: String,
        /// How often it runs (evaluations fall on multiples of it since the epoch).
        interval_ms: i64,
        /// The column with the value.
        value_column: String,
        /// The domain of its alerts.
        domain: cityops_event::Domain,
        /// Fires while this holds.
        fire: Condition,
        /// Clears while this holds.
        clear: Option<Condition>,
    },
}

impl Kind {
    /// The kind's name as written in rule files.
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Threshold { .. } => "threshold",
            Kind::Window { .. } => "window",
            Kind::RateOfChange { .. } => "rate_of_change",
            Kind::Absence { .. } => "absence",
            Kind::Query { .. } => "query",
        }
    }
}

/// A rule ready to evaluate.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The alert's name.
    pub name: Arc<str>,
    /// The group it is in.
    pub group: String,
    /// The file it came from and the line of its `alert:`.
    pub file: String,
    /// Line of `alert:`.
    pub line: u64,
    /// Which events it looks at.
    pub selector: Selector,
    /// The series labels, in the order written.
    pub by: Vec<(String, Field)>,
    /// What it computes.
    pub kind: Kind,
    /// The condition must hold this long before firing.
    pub for_ms: i64,
    /// The clear condition must hold this long before resolving.
    pub clear_for_ms: i64,
    /// Keep firing this long after the alert would resolve.
    pub keep_firing_for_ms: i64,
    /// Events up to this much out of order are put in order; later ones are dropped.
    pub lateness_ms: i64,
    /// The alert's severity.
    pub severity: Severity,
    /// Static labels added to the alert.
    pub labels: BTreeMap<String, String>,
    /// Annotation templates, by name.
    pub annotations: BTreeMap<String, String>,
    /// Count `bad` events too.
    pub include_bad: bool,
    /// Limit on tracked series.
    pub max_series: u32,
    /// Hash of everything that decides the rule's series and their state (selector, series
    /// labels, kind, durations): state is kept across a reload only if it is unchanged.
    pub state_key: u64,
    /// Firing and not acknowledged this long: escalate (None: the alerter's policy; 0: never).
    pub escalate_after_ms: Option<i64>,
}

/// Every rule of the loaded files, in file and then rule order.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    /// The rules.
    pub rules: Vec<Rule>,
}

impl RuleSet {
    /// Parses and checks `(file name, text)` pairs; all or nothing: any error refuses the whole
    /// set, and every error found is returned.
    pub fn parse(files: &[(String, String)]) -> Result<RuleSet, Vec<RuleError>> {
        let mut rules = Vec::new();
        let mut errors = Vec::new();
        for (file, text) in files {
            match parse_file(file, text) {
                Ok(mut parsed) => rules.append(&mut parsed),
                Err(mut found) => errors.append(&mut found),
            }
        }
        let mut seen: HashMap<&str, &Rule> = HashMap::new();
        for rule in &rules {
            if let Some(first) = seen.insert(&rule.name, rule) {
                errors.push(RuleError {
                    file: rule.file.clone(),
                    line: rule.line,
                    column: 1,
                    message: format!(
                        "alert {:?} is also defined at {}:{}: alert names must be unique",
                        rule.name, first.file, first.line
                    ),
                });
            }
        }
        if errors.is_empty() {
            Ok(RuleSet { rules })
        } else {
            Err(errors)
        }
    }

    /// The rule of that name.
    pub fn get(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| &*r.name == name)
    }
}

/// Parses one file into its rules, or every error found in it.
pub fn parse_file(file: &str, text: &str) -> Result<Vec<Rule>, Vec<RuleError>> {
    let spec: FileSpec =
        serde_saphyr::from_str(text).map_err(|e| vec![RuleError::from_yaml(file, &e)])?;
    let mut cx = Cx {
        file,
        errors: Vec::new(),
    };
    let mut rules = Vec::new();
    let mut groups = HashSet::new();
    for group in &spec.groups {
        if group.name.value.trim().is_empty() {
            cx.error(&group.name.referenced, "a group needs a name");
        }
        if !groups.insert(group.name.value.as_str()) {
            cx.error(
                &group.name.referenced,
                format!("group {:?} appears twice in this file", group.name.value),
            );
        }
        let lateness = group
            .lateness
            .as_ref()
            .and_then(|l| cx.duration(l, "lateness"))
            .unwrap_or(DEFAULT_LATENESS_MS);
        let max_series = group
            .max_series
            .as_ref()
            .map_or(DEFAULT_MAX_SERIES, |m| m.value);
        for spec in &group.rules {
            if let Some(rule) = cx.rule(&group.name.value, lateness, max_series, spec) {
                rules.push(rule);
            }
        }
    }
    if cx.errors.is_empty() {
        Ok(rules)
    } else {
        Err(cx.errors)
    }
}

struct Cx<'a> {
    file: &'a str,
    errors: Vec<RuleError>,
}

impl Cx<'_> {
    fn error(&mut self, at: &Location, message: impl Into<String>) {
        self.errors.push(RuleError::at(self.file, *at, message));
    }

    fn duration(&mut self, text: &Spanned<String>, what: &str) -> Option<i64> {
        match DurationMs::parse(&text.value) {
            Ok(d) => Some(d.ms()),
            Err(e) => {
                self.error(&text.referenced, format!("{what}: {e}"));
                None
            }
        }
    }

    fn condition(&mut self, text: &Spanned<String>, what: &str) -> Option<Condition> {
        match Condition::parse(&text.value) {
            Ok(c) => Some(c),
            Err(e) => {
                self.error(&text.referenced, format!("{what}: {e}"));
                None
            }
        }
    }

    fn numeric(&mut self, text: &Spanned<String>, what: &str) -> Option<Condition> {
        let c = self.condition(text, what)?;
        if c.is_text() {
            self.error(
                &text.referenced,
                format!("{what}: this kind computes a number; a text bound never holds"),
            );
            return None;
        }
        Some(c)
    }

    fn rule(
        &mut self,
        group: &str,
        group_lateness: i64,
        group_max_series: u32,
        spec: &RuleSpec,
    ) -> Option<Rule> {
        let before = self.errors.len();
        let name = &spec.alert.value;
        let at = spec.alert.referenced;
        if !is_alert_name(name) {
            self.error(&at, format!("alert name {name:?} must be letters, digits and _ (starting with a letter), e.g. FloodGaugeHigh"));
        }
        let selector = match (&spec.select, spec.query.is_some()) {
            (Some(select), false) => match Selector::parse(&select.value) {
                Ok(s) => s,
                Err(e) => {
                    self.error(&select.referenced, format!("match: {e}"));
                    Selector::default()
                }
            },
            (Some(select), true) => {
                self.error(
                    &select.referenced,
                    "match: a query rule reads ClickHouse, not events; remove match",
                );
                Selector::default()
            }
            (None, true) => Selector::default(),
            (None, false) => {
                self.error(
                    &at,
                    "match: which events the rule looks at, e.g. '{feed=\"water_level\"}'",
                );
                Selector::default()
            }
        };
        if spec.query.is_some() && spec.by.is_none() {
            self.error(
                &at,
                "by: a query rule lists the label columns its query returns (e.g. by: [agency])",
            );
        }
        let by = self.by(spec);
        let kind = self.kind(spec, &at);
        let for_ms = spec
            .for_
            .as_ref()
            .and_then(|d| self.duration(d, "for"))
            .unwrap_or(0);
        let clear_for_ms = spec
            .clear_for
            .as_ref()
            .and_then(|d| self.duration(d, "clear_for"))
            .unwrap_or(0);
        let keep_firing_for_ms = spec
            .keep_firing_for
            .as_ref()
            .and_then(|d| self.duration(d, "keep_firing_for"))
            .unwrap_or(0);
        let lateness_ms = spec
            .lateness
            .as_ref()
            .and_then(|d| self.duration(d, "lateness"))
            .unwrap_or(group_lateness);
        let severity = match &spec.severity {
            None => Severity::Warning,
            Some(s) => Severity::parse(&s.value).unwrap_or_else(|| {
                self.error(
                    &s.referenced,
                    format!("severity {:?} must be critical, warning or info", s.value),
                );
                Severity::Warning
            }),
        };
        let mut labels = BTreeMap::new();
        if let Some(spanned) = &spec.labels {
            for (key, value) in &spanned.value {
                if !is_label_name(key) {
                    self.error(
                        &spanned.referenced,
                        format!("labels: {key:?} is not a label name ([a-zA-Z_][a-zA-Z0-9_]*)"),
                    );
                } else if RESERVED.contains(&key.as_str()) {
                    self.error(
                        &spanned.referenced,
                        format!("labels: {key:?} is set by the alert itself"),
                    );
                } else if by.iter().any(|(b, _)| b == key) {
                    self.error(
                        &spanned.referenced,
                        format!("labels: {key:?} is also a series label (by)"),
                    );
                }
                labels.insert(key.clone(), value.clone());
            }
        }
        let mut annotations = BTreeMap::new();
        for (key, value) in &spec.annotations {
            if !is_label_name(key) {
                self.error(
                    &value.referenced,
                    format!("annotations: {key:?} is not a name ([a-zA-Z_][a-zA-Z0-9_]*)"),
                );
            }
            if let Err(e) = template::check(&value.value) {
                self.error(&value.referenced, format!("annotation {key}: {e}"));
            }
            annotations.insert(key.clone(), value.value.clone());
        }
        let max_series = spec
            .max_series
            .as_ref()
            .map_or(group_max_series, |m| m.value);
        let escalate_after_ms = spec
            .escalate_after
            .as_ref()
            .and_then(|d| self.duration(d, "escalate_after"));
        if max_series == 0 {
            self.error(&at, "max_series must be at least 1");
        }
        if self.errors.len() > before {
            return None;
        }
        let kind = kind?;
        let state_key = state_key(
            spec.select.as_ref().map_or("", |s| s.value.as_str()),
            &by,
            &kind,
            [for_ms, clear_for_ms, keep_firing_for_ms, lateness_ms],
            spec.include_bad,
        );
        Some(Rule {
            name: Arc::from(name.as_str()),
            group: group.to_owned(),
            file: self.file.to_owned(),
            line: at.line(),
            selector,
            by,
            kind,
            for_ms,
            clear_for_ms,
            keep_firing_for_ms,
            lateness_ms,
            severity,
            labels,
            annotations,
            include_bad: spec.include_bad,
            max_series,
            state_key,
            escalate_after_ms,
        })
    }

    fn by(&mut self, spec: &RuleSpec) -> Vec<(String, Field)> {
        let Some(by) = &spec.by else {
            return vec![("entity_id".to_owned(), Field::EntityId)];
        };
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for name in &by.value {
            if !is_label_name(name) {
                self.error(
                    &by.referenced,
                    format!("by: {name:?} is not a label name ([a-zA-Z_][a-zA-Z0-9_]*)"),
                );
            } else if RESERVED.contains(&name.as_str()) {
                self.error(
                    &by.referenced,
                    format!("by: {name:?} is set by the alert itself"),
                );
            } else if !seen.insert(name.as_str()) {
                self.error(&by.referenced, format!("by: {name:?} is listed twice"));
            } else {
                out.push((name.clone(), Field::from_name(name)));
            }
        }
        out
    }

    fn kind(&mut self, spec: &RuleSpec, at: &Location) -> Option<Kind> {
        let given = [
            spec.threshold.is_some(),
            spec.window.is_some(),
            spec.rate_of_change.is_some(),
            spec.absence.is_some(),
            spec.query.is_some(),
        ];
        let count = given.iter().filter(|g| **g).count();
        if count != 1 {
            self.error(at, format!("a rule needs exactly one of threshold, window, rate_of_change, absence, query (found {count})"));
            return None;
        }
        if let Some(q) = &spec.query {
            return self.query(q, spec);
        }
        if let Some(t) = &spec.threshold {
            return self.threshold(t);
        }
        if let Some(w) = &spec.window {
            return self.window(w);
        }
        if let Some(r) = &spec.rate_of_change {
            return self.rate(r);
        }
        spec.absence.as_ref().and_then(|a| self.absence(a, at))
    }

    fn threshold(&mut self, t: &ThresholdSpec) -> Option<Kind> {
        let fire = self.condition(&t.fire, "fire");
        let clear = t.clear.as_ref().map(|c| self.condition(c, "clear"));
        if let (Some(f), Some(Some(c))) = (&fire, &clear)
            && f.is_text() != c.is_text()
        {
            self.error(
                &t.fire.referenced,
                "fire and clear must both compare numbers or both text",
            );
        }
        Some(Kind::Threshold {
            fire: fire?,
            clear: clear.map(|c| c.ok_or(())).transpose().ok()?,
        })
    }

    fn window(&mut self, w: &WindowSpec) -> Option<Kind> {
        let aggregate = Aggregate::parse(&w.aggregate.value);
        if aggregate.is_none() {
            self.error(&w.aggregate.referenced, format!("aggregate {:?} must be one of avg, min, max, sum, count, count_distinct, rate, delta, p1..p99", w.aggregate.value));
        }
        let over_ms = self.positive(&w.over, "over");
        let filter = w.where_.as_ref().map(|c| self.condition(c, "where"));
        let fire = self.numeric(&w.fire, "fire");
        let clear = w.clear.as_ref().map(|c| self.numeric(c, "clear"));
        let min_samples = w.min_samples.as_ref().map_or(1, |m| m.value).max(1);
        Some(Kind::Window {
            aggregate: aggregate?,
            over_ms: over_ms?,
            filter: filter.map(|c| c.ok_or(())).transpose().ok()?,
            fire: fire?,
            clear: clear.map(|c| c.ok_or(())).transpose().ok()?,
            min_samples,
        })
    }

    fn rate(&mut self, r: &RateSpec) -> Option<Kind> {
        let over_ms = self.positive(&r.over, "over");
        let per_ms = match &r.per {
            Some(p) => self.positive(p, "per"),
            None => over_ms,
        };
        let min_span_ms = match &r.min_span {
            Some(m) => self.duration(m, "min_span"),
            None => over_ms.map(|o| o / 2),
        };
        if let (Some(span), Some(over), Some(m)) = (min_span_ms, over_ms, &r.min_span)
            && span > over
        {
            self.error(&m.referenced, "min_span: longer than the window (over)");
        }
        let fire = self.numeric(&r.fire, "fire");
        let clear = r.clear.as_ref().map(|c| self.numeric(c, "clear"));
        Some(Kind::RateOfChange {
            over_ms: over_ms?,
            per_ms: per_ms?,
            min_span_ms: min_span_ms?.max(1),
            fire: fire?,
            clear: clear.map(|c| c.ok_or(())).transpose().ok()?,
        })
    }

    fn absence(&mut self, a: &AbsenceSpec, at: &Location) -> Option<Kind> {
        let expected_ms = match &a.expected_interval {
            Some(e) => Some(self.positive(e, "expected_interval")?),
            None => None,
        };
        let interval_by = a.interval_by.as_ref().map(|f| {
            if !is_label_name(&f.value) {
                self.error(
                    &f.referenced,
                    format!("interval_by: {:?} is not a label name", f.value),
                );
            }
            Field::from_name(&f.value)
        });
        let mut intervals = BTreeMap::new();
        for (key, value) in &a.intervals {
            if let Some(ms) = self.positive(value, &format!("intervals.{key}")) {
                intervals.insert(key.clone(), ms);
            }
        }
        if interval_by.is_some() == a.intervals.is_empty() {
            self.error(at, "absence: interval_by and intervals go together");
        }
        if expected_ms.is_none() && intervals.is_empty() && !a.learn {
            self.error(
                at,
                "absence: give expected_interval, intervals (with interval_by), or learn: true",
            );
        }
        let factor = a.factor.as_ref().map_or(3.0, |f| f.value);
        if let Some(f) = &a.factor
            && !(f.value.is_finite() && f.value >= 1.0)
        {
            self.error(&f.referenced, "factor must be a number of at least 1");
        }
        let hold_while_feed_silent_ms = match &a.hold_while_feed_silent {
            Some(h) => Some(self.positive(h, "hold_while_feed_silent")?),
            None => None,
        };
        let shortest = intervals.values().copied().chain(expected_ms).min();
        if let (Some(hold), Some(interval), Some(h)) = (
            hold_while_feed_silent_ms,
            shortest,
            &a.hold_while_feed_silent,
        ) && hold as f64 >= interval as f64 * factor
        {
            self.error(
                &h.referenced,
                "hold_while_feed_silent: must be shorter than the silence that fires (interval × factor), or a device's alert comes before the feed counts as silent",
            );
        }
        Some(Kind::Absence {
            expected_ms,
            interval_by,
            intervals,
            learn: a.learn,
            factor,
            hold_while_feed_silent_ms,
        })
    }

    fn query(&mut self, q: &QuerySpec, spec: &RuleSpec) -> Option<Kind> {
        let sql = q
            .sql
            .value
            .trim()
            .trim_end_matches(';')
            .trim_end()
            .to_owned();
        if let Err(e) = check_sql(&sql) {
            self.error(&q.sql.referenced, format!("sql: {e}"));
        }
        let interval_ms = self.positive(&q.interval, "interval");
        if let Some(ms) = interval_ms
            && ms < 1_000
        {
            self.error(&q.interval.referenced, "interval: at least 1s");
        }
        let value_column = q
            .value_column
            .as_ref()
            .map_or_else(|| "value".to_owned(), |v| v.value.clone());
        if let Some(v) = &q.value_column
            && !is_label_name(&v.value)
        {
            self.error(
                &v.referenced,
                format!("value_column: {:?} is not a column name", v.value),
            );
        }
        if let Some(by) = &spec.by
            && by.value.contains(&value_column)
        {
            self.error(
                &by.referenced,
                format!("by: {value_column:?} is the value column"),
            );
        }
        let domain = match &q.domain {
            None => cityops_event::Domain::Other,
            Some(d) => d.value.parse().unwrap_or_else(|_| {
                self.error(
                    &d.referenced,
                    format!(
                        "domain {:?} is not a domain (water, environment, ...)",
                        d.value
                    ),
                );
                cityops_event::Domain::Other
            }),
        };
        let fire = self.numeric(&q.fire, "fire");
        let clear = q.clear.as_ref().map(|c| self.numeric(c, "clear"));
        Some(Kind::Query {
            sql,
            interval_ms: interval_ms?,
            value_column,
            domain,
            fire: fire?,
            clear: clear.map(|c| c.ok_or(())).transpose().ok()?,
        })
    }

    fn positive(&mut self, text: &Spanned<String>, what: &str) -> Option<i64> {
        let ms = self.duration(text, what)?;
        if ms <= 0 {
            self.error(&text.referenced, format!("{what}: must be longer than 0"));
            return None;
        }
        Some(ms)
    }
}

/// What stands for the evaluation time in a query rule's SQL.
pub const NOW_PLACEHOLDER: &str = "$now";

/// Checks a query rule's SQL: one SELECT that takes its time from `$now`, so that a backtest
/// can run it at past instants. What it may read is the read-only user's business.
fn check_sql(sql: &str) -> Result<(), String> {
    if sql.is_empty() {
        return Err("empty".into());
    }
    let squeezed: String = sql
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_lowercase();
    let first = sql.split_whitespace().next().unwrap_or("").to_lowercase();
    if first != "select" && first != "with" {
        return Err("must be a SELECT (or WITH ... SELECT)".into());
    }
    if sql.contains(';') {
        return Err("one statement only (no ;)".into());
    }
    for clock in ["now()", "today()", "yesterday()"] {
        if squeezed.contains(clock) {
            return Err(format!(
                "uses {clock}: write {NOW_PLACEHOLDER} (the evaluation time, a DateTime) so that the rule gives the same answer live and in a backtest"
            ));
        }
    }
    if !sql.contains(NOW_PLACEHOLDER) {
        return Err(format!(
            "never mentions {NOW_PLACEHOLDER}: a query rule looks at a time range ending at the evaluation time"
        ));
    }
    Ok(())
}

/// A query rule's SQL for the evaluation at `at_ms`: `$now` becomes that instant as a
/// `DateTime` literal. Nothing else is put into the text: values from events never are.
pub fn render_sql(sql: &str, at_ms: i64) -> String {
    let seconds = at_ms.div_euclid(1_000);
    sql.replace(NOW_PLACEHOLDER, &format!("toDateTime({seconds})"))
}

fn is_alert_name(name: &str) -> bool {
    name.chars().next().is_some_and(|c| c.is_ascii_alphabetic()) && is_label_name(name)
}

fn state_key(
    selector: &str,
    by: &[(String, Field)],
    kind: &Kind,
    durations: [i64; 4],
    include_bad: bool,
) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.write(selector.as_bytes());
    for (name, _) in by {
        h.write(b"\0by\0");
        h.write(name.as_bytes());
    }
    h.write(format!("{kind:?}").as_bytes());
    for d in durations {
        h.write(&d.to_le_bytes());
    }
    h.write(&[u8::from(include_bad)]);
    h.finish()
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}:{})", self.name, self.file, self.line)
    }
}
