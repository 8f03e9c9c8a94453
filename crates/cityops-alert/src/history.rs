//! Reading `alert_events` back: one alert's history for the API and the console, and the
//! actions other replicas took (acknowledgements made on one alerter are seen by the other).

use crate::records::{ActionKind, AlertAction, Notice};
use crate::service::{Shared, lock};
use cityops_clickhouse::ClickHouse;
use cityops_config::ClickHouseConfig;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// One row of an alert's history as the API gives it.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryEvent {
    /// The row's id.
    pub id: String,
    /// When (RFC 3339, UTC, milliseconds).
    pub at: String,
    /// The state it entered, or the action (acknowledged, commented, ...).
    pub state: String,
    /// The state before (for an action: the alert's state at the time).
    pub previous_state: String,
    /// Who acted.
    pub actor: String,
    /// What they wrote.
    pub comment: String,
    /// The summary at the time.
    pub summary: String,
    /// The value at the time.
    pub value: Option<f64>,
    /// The escalation level.
    pub escalation: u8,
    /// The replica that wrote it.
    pub replica: String,
}

#[derive(Debug, Deserialize, clickhouse::Row)]
struct Row {
    id: String,
    ts: u32,
    ts_ms: u16,
    rule: String,
    fingerprint: String,
    state: String,
    previous_state: String,
    actor: String,
    comment: String,
    summary: String,
    value: Option<f64>,
    escalation: u8,
    replica: String,
}

const COLUMNS: &str = "toString(alert_event_id) AS id, toUInt32(ts) AS ts, ts_ms, toString(rule) AS rule, fingerprint, toString(state) AS state, toString(previous_state) AS previous_state, actor, comment, summary, value, escalation, toString(replica) AS replica";

fn ms(row: &Row) -> i64 {
    i64::from(row.ts) * 1_000 + i64::from(row.ts_ms)
}

/// The newest `limit` rows of the alert `fingerprint` (16 hex digits, checked by the
/// caller), oldest first.
pub async fn read(
    clickhouse: &ClickHouseConfig,
    fingerprint: &str,
    limit: usize,
) -> Result<Vec<HistoryEvent>, String> {
    debug_assert!(fingerprint.bytes().all(|b| b.is_ascii_hexdigit()));
    let ch = ClickHouse::connect(clickhouse)
        .await
        .map_err(|e| e.to_string())?;
    let sql = format!(
        "SELECT {COLUMNS} FROM {db}.alert_events WHERE fingerprint = '{fingerprint}' ORDER BY ts DESC, ts_ms DESC LIMIT {limit}",
        db = ch.database()
    );
    let mut rows: Vec<Row> = ch
        .fetch(&sql, "read an alert's history")
        .await
        .map_err(|e| e.to_string())?;
    rows.reverse();
    Ok(rows
        .into_iter()
        .map(|r| HistoryEvent {
            at: cityops_event::Timestamp::from_millis(ms(&r))
                .map(|t| t.to_string())
                .unwrap_or_default(),
            id: r.id,
            state: r.state,
            previous_state: r.previous_state,
            actor: r.actor,
            comment: r.comment,
            summary: r.summary,
            value: r.value,
            escalation: r.escalation,
            replica: r.replica,
        })
        .collect())
}

fn action_kind(state: &str) -> Option<ActionKind> {
    Some(match state {
        "acknowledged" => ActionKind::Acknowledged,
        "unacknowledged" => ActionKind::Unacknowledged,
        "commented" => ActionKind::Commented,
        "escalated" => ActionKind::Escalated,
        _ => return None,
    })
}

/// Every `every`, reads the actions other replicas wrote on the alerts active here and applies
/// them (not written again: they are in the history already, by the replica that took them).
/// Applying is idempotent, so reading a row twice does no harm; rows are read from the start of
/// the oldest active alert, so a restarted replica catches up.
pub async fn follow_peers(
    clickhouse: ClickHouseConfig,
    shared: Arc<Shared>,
    every: Duration,
    cancel: CancellationToken,
) {
    let mut applied: HashSet<String> = HashSet::new();
    let mut client: Option<ClickHouse> = None;
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        let active: Vec<Notice> = lock(&shared.alerts).values().cloned().collect();
        let Some(oldest) = active.iter().map(|n| n.active_since_ms).min() else {
            applied.clear();
            continue;
        };
        if client.is_none() {
            client = ClickHouse::connect(&clickhouse).await.ok();
        }
        let Some(ch) = &client else { continue };
        let sql = format!(
            "SELECT {COLUMNS} FROM {db}.alert_events WHERE ts >= toDateTime({from}) AND state IN ('acknowledged', 'unacknowledged', 'commented', 'escalated') AND replica != '{me}' ORDER BY ts, ts_ms",
            db = ch.database(),
            from = oldest.div_euclid(1_000).max(0),
            me = shared.replica,
        );
        let rows: Vec<Row> = match ch.fetch(&sql, "read other replicas' actions").await {
            Ok(rows) => rows,
            Err(error) => {
                tracing::warn!(%error, "cannot read other replicas' actions; retrying");
                client = None;
                continue;
            }
        };
        let mut notices = Vec::new();
        for row in rows {
            if applied.contains(&row.id) {
                continue;
            }
            let Some(kind) = action_kind(&row.state) else {
                continue;
            };
            let Some(alert) = active.iter().find(|n| {
                n.rule == row.rule
                    && crate::records::fingerprint_hex(n.fingerprint) == row.fingerprint
            }) else {
                continue;
            };
            let at = ms(&row);
            if at < alert.active_since_ms {
                continue;
            }
            let action = AlertAction {
                kind,
                actor: row.actor.clone(),
                comment: row.comment.clone(),
                level: row.escalation,
            };
            let mut notice = Notice::of_action(alert, action, at);
            applied.insert(row.id.clone());
            // The row's own id: this replica's history writer then finds it stored.
            if let Ok(id) = row.id.parse() {
                notice.id = id;
            }
            notices.push(notice);
        }
        if notices.is_empty() {
            continue;
        }
        tracing::info!(
            actions = notices.len(),
            "applied actions taken on another replica"
        );
        {
            let mut handling = lock(&shared.handling);
            for n in &notices {
                crate::handling::apply(&mut handling, n);
            }
        }
        shared.alertmanager_wake.notify_one();
    }
}
