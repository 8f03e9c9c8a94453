//! The receivers' side: Alertmanager (every firing alert, re-sent so that it does not expire,
//! to every configured instance), webhooks (each firing and resolved transition from the
//! outbox, retried until taken), and the history writer (every transition into
//! `alert_events`, checked first so that a retry never stores a row twice). A failing receiver
//! is retried and counted and never holds up evaluation.

use crate::handling::alertmanager_labels;
use crate::records::{Notice, alertmanager_alert, history_row, webhook_body};
use crate::service::{RESOLVED_SENDS, Shared, now_ms};
use cityops_clickhouse::{AlertEventRow, ClickHouse};
use cityops_config::{AlertConfig, ClickHouseConfig, WebhookConfig};
use cityops_runtime::Backoff;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, PoisonError};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    body: Vec<u8>,
    timeout: Duration,
) -> Result<(), String> {
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("{url} answered {status}"))
    }
}

/// Sends every firing alert (and those resolved lately) to each Alertmanager: at once when
/// one fires or resolves, and every `resend_interval_ms`.
pub async fn alertmanager(config: AlertConfig, shared: Arc<Shared>, cancel: CancellationToken) {
    if config.alertmanagers.is_empty() {
        return;
    }
    let client = reqwest::Client::new();
    let resend = Duration::from_millis(config.resend_interval_ms);
    let mut backoffs: Vec<Backoff> = config
        .alertmanagers
        .iter()
        .enumerate()
        .map(|(i, _)| {
            Backoff::new(
                Duration::from_millis(500),
                Duration::from_secs(30),
                now_ms() as u64 ^ i as u64,
            )
        })
        .collect();
    // Every receiver's series exist from the start at 0, so that a rate over them (a
    // dashboard, a "notifications failing" rule) has data before the first failure.
    for i in 0..config.alertmanagers.len() {
        let receiver = format!("alertmanager:{i}");
        shared.metrics.sent.with_label_values(&[&receiver]);
        shared.metrics.failed.with_label_values(&[&receiver]);
    }
    let mut wait = Duration::ZERO;
    // The labels each firing alert was last sent with. When they change (acknowledged,
    // escalated), Alertmanager sees a new alert: the one it had is ended, marked superseded,
    // so that its repeats stop.
    let mut sent: HashMap<(String, u64), BTreeMap<String, String>> = HashMap::new();
    let mut superseded: Vec<(Notice, u8)> = Vec::new();
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = shared.alertmanager_wake.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
        // After a restart, what the state file says is firing may have resolved while this
        // process was down (another replica may have told Alertmanager so): nothing is sent
        // before the events that waited in the brokers are applied.
        if !shared.caught_up.load(std::sync::atomic::Ordering::Acquire) {
            wait = Duration::from_millis(100);
            continue;
        }
        let now = now_ms();
        let firing: Vec<Notice> = {
            let alerts = lock(&shared.alerts);
            let handling = lock(&shared.handling);
            alerts
                .iter()
                .filter(|(_, n)| n.to == cityops_rules::AlertState::Firing)
                .map(|(key, n)| {
                    let mut n = n.clone();
                    n.labels = alertmanager_labels(&n, handling.get(key));
                    n
                })
                .collect()
        };
        for n in &firing {
            let key = (n.rule.clone(), n.fingerprint);
            if let Some(before) = sent.insert(key, n.labels.clone())
                && before != n.labels
            {
                let mut old = n.clone();
                let why = if n.labels.get("acknowledged_by") != before.get("acknowledged_by") {
                    match n.labels.get("acknowledged_by") {
                        Some(by) => format!("acknowledged by {by}"),
                        None => "acknowledgement taken back".to_owned(),
                    }
                } else {
                    format!(
                        "escalated to level {}",
                        n.labels.get("escalation").map_or("0", String::as_str)
                    )
                };
                old.labels = before;
                old.to = cityops_rules::AlertState::Resolved;
                old.at_ms = now;
                old.annotations.insert("superseded".into(), why);
                superseded.push((old, RESOLVED_SENDS));
            }
        }
        sent.retain(|(rule, fp), _| {
            firing
                .iter()
                .any(|n| n.fingerprint == *fp && n.rule == *rule)
        });
        let resolved: Vec<Notice> = lock(&shared.resolved)
            .iter()
            .chain(superseded.iter())
            .map(|(n, _)| n.clone())
            .collect();
        let alerts: Vec<_> = firing
            .iter()
            .chain(&resolved)
            .filter_map(|n| {
                alertmanager_alert(
                    n,
                    now,
                    i64::try_from(config.resend_interval_ms).unwrap_or(i64::MAX),
                    &shared.external_url,
                )
            })
            .collect();
        wait = resend;
        if alerts.is_empty() {
            continue;
        }
        let body = serde_json::to_vec(&alerts).unwrap_or_default();
        let mut all_took = true;
        for (i, am) in config.alertmanagers.iter().enumerate() {
            let receiver = format!("alertmanager:{i}");
            let url = format!("{}/api/v2/alerts", am.url.trim_end_matches('/'));
            match post(
                &client,
                &url,
                body.clone(),
                Duration::from_millis(am.timeout_ms),
            )
            .await
            {
                Ok(()) => {
                    backoffs[i].reset();
                    shared
                        .metrics
                        .sent
                        .with_label_values(&[&receiver])
                        .inc_by(alerts.len() as f64);
                }
                Err(error) => {
                    all_took = false;
                    shared.metrics.failed.with_label_values(&[&receiver]).inc();
                    let delay = backoffs[i].next_delay();
                    tracing::warn!(%error, receiver, retry_in_ms = delay.as_millis() as u64, "alertmanager did not take the alerts; retrying");
                    wait = wait.min(delay);
                }
            }
        }
        if all_took {
            // A resolved alert is sent a few times, then forgotten.
            let mut resolved = lock(&shared.resolved);
            for (_, left) in resolved.iter_mut().chain(superseded.iter_mut()) {
                *left = left.saturating_sub(1);
            }
            resolved.retain(|(_, left)| *left > 0);
            superseded.retain(|(_, left)| *left > 0);
        }
    }
}

