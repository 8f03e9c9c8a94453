//! The engine: routes events to the rules whose selector matches, keeps each rule's series
//! (bounded), puts out-of-order events back in order within the allowed lateness, and turns
//! lifecycle changes into [`Transition`]s. Time only comes in as arguments.

use crate::condition::{Condition, Value};
use crate::lifecycle::{AlertState, Change, Lifecycle, Timers};
use crate::rule::{Kind, MAX_WINDOW_SAMPLES, Rule, RuleSet, Severity};
use crate::template;
use crate::window::{Sample, Window};
use cityops_event::{Domain, Event, Quality};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

/// A change of an alert's state, with everything a notification and the history need.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// The rule (alert name).
    pub rule: Arc<str>,
    /// Stable id of the alert: a hash of the rule's name and the series labels.
    pub fingerprint: u64,
    /// Every label: `alertname`, `severity`, the rule's labels, the series labels.
    pub labels: BTreeMap<String, String>,
    /// The state before.
    pub from: AlertState,
    /// The state after.
    pub to: AlertState,
    /// When, ms: event time for threshold, window and rate rules, arrival time for absence.
    pub at_ms: i64,
    /// When the condition started to hold.
    pub active_since_ms: i64,
    /// When the alert fired (firing and resolved transitions).
    pub fired_at_ms: Option<i64>,
    /// The value that decided (latest value, aggregate, change, seconds of silence).
    pub value: Option<Value>,
    /// Whether a `suspect` event contributed to the value.
    pub suspect: bool,
    /// The rendered annotations (plus `quality: suspect` when suspect).
    pub annotations: BTreeMap<String, String>,
    /// The rule's severity.
    pub severity: Severity,
    /// The city domain of the events that made the series.
    pub domain: Domain,
}

/// An alert that is pending or firing now.
#[derive(Debug, Clone, PartialEq)]
pub struct ActiveAlert {
    /// The rule.
    pub rule: Arc<str>,
    /// Stable id.
    pub fingerprint: u64,
    /// Every label.
    pub labels: BTreeMap<String, String>,
    /// Pending or firing.
    pub state: AlertState,
    /// When the condition started to hold.
    pub active_since_ms: i64,
    /// When it fired.
    pub fired_at_ms: Option<i64>,
    /// The current value.
    pub value: Option<Value>,
    /// The rule's severity.
    pub severity: Severity,
    /// The city domain of the events that made the series.
    pub domain: Domain,
}

/// Counters of one rule since the engine started (or the rule was loaded).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleStats {
    /// Events that matched the selector and were evaluated.
    pub evaluated: u64,
    /// Events later than the allowed lateness, ignored.
    pub late: u64,
    /// Events of quality `bad`, skipped.
    pub bad_skipped: u64,
    /// Events of a new series refused because the rule tracked `max_series` already.
    pub refused: u64,
    /// Window samples dropped early because a series held the most a window keeps.
    pub dropped_samples: u64,
    /// Arrival time of the last evaluated event.
    pub last_event_ms: Option<i64>,
    /// The last error (an annotation that failed to render), with the time it happened.
    pub last_error: Option<(i64, String)>,
    /// Query rules: the error of the last evaluation, if it failed (cleared by a success).
    pub query_error: Option<(i64, String)>,
    /// Query rules: when the last evaluation that gave a result was.
    pub last_query_ms: Option<i64>,
}

/// One row of a query rule's result: the values of its `by` columns, in the rule's order,
/// and the value (None when the column was NULL or not a number).
#[derive(Debug, Clone, PartialEq)]
pub struct QueryRow {
    /// The label values, in the order of the rule's `by`.
    pub labels: Vec<String>,
    /// The value.
    pub value: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Observation {
    ts: i64,
    arrival: i64,
    value: Option<Value>,
    entity: u64,
    suspect: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Data {
    Threshold {
        last: Option<Value>,
        suspect: bool,
    },
    Window(Window),
    Absence {
        last_arrival: i64,
        learned_interval_ms: f32,
        intervals_seen: u16,
        expected_ms: i64,
        /// Hash of the series' feed ([`feed_key`]), for holding back while the feed is silent.
        #[serde(default)]
        feed: u64,
    },
}

/// When a feed's events last arrived, and when it last came back after a silence of each of
/// the rules' hold durations (`resumed[i]` for `Engine::holds[i]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FeedClock {
    last: i64,
    #[serde(default)]
    resumed: Vec<i64>,
}

impl FeedClock {
    fn arrive(&mut self, arrival: i64, holds: &[i64]) {
        self.resumed.resize(holds.len(), NEVER);
        if self.last != NEVER {
            let gap = arrival.saturating_sub(self.last);
            for (hold, resumed) in holds.iter().zip(&mut self.resumed) {
                if gap > *hold {
                    *resumed = arrival;
                }
            }
        }
        self.last = self.last.max(arrival);
    }
}

fn feed_key(feed: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(feed.as_bytes())
}

/// Events of a series not yet applied, sorted. Empty (no allocation, one word) most of the
/// time: most series are quiet most of the time and their state must stay small.
// Boxed on purpose: an empty buffer is one word in every series instead of a Vec's three.
#[allow(clippy::box_collection)]
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Buffer(Option<Box<Vec<Observation>>>);

impl Buffer {
    fn iter(&self) -> std::slice::Iter<'_, Observation> {
        self.0.as_deref().map_or([].iter(), |v| v.iter())
    }

    fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(|v| v.is_empty())
    }

    fn last(&self) -> Option<&Observation> {
        self.0.as_ref().and_then(|v| v.last())
    }

    fn insert_sorted(&mut self, o: Observation) {
        let v = self.0.get_or_insert_with(Default::default);
        let at = v.partition_point(|x| order(x) <= order(&o));
        v.insert(at, o);
    }

    /// Takes the events before `watermark`, in order.
    fn take_before(&mut self, watermark: i64) -> Vec<Observation> {
        let Some(v) = self.0.as_mut() else {
            return Vec::new();
        };
        let ready = v.partition_point(|o| o.ts < watermark);
        if ready == v.len() {
            return *self.0.take().unwrap_or_default();
        }
        v.drain(..ready).collect()
    }

    fn heap_bytes(&self) -> usize {
        self.0.as_ref().map_or(0, |v| {
            std::mem::size_of::<Vec<Observation>>()
                + v.capacity() * std::mem::size_of::<Observation>()
        })
    }
}

