//! The HTTP endpoint: `/metrics` (Prometheus text format), `/healthz` (the process runs) and
//! `/readyz` (every component can do its job).

use crate::{Readiness, TelemetryError};
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus::{CounterVec, Encoder, Registry, TextEncoder};
use std::net::SocketAddr;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
struct AppState {
    registry: Registry,
    readiness: Readiness,
    requests: CounterVec,
}

/// A bound, not yet serving, telemetry endpoint.
#[derive(Debug)]
pub struct TelemetryServer {
    listener: TcpListener,
}

impl TelemetryServer {
    /// Binds `addr` (port 0 picks a free port).
    pub async fn bind(addr: SocketAddr) -> Result<Self, TelemetryError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| TelemetryError::Bind { addr, source })?;
        Ok(TelemetryServer { listener })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> Result<SocketAddr, std::io::Error> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` is cancelled.
    pub async fn run(
        self,
        registry: Registry,
        readiness: Readiness,
        shutdown: CancellationToken,
    ) -> Result<(), TelemetryError> {
        serve(self.listener, registry, readiness, Router::new(), shutdown).await
    }

    /// Serves the telemetry endpoints and a service's own `routes` (an API) until `shutdown`.
    pub async fn run_with(
        self,
        registry: Registry,
        readiness: Readiness,
        routes: Router,
        shutdown: CancellationToken,
    ) -> Result<(), TelemetryError> {
        serve(self.listener, registry, readiness, routes, shutdown).await
    }
}

/// Serves the endpoint on `listener` until `shutdown` is cancelled. Registers
/// `cityops_telemetry_http_requests_total{path,code}` on `registry`.
pub async fn serve(
    listener: TcpListener,
    registry: Registry,
    readiness: Readiness,
    routes: Router,
    shutdown: CancellationToken,
) -> Result<(), TelemetryError> {
    let requests = crate::Metrics::new(&registry, "telemetry").counter_vec(
        "http_requests_total",
        "Requests to the telemetry endpoint, by path and status code",
        &["path", "code"],
    )?;
    let addr = listener
        .local_addr()
        .map_err(|source| TelemetryError::Bind {
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            source,
        })?;
    let state = AppState {
        registry,
        readiness,
        requests,
    };
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
        .merge(routes);
    tracing::info!(%addr, "telemetry endpoint listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
        .map_err(|source| TelemetryError::Bind { addr, source })
}

async fn metrics(State(state): State<AppState>) -> Response {
    let families = state.registry.gather();
    let mut body = Vec::new();
    let encoder = TextEncoder::new();
    let response = match encoder.encode(&families, &mut body) {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, encoder.format_type().to_owned())],
            body,
        )
            .into_response(),
        Err(error) => {
            tracing::warn!(%error, "cannot encode metrics");
            (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response()
        }
    };
    count(&state, "/metrics", response.status());
    response
}

async fn healthz(State(state): State<AppState>) -> Response {
    count(&state, "/healthz", StatusCode::OK);
    (StatusCode::OK, "ok\n").into_response()
}

async fn readyz(State(state): State<AppState>) -> Response {
    let not_ready = state.readiness.not_ready();
    let (status, body) = if not_ready.is_empty() {
        (StatusCode::OK, "ready\n".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", not_ready.join(", ")),
        )
    };
    count(&state, "/readyz", status);
    (status, body).into_response()
}

fn count(state: &AppState, path: &str, status: StatusCode) {
    state
        .requests
        .with_label_values(&[path, status.as_str()])
        .inc();
}
