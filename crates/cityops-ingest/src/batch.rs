//! Batches: decoded rows of consecutive messages, grouped by the daily partition they go to,
//! with the message boundaries and the next offset of every partition they cover. Pure: no I/O.

use cityops_clickhouse::{DayOffsets, RejectRow, RowSource, encode_event, partition_day};
use cityops_event::{Event, Timestamp};
use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Instant;

/// A partition of a source: Kafka topic and partition; MQTT's spool is one partition (topic
/// `""`, partition = the spool's id) whatever topics its messages came on.
pub type PartitionKey = (String, i32);

/// The daily partition (days since 1970-01-01, UTC) a row whose time is `ts` goes to.
pub fn day_of(ts: Timestamp) -> u32 {
    partition_day(ts.unix_seconds())
}

/// Rows of one message inside [`Batch::events`] (of one day: a message whose events fall on
/// two days has one `MessageRows` in each).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRows {
    /// Its RowBinary bytes in `events`.
    pub bytes: Range<usize>,
    /// How many rows they hold.
    pub rows: u32,
    /// Index of its feed in the config (for per-feed metrics).
    pub feed: u16,
}

/// Decoded rows ready for ClickHouse. Rows are grouped by daily partition so that each INSERT
/// writes one partition: ClickHouse commits an INSERT's part of each partition on its own, so
/// a server killed mid-INSERT may keep one day's rows and lose another's. With one day per
/// INSERT, "every message up to the highest stored offset is stored" holds per table and day.
#[derive(Debug)]
pub struct Batch {
    /// Sequence number, increasing per pipeline.
    pub seq: u64,
    /// Rebalance generation it was read in; batches of an older generation are abandoned.
    pub generation: u64,
    /// `events` rows in RowBinary: day after day, message after message in source order.
    pub events: bytes::Bytes,
    /// How many rows `events` holds.
    pub event_rows: usize,
    /// Rows of each message that produced events, in order within each day.
    pub messages: Vec<MessageRows>,
    /// The ranges of `messages` whose rows go to one day, days in increasing order.
    pub event_days: Vec<Range<usize>>,
    /// Rejects of messages that could not be decoded: grouped by the day of their arrival,
    /// in source order within each day.
    pub rejects: Vec<RejectRow>,
    /// The ranges of `rejects` that go to one day, days in increasing order.
    pub reject_days: Vec<Range<usize>>,
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

/// The rows of one day while a batch is built.
#[derive(Debug, Default)]
struct DayRows {
    day: u32,
    /// RowBinary.
    bytes: Vec<u8>,
    /// Byte ranges within `bytes`.
    messages: Vec<MessageRows>,
}

/// Collects rows until a limit is reached.
#[derive(Debug)]
pub struct BatchBuilder {
    limits: Limits,
    next_seq: u64,
    current: Batch,
    /// The RowBinary of `current` by day while it is built (nearly always one day).
    days: Vec<DayRows>,
    /// The largest RowBinary of a batch so far: new buffers start at that capacity.
    capacity: usize,
    /// Scratch of [`BatchBuilder::add_events`]: (day buffer, start, rows) per day touched.
    touched: Vec<(usize, usize, u32)>,
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
            days: Vec::new(),
            capacity: 0,
            touched: Vec::new(),
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
        // (day buffer, where this message's rows start in it, how many) per day it touches;
        // kept between messages so that the hot path allocates nothing.
        let mut touched = std::mem::take(&mut self.touched);
        touched.clear();
        let mut added = 0;
        for event in events {
            let day = day_of(event.ts);
            let i = match self.days.iter().position(|d| d.day == day) {
                Some(i) => i,
                None => {
                    self.days.push(DayRows {
                        day,
                        bytes: Vec::with_capacity(if self.days.is_empty() {
                            self.capacity
                        } else {
                            0
                        }),
                        messages: Vec::new(),
                    });
                    self.days.len() - 1
                }
            };
            let buffer = &mut self.days[i].bytes;
            let before = buffer.len();
            encode_event(buffer, event, source);
            added += buffer.len() - before;
            match touched.iter_mut().find(|(d, _, _)| *d == i) {
                Some((_, _, rows)) => *rows += 1,
                None => touched.push((i, before, 1)),
            }
        }
        self.current.bytes += added;
        self.current.event_rows += events.len();
        for &(i, start, rows) in &touched {
            let day = &mut self.days[i];
            let end = day.bytes.len();
            day.messages.push(MessageRows {
                bytes: start..end,
                rows,
                feed,
            });
        }
        self.touched = touched;
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
        let mut batch = std::mem::replace(&mut self.current, empty(0, 0));
        let mut days = std::mem::take(&mut self.days);
        days.sort_by_key(|d| d.day);
        let mut events = match days.len() {
            // Nearly every batch: its one buffer as it is.
            1 => std::mem::take(&mut days[0].bytes),
            _ => Vec::with_capacity(days.iter().map(|d| d.bytes.len()).sum()),
        };
        let single = days.len() == 1;
        for day in days {
            let offset = if single { 0 } else { events.len() };
            let first = batch.messages.len();
            if !single {
                events.extend_from_slice(&day.bytes);
            }
            batch
                .messages
                .extend(day.messages.into_iter().map(|m| MessageRows {
                    bytes: m.bytes.start + offset..m.bytes.end + offset,
                    ..m
                }));
            batch.event_days.push(first..batch.messages.len());
        }
        self.capacity = self.capacity.max(events.len());
        batch.events = events.into();
        // A stable sort: source order within each day.
        batch.rejects.sort_by_key(|r| partition_day(r.received_at));
        let mut start = 0;
        while start < batch.rejects.len() {
            let day = partition_day(batch.rejects[start].received_at);
            let end = start
                + batch.rejects[start..]
                    .iter()
                    .take_while(|r| partition_day(r.received_at) == day)
                    .count();
            batch.reject_days.push(start..end);
            start = end;
        }
        batch.seq = seq;
        batch.generation = generation;
        batch
    }