/// Separates the values of a series' labels in one string (a control character no label
/// value carries; one that did would have it replaced).
const LABEL_SEPARATOR: char = '\u{1f}';

/// The state of one series of one rule.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Series {
    /// Values of the rule's `by` labels, in its order, joined by [`LABEL_SEPARATOR`].
    labels: Box<str>,
    /// Domain of the event that made the series.
    domain: Domain,
    lifecycle: Lifecycle,
    /// Events with an earlier time are late.
    watermark: i64,
    max_ts: i64,
    /// Time and arrival of the last applied event.
    last_ts: i64,
    last_arrival: i64,
    /// Events not yet applied, sorted.
    buffer: Buffer,
    data: Data,
}

const NEVER: i64 = i64::MIN;

/// Series keyed by fingerprint. Fingerprints are hashes already, so the map uses them as they
/// are: no second hash, and the same iteration order in every run (goldens rely on it).
type SeriesMap = HashMap<u64, Box<Series>, BuildHasherDefault<FingerprintHasher>>;

/// A hasher for keys that are already well-spread 64-bit hashes.
#[derive(Default)]
struct FingerprintHasher(u64);

impl Hasher for FingerprintHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

struct RuleState {
    rule: Rule,
    timers: Timers,
    series: SeriesMap,
    stats: RuleStats,
    /// When an absence rule's series are next looked at (processing time).
    next_absence_check: i64,
}

/// How often an absence rule's series are looked at. Silences last minutes, and the instant
/// an alert fires is computed exactly whenever it is noticed; checking every series of a
/// million-series rule at every tick would cost a core.
const ABSENCE_CHECK_MS: i64 = 1_000;

/// All rules and their series.
pub struct Engine {
    rules: Vec<RuleState>,
    /// Feeds' arrival clocks, kept once any absence rule holds back on a silent feed.
    feeds: HashMap<u64, FeedClock>,
    /// The distinct `hold_while_feed_silent` durations of the rules, sorted (empty: no rule
    /// holds back, no clocks kept).
    holds: Vec<i64>,
    /// After a restart: series without an event since `.0` are not moved on by processing
    /// time before `.1` ([`Engine::hold_quiet_series`]).
    quiet_hold: Option<(i64, i64)>,
}

/// A rule's series, as a snapshot stores them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RuleSnapshot {
    /// The rule's name.
    pub rule: String,
    /// Its state key: the state is restored only into the same definition.
    pub state_key: u64,
    series: Vec<(u64, Box<Series>)>,
}

/// Everything the engine must keep across a restart.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Snapshot {
    /// One entry per rule.
    pub rules: Vec<RuleSnapshot>,
    /// The feeds' arrival clocks.
    #[serde(default)]
    feeds: Vec<(u64, FeedClock)>,
    /// The hold durations the clocks' `resumed` entries are for.
    #[serde(default)]
    holds: Vec<i64>,
}

impl Snapshot {
    /// Number of series in the snapshot.
    pub fn series(&self) -> usize {
        self.rules.iter().map(|r| r.series.len()).sum()
    }
}

impl Engine {
    /// An engine for `rules`, with no series yet.
    pub fn new(rules: RuleSet) -> Engine {
        let mut holds: Vec<i64> = rules
            .rules
            .iter()
            .filter_map(|r| match r.kind {
                Kind::Absence {
                    hold_while_feed_silent_ms,
                    ..
                } => hold_while_feed_silent_ms,
                _ => None,
            })
            .collect();
        holds.sort_unstable();
        holds.dedup();
        Engine {
            feeds: HashMap::new(),
            holds,
            quiet_hold: None,
            rules: rules
                .rules
                .into_iter()
                .map(|rule| RuleState {
                    timers: Timers {
                        for_ms: rule.for_ms,
                        clear_for_ms: rule.clear_for_ms,
                        keep_firing_for_ms: rule.keep_firing_for_ms,
                    },
                    rule,
                    series: SeriesMap::default(),
                    stats: RuleStats::default(),
                    next_absence_check: i64::MIN,
                })
                .collect(),
        }
    }

    /// Replaces the rules, keeping the series (and counters) of every rule whose name and state
    /// key are unchanged; other rules start empty.
    pub fn reload(&mut self, rules: RuleSet) {
        let mut old: HashMap<(Arc<str>, u64), RuleState> = self
            .rules
            .drain(..)
            .map(|r| ((Arc::clone(&r.rule.name), r.rule.state_key), r))
            .collect();
        let mut fresh = Engine::new(rules);
        if fresh.holds != self.holds {
            // The clocks' "resumed" entries were for other durations: they start again.
            for clock in self.feeds.values_mut() {
                clock.resumed = vec![NEVER; fresh.holds.len()];
            }
            self.holds = fresh.holds.clone();
        }
        for state in &mut fresh.rules {
            if let Some(previous) =
                old.remove(&(Arc::clone(&state.rule.name), state.rule.state_key))
            {
                state.series = previous.series;
                state.stats = previous.stats;
            }
        }
        self.rules = fresh.rules;
    }

    /// The rules.
    pub fn rules(&self) -> impl Iterator<Item = (&Rule, &RuleStats, usize)> {
        self.rules
            .iter()
            .map(|r| (&r.rule, &r.stats, r.series.len()))
    }

