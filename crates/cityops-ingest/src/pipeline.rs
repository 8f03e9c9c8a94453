//! What every source shares between receiving a message and handing a batch to ClickHouse:
//! decoding into the batch being built (or skipping what is already stored), the per-feed
//! counters, and the writer task that stores batches one at a time and reports back.

use crate::batch::{Batch, BatchBuilder, Limits, PartitionKey, ReplayFilter, day_of};
use crate::writer::{DECODE_REJECT_INDEX, Writer, WriterSettings, Written, feed_label};
use crate::{Error, IngestMetrics};
use cityops_clickhouse::{ClickHouse, RowSource};
use cityops_config::{Config, SourceKind};
use cityops_event::{Event, EventId, SourceCoordinates, Timestamp};
use cityops_feeds::{FeedSet, Message, Outcome};
use cityops_telemetry::Readiness;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::mpsc;
use std::time::Duration;

/// What a finished run did.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    /// Messages consumed.
    pub messages: u64,
    /// Batches stored.
    pub batches: u64,
    /// Whether everything read was stored (and, for Kafka, committed) before exit.
    pub drained: bool,
}

/// A batch the writer finished.
pub(crate) struct Done {
    pub seq: u64,
    pub generation: u64,
    pub stored: bool,
    pub next_offsets: Vec<(PartitionKey, i64)>,
    pub bytes: usize,
    pub messages: u64,
}

/// A source's writer task and the ends of its channels.
pub(crate) struct WriterTask {
    /// Batches to store, in source order.
    pub to_writer: tokio::sync::mpsc::UnboundedSender<Batch>,
    /// What the writer finished.
    pub from_writer: mpsc::Receiver<Done>,
    /// Batches of an older generation are abandoned.
    pub generation: Arc<AtomicU64>,
    /// Held for every INSERT.
    pub gate: Arc<tokio::sync::Mutex<()>>,
    /// The task.
    pub task: tokio::task::JoinHandle<()>,
}

/// Starts the writer of source `source_kind` on `runtime` with the config's settings.
pub(crate) fn start_writer(
    config: &Config,
    clickhouse: ClickHouse,
    metrics: &IngestMetrics,
    readiness: &Readiness,
    runtime: &tokio::runtime::Handle,
    source_kind: &'static str,
) -> WriterTask {
    let settings = &config.ingest;
    let generation = Arc::new(AtomicU64::new(1));
    let gate = Arc::new(tokio::sync::Mutex::new(()));
    let (to_writer, batches) = tokio::sync::mpsc::unbounded_channel::<Batch>();
    let (done_tx, from_writer) = mpsc::channel::<Done>();
    let writer = Writer::new(
        clickhouse,
        WriterSettings {
            insert_timeout: Duration::from_millis(settings.insert_timeout_ms),
            retry_initial: Duration::from_millis(settings.retry_initial_ms),
            retry_max: Duration::from_millis(settings.retry_max_ms),
            max_raw_bytes: config.rejects.max_raw_bytes,
            source_kind,
            feed_names: config.feeds.iter().map(|f| f.name.clone()).collect(),
        },
        metrics.clone(),
        readiness.register("clickhouse"),
        Arc::clone(&generation),
        Arc::clone(&gate),
    );
    WriterTask {
        to_writer,
        from_writer,
        generation,
        gate,
        task: runtime.spawn(write_batches(writer, batches, done_tx)),
    }
}

/// The batch limits of the config.
pub(crate) fn limits(settings: &cityops_config::IngestConfig) -> Limits {
    Limits {
        max_rows: settings.batch_max_rows,
        max_bytes: settings.batch_max_bytes,
        linger: Duration::from_millis(settings.linger_ms),
    }
}

