//! Kafka to ClickHouse: the polling thread (consume, decode, batch, commit, pause) and the
//! writer task, and what happens on rebalances and shutdown. ARCHITECTURE.md explains why this
//! gives at-least-once from broker to table with no duplicate rows.

use crate::batch::{Batch, BatchBuilder, PartitionKey, ReplayFilter};
use crate::pipeline::{Decoder, Done, Received, WriterTask, limits, start_writer};
use crate::{Error, IngestMetrics};
use cityops_clickhouse::ClickHouse;
use cityops_config::{Config, SourceKind};
use cityops_event::{SourceCoordinates, Timestamp};
use cityops_kafka::{GroupConsumer, GroupEvents, NextOffset, Record, TopicPartition};
use cityops_telemetry::Readiness;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, mpsc};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const SOURCE: &str = "kafka";

pub use crate::pipeline::Summary;

/// State of the polling thread, shared with the rebalance callbacks (which run on the same
/// thread, inside `poll`).
struct Pipeline {
    decoder: Decoder,
    builder: BatchBuilder,
    filter: ReplayFilter,
    /// Whether `filter` is valid for the current assignment.
    checked: bool,
    to_writer: tokio::sync::mpsc::UnboundedSender<Batch>,
    from_writer: mpsc::Receiver<Done>,
    sent_seq: u64,
    done_seq: u64,
    /// Stored offsets not yet committed.
    to_commit: BTreeMap<PartitionKey, i64>,
    summary: Summary,
    paused: bool,
}