    /// Evaluates one event (its arrival time is `event.ingested_at`), appending transitions.
    pub fn observe(&mut self, event: &Event, out: &mut Vec<Transition>) {
        let arrival = event.ingested_at.as_millis();
        let ts = event.ts.as_millis();
        self.feed_arrival(&event.feed, arrival, true);
        for state in &mut self.rules {
            if matches!(state.rule.kind, Kind::Query { .. }) || !state.rule.selector.matches(event)
            {
                continue;
            }
            if event.quality == Quality::Bad && !state.rule.include_bad {
                state.stats.bad_skipped += 1;
                continue;
            }
            state.stats.evaluated += 1;
            state.stats.last_event_ms = Some(arrival);
            if let Kind::Window {
                filter: Some(filter),
                ..
            } = &state.rule.kind
                && !passes(filter, event)
            {
                continue;
            }
            let Some((fingerprint, series)) = series_for(&state.rule, &mut state.series, event)
            else {
                state.stats.refused += 1;
                continue;
            };
            let suspect = event.quality == Quality::Suspect;
            if let Data::Absence {
                last_arrival,
                learned_interval_ms,
                intervals_seen,
                ..
            } = &mut series.data
            {
                let arrival = arrival.max(*last_arrival);
                if *last_arrival != NEVER && arrival > *last_arrival {
                    let interval = (arrival - *last_arrival) as f32;
                    *learned_interval_ms = if *intervals_seen == 0 {
                        interval
                    } else {
                        *learned_interval_ms + (interval - *learned_interval_ms) / 8.0
                    };
                    *intervals_seen = intervals_seen.saturating_add(1);
                }
                *last_arrival = arrival;
                series.last_arrival = arrival;
                let mut em = Emit::new(
                    &state.rule,
                    &state.timers,
                    fingerprint,
                    &mut state.stats,
                    out,
                );
                em.step(series, arrival, false, true);
                continue;
            }
            if ts < series.watermark {
                state.stats.late += 1;
                continue;
            }
            let value = observed_value(&state.rule.kind, event);
            let observation = Observation {
                ts,
                arrival,
                value,
                entity: entity_hash(&event.entity_id),
                suspect,
            };
            series.buffer.insert_sorted(observation);
            series.max_ts = series.max_ts.max(ts);
            // Events before `max_ts - lateness` are final; with no lateness, the event itself is.
            let watermark = match state.rule.lateness_ms {
                0 => series.max_ts.saturating_add(1),
                lateness => series.max_ts.saturating_sub(lateness),
            };
            series.watermark = series.watermark.max(watermark);
            let mut em = Emit::new(
                &state.rule,
                &state.timers,
                fingerprint,
                &mut state.stats,
                out,
            );
            flush(&mut em, series);
        }
    }

    /// Lets processing time pass to `now_ms`: flushes events that waited out the lateness,
    /// advances quiet series as their clocks would have moved (so `for` completes without a
    /// new event), expires window samples, and judges absence.
    pub fn tick(&mut self, now_ms: i64, out: &mut Vec<Transition>) {
        for state in &mut self.rules {
            // A query rule's instances move only with its evaluations.
            if let Kind::Query { .. } = state.rule.kind {
                continue;
            }
            if let Kind::Absence { .. } = state.rule.kind {
                if now_ms < state.next_absence_check {
                    continue;
                }
                state.next_absence_check = now_ms.saturating_add(ABSENCE_CHECK_MS);
            }
            state.tick(
                now_ms,
                false,
                &self.feeds,
                &self.holds,
                self.quiet_hold,
                out,
            );
        }
    }

    /// Until `until_ms`, a series that has had no event arriving since `since_ms` is not moved
    /// on by processing time alone (no `for` completes, no silence is judged, its clock stays):
    /// after a restart, the events that waited in the brokers for this process arrive first,
    /// and are applied instead of being late against a clock that ran on while it was down.
    /// Calling it again replaces the hold; `until_ms` at or before now ends it.
    pub fn hold_quiet_series(&mut self, since_ms: i64, until_ms: i64) {
        self.quiet_hold = Some((since_ms, until_ms));
    }

    /// An event of `feed` arrived (`judge`: a gap before it may be a silence it resumes from;
    /// a warm start's history only sets the clock).
    fn feed_arrival(&mut self, feed: &str, arrival: i64, judge: bool) {
        if self.holds.is_empty() {
            return;
        }
        let clock = self.feeds.entry(feed_key(feed)).or_insert(FeedClock {
            last: NEVER,
            resumed: Vec::new(),
        });
        if judge {
            clock.arrive(arrival, &self.holds);
        } else {
            clock.resumed.resize(self.holds.len(), NEVER);
            clock.last = clock.last.max(arrival);
        }
    }

    /// A query rule's evaluation at `at_ms` gave `rows`: each row is an instance whose value
    /// holds from now to the next evaluation; an instance missing from the rows no longer
    /// holds its condition (and is forgotten once inactive). Evaluations must come in time
    /// order; an older one is ignored. Returns false if `rule` is not a loaded query rule.
    pub fn query_result(
        &mut self,
        rule: &str,
        at_ms: i64,
        rows: &[QueryRow],
        out: &mut Vec<Transition>,
    ) -> bool {
        let Some(state) = self
            .rules
            .iter_mut()
            .find(|r| &*r.rule.name == rule && matches!(r.rule.kind, Kind::Query { .. }))
        else {
            return false;
        };
        let Kind::Query { fire, clear, .. } = &state.rule.kind else {
            return false;
        };
        if state.stats.last_query_ms.is_some_and(|last| at_ms <= last) {
            return true;
        }
        state.stats.last_query_ms = Some(at_ms);
        state.stats.query_error = None;
        state.stats.last_event_ms = Some(at_ms);
        let mut seen = std::collections::HashSet::with_capacity(rows.len());
        for row in rows {
            state.stats.evaluated += 1;
            let fingerprint = fingerprint_of(
                &state.rule,
                state
                    .rule
                    .by
                    .iter()
                    .map(|(name, _)| name.as_str())
                    .zip(row.labels.iter().map(String::as_str)),
            );
            if !seen.insert(fingerprint) {
                // Two rows with the same labels: the first counts (ClickHouse's order).
                continue;
            }
            let Some(series) = query_series(&state.rule, &mut state.series, fingerprint, row)
            else {
                state.stats.refused += 1;
                continue;
            };
            let value = row.value.filter(|v| v.is_finite()).map(Value::Num);
            let (f, c) = holds(fire, clear.as_ref(), value.as_ref());
            if let Data::Threshold { last, .. } = &mut series.data {
                *last = value;
            }
            series.last_ts = at_ms;
            series.last_arrival = at_ms;
            let mut em = Emit::new(
                &state.rule,
                &state.timers,
                fingerprint,
                &mut state.stats,
                out,
            );
            em.step(series, at_ms, f, c);
        }
        for (fingerprint, series) in &mut state.series {
            if seen.contains(fingerprint) || at_ms < series.last_ts {
                continue;
            }
            let mut em = Emit::new(
                &state.rule,
                &state.timers,
                *fingerprint,
                &mut state.stats,
                out,
            );
            em.step(series, at_ms, false, true);
            series.last_ts = at_ms;
        }
        state
            .series
            .retain(|fp, s| seen.contains(fp) || s.lifecycle.state() != AlertState::Inactive);
        true
    }