/// Runs `writer` on the batches from `batches` until the channel closes, reporting each on
/// `done`; checks ClickHouse's health while idle.
async fn write_batches(
    mut writer: Writer,
    mut batches: tokio::sync::mpsc::UnboundedReceiver<Batch>,
    done: mpsc::Sender<Done>,
) {
    writer.check_health().await;
    loop {
        let batch = match tokio::time::timeout(Duration::from_secs(5), batches.recv()).await {
            Ok(Some(batch)) => batch,
            Ok(None) => return,
            Err(_) => {
                writer.check_health().await;
                continue;
            }
        };
        let written = writer.write(&batch).await;
        let report = Done {
            seq: batch.seq,
            generation: batch.generation,
            stored: written == Written::Stored,
            messages: batch.message_count,
            bytes: batch.bytes,
            next_offsets: batch.next_offsets,
        };
        if done.send(report).is_err() {
            return;
        }
    }
}

/// The per-message counters of one feed, resolved once: a labelled lookup per message costs
/// more than the rest of the bookkeeping.
struct FeedCounters {
    messages: prometheus::Counter,
    payload_bytes: prometheus::Counter,
    events: prometheus::Counter,
    replayed: prometheus::Counter,
}

impl FeedCounters {
    fn new(metrics: &IngestMetrics, source: &str, feed: &str) -> Self {
        let labels = [source, feed];
        FeedCounters {
            messages: metrics.messages.with_label_values(&labels),
            payload_bytes: metrics.payload_bytes.with_label_values(&labels),
            events: metrics.events.with_label_values(&labels),
            replayed: metrics.replayed.with_label_values(&labels),
        }
    }
}

/// One received message with where it came from.
pub(crate) struct Received<'a> {
    /// Topic it arrived on.
    pub topic: &'a str,
    /// Payload.
    pub payload: &'a [u8],
    /// When it was first received (replays keep the time of the first receipt).
    pub received_at: Timestamp,
    /// Coordinates for event ids.
    pub coordinates: &'a SourceCoordinates,
    /// Partition number (Kafka partition, spool id) and offset (Kafka offset, spool sequence).
    pub partition: i32,
    /// See `partition`.
    pub offset: i64,
    /// The topic of its partition key: the topic (Kafka) or `""` (the spool).
    pub key_topic: &'a str,
}

/// Decodes messages of one source into batches.
pub(crate) struct Decoder {
    feeds: FeedSet,
    /// Feed names in config order: a message's feed is kept as its number.
    feed_names: Vec<String>,
    /// Counters by feed number, made on first use; the last is for messages of no feed.
    counters: Vec<Option<FeedCounters>>,
    source: SourceKind,
    label: &'static str,
}

impl Decoder {
    /// A decoder for the feeds of `source`; fails if the config has none.
    pub fn new(config: &Config, source: SourceKind) -> Result<Decoder, Error> {
        let label = match source {
            SourceKind::Kafka => "kafka",
            SourceKind::Mqtt => "mqtt",
        };
        if !config.feeds.iter().any(|f| f.source == source) {
            return Err(Error::NoFeeds(label));
        }
        let feeds = FeedSet::new(&config.feeds, config.rejects.max_raw_bytes)
            .map_err(Error::Feeds)?
            .with_label_names(&config.labels);
        Ok(Decoder {
            feeds,
            feed_names: config.feeds.iter().map(|f| f.name.clone()).collect(),
            counters: (0..=config.feeds.len()).map(|_| None).collect(),
            source,
            label,
        })
    }

    /// The feeds.
    pub fn feeds(&self) -> &FeedSet {
        &self.feeds
    }

    /// The number of a feed in the config; messages of no feed get the last number.
    fn feed_number(&self, feed: &str) -> u16 {
        let i = self
            .feed_names
            .iter()
            .position(|name| name == feed)
            .unwrap_or(self.feed_names.len());
        // Configs have far fewer than 65,535 feeds.
        u16::try_from(i).unwrap_or(u16::MAX)
    }