struct Shared {
    pipeline: Mutex<Pipeline>,
    clickhouse: ClickHouse,
    runtime: tokio::runtime::Handle,
    cancel: CancellationToken,
    generation: Arc<AtomicU64>,
    /// Set when batches were abandoned since the last assignment check.
    abandoned: std::sync::atomic::AtomicBool,
    in_flight: Arc<AtomicUsize>,
    gate: Arc<tokio::sync::Mutex<()>>,
    metrics: IngestMetrics,
    topics: Vec<String>,
    rebalance_deadline: Duration,
    check_timeout: Duration,
    retry_initial: Duration,
    retry_max: Duration,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pipeline> {
        // Only this thread takes the lock; a poisoned lock means a panic already ended the run.
        self.pipeline.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hands the batch being built to the writer.
    fn send(&self, p: &mut Pipeline) {
        if !p.builder.has_messages() {
            return;
        }
        let batch = p.builder.take(self.generation.load(Ordering::SeqCst));
        self.in_flight.fetch_add(batch.bytes, Ordering::SeqCst);
        self.metrics
            .in_flight_bytes
            .set(self.in_flight.load(Ordering::SeqCst) as f64);
        p.sent_seq = batch.seq;
        if p.to_writer.send(batch).is_err() {
            tracing::error!("the writer stopped; nothing more can be stored");
        }
    }

    /// Takes the writer's reports, waiting until `seq` is done or `deadline` passes.
    fn collect(&self, p: &mut Pipeline, wait_for: Option<(u64, Instant)>) {
        loop {
            let next = match wait_for {
                Some((seq, deadline)) if p.done_seq < seq => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return;
                    }
                    match p.from_writer.recv_timeout(left) {
                        Ok(done) => Some(done),
                        Err(mpsc::RecvTimeoutError::Timeout) => None,
                        // The writer is gone: nothing more will be stored.
                        Err(mpsc::RecvTimeoutError::Disconnected) => return,
                    }
                }
                _ => p.from_writer.try_recv().ok(),
            };
            let Some(done) = next else {
                if wait_for.is_none_or(|(seq, _)| p.done_seq >= seq) {
                    return;
                }
                continue;
            };
            p.done_seq = done.seq;
            self.in_flight.fetch_sub(done.bytes, Ordering::SeqCst);
            self.metrics
                .in_flight_bytes
                .set(self.in_flight.load(Ordering::SeqCst) as f64);
            // Offsets of an older generation are not ours to commit any more.
            if done.stored && done.generation == self.generation.load(Ordering::SeqCst) {
                p.summary.batches += 1;
                p.summary.messages += done.messages;
                for (key, next) in done.next_offsets {
                    let slot = p.to_commit.entry(key).or_insert(next);
                    *slot = (*slot).max(next);
                }
            }
        }
    }

    fn take_commits(p: &mut Pipeline) -> Vec<NextOffset> {
        std::mem::take(&mut p.to_commit)
            .into_iter()
            .map(|((topic, partition), next)| (TopicPartition { topic, partition }, next))
            .collect()
    }

    /// Stores everything read, within `deadline`; abandons the rest (a new generation).
    /// Returns whether everything was stored.
    fn drain(&self, p: &mut Pipeline, deadline: Duration, moment: &str) -> bool {
        self.send(p);
        let target = p.sent_seq;
        self.collect(p, Some((target, Instant::now() + deadline)));
        if p.done_seq >= target {
            return true;
        }
        let left = target - p.done_seq;
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.abandoned.store(true, Ordering::SeqCst);
        self.metrics
            .abandoned_batches
            .with_label_values(&[moment])
            .inc_by(left as f64);
        tracing::warn!(
            batches = left,
            moment,
            deadline_ms = deadline.as_millis() as u64,
            "batches not stored within the deadline are left uncommitted; they will be read again and what was stored recognised"
        );
        false
    }

    /// Reads what is stored for the assigned partitions. Holds the writer's gate so that no
    /// INSERT of this process runs, and first waits for INSERTs of any ingest process still
    /// running (a previous owner killed mid-INSERT).
    async fn check(&self) -> Result<ReplayFilter, cityops_clickhouse::Error> {
        let _gate = self.gate.lock().await;
        // An INSERT this process gave up on at a rebalance deadline may start late on a busy
        // server: give it the same grace as a retry. (A killed owner's partitions move only
        // after the session timeout, which is longer.)
        if self.abandoned.swap(false, Ordering::SeqCst) {
            tokio::time::sleep(crate::writer::LANDED_GRACE).await;
        }
        let running = self.clickhouse.running_ingest_queries().await?;
        let left = self
            .clickhouse
            .wait_until_finished(&running, self.check_timeout)
            .await?;
        if !left.is_empty() {
            tracing::warn!(
                queries = left.len(),
                "ingest INSERTs still running after the insert timeout; reading stored offsets anyway"
            );
        }
        let (events, rejects) = self.clickhouse.stored_offsets(SOURCE, &self.topics).await?;
        Ok(ReplayFilter::new(&events, &rejects))
    }
}

impl GroupEvents for Shared {
    fn revoking(&self) -> Vec<NextOffset> {
        self.metrics.rebalances.with_label_values(&["revoke"]).inc();
        // Partitions that move away must not keep reporting their last lag from here.
        self.metrics.kafka_lag.reset();
        let mut p = self.lock();
        self.drain(&mut p, self.rebalance_deadline, "rebalance");
        p.checked = false;
        p.paused = false;
        self.metrics.paused.set(0.0);
        Shared::take_commits(&mut p)
    }

    fn assigned(&self, partitions: &[TopicPartition]) {
        self.metrics.rebalances.with_label_values(&["assign"]).inc();
        tracing::info!(
            partitions = partitions.len(),
            "partitions assigned; reading what is already stored"
        );
        let mut backoff = cityops_runtime::Backoff::new(
            self.retry_initial,
            self.retry_max,
            u64::from(std::process::id()),
        );
        loop {
            if self.cancel.is_cancelled() {
                return;
            }
            match self.runtime.block_on(self.check()) {
                Ok(filter) => {
                    let mut p = self.lock();
                    p.filter = filter;
                    p.checked = true;
                    p.paused = false;
                    return;
                }
                Err(error) => {
                    if backoff.attempts().is_multiple_of(10) {
                        tracing::warn!(%error, "cannot read stored offsets; consumption waits for ClickHouse");
                    }
                    let delay = backoff.next_delay();
                    self.runtime.block_on(async {
                        tokio::select! {
                            () = self.cancel.cancelled() => {}
                            () = tokio::time::sleep(delay) => {}
                        }
                    });
                }
            }
        }
    }

