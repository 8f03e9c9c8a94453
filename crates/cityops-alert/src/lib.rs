//! The alerter service around the pure rule engine (`cityops-rules`): its own sources (the
//! feeds over MQTT and Kafka, decoded as the ingest decodes them), one evaluator that owns the
//! engine, an outbox and a state file on local disk, and the receivers: Alertmanager, webhooks
//! and the `alert_events` history. `cityops alert` calls [`run`].

pub mod api;
pub mod backtest;
pub mod console;
pub mod handling;
pub mod history;
pub mod metrics;
pub mod outbox;
pub mod queries;
pub mod records;
pub mod senders;
pub mod service;
pub mod sources;
pub mod state;
pub mod warm;

pub use metrics::AlertMetrics;
pub use service::AlertError;

use cityops_config::Config;
use cityops_feeds::FeedSet;
use cityops_telemetry::Readiness;
use service::{Evaluator, Shared, load_rules, outbox_consumers};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Evaluations waiting for the evaluator at most (a full queue holds the sources back).
const INPUT_QUEUE: usize = 4_096;

/// Runs the alerter until `cancel`: loads the rules (an error stops the start), restores the
/// state, starts the sources and senders, serves the API on `server`. Blocks this thread (the
/// Kafka member runs on it); the other parts run on `runtime`.
pub fn run(
    config: &Config,
    registry: &prometheus::Registry,
    readiness: &Readiness,
    server: cityops_telemetry::TelemetryServer,
    runtime: &tokio::runtime::Handle,
    cancel: CancellationToken,
) -> Result<(), AlertError> {
    let alert = &config.alert;
    if alert.rule_files.is_empty() {
        return Err(AlertError::NoRules);
    }
    let rules = load_rules(&alert.rule_files).map_err(AlertError::Rules)?;
    let metrics = AlertMetrics::new(registry)?;
    metrics.rules.set(rules.rules.len() as f64);
    metrics.reload_success.set(1.0);
    metrics
        .reload_timestamp
        .set(service::now_ms() as f64 / 1000.0);
    tracing::info!(
        rules = rules.rules.len(),
        files = alert.rule_files.len(),
        "rules loaded"
    );

    let state = state::StateFile::new(&alert.state_dir)?;
    let rule_set_for_warm = rules.clone();
    let mut engine = cityops_rules::Engine::new(rules);
    let saved = state.load()?.unwrap_or_default();
    let restored = engine.restore(saved.engine);
    let outbox = outbox::Outbox::open(&alert.state_dir, &outbox_consumers(config))?;
    // Transitions after the last state file: the outbox has them; the engine and the alerts
    // take them again.
    let mut alerts: std::collections::BTreeMap<(String, u64), records::Notice> = saved
        .alerts
        .into_iter()
        .map(|n| ((n.rule.clone(), n.fingerprint), n))
        .collect();
    let mut resolved = saved.resolved;
    let mut handling: handling::HandlingMap = saved.handling.into_iter().collect();
    let replay = outbox.next_for(service::STATE_CONSUMER, usize::MAX);
    for (_, n) in replay.iter().filter(|(_, n)| n.action.is_none()) {
        engine.force_state(
            &n.rule,
            n.fingerprint,
            &n.labels,
            n.domain,
            n.to,
            n.at_ms,
            n.active_since_ms,
            n.fired_at_ms,
        );
    }
    for (_, n) in &replay {
        service::apply_all(&mut alerts, &mut resolved, &mut handling, n);
    }
    tracing::info!(series = restored, alerts = alerts.len(), replayed = replay.len(), dir = %alert.state_dir.display(), "state restored");
    let started_ms = service::now_ms();
    // Only a restart has something the brokers kept for it and a clock that ran on meanwhile.
    let catching_up = alert.catch_up_ms > 0 && (restored > 0 || !alerts.is_empty());
    if catching_up {
        engine.hold_quiet_series(started_ms, i64::MAX);
    }
    if alert.warm_start_ms > 0 {
        warm_start(&mut engine, &rule_set_for_warm, config, runtime, &metrics);
    } else {
        tracing::info!(
            "warm start off (alert.warm_start_ms = 0): the windows fill as events arrive"
        );
    }

    let (input, input_rx) = std::sync::mpsc::sync_channel(INPUT_QUEUE);
    let shared = Arc::new(Shared {
        alerts: Mutex::new(alerts),
        resolved: Mutex::new(resolved),
        handling: Mutex::new(handling),
        tokens: alert
            .api_tokens
            .iter()
            .filter_map(|t| t.token.clone().map(|token| (t.name.clone(), token)))
            .collect(),
        replica: alert.replica.clone(),
        clickhouse: config.clickhouse.clone(),
        rules: Mutex::new(Vec::new()),
        query_rules: Mutex::new(Vec::new()),
        alertmanager_wake: tokio::sync::Notify::new(),
        outbox: Mutex::new(outbox),
        outbox_wake: tokio::sync::Notify::new(),
        kafka_commit: Mutex::new(Default::default()),
        mqtt: std::sync::OnceLock::new(),
        input,
        metrics,
        external_url: alert.external_url.clone(),
        caught_up: std::sync::atomic::AtomicBool::new(!catching_up),
    });
    // Registered before the evaluator starts: its catch-up waits for them.
    let mqtt_ready = readiness.register("mqtt");
    let kafka_ready = readiness.register("kafka");
    let feeds = Arc::new(
        FeedSet::new(&config.feeds, config.rejects.max_raw_bytes)
            .map_err(AlertError::Source)?
            .with_label_names(&config.labels),
    );

    let tasks = tokio_util::task::TaskTracker::new();
    let evaluator = Evaluator {
        escalation: alert.escalation.clone(),
        engine,
        rule_files: alert.rule_files.clone(),
        state,
        shared: Arc::clone(&shared),
        tick: Duration::from_millis(alert.tick_ms),
        snapshot_interval: Duration::from_millis(alert.snapshot_interval_ms),
        catch_up: service::CatchUp {
            started_ms,
            catch_up_ms: i64::try_from(alert.catch_up_ms).unwrap_or(i64::MAX),
            readiness: readiness.clone(),
            ends_ms: None,
        },
    };
    // Before anything starts: a CA file that cannot be read stops the start with its reason.
    let query_client = queries::client(config)
        .map_err(|e| AlertError::Source(format!("the query rules' ClickHouse client: {e}")))?;
    let evaluator_cancel = CancellationToken::new();
    let evaluator_thread = {
        let stop = evaluator_cancel.clone();
        std::thread::Builder::new()
            .name("cityops-alert-eval".into())
            .spawn(move || evaluator.run(input_rx, stop))
            .map_err(|e| AlertError::Source(format!("cannot start the evaluator: {e}")))?
    };

    let _guard = runtime.enter();
    tasks.spawn(senders::alertmanager(
        alert.clone(),
        Arc::clone(&shared),
        cancel.clone(),
    ));
    for hook in &alert.webhooks {
        tasks.spawn(senders::webhook(
            hook.clone(),
            alert.queue_max,
            Arc::clone(&shared),
            cancel.clone(),
        ));
    }
    tasks.spawn(senders::history(
        config.clickhouse.clone(),
        Arc::clone(&shared),
        cancel.clone(),
    ));
    tasks.spawn(watch_rule_files(
        alert.rule_files.clone(),
        Arc::clone(&shared),
        cancel.clone(),
    ));
    tasks.spawn(reload_on_sighup(Arc::clone(&shared), cancel.clone()));
    {
        let client = query_client;
        let (config, shared, cancel) = (config.clone(), Arc::clone(&shared), cancel.clone());
        tasks.spawn(async move { queries::run(&config, client, shared, cancel).await });
    }
    if alert.peer_sync_ms > 0 {
        tasks.spawn(history::follow_peers(
            config.clickhouse.clone(),
            Arc::clone(&shared),
            Duration::from_millis(alert.peer_sync_ms),
            cancel.clone(),
        ));
    }
    let server_stop = CancellationToken::new();
    let api = api::routes(Arc::clone(&shared));
    let server_task = runtime.spawn(server.run_with(
        registry.clone(),
        readiness.clone(),
        api,
        server_stop.clone(),
    ));

    let mqtt_task = sources::start_mqtt(
        config,
        Arc::clone(&feeds),
        Arc::clone(&shared),
        mqtt_ready,
        cancel.clone(),
    )
    .map_err(AlertError::Source)?;
    let kafka_result = sources::run_kafka(
        config,
        feeds,
        Arc::clone(&shared),
        kafka_ready,
        cancel.clone(),
    );
    if let Err(error) = &kafka_result {
        tracing::error!(%error, "kafka source failed; stopping");
        cancel.cancel();
    }
    runtime.block_on(cancel.cancelled());

    // Shutdown: sources first (nothing new comes in), then the evaluator writes its last state,
    // then the senders and the API stop (what was not delivered waits in the outbox), and last
    // the MQTT sessions close cleanly, their last acknowledgements sent (the broker keeps the
    // sessions and whatever was not acknowledged).
    if let Some(task) = mqtt_task {
        task.abort();
        let _ = runtime.block_on(task);
    }
    evaluator_cancel.cancel();
    let evaluated = evaluator_thread
        .join()
        .unwrap_or_else(|_| Err(AlertError::Source("the evaluator panicked".into())));
    tasks.close();
    runtime.block_on(async {
        let _ = tokio::time::timeout(Duration::from_secs(5), tasks.wait()).await;
    });
    server_stop.cancel();
    let _ = runtime.block_on(server_task);
    match Arc::into_inner(shared) {
        Some(shared) => {
            if let Some(mqtt) = shared.mqtt.into_inner() {
                runtime.block_on(mqtt.shutdown(Duration::from_secs(5)));
            }
        }
        None => tracing::warn!(
            "a task still held the alerter's state at shutdown; the MQTT sessions close with the process"
        ),
    }
    kafka_result.map_err(AlertError::Source)?;
    evaluated
}