    /// A query rule's evaluation at `at_ms` failed: its instances stay as they are and the
    /// rule shows the error until an evaluation succeeds.
    pub fn query_failed(&mut self, rule: &str, at_ms: i64, error: String) {
        if let Some(state) = self.rules.iter_mut().find(|r| &*r.rule.name == rule) {
            state.stats.query_error = Some((at_ms, error));
        }
    }

    /// The state as of time `t` when every event up to `t` has arrived (rule tests): all
    /// buffered events up to `t` are applied and every series' clock moves to `t`.
    pub fn settle(&mut self, t: i64, out: &mut Vec<Transition>) {
        for state in &mut self.rules {
            state.tick(t, true, &self.feeds, &self.holds, None, out);
        }
    }

    /// Applies every buffered event, as if the lateness had passed for all of them.
    pub fn flush_all(&mut self, out: &mut Vec<Transition>) {
        for state in &mut self.rules {
            for (fingerprint, series) in &mut state.series {
                if let Some(last) = series.buffer.last() {
                    series.watermark = series.watermark.max(last.ts.saturating_add(1));
                    let mut em = Emit::new(
                        &state.rule,
                        &state.timers,
                        *fingerprint,
                        &mut state.stats,
                        out,
                    );
                    flush(&mut em, series);
                }
            }
        }
    }

    /// Fills windows (and absence rules' last arrivals) from a recent event without judging:
    /// a warm start. Events must come in time order per series; transitions are not made.
    pub fn warm(&mut self, event: &Event) {
        let arrival = event.ingested_at.as_millis();
        let ts = event.ts.as_millis();
        self.feed_arrival(&event.feed, arrival, false);
        for state in &mut self.rules {
            if matches!(state.rule.kind, Kind::Query { .. })
                || !state.rule.selector.matches(event)
                || (event.quality == Quality::Bad && !state.rule.include_bad)
            {
                continue;
            }
            if let Kind::Window {
                filter: Some(filter),
                ..
            } = &state.rule.kind
                && !passes(filter, event)
            {
                continue;
            }
            let kind = state.rule.kind.clone();
            let Some((_, series)) = series_for(&state.rule, &mut state.series, event) else {
                continue;
            };
            match (&kind, &mut series.data) {
                (Kind::Absence { .. }, Data::Absence { last_arrival, .. }) => {
                    *last_arrival = (*last_arrival).max(arrival);
                    series.last_arrival = *last_arrival;
                }
                (
                    Kind::Window { over_ms, .. } | Kind::RateOfChange { over_ms, .. },
                    Data::Window(window),
                ) if ts >= series.watermark => {
                    let value = observed_value(&kind, event);
                    window.expire(ts, *over_ms);
                    window.push(
                        sample(
                            ts,
                            value.as_ref(),
                            entity_hash(&event.entity_id),
                            event.quality == Quality::Suspect,
                        ),
                        MAX_WINDOW_SAMPLES,
                    );
                    series.watermark = ts;
                    series.max_ts = series.max_ts.max(ts);
                    series.last_ts = ts;
                    series.last_arrival = arrival;
                }
                (Kind::Threshold { .. }, Data::Threshold { last, .. })
                    if ts >= series.watermark =>
                {
                    *last = observed_value(&kind, event);
                    series.watermark = ts;
                    series.max_ts = series.max_ts.max(ts);
                    series.last_ts = ts;
                    series.last_arrival = arrival;
                }
                _ => {}
            }
        }
    }

    /// Every pending or firing alert.
    pub fn active(&self) -> Vec<ActiveAlert> {
        let mut out = Vec::new();
        for state in &self.rules {
            for (fingerprint, series) in &state.series {
                let Some(since) = series.lifecycle.active_since() else {
                    continue;
                };
                out.push(ActiveAlert {
                    rule: Arc::clone(&state.rule.name),
                    fingerprint: *fingerprint,
                    labels: alert_labels(&state.rule, series),
                    state: series.lifecycle.state(),
                    active_since_ms: since,
                    fired_at_ms: series.lifecycle.fired_at(),
                    value: current_value(
                        &state.rule,
                        series,
                        series.last_ts.max(series.last_arrival),
                    ),
                    severity: state.rule.severity,
                    domain: series.domain,
                });
            }
        }
        out.sort_by(|a, b| (&a.rule, a.fingerprint).cmp(&(&b.rule, b.fingerprint)));
        out
    }

