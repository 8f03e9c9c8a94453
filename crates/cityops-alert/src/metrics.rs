//! The alerter's metrics, `cityops_alert_*`, on the registry passed in. Label values are
//! bounded: rule names come from the loaded files, receivers from the config.

use cityops_rules::{AlertState, RuleStats, Severity};
use cityops_telemetry::{Metrics, TelemetryError};
use prometheus::{CounterVec, Gauge, GaugeVec, Histogram, HistogramVec, Registry};
use std::collections::HashMap;

/// Every metric of the alerter.
#[derive(Clone)]
pub struct AlertMetrics {
    /// Pending and firing alerts by state and severity.
    pub alerts: GaugeVec,
    /// Series tracked, by rule.
    pub series: GaugeVec,
    /// Events evaluated, by rule.
    pub evaluated: CounterVec,
    /// Events later than the allowed lateness, ignored, by rule.
    pub late: CounterVec,
    /// Events of new series refused at a rule's `max_series`, by rule.
    pub refused: CounterVec,
    /// Time to evaluate one batch of events (or a tick).
    pub evaluation: Histogram,
    /// Messages read from the sources, by source.
    pub messages: CounterVec,
    /// Payloads the feeds rejected (the ingest stores them in `rejects`; the alerter skips them).
    pub rejected: CounterVec,
    /// Notifications a receiver took, by receiver.
    pub sent: CounterVec,
    /// Failed deliveries to a receiver (each retried), by receiver.
    pub failed: CounterVec,
    /// Notifications dropped at a full receiver queue, by receiver.
    pub dropped: CounterVec,
    /// Transitions not yet written to `alert_events`.
    pub history_backlog: Gauge,
    /// Transitions written to `alert_events`.
    pub history_written: CounterVec,
    /// 1 if the last reload succeeded.
    pub reload_success: Gauge,
    /// When the rules were last loaded successfully, Unix seconds.
    pub reload_timestamp: Gauge,
    /// Rules loaded.
    pub rules: Gauge,
    /// 1 once the warm start filled the windows, 0 for a cold start.
    pub warm: Gauge,
    /// Query rule evaluations, by rule and outcome.
    pub query_evaluations: CounterVec,
    /// Time a query rule's query took, by rule.
    pub query_duration: HistogramVec,
    /// 1 while a query rule's last evaluation failed, by rule.
    pub query_unhealthy: GaugeVec,
    /// Actions taken on alerts through the API (ack, unack, comment), by action.
    pub actions: CounterVec,
    /// Requests to the action API refused for a missing or wrong token.
    pub unauthorized: prometheus::Counter,
    /// Escalations sent, by level.
    pub escalations: CounterVec,
    /// Partitions the alerter's consumer group gives it, by topic.
    pub kafka_assigned: GaugeVec,
    /// 1 while its group has left it short of partitions for longer than
    /// `kafka.assignment_timeout_ms`.
    pub kafka_assignment_stalled: prometheus::Gauge,
    last: std::sync::Arc<std::sync::Mutex<HashMap<String, RuleStats>>>,
}

impl AlertMetrics {
    /// Sets `cityops_alert_active_alerts` from the states and severities of the alerts
    /// held. Every pending and firing pair is published, at 0 when no alert has it, so that
    /// a quiet city reads as 0 on the wall screen rather than as a panel with no data.
    pub fn publish_active(&self, alerts: impl Iterator<Item = (AlertState, Severity)>) {
        let mut counts: HashMap<(AlertState, Severity), f64> = HashMap::new();
        for state in [AlertState::Pending, AlertState::Firing] {
            for severity in Severity::ALL {
                counts.insert((state, severity), 0.0);
            }
        }
        for key in alerts {
            *counts.entry(key).or_insert(0.0) += 1.0;
        }
        for ((state, severity), count) in counts {
            self.alerts
                .with_label_values(&[state.as_str(), severity.as_str()])
                .set(count);
        }
    }

