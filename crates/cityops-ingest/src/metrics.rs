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
    /// 1 while consumption is paused because `max_in_flight_bytes` is reached.
    pub paused: Gauge,
    /// Bytes of rows read but not yet stored.
    pub in_flight_bytes: Gauge,
    /// Rebalances, by kind (`assign`, `revoke`).
    pub rebalances: CounterVec,
    /// Batches left unstored at a rebalance deadline (their messages are read again).
    pub abandoned_batches: CounterVec,
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
        Ok(IngestMetrics {
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
        })
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
        m.rebalances.with_label_values(&["assign"]).inc();
        m.abandoned_batches.with_label_values(&["shutdown"]).inc();
        let docs = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/metrics.md"
        ))
        .unwrap();
        let families = registry.gather();
        assert_eq!(families.len(), 14, "a metric was added: touch it above");
        for family in families {
            let name = family.name();
            assert!(
                docs.contains(&format!("`{name}`")),
                "docs/metrics.md lacks {name}"
            );
        }
    }
}
