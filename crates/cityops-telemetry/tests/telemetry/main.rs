//! Integration tests of the telemetry endpoint over real HTTP, linted by the real `promtool`.

// Test helpers may unwrap: a failure there is a test failure with its message.
#![allow(clippy::unwrap_used)]

use cityops_telemetry::{Metrics, Readiness, TelemetryServer, register_process_metrics};
use prometheus::Registry;
use std::io::Write;
use std::process::{Command, Stdio};
use tokio_util::sync::CancellationToken;

/// Starts the endpoint on a free port with a registry that has one metric of each kind.
async fn start(readiness: Readiness) -> (String, Registry, CancellationToken) {
    let registry = Registry::new();
    register_process_metrics(&registry, "0.1.0-test").unwrap();
    let ingest = Metrics::new(&registry, "ingest");
    let rows = ingest
        .counter_vec(
            "rows_inserted_total",
            "Rows written to ClickHouse",
            &["feed"],
        )
        .unwrap();
    rows.with_label_values(&["air_quality"]).inc_by(42.0);
    let lag = ingest
        .gauge_vec(
            "consumer_lag_messages",
            "Messages behind the log end",
            &["topic", "partition"],
        )
        .unwrap();
    lag.with_label_values(&["danang.citizen.reports", "0"])
        .set(7.0);
    let seconds = ingest
        .histogram_vec(
            "insert_duration_seconds",
            "Time to insert one batch",
            &["table"],
            vec![0.005, 0.05, 0.5, 5.0],
        )
        .unwrap();
    seconds.with_label_values(&["events"]).observe(0.012);

    let server = TelemetryServer::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let base = format!("http://{}", server.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    tokio::spawn(server.run(registry.clone(), readiness, shutdown.clone()));
    (base, registry, shutdown)
}

async fn get(url: &str) -> (u16, String) {
    let response = reqwest::get(url).await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

#[tokio::test]
async fn metrics_pass_promtool_lint_and_follow_the_naming_rule() {
    let (base, registry, shutdown) = start(Readiness::default()).await;
    // One scrape first, so the endpoint's own request counter has a sample.
    get(&format!("{base}/healthz")).await;
    let (status, body) = get(&format!("{base}/metrics")).await;
    assert_eq!(status, 200);
    for name in [
        "cityops_ingest_rows_inserted_total{feed=\"air_quality\"} 42",
        "cityops_ingest_insert_duration_seconds_bucket",
        "cityops_telemetry_http_requests_total{code=\"200\",path=\"/healthz\"} 1",
        "cityops_build_version_info{version=\"0.1.0-test\"} 1",
        "process_resident_memory_bytes",
    ] {
        assert!(body.contains(name), "missing {name} in:\n{body}");
    }

    let mut promtool = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => panic!(
            "promtool is needed to lint /metrics ({e}); install it with `make deps` \
             (or `sudo apt-get install -y prometheus`)"
        ),
    };
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    let findings = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && findings.trim().is_empty(),
        "promtool findings:\n{findings}"
    );

    // Every cityops_ family registered through the helpers obeys the naming rule.
    for family in registry.gather() {
        let name = family.name();
        if name.starts_with("cityops_") && name != "cityops_build_version_info" {
            let is_counter = family.get_field_type() == prometheus::proto::MetricType::COUNTER;
            cityops_telemetry::check_metric_name(name, is_counter).unwrap();
        }
    }
    shutdown.cancel();
}

#[tokio::test]
async fn healthz_is_always_ok_and_readyz_follows_components() {
    let readiness = Readiness::default();
    let clickhouse = readiness.register("clickhouse");
    let (base, _registry, shutdown) = start(readiness).await;
    assert_eq!(
        get(&format!("{base}/healthz")).await,
        (200, "ok\n".to_owned())
    );
    assert_eq!(
        get(&format!("{base}/readyz")).await,
        (503, "not ready: clickhouse\n".to_owned())
    );
    clickhouse.set_ready(true);
    assert_eq!(
        get(&format!("{base}/readyz")).await,
        (200, "ready\n".to_owned())
    );
    clickhouse.set_ready(false);
    assert_eq!(get(&format!("{base}/readyz")).await.0, 503);
    assert_eq!(get(&format!("{base}/nope")).await.0, 404);
    shutdown.cancel();
}

#[tokio::test]
async fn the_endpoint_stops_on_cancellation() {
    let registry = Registry::new();
    let server = TelemetryServer::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = server.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(server.run(registry, Readiness::default(), shutdown.clone()));
    assert_eq!(get(&format!("http://{addr}/healthz")).await.0, 200);
    shutdown.cancel();
    // The server future returns cleanly, promptly. (Probing the port afterwards would race with
    // other tests that bind free ports.)
    tokio::time::timeout(std::time::Duration::from_secs(30), task)
        .await
        .expect("the endpoint stops within 5 s of cancellation")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn every_metric_this_crate_serves_is_in_docs_metrics_md() {
    let readiness = Readiness::default();
    let registry = Registry::new();
    register_process_metrics(&registry, "0.1.0").unwrap();
    let server = TelemetryServer::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let base = format!("http://{}", server.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    tokio::spawn(server.run(registry.clone(), readiness, shutdown.clone()));
    get(&format!("{base}/metrics")).await;
    let docs = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/metrics.md"
    ))
    .unwrap();
    for family in registry.gather() {
        assert!(
            docs.contains(&format!("`{}`", family.name())),
            "docs/metrics.md does not list {}",
            family.name()
        );
    }
    shutdown.cancel();
}
