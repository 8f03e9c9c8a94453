//! `cityops sim`: deterministic output, dumps that decode with the shipped config, ground truth.

use super::{cityops, decode_manifest, repo_root};

#[test]
fn the_same_seed_writes_byte_identical_files() {
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, seed: &str| {
        let path = dir.path().join(name);
        let out = cityops(&[
            "sim",
            "--seed",
            seed,
            "--start",
            "2026-11-26T00:00:00Z",
            "--duration",
            "20m",
            "--output",
            path.to_str().unwrap(),
        ]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stderr).contains("sim: "));
        std::fs::read(path).unwrap()
    };
    let (a, b, c) = (
        run("a.jsonl", "9"),
        run("b.jsonl", "9"),
        run("c.jsonl", "10"),
    );
    assert!(
        a.len() > 100_000,
        "20 minutes of the city is more than {} bytes",
        a.len()
    );
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn dumped_samples_of_every_feed_decode_through_the_binary_without_reject() {
    let dir = tempfile::tempdir().unwrap();
    let truth = dir.path().join("truth.json");
    let out = cityops(&[
        "sim",
        "--seed",
        "4",
        "--start",
        "2026-11-26T11:00:00Z",
        "--duration",
        "30m",
        "--dump",
        dir.path().to_str().unwrap(),
        "--dump-samples",
        "3",
        "--scenario",
        "pollution",
        "--ground-truth",
        truth.to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = repo_root().join("deploy/config/cityops.toml");
    let decoded = decode_manifest(dir.path(), &config);
    assert_eq!(decoded.len(), 33, "3 samples for each of the 11 feeds");
    for (sample, stdout) in decoded {
        assert!(!stdout.contains("\"reject\""), "{}: {stdout}", sample.file);
    }
    let truth: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(truth).unwrap()).unwrap();
    assert_eq!(truth["scenario"], "pollution");
    assert_eq!(truth["start"], "2026-11-26T11:02:00.000Z");
}

#[test]
fn bad_arguments_are_refused() {
    assert_eq!(
        cityops(&["sim", "--scenario", "tsunami", "--output", "-"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        cityops(&["sim", "--feeds", "air", "--output", "-"])
            .status
            .code(),
        Some(2)
    );
    let no_output = cityops(&["sim", "--duration", "1s"]);
    assert_eq!(no_output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&no_output.stderr).contains("--output FILE"));
}

/// The "N published"/"N produced" count from the summary line of a publishing run.
fn count_in(stderr: &str, marker: &str) -> u64 {
    let line = stderr
        .lines()
        .find(|l| l.contains(marker))
        .unwrap_or_else(|| panic!("no {marker:?} in:\n{stderr}"));
    let after = line.split(marker).next().unwrap();
    after.split_whitespace().last().unwrap().parse().unwrap()
}

/// A feed's message count from the per-feed summary lines.
fn feed_count(stderr: &str, feed: &str) -> u64 {
    let line = stderr
        .lines()
        .find(|l| l.trim_start().starts_with(feed))
        .unwrap_or_else(|| panic!("no {feed} line in:\n{stderr}"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn publishes_kafka_feeds_with_every_record_acknowledged_and_readable() {
    let kafka = cityops_testkit::KafkaBroker::start();
    kafka.create_topic("danang.transport.bus-gps", 3).unwrap();
    kafka.create_topic("danang.health.beds", 3).unwrap();
    let out = cityops(&[
        "sim",
        "--seed",
        "2",
        "--start",
        "2026-11-26T00:00:00Z",
        "--duration",
        "5m",
        "--rate",
        "200",
        "--unpaced",
        "--feeds",
        "bus_gps,hospital_beds",
        "--to-kafka",
        &kafka.bootstrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let produced = count_in(&stderr, " produced");
    assert!(
        stderr.contains(&format!("{produced} acknowledged, 0 failed")),
        "{stderr}"
    );
    let (bus_sent, beds_sent) = (
        feed_count(&stderr, "bus_gps"),
        feed_count(&stderr, "hospital_beds"),
    );
    assert_eq!(bus_sent + beds_sent, produced);
    let timeout = std::time::Duration::from_secs(60);
    let bus = kafka
        .consume("danang.transport.bus-gps", 3, bus_sent as usize, timeout)
        .unwrap()
        .len();
    let beds = kafka
        .consume("danang.health.beds", 3, beds_sent as usize, timeout)
        .unwrap()
        .len();
    assert_eq!((bus as u64, beds as u64), (bus_sent, beds_sent));
}

#[tokio::test(flavor = "multi_thread")]
async fn publishes_mqtt_feeds_at_qos1_and_a_subscriber_gets_them_all() {
    let broker = cityops_testkit::Mosquitto::start();
    let mut subscription = broker.subscribe("danang/#").await.unwrap();
    let address = format!("127.0.0.1:{}", broker.port());
    let out = tokio::task::spawn_blocking(move || {
        cityops(&[
            "sim",
            "--seed",
            "2",
            "--start",
            "2026-11-26T00:00:00Z",
            "--duration",
            "3m",
            "--unpaced",
            "--feeds",
            "air_quality,water_level,streetlight",
            "--to-mqtt",
            &address,
            "--mqtt-connections",
            "2",
        ])
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let published = count_in(&stderr, " published at QoS 1");
    assert!(stderr.contains("all acknowledged"), "{stderr}");
    let mut received = 0;
    while subscription
        .next(std::time::Duration::from_secs(2))
        .await
        .is_some()
    {
        received += 1;
    }
    assert_eq!(received, published);
}

#[test]
fn publishing_needs_a_broker_for_every_chosen_feed() {
    let out = cityops(&["sim", "--duration", "1s", "--to-kafka", "127.0.0.1:1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no broker for air_quality"));
}

#[tokio::test(flavor = "multi_thread")]
async fn backfill_writes_history_of_every_feed_into_clickhouse() {
    let server = cityops_testkit::ClickHouseServer::start();
    let dir = tempfile::tempdir().unwrap();
    // The shipped config, pointed at the test server.
    let shipped = std::fs::read_to_string(repo_root().join("deploy/config/cityops.toml")).unwrap();
    let config = dir.path().join("cityops.toml");
    std::fs::write(
        &config,
        shipped.replace(
            "${CITYOPS_CLICKHOUSE_URL:-http://127.0.0.1:18123}",
            &server.url(),
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap().to_owned();
    assert_eq!(
        cityops(&["migrate", "--config", &config, "--quiet"])
            .status
            .code(),
        Some(0)
    );

    let out = tokio::task::spawn_blocking(move || {
        cityops(&[
            "sim",
            "--seed",
            "8",
            "--backfill",
            "3h",
            "--to-clickhouse",
            "--config",
            &config,
        ])
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.contains("events and"))
        .unwrap_or_else(|| panic!("{stderr}"));
    let inserted: f64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(line.ends_with("and 0 rejects inserted"), "{line}");
    assert!(inserted > 5_000.0, "{line}");
    assert_eq!(
        server
            .scalar("SELECT count() FROM cityops.events")
            .await
            .unwrap(),
        inserted
    );
    assert_eq!(
        server
            .scalar("SELECT uniqExact(feed) FROM cityops.events")
            .await
            .unwrap(),
        11.0
    );
    // History spans the three hours before now, and the rollups were fed.
    let span = server
        .scalar("SELECT toUInt32(max(ts)) - toUInt32(min(ts)) FROM cityops.events")
        .await
        .unwrap();
    assert!(span > 2.5 * 3600.0, "span {span} s");
    assert!(
        server
            .scalar("SELECT countMerge(samples) FROM cityops.events_1m_district")
            .await
            .unwrap()
            > 0.0
    );
}

/// Scrapes `/metrics` on `port` until the body contains `needle` (or 60 s pass); returns the
/// last body.
fn scrape_until(port: u16, needle: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut body = String::new();
    while std::time::Instant::now() < deadline {
        if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            use std::io::{Read, Write};
            body.clear();
            if stream
                .write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
                .and_then(|()| stream.read_to_string(&mut body))
                .is_ok()
                && body.contains(needle)
            {
                break;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    body
}

#[test]
fn a_live_run_serves_its_metrics() {
    // A paced run to a real broker lasts its whole duration: scrape it while it runs.
    let broker = cityops_testkit::Mosquitto::start();
    let port = cityops_testkit::free_port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cityops"))
        .args([
            "sim",
            "--rate",
            "200",
            "--duration",
            "1m",
            "--feeds",
            "air_quality,traffic_counter",
        ])
        .args([
            "--to-mqtt",
            &format!("127.0.0.1:{}", broker.port()),
            "--listen-addr",
            &format!("127.0.0.1:{port}"),
        ])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let body = scrape_until(port, "cityops_sim_messages_sent_total{feed=");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        body.contains("cityops_sim_messages_sent_total{feed="),
        "{body}"
    );
    assert!(
        body.contains("cityops_sim_payload_bytes_sent_total{feed="),
        "{body}"
    );
}

#[test]
fn ctrl_c_stops_a_live_run_which_still_flushes_and_summarises() {
    let broker = cityops_testkit::Mosquitto::start();
    let port = cityops_testkit::free_port();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_cityops"))
        .args([
            "sim",
            "--rate",
            "500",
            "--duration",
            "10m",
            "--feeds",
            "traffic_counter",
        ])
        .args(["--to-mqtt", &format!("127.0.0.1:{}", broker.port())])
        .args(["--listen-addr", &format!("127.0.0.1:{port}")])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupted once it has sent something, so that there is something to flush.
    let body = scrape_until(port, "cityops_sim_messages_sent_total{feed=");
    assert!(
        body.contains("cityops_sim_messages_sent_total{feed="),
        "{body}"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let published = count_in(&stderr, " published at QoS 1");
    assert!(
        published > 0 && stderr.contains("all acknowledged"),
        "{stderr}"
    );
}