    /// Drops what was collected (its messages will be read again by the next owner).
    pub fn discard(&mut self) {
        self.current = empty(0, 0);
        self.days.clear();
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
        event_days: Vec::new(),
        rejects: Vec::new(),
        reject_days: Vec::new(),
        next_offsets: Vec::new(),
        bytes: 0,
        message_count: 0,
    }
}

/// What is already stored per partition and day, read from ClickHouse when partitions are
/// assigned: a row read again is skipped if the day it goes to holds its message or a later one.
#[derive(Debug, Default, Clone)]
pub struct ReplayFilter {
    stored: BTreeMap<PartitionKey, Stored>,
}

/// Highest stored offsets of one partition, per daily partition of each table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stored {
    /// Highest offset with rows in `events`, per day.
    pub events: DayOffsets,
    /// Highest offset with a decode reject in `rejects`, per day.
    pub rejects: DayOffsets,
    /// The highest of `events` over all days (-1 when none).
    pub events_highest: i64,
}

impl ReplayFilter {
    /// A filter from the offsets read back from ClickHouse.
    pub fn new(
        events: &BTreeMap<PartitionKey, DayOffsets>,
        rejects: &BTreeMap<PartitionKey, DayOffsets>,
    ) -> Self {
        let stored = events
            .keys()
            .chain(rejects.keys())
            .map(|key| {
                let events = events.get(key).cloned().unwrap_or_default();
                let offsets = Stored {
                    events_highest: events.values().copied().max().unwrap_or(-1),
                    events,
                    rejects: rejects.get(key).cloned().unwrap_or_default(),
                };
                (key.clone(), offsets)
            })
            .collect();
        ReplayFilter { stored }
    }

    /// Whether `events` may hold rows of the message at `offset` on some day: false lets a
    /// message skip the look-up per row (a message past every day's highest stored offset).
    pub fn events_may_hold(&self, topic: &str, partition: i32, offset: i64) -> bool {
        self.get(topic, partition)
            .is_some_and(|s| offset <= s.events_highest)
    }

    /// Whether the rows of the message at `offset` that go to `day` of `events` are stored.
    pub fn events_stored(&self, topic: &str, partition: i32, offset: i64, day: u32) -> bool {
        self.get(topic, partition)
            .is_some_and(|s| s.events.get(&day).is_some_and(|&o| offset <= o))
    }

