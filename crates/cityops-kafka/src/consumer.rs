//! The ingest's Kafka source: a consumer-group member that never commits on its own. The
//! pipeline commits what it has stored, and hears about every rebalance through
//! [`GroupEvents`] so that nothing read from a partition is committed early or lost when the
//! partition moves.

use crate::Error;
use cityops_config::KafkaConfig;
use rdkafka::ClientConfig;
use rdkafka::ClientContext;
use rdkafka::Offset;
use rdkafka::Statistics;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::Message as _;
use std::sync::Arc;
use std::time::Duration;

/// A topic and partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: i32,
}

/// Where a group member starts in a partition the group never committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetReset {
    /// From the partition's first record.
    Earliest,
    /// From the records that arrive after joining.
    Latest,
}

/// The next offset to read of a partition: what a commit records.
pub type NextOffset = (TopicPartition, i64);

/// What the pipeline is told about the group. Called on the polling thread, inside
/// [`GroupConsumer::poll`].
pub trait GroupEvents: Send + Sync + 'static {
    /// The group is taking every partition away (eager rebalance, or leaving). Store what was
    /// read, as far as the deadline allows, and return the offsets to commit: they are
    /// committed synchronously before the partitions go.
    fn revoking(&self) -> Vec<NextOffset>;
    /// These partitions are now ours, reading from their committed offsets.
    fn assigned(&self, partitions: &[TopicPartition]);
    /// Consumer lag per partition, from librdkafka's statistics.
    fn lag(&self, lags: &[(TopicPartition, i64)]);
}

struct Context<E> {
    events: Arc<E>,
}

impl<E: GroupEvents> ClientContext for Context<E> {
    fn stats(&self, statistics: Statistics) {
        let lags: Vec<(TopicPartition, i64)> = statistics
            .topics
            .iter()
            .flat_map(|(topic, t)| {
                t.partitions
                    .values()
                    // -1 is librdkafka's internal "unassigned" partition; lag -1 is unknown.
                    .filter(|p| p.partition >= 0 && p.consumer_lag >= 0)
                    .map(move |p| {
                        (
                            TopicPartition {
                                topic: topic.clone(),
                                partition: p.partition,
                            },
                            p.consumer_lag,
                        )
                    })
            })
            .collect();
        self.events.lag(&lags);
    }
}

impl<E: GroupEvents> ConsumerContext for Context<E> {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(_) = rebalance {
            let offsets = self.events.revoking();
            if let Err(error) = commit(consumer, &offsets, CommitMode::Sync) {
                tracing::warn!(%error, "commit before giving up partitions failed; the next owner re-reads them and skips what is stored");
            }
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance {
            let partitions: Vec<TopicPartition> = list
                .elements()
                .iter()
                .map(|e| TopicPartition {
                    topic: e.topic().to_owned(),
                    partition: e.partition(),
                })
                .collect();
            self.events.assigned(&partitions);
        }
    }
}

fn commit<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    offsets: &[NextOffset],
    mode: CommitMode,
) -> Result<(), Error> {
    if offsets.is_empty() {
        return Ok(());
    }
    let mut list = TopicPartitionList::new();
    for (tp, next) in offsets {
        list.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(*next))
            .map_err(|source| Error::Consume {
                what: "build the commit list".into(),
                source,
            })?;
    }
    consumer
        .commit(&list, mode)
        .map_err(|source| Error::Consume {
            what: "commit offsets".into(),
            source,
        })
}

/// One received record, borrowed from librdkafka's buffer.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// Topic.
    pub topic: &'a str,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Payload (empty for a tombstone).
    pub payload: &'a [u8],
    /// The record's timestamp (producer create time or broker log-append time), ms.
    pub timestamp_ms: Option<i64>,
}

/// A member of a consumer group that commits only what it is told to.
pub struct GroupConsumer<E: GroupEvents> {
    inner: BaseConsumer<Context<E>>,
    group_id: String,
    topics: Vec<String>,
}

impl<E: GroupEvents> GroupConsumer<E> {
    /// Joins `config.group_id` and subscribes to `topics`. Auto-commit is off; a partition
    /// never committed is read from its beginning.
    pub fn new(config: &KafkaConfig, topics: &[String], events: Arc<E>) -> Result<Self, Error> {
        Self::with_offset_reset(config, topics, events, OffsetReset::Earliest)
    }

