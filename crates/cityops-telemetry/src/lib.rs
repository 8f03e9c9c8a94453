//! Shared telemetry for every cityops service: `tracing` set-up, metric registration helpers
//! that enforce the naming rule, and the HTTP endpoint serving `/metrics`, `/healthz` and
//! `/readyz`.
//!
//! Metrics are registered on a [`prometheus::Registry`] that the binary creates and passes to
//! each component; nothing here touches the global default registry.

mod logs;
mod metrics;
mod readiness;
mod server;

pub use logs::init_tracing;
pub use metrics::{Metrics, check_metric_name, register_process_metrics};
pub use readiness::{Readiness, ReadinessHandle};
pub use server::{TelemetryServer, serve};

/// What can go wrong setting telemetry up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The log filter does not parse.
    #[error("invalid log filter {filter:?}: {source}")]
    LogFilter {
        /// The filter text.
        filter: String,
        /// The parser's complaint.
        source: tracing_subscriber::filter::ParseError,
    },
    /// A global subscriber was already installed.
    #[error("tracing is already initialised")]
    AlreadyInitialised,
    /// A metric name breaks the naming rule or clashes with one registered earlier.
    #[error("metric {name}: {reason}")]
    Metric {
        /// The full metric name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The endpoint's address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}
