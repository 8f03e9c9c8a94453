//! Stores batches in ClickHouse: one INSERT at a time and in source order (what makes "highest
//! stored offset" meaningful), retried with backoff while the server is down, split message by
//! message when the server refuses rows, and checked before every retry so that an INSERT that
//! did land is never written twice.

use crate::IngestMetrics;
use crate::batch::Batch;
use cityops_clickhouse::{
    ClickHouse, FailureClass, INGEST_QUERY_ID_PREFIX, REFUSED_REASON, RejectRow, classify,
    decode_events,
};
use cityops_event::{EventId, SourceCoordinates};
use cityops_runtime::Backoff;
use cityops_telemetry::ReadinessHandle;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How the writer behaves.
#[derive(Debug, Clone)]
pub struct WriterSettings {
    /// Timeout of one INSERT.
    pub insert_timeout: Duration,
    /// First retry delay.
    pub retry_initial: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// Raw bytes kept in a reject row.
    pub max_raw_bytes: usize,
    /// `kafka` or `mqtt`.
    pub source_kind: &'static str,
    /// Feed names by their number in the config ([`crate::MessageRows::feed`]).
    pub feed_names: Vec<String>,
}

/// Whether a batch was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Every row is in ClickHouse (or in `rejects` if refused).
    Stored,
    /// The batch's generation was superseded (rebalance or shutdown deadline) before it was
    /// stored; its messages will be read again and the stored part recognised.
    Abandoned,
}

/// Rows of one table, for one INSERT.
#[derive(Clone)]
enum Rows<'a> {
    /// The rows of messages `range` of the batch.
    Events {
        batch: &'a Batch,
        range: Range<usize>,
    },
    Rejects(&'a [RejectRow]),
}

impl Rows<'_> {
    fn table(&self) -> &'static str {
        match self {
            Rows::Events { .. } => "events",
            Rows::Rejects(_) => "rejects",
        }
    }

    fn len(&self) -> usize {
        match self {
            Rows::Events { batch, range } => batch.messages[range.clone()]
                .iter()
                .map(|m| m.rows as usize)
                .sum(),
            Rows::Rejects(r) => r.len(),
        }
    }
}

enum Attempt {
    Stored,
    Refused(String),
}

/// The single writer of a pipeline. `gate` is held for every INSERT, so a partition
/// assignment can take it to be sure no INSERT of this process is running.
pub struct Writer {
    clickhouse: ClickHouse,
    settings: WriterSettings,
    metrics: IngestMetrics,
    ready: ReadinessHandle,
    generation: Arc<AtomicU64>,
    gate: Arc<tokio::sync::Mutex<()>>,
    backoff: Backoff,
    failing_since: Option<Instant>,
    /// Makes query ids unique across processes and restarts.
    session: String,
    inserts: u64,
}