    /// The state to keep across a restart.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            feeds: self.feeds.iter().map(|(k, v)| (*k, v.clone())).collect(),
            holds: self.holds.clone(),
            rules: self
                .rules
                .iter()
                .map(|r| RuleSnapshot {
                    rule: r.rule.name.to_string(),
                    state_key: r.rule.state_key,
                    series: r.series.iter().map(|(k, v)| (*k, v.clone())).collect(),
                })
                .collect(),
        }
    }

    /// Restores series from a snapshot into the rules of the same name and state key; returns
    /// how many series were restored.
    pub fn restore(&mut self, snapshot: Snapshot) -> usize {
        let mut restored = 0;
        if !self.holds.is_empty() {
            let same = snapshot.holds == self.holds;
            for (feed, mut clock) in snapshot.feeds {
                if !same {
                    clock.resumed = vec![NEVER; self.holds.len()];
                }
                self.feeds.insert(feed, clock);
            }
        }
        for saved in snapshot.rules {
            if let Some(state) = self
                .rules
                .iter_mut()
                .find(|r| *r.rule.name == *saved.rule && r.rule.state_key == saved.state_key)
            {
                for (fingerprint, series) in saved.series {
                    if state.series.len() < state.rule.max_series as usize {
                        state.series.insert(fingerprint, series);
                        restored += 1;
                    }
                }
            }
        }
        restored
    }

    /// Puts the alert of `fingerprint` of rule `rule` in the state a transition recorded after
    /// the last snapshot (a restart replays them): `to` pending or firing with its clocks, or
    /// inactive. A series the snapshot lacks is made from the alert's labels, its clock at
    /// `at_ms`. Returns whether the rule is loaded (with the same definition or not).
    #[allow(clippy::too_many_arguments)]
    pub fn force_state(
        &mut self,
        rule: &str,
        fingerprint: u64,
        labels: &BTreeMap<String, String>,
        domain: Domain,
        to: AlertState,
        at_ms: i64,
        since_ms: i64,
        fired_at_ms: Option<i64>,
    ) -> bool {
        let Some(state) = self.rules.iter_mut().find(|r| &*r.rule.name == rule) else {
            return false;
        };
        if !state.series.contains_key(&fingerprint) {
            if state.series.len() >= state.rule.max_series as usize {
                return true;
            }
            let mut event = Event {
                domain,
                ..Event::default()
            };
            for (name, field) in &state.rule.by {
                let value = labels.get(name).cloned().unwrap_or_default();
                match field {
                    crate::labels::Field::Feed => event.feed = value,
                    crate::labels::Field::Metric => event.metric = value,
                    crate::labels::Field::EntityId => event.entity_id = value,
                    crate::labels::Field::EntityType => event.entity_type = value,
                    crate::labels::Field::District => event.district = value,
                    crate::labels::Field::Ward => event.ward = value,
                    crate::labels::Field::Unit => event.unit = value,
                    crate::labels::Field::Domain | crate::labels::Field::Quality => {}
                    crate::labels::Field::Attr(a) => {
                        event.attrs.insert(a.clone(), value);
                    }
                }
            }
            if let Some((_, series)) = series_for(&state.rule, &mut state.series, &event) {
                series.last_ts = at_ms;
                series.last_arrival = at_ms;
                series.max_ts = at_ms;
                series.watermark = at_ms;
                if let Data::Absence { last_arrival, .. } = &mut series.data {
                    *last_arrival = at_ms;
                }
            }
        }
        let Some(series) = state.series.get_mut(&fingerprint) else {
            return true;
        };
        series.lifecycle = match to {
            AlertState::Pending => Lifecycle::Pending { since: since_ms },
            AlertState::Firing => Lifecycle::Firing {
                since: since_ms,
                fired_at: fired_at_ms.unwrap_or(at_ms),
                clear_since: NEVER,
                keep_since: NEVER,
            },
            AlertState::Inactive | AlertState::Resolved => Lifecycle::Inactive,
        };
        true
    }

    /// Series tracked over all rules.
    pub fn series_count(&self) -> usize {
        self.rules.iter().map(|r| r.series.len()).sum()
    }

    /// Bytes the series take: the series themselves, their heap, and the map's slots.
    pub fn state_bytes(&self) -> usize {
        self.rules
            .iter()
            .map(|r| {
                // The map allocates capacity × 8/7 buckets (its load factor), a control byte each.
                let slots =
                    r.series.capacity() * 8 / 7 * (std::mem::size_of::<(u64, Box<Series>)>() + 1);
                let heap: usize = r
                    .series
                    .values()
                    .map(|s| std::mem::size_of::<Series>() + s.heap_bytes())
                    .sum();
                slots + heap
            })
            .sum()
    }
}

impl Series {
    fn heap_bytes(&self) -> usize {
        let labels = self.labels.len();
        let buffer = self.buffer.heap_bytes();
        let data = match &self.data {
            Data::Window(w) => w.heap_bytes(),
            Data::Threshold {
                last: Some(Value::Text(t)),
                ..
            } => t.len(),
            _ => 0,
        };
        labels + buffer + data
    }
}

/// The series of a query result row, made if new (None at the rule's `max_series`).
fn query_series<'a>(
    rule: &Rule,
    map: &'a mut SeriesMap,
    fingerprint: u64,
    row: &QueryRow,
) -> Option<&'a mut Series> {
    let len = map.len();
    match map.entry(fingerprint) {
        std::collections::hash_map::Entry::Occupied(e) => Some(e.into_mut()),
        std::collections::hash_map::Entry::Vacant(_) if len >= rule.max_series as usize => None,
        std::collections::hash_map::Entry::Vacant(e) => {
            let labels: Vec<String> = row
                .labels
                .iter()
                .map(|v| v.replace(LABEL_SEPARATOR, "\u{fffd}"))
                .collect();
            let domain = match &rule.kind {
                Kind::Query { domain, .. } => *domain,
                _ => Domain::Other,
            };
            Some(e.insert(Box::new(Series {
                labels: labels.join(&LABEL_SEPARATOR.to_string()).into_boxed_str(),
                domain,
                lifecycle: Lifecycle::Inactive,
                watermark: NEVER,
                max_ts: NEVER,
                last_ts: NEVER,
                last_arrival: NEVER,
                buffer: Buffer::default(),
                data: Data::Threshold {
                    last: None,
                    suspect: false,
                },
            })))
        }
    }
}

fn series_for<'a>(
    rule: &Rule,
    map: &'a mut SeriesMap,
    event: &Event,
) -> Option<(u64, &'a mut Series)> {
    let fingerprint = fingerprint_of(
        rule,
        rule.by
            .iter()
            .map(|(name, field)| (name.as_str(), field.get(event))),
    );
    let len = map.len();
    let max = rule.max_series as usize;
    match map.entry(fingerprint) {
        std::collections::hash_map::Entry::Occupied(e) => Some((fingerprint, e.into_mut())),
        std::collections::hash_map::Entry::Vacant(_) if len >= max => None,
        std::collections::hash_map::Entry::Vacant(e) => {
            let mut labels = String::new();
            for (i, (_, field)) in rule.by.iter().enumerate() {
                if i > 0 {
                    labels.push(LABEL_SEPARATOR);
                }
                labels.extend(
                    field
                        .get(event)
                        .chars()
                        .map(|c| if c == LABEL_SEPARATOR { '\u{fffd}' } else { c }),
                );
            }
            let labels = labels.into_boxed_str();
            let data = match &rule.kind {
                Kind::Threshold { .. } | Kind::Query { .. } => Data::Threshold {
                    last: None,
                    suspect: false,
                },
                Kind::Window { .. } | Kind::RateOfChange { .. } => Data::Window(Window::default()),
                Kind::Absence {
                    expected_ms,
                    interval_by,
                    intervals,
                    ..
                } => {
                    let configured = interval_by
                        .as_ref()
                        .and_then(|f| intervals.get(f.get(event)).copied())
                        .or(*expected_ms);
                    Data::Absence {
                        last_arrival: NEVER,
                        learned_interval_ms: 0.0,
                        intervals_seen: 0,
                        expected_ms: configured.unwrap_or(-1),
                        feed: feed_key(&event.feed),
                    }
                }
            };
            Some((
                fingerprint,
                e.insert(Box::new(Series {
                    labels,
                    domain: event.domain,
                    lifecycle: Lifecycle::Inactive,
                    watermark: NEVER,
                    max_ts: NEVER,
                    last_ts: NEVER,
                    last_arrival: NEVER,
                    buffer: Buffer::default(),
                    data,
                })),
            ))
        }
    }
}

