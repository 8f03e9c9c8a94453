//! The ingest's own metrics (`cityops_ingest_*`), shared by the Kafka and MQTT paths. Labels
//! are bounded: source, feed (from the config), reject reason, table, topic and partition.

use cityops_telemetry::Metrics;
use prometheus::{CounterVec, Gauge, GaugeVec, HistogramVec, Registry};

/// Label value for messages no feed reads.
pub const NO_FEED: &str = "none";

/// Every metric of the ingest.
#[derive(Clone)]
pub struct IngestMetrics {
    /// Messages consumed, by source and feed.
    pub messages: CounterVec,
    /// Payload bytes consumed, by source and feed.
    pub payload_bytes: CounterVec,
    /// Events decoded, by source and feed.
    pub events: CounterVec,
    /// Rejects, by source, feed and reason (decode reasons and `clickhouse_refused`).
    pub rejects: CounterVec,
    /// Messages read again after a restart or rebalance and skipped because their rows were
    /// already stored.
    pub replayed: CounterVec,
    /// Rows stored, by table and feed.
    pub rows_inserted: CounterVec,
    /// INSERT duration, by table.
    pub insert_duration: HistogramVec,
    /// Rows per INSERT, by table.
    pub batch_rows: HistogramVec,
    /// Failed INSERTs, by table and what followed (`retry` or `split`).
    pub insert_failures: CounterVec,
    /// Consumer lag per topic and partition (Kafka).
    pub kafka_lag: GaugeVec,
    /// Partitions the group gives this process, by topic (Kafka).
    pub kafka_assigned: GaugeVec,
    /// 1 while the group has left this process short of partitions for longer than
    /// `kafka.assignment_timeout_ms`.
    pub kafka_assignment_stalled: Gauge,
    /// 1 while consumption is paused because `max_in_flight_bytes` is reached.
    pub paused: Gauge,
    /// Bytes of rows read but not yet stored.
    pub in_flight_bytes: Gauge,
    /// Rebalances, by kind (`assign`, `revoke`).
    pub rebalances: CounterVec,
    /// Batches left unstored at a rebalance deadline (their messages are read again).
    pub abandoned_batches: CounterVec,
    /// MQTT connections up.
    pub mqtt_connections: Gauge,
    /// MQTT connections whose subscription the broker confirmed (SUBACK) on the current
    /// connection attempt.
    pub mqtt_subscribed: Gauge,
    /// MQTT connections lost or refused (each followed by a delayed reconnect).
    pub mqtt_connection_errors: prometheus::Counter,
    /// Subscriptions the broker refused.
    pub mqtt_subscribe_refusals: prometheus::Counter,
    /// Stall-watchdog reconnects, by feed.
    pub mqtt_stalls: CounterVec,
    /// Deliveries the broker sent again (DUP) that the spool already held: acknowledged, not
    /// stored twice.
    pub mqtt_resends: prometheus::Counter,
    /// PUBACKs sent, each after its message was synced to the spool.
    pub mqtt_acks: prometheus::Counter,
    /// Retained messages not stored (`mqtt.store_retained = false`).
    pub mqtt_retained_skipped: prometheus::Counter,
    /// QoS 0 deliveries dropped while the spool was full, beyond
    /// `mqtt.spool.held_qos0_max_bytes`.
    pub mqtt_qos0_dropped: prometheus::Counter,
    /// Bytes of the QoS 0 deliveries held in memory while the spool is full.
    pub mqtt_held_qos0_bytes: Gauge,
    /// Messages missing by their devices' sequence numbers, by feed.
    pub mqtt_sequence_gaps: CounterVec,
    /// The broker's own count of messages it dropped (`$SYS/broker/publish/messages/dropped`).
    pub mqtt_broker_dropped: Gauge,
    /// Bytes in the spool.
    pub spool_bytes: Gauge,
    /// 1 while the spool is at its disk bound (nothing more is acknowledged).
    pub spool_full: Gauge,
    /// Messages spooled but not yet stored in ClickHouse.
    pub spool_backlog: Gauge,
    /// Duration of each spool sync (write + fdatasync).
    pub spool_sync_duration: prometheus::Histogram,
}

