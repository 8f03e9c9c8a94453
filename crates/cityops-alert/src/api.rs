//! The alerter's HTTP API, served beside `/metrics`, `/healthz` and `/readyz`:
//! `GET /api/v1/alerts`, `GET /api/v1/rules`, `POST /-/reload`, the actions on an alert
//! (`POST /api/v1/alerts/{fingerprint}/ack`, `/unack`, `/comment`, with a bearer token), its
//! history (`GET /api/v1/alerts/{fingerprint}/history`), and the on-call console (`/ui`)
//! (docs/alert-api.yaml).

use crate::records::fingerprint_hex;
use crate::records::{ActionKind, AlertAction, Notice};
use crate::service::{Input, Shared};
use crate::service::{lock, now_ms, record_notices};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, PoisonError};

/// The routes, for [`cityops_telemetry::TelemetryServer::run_with`].
pub fn routes(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/api/v1/alerts", get(alerts))
        .route(
            "/api/v1/alerts/{fingerprint}/ack",
            action_route(ActionKind::Acknowledged),
        )
        .route(
            "/api/v1/alerts/{fingerprint}/unack",
            action_route(ActionKind::Unacknowledged),
        )
        .route(
            "/api/v1/alerts/{fingerprint}/comment",
            action_route(ActionKind::Commented),
        )
        .route("/api/v1/alerts/{fingerprint}/history", get(history))
        .route("/api/v1/whoami", get(whoami))
        .route("/api/v1/rules", get(rules))
        .route("/-/reload", post(reload))
        .merge(crate::console::routes())
        .with_state(shared)
}

fn time(ms: i64) -> Option<String> {
    cityops_event::Timestamp::from_millis(ms)
        .ok()
        .map(|t| t.to_string())
}

/// Pending and firing alerts. Query: `state`, `severity`, `fingerprint`, and any other name is
/// a label that must have that value (`district=Cẩm Lệ`).
async fn alerts(
    State(shared): State<Arc<Shared>>,
    Query(filter): Query<HashMap<String, String>>,
) -> Response {
    let alerts = shared
        .alerts
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let handling = lock(&shared.handling).clone();
    let data: Vec<serde_json::Value> = alerts
        .iter()
        .filter(|(_, n)| {
            filter.iter().all(|(key, want)| match key.as_str() {
                "state" => n.to.as_str() == want,
                "severity" => n.severity.as_str() == want,
                "fingerprint" => fingerprint_hex(n.fingerprint) == *want,
                label => n.labels.get(label) == Some(want),
            })
        })
        .map(|(key, n)| alert_json(n, handling.get(key)))
        .collect();
    Json(json!({ "status": "success", "data": { "alerts": data } })).into_response()
}

/// An alert as the API shows it: the latest notice and its handling.
fn alert_json(n: &Notice, handling: Option<&crate::handling::Handling>) -> serde_json::Value {
    let ack = handling
        .and_then(|h| h.ack.as_ref())
        .map(|a| json!({"by": a.by, "at": time(a.at_ms), "comment": a.comment}));
    json!({
                "alertname": n.rule,
                "fingerprint": fingerprint_hex(n.fingerprint),
                "state": n.to.as_str(),
                "severity": n.severity.as_str(),
                "labels": n.labels,
                "annotations": n.annotations,
                "activeAt": time(n.active_since_ms),
                "firedAt": n.fired_at_ms.and_then(time),
                "value": n.value.as_ref().map(|v| match v {
                    cityops_rules::Value::Num(x) => json!(x),
                    cityops_rules::Value::Text(t) => json!(&**t),
                }),
                "acknowledged": ack,
                "escalation": handling.map_or(0, |h| h.escalation),
    })
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"status": "error", "error": message.into()})),
    )
        .into_response()
}

/// Compares without stopping at the first difference (a token's bytes do not leak through
/// timing; its length may).
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The name of the token the request carries (`Authorization: Bearer ...`), if it is one of
/// the configured ones.
fn token_name(shared: &Shared, headers: &HeaderMap) -> Option<String> {
    let given = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")?
        .trim();
    let mut found = None;
    for (name, token) in &shared.tokens {
        if same_bytes(given.as_bytes(), token.expose().as_bytes()) {
            found = Some(name.clone());
        }
    }
    found
}

fn unauthorized(shared: &Shared) -> Response {
    shared.metrics.unauthorized.inc();
    let mut response = error(
        StatusCode::UNAUTHORIZED,
        "a valid bearer token is needed (Authorization: Bearer ...; alert.api_tokens)",
    );
    response.headers_mut().insert(
        axum::http::header::WWW_AUTHENTICATE,
        axum::http::HeaderValue::from_static("Bearer realm=\"cityops-alert\""),
    );
    response
}

/// The name a valid token belongs to: what the console shows after sign-in.
async fn whoami(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    match token_name(&shared, &headers) {
        Some(name) => Json(json!({"status": "success", "data": {"name": name}})).into_response(),
        None => unauthorized(&shared),
    }
}

/// The body of an action: who (defaults to the token's name) and a comment.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionBody {
    #[serde(default)]
    who: Option<String>,
    #[serde(default)]
    comment: Option<String>,
}

