//! Batches: decoded rows of consecutive messages, with the message boundaries (a message's
//! events are stored all together or not at all) and the next offset of every partition they
//! cover. Pure: no I/O.

use cityops_clickhouse::{RejectRow, RowSource, encode_event};
use cityops_event::Event;
use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Instant;

/// A partition of a source: Kafka topic and partition; MQTT's spool is one partition (topic
/// `""`, partition = the spool's id) whatever topics its messages came on.
pub type PartitionKey = (String, i32);

/// Rows of one message inside [`Batch::events`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRows {
    /// Its RowBinary bytes in `events`.
    pub bytes: Range<usize>,
    /// How many rows they hold.
    pub rows: u32,
    /// Index of its feed in the config (for per-feed metrics).
    pub feed: u16,
}

/// Decoded rows ready for ClickHouse.
#[derive(Debug)]
pub struct Batch {
    /// Sequence number, increasing per pipeline.
    pub seq: u64,
    /// Rebalance generation it was read in; batches of an older generation are abandoned.
    pub generation: u64,
    /// `events` rows in RowBinary, message after message in source order.
    pub events: bytes::Bytes,
    /// How many rows `events` holds.
    pub event_rows: usize,
    /// Rows of each message that produced events, in order.
    pub messages: Vec<MessageRows>,
    /// Rejects of messages that could not be decoded, in source order.
    pub rejects: Vec<RejectRow>,
    /// Per partition, the offset after the last message of this batch (what to commit).
    pub next_offsets: Vec<(PartitionKey, i64)>,
    /// Memory of the rows (RowBinary bytes, reject rows estimated).
    pub bytes: usize,
    /// Messages read into this batch (stored or skipped as already stored).
    pub message_count: u64,
}

impl Batch {
    /// Whether it holds no rows to write (it may still carry offsets to commit).
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.rejects.is_empty()
    }
}

/// When a batch is full.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Event rows.
    pub max_rows: usize,
    /// Estimated bytes.
    pub max_bytes: usize,
    /// Age of the first message.
    pub linger: std::time::Duration,
}

/// Collects rows until a limit is reached.
#[derive(Debug)]
pub struct BatchBuilder {
    limits: Limits,
    next_seq: u64,
    current: Batch,
    /// The RowBinary of `current` while it is built.
    events: Vec<u8>,
    started: Option<Instant>,
    /// Whether partitions are told apart by topic too (Kafka) or by number only (the spool).
    per_topic: bool,
}

/// Heap cost of one allocation beyond its bytes: allocator header and rounding.
const ALLOCATION_OVERHEAD: usize = 16;

fn string_bytes(s: &str) -> usize {
    if s.is_empty() {
        0
    } else {
        s.len() + ALLOCATION_OVERHEAD
    }
}

/// Estimated memory of a reject row.
pub fn reject_row_bytes(row: &RejectRow) -> usize {
    std::mem::size_of::<RejectRow>()
        + string_bytes(&row.feed)
        + string_bytes(&row.reason)
        + string_bytes(&row.message)
        + row.raw.len()
        + ALLOCATION_OVERHEAD
        + string_bytes(&row.source_kind)
        + string_bytes(&row.source_topic)
}

impl BatchBuilder {
    /// An empty builder whose partitions are (topic, partition), as in Kafka.
    pub fn new(limits: Limits) -> Self {
        BatchBuilder {
            limits,
            next_seq: 1,
            current: empty(0, 0),
            events: Vec::new(),
            started: None,
            per_topic: true,
        }
    }

    /// An empty builder whose partitions are numbers only (topic `""`): the MQTT spool, whose
    /// messages come on many topics but are numbered by one sequence.
    pub fn by_partition(limits: Limits) -> Self {
        BatchBuilder {
            per_topic: false,
            ..BatchBuilder::new(limits)
        }
    }

    fn touch(&mut self, topic: &str, partition: i32, offset: i64) {
        let topic = if self.per_topic { topic } else { "" };
        if self.started.is_none() {
            self.started = Some(Instant::now());
        }
        self.current.message_count += 1;
        // A batch covers few partitions: a scan, and no key built per message.
        let found = self
            .current
            .next_offsets
            .iter_mut()
            .find(|((t, p), _)| *p == partition && t == topic);
        match found {
            Some((_, next)) => *next = (*next).max(offset + 1),
            None => self
                .current
                .next_offsets
                .push(((topic.to_owned(), partition), offset + 1)),
        }
    }

