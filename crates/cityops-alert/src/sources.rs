//! The alerter's sources: its own MQTT sessions and its own Kafka consumer group, set up from
//! the config the way the ingest's are (`cityops-runtime`), decoding with the same feeds, and
//! handing the events to the evaluator with what acknowledges them.

use crate::service::{Ack, Input, Shared};
use cityops_config::{Config, SourceKind};
use cityops_event::Timestamp;
use cityops_feeds::{FeedSet, Message, Outcome};
use cityops_kafka::{GroupConsumer, GroupEvents, NextOffset, OffsetReset, TopicPartition};
use cityops_mqtt::{Subscriber, SubscriberEvent};
use cityops_telemetry::ReadinessHandle;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Decodes one payload; a reject is counted and yields nothing (the ingest stores it).
fn decode(
    feeds: &FeedSet,
    shared: &Shared,
    source: SourceKind,
    topic: &str,
    payload: &[u8],
) -> Vec<cityops_event::Event> {
    let label = match source {
        SourceKind::Kafka => "kafka",
        SourceKind::Mqtt => "mqtt",
    };
    shared.metrics.messages.with_label_values(&[label]).inc();
    let received_at = Timestamp::from_millis(crate::service::now_ms()).unwrap_or(Timestamp::MIN);
    match feeds.decode(&Message {
        source,
        topic,
        payload,
        received_at,
        coordinates: None,
    }) {
        Outcome::Events(events) => events,
        Outcome::Reject(reject) => {
            shared
                .metrics
                .rejected
                .with_label_values(&[reject.reason.as_str()])
                .inc();
            Vec::new()
        }
    }
}

/// Kafka records handed to the evaluator in one batch at most.
const BATCH: usize = 512;

/// Sends to the evaluator, waiting while its queue is full (backpressure to the source). The
/// evaluator outlives the sources, so a full queue always drains.
fn send_blocking(shared: &Shared, input: Input, cancel: &CancellationToken) -> bool {
    !cancel.is_cancelled() && shared.input.send(input).is_ok()
}

/// Starts the MQTT sessions and their reading task, if the config has MQTT feeds.
pub fn start_mqtt(
    config: &Config,
    feeds: Arc<FeedSet>,
    shared: Arc<Shared>,
    ready: ReadinessHandle,
    cancel: CancellationToken,
) -> Result<Option<tokio::task::JoinHandle<()>>, String> {
    let filters: Vec<String> = feeds
        .feeds()
        .iter()
        .filter(|f| f.config().source == SourceKind::Mqtt)
        .map(cityops_feeds::Feed::subscription)
        .collect();
    if filters.is_empty() {
        ready.set_ready(true);
        return Ok(None);
    }
    let tls = cityops_runtime::read_tls(&config.mqtt).map_err(|e| e.to_string())?;
    let options = cityops_runtime::subscriber_options(
        &config.mqtt,
        &config.alert.mqtt_client_id,
        Some(&config.alert.mqtt_shared_group),
        filters,
        tls,
    );
    let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
    let subscriber = Subscriber::start(options, tx, cancel.clone());
    let _ = shared.mqtt.set(subscriber);
    let connections = usize::from(config.mqtt.connections.max(1));
    Ok(Some(tokio::spawn(async move {
        let mut subscribed = BTreeSet::new();
        while let Some(event) = rx.recv().await {
            match event {
                SubscriberEvent::Message(d) => {
                    let events = decode(&feeds, &shared, SourceKind::Mqtt, &d.topic, &d.payload);
                    let ack = if d.qos == 0 {
                        Ack::None
                    } else {
                        Ack::Mqtt {
                            connection: d.connection,
                            epoch: d.epoch,
                            pkid: d.pkid,
                        }
                    };
                    let (shared2, cancel2) = (Arc::clone(&shared), cancel.clone());
                    let sent = tokio::task::block_in_place(|| {
                        send_blocking(&shared2, Input::Events(events, vec![ack]), &cancel2)
                    });
                    if !sent {
                        break;
                    }
                }
                SubscriberEvent::Subscribed {
                    connection,
                    accepted,
                    refused,
                } => {
                    if accepted > 0 {
                        subscribed.insert(connection);
                    }
                    for reason in refused {
                        tracing::warn!(connection, %reason, "the broker refused a subscription");
                    }
                    ready.set_ready(subscribed.len() == connections);
                }
                SubscriberEvent::Connected { connection, .. }
                | SubscriberEvent::Disconnected { connection, .. } => {
                    subscribed.remove(&connection);
                    ready.set_ready(false);
                    if let SubscriberEvent::Disconnected {
                        error, retry_in, ..
                    } = &event
                    {
                        tracing::warn!(connection, %error, retry_in_ms = retry_in.as_millis() as u64, "mqtt connection lost");
                    }
                }
                // The alerter never retires its sessions (`retire` is off).
                SubscriberEvent::BrokerStat { .. } | SubscriberEvent::Unsubscribed { .. } => {}
            }
        }
    })))
}

struct KafkaGroup {
    shared: Arc<Shared>,
    ready: ReadinessHandle,
    assigned: Mutex<bool>,
}