/// Fills the windows from ClickHouse's recent events; with ClickHouse unreachable (or too slow:
/// 30 s) starts cold and says so.
fn warm_start(
    engine: &mut cityops_rules::Engine,
    rules: &cityops_rules::RuleSet,
    config: &Config,
    runtime: &tokio::runtime::Handle,
    metrics: &AlertMetrics,
) {
    let lookback = i64::try_from(config.alert.warm_start_ms).unwrap_or(i64::MAX);
    let started = std::time::Instant::now();
    let read = runtime.block_on(async {
        tokio::time::timeout(
            Duration::from_secs(30),
            warm::recent_events(&config.clickhouse, rules, service::now_ms(), lookback),
        )
        .await
        .unwrap_or_else(|_| Err("no answer within 30 s".into()))
    });
    match read {
        Ok(events) => {
            for event in &events {
                engine.warm(event);
            }
            metrics.warm.set(1.0);
            tracing::info!(
                events = events.len(),
                series = engine.series_count(),
                took_ms = started.elapsed().as_millis() as u64,
                "warm start: windows filled from ClickHouse"
            );
        }
        Err(error) => {
            metrics.warm.set(0.0);
            tracing::warn!(%error, "cold start: ClickHouse did not give the recent events; the windows fill as events arrive");
        }
    }
}

/// Reloads when a rule file's modification time changes (checked every second).
async fn watch_rule_files(
    files: Vec<std::path::PathBuf>,
    shared: Arc<Shared>,
    cancel: CancellationToken,
) {
    let stamp = |files: &[std::path::PathBuf]| {
        files
            .iter()
            .map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
            .collect::<Vec<_>>()
    };
    let mut last = stamp(&files);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        let now = stamp(&files);
        if now != last {
            last = now;
            tracing::info!("a rule file changed; reloading");
            let _ = shared.input.try_send(service::Input::Reload(None));
        }
    }
}

/// Reloads on SIGHUP.
async fn reload_on_sighup(shared: Arc<Shared>, cancel: CancellationToken) {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        tracing::warn!(
            "cannot listen for SIGHUP; reload with POST /-/reload or by changing a rule file"
        );
        return;
    };
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading the rules");
                let _ = shared.input.try_send(service::Input::Reload(None));
            }
        }
    }
}