/// Delivers the outbox's firing and resolved notices to one webhook, in order, retrying each
/// until the receiver takes it.
pub async fn webhook(
    hook: WebhookConfig,
    queue_max: usize,
    shared: Arc<Shared>,
    cancel: CancellationToken,
) {
    let consumer = format!("webhook:{}", hook.name);
    for counter in [
        &shared.metrics.sent,
        &shared.metrics.failed,
        &shared.metrics.dropped,
    ] {
        counter.with_label_values(&[&consumer]);
    }
    let client = reqwest::Client::new();
    let mut backoff = Backoff::new(
        Duration::from_millis(hook.retry_initial_ms),
        Duration::from_millis(hook.retry_max_ms),
        now_ms() as u64,
    );
    loop {
        drop_beyond(&shared, &consumer, queue_max);
        let batch = lock(&shared.outbox).next_for(&consumer, 100);
        if batch.is_empty() {
            if !wait_for_outbox(&shared, &cancel).await {
                return;
            }
            continue;
        }
        for (seq, notice) in batch {
            if let Some(body) = webhook_body(&notice, &shared.external_url) {
                let bytes = serde_json::to_vec(&body).unwrap_or_default();
                loop {
                    match post(
                        &client,
                        &hook.url,
                        bytes.clone(),
                        Duration::from_millis(hook.timeout_ms),
                    )
                    .await
                    {
                        Ok(()) => {
                            backoff.reset();
                            shared.metrics.sent.with_label_values(&[&consumer]).inc();
                            break;
                        }
                        Err(error) => {
                            shared.metrics.failed.with_label_values(&[&consumer]).inc();
                            let delay = backoff.next_delay();
                            tracing::warn!(%error, receiver = consumer, retry_in_ms = delay.as_millis() as u64, "webhook did not take the notification; retrying");
                            tokio::select! {
                                () = cancel.cancelled() => return,
                                () = tokio::time::sleep(delay) => {}
                            }
                        }
                    }
                }
            }
            if let Err(error) = lock(&shared.outbox).taken(&consumer, seq) {
                tracing::error!(%error, "cannot move the webhook's outbox cursor");
            }
        }
    }
}

/// Waits until the evaluator appends to the outbox (or a second passes); false once cancelled.
async fn wait_for_outbox(shared: &Shared, cancel: &CancellationToken) -> bool {
    tokio::select! {
        () = cancel.cancelled() => false,
        () = shared.outbox_wake.notified() => true,
        () = tokio::time::sleep(Duration::from_secs(1)) => true,
    }
}

