//! Kafka for cityops, built on rdkafka (librdkafka). This crate keeps librdkafka's build cost
//! in one place: the high-throughput producer the simulator and benchmarks use, and the
//! consumer-group member `cityops ingest` reads with.

mod assignment;
mod consumer;

pub use assignment::{AssignmentChange, AssignmentView, AssignmentWatch};
pub use consumer::{
    AssignmentMonitor, GroupConsumer, GroupEvents, NextOffset, OffsetReset, Record, TopicPartition,
};

use rdkafka::ClientConfig;
use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{
    BaseRecord, DeliveryResult, Producer as _, ProducerContext, ThreadedProducer,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What can go wrong producing or consuming.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The client could not be created (bad setting).
    #[error("cannot create a Kafka client for {bootstrap}: {source}")]
    Create {
        /// `bootstrap.servers`.
        bootstrap: String,
        /// librdkafka's complaint.
        source: KafkaError,
    },
    /// A record was refused outright (not a full queue: that waits).
    #[error("cannot produce to {topic}: {source}")]
    Send {
        /// The topic.
        topic: String,
        /// librdkafka's complaint.
        source: KafkaError,
    },
    /// A consumer operation failed.
    #[error("kafka consumer cannot {what}: {source}")]
    Consume {
        /// What it was doing.
        what: String,
        /// librdkafka's complaint.
        source: KafkaError,
    },
    /// Records were still unacknowledged when the flush deadline passed.
    #[error("{pending} record(s) not acknowledged within {timeout:?}")]
    Flush {
        /// Records still in flight.
        pending: u64,
        /// The deadline.
        timeout: Duration,
    },
}

/// Producer tuning. Defaults favour throughput with every record acknowledged by all replicas.
#[derive(Debug, Clone)]
pub struct ProducerSettings {
    /// `bootstrap.servers`, e.g. `127.0.0.1:19092`.
    pub bootstrap_servers: String,
    /// `linger.ms`: how long to wait to fill a batch.
    pub linger_ms: u32,
    /// `compression.type`: none, gzip, snappy, lz4, zstd.
    pub compression: String,
    /// `queue.buffering.max.messages`: records buffered before `send` waits.
    pub queue_max_messages: u32,
}

impl ProducerSettings {
    /// Throughput-oriented settings for `bootstrap_servers`.
    pub fn new(bootstrap_servers: impl Into<String>) -> Self {
        ProducerSettings {
            bootstrap_servers: bootstrap_servers.into(),
            linger_ms: 5,
            compression: "lz4".into(),
            queue_max_messages: 500_000,
        }
    }
}

/// Delivery counters, updated by librdkafka's delivery callbacks.
#[derive(Debug, Default)]
pub struct Deliveries {
    acked: AtomicU64,
    failed: AtomicU64,
}

impl Deliveries {
    /// Records the broker acknowledged.
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// Records that failed for good (after librdkafka's own retries).
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }
}

struct Context(Arc<Deliveries>);

impl ClientContext for Context {}

impl ProducerContext for Context {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.0.acked.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.0.failed.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// A producer that sends records asynchronously and counts their acknowledgements; a full
/// local queue makes [`Producer::send`] wait (backpressure), never drop.
pub struct Producer {
    inner: ThreadedProducer<Context>,
    deliveries: Arc<Deliveries>,
    sent: u64,
}

impl Producer {
    /// Creates the producer (no connection is made until the first record).
    pub fn new(settings: &ProducerSettings) -> Result<Self, Error> {
        let deliveries = Arc::new(Deliveries::default());
        let inner = ClientConfig::new()
            .set("bootstrap.servers", &settings.bootstrap_servers)
            .set("acks", "all")
            .set("enable.idempotence", "false")
            .set("linger.ms", settings.linger_ms.to_string())
            .set("compression.type", &settings.compression)
            .set(
                "queue.buffering.max.messages",
                settings.queue_max_messages.to_string(),
            )
            .set("batch.num.messages", "10000")
            .set("message.timeout.ms", "60000")
            .create_with_context(Context(Arc::clone(&deliveries)))
            .map_err(|source| Error::Create {
                bootstrap: settings.bootstrap_servers.clone(),
                source,
            })?;
        Ok(Producer {
            inner,
            deliveries,
            sent: 0,
        })
    }

    /// Queues one record; waits while librdkafka's queue is full.
    pub fn send(&mut self, topic: &str, key: Option<&str>, payload: &[u8]) -> Result<(), Error> {
        let mut record = BaseRecord::to(topic).payload(payload);
        if let Some(key) = key {
            record = record.key(key);
        }
        loop {
            match self.inner.send(record) {
                Ok(()) => {
                    self.sent += 1;
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    self.inner.poll(Duration::from_millis(5));
                }
                Err((source, _)) => {
                    return Err(Error::Send {
                        topic: topic.to_owned(),
                        source,
                    });
                }
            }
        }
    }

    /// Records queued so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// The delivery counters.
    pub fn deliveries(&self) -> &Deliveries {
        &self.deliveries
    }

    /// Waits until every queued record is acknowledged or failed, up to `timeout`.
    pub fn flush(&self, timeout: Duration) -> Result<(), Error> {
        let _ = self.inner.flush(timeout);
        let pending = self
            .sent
            .saturating_sub(self.deliveries.acked() + self.deliveries.failed());
        if pending > 0 {
            return Err(Error::Flush { pending, timeout });
        }
        Ok(())
    }
}