    /// Adds the events of the message at `offset` of `key`, decoded by feed number `feed`.
    pub fn add_events(&mut self, feed: u16, events: &[Event], source: &RowSource<'_>) {
        self.touch(source.topic, source.partition, source.offset);
        if events.is_empty() {
            return;
        }
        let start = self.events.len();
        for event in events {
            encode_event(&mut self.events, event, source);
        }
        self.current.bytes += self.events.len() - start;
        self.current.event_rows += events.len();
        self.current.messages.push(MessageRows {
            bytes: start..self.events.len(),
            rows: u32::try_from(events.len()).unwrap_or(u32::MAX),
            feed,
        });
    }

    /// Adds the reject of a message (its source coordinates are in the row).
    pub fn add_reject(&mut self, row: RejectRow) {
        self.touch(&row.source_topic, row.source_partition, row.source_offset);
        self.current.bytes += reject_row_bytes(&row);
        self.current.rejects.push(row);
    }

    /// Records a message that is skipped (already stored) so that its offset is committed.
    pub fn add_skipped(&mut self, topic: &str, partition: i32, offset: i64) {
        self.touch(topic, partition, offset);
    }

    /// Whether the batch reached its row or byte limit.
    pub fn full(&self) -> bool {
        self.current.event_rows + self.current.rejects.len() >= self.limits.max_rows
            || self.current.bytes >= self.limits.max_bytes
    }

    /// Whether the first message waited `linger` or more.
    pub fn due(&self, now: Instant) -> bool {
        self.started
            .is_some_and(|s| now.duration_since(s) >= self.limits.linger)
    }

    /// Time left until the batch is due; `None` when it is empty.
    pub fn until_due(&self, now: Instant) -> Option<std::time::Duration> {
        self.started
            .map(|s| self.limits.linger.saturating_sub(now.duration_since(s)))
    }

    /// Whether any message was added since the last [`BatchBuilder::take`].
    pub fn has_messages(&self) -> bool {
        self.current.message_count > 0
    }

    /// Estimated bytes of the batch being built.
    pub fn bytes(&self) -> usize {
        self.current.bytes
    }

    /// Hands over the current batch, tagged with `generation`, and starts a new one.
    pub fn take(&mut self, generation: u64) -> Batch {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.started = None;
        let capacity = self.events.capacity();
        let events = std::mem::replace(&mut self.events, Vec::with_capacity(capacity));
        let mut batch = std::mem::replace(&mut self.current, empty(0, 0));
        batch.events = events.into();
        batch.seq = seq;
        batch.generation = generation;
        batch
    }

    /// Drops what was collected (its messages will be read again by the next owner).
    pub fn discard(&mut self) {
        self.current = empty(0, 0);
        self.events.clear();
        self.started = None;
    }
}

fn empty(seq: u64, generation: u64) -> Batch {
    Batch {
        seq,
        generation,
        events: bytes::Bytes::new(),
        event_rows: 0,
        messages: Vec::new(),
        rejects: Vec::new(),
        next_offsets: Vec::new(),
        bytes: 0,
        message_count: 0,
    }
}

/// What is already stored per partition, read from ClickHouse when partitions are assigned:
/// a message read again is skipped if its rows are there.
#[derive(Debug, Default, Clone)]
pub struct ReplayFilter {
    stored: BTreeMap<PartitionKey, Stored>,
}

/// Highest stored offsets of one partition; -1 when none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// Highest offset with rows in `events`.
    pub events: i64,
    /// Highest offset with a decode reject in `rejects`.
    pub rejects: i64,
}

impl ReplayFilter {
    /// A filter from the offsets read back from ClickHouse.
    pub fn new(
        events: &BTreeMap<PartitionKey, i64>,
        rejects: &BTreeMap<PartitionKey, i64>,
    ) -> Self {
        let stored = events
            .keys()
            .chain(rejects.keys())
            .map(|key| {
                let highest = |table: &BTreeMap<PartitionKey, i64>| *table.get(key).unwrap_or(&-1);
                let offsets = Stored {
                    events: highest(events),
                    rejects: highest(rejects),
                };
                (key.clone(), offsets)
            })
            .collect();
        ReplayFilter { stored }
    }

    /// Whether the events of the message at `offset` are already stored.
    pub fn events_stored(&self, topic: &str, partition: i32, offset: i64) -> bool {
        self.get(topic, partition)
            .is_some_and(|s| offset <= s.events)
    }