/// The handler of one kind of action.
fn action_route(kind: ActionKind) -> axum::routing::MethodRouter<Arc<Shared>> {
    post(
        move |State(shared): State<Arc<Shared>>,
              Path(fingerprint): Path<String>,
              headers: HeaderMap,
              body: axum::body::Bytes| async move {
            act(&shared, &fingerprint, &headers, &body, kind)
        },
    )
}

/// Longest comment kept (characters); longer ones are refused, not cut.
const MAX_COMMENT_CHARS: usize = 2_000;

/// An action on the active alert `fingerprint`: checked (token first: without a valid one
/// nothing else is looked at), appended to the outbox (synced, so it reaches `alert_events`),
/// then applied. Answers with the alert as it is now.
fn act(
    shared: &Shared,
    fingerprint: &str,
    headers: &HeaderMap,
    body: &[u8],
    kind: ActionKind,
) -> Response {
    let Some(token) = token_name(shared, headers) else {
        return unauthorized(shared);
    };
    let body: ActionBody = if body.iter().all(u8::is_ascii_whitespace) {
        ActionBody::default()
    } else {
        match serde_json::from_slice(body) {
            Ok(b) => b,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("body: {e} (expected {{\"who\": ..., \"comment\": ...}})"),
                );
            }
        }
    };
    let comment = body.comment.unwrap_or_default().trim().to_owned();
    if comment.chars().count() > MAX_COMMENT_CHARS {
        return error(
            StatusCode::BAD_REQUEST,
            format!("comment: longer than {MAX_COMMENT_CHARS} characters"),
        );
    }
    if kind == ActionKind::Commented && comment.is_empty() {
        return error(StatusCode::BAD_REQUEST, "comment: empty");
    }
    let who = body
        .who
        .map(|w| w.trim().to_owned())
        .filter(|w| !w.is_empty());
    let actor = match who {
        Some(w) if w != token => format!("{w} ({token})"),
        _ => token,
    };
    if actor.chars().count() > 200 {
        return error(StatusCode::BAD_REQUEST, "who: longer than 200 characters");
    }
    let found = lock(&shared.alerts)
        .iter()
        .find(|(_, n)| fingerprint_hex(n.fingerprint) == fingerprint)
        .map(|(k, n)| (k.clone(), n.clone()));
    let Some((key, alert)) = found else {
        return error(
            StatusCode::NOT_FOUND,
            format!("no pending or firing alert has fingerprint {fingerprint:?}"),
        );
    };
    let handling = lock(&shared.handling)
        .get(&key)
        .cloned()
        .unwrap_or_default();
    if kind == ActionKind::Unacknowledged && handling.ack.is_none() {
        return error(StatusCode::CONFLICT, "the alert is not acknowledged");
    }
    let notice = Notice::of_action(
        &alert,
        AlertAction {
            kind,
            actor: actor.clone(),
            comment,
            level: handling.escalation,
        },
        now_ms(),
    );
    if let Err(e) = record_notices(shared, std::slice::from_ref(&notice)) {
        tracing::error!(error = %e, "cannot record an action on an alert");
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the action could not be stored; try again",
        );
    }
    shared
        .metrics
        .actions
        .with_label_values(&[kind.as_str()])
        .inc();
    tracing::info!(
        rule = alert.rule,
        fingerprint,
        action = kind.as_str(),
        actor,
        "alert action"
    );
    let handling = lock(&shared.handling).get(&key).cloned();
    Json(json!({"status": "success", "data": alert_json(&alert, handling.as_ref())}))
        .into_response()
}

/// Rows of an alert's history the API returns at most (the newest).
const HISTORY_ROWS: usize = 500;

/// An alert's history from `alert_events`: its state changes and what was done with it,
/// oldest first (the newest 500).
async fn history(State(shared): State<Arc<Shared>>, Path(fingerprint): Path<String>) -> Response {
    // The fingerprint goes into the SQL, so it must be exactly what fingerprints are.
    if fingerprint.len() != 16 || !fingerprint.bytes().all(|b| b.is_ascii_hexdigit()) {
        return error(
            StatusCode::BAD_REQUEST,
            "a fingerprint is 16 hexadecimal digits",
        );
    }
    let fingerprint = fingerprint.to_ascii_lowercase();
    match crate::history::read(&shared.clickhouse, &fingerprint, HISTORY_ROWS).await {
        Ok(rows) => Json(json!({"status": "success", "data": {"events": rows}})).into_response(),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the history is not readable now: {e}"),
        ),
    }
}

/// Every rule with its health, last evaluation, last error and series.
async fn rules(State(shared): State<Arc<Shared>>) -> Response {
    let rules = shared
        .rules
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    Json(json!({ "status": "success", "data": { "rules": rules } })).into_response()
}

/// Loads the rule files again: 200 with the number of rules, or 400 with every error (the
/// rules loaded before keep running).
async fn reload(State(shared): State<Arc<Shared>>) -> Response {
    let (tx, rx) = tokio::sync::oneshot::channel();
    if shared.input.try_send(Input::Reload(Some(tx))).is_err() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "error", "error": "the evaluator is busy; try again"})),
        )
            .into_response();
    }
    match rx.await {
        Ok(Ok(rules)) => {
            Json(json!({ "status": "success", "data": { "rules": rules } })).into_response()
        }
        Ok(Err(errors)) => (
            StatusCode::BAD_REQUEST,
            Json(json!({ "status": "error", "errors": errors })),
        )
            .into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "error", "error": "the evaluator stopped"})),
        )
            .into_response(),
    }
}
