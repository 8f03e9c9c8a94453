//! The alerter service: the sources hand decoded events to one evaluator thread that owns the
//! engine; transitions go to the outbox and the state file before anything is acknowledged or
//! sent; senders (Alertmanager, webhooks, the history writer) work from there.

use crate::metrics::AlertMetrics;
use crate::outbox::{Outbox, OutboxError};
use crate::records::Notice;
use crate::state::{StateDoc, StateFile};
use cityops_config::Config;
use cityops_event::Event;
use cityops_rules::{AlertState, Engine, Rule, RuleError, RuleSet, RuleStats, Transition};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Times a resolved alert is sent to Alertmanager again (it may have missed one).
pub const RESOLVED_SENDS: u8 = 3;

/// What can stop the alerter.
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    /// The rule files do not load.
    #[error("rule files:\n{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Rules(Vec<RuleError>),
    /// The outbox or state file failed.
    #[error(transparent)]
    Files(#[from] OutboxError),
    /// The config names no rule files.
    #[error("alert.rule_files is empty: nothing to evaluate")]
    NoRules,
    /// A source could not be set up.
    #[error("{0}")]
    Source(String),
    /// The metrics could not be registered.
    #[error(transparent)]
    Telemetry(#[from] cityops_telemetry::TelemetryError),
}

/// How the evaluator acknowledges what it evaluated.
#[derive(Debug, Clone)]
pub enum Ack {
    /// Nothing to acknowledge.
    None,
    /// An MQTT delivery.
    Mqtt {
        /// Connection.
        connection: u16,
        /// Connection attempt.
        epoch: u64,
        /// Packet id.
        pkid: u16,
    },
    /// A Kafka record: the partition's next offset.
    Kafka {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// Next offset to read.
        next: i64,
    },
}

/// What the evaluator is sent.
pub enum Input {
    /// Decoded events of one or more messages, with what acknowledges them.
    Events(Vec<Event>, Vec<Ack>),
    /// Load the rule files again; the answer says how many rules, or every error.
    Reload(Option<tokio::sync::oneshot::Sender<Result<usize, Vec<String>>>>),
    /// A query rule's evaluation.
    Query(crate::queries::QueryOutcome),
}

/// A rule as the API shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RuleView {
    /// Alert name.
    pub name: String,
    /// Group.
    pub group: String,
    /// File and line.
    pub file: String,
    /// Line of `alert:`.
    pub line: u64,
    /// Kind.
    pub kind: &'static str,
    /// `ok`, or `err` when its last annotation failed to render.
    pub health: &'static str,
    /// Arrival time of the last evaluated event (RFC 3339), if any.
    #[serde(rename = "lastEvaluation")]
    pub last_evaluation: Option<String>,
    /// The last error.
    #[serde(rename = "lastError")]
    pub last_error: Option<String>,
    /// Series tracked.
    pub series: usize,
    /// Events evaluated.
    pub evaluated: u64,
    /// Late events ignored.
    pub late: u64,
    /// New series refused at `max_series`.
    pub refused: u64,
    /// Query rules: the interval, in seconds.
    #[serde(rename = "intervalSeconds", skip_serializing_if = "Option::is_none")]
    pub interval_seconds: Option<f64>,
}