    /// As [`GroupConsumer::new`], choosing where a partition never committed is read from:
    /// the ingest stores everything (`Earliest`); the alerter judges the present (`Latest`).
    pub fn with_offset_reset(
        config: &KafkaConfig,
        topics: &[String],
        events: Arc<E>,
        reset: OffsetReset,
    ) -> Result<Self, Error> {
        let mut client = ClientConfig::new();
        for (key, value) in &config.settings {
            client.set(key, value);
        }
        client
            .set("bootstrap.servers", &config.bootstrap_servers)
            .set("group.id", &config.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set(
                "auto.offset.reset",
                match reset {
                    OffsetReset::Earliest => "earliest",
                    OffsetReset::Latest => "latest",
                },
            )
            .set("session.timeout.ms", config.session_timeout_ms.to_string())
            .set(
                "heartbeat.interval.ms",
                (config.session_timeout_ms / 4).to_string(),
            )
            // Eager protocol: a rebalance revokes every partition, and `revoking` stores
            // what was read before anything moves. Round robin over every topic's partitions
            // first: `range` assigns each topic on its own, so with topics of two partitions
            // a third process got none at all. `range` stays second so that a group of
            // processes that still offer only the old order agrees during a rolling upgrade.
            .set("partition.assignment.strategy", "roundrobin,range")
            .set("fetch.max.bytes", config.fetch_max_bytes.to_string())
            .set(
                "max.partition.fetch.bytes",
                config.max_partition_fetch_bytes.to_string(),
            )
            .set(
                "queued.max.messages.kbytes",
                (config.queued_max_bytes / 1024).max(1).to_string(),
            )
            .set(
                "fetch.queue.backoff.ms",
                config.fetch_queue_backoff_ms.to_string(),
            )
            .set("statistics.interval.ms", "5000");
        let inner: BaseConsumer<Context<E>> = client
            .create_with_context(Context { events })
            .map_err(|source| Error::Create {
                bootstrap: config.bootstrap_servers.clone(),
                source,
            })?;
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        inner.subscribe(&names).map_err(|source| Error::Consume {
            what: format!("subscribe to {}", topics.join(", ")),
            source,
        })?;
        Ok(GroupConsumer {
            inner,
            group_id: config.group_id.clone(),
            topics: topics.to_vec(),
        })
    }

    /// Waits up to `timeout` for a record and hands it to `handle`. Serves rebalances and
    /// statistics (calling [`GroupEvents`]) while it waits. `None` when nothing arrived.
    pub fn poll<R>(
        &self,
        timeout: Duration,
        handle: impl FnOnce(Record<'_>) -> R,
    ) -> Option<Result<R, Error>> {
        match self.inner.poll(timeout)? {
            Ok(message) => Some(Ok(handle(Record {
                topic: message.topic(),
                partition: message.partition(),
                offset: message.offset(),
                payload: message.payload().unwrap_or_default(),
                timestamp_ms: message.timestamp().to_millis(),
            }))),
            Err(source) => Some(Err(Error::Consume {
                what: "receive".into(),
                source,
            })),
        }
    }

    /// Commits next-offsets to the group (`sync` waits for the broker's answer).
    pub fn commit(&self, offsets: &[NextOffset], sync: bool) -> Result<(), Error> {
        let mode = if sync {
            CommitMode::Sync
        } else {
            CommitMode::Async
        };
        commit(&self.inner, offsets, mode)
    }

    /// Stops fetching from every assigned partition (records already fetched may still come).
    pub fn pause(&self) -> Result<(), Error> {
        self.with_assignment(|consumer, list| consumer.pause(list), "pause")
    }

    /// Fetches again from every assigned partition.
    pub fn resume(&self) -> Result<(), Error> {
        self.with_assignment(|consumer, list| consumer.resume(list), "resume")
    }

    fn with_assignment(
        &self,
        act: impl FnOnce(
            &BaseConsumer<Context<E>>,
            &TopicPartitionList,
        ) -> rdkafka::error::KafkaResult<()>,
        what: &str,
    ) -> Result<(), Error> {
        let list = self.inner.assignment().map_err(|source| Error::Consume {
            what: "read the assignment".into(),
            source,
        })?;
        if list.count() == 0 {
            return Ok(());
        }
        act(&self.inner, &list).map_err(|source| Error::Consume {
            what: what.into(),
            source,
        })
    }

    /// The partitions this member holds, per subscribed topic (every topic listed, 0 if none).
    pub fn assigned_per_topic(&self) -> std::collections::BTreeMap<String, usize> {
        let mut per_topic: std::collections::BTreeMap<String, usize> =
            self.topics.iter().map(|t| (t.clone(), 0)).collect();
        if let Ok(list) = self.inner.assignment() {
            for e in list.elements() {
                *per_topic.entry(e.topic().to_owned()).or_default() += 1;
            }
        }
        per_topic
    }

    /// A look at this member's share of the group for an [`crate::AssignmentWatch`]. Asks the
    /// broker (each request waiting up to `timeout`) only what the answer needs: the topics'
    /// partitions when it holds some, the group's members when it holds fewer than those.
    pub fn assignment_view(&self, timeout: Duration) -> crate::AssignmentView {
        let assigned: usize = self.assigned_per_topic().values().sum();
        let mut view = crate::AssignmentView {
            assigned,
            total: None,
            others: None,
        };
        if assigned == 0 {
            return view;
        }
        // One request for every topic: a broker that is away costs one timeout, not one each.
        let Ok(metadata) = self.inner.fetch_metadata(None, timeout) else {
            return view;
        };
        let total = metadata
            .topics()
            .iter()
            .filter(|t| self.topics.iter().any(|ours| ours == t.name()))
            .map(|t| t.partitions().len())
            .sum();
        view.total = Some(total);
        if assigned < total
            && let Ok(groups) = self.inner.fetch_group_list(Some(&self.group_id), timeout)
            && let Some(group) = groups.groups().iter().find(|g| g.name() == self.group_id)
        {
            view.others = Some(group.members().len().saturating_sub(1));
        }
        view
    }

    /// Leaves the group: the revoke callback runs (storing and committing), and the group
    /// rebalances the partitions to the other members at once instead of after the session
    /// timeout.
    pub fn leave(&self, timeout: Duration) {
        self.inner.unsubscribe();
        let deadline = std::time::Instant::now() + timeout;
        // Serve the revoke callback the unsubscribe queued.
        while std::time::Instant::now() < deadline {
            let assigned = self.inner.assignment().map(|l| l.count()).unwrap_or(0);
            if assigned == 0 {
                break;
            }
            let _ = self.inner.poll(Duration::from_millis(50));
        }
    }
}

/// How often [`AssignmentMonitor::check`] looks.
const ASSIGNMENT_CHECK_EVERY: Duration = Duration::from_secs(5);

/// Looks at a member's assignment every few seconds from its polling loop: publishes the
/// partitions it holds per topic and whether it is stalled, and says (once, as a warning) when
/// the group has left it short of partitions for longer than `kafka.assignment_timeout_ms`,
/// and when that ends.
pub struct AssignmentMonitor {
    watch: crate::AssignmentWatch,
    started: std::time::Instant,
    next: std::time::Instant,
    assigned: prometheus::GaugeVec,
    stalled: prometheus::Gauge,
}

impl AssignmentMonitor {
    /// A monitor reporting stalls longer than `timeout_ms` (0: never) into `assigned` (a gauge
    /// labelled by `topic`) and `stalled` (1 while stalled).
    pub fn new(
        timeout_ms: u64,
        assigned: prometheus::GaugeVec,
        stalled: prometheus::Gauge,
    ) -> AssignmentMonitor {
        let now = std::time::Instant::now();
        AssignmentMonitor {
            watch: crate::AssignmentWatch::new(timeout_ms),
            started: now,
            next: now,
            assigned,
            stalled,
        }
    }

    /// Looks if it is time: `Some(stalled)`, or `None` when it did not look. Asking the
    /// broker waits up to 2 s.
    pub fn check<E: GroupEvents>(&mut self, consumer: &GroupConsumer<E>) -> Option<bool> {
        let now = std::time::Instant::now();
        if now < self.next {
            return None;
        }
        self.next = now + ASSIGNMENT_CHECK_EVERY;
        let view = consumer.assignment_view(Duration::from_secs(2));
        let at_ms = i64::try_from(now.duration_since(self.started).as_millis()).unwrap_or(i64::MAX);
        match self.watch.observe(at_ms, view) {
            Some(crate::AssignmentChange::Stalled { for_ms, view }) => tracing::warn!(
                group = consumer.group_id,
                for_ms,
                assigned = view.assigned,
                partitions = ?view.total,
                other_members = ?view.others,
                "the consumer group gives this process no partitions, or fewer than its topics have with no other member to read them: those partitions are not read; check the group on the broker (a member killed while joining can wedge it)"
            ),
            Some(crate::AssignmentChange::Recovered { after_ms }) => tracing::info!(
                group = consumer.group_id,
                after_ms,
                assigned = view.assigned,
                "the consumer group gives this process its partitions again"
            ),
            None => {}
        }
        for (topic, n) in consumer.assigned_per_topic() {
            self.assigned.with_label_values(&[&topic]).set(n as f64);
        }
        let stalled = self.watch.stalled();
        self.stalled.set(if stalled { 1.0 } else { 0.0 });
        Some(stalled)
    }
}