    /// The counters of feed number `feed` (messages of no feed share the last), made on first
    /// use.
    fn counters(&mut self, feed: u16, metrics: &IngestMetrics) -> &FeedCounters {
        let i = usize::from(feed).min(self.feed_names.len());
        let name = self
            .feed_names
            .get(i)
            .map_or(crate::NO_FEED, String::as_str);
        let label = self.label;
        self.counters[i].get_or_insert_with(|| FeedCounters::new(metrics, label, name))
    }

    /// Decodes one message into `builder`, or skips it if `filter` says it is stored. Calls
    /// `on_events` with the feed number and events of a message that decoded.
    pub fn add(
        &mut self,
        message: &Received<'_>,
        builder: &mut BatchBuilder,
        filter: &ReplayFilter,
        metrics: &IngestMetrics,
        on_events: impl FnOnce(u16, &[Event]),
    ) {
        let outcome = self.feeds.decode(&Message {
            source: self.source,
            topic: message.topic,
            payload: message.payload,
            received_at: message.received_at,
            coordinates: Some(message.coordinates),
        });
        let row_source = RowSource {
            kind: self.label,
            topic: message.topic,
            partition: message.partition,
            offset: message.offset,
        };
        let (key, partition, offset) = (message.key_topic, message.partition, message.offset);
        // Rows go to the daily partition of their time, and a server killed mid-INSERT may
        // have kept one day's rows of a message and not the other's: each day is checked.
        let (feed_name, stored_rows, rows) = match &outcome {
            Outcome::Events(events) => (
                events.first().map_or("", |e| e.feed.as_str()),
                if filter.events_may_hold(key, partition, offset) {
                    events
                        .iter()
                        .filter(|e| filter.events_stored(key, partition, offset, day_of(e.ts)))
                        .count()
                } else {
                    0
                },
                events.len(),
            ),
            Outcome::Reject(reject) => (
                reject.feed.as_deref().unwrap_or(""),
                usize::from(filter.reject_stored(
                    key,
                    partition,
                    offset,
                    day_of(message.received_at),
                )),
                1,
            ),
        };
        let feed = self.feed_number(feed_name);
        let label = self.label;
        let counters = self.counters(feed, metrics);
        counters.messages.inc();
        counters.payload_bytes.inc_by(message.payload.len() as f64);
        if stored_rows == rows && rows > 0 {
            counters.replayed.inc();
            builder.add_skipped(message.topic, partition, offset);
            return;
        }
        match outcome {
            Outcome::Events(events) if stored_rows > 0 => {
                // Only after a server crash mid-INSERT: the days that did not make it.
                let missing: Vec<Event> = events
                    .into_iter()
                    .filter(|e| !filter.events_stored(key, partition, offset, day_of(e.ts)))
                    .collect();
                counters.events.inc_by(missing.len() as f64);
                builder.add_events(feed, &missing, &row_source);
                on_events(feed, &missing);
            }
            Outcome::Events(events) => {
                counters.events.inc_by(events.len() as f64);
                builder.add_events(feed, &events, &row_source);
                on_events(feed, &events);
            }
            Outcome::Reject(reject) => {
                metrics
                    .rejects
                    .with_label_values(&[
                        label,
                        feed_label(reject.feed.as_deref().unwrap_or("")),
                        reject.reason.as_str(),
                    ])
                    .inc();
                let reject_id = EventId {
                    feed: reject.feed.as_deref().unwrap_or(""),
                    coordinates: Some(message.coordinates),
                    entity_id: "",
                    metric: reject.reason.as_str(),
                    ts_millis: 0,
                    index: DECODE_REJECT_INDEX,
                }
                .derive();
                builder.add_reject(crate::reject_row(
                    reject,
                    reject_id,
                    message.received_at,
                    &row_source,
                ));
            }
        }
    }
}

/// The wall clock as a [`Timestamp`].
pub(crate) fn now() -> Timestamp {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    Timestamp::from_millis(ms).unwrap_or(Timestamp::MIN)
}