impl RuleState {
    /// Processing time passes to `now` for every series of the rule (`settle`: event time
    /// reaches `now` as if every event up to it had arrived).
    fn tick(
        &mut self,
        now: i64,
        settle: bool,
        feeds: &HashMap<u64, FeedClock>,
        holds: &[i64],
        quiet_hold: Option<(i64, i64)>,
        out: &mut Vec<Transition>,
    ) {
        for (fingerprint, series) in &mut self.series {
            if let Some((since, until)) = quiet_hold
                && now < until
                && series.last_arrival < since
                && !series.buffer.iter().any(|o| o.arrival >= since)
            {
                continue;
            }
            let mut em = Emit::new(&self.rule, &self.timers, *fingerprint, &mut self.stats, out);
            tick_series(&mut em, series, now, settle, (feeds, holds));
        }
    }
}

/// Applies a series' buffered events before its watermark, in order.
fn flush(em: &mut Emit<'_>, series: &mut Series) {
    let applied = series.buffer.take_before(series.watermark);
    for o in applied {
        apply(em, series, o);
    }
}

/// Processing time passes to `now` for one series (`settle`: its event time reaches `now`).
fn tick_series(
    em: &mut Emit<'_>,
    series: &mut Series,
    now: i64,
    settle: bool,
    feeds: (&HashMap<u64, FeedClock>, &[i64]),
) {
    if let Data::Absence { .. } = series.data {
        absence_tick(em, series, now, feeds);
        return;
    }
    let lateness = em.rule.lateness_ms;
    // Events that waited out the lateness in processing time are applied, with everything
    // before them in event time.
    let waited = if settle {
        series
            .buffer
            .iter()
            .filter(|o| o.ts <= now)
            .map(|o| o.ts)
            .max()
    } else {
        series
            .buffer
            .iter()
            .filter(|o| o.arrival.saturating_add(lateness) <= now)
            .map(|o| o.ts)
            .max()
    };
    if let Some(ts) = waited {
        series.watermark = series.watermark.max(ts.saturating_add(1));
        flush(em, series);
    }
    if !series.buffer.is_empty() || series.last_ts == NEVER {
        return;
    }
    // A quiet series: its clock moves on with processing time since its last event.
    let clock = if settle {
        now
    } else {
        series
            .last_ts
            .saturating_add(now - lateness - series.last_arrival)
    };
    if clock <= series.last_ts && !settle {
        return;
    }
    advance_to(em, series, clock);
    series.watermark = series.watermark.max(clock);
}

fn order(o: &Observation) -> (i64, u64, u64) {
    let value_bits = match &o.value {
        Some(Value::Num(n)) => n.to_bits(),
        Some(Value::Text(t)) => xxhash_rust::xxh3::xxh3_64(t.as_bytes()),
        None => 0,
    };
    (o.ts, o.entity, value_bits)
}

fn observed_value(kind: &Kind, event: &Event) -> Option<Value> {
    let wants_text = matches!(kind, Kind::Threshold { fire, .. } if fire.is_text());
    if wants_text {
        event.text.as_deref().map(|t| Value::Text(t.into()))
    } else {
        event.value.filter(|v| v.is_finite()).map(Value::Num)
    }
}

/// Whether the event's value (its text for a text condition) satisfies a window's `where`.
fn passes(filter: &Condition, event: &Event) -> bool {
    let value = if filter.is_text() {
        event.text.as_deref().map(|t| Value::Text(t.into()))
    } else {
        event.value.map(Value::Num)
    };
    value.is_some_and(|v| filter.holds(&v))
}

fn sample(ts: i64, value: Option<&Value>, entity: u64, suspect: bool) -> Sample {
    let number = value.and_then(Value::as_f64);
    Sample {
        ts,
        value: number.unwrap_or(0.0),
        entity,
        has_value: number.is_some(),
        suspect,
    }
}

fn holds(fire: &Condition, clear: Option<&Condition>, value: Option<&Value>) -> (bool, bool) {
    let Some(value) = value else {
        return (false, false);
    };
    let fire_holds = fire.holds(value);
    let clear_holds = match clear {
        Some(c) => c.holds(value),
        None => !fire_holds,
    };
    (fire_holds, clear_holds)
}

fn holds_num(fire: &Condition, clear: Option<&Condition>, value: Option<f64>) -> (bool, bool) {
    holds(fire, clear, value.map(Value::Num).as_ref())
}

/// Drives one series' lifecycle and turns each change into a transition at once, so that
/// its value and annotations are those of the instant it happened.
struct Emit<'a> {
    rule: &'a Rule,
    timers: &'a Timers,
    fingerprint: u64,
    stats: &'a mut RuleStats,
    out: &'a mut Vec<Transition>,
    changes: Vec<Change>,
}

impl<'a> Emit<'a> {
    fn new(
        rule: &'a Rule,
        timers: &'a Timers,
        fingerprint: u64,
        stats: &'a mut RuleStats,
        out: &'a mut Vec<Transition>,
    ) -> Emit<'a> {
        Emit {
            rule,
            timers,
            fingerprint,
            stats,
            out,
            changes: Vec::new(),
        }
    }

    fn step(&mut self, series: &mut Series, at: i64, fire: bool, clear: bool) {
        self.changes.clear();
        series
            .lifecycle
            .step(at, fire, clear, self.timers, &mut self.changes);
        self.flush(series);
    }

    fn advance(&mut self, series: &mut Series, to: i64) {
        self.changes.clear();
        series.lifecycle.advance(to, self.timers, &mut self.changes);
        self.flush(series);
    }

    fn flush(&mut self, series: &Series) {
        let changes = std::mem::take(&mut self.changes);
        emit(
            self.rule,
            self.fingerprint,
            series,
            &changes,
            self.stats,
            self.out,
        );
        self.changes = changes;
    }
}

