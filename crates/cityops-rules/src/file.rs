//! The rule file as written: YAML grouped like Prometheus rule groups. Every value whose
//! meaning is checked after parsing keeps its place (`Spanned`), so that a bad regular
//! expression or duration is reported at its line and column.

use serde::Deserialize;
use serde_saphyr::Spanned;
use std::collections::BTreeMap;

/// A rule file: `groups:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileSpec {
    /// The rule groups.
    pub groups: Vec<GroupSpec>,
}

/// A group of rules sharing defaults.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GroupSpec {
    /// The group's name, unique within its file.
    pub name: Spanned<String>,
    /// Default allowed lateness of the group's rules (default `1s`).
    #[serde(default)]
    pub lateness: Option<Spanned<String>>,
    /// Default limit on the series a rule of the group tracks (default 10,000).
    #[serde(default)]
    pub max_series: Option<Spanned<u32>>,
    /// The rules.
    pub rules: Vec<RuleSpec>,
}

/// One alerting rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RuleSpec {
    /// The alert's name (`alertname`), unique across the loaded files.
    pub alert: Spanned<String>,
    /// Which events the rule looks at: a PromQL-style selector (every kind but `query`).
    #[serde(default, rename = "match")]
    pub select: Option<Spanned<String>>,
    /// The labels a series is made of (default `[entity_id]`).
    #[serde(default)]
    pub by: Option<Spanned<Vec<String>>>,
    /// Kind: the latest value against a bound.
    #[serde(default)]
    pub threshold: Option<ThresholdSpec>,
    /// Kind: an aggregate over a sliding window of event time.
    #[serde(default)]
    pub window: Option<WindowSpec>,
    /// Kind: the change of the value over a window, per a duration.
    #[serde(default)]
    pub rate_of_change: Option<RateSpec>,
    /// Kind: no event of the series for longer than expected.
    #[serde(default)]
    pub absence: Option<AbsenceSpec>,
    /// Kind: ClickHouse SQL run at an interval, each result row one alert instance.
    #[serde(default)]
    pub query: Option<QuerySpec>,
    /// How long the condition must hold before the alert fires.
    #[serde(default, rename = "for")]
    pub for_: Option<Spanned<String>>,
    /// How long the clear condition must hold before a firing alert resolves.
    #[serde(default)]
    pub clear_for: Option<Spanned<String>>,
    /// How long the alert keeps firing once it would resolve.
    #[serde(default)]
    pub keep_firing_for: Option<Spanned<String>>,
    /// Allowed lateness of events (overrides the group's).
    #[serde(default)]
    pub lateness: Option<Spanned<String>>,
    /// `critical`, `warning` (default) or `info`.
    #[serde(default)]
    pub severity: Option<Spanned<String>>,
    /// Labels added to the alert.
    #[serde(default)]
    pub labels: Option<Spanned<BTreeMap<String, String>>>,
    /// Templates rendered into the alert's annotations.
    #[serde(default)]
    pub annotations: BTreeMap<String, Spanned<String>>,
    /// Count events of quality `bad` too (default false).
    #[serde(default)]
    pub include_bad: bool,
    /// Limit on tracked series (overrides the group's).
    #[serde(default)]
    pub max_series: Option<Spanned<u32>>,
    /// Firing and not acknowledged this long: escalate (overrides the alerter's policy;
    /// `0s` never escalates).
    #[serde(default)]
    pub escalate_after: Option<Spanned<String>>,
}

/// `threshold:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ThresholdSpec {
    /// The firing condition, e.g. `> 2.5` or `!= "ok"`.
    pub fire: Spanned<String>,
    /// The clear condition (default: the firing condition does not hold).
    #[serde(default)]
    pub clear: Option<Spanned<String>>,
}

/// `window:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WindowSpec {
    /// avg, min, max, sum, count, count_distinct, rate, delta, p50..p99.
    pub aggregate: Spanned<String>,
    /// The window's length.
    pub over: Spanned<String>,
    /// Only events whose value satisfies this enter the window (e.g. `!= "ok"`).
    #[serde(default, rename = "where")]
    pub where_: Option<Spanned<String>>,
    /// The firing condition on the aggregate.
    pub fire: Spanned<String>,
    /// The clear condition (default: the firing condition does not hold).
    #[serde(default)]
    pub clear: Option<Spanned<String>>,
    /// Fewest samples in the window for the aggregate to count (default 1).
    #[serde(default)]
    pub min_samples: Option<Spanned<u32>>,
}

/// `rate_of_change:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RateSpec {
    /// The window the change is measured over.
    pub over: Spanned<String>,
    /// The change is given per this duration (default: `over`).
    #[serde(default)]
    pub per: Option<Spanned<String>>,
    /// The samples must span at least this long (default: half of `over`).
    #[serde(default)]
    pub min_span: Option<Spanned<String>>,
    /// The firing condition on the change.
    pub fire: Spanned<String>,
    /// The clear condition (default: the firing condition does not hold).
    #[serde(default)]
    pub clear: Option<Spanned<String>>,
}

/// `absence:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AbsenceSpec {
    /// The interval a series normally reports at.
    #[serde(default)]
    pub expected_interval: Option<Spanned<String>>,
    /// A label whose value picks the interval from `intervals` (e.g. `feed`, `entity_type`).
    #[serde(default)]
    pub interval_by: Option<Spanned<String>>,
    /// Expected intervals by the value of `interval_by`.
    #[serde(default)]
    pub intervals: BTreeMap<String, Spanned<String>>,
    /// Learn each series' interval from its own recent arrivals.
    #[serde(default)]
    pub learn: bool,
    /// Silent for longer than the interval times this fires (default 3).
    #[serde(default)]
    pub factor: Option<Spanned<f64>>,
    /// While the series' whole feed has sent nothing for this long, its series are held
    /// back (one feed-level alert says it instead), and their silence counts again from
    /// when the feed resumes.
    #[serde(default)]
    pub hold_while_feed_silent: Option<Spanned<String>>,
}

/// `query:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct QuerySpec {
    /// The SELECT, written by operators; `$now` stands for the evaluation time.
    pub sql: Spanned<String>,
    /// How often it runs.
    pub interval: Spanned<String>,
    /// The column holding the value the conditions look at (default `value`).
    #[serde(default)]
    pub value_column: Option<Spanned<String>>,
    /// The city domain its alerts belong to (history, dashboards).
    #[serde(default)]
    pub domain: Option<Spanned<String>>,
    /// The firing condition on the value.
    pub fire: Spanned<String>,
    /// The clear condition (default: the firing condition does not hold).
    #[serde(default)]
    pub clear: Option<Spanned<String>>,
}
