//! Replaying rejects (`cityops rejects replay`): the raw payloads of chosen `rejects` rows are
//! decoded again with the feeds as configured now (after a config fix), and what decodes is
//! stored in `events` with the ids the ingest would have given it — once: events already stored
//! (by an earlier replay) are not written again. The reject rows stay as the history of what
//! happened.

use cityops_clickhouse::{ClickHouse, EventRow, RejectRow, RowSource};
use cityops_event::{SourceCoordinates, Timestamp};
use cityops_feeds::{FeedSet, Message, Outcome};
use std::collections::BTreeMap;

/// What a replay found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Rejects read.
    pub selected: u64,
    /// Rejects whose raw payload was cut when stored: they cannot be decoded again.
    pub truncated: u64,
    /// Rejects that decode now.
    pub decoded: u64,
    /// Events written to `events`.
    pub events_stored: u64,
    /// Events that were already there (an earlier replay): not written again.
    pub events_already_stored: u64,
    /// Rejects that still do not decode, by their reason now.
    pub still_rejected: BTreeMap<String, u64>,
}

/// What can stop a replay.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// ClickHouse failed a read or a write.
    #[error(transparent)]
    ClickHouse(#[from] cityops_clickhouse::Error),
}

/// Decodes `rejects` again with `feeds` and stores what decodes (unless `dry_run`).
pub async fn replay_rejects(
    clickhouse: &ClickHouse,
    feeds: &FeedSet,
    rejects: &[RejectRow],
    dry_run: bool,
) -> Result<ReplayReport, ReplayError> {
    let mut report = ReplayReport {
        selected: rejects.len() as u64,
        ..ReplayReport::default()
    };
    let mut rows = Vec::new();
    for reject in rejects {
        if reject.raw_truncated != 0 {
            report.truncated += 1;
            continue;
        }
        let Some(source) = source_kind(&reject.source_kind) else {
            *report
                .still_rejected
                .entry(format!("unknown source {:?}", reject.source_kind))
                .or_default() += 1;
            continue;
        };
        let coordinates = coordinates(reject);
        let received_at = Timestamp::from_millis(
            i64::from(reject.received_at) * 1000 + i64::from(reject.received_ms),
        )
        .unwrap_or(Timestamp::MIN);
        let outcome = feeds.decode(&Message {
            source,
            topic: &reject.source_topic,
            payload: &reject.raw,
            received_at,
            coordinates: coordinates.as_ref(),
        });
        match outcome {
            Outcome::Events(events) => {
                report.decoded += 1;
                let row_source = RowSource {
                    kind: source.as_str(),
                    topic: &reject.source_topic,
                    partition: reject.source_partition,
                    offset: reject.source_offset,
                };
                rows.extend(events.iter().map(|e| EventRow::new(e, &row_source)));
            }
            Outcome::Reject(again) => {
                *report
                    .still_rejected
                    .entry(again.reason.as_str().to_owned())
                    .or_default() += 1;
            }
        }
    }
    if rows.is_empty() {
        return Ok(report);
    }
    let low = rows.iter().map(|r| r.ts).min().unwrap_or(0);
    let high = rows.iter().map(|r| r.ts).max().unwrap_or(0);
    let ids: Vec<uuid::Uuid> = rows.iter().map(|r| r.event_id).collect();
    let stored = clickhouse.stored_event_ids(&ids, (low, high)).await?;
    let before = rows.len();
    rows.retain(|r| !stored.contains(&r.event_id));
    report.events_already_stored = (before - rows.len()) as u64;
    report.events_stored = rows.len() as u64;
    if !dry_run {
        for chunk in rows.chunks(50_000) {
            clickhouse.insert("events", chunk).await?;
        }
    }
    Ok(report)
}

fn source_kind(kind: &str) -> Option<cityops_config::SourceKind> {
    match kind {
        "kafka" => Some(cityops_config::SourceKind::Kafka),
        "mqtt" => Some(cityops_config::SourceKind::Mqtt),
        _ => None,
    }
}

/// The coordinates the ingest decoded the message with (so the ids come out the same).
fn coordinates(reject: &RejectRow) -> Option<SourceCoordinates> {
    if reject.source_offset < 0 {
        return None;
    }
    match reject.source_kind.as_str() {
        "kafka" => Some(SourceCoordinates::Kafka {
            topic: reject.source_topic.clone(),
            partition: reject.source_partition,
            offset: reject.source_offset,
        }),
        "mqtt" => Some(SourceCoordinates::Spool {
            topic: reject.source_topic.clone(),
            spool: reject.source_partition,
            seq: reject.source_offset as u64,
        }),
        _ => None,
    }
}
