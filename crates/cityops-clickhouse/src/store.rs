//! What an ingest needs from ClickHouse beyond plain inserts: tagged inserts with a timeout,
//! classifying failures (retry, or the server refused these rows), finding inserts still
//! running, and reading back which source offsets are already stored.

use crate::{ClickHouse, Error, EventRow, RejectRow, TableColumns};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// Query ids of ingest inserts start with this, so that a new partition owner can wait for
/// inserts a previous owner left running.
pub const INGEST_QUERY_ID_PREFIX: &str = "cityops-ingest-";

/// Reason stored in `rejects` for rows ClickHouse refused.
pub const REFUSED_REASON: &str = "clickhouse_refused";

/// How an insert failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// The server is unreachable, overloaded, misconfigured or timed out: retry the same rows
    /// later. The rows may or may not have been stored.
    Retry,
    /// The server refused the data itself (a check, a conversion): splitting the batch finds
    /// the rows to blame.
    Refused,
}

/// Server error codes that depend on the rows sent, not on the server's state: a smaller batch
/// without the offending rows succeeds.
const DATA_ERROR_CODES: [u32; 20] = [
    6,   // CANNOT_PARSE_TEXT
    27,  // CANNOT_PARSE_INPUT_ASSERTION_FAILED
    36,  // BAD_ARGUMENTS
    38,  // CANNOT_PARSE_DATE
    41,  // CANNOT_PARSE_DATETIME
    43,  // ILLEGAL_TYPE_OF_ARGUMENT
    53,  // TYPE_MISMATCH
    69,  // ARGUMENT_OUT_OF_BOUND
    70,  // CANNOT_CONVERT_TYPE
    72,  // CANNOT_PARSE_NUMBER
    117, // INCORRECT_DATA
    128, // TOO_LARGE_ARRAY_SIZE
    131, // TOO_LARGE_STRING_SIZE
    190, // SIZES_OF_ARRAYS_DOESNT_MATCH
    321, // VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
    395, // FUNCTION_THROW_IF_VALUE_IS_NON_ZERO
    469, // VIOLATED_CONSTRAINT
    48,  // NOT_IMPLEMENTED (a type the table cannot take for this value)
    49,  // LOGICAL_ERROR raised by a single value
    252, // TOO_MANY_PARTS: only with "partitions for single INSERT block", see `classify`
];