impl IngestMetrics {
    /// Registers every ingest metric on `registry`.
    pub fn new(registry: &Registry) -> Result<Self, cityops_telemetry::TelemetryError> {
        let m = Metrics::new(registry, "ingest");
        let secs = vec![
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        ];
        let rows = vec![
            1.0, 10.0, 100.0, 1_000.0, 10_000.0, 50_000.0, 100_000.0, 250_000.0, 500_000.0,
        ];
        let metrics = IngestMetrics {
            messages: m.counter_vec(
                "messages_total",
                "Messages consumed, by source and feed",
                &["source", "feed"],
            )?,
            payload_bytes: m.counter_vec(
                "payload_bytes_total",
                "Payload bytes consumed, by source and feed",
                &["source", "feed"],
            )?,
            events: m.counter_vec(
                "events_total",
                "Events decoded, by source and feed",
                &["source", "feed"],
            )?,
            rejects: m.counter_vec(
                "rejects_total",
                "Messages written to the rejects table, by source, feed and reason",
                &["source", "feed", "reason"],
            )?,
            replayed: m.counter_vec(
                "replayed_messages_total",
                "Messages read again after a restart or rebalance and skipped because their rows were already stored",
                &["source", "feed"],
            )?,
            rows_inserted: m.counter_vec(
                "rows_inserted_total",
                "Rows stored in ClickHouse, by table and feed",
                &["table", "feed"],
            )?,
            insert_duration: m.histogram_vec(
                "insert_duration_seconds",
                "Duration of successful INSERTs, by table",
                &["table"],
                secs,
            )?,
            batch_rows: m.histogram_vec(
                "batch_rows",
                "Rows per successful INSERT, by table",
                &["table"],
                rows,
            )?,
            insert_failures: m.counter_vec(
                "insert_failures_total",
                "Failed INSERTs, by table and what followed: retry (server unreachable, slow or misconfigured) or split (the server refused rows)",
                &["table", "action"],
            )?,
            kafka_lag: m.gauge_vec(
                "kafka_lag_messages",
                "Consumer lag per assigned topic and partition, from librdkafka statistics",
                &["topic", "partition"],
            )?,
            kafka_assigned: m.gauge_vec(
                "kafka_assigned_partitions",
                "Partitions the consumer group gives this process, by topic",
                &["topic"],
            )?,
            kafka_assignment_stalled: m.gauge(
                "kafka_assignment_stalled_state",
                "1 while the consumer group has left this process without partitions (or, alone in the group, with fewer than its topics have) for longer than kafka.assignment_timeout_ms",
            )?,
            paused: m.gauge(
                "paused_state",
                "1 while consumption is paused because max_in_flight_bytes is reached",
            )?,
            in_flight_bytes: m.gauge(
                "in_flight_bytes",
                "Estimated bytes of rows read but not yet stored",
            )?,
            rebalances: m.counter_vec(
                "rebalances_total",
                "Consumer-group rebalances, by kind (assign, revoke)",
                &["kind"],
            )?,
            abandoned_batches: m.counter_vec(
                "abandoned_batches_total",
                "Batches left unstored at a rebalance or shutdown deadline, by moment; their messages are read again",
                &["moment"],
            )?,
            mqtt_connections: m.gauge("mqtt_connections", "MQTT connections up")?,
            mqtt_subscribed: m.gauge(
                "mqtt_subscribed_connections",
                "MQTT connections whose subscription the broker confirmed",
            )?,
            mqtt_connection_errors: m.counter(
                "mqtt_connection_errors_total",
                "MQTT connections lost or refused; each is retried after a capped, jittered delay",
            )?,
            mqtt_subscribe_refusals: m.counter(
                "mqtt_subscribe_refusals_total",
                "Subscriptions the MQTT broker refused",
            )?,
            mqtt_stalls: m.counter_vec(
                "mqtt_stalls_total",
                "Stall-watchdog reconnects: the feed was silent past its stall_timeout_ms while connected",
                &["feed"],
            )?,
            mqtt_resends: m.counter(
                "mqtt_resends_total",
                "Deliveries the broker sent again (DUP) that the spool already held: acknowledged, not stored twice",
            )?,
            mqtt_acks: m.counter(
                "mqtt_acks_total",
                "PUBACKs sent, each after its message was synced to the spool (or recognised as already there)",
            )?,
            mqtt_retained_skipped: m.counter(
                "mqtt_retained_skipped_total",
                "Retained messages not stored (mqtt.store_retained = false)",
            )?,
            mqtt_qos0_dropped: m.counter(
                "mqtt_qos0_dropped_total",
                "QoS 0 deliveries dropped, oldest first, while the spool was full and those held in memory reached mqtt.spool.held_qos0_max_bytes",
            )?,
            mqtt_held_qos0_bytes: m.gauge(
                "mqtt_held_qos0_bytes",
                "Bytes (payload and topic) of the QoS 0 deliveries held in memory while the spool is full",
            )?,
            mqtt_sequence_gaps: m.counter_vec(
                "mqtt_sequence_gaps_total",
                "Messages missing by their devices' sequence numbers (sequence_attr), by feed",
                &["feed"],
            )?,
            mqtt_broker_dropped: m.gauge(
                "mqtt_broker_dropped_messages",
                "The broker's count of messages it dropped ($SYS/broker/publish/messages/dropped), broker-wide",
            )?,
            spool_bytes: m.gauge("spool_bytes", "Bytes in the MQTT spool")?,
            spool_full: m.gauge(
                "spool_full_state",
                "1 while the MQTT spool is at max_bytes: nothing more is acknowledged (the broker keeps it)",
            )?,
            spool_backlog: m.gauge(
                "spool_backlog_messages",
                "Messages in the MQTT spool not yet stored in ClickHouse",
            )?,
            spool_sync_duration: m.histogram(
                "spool_sync_duration_seconds",
                "Duration of each MQTT spool sync (write and fdatasync), which every acknowledgement waits for",
                vec![0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1],
            )?,
        };
        // Failures start at 0 for every table and action, so that a rate over them (a
        // dashboard, an "inserts failing" rule) has data before the first failure.
        for table in ["events", "rejects"] {
            for action in ["retry", "split"] {
                metrics.insert_failures.with_label_values(&[table, action]);
            }
        }
        Ok(metrics)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_ingest_metric_is_in_docs_metrics_md() {
        let registry = Registry::new();
        let m = IngestMetrics::new(&registry).unwrap();
        // A vector shows in a scrape once it has a child.
        m.messages.with_label_values(&["kafka", "f"]).inc();
        m.payload_bytes.with_label_values(&["kafka", "f"]).inc();
        m.events.with_label_values(&["kafka", "f"]).inc();
        m.rejects.with_label_values(&["kafka", "f", "r"]).inc();
        m.replayed.with_label_values(&["kafka", "f"]).inc();
        m.rows_inserted.with_label_values(&["events", "f"]).inc();
        m.insert_duration
            .with_label_values(&["events"])
            .observe(1.0);
        m.batch_rows.with_label_values(&["events"]).observe(1.0);
        m.insert_failures
            .with_label_values(&["events", "retry"])
            .inc();
        m.kafka_lag.with_label_values(&["t", "0"]).set(1.0);
        m.kafka_assigned.with_label_values(&["t"]).set(1.0);
        m.rebalances.with_label_values(&["assign"]).inc();
        m.abandoned_batches.with_label_values(&["shutdown"]).inc();
        m.mqtt_stalls.with_label_values(&["f"]).inc();
        m.mqtt_sequence_gaps.with_label_values(&["f"]).inc();
        let docs = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/metrics.md"
        ))
        .unwrap();
        let families = registry.gather();
        assert_eq!(families.len(), 32, "a metric was added: touch it above");
        for family in families {
            let name = family.name();
            assert!(
                docs.contains(&format!("`{name}`")),
                "docs/metrics.md lacks {name}"
            );
        }
    }
}