    /// Whether the decode reject of the message at `offset`, going to `day`, is stored.
    pub fn reject_stored(&self, topic: &str, partition: i32, offset: i64, day: u32) -> bool {
        self.get(topic, partition)
            .is_some_and(|s| s.rejects.get(&day).is_some_and(|&o| offset <= o))
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
    fn replay_filter_skips_only_what_each_table_and_day_holds() {
        let key = ("t".to_owned(), 2);
        // Day 7's part of the last INSERT was lost, day 8's stored.
        let events = BTreeMap::from([(key.clone(), DayOffsets::from([(7, 60), (8, 100)]))]);
        let rejects = BTreeMap::from([(key, DayOffsets::from([(8, 40)]))]);
        let f = ReplayFilter::new(&events, &rejects);
        assert!(f.events_stored("t", 2, 100, 8));
        assert!(!f.events_stored("t", 2, 101, 8));
        assert!(f.events_stored("t", 2, 60, 7));
        assert!(!f.events_stored("t", 2, 61, 7));
        assert!(!f.events_stored("t", 2, 0, 9));
        assert!(f.events_may_hold("t", 2, 100));
        assert!(!f.events_may_hold("t", 2, 101));
        assert!(f.reject_stored("t", 2, 40, 8));
        assert!(!f.reject_stored("t", 2, 41, 8));
        assert!(!f.reject_stored("t", 2, 1, 7));
        assert!(!f.events_stored("t", 3, 0, 8));
        assert!(!f.events_stored("u", 2, 0, 8));
    }

    #[test]
    fn rows_are_grouped_by_day_with_message_boundaries_in_each() {
        let mut b = BatchBuilder::new(limits(100));
        let p = ("t".to_owned(), 0);
        let day = 86_400_000;
        let at = |ms: i64, i: u32| Event {
            ts: cityops_event::Timestamp::from_millis(ms).unwrap(),
            ..event(i)
        };
        let source = |offset| RowSource {
            kind: "kafka",
            topic: "t",
            partition: 0,
            offset,
        };
        // Day 20001, then a message over midnight, then day 20000 again.
        b.add_events(0, &[at(20_001 * day + 5, 0)], &source(1));
        b.add_events(
            1,
            &[
                at(20_001 * day - 1, 1),
                at(20_001 * day, 2),
                at(20_001 * day - 2, 3),
            ],
            &source(2),
        );
        b.add_events(0, &[at(20_000 * day + 9, 4)], &source(3));
        let mut late = RejectRow {
            reject_id: uuid::Uuid::nil(),
            received_at: 20_001 * 86_400 + 1,
            received_ms: 0,
            feed: "f".into(),
            reason: "invalid_json".into(),
            message: String::new(),
            raw: Vec::new(),
            raw_len: 0,
            raw_truncated: 0,
            source_kind: "kafka".into(),
            source_topic: "t".into(),
            source_partition: 0,
            source_offset: 4,
        };
        b.add_reject(late.clone());
        late.received_at = 20_000 * 86_400 + 1;
        late.source_offset = 5;
        b.add_reject(late);
        let batch = b.take(1);
        assert_eq!(batch.event_rows, 5);
        assert_eq!(batch.event_days, vec![0..2, 2..4]);
        let offsets = |range: std::ops::Range<usize>| -> Vec<(i64, u32)> {
            batch.messages[range]
                .iter()
                .flat_map(|m| {
                    cityops_clickhouse::decode_events(&batch.events[m.bytes.clone()]).unwrap()
                })
                .map(|r| (r.source_offset, r.ts / 86_400))
                .collect()
        };
        assert_eq!(offsets(0..2), vec![(2, 20_000), (2, 20_000), (3, 20_000)]);
        assert_eq!(offsets(2..4), vec![(1, 20_001), (2, 20_001)]);
        assert_eq!(batch.messages[0].rows, 2);
        assert_eq!(batch.messages[0].feed, 1);
        assert_eq!(batch.reject_days, vec![0..1, 1..2]);
        assert_eq!(batch.rejects[0].source_offset, 5);
        assert_eq!(batch.next_offsets, vec![(p, 6)]);
    }
}