/// The `Code: N` of a server exception, when the error carries one.
pub fn error_code(error: &clickhouse::error::Error) -> Option<u32> {
    let clickhouse::error::Error::BadResponse(text) = error else {
        return None;
    };
    let rest = &text[text.find("Code: ")? + "Code: ".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Classifies an insert failure. Only errors known to depend on the rows count as refusals;
/// everything else (network, timeouts, memory, unknown table, wrong password) is retried, so a
/// misconfiguration stalls the pipeline loudly instead of turning every row into a reject.
pub fn classify(error: &clickhouse::error::Error) -> FailureClass {
    let Some(code) = error_code(error) else {
        return FailureClass::Retry;
    };
    if code == 252 {
        // 252 is also "too many parts" (merges behind): wait for it. Too many partitions in
        // one block is cured by splitting.
        let partitions = matches!(error, clickhouse::error::Error::BadResponse(t) if t.contains("partitions for single INSERT"));
        return if partitions {
            FailureClass::Refused
        } else {
            FailureClass::Retry
        };
    }
    if DATA_ERROR_CODES.contains(&code) {
        FailureClass::Refused
    } else {
        FailureClass::Retry
    }
}

/// The highest source offset stored in each daily partition of a table (`PARTITION BY
/// toYYYYMMDD` of a UTC time): [`partition_day`] → offset. Kept per day because a server that
/// crashes mid-INSERT may commit the INSERT's part for one day and lose the other's: the
/// highest offset of the whole table would then pass over the lost rows.
pub type DayOffsets = BTreeMap<u32, i64>;

/// [`DayOffsets`] per source `(topic, partition)`.
pub type StoredOffsets = BTreeMap<(String, i32), DayOffsets>;

/// The daily partition a row whose time is `unix_seconds` (UTC) goes to, as days since
/// 1970-01-01: the same day as the tables' `toYYYYMMDD` of a `DateTime('UTC')` column.
pub fn partition_day(unix_seconds: u32) -> u32 {
    unix_seconds / 86_400
}

#[derive(Deserialize, clickhouse::Row)]
struct OffsetRow {
    topic: String,
    partition: i32,
    day: u32,
    offset: i64,
}

#[derive(Deserialize, clickhouse::Row)]
struct QueryIdRow {
    query_id: String,
}

#[derive(Deserialize, clickhouse::Row)]
struct CountRow {
    n: u64,
}

#[derive(Deserialize, clickhouse::Row)]
struct IdRow {
    id: String,
}

/// Which rows of `rejects` to read back (`cityops rejects replay`); `None` matches any.
#[derive(Debug, Clone, Default)]
pub struct RejectFilter {
    /// The feed that rejected them.
    pub feed: Option<String>,
    /// The reject reason.
    pub reason: Option<String>,
    /// Arrived at or after this time (seconds since the epoch).
    pub since_s: Option<u32>,
    /// Arrived before this time (seconds since the epoch).
    pub until_s: Option<u32>,
}

impl ClickHouse {
    /// Inserts `rows` into `table` in one INSERT tagged `query_id`, failing after `timeout`.
    /// Returns the client's error as it is, for [`classify`].
    pub async fn insert_tagged<T>(
        &self,
        table: &str,
        rows: &[T],
        query_id: &str,
        timeout: Duration,
    ) -> Result<(), clickhouse::error::Error>
    where
        T: clickhouse::RowOwned + clickhouse::RowWrite,
    {
        let client = self.client().with_setting("query_id", query_id);
        let mut insert = client
            .insert::<T>(table)
            .await?
            .with_timeouts(Some(timeout), Some(timeout));
        for row in rows {
            insert.write(row).await?;
        }
        insert.end().await
    }

    /// Inserts `events` rows already in RowBinary (see [`crate::encode_event`]) in one INSERT
    /// tagged `query_id`, failing after `timeout`.
    pub async fn insert_rowbinary(
        &self,
        table: &str,
        rows: bytes::Bytes,
        query_id: &str,
        timeout: Duration,
    ) -> Result<(), clickhouse::error::Error> {
        let mut insert = self
            .client()
            .with_setting("query_id", query_id)
            .insert_formatted_with(format!("INSERT INTO {table} FORMAT RowBinary"))
            .with_timeouts(Some(timeout), Some(timeout));
        insert.send(rows).await?;
        insert.end().await
    }

    /// Query ids of ingest inserts (see [`INGEST_QUERY_ID_PREFIX`]) the server is running now;
    /// on a cluster, every replica (an INSERT through a `Distributed` table runs on each shard
    /// under the id of the INSERT that started it).
    pub async fn running_ingest_queries(&self) -> Result<Vec<String>, Error> {
        let sql = format!(
            "SELECT DISTINCT initial_query_id AS query_id FROM {} \
             WHERE startsWith(initial_query_id, '{INGEST_QUERY_ID_PREFIX}')",
            self.system_on_every_replica("processes")
        );
        // A replica that does not answer runs nothing; skipping it is enough here.
        let rows: Vec<QueryIdRow> = self
            .fetch_from_every_replica(&[], &sql, "list running ingest inserts")
            .await?;
        Ok(rows.into_iter().map(|r| r.query_id).collect())
    }

    /// Waits until none of `query_ids` runs any more, or `deadline` passes (then returns the
    /// ones still running).
    pub async fn wait_until_finished(
        &self,
        query_ids: &[String],
        deadline: Duration,
    ) -> Result<Vec<String>, Error> {
        let start = tokio::time::Instant::now();
        loop {
            let running = self.running_ingest_queries().await?;
            let left: Vec<String> = query_ids
                .iter()
                .filter(|id| running.contains(id))
                .cloned()
                .collect();
            if left.is_empty() || start.elapsed() >= deadline {
                return Ok(left);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The highest offset stored per partition of `topics` from `source_kind` and per daily
    /// partition, in `events` and in `rejects` (rows the server refused excluded: they are
    /// written out of order).
    pub async fn stored_offsets(
        &self,
        source_kind: &str,
        topics: &[String],
    ) -> Result<(StoredOffsets, StoredOffsets), Error> {
        if topics.is_empty() {
            return Ok(Default::default());
        }
        let quoted: Vec<String> = topics.iter().map(|t| quote(t)).collect();
        let filter = format!("source_topic IN ({})", quoted.join(", "));
        let collect = |rows: Vec<OffsetRow>| {
            let mut stored = StoredOffsets::new();
            for r in rows {
                stored
                    .entry((r.topic, r.partition))
                    .or_default()
                    .insert(r.day, r.offset);
            }
            stored
        };
        let (events, rejects) = self
            .highest_offsets(
                source_kind,
                &filter,
                "source_topic",
                "source_topic, source_partition",
            )
            .await?;
        Ok((collect(events), collect(rejects)))
    }

    /// The highest stored offset of one source partition across all its topics, per daily
    /// partition, in `events` and in `rejects` (decode rejects only). The MQTT spool is one
    /// partition whose messages come on many topics.
    pub async fn stored_partition_offsets(
        &self,
        source_kind: &str,
        partition: i32,
    ) -> Result<(DayOffsets, DayOffsets), Error> {
        let filter = format!("source_partition = {partition}");
        let highest = |rows: Vec<OffsetRow>| rows.into_iter().map(|r| (r.day, r.offset)).collect();
        let (events, rejects) = self
            .highest_offsets(source_kind, &filter, "''", "source_partition")
            .await?;
        Ok((highest(events), highest(rejects)))
    }

    /// `max(source_offset)` of `events` and of `rejects` (refused rows excluded) for the rows
    /// of `source_kind` matching `filter`, grouped by `group_by` and the daily partition, with
    /// `topic` as the topic. On a cluster every replica is read: a part acknowledged by one
    /// replica counts as stored before the others have fetched it. A replica that does not
    /// answer is left out only when another replica of its shard has everything it could hold
    /// (see [`ClickHouse::fetch_from_every_replica`]); otherwise the check fails, to be retried.
    async fn highest_offsets(
        &self,
        source_kind: &str,
        filter: &str,
        topic: &str,
        group_by: &str,
    ) -> Result<(Vec<OffsetRow>, Vec<OffsetRow>), Error> {
        let query = |table: &str, time: &str, extra: &str| {
            format!(
                "SELECT {topic} AS topic, source_partition AS partition, \
                 toUInt32(intDiv(toUInt32({time}), 86400)) AS day, max(source_offset) AS offset \
                 FROM {table} WHERE source_kind = {kind} AND {filter}{extra} \
                 GROUP BY {group_by}, day",
                kind = quote(source_kind),
            )
        };
        let tables = ["events", "rejects"];
        let events = self
            .fetch_from_every_replica::<OffsetRow>(
                &tables,
                &query(&self.on_every_replica("events"), "ts", ""),
                "read stored event offsets",
            )
            .await?;
        let rejects = self
            .fetch_from_every_replica::<OffsetRow>(
                &tables,
                &query(
                    &self.on_every_replica("rejects"),
                    "received_at",
                    &format!(" AND reason != {}", quote(REFUSED_REASON)),
                ),
                "read stored reject offsets",
            )
            .await?;
        Ok((events, rejects))
    }

    /// Whether `row` is stored, looked up by the table's sort key (cheap).
    pub async fn event_stored(&self, row: &EventRow) -> Result<bool, Error> {
        let sql = format!(
            "SELECT count() AS n FROM events WHERE domain = {} AND metric = {} AND entity_id = {} \
             AND ts = {} AND event_id = toUUID({})",
            quote(&row.domain),
            quote(&row.metric),
            quote(&row.entity_id),
            row.ts,
            quote(&row.event_id.to_string()),
        );
        self.count(&sql).await
    }

    /// Whether `row` is stored, looked up by the table's sort key (cheap).
    pub async fn reject_stored(&self, row: &RejectRow) -> Result<bool, Error> {
        let sql = format!(
            "SELECT count() AS n FROM rejects WHERE feed = {} AND reason = {} \
             AND reject_id = toUUID({})",
            quote(&row.feed),
            quote(&row.reason),
            quote(&row.reject_id.to_string()),
        );
        self.count(&sql).await
    }

    async fn count(&self, sql: &str) -> Result<bool, Error> {
        let rows: Vec<CountRow> = self.fetch_here(sql, "look up a stored row").await?;
        Ok(rows.first().is_some_and(|r| r.n > 0))
    }

    /// The rejects `filter` matches, oldest first, at most `limit`.
    pub async fn rejects_matching(
        &self,
        filter: &RejectFilter,
        limit: u64,
    ) -> Result<Vec<RejectRow>, Error> {
        let mut conditions = vec!["1".to_owned()];
        if let Some(feed) = &filter.feed {
            conditions.push(format!("feed = {}", quote(feed)));
        }
        if let Some(reason) = &filter.reason {
            conditions.push(format!("reason = {}", quote(reason)));
        }
        if let Some(since) = filter.since_s {
            conditions.push(format!("received_at >= toDateTime({since}, 'UTC')"));
        }
        if let Some(until) = filter.until_s {
            conditions.push(format!("received_at < toDateTime({until}, 'UTC')"));
        }
        let columns: Vec<&str> = RejectRow::COLUMNS.iter().map(|(c, _)| *c).collect();
        let sql = format!(
            "SELECT {} FROM rejects WHERE {} ORDER BY received_at, received_ms LIMIT {limit}",
            columns.join(", "),
            conditions.join(" AND ")
        );
        self.fetch_here(&sql, "read rejects").await
    }

    /// Which of `ids` are in `events` (events timed within `ts_range`, seconds, inclusive).
    pub async fn stored_event_ids(
        &self,
        ids: &[uuid::Uuid],
        ts_range: (u32, u32),
    ) -> Result<std::collections::HashSet<uuid::Uuid>, Error> {
        let mut found = std::collections::HashSet::new();
        for chunk in ids.chunks(1000) {
            let list: Vec<String> = chunk.iter().map(|id| quote(&id.to_string())).collect();
            let sql = format!(
                "SELECT toString(event_id) AS id FROM events WHERE ts >= toDateTime({}, 'UTC') \
                 AND ts <= toDateTime({}, 'UTC') AND toString(event_id) IN ({})",
                ts_range.0,
                ts_range.1,
                list.join(", ")
            );
            let rows: Vec<IdRow> = self.fetch_here(&sql, "look up stored events").await?;
            found.extend(
                rows.iter()
                    .filter_map(|r| uuid::Uuid::parse_str(&r.id).ok()),
            );
        }
        Ok(found)
    }

    /// `SELECT 1`: whether the server answers now.
    pub async fn ping(&self) -> bool {
        let ping = self.client().query("SELECT 1").execute();
        crate::client::bounded(self.query_timeout(), "ping", ping)
            .await
            .is_ok()
    }
}

/// A ClickHouse string literal.
fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('\'');
    for c in text.chars() {
        match c {
            '\'' => out.push_str("\\'"),
            '\\' => out.push_str("\\\\"),
            _ => out.push(c),
        }
    }
    out.push('\'');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad(text: &str) -> clickhouse::error::Error {
        clickhouse::error::Error::BadResponse(text.into())
    }

    #[test]
    fn only_row_dependent_server_errors_count_as_refusals() {
        let throw = bad(
            "Code: 395, e.displayText() = DB::Exception: Value passed to 'throwIf' function is non zero",
        );
        assert_eq!(error_code(&throw), Some(395));
        assert_eq!(classify(&throw), FailureClass::Refused);
        let modern = bad("Code: 469. DB::Exception: Constraint `c` for table x is violated");
        assert_eq!(classify(&modern), FailureClass::Refused);
        let partitions = bad(
            "Code: 252, e.displayText() = DB::Exception: Too many partitions for single INSERT block (more than 100)",
        );
        assert_eq!(classify(&partitions), FailureClass::Refused);
        for retried in [
            bad(
                "Code: 252, e.displayText() = DB::Exception: Too many parts (300). Merges are processing significantly slower than inserts",
            ),
            bad("Code: 60, e.displayText() = DB::Exception: Table cityops.events doesn't exist"),
            bad("Code: 241, e.displayText() = DB::Exception: Memory limit (for query) exceeded"),
            bad("Code: 516. DB::Exception: default: Authentication failed"),
            bad("502 Bad Gateway"),
            clickhouse::error::Error::TimedOut,
            clickhouse::error::Error::Network("connection refused".into()),
        ] {
            assert_eq!(classify(&retried), FailureClass::Retry, "{retried}");
        }
    }

    #[test]
    fn the_partition_day_is_the_utc_day() {
        assert_eq!(partition_day(0), 0);
        // 2026-12-01 23:59:59 and 2026-12-02 00:00:00 UTC.
        assert_eq!(
            partition_day(1_796_169_599) + 1,
            partition_day(1_796_169_600)
        );
        assert_eq!(partition_day(1_796_169_600), 20_789);
    }

    #[test]
    fn literals_escape_quotes_and_backslashes() {
        assert_eq!(quote(r"a'b\c"), r"'a\'b\\c'");
        assert_eq!(quote("Hải Châu"), "'Hải Châu'");
    }
}