    /// Whether the decode reject of the message at `offset` is already stored.
    pub fn reject_stored(&self, topic: &str, partition: i32, offset: i64) -> bool {
        self.get(topic, partition)
            .is_some_and(|s| offset <= s.rejects)
    }

    fn get(&self, topic: &str, partition: i32) -> Option<&Stored> {
        // Few partitions per process: a scan beats building a key String per message.
        self.stored
            .iter()
            .find(|((t, p), _)| *p == partition && t == topic)
            .map(|(_, s)| s)
    }

    /// Partitions it knows about.
    pub fn len(&self) -> usize {
        self.stored.len()
    }

    /// Whether it knows no partition.
    pub fn is_empty(&self) -> bool {
        self.stored.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn event(i: u32) -> Event {
        Event {
            ts: cityops_event::Timestamp::from_millis(1_764_000_000_000).unwrap(),
            ingested_at: cityops_event::Timestamp::from_millis(1_764_000_000_000).unwrap(),
            feed: "f".into(),
            entity_id: format!("e{i}"),
            entity_type: "t".into(),
            metric: "m".into(),
            value: Some(1.0),
            ..Event::default()
        }
    }

    fn add(b: &mut BatchBuilder, key: &PartitionKey, offset: i64, n: u32) {
        let source = RowSource {
            kind: "kafka",
            topic: &key.0,
            partition: key.1,
            offset,
        };
        let events: Vec<Event> = (0..n).map(event).collect();
        b.add_events(0, &events, &source);
    }

    fn limits(max_rows: usize) -> Limits {
        Limits {
            max_rows,
            max_bytes: 1 << 30,
            linger: Duration::from_secs(3600),
        }
    }

    #[test]
    fn keeps_message_boundaries_and_the_next_offset_per_partition() {
        let mut b = BatchBuilder::new(limits(10));
        let p0 = ("t".to_owned(), 0);
        let p1 = ("t".to_owned(), 1);
        add(&mut b, &p0, 5, 3);
        b.add_skipped(&p1.0, p1.1, 9);
        add(&mut b, &p0, 6, 1);
        assert!(!b.full());
        let batch = b.take(3);
        assert_eq!(batch.seq, 1);
        assert_eq!(batch.generation, 3);
        assert_eq!(batch.event_rows, 4);
        assert_eq!(batch.messages.len(), 2);
        assert_eq!(batch.messages[0].rows, 3);
        assert_eq!(batch.messages[1].bytes.end, batch.events.len());
        let rows = cityops_clickhouse::decode_events(&batch.events).unwrap();
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[3].source_offset, 6);
        let first =
            cityops_clickhouse::decode_events(&batch.events[batch.messages[0].bytes.clone()])
                .unwrap();
        assert_eq!(first.len(), 3);
        assert_eq!(batch.next_offsets, vec![(p0, 7), (p1, 10)]);
        assert_eq!(batch.message_count, 3);
        assert!(!b.has_messages());
        assert_eq!(b.take(3).seq, 2);
    }

    #[test]
    fn is_full_by_rows_or_bytes_and_due_by_age() {
        let mut b = BatchBuilder::new(limits(2));
        let p = ("t".to_owned(), 0);
        assert!(b.until_due(Instant::now()).is_none());
        add(&mut b, &p, 0, 1);
        assert!(!b.full());
        add(&mut b, &p, 1, 1);
        assert!(b.full());
        let mut small = BatchBuilder::new(Limits {
            max_rows: 100,
            max_bytes: 10,
            linger: Duration::ZERO,
        });
        add(&mut small, &p, 0, 1);
        assert!(small.full());
        assert!(small.due(Instant::now()));
    }

    #[test]
    fn replay_filter_skips_only_what_each_table_holds() {
        let key = ("t".to_owned(), 2);
        let events = BTreeMap::from([(key.clone(), 100)]);
        let rejects = BTreeMap::from([(key, 40)]);
        let f = ReplayFilter::new(&events, &rejects);
        assert!(f.events_stored("t", 2, 100));
        assert!(!f.events_stored("t", 2, 101));
        assert!(f.reject_stored("t", 2, 40));
        assert!(!f.reject_stored("t", 2, 41));
        assert!(!f.events_stored("t", 3, 0));
        assert!(!f.events_stored("u", 2, 0));
    }
}