/// Applies one event, in order, to its series: time passes to the event first (with the
/// previous value), then the event is evaluated.
fn apply(em: &mut Emit<'_>, series: &mut Series, o: Observation) {
    let ts = o.ts;
    let rule = em.rule;
    match (&rule.kind, &mut series.data) {
        (Kind::Threshold { fire, clear }, Data::Threshold { .. }) => {
            em.advance(series, ts);
            if o.value.is_some() {
                if let Data::Threshold { last, suspect } = &mut series.data {
                    *last = o.value;
                    *suspect = o.suspect;
                }
                let (f, c) = match &series.data {
                    Data::Threshold { last, .. } => holds(fire, clear.as_ref(), last.as_ref()),
                    _ => (false, false),
                };
                em.step(series, ts, f, c);
            }
        }
        (Kind::Window { over_ms, .. } | Kind::RateOfChange { over_ms, .. }, Data::Window(_)) => {
            let over = *over_ms;
            expire_until(em, series, ts, false);
            em.advance(series, ts);
            if let Data::Window(window) = &mut series.data {
                window.expire(ts, over);
                em.stats.dropped_samples += window.push(
                    sample(ts, o.value.as_ref(), o.entity, o.suspect),
                    MAX_WINDOW_SAMPLES,
                ) as u64;
            }
            let (f, c) = window_holds(rule, series);
            em.step(series, ts, f, c);
        }
        _ => {}
    }
    series.last_ts = ts;
    series.last_arrival = o.arrival;
}

/// The window rule's conditions on its current samples.
fn window_holds(rule: &Rule, series: &Series) -> (bool, bool) {
    let Data::Window(window) = &series.data else {
        return (false, false);
    };
    match &rule.kind {
        Kind::Window {
            aggregate,
            fire,
            clear,
            min_samples,
            ..
        } => holds_num(
            fire,
            clear.as_ref(),
            window.aggregate(*aggregate, *min_samples),
        ),
        Kind::RateOfChange {
            per_ms,
            min_span_ms,
            fire,
            clear,
            ..
        } => holds_num(
            fire,
            clear.as_ref(),
            window.change_per(*per_ms, *min_span_ms),
        ),
        _ => (false, false),
    }
}

/// Evaluates a window at each instant a sample leaves it, up to `to` (inclusive when asked),
/// so that a count that falls as reports age out clears at the exact instant.
fn expire_until(em: &mut Emit<'_>, series: &mut Series, to: i64, inclusive: bool) {
    let over = match em.rule.kind {
        Kind::Window { over_ms, .. } | Kind::RateOfChange { over_ms, .. } => over_ms,
        _ => return,
    };
    loop {
        let Data::Window(window) = &mut series.data else {
            return;
        };
        let Some(expiry) = window.next_expiry(over) else {
            return;
        };
        if expiry > to || (expiry == to && !inclusive) {
            return;
        }
        window.expire(expiry, over);
        let (f, c) = window_holds(em.rule, series);
        em.step(series, expiry, f, c);
    }
}

fn advance_to(em: &mut Emit<'_>, series: &mut Series, clock: i64) {
    expire_until(em, series, clock, true);
    em.advance(series, clock);
}

fn absence_limit(rule: &Rule, data: &Data) -> Option<i64> {
    let (
        Kind::Absence { learn, factor, .. },
        Data::Absence {
            learned_interval_ms,
            intervals_seen,
            expected_ms,
            ..
        },
    ) = (&rule.kind, data)
    else {
        return None;
    };
    // A learned interval counts once a few intervals were seen; before that the configured one.
    let interval = if *learn && *intervals_seen >= 3 {
        f64::from(*learned_interval_ms)
    } else if *expected_ms > 0 {
        *expected_ms as f64
    } else {
        return None;
    };
    Some((interval * factor).ceil() as i64)
}

fn absence_tick(
    em: &mut Emit<'_>,
    series: &mut Series,
    now: i64,
    (feeds, holds): (&HashMap<u64, FeedClock>, &[i64]),
) {
    let Data::Absence {
        last_arrival, feed, ..
    } = series.data
    else {
        return;
    };
    if last_arrival == NEVER {
        return;
    }
    let Some(limit) = absence_limit(em.rule, &series.data) else {
        return;
    };
    let mut since = last_arrival;
    if let Kind::Absence {
        hold_while_feed_silent_ms: Some(hold),
        ..
    } = em.rule.kind
        && let Some(clock) = feeds.get(&feed)
    {
        // The feed as a whole is silent: this series says nothing new (the feed's own alert
        // does). Back from a silence, the series' silence counts from the feed's return.
        if now.saturating_sub(clock.last) > hold {
            match series.lifecycle.state() {
                AlertState::Inactive => return,
                // Pending when the feed went quiet: that silence is the feed's, not its own.
                AlertState::Pending => {
                    em.step(series, now, false, true);
                    return;
                }
                _ => {}
            }
        }
        if let Some(resumed) = holds
            .iter()
            .position(|h| *h == hold)
            .and_then(|i| clock.resumed.get(i))
        {
            since = since.max(*resumed);
        }
    }
    let silent_from = since.saturating_add(limit);
    if now > silent_from && series.lifecycle.state() == AlertState::Inactive {
        em.step(series, silent_from, true, false);
    }
    em.advance(series, now);
}

fn current_value(rule: &Rule, series: &Series, at: i64) -> Option<Value> {
    match (&rule.kind, &series.data) {
        (Kind::Threshold { .. } | Kind::Query { .. }, Data::Threshold { last, .. }) => last.clone(),
        (
            Kind::Window {
                aggregate,
                min_samples,
                ..
            },
            Data::Window(w),
        ) => w.aggregate(*aggregate, *min_samples).map(Value::Num),
        (
            Kind::RateOfChange {
                per_ms,
                min_span_ms,
                ..
            },
            Data::Window(w),
        ) => w.change_per(*per_ms, *min_span_ms).map(Value::Num),
        (Kind::Absence { .. }, Data::Absence { last_arrival, .. }) if *last_arrival != NEVER => {
            Some(Value::Num((at - last_arrival).max(0) as f64 / 1000.0))
        }
        _ => None,
    }
}

fn suspect_of(series: &Series) -> bool {
    match &series.data {
        Data::Threshold { suspect, .. } => *suspect,
        Data::Window(w) => w.any_suspect(),
        Data::Absence { .. } => false,
    }
}

fn alert_labels(rule: &Rule, series: &Series) -> BTreeMap<String, String> {
    let mut labels = rule.labels.clone();
    for ((name, _), value) in rule.by.iter().zip(series.labels.split(LABEL_SEPARATOR)) {
        labels.insert(name.clone(), value.to_string());
    }
    labels.insert("alertname".into(), rule.name.to_string());
    labels.insert("severity".into(), rule.severity.as_str().into());
    labels
}