    fn lag(&self, lags: &[(TopicPartition, i64)]) {
        for (tp, lag) in lags {
            self.metrics
                .kafka_lag
                .with_label_values(&[&tp.topic, &tp.partition.to_string()])
                .set(*lag as f64);
        }
    }
}

impl Pipeline {
    /// Decodes one record into the batch being built (or skips it if already stored).
    fn add(&mut self, record: Record<'_>, metrics: &IngestMetrics) {
        if !self.checked {
            // Only when shutdown cancelled the assignment check: nothing after it is stored or
            // committed, so the message is read again next time.
            return;
        }
        let coordinates = SourceCoordinates::Kafka {
            topic: record.topic.to_owned(),
            partition: record.partition,
            offset: record.offset,
        };
        let received = Received {
            topic: record.topic,
            payload: record.payload,
            received_at: arrival(record.timestamp_ms, crate::pipeline::now()),
            coordinates: &coordinates,
            partition: record.partition,
            offset: record.offset,
            key_topic: record.topic,
        };
        self.decoder.add(
            &received,
            &mut self.builder,
            &self.filter,
            metrics,
            |_, _| {},
        );
    }
}

/// The arrival time of a record: its timestamp (the producer's create time or the broker's
/// append time), so that a record read again after a crash or a rebalance gets the same time,
/// and so the same daily partition, as on its first read (the spool keeps the first arrival
/// for MQTT). `now` when it has none, or one later than now (a producer clock ahead).
fn arrival(timestamp_ms: Option<i64>, now: Timestamp) -> Timestamp {
    timestamp_ms
        .filter(|&ms| ms > 0 && ms <= now.as_millis())
        .and_then(|ms| Timestamp::from_millis(ms).ok())
        .unwrap_or(now)
}