impl GroupEvents for KafkaGroup {
    fn revoking(&self) -> Vec<NextOffset> {
        *self.assigned.lock().unwrap_or_else(PoisonError::into_inner) = false;
        self.ready.set_ready(false);
        take_commits(&self.shared)
    }

    fn assigned(&self, partitions: &[TopicPartition]) {
        tracing::info!(
            partitions = partitions.len(),
            "kafka partitions assigned to the alerter"
        );
        *self.assigned.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.ready.set_ready(true);
    }

    fn lag(&self, _lags: &[(TopicPartition, i64)]) {}
}

fn take_commits(shared: &Shared) -> Vec<NextOffset> {
    let commit = shared
        .kafka_commit
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    commit
        .iter()
        .map(|((topic, partition), next)| {
            (
                TopicPartition {
                    topic: topic.clone(),
                    partition: *partition,
                },
                *next,
            )
        })
        .collect()
}

/// Runs the alerter's Kafka group member on this thread until `cancel`, if the config has
/// Kafka feeds. Offsets are committed once a state file covers them.
pub fn run_kafka(
    config: &Config,
    feeds: Arc<FeedSet>,
    shared: Arc<Shared>,
    ready: ReadinessHandle,
    cancel: CancellationToken,
) -> Result<(), String> {
    let topics = cityops_runtime::kafka_topics(config);
    if topics.is_empty() {
        ready.set_ready(true);
        return Ok(());
    }
    let mut kafka = config.kafka.clone();
    kafka.group_id = config.alert.kafka_group_id.clone();
    let group = Arc::new(KafkaGroup {
        shared: Arc::clone(&shared),
        ready,
        assigned: Mutex::new(false),
    });
    // A new alerter judges the present: it starts at the end of the partitions (the warm
    // start fills its windows), where the ingest must store everything from the beginning.
    let reset = if config.alert.kafka_offset_reset == "earliest" {
        OffsetReset::Earliest
    } else {
        OffsetReset::Latest
    };
    let consumer = GroupConsumer::with_offset_reset(&kafka, &topics, Arc::clone(&group), reset)
        .map_err(|e| e.to_string())?;
    tracing::info!(
        topics = topics.join(","),
        group = kafka.group_id,
        "alerter consuming kafka"
    );
    let mut last_commit = std::time::Instant::now();
    let mut committed: Vec<NextOffset> = Vec::new();
    let mut failures = 0u64;
    let mut last_failure_log: Option<std::time::Instant> = None;
    let mut assignment = cityops_kafka::AssignmentMonitor::new(
        kafka.assignment_timeout_ms,
        shared.metrics.kafka_assigned.clone(),
        shared.metrics.kafka_assignment_stalled.clone(),
    );
    while !cancel.is_cancelled() {
        if let Some(stalled) = assignment.check(&consumer) {
            let assigned = *group
                .assigned
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            group.ready.set_ready(assigned && !stalled);
        }
        // What is waiting goes to the evaluator as one batch: one wake-up and one
        // acknowledgement per partition for up to BATCH messages.
        let mut events = Vec::new();
        let mut next: BTreeMap<(String, i32), i64> = BTreeMap::new();
        let mut wait = Duration::from_millis(100);
        for _ in 0..BATCH {
            let polled = consumer.poll(wait, |record| {
                let decoded = decode(
                    &feeds,
                    &shared,
                    SourceKind::Kafka,
                    record.topic,
                    record.payload,
                );
                (
                    decoded,
                    record.topic.to_owned(),
                    record.partition,
                    record.offset + 1,
                )
            });
            match polled {
                Some(Ok((decoded, topic, partition, offset))) => {
                    events.extend(decoded);
                    next.insert((topic, partition), offset);
                    wait = Duration::ZERO;
                }
                Some(Err(error)) => {
                    failures += 1;
                    // A broker away fails every poll: say so every 10 s, not every time.
                    if last_failure_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                        tracing::warn!(%error, failures, "kafka receive failed; polling again");
                        last_failure_log = Some(std::time::Instant::now());
                    }
                    break;
                }
                None => break,
            }
        }
        if !next.is_empty() {
            let acks = next
                .into_iter()
                .map(|((topic, partition), next)| Ack::Kafka {
                    topic,
                    partition,
                    next,
                })
                .collect();
            if !send_blocking(&shared, Input::Events(events, acks), &cancel) {
                break;
            }
        }
        if last_commit.elapsed() >= Duration::from_secs(1) {
            let offsets = take_commits(&shared);
            if offsets != committed && !offsets.is_empty() {
                match consumer.commit(&offsets, false) {
                    Ok(()) => committed = offsets,
                    Err(error) => {
                        tracing::warn!(%error, "kafka commit failed; retried in a second")
                    }
                }
            }
            last_commit = std::time::Instant::now();
        }
    }
    let offsets = take_commits(&shared);
    if !offsets.is_empty()
        && let Err(error) = consumer.commit(&offsets, true)
    {
        tracing::warn!(%error, "final kafka commit failed");
    }
    consumer.leave(Duration::from_secs(5));
    Ok(())
}