/// What the evaluator shares with the senders and the API.
pub struct Shared {
    /// Pending and firing alerts, by (rule, fingerprint), as last notified.
    pub alerts: Mutex<BTreeMap<(String, u64), Notice>>,
    /// Acknowledgements and escalation levels of active alerts. Actions taken here change it
    /// while the outbox is locked, with the action appended to it; actions of other replicas
    /// are applied as they are read from the history (and read again after a restart).
    pub handling: Mutex<crate::handling::HandlingMap>,
    /// The API's bearer tokens: (name, token).
    pub tokens: Vec<(String, cityops_config::Secret)>,
    /// This replica's name.
    pub replica: String,
    /// Where the history is read for the API.
    pub clickhouse: cityops_config::ClickHouseConfig,
    /// Alerts resolved lately, with the Alertmanager sends left.
    pub resolved: Mutex<Vec<(Notice, u8)>>,
    /// The rules for the API.
    pub rules: Mutex<Vec<RuleView>>,
    /// The query rules, for their scheduler.
    pub query_rules: Mutex<Vec<crate::queries::QueryRuleSpec>>,
    /// Wakes the Alertmanager sender (a firing or resolved alert).
    pub alertmanager_wake: Notify,
    /// The outbox.
    pub outbox: Mutex<Outbox>,
    /// Wakes the outbox consumers.
    pub outbox_wake: Notify,
    /// Kafka offsets covered by the last state file, to commit.
    pub kafka_commit: Mutex<BTreeMap<(String, i32), i64>>,
    /// The MQTT sessions, once started (acknowledgements go through them).
    pub mqtt: OnceLock<cityops_mqtt::Subscriber>,
    /// Where the evaluator reads from.
    pub input: SyncSender<Input>,
    /// The metrics.
    pub metrics: AlertMetrics,
    /// The alerter's address for `generatorURL`.
    pub external_url: String,
    /// False after a restart until the events that waited in the brokers had their time
    /// (`alert.catch_up_ms` after the sources are ready); Alertmanager is sent nothing before.
    pub caught_up: std::sync::atomic::AtomicBool,
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Reads and parses the rule files.
pub fn load_rules(files: &[PathBuf]) -> Result<RuleSet, Vec<RuleError>> {
    let mut texts = Vec::new();
    let mut errors = Vec::new();
    for path in files {
        match std::fs::read_to_string(path) {
            Ok(text) => texts.push((path.display().to_string(), text)),
            Err(e) => errors.push(RuleError {
                file: path.display().to_string(),
                line: 0,
                column: 0,
                message: format!("cannot read: {e}"),
            }),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    RuleSet::parse(&texts)
}

/// The evaluator: owns the engine, runs until `cancel`, writes a last state on the way out.
pub struct Evaluator {
    /// The engine.
    pub engine: Engine,
    /// The rule files, for reloads.
    pub rule_files: Vec<PathBuf>,
    /// Where the state goes.
    pub state: StateFile,
    /// Shared with the rest.
    pub shared: Arc<Shared>,
    /// How often processing time advances.
    pub tick: Duration,
    /// How often the state is written.
    pub snapshot_interval: Duration,
    /// The default escalation policy.
    pub escalation: cityops_config::EscalationConfig,
    /// The wait after a restart for what the brokers kept.
    pub catch_up: CatchUp,
}

/// After a restart with saved state, the wait for the events that waited in the brokers:
/// quiet series are held ([`cityops_rules::Engine::hold_quiet_series`]) and Alertmanager is
/// sent nothing until `catch_up_ms` after the sources are ready (or after
/// [`SOURCES_WAIT_MAX_MS`] without them).
pub struct CatchUp {
    /// When this process started (ms since the epoch): the hold covers series without an
    /// event since.
    pub started_ms: i64,
    /// `alert.catch_up_ms`.
    pub catch_up_ms: i64,
    /// The readiness of the sources.
    pub readiness: cityops_telemetry::Readiness,
    /// When the hold ends, known once the sources are ready.
    pub ends_ms: Option<i64>,
}

/// How long the catch-up waits for the sources to become ready before it starts anyway (a
/// broker that stays down must not hold every quiet series for ever).
pub const SOURCES_WAIT_MAX_MS: i64 = 60_000;

impl Evaluator {
    /// Runs until `cancel` or until every sender of `input` is gone.
    pub fn run(
        mut self,
        input: Receiver<Input>,
        cancel: CancellationToken,
    ) -> Result<(), AlertError> {
        let mut transitions: Vec<Transition> = Vec::new();
        let mut acks: Vec<Ack> = Vec::new();
        let mut next_tick = Instant::now();
        let mut next_snapshot = Instant::now() + self.snapshot_interval;
        self.publish_rules();
        loop {
            if cancel.is_cancelled() {
                break;
            }
            let wait = next_tick
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(100));
            let started = Instant::now();
            match input.recv_timeout(wait) {
                Ok(first) => {
                    self.take(first, &mut transitions, &mut acks);
                    // Whatever else is waiting goes in the same step (one state write for all).
                    for more in input.try_iter().take(1_000) {
                        self.take(more, &mut transitions, &mut acks);
                    }
                    self.shared
                        .metrics
                        .evaluation
                        .observe(started.elapsed().as_secs_f64());
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if Instant::now() >= next_tick {
                let started = Instant::now();
                self.catch_up(now_ms());
                self.engine.tick(now_ms(), &mut transitions);
                self.record(&mut transitions)?;
                self.escalate()?;
                self.shared
                    .metrics
                    .evaluation
                    .observe(started.elapsed().as_secs_f64());
                next_tick = Instant::now() + self.tick;
                self.publish_rules();
            }
            self.record(&mut transitions)?;
            if Instant::now() >= next_snapshot {
                self.write_state()?;
                next_snapshot = Instant::now() + self.snapshot_interval;
                self.release(&mut acks, true);
            } else {
                self.release(&mut acks, false);
            }
        }
        self.record(&mut transitions)?;
        self.write_state()?;
        self.release(&mut acks, true);
        Ok(())
    }

    fn take(&mut self, input: Input, transitions: &mut Vec<Transition>, acks: &mut Vec<Ack>) {
        match input {
            Input::Events(events, mut more) => {
                for event in &events {
                    self.engine.observe(event, transitions);
                }
                acks.append(&mut more);
            }
            Input::Reload(reply) => {
                let result = self.reload();
                if let Some(reply) = reply {
                    let _ = reply.send(result);
                }
            }
            Input::Query(outcome) => match outcome.result {
                Ok(rows) => {
                    self.engine
                        .query_result(&outcome.rule, outcome.at_ms, &rows, transitions);
                }
                Err(error) => self
                    .engine
                    .query_failed(&outcome.rule, outcome.at_ms, error),
            },
        }
    }

    fn reload(&mut self) -> Result<usize, Vec<String>> {
        let metrics = &self.shared.metrics;
        match load_rules(&self.rule_files) {
            Ok(set) => {
                let count = set.rules.len();
                self.engine.reload(set);
                metrics.reload_success.set(1.0);
                metrics.reload_timestamp.set(now_ms() as f64 / 1000.0);
                metrics.rules.set(count as f64);
                tracing::info!(rules = count, "rules reloaded");
                self.publish_rules();
                Ok(count)
            }
            Err(errors) => {
                metrics.reload_success.set(0.0);
                for error in &errors {
                    tracing::warn!(%error, "rule reload refused; the rules loaded before keep running");
                }
                Err(errors.iter().map(ToString::to_string).collect())
            }
        }
    }

    /// Transitions to the outbox (synced), and only then to the alerts the API and the
    /// senders see: what anyone was shown survives a crash.
    fn record(&mut self, transitions: &mut Vec<Transition>) -> Result<(), AlertError> {
        let notices: Vec<Notice> = transitions.drain(..).map(|t| Notice::of(&t)).collect();
        record_notices(&self.shared, &notices)?;
        Ok(())
    }

    /// Ends the hold after a restart once the sources were ready for `catch_up_ms`.
    fn catch_up(&mut self, now: i64) {
        if self
            .shared
            .caught_up
            .load(std::sync::atomic::Ordering::Acquire)
        {
            return;
        }
        let c = &mut self.catch_up;
        let ends = match c.ends_ms {
            Some(ends) => ends,
            None => {
                let ready = c.readiness.not_ready().is_empty();
                if !ready && now - c.started_ms < SOURCES_WAIT_MAX_MS {
                    return;
                }
                if !ready {
                    tracing::warn!(
                        waited_ms = now - c.started_ms,
                        "the sources are not ready; catching up without them"
                    );
                }
                let ends = now.saturating_add(c.catch_up_ms);
                self.engine.hold_quiet_series(c.started_ms, ends);
                c.ends_ms = Some(ends);
                ends
            }
        };
        if now >= ends {
            self.engine.hold_quiet_series(c.started_ms, now);
            self.shared
                .caught_up
                .store(true, std::sync::atomic::Ordering::Release);
            self.shared.alertmanager_wake.notify_one();
            tracing::info!(
                after_ms = now - c.started_ms,
                "caught up with the events that waited in the brokers"
            );
        }
    }

    /// Escalates the firing alerts nobody acknowledged in time.
    fn escalate(&mut self) -> Result<(), AlertError> {
        let policy: BTreeMap<String, i64> = self
            .engine
            .rules()
            .map(|(rule, _, _)| {
                let after = rule
                    .escalate_after_ms
                    .unwrap_or(i64::try_from(self.escalation.after_ms).unwrap_or(i64::MAX));
                (rule.name.to_string(), after)
            })
            .collect();
        let due = {
            let alerts = lock(&self.shared.alerts);
            let handling = lock(&self.shared.handling);
            crate::handling::escalations_due(
                &alerts,
                &handling,
                now_ms(),
                |rule| policy.get(rule).copied().unwrap_or(0),
                self.escalation.max_level,
            )
        };
        for n in &due {
            if let Some(a) = &n.action {
                self.shared
                    .metrics
                    .escalations
                    .with_label_values(&[&a.level.to_string()])
                    .inc();
                tracing::info!(
                    rule = n.rule,
                    level = a.level,
                    "alert escalated: firing and not acknowledged"
                );
            }
        }
        record_notices(&self.shared, &due)?;
        Ok(())
    }

    /// Writes the whole state (atomically). The notices it covers then leave the outbox for
    /// the state's part; a restart replays the ones after it onto the restored engine. The
    /// alerts and their handling are read with the outbox locked, so the state covers exactly
    /// the notices up to the sequence number it records.
    fn write_state(&mut self) -> Result<(), AlertError> {
        let (doc, seq) = {
            let outbox = lock(&self.shared.outbox);
            let doc = StateDoc {
                engine: self.engine.snapshot(),
                alerts: lock(&self.shared.alerts).values().cloned().collect(),
                resolved: lock(&self.shared.resolved).clone(),
                handling: lock(&self.shared.handling)
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            };
            (doc, outbox.last_seq())
        };
        self.state.save(&doc)?;
        lock(&self.shared.outbox).taken(STATE_CONSUMER, seq)?;
        Ok(())
    }

    /// Acknowledges what was evaluated: MQTT deliveries at once (a transition they made is in
    /// the outbox already), Kafka offsets only once a state file covering them is written
    /// (`persisted`).
    fn release(&mut self, acks: &mut Vec<Ack>, persisted: bool) {
        let mut kept = Vec::new();
        for ack in acks.drain(..) {
            match ack {
                Ack::None => {}
                Ack::Mqtt {
                    connection,
                    epoch,
                    pkid,
                } => {
                    if let Some(mqtt) = self.shared.mqtt.get() {
                        mqtt.ack(connection, epoch, pkid);
                    }
                }
                Ack::Kafka {
                    topic,
                    partition,
                    next,
                } if persisted => {
                    let mut commit = lock(&self.shared.kafka_commit);
                    let slot = commit.entry((topic, partition)).or_insert(next);
                    *slot = (*slot).max(next);
                }
                kafka @ Ack::Kafka { .. } => kept.push(kafka),
            }
        }
        *acks = kept;
    }

    fn publish_rules(&self) {
        let views: Vec<RuleView> = self
            .engine
            .rules()
            .map(|(rule, stats, series)| rule_view(rule, stats, series))
            .collect();
        self.shared
            .metrics
            .rule_stats(self.engine.rules().map(|(r, s, n)| (&*r.name, s, n)));
        *lock(&self.shared.rules) = views;
        let specs: Vec<crate::queries::QueryRuleSpec> = self
            .engine
            .rules()
            .filter_map(|(rule, _, _)| crate::queries::QueryRuleSpec::of(rule))
            .collect();
        let mut published = lock(&self.shared.query_rules);
        if *published != specs {
            *published = specs;
        }
    }
}

fn rule_view(rule: &Rule, stats: &RuleStats, series: usize) -> RuleView {
    let time = |ms: i64| {
        cityops_event::Timestamp::from_millis(ms)
            .map(|t| t.to_string())
            .ok()
    };
    RuleView {
        name: rule.name.to_string(),
        group: rule.group.clone(),
        file: rule.file.clone(),
        line: rule.line,
        kind: rule.kind.name(),
        health: if stats.last_error.is_some() || stats.query_error.is_some() {
            "err"
        } else {
            "ok"
        },
        last_evaluation: stats.last_event_ms.and_then(time),
        last_error: stats
            .query_error
            .as_ref()
            .or(stats.last_error.as_ref())
            .map(|(_, e)| e.clone()),
        series,
        evaluated: stats.evaluated,
        late: stats.late,
        refused: stats.refused,
        interval_seconds: match rule.kind {
            cityops_rules::Kind::Query { interval_ms, .. } => Some(interval_ms as f64 / 1000.0),
            _ => None,
        },
    }
}

/// The outbox consumer that is the state file: notices it has not taken are replayed after a
/// restart.
pub const STATE_CONSUMER: &str = "state";

/// Appends notices (transitions or actions) to the outbox, synced, and only then applies
/// them to what the API and the senders see, all while the outbox is locked. Returns the
/// sequence number of the last one.
pub fn record_notices(shared: &Shared, notices: &[Notice]) -> Result<u64, OutboxError> {
    if notices.is_empty() {
        return Ok(lock(&shared.outbox).last_seq());
    }
    let seq = {
        let mut outbox = lock(&shared.outbox);
        let seq = outbox.append(notices)?;
        let mut alerts = lock(&shared.alerts);
        let mut resolved = lock(&shared.resolved);
        let mut handling = lock(&shared.handling);
        for n in notices {
            apply_all(&mut alerts, &mut resolved, &mut handling, n);
        }
        shared
            .metrics
            .publish_active(alerts.values().map(|a| (a.to, a.severity)));
        seq
    };
    if notices
        .iter()
        .any(|n| n.is_notified() || n.action.is_some())
    {
        shared.alertmanager_wake.notify_one();
    }
    shared.outbox_wake.notify_waiters();
    Ok(seq)
}

/// Applies a notice to the alerts, the resolved list and the handling. A resolved alert is
/// remembered with the labels Alertmanager last had for it (acknowledged, escalated), so that
/// the resolve reaches the same alert there.
pub fn apply_all(
    alerts: &mut BTreeMap<(String, u64), Notice>,
    resolved: &mut Vec<(Notice, u8)>,
    handling: &mut crate::handling::HandlingMap,
    n: &Notice,
) {
    if n.action.is_none() && n.to == AlertState::Resolved {
        let key = (n.rule.clone(), n.fingerprint);
        let mut as_sent = n.clone();
        as_sent.labels = crate::handling::alertmanager_labels(n, handling.get(&key));
        apply_notice(alerts, resolved, &as_sent);
    } else if n.action.is_none() {
        apply_notice(alerts, resolved, n);
    }
    crate::handling::apply(handling, n);
}

/// Records a notice in the alerts as notified (pending and firing ones; resolved ones a while).
pub fn apply_notice(
    alerts: &mut BTreeMap<(String, u64), Notice>,
    resolved: &mut Vec<(Notice, u8)>,
    n: &Notice,
) {
    let key = (n.rule.clone(), n.fingerprint);
    match n.to {
        AlertState::Pending | AlertState::Firing => {
            alerts.insert(key, n.clone());
        }
        AlertState::Inactive => {
            alerts.remove(&key);
        }
        AlertState::Resolved => {
            alerts.remove(&key);
            resolved.retain(|(r, _)| {
                (r.rule.as_str(), r.fingerprint) != (n.rule.as_str(), n.fingerprint)
            });
            resolved.push((n.clone(), RESOLVED_SENDS));
        }
    }
}

/// The consumers of the outbox for a config: the state file, the history and each webhook.
pub fn outbox_consumers(config: &Config) -> Vec<String> {
    let mut consumers = vec![STATE_CONSUMER.to_string(), "history".to_string()];
    consumers.extend(
        config
            .alert
            .webhooks
            .iter()
            .map(|w| format!("webhook:{}", w.name)),
    );
    consumers
}