impl Writer {
    /// A writer; batches older than `generation` are abandoned.
    pub fn new(
        clickhouse: ClickHouse,
        settings: WriterSettings,
        metrics: IngestMetrics,
        ready: ReadinessHandle,
        generation: Arc<AtomicU64>,
        gate: Arc<tokio::sync::Mutex<()>>,
    ) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id());
        let backoff = Backoff::new(settings.retry_initial, settings.retry_max, seed);
        Writer {
            clickhouse,
            settings,
            metrics,
            ready,
            generation,
            gate,
            backoff,
            failing_since: None,
            session: format!("{}-{seed:x}", std::process::id()),
            inserts: 0,
        }
    }

    /// Checks that ClickHouse answers and reports readiness; used while idle.
    pub async fn check_health(&mut self) {
        let up = self.clickhouse.ping().await;
        self.ready.set_ready(up);
    }

    fn abandoned(&self, batch: &Batch) -> bool {
        batch.generation < self.generation.load(Ordering::SeqCst)
    }

    /// Stores `batch`: events (isolating refused messages), then decode rejects; one INSERT
    /// per table and day (see [`Batch`]).
    pub async fn write(&mut self, batch: &Batch) -> Written {
        if self.store_events(batch).await.is_err() {
            return Written::Abandoned;
        }
        for day in &batch.reject_days {
            let rejects = Rows::Rejects(&batch.rejects[day.clone()]);
            if self.insert(batch, rejects, true).await.is_err() {
                return Written::Abandoned;
            }
        }
        Written::Stored
    }

    async fn store_events(&mut self, batch: &Batch) -> Result<(), Abandon> {
        // A stack of message ranges, left half on top: rows reach each day's partition in
        // source order, and no range spans two days.
        let mut work: Vec<Range<usize>> = Vec::with_capacity(16);
        work.extend(batch.event_days.iter().rev().cloned());
        while let Some(range) = work.pop() {
            if range.is_empty() {
                continue;
            }
            let rows = Rows::Events {
                batch,
                range: range.clone(),
            };
            match self.insert(batch, rows, false).await? {
                Attempt::Stored => {}
                Attempt::Refused(error) if range.len() == 1 => {
                    self.store_refused(batch, range.start, &error).await?;
                }
                Attempt::Refused(_) => {
                    let mid = range.start + range.len() / 2;
                    work.push(mid..range.end);
                    work.push(range.start..mid);
                }
            }
        }
        Ok(())
    }

    /// Writes the rows of one message the server refused to `rejects`, as JSON, with the
    /// server's error. Checked first: after a crash, the same message is refused again.
    async fn store_refused(
        &mut self,
        batch: &Batch,
        message: usize,
        error: &str,
    ) -> Result<(), Abandon> {
        let rows = match decode_events(&batch.events[batch.messages[message].bytes.clone()]) {
            Ok(rows) => rows,
            Err(problem) => {
                // Our own encoding: cannot happen short of a bug; keep the batch rather than drop.
                tracing::error!(problem, "cannot read back a refused message's rows");
                Vec::new()
            }
        };
        let Some(first) = rows.first() else {
            return Ok(());
        };
        let raw = serde_json::to_vec(&rows).unwrap_or_default();
        let raw_len = raw.len();
        let mut kept = raw;
        kept.truncate(self.settings.max_raw_bytes);
        let coordinates = SourceCoordinates::Kafka {
            topic: first.source_topic.clone(),
            partition: first.source_partition,
            offset: first.source_offset,
        };
        // A message whose events fall on two days is written as two parts, each refused on
        // its own: the day tells their rejects apart.
        let day_start_ms = i64::from(first.ts / 86_400) * 86_400_000;
        let reject = RejectRow {
            reject_id: EventId {
                feed: &first.feed,
                coordinates: Some(&coordinates),
                entity_id: "",
                metric: REFUSED_REASON,
                ts_millis: day_start_ms,
                index: REFUSED_INDEX,
            }
            .derive(),
            received_at: first.ingested_at,
            received_ms: 0,
            feed: first.feed.clone(),
            reason: REFUSED_REASON.to_owned(),
            message: format!(
                "ClickHouse refused the {} row(s) of this message: {}",
                rows.len(),
                error.chars().take(2000).collect::<String>()
            ),
            raw_truncated: u8::from(kept.len() < raw_len),
            raw_len: u32::try_from(raw_len).unwrap_or(u32::MAX),
            raw: kept,
            source_kind: first.source_kind.clone(),
            source_topic: first.source_topic.clone(),
            source_partition: first.source_partition,
            source_offset: first.source_offset,
        };
        tracing::warn!(
            feed = first.feed,
            topic = first.source_topic,
            partition = first.source_partition,
            offset = first.source_offset,
            %error,
            "ClickHouse refused a message's rows; they go to rejects"
        );
        let already = loop {
            if self.abandoned(batch) {
                return Err(Abandon);
            }
            match self.clickhouse.reject_stored(&reject).await {
                Ok(found) => break found,
                Err(error) => {
                    tracing::warn!(%error, "cannot check for an earlier reject of a refused message; retrying");
                    self.pause().await;
                }
            }
        };
        if !already {
            self.insert(batch, Rows::Rejects(std::slice::from_ref(&reject)), true)
                .await?;
        }
        self.metrics
            .rejects
            .with_label_values(&[self.settings.source_kind, &first.feed, REFUSED_REASON])
            .inc();
        Ok(())
    }

    /// One INSERT, retried until stored, refused, or the batch is abandoned. Refusals of the
    /// rejects table are retried too: a reject is never dropped. After a failure whose outcome
    /// is unknown (a timeout, a broken connection) nothing is sent again until a look-up has
    /// said the failed INSERT did not land.
    async fn insert(
        &mut self,
        batch: &Batch,
        rows: Rows<'_>,
        retry_refusals: bool,
    ) -> Result<Attempt, Abandon> {
        let table = rows.table();
        let mut unresolved: Option<(String, Instant)> = None;
        loop {
            if let Some((query_id, started)) = unresolved.take() {
                match self.landed(&rows, &query_id).await {
                    Some(true) => {
                        self.stored(&rows, started.elapsed());
                        return Ok(Attempt::Stored);
                    }
                    Some(false) => {}
                    None => {
                        // Cannot tell yet (ClickHouse unreachable): ask again later.
                        if self.abandoned(batch) {
                            return Err(Abandon);
                        }
                        unresolved = Some((query_id, started));
                        self.pause().await;
                        continue;
                    }
                }
            }
            let guard = self.gate.clone().lock_owned().await;
            if self.abandoned(batch) {
                return Err(Abandon);
            }
            self.inserts += 1;
            let query_id = format!("{INGEST_QUERY_ID_PREFIX}{}-{}", self.session, self.inserts);
            let started = Instant::now();
            let result = match &rows {
                Rows::Events { batch, range } => {
                    let bytes = batch.messages[range.start].bytes.start
                        ..batch.messages[range.end - 1].bytes.end;
                    self.clickhouse
                        .insert_rowbinary(
                            "events",
                            batch.events.slice(bytes),
                            &query_id,
                            self.settings.insert_timeout,
                        )
                        .await
                }
                Rows::Rejects(r) => {
                    self.clickhouse
                        .insert_tagged("rejects", r, &query_id, self.settings.insert_timeout)
                        .await
                }
            };
            drop(guard);
            let error = match result {
                Ok(()) => {
                    self.stored(&rows, started.elapsed());
                    return Ok(Attempt::Stored);
                }
                Err(error) => error,
            };
            if classify(&error) == FailureClass::Refused && !retry_refusals {
                // The server answered with a refusal: nothing of this INSERT was stored.
                self.metrics
                    .insert_failures
                    .with_label_values(&[table, "split"])
                    .inc();
                return Ok(Attempt::Refused(error.to_string()));
            }
            self.metrics
                .insert_failures
                .with_label_values(&[table, "retry"])
                .inc();
            self.failing(table, rows.len(), &error);
            unresolved = Some((query_id, started));
            self.pause().await;
        }
    }

    async fn pause(&mut self) {
        tokio::time::sleep(self.backoff.next_delay()).await;
    }

    fn failing(&mut self, table: &str, rows: usize, error: &clickhouse_error::Error) {
        self.ready.set_ready(false);
        let attempts = self.backoff.attempts();
        let since = *self.failing_since.get_or_insert_with(Instant::now);
        // First failure, then about every tenth retry: a log line per problem, not per try.
        if attempts == 0 || attempts.is_multiple_of(10) {
            tracing::warn!(
                %error,
                table,
                rows,
                retries = attempts,
                failing_for_s = since.elapsed().as_secs(),
                "INSERT failed; retrying with backoff (consumption pauses when the in-flight bound is reached)"
            );
        }
    }

    fn stored(&mut self, rows: &Rows<'_>, took: Duration) {
        if let Some(since) = self.failing_since.take() {
            tracing::info!(
                down_for_s = since.elapsed().as_secs(),
                retries = self.backoff.attempts(),
                "ClickHouse accepts inserts again"
            );
        }
        self.backoff.reset();
        self.ready.set_ready(true);
        let table = rows.table();
        self.metrics
            .insert_duration
            .with_label_values(&[table])
            .observe(took.as_secs_f64());
        self.metrics
            .batch_rows
            .with_label_values(&[table])
            .observe(rows.len() as f64);
        let mut per_feed: Vec<(&str, u64)> = Vec::new();
        fn count<'a>(per_feed: &mut Vec<(&'a str, u64)>, feed: &'a str, n: u64) {
            // Few feeds: a scan beats a map.
            let feed = feed_label(feed);
            match per_feed.iter_mut().find(|(f, _)| *f == feed) {
                Some((_, total)) => *total += n,
                None => per_feed.push((feed, n)),
            }
        }
        match rows {
            Rows::Events { batch, range } => {
                for m in &batch.messages[range.clone()] {
                    let name = self
                        .settings
                        .feed_names
                        .get(usize::from(m.feed))
                        .map_or("", String::as_str);
                    count(&mut per_feed, name, u64::from(m.rows));
                }
            }
            Rows::Rejects(r) => r.iter().for_each(|row| count(&mut per_feed, &row.feed, 1)),
        }
        for (feed, n) in per_feed {
            self.metrics
                .rows_inserted
                .with_label_values(&[table, feed])
                .inc_by(n as f64);
        }
    }

    /// Whether the INSERT `query_id` of `rows` is stored; `None` when ClickHouse cannot tell
    /// now. First waits until the server can no longer run it: seen running and then gone, or
    /// not seen for [`LANDED_GRACE`] (a request the client gave up on may start late on a busy
    /// server). Then looks up its first row by the table's sort key: an INSERT below
    /// ClickHouse's block size into one daily partition is one part, stored whole or not at
    /// all (even when the server is killed), so one row answers for all.
    ///
    /// On a cluster the answer is always "send it again": an INSERT through a `Distributed`
    /// table may have stored some shards' rows and not others', so no single row answers for
    /// it, while the resend is the same bytes, split into the same blocks per shard, which a
    /// shard that stored them drops as duplicates (replicated block deduplication; a late
    /// start of the failed INSERT is dropped the same way).
    async fn landed(&self, rows: &Rows<'_>, query_id: &str) -> Option<bool> {
        if self.clickhouse.cluster().is_some() {
            return Some(false);
        }
        let waiting = Instant::now();
        let mut seen = false;
        let mut said = Instant::now();
        loop {
            let running = self.clickhouse.running_ingest_queries().await.ok()?;
            if running.iter().any(|q| q == query_id) {
                seen = true;
                if said.elapsed() >= Duration::from_secs(30) {
                    tracing::warn!(
                        query_id,
                        waiting_s = waiting.elapsed().as_secs(),
                        "a failed INSERT still runs on the server; waiting for it before retrying"
                    );
                    said = Instant::now();
                }
            } else if seen || waiting.elapsed() >= LANDED_GRACE {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let found = match rows {
            Rows::Events { batch, range } => {
                let first = batch
                    .messages
                    .get(range.start)
                    .and_then(|m| decode_events(&batch.events[m.bytes.clone()]).ok())
                    .and_then(|rows| rows.into_iter().next());
                match first {
                    Some(row) => self.clickhouse.event_stored(&row).await,
                    None => Ok(true),
                }
            }
            Rows::Rejects(r) => match r.first() {
                Some(row) => self.clickhouse.reject_stored(row).await,
                None => Ok(true),
            },
        };
        found.ok()
    }
}

/// How long a failed INSERT that the server has not started is waited for before it is taken
/// as never arriving.
pub const LANDED_GRACE: Duration = Duration::from_secs(3);

/// Event index used for the id of a decode reject (no event has it).
pub const DECODE_REJECT_INDEX: u32 = u32::MAX;
/// Event index used for the id of a refused message's reject.
pub const REFUSED_INDEX: u32 = u32::MAX - 1;

/// The batch's generation was superseded.
#[derive(Debug)]
struct Abandon;

/// The feed label of a row: the feed, or [`crate::metrics::NO_FEED`].
pub fn feed_label(feed: &str) -> &str {
    if feed.is_empty() {
        crate::metrics::NO_FEED
    } else {
        feed
    }
}

mod clickhouse_error {
    pub use cityops_clickhouse::ClickHouseError as Error;
}
