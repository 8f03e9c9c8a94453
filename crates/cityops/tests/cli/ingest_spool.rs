//! Faults of the MQTT ingest's spool on real services: a segment damaged on disk (the start
//! refuses, `cityops spool check|salvage` keep what is intact) and the spool's filesystem full
//! (nothing more acknowledged, nothing lost, back by itself once there is room).

use crate::ingest_mqtt::{
    Rig, good_load, publish, publish_in_background, roomy_broker, wait_connected, wait_metric,
};
use crate::ingest_support::{Ingest, ProofTables, http_get, metric_sum};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The spool's segment files, oldest first.
fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    found.sort();
    found
}

/// Waits for `ingest` to exit by itself; its exit code.
fn wait_exit(ingest: &mut Ingest, timeout: Duration) -> Option<i32> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = ingest.child.try_wait().unwrap() {
            return status.code();
        }
        assert!(
            Instant::now() < deadline,
            "the ingest kept running on a damaged spool:\n{}",
            ingest.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_spool_segment_stops_the_start_and_salvage_keeps_every_intact_message() {
    let mut rig = Rig::with_broker(roomy_broker()).await;
    let config = rig.config("a", "", "");
    let spool = rig.dir.path().join("spool-a");
    let mut load = good_load(3_000);
    let mut ingest = Ingest::spawn(&config, rig.dir.path(), "a");
    wait_connected(&ingest, 4.0).await;
    let (first, second) = load.messages.split_at(1_000);
    assert_eq!(publish(rig.mosquitto.port(), first).await, 1_000);
    assert_eq!(
        rig.wait_for_rows(2_000.0, Duration::from_secs(60)).await,
        2_000.0
    );
    // With ClickHouse away the rest stays in the spool only.
    rig.clickhouse.stop();
    assert_eq!(publish(rig.mosquitto.port(), second).await, 2_000);
    let backlog = wait_metric(
        &ingest,
        "cityops_ingest_spool_backlog_messages",
        2_000.0,
        Duration::from_secs(60),
    )
    .await;
    assert!(
        backlog >= 2_000.0,
        "spooled: {backlog}\n{}",
        ingest.log_text()
    );
    ingest.kill9();

    // A bit flipped in the middle of the newest segment, among the messages not yet stored.
    let segment = segments(&spool).pop().unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    let middle = bytes.len() * 3 / 4;
    bytes[middle] ^= 0x10;
    std::fs::write(&segment, &bytes).unwrap();
    rig.clickhouse.start_again();

    let mut refused = Ingest::spawn(&config, rig.dir.path(), "a-refused");
    let code = wait_exit(&mut refused, Duration::from_secs(60));
    let log = refused.log_text();
    assert_ne!(code, Some(0), "{log}");
    assert!(
        log.contains(&segment.display().to_string())
            && log.contains("damaged record at byte")
            && log.contains("cityops spool salvage"),
        "the refusal names the file, the byte and the way out:\n{log}"
    );

    let config_arg = config.to_str().unwrap();
    let check = crate::cityops(&["spool", "check", "--config", config_arg]);
    let report = String::from_utf8_lossy(&check.stdout).into_owned();
    eprintln!("{report}");
    assert_eq!(check.status.code(), Some(1), "{report}");
    let damaged: Vec<&str> = report
        .lines()
        .filter(|l| l.starts_with("damaged:"))
        .collect();
    assert_eq!(damaged.len(), 1, "{report}");
    assert!(damaged[0].contains("checksum"), "{report}");
    // One record is unreadable: its sequence number is named.
    let lost = damaged[0]
        .split("(messages ")
        .nth(1)
        .and_then(|rest| rest.split(" unreadable").next())
        .unwrap_or_else(|| panic!("no lost range in: {}", damaged[0]));
    let (low, high) = lost.split_once("..=").unwrap();
    assert_eq!(low, high, "one message lost: {report}");

    let salvage = crate::cityops(&["spool", "salvage", "--config", config_arg]);
    let salvaged = String::from_utf8_lossy(&salvage.stdout).into_owned();
    eprintln!("{salvaged}");
    assert_eq!(salvage.status.code(), Some(0), "{salvaged}");
    let aside = spool.join("damaged").join(segment.file_name().unwrap());
    assert_eq!(
        std::fs::read(&aside).unwrap(),
        bytes,
        "the damaged file is kept aside"
    );
    let again = crate::cityops(&["spool", "check", "--config", config_arg]);
    assert_eq!(again.status.code(), Some(0), "{:?}", again);

    let ingest = Ingest::spawn(&config, rig.dir.path(), "a-salvaged");
    rig.wait_for_rows(5_998.0, Duration::from_secs(120)).await;
    ingest.wait_settled().await;
    // Exactly the one unreadable message is missing; everything else is stored once.
    let stored = rig
        .clickhouse
        .sql("SELECT DISTINCT entity_id FROM proof.events FORMAT TSV")
        .await
        .unwrap();
    let stored: std::collections::BTreeSet<&str> = stored.lines().collect();
    let missing: Vec<String> = load
        .expected
        .keys()
        .filter(|id| !stored.contains(id.as_str()))
        .cloned()
        .collect();
    assert_eq!(
        missing.len(),
        1,
        "missing: {missing:?}\n{}",
        ingest.log_text()
    );
    load.expected.remove(&missing[0]);
    rig.assert_rows_equal_source(&load.expected).await;
}

/// A tmpfs of its own for the spool, unmounted when dropped.
struct SmallFilesystem {
    path: PathBuf,
}

impl SmallFilesystem {
    fn mount(path: &Path, size: &str) -> SmallFilesystem {
        std::fs::create_dir_all(path).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output()
            .expect("mount runs");
        assert!(
            out.status.success(),
            "this test mounts a {size} tmpfs for the spool, which needs root (as `make test` \
             runs in CI) or CAP_SYS_ADMIN: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallFilesystem {
            path: path.to_owned(),
        }
    }
}

impl Drop for SmallFilesystem {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_filesystem_stops_acknowledging_loses_nothing_and_recovers_when_space_returns()
{
    let rig = Rig::with_broker(roomy_broker()).await;
    let config = rig.config("full", "", "");
    let spool = rig.dir.path().join("spool-full");
    let filesystem = SmallFilesystem::mount(&spool, "4m");
    let load = good_load(6_000);
    let mut ingest = Ingest::spawn(&config, rig.dir.path(), "full");
    wait_connected(&ingest, 4.0).await;
    // Leave the spool about 384 KiB: the 1 MiB segment cannot grow to its size.
    let ballast = filesystem.path.join("ballast");
    std::fs::write(&ballast, vec![0x5a; 4 * 1024 * 1024 - 384 * 1024]).unwrap();
    let publisher = publish_in_background(
        rig.mosquitto.port(),
        load.messages.clone(),
        6,
        Duration::from_millis(100),
    );
    let full = wait_metric(
        &ingest,
        "cityops_ingest_spool_full_state",
        1.0,
        Duration::from_secs(120),
    )
    .await;
    assert_eq!(
        full,
        1.0,
        "the spool never said full:\n{}",
        ingest.log_text()
    );
    assert_eq!(http_get(ingest.port, "/readyz").await.0, 503);
    // While full, every acknowledgement stands for a synced message: the acks stop where the
    // spool stopped.
    let metrics = ingest.metrics().await;
    let acked = metric_sum(&metrics, "cityops_ingest_mqtt_acks_total", &[]);
    assert!(
        acked < 6_000.0,
        "acknowledged {acked} of 6,000 with a full disk"
    );
    assert!(
        ingest
            .log_text()
            .contains("spool's filesystem is full: acknowledging nothing more"),
        "{}",
        ingest.log_text()
    );

    std::fs::remove_file(&ballast).unwrap();
    assert_eq!(publisher.await.unwrap(), 6_000);
    let n = rig.wait_for_rows(12_000.0, Duration::from_secs(180)).await;
    assert_eq!(n, 12_000.0, "{}", ingest.log_text());
    ingest.wait_settled().await;
    rig.assert_rows_equal_source(&load.expected).await;
    let log = ingest.log_text();
    assert!(log.contains("spool's filesystem has room again"), "{log}");
    assert_eq!(http_get(ingest.port, "/readyz").await.0, 200);
    assert_eq!(ingest.terminate(Duration::from_secs(30)), Some(0), "{log}");
    eprintln!("acknowledged {acked} of 6,000 while the spool's filesystem was full");
}