/// Runs Kafka ingest until `cancel`: blocks the calling thread (the polling thread) and runs
/// the writer on `runtime`. Returns once everything read is stored and committed, or the
/// shutdown deadline passed.
pub fn run(
    config: &Config,
    clickhouse: ClickHouse,
    metrics: IngestMetrics,
    readiness: &Readiness,
    runtime: tokio::runtime::Handle,
    cancel: CancellationToken,
) -> Result<Summary, Error> {
    let decoder = Decoder::new(config, SourceKind::Kafka)?;
    let topics = cityops_runtime::kafka_topics(config);
    let settings = &config.ingest;
    let WriterTask {
        to_writer,
        from_writer,
        generation,
        gate,
        task: writer_task,
    } = start_writer(
        config,
        clickhouse.clone(),
        &metrics,
        readiness,
        &runtime,
        SOURCE,
    );
    let shared = Arc::new(Shared {
        pipeline: Mutex::new(Pipeline {
            decoder,
            builder: BatchBuilder::new(limits(settings)),
            filter: ReplayFilter::default(),
            checked: false,
            to_writer,
            from_writer,
            sent_seq: 0,
            done_seq: 0,
            to_commit: BTreeMap::new(),
            summary: Summary::default(),
            paused: false,
        }),
        clickhouse,
        runtime: runtime.clone(),
        cancel: cancel.clone(),
        generation,
        abandoned: std::sync::atomic::AtomicBool::new(false),
        in_flight: Arc::new(AtomicUsize::new(0)),
        gate,
        metrics: metrics.clone(),
        topics: topics.clone(),
        rebalance_deadline: Duration::from_millis(settings.rebalance_deadline_ms),
        check_timeout: Duration::from_millis(settings.insert_timeout_ms),
        retry_initial: Duration::from_millis(settings.retry_initial_ms),
        retry_max: Duration::from_millis(settings.retry_max_ms),
    });
    let consumer = GroupConsumer::new(&config.kafka, &topics, Arc::clone(&shared))?;
    let kafka_ready = readiness.register("kafka");
    kafka_ready.set_ready(true);
    tracing::info!(
        topics = topics.join(","),
        group = config.kafka.group_id,
        "consuming"
    );
    let max_in_flight = settings.max_in_flight_bytes;
    let mut consume_errors = 0u64;
    let mut assignment = cityops_kafka::AssignmentMonitor::new(
        config.kafka.assignment_timeout_ms,
        metrics.kafka_assigned.clone(),
        metrics.kafka_assignment_stalled.clone(),
    );
    while !cancel.is_cancelled() {
        if let Some(stalled) = assignment.check(&consumer) {
            kafka_ready.set_ready(!stalled);
        }
        let timeout = {
            let mut p = shared.lock();
            shared.collect(&mut p, None);
            let commits = Shared::take_commits(&mut p);
            if !commits.is_empty()
                && let Err(error) = consumer.commit(&commits, false)
            {
                tracing::warn!(%error, "commit failed; stored messages will be skipped when read again");
            }
            let now = Instant::now();
            if p.builder.full() || p.builder.due(now) {
                shared.send(&mut p);
            }
            let in_flight = shared.in_flight.load(Ordering::SeqCst) + p.builder.bytes();
            if !p.paused && in_flight >= max_in_flight {
                match consumer.pause() {
                    Ok(()) => {
                        p.paused = true;
                        metrics.paused.set(1.0);
                        tracing::info!(
                            in_flight_bytes = in_flight,
                            "in-flight bound reached; consumption paused until ClickHouse catches up"
                        );
                    }
                    Err(error) => tracing::warn!(%error, "cannot pause"),
                }
            } else if p.paused && in_flight < max_in_flight / 4 * 3 {
                match consumer.resume() {
                    Ok(()) => {
                        p.paused = false;
                        metrics.paused.set(0.0);
                        tracing::info!(in_flight_bytes = in_flight, "consumption resumed");
                    }
                    Err(error) => tracing::warn!(%error, "cannot resume"),
                }
            }
            p.builder
                .until_due(now)
                .map_or(Duration::from_millis(100), |d| {
                    d.min(Duration::from_millis(100))
                })
        };
        match consumer.poll(timeout, |record| {
            shared.lock().add(record, &metrics);
        }) {
            None | Some(Ok(())) => {}
            Some(Err(error)) => {
                consume_errors += 1;
                if consume_errors.is_power_of_two() {
                    tracing::warn!(%error, errors = consume_errors, "consumer error (librdkafka retries by itself)");
                }
            }
        }
    }
    tracing::info!("stopping: storing what was read, committing, leaving the group");
    let deadline = Duration::from_millis(settings.shutdown_deadline_ms);
    {
        let mut p = shared.lock();
        p.summary.drained = shared.drain(&mut p, deadline, "shutdown");
        let commits = Shared::take_commits(&mut p);
        if let Err(error) = consumer.commit(&commits, true) {
            tracing::warn!(%error, "final commit failed; stored messages will be skipped when read again");
        }
    }
    consumer.leave(Duration::from_secs(5));
    // The consumer's context held the other reference to `shared`: dropping both closes the
    // writer's channel, which ends the writer (an abandoned batch ends at its next step).
    drop(consumer);
    let summary = shared.lock().summary.clone();
    drop(shared);
    let _ =
        runtime.block_on(async { tokio::time::timeout(Duration::from_secs(5), writer_task).await });
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_arrives_at_its_timestamp_unless_it_has_none_or_one_in_the_future() {
        let now = Timestamp::from_millis(1_800_000_000_000).unwrap();
        let earlier = 1_799_999_000_000;
        assert_eq!(arrival(Some(earlier), now).as_millis(), earlier);
        assert_eq!(arrival(Some(1_800_000_000_001), now), now);
        assert_eq!(arrival(Some(-1), now), now);
        assert_eq!(arrival(None, now), now);
    }
}
