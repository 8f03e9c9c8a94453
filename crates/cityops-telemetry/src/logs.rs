//! `tracing` subscriber set-up: human or JSON lines on stderr, filter from config or env.

use crate::TelemetryError;
use cityops_config::{LogFormat, TelemetryConfig};
use tracing_subscriber::EnvFilter;

/// Environment variable that overrides `telemetry.log_level`.
pub const LOG_ENV: &str = "CITYOPS_LOG";

/// Installs the global subscriber. Logs go to stderr so that commands printing data on stdout
/// (`cityops decode`) stay pipeable.
pub fn init_tracing(config: &TelemetryConfig) -> Result<(), TelemetryError> {
    let filter_text = std::env::var(LOG_ENV).unwrap_or_else(|_| config.log_level.clone());
    let filter = EnvFilter::try_new(&filter_text).map_err(|source| TelemetryError::LogFilter {
        filter: filter_text.clone(),
        source,
    })?;
    // Colours only on a terminal: log files and journald get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let result = match config.log_format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|_| TelemetryError::AlreadyInitialised)
}
