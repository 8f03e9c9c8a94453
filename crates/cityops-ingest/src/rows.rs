//! Rows of the `rejects` table from decode rejects, shared by every path that stores them (the
//! sources here and `cityops sim --to-clickhouse`).

use cityops_clickhouse::{RejectRow, RowSource};
use cityops_event::Timestamp;
use cityops_feeds::Reject;
use uuid::Uuid;

/// The `rejects` row of `reject`, received at `received_at` from `source`.
pub fn reject_row(
    reject: Reject,
    reject_id: Uuid,
    received_at: Timestamp,
    source: &RowSource<'_>,
) -> RejectRow {
    RejectRow {
        reject_id,
        received_at: received_at.unix_seconds(),
        received_ms: received_at.subsec_millis(),
        raw_len: u32::try_from(reject.raw_len).unwrap_or(u32::MAX),
        raw_truncated: u8::from(reject.raw_truncated()),
        feed: reject.feed.unwrap_or_default(),
        reason: reject.reason.as_str().to_owned(),
        message: reject.message,
        raw: reject.raw,
        source_kind: source.kind.to_owned(),
        source_topic: source.topic.to_owned(),
        source_partition: source.partition,
        source_offset: source.offset,
    }
}