/// A receiver that has been failing long holds at most `queue_max` notifications: the oldest
/// beyond are dropped and counted (the history keeps every transition).
fn drop_beyond(shared: &Shared, consumer: &str, queue_max: usize) {
    let mut outbox = lock(&shared.outbox);
    let backlog = outbox.backlog(consumer);
    if backlog <= queue_max {
        return;
    }
    let excess = backlog - queue_max;
    if let Some((seq, _)) = outbox.next_for(consumer, excess).last() {
        let seq = *seq;
        match outbox.taken(consumer, seq) {
            Ok(()) => {
                shared
                    .metrics
                    .dropped
                    .with_label_values(&[consumer])
                    .inc_by(excess as f64);
                tracing::warn!(
                    receiver = consumer,
                    dropped = excess,
                    queue_max,
                    "a failing receiver's queue is full: the oldest notifications are dropped"
                );
            }
            Err(error) => tracing::error!(%error, "cannot move the webhook's outbox cursor"),
        }
    }
}

/// Writes every transition to `alert_events`, connecting (and reconnecting) as ClickHouse
/// allows; while it cannot, transitions wait in the outbox on disk.
pub async fn history(clickhouse: ClickHouseConfig, shared: Arc<Shared>, cancel: CancellationToken) {
    let mut backoff = Backoff::new(
        Duration::from_millis(200),
        Duration::from_secs(10),
        now_ms() as u64,
    );
    let mut client: Option<ClickHouse> = None;
    loop {
        let backlog = lock(&shared.outbox).backlog("history");
        shared.metrics.history_backlog.set(backlog as f64);
        let batch = lock(&shared.outbox).next_for("history", 1_000);
        if batch.is_empty() {
            if !wait_for_outbox(&shared, &cancel).await {
                return;
            }
            continue;
        }
        let result = match &client {
            Some(c) => write_history(c, &batch, &shared.replica).await,
            None => match ClickHouse::connect(&clickhouse).await {
                Ok(c) => {
                    let r = write_history(&c, &batch, &shared.replica).await;
                    client = Some(c);
                    r
                }
                Err(e) => Err(e.to_string()),
            },
        };
        match result {
            Ok((written, found)) => {
                backoff.reset();
                shared
                    .metrics
                    .history_written
                    .with_label_values(&["written"])
                    .inc_by(written as f64);
                shared
                    .metrics
                    .history_written
                    .with_label_values(&["already_stored"])
                    .inc_by(found as f64);
                let last = batch.last().map_or(0, |(seq, _)| *seq);
                if let Err(error) = lock(&shared.outbox).taken("history", last) {
                    tracing::error!(%error, "cannot move the history's outbox cursor");
                }
            }
            Err(error) => {
                let delay = backoff.next_delay();
                tracing::warn!(%error, backlog, retry_in_ms = delay.as_millis() as u64, "alert history not written; kept on disk, retrying");
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// Inserts the rows not stored yet (a retry after an INSERT whose answer was lost finds them).
async fn write_history(
    clickhouse: &ClickHouse,
    batch: &[(u64, Notice)],
    replica: &str,
) -> Result<(usize, usize), String> {
    let rows: Vec<AlertEventRow> = batch.iter().map(|(_, n)| history_row(n, replica)).collect();
    let ids: Vec<String> = rows
        .iter()
        .map(|r| format!("toUUID('{}')", r.alert_event_id))
        .collect();
    let sql = format!(
        "SELECT toString(alert_event_id) AS id FROM {}.alert_events WHERE alert_event_id IN ({})",
        clickhouse.database(),
        ids.join(",")
    );
    #[derive(serde::Deserialize, clickhouse::Row)]
    struct Found {
        id: String,
    }
    let found: Vec<Found> = clickhouse
        .fetch(&sql, "find stored alert events")
        .await
        .map_err(|e| e.to_string())?;
    let found: std::collections::HashSet<String> = found.into_iter().map(|f| f.id).collect();
    let missing: Vec<AlertEventRow> = rows
        .into_iter()
        .filter(|r| !found.contains(&r.alert_event_id.to_string()))
        .collect();
    if !missing.is_empty() {
        clickhouse
            .insert("alert_events", &missing)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok((missing.len(), found.len()))
}