fn emit(
    rule: &Rule,
    fingerprint: u64,
    series: &Series,
    changes: &[Change],
    stats: &mut RuleStats,
    out: &mut Vec<Transition>,
) {
    for change in changes {
        let labels = alert_labels(rule, series);
        let value = current_value(rule, series, change.at);
        let suspect = suspect_of(series);
        let mut annotations = BTreeMap::new();
        for (name, source) in &rule.annotations {
            let cx = template::Context {
                labels: &labels,
                value: value.as_ref(),
                suspect,
            };
            let text = template::render(source, &cx).unwrap_or_else(|e| {
                stats.last_error = Some((change.at, format!("annotation {name}: {e}")));
                format!("(annotation {name} failed to render: {e})")
            });
            annotations.insert(name.clone(), text);
        }
        if suspect {
            annotations.insert("quality".into(), "suspect".into());
        }
        out.push(Transition {
            rule: Arc::clone(&rule.name),
            fingerprint,
            labels,
            from: change.from,
            to: change.to,
            at_ms: change.at,
            active_since_ms: change.active_since,
            fired_at_ms: change.fired_at,
            value,
            suspect,
            annotations,
            severity: rule.severity,
            domain: series.domain,
        });
    }
}

/// The alert's fingerprint: a hash of the rule's name and its series labels sorted by name,
/// the same in every process that loads the same rule.
pub fn fingerprint_of<'a>(rule: &Rule, labels: impl Iterator<Item = (&'a str, &'a str)>) -> u64 {
    let mut pairs: Vec<(&str, &str)> = labels.collect();
    pairs.sort_unstable();
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.write(rule.name.as_bytes());
    for (name, value) in pairs {
        h.write(&[0xff]);
        h.write(name.as_bytes());
        h.write(&[0xfe]);
        h.write(value.as_bytes());
    }
    h.finish()
}

fn entity_hash(entity: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(entity.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::at;

    fn engine(yaml: &str) -> Engine {
        Engine::new(RuleSet::parse(&[("t.yaml".into(), yaml.into())]).expect("rules"))
    }

    fn bytes_per_series(yaml: &str) -> usize {
        let mut e = engine(yaml);
        let mut out = Vec::new();
        let n = 100_000;
        for i in 0..n {
            e.observe(&at(&format!("gauge-{i:07}"), 1_000, Some(1.0)), &mut out);
        }
        e.tick(10_000, &mut out);
        assert_eq!(e.series_count(), n);
        e.state_bytes() / n
    }

    /// An event of `entity` at `ts` that arrives at `arrival`.
    fn arriving(entity: &str, ts: i64, arrival: i64, value: f64) -> Event {
        let mut e = at(entity, ts, Some(value));
        e.ingested_at = cityops_event::Timestamp::from_millis(arrival).expect("test time");
        e
    }

    #[test]
    fn after_a_restart_the_events_that_waited_are_applied_before_quiet_clocks_move_on() {
        let rules = "groups:\n- name: g\n  lateness: 500ms\n  rules:\n  - alert: High\n    match: '{}'\n    by: [entity_id]\n    threshold: {fire: '> 2.5', clear: '< 2.3'}\n    for: 3s\n";
        let mut out = Vec::new();
        let mut before = engine(rules);
        for t in (0..=5_000).step_by(500) {
            before.observe(&arriving("g1", t, t, 2.6), &mut out);
            before.tick(t, &mut out);
        }
        assert!(out.iter().any(|t| t.to == AlertState::Firing), "{out:?}");
        let saved = before.snapshot();
        // Down from 5 s to 20 s; meanwhile the gauge fell to 2.2 at 6 s (the broker kept it).
        let restarted = |hold: bool| {
            let mut e = engine(rules);
            e.restore(saved.clone());
            if hold {
                e.hold_quiet_series(20_000, 25_000);
            }
            let mut out = Vec::new();
            e.tick(20_000, &mut out);
            e.observe(&arriving("g1", 6_000, 20_050, 2.2), &mut out);
            for now in (20_100..=26_000).step_by(100) {
                e.tick(now, &mut out);
            }
            let late = e.rules().map(|(_, stats, _)| stats.late).sum::<u64>();
            (out, late)
        };
        let (without, late) = restarted(false);
        assert_eq!(
            late, 1,
            "without the hold the clock ran on and the event is late"
        );
        assert!(without.is_empty(), "{without:?}");
        let (with, late) = restarted(true);
        assert_eq!(late, 0);
        let resolved: Vec<_> = with
            .iter()
            .filter(|t| t.to == AlertState::Resolved)
            .collect();
        assert_eq!(resolved.len(), 1, "{with:?}");
        assert_eq!(resolved[0].at_ms, 6_000, "resolved at the event's time");
    }

    #[test]
    fn a_held_quiet_series_moves_on_once_the_hold_ends() {
        let rules = "groups:\n- name: g\n  lateness: 500ms\n  rules:\n  - alert: High\n    match: '{}'\n    by: [entity_id]\n    threshold: {fire: '> 2.5'}\n    for: 3s\n";
        let mut out = Vec::new();
        let mut before = engine(rules);
        before.observe(&arriving("g1", 1_000, 1_000, 2.6), &mut out);
        before.tick(1_600, &mut out);
        assert!(out.iter().all(|t| t.to == AlertState::Pending), "{out:?}");
        let mut e = engine(rules);
        e.restore(before.snapshot());
        e.hold_quiet_series(20_000, 25_000);
        let mut out = Vec::new();
        for now in (20_000..25_000).step_by(100) {
            e.tick(now, &mut out);
        }
        assert!(out.is_empty(), "nothing moves during the hold: {out:?}");
        e.tick(25_000, &mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].to, AlertState::Firing);
        assert_eq!(out[0].at_ms, 4_000, "fired at since + for");
    }

    #[test]
    fn threshold_and_absence_series_take_at_most_256_bytes() {
        let threshold = bytes_per_series(
            "groups:\n- name: g\n  max_series: 200000\n  rules:\n  - alert: T\n    match: '{}'\n    threshold: {fire: '> 2.5'}\n",
        );
        let absence = bytes_per_series(
            "groups:\n- name: g\n  max_series: 200000\n  rules:\n  - alert: A\n    match: '{}'\n    absence: {expected_interval: 1m}\n",
        );
        eprintln!(
            "bytes per series: threshold {threshold}, absence {absence}; Series is {} bytes",
            std::mem::size_of::<Series>()
        );
        assert!(threshold <= 256, "threshold: {threshold} bytes per series");
        assert!(absence <= 256, "absence: {absence} bytes per series");
    }
}
