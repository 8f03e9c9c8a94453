//! `cityops alert`: run the alert rules on the live feeds until SIGTERM or Ctrl-C, notifying
//! Alertmanager and webhooks and writing the alert history, serving the API beside
//! `/metrics`, `/healthz` and `/readyz`.

use anyhow::Context;
use cityops_config::Config;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Arguments of `cityops alert`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The config file (its `[alert]` section names the rule files).
    #[arg(long, short)]
    config: PathBuf,
    /// Serve the API and metrics here instead of `alert.listen_addr`.
    #[arg(long)]
    listen_addr: Option<SocketAddr>,
}

/// Exit 0 after a clean stop, 1 on an error (every rule-file error is printed).
pub fn run(args: &Args) -> ExitCode {
    match alert(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("error: {error:#}");
            ExitCode::from(1)
        }
    }
}

fn alert(args: &Args) -> anyhow::Result<()> {
    let config = Config::load(&args.config)?;
    cityops_telemetry::init_tracing(&config.telemetry)?;
    crate::check::warn_cleartext_secrets(&args.config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("cityops-alert")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let cancel = CancellationToken::new();
    runtime.spawn(crate::ingest::stop_on_signal(cancel.clone()));
    let registry = prometheus::Registry::new();
    cityops_telemetry::register_process_metrics(&registry, env!("CARGO_PKG_VERSION"))?;
    let readiness = cityops_telemetry::Readiness::default();
    let addr = args.listen_addr.unwrap_or(config.alert.listen_addr);
    let server = runtime.block_on(cityops_telemetry::TelemetryServer::bind(addr))?;
    tracing::info!(%addr, "serving the alert API, /metrics, /healthz and /readyz");
    let result = cityops_alert::run(
        &config,
        &registry,
        &readiness,
        server,
        runtime.handle(),
        cancel,
    );
    runtime.shutdown_timeout(Duration::from_secs(2));
    result.map_err(Into::into)
}