    /// Registers the metrics on `registry`.
    pub fn new(registry: &Registry) -> Result<AlertMetrics, TelemetryError> {
        let m = Metrics::new(registry, "alert");
        let metrics = AlertMetrics {
            alerts: m.gauge_vec(
                "active_alerts",
                "Pending and firing alerts, by state and severity",
                &["state", "severity"],
            )?,
            series: m.gauge_vec("tracked_series", "Series a rule tracks", &["rule"])?,
            evaluated: m.counter_vec(
                "events_evaluated_total",
                "Events that matched a rule and were evaluated, by rule",
                &["rule"],
            )?,
            late: m.counter_vec(
                "late_events_total",
                "Events later than the rule's allowed lateness, ignored, by rule",
                &["rule"],
            )?,
            refused: m.counter_vec(
                "refused_series_total",
                "Events of new series refused because the rule tracks max_series already",
                &["rule"],
            )?,
            evaluation: m.histogram(
                "evaluation_duration_seconds",
                "Time to evaluate one batch of events or one tick",
                vec![0.000_05, 0.000_2, 0.001, 0.005, 0.02, 0.1, 0.5, 2.0],
            )?,
            messages: m.counter_vec(
                "source_messages_total",
                "Messages the alerter read from its sources, by source (kafka, mqtt)",
                &["source"],
            )?,
            rejected: m.counter_vec(
                "rejected_messages_total",
                "Payloads the feeds rejected (skipped by the alerter), by reason",
                &["reason"],
            )?,
            sent: m.counter_vec(
                "notifications_sent_total",
                "Notifications a receiver took, by receiver",
                &["receiver"],
            )?,
            failed: m.counter_vec(
                "notifications_failed_total",
                "Failed deliveries (each retried), by receiver",
                &["receiver"],
            )?,
            dropped: m.counter_vec(
                "notifications_dropped_total",
                "Notifications dropped at a full receiver queue, by receiver",
                &["receiver"],
            )?,
            history_backlog: m.gauge(
                "history_backlog_events",
                "Transitions not yet written to alert_events",
            )?,
            history_written: m.counter_vec(
                "history_written_total",
                "Transitions written to alert_events (already there: found on a retry)",
                &["outcome"],
            )?,
            reload_success: m.gauge(
                "reload_success_state",
                "1 if the last rule reload succeeded, 0 if it was refused",
            )?,
            reload_timestamp: m.gauge(
                "reload_timestamp_seconds",
                "When the rules were last loaded, Unix seconds",
            )?,
            rules: m.gauge("loaded_rules", "Rules loaded")?,
            warm: m.gauge(
                "warm_start_state",
                "1 once the warm start filled the windows, 0 for a cold start",
            )?,
            query_evaluations: m.counter_vec(
                "query_evaluations_total",
                "Query rule evaluations, by rule and outcome (ok, timeout, too_many_rows, server, transport, format, columns, skipped)",
                &["rule", "outcome"],
            )?,
            query_duration: m.histogram_vec(
                "query_duration_seconds",
                "Time a query rule's query took in ClickHouse, by rule",
                &["rule"],
                vec![0.005, 0.02, 0.1, 0.5, 2.0, 10.0, 30.0],
            )?,
            query_unhealthy: m.gauge_vec(
                "query_unhealthy_state",
                "1 while a query rule's last evaluation failed, by rule",
                &["rule"],
            )?,
            actions: m.counter_vec(
                "actions_total",
                "Actions taken on alerts through the API, by action (acknowledged, unacknowledged, commented)",
                &["action"],
            )?,
            unauthorized: m.counter(
                "api_unauthorized_total",
                "Action requests refused for a missing or wrong bearer token",
            )?,
            escalations: m.counter_vec(
                "escalations_total",
                "Alerts escalated (sent again with a higher escalation label), by level",
                &["level"],
            )?,
            kafka_assigned: m.gauge_vec(
                "kafka_assigned_partitions",
                "Partitions the alerter's consumer group gives it, by topic",
                &["topic"],
            )?,
            kafka_assignment_stalled: m.gauge(
                "kafka_assignment_stalled_state",
                "1 while the alerter's consumer group has left it without partitions (or, alone in the group, with fewer than its topics have) for longer than kafka.assignment_timeout_ms",
            )?,
            last: Default::default(),
        };
        metrics.publish_active(std::iter::empty());
        Ok(metrics)
    }

    /// Moves the per-rule counters on by what the engine counted since the last call.
    pub fn rule_stats<'a>(&self, rules: impl Iterator<Item = (&'a str, &'a RuleStats, usize)>) {
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (name, stats, series) in rules {
            let before = last.get(name).cloned().unwrap_or_default();
            // A rule whose state was reset by a reload starts its counts again.
            let delta = |now: u64, then: u64| if now >= then { now - then } else { now } as f64;
            self.evaluated
                .with_label_values(&[name])
                .inc_by(delta(stats.evaluated, before.evaluated));
            self.late
                .with_label_values(&[name])
                .inc_by(delta(stats.late, before.late));
            self.refused
                .with_label_values(&[name])
                .inc_by(delta(stats.refused, before.refused));
            self.series.with_label_values(&[name]).set(series as f64);
            last.insert(name.to_owned(), stats.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn active(metrics: &AlertMetrics, state: &str, severity: &str) -> f64 {
        metrics.alerts.with_label_values(&[state, severity]).get()
    }

    #[test]
    fn a_quiet_city_publishes_zero_for_every_state_and_severity() {
        let registry = Registry::new();
        let metrics = AlertMetrics::new(&registry).unwrap();
        let family = registry
            .gather()
            .into_iter()
            .find(|f| f.name() == "cityops_alert_active_alerts")
            .expect("cityops_alert_active_alerts is registered");
        assert_eq!(family.get_metric().len(), 6, "2 states × 3 severities");
        assert_eq!(active(&metrics, "firing", "critical"), 0.0);

        metrics.publish_active(
            [
                (AlertState::Firing, Severity::Critical),
                (AlertState::Firing, Severity::Critical),
                (AlertState::Pending, Severity::Info),
            ]
            .into_iter(),
        );
        assert_eq!(active(&metrics, "firing", "critical"), 2.0);
        assert_eq!(active(&metrics, "pending", "info"), 1.0);

        metrics.publish_active(std::iter::empty());
        assert_eq!(active(&metrics, "firing", "critical"), 0.0);
        assert_eq!(active(&metrics, "pending", "info"), 0.0);
    }
}
