//! `cityops ingest`: consume the config's Kafka and MQTT feeds into ClickHouse until SIGTERM or
//! Ctrl-C, serving `/metrics`, `/healthz` and `/readyz`.

use anyhow::Context;
use cityops_clickhouse::ClickHouse;
use cityops_config::{Config, SourceKind};
use cityops_ingest::IngestMetrics;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Arguments of `cityops ingest`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The config file.
    #[arg(long, short)]
    config: PathBuf,
    /// Serve metrics here instead of `telemetry.listen_addr`.
    #[arg(long)]
    listen_addr: Option<SocketAddr>,
    /// Which sources to consume: `all` (every source the config has feeds of), `kafka` or
    /// `mqtt`.
    #[arg(long, default_value = "all", value_parser = ["all", "kafka", "mqtt"])]
    source: String,
    /// Retire this MQTT ingest for good (scaling in): its sessions unsubscribe from the
    /// shared subscriptions, store what the broker queued for them and what the spool holds,
    /// then end the sessions at the broker; exits 0 once done. Run it with the config (client
    /// id, spool) of the process retired, after that process stopped. MQTT only.
    #[arg(long)]
    retire: bool,
}

/// Exit 0 after a clean stop (everything read stored and committed), 1 otherwise.
pub fn run(args: &Args) -> ExitCode {
    match ingest(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("error: {error:#}");
            ExitCode::from(1)
        }
    }
}

fn ingest(args: &Args) -> anyhow::Result<bool> {
    let config = Config::load(&args.config)?;
    cityops_telemetry::init_tracing(&config.telemetry)?;
    crate::check::warn_cleartext_secrets(&args.config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("cityops-ingest")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let cancel = CancellationToken::new();
    runtime.spawn(stop_on_signal(cancel.clone()));

    let registry = prometheus::Registry::new();
    cityops_telemetry::register_process_metrics(&registry, env!("CARGO_PKG_VERSION"))?;
    let metrics = IngestMetrics::new(&registry)?;
    let readiness = cityops_telemetry::Readiness::default();
    let addr = args.listen_addr.unwrap_or(config.telemetry.listen_addr);
    let server = runtime.block_on(cityops_telemetry::TelemetryServer::bind(addr))?;
    let telemetry_stop = CancellationToken::new();
    let telemetry =
        runtime.spawn(server.run(registry.clone(), readiness.clone(), telemetry_stop.clone()));
    tracing::info!(%addr, "serving /metrics, /healthz and /readyz");

    // Not ready until ClickHouse has been reached: a server that refuses us (a wrong password)
    // must not look like a working ingest.
    let connecting = readiness.register("clickhouse_connect");
    let Some(clickhouse) = runtime.block_on(connect(&config, &cancel))? else {
        return Ok(true);
    };
    connecting.set_ready(true);
    let has = |source| config.feeds.iter().any(|f| f.source == source);
    let kafka = has(SourceKind::Kafka) && args.source != "mqtt" && !args.retire;
    let mqtt = has(SourceKind::Mqtt) && args.source != "kafka";
    if args.retire && !mqtt {
        anyhow::bail!("--retire is for an MQTT ingest, and the config has no MQTT feed");
    }
    let retire = args.retire;
    if !kafka && !mqtt {
        anyhow::bail!(
            "the config has no feed of the chosen source ({}): nothing to consume",
            args.source
        );
    }
    let config = std::sync::Arc::new(config);
    // Each source blocks a thread of its own; one failing stops the other.
    let mqtt_thread = mqtt.then(|| {
        let (config, clickhouse, metrics, readiness, handle, cancel) = (
            std::sync::Arc::clone(&config),
            clickhouse.clone(),
            metrics.clone(),
            readiness.clone(),
            runtime.handle().clone(),
            cancel.clone(),
        );
        std::thread::Builder::new()
            .name("cityops-mqtt".into())
            .spawn(move || {
                let result = cityops_ingest::mqtt::run(
                    &config,
                    clickhouse,
                    metrics,
                    &readiness,
                    handle,
                    cancel.clone(),
                    retire,
                );
                if result.is_err() {
                    cancel.cancel();
                }
                result
            })
    });
    let mut drained = true;
    if kafka {
        let result = cityops_ingest::kafka::run(
            &config,
            clickhouse,
            metrics,
            &readiness,
            runtime.handle().clone(),
            cancel.clone(),
        );
        if result.is_err() {
            cancel.cancel();
        }
        drained &= report("kafka", result?);
    }
    if let Some(thread) = mqtt_thread {
        let result = thread
            .context("cannot start the MQTT thread")?
            .join()
            .map_err(|_| anyhow::anyhow!("the MQTT ingest thread panicked"))?;
        drained &= report("mqtt", result?);
    }
    telemetry_stop.cancel();
    let _ = runtime.block_on(telemetry);
    runtime.shutdown_timeout(Duration::from_secs(2));
    Ok(drained)
}

/// Logs how a source's run ended; returns whether it drained.
fn report(source: &str, summary: cityops_ingest::Summary) -> bool {
    tracing::info!(
        source,
        messages = summary.messages,
        batches = summary.batches,
        drained = summary.drained,
        "stopped"
    );
    summary.drained
}

/// Connects to ClickHouse, retrying with backoff until it answers or the run is cancelled
/// (`None`). A TLS set-up that cannot work (an unreadable CA file) is not retried.
async fn connect(
    config: &Config,
    cancel: &CancellationToken,
) -> anyhow::Result<Option<ClickHouse>> {
    let mut backoff = cityops_ingest::Backoff::new(
        Duration::from_millis(config.ingest.retry_initial_ms),
        Duration::from_millis(config.ingest.retry_max_ms),
        u64::from(std::process::id()),
    );
    loop {
        match ClickHouse::connect(&config.clickhouse).await {
            Ok(clickhouse) => {
                // Look-ups are bounded like the INSERTs (at least 10 s: the stored-offset
                // reads at start scan more than an INSERT writes).
                let timeout = Duration::from_millis(config.ingest.insert_timeout_ms)
                    .max(Duration::from_secs(10));
                return Ok(Some(clickhouse.with_query_timeout(timeout)));
            }
            Err(error @ cityops_clickhouse::Error::Tls { .. }) => return Err(error.into()),
            Err(error) => {
                if backoff.attempts().is_multiple_of(10) {
                    tracing::warn!(%error, url = config.clickhouse.url, "cannot use ClickHouse yet; retrying");
                }
                tokio::select! {
                    () = cancel.cancelled() => return Ok(None),
                    () = tokio::time::sleep(backoff.next_delay()) => {}
                }
            }
        }
    }
}

/// Cancels on the first SIGTERM or SIGINT.
pub(crate) async fn stop_on_signal(cancel: CancellationToken) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(error) => {
            tracing::error!(%error, "cannot listen for SIGTERM");
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
    cancel.cancel();
}
