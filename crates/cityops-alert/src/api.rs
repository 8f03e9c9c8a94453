//! The alerter's HTTP API, served beside `/metrics`, `/healthz` and `/readyz`:
//! `GET /api/v1/alerts`, `GET /api/v1/rules`, `POST /-/reload` (docs/alert-api.yaml).

use crate::records::fingerprint_hex;
use crate::service::{Input, Shared};
use axum::extract::{Query, State};
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
        .route("/api/v1/rules", get(rules))
        .route("/-/reload", post(reload))
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
    let alerts = shared.alerts.lock().unwrap_or_else(PoisonError::into_inner);
    let data: Vec<serde_json::Value> = alerts
        .values()
        .filter(|n| {
            filter.iter().all(|(key, want)| match key.as_str() {
                "state" => n.to.as_str() == want,
                "severity" => n.severity.as_str() == want,
                "fingerprint" => fingerprint_hex(n.fingerprint) == *want,
                label => n.labels.get(label) == Some(want),
            })
        })
        .map(|n| {
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
            })
        })
        .collect();
    Json(json!({ "status": "success", "data": { "alerts": data } })).into_response()
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
