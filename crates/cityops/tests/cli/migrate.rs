//! `cityops migrate` and `cityops retention` against a real ClickHouse from the test kit.

use super::cityops;
use cityops_testkit::ClickHouseServer;

fn config_for(server: &ClickHouseServer, dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("cityops.toml");
    std::fs::write(
        &path,
        format!(
            "[clickhouse]\nurl = \"{}\"\ndatabase = \"cityops\"\n",
            server.url()
        ),
    )
    .unwrap();
    path
}

#[test]
fn migrate_dry_run_then_twice_and_the_second_run_changes_nothing() {
    let server = ClickHouseServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = config_for(&server, dir.path());
    let config = config.to_str().unwrap();

    let dry = cityops(&["migrate", "--config", config, "--dry-run"]);
    let text = String::from_utf8_lossy(&dry.stdout);
    assert_eq!(
        dry.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&dry.stderr)
    );
    assert!(
        text.contains("dry run")
            && text.contains("would apply")
            && text.contains("CREATE TABLE IF NOT EXISTS cityops.events"),
        "{text}"
    );

    let first = cityops(&["migrate", "--config", config]);
    let text = String::from_utf8_lossy(&first.stdout);
    assert_eq!(first.status.code(), Some(0), "{text}");
    assert!(
        text.contains("0001 events") && text.contains("applied"),
        "{text}"
    );
    assert!(
        text.contains("skipped: needs ClickHouse 21.8.0 or later"),
        "{text}"
    );

    let second = cityops(&["migrate", "--config", config]);
    let text = String::from_utf8_lossy(&second.stdout);
    assert_eq!(second.status.code(), Some(0));
    assert!(
        text.contains("nothing to do") && !text.contains(" applied"),
        "{text}"
    );
    let quiet = cityops(&["migrate", "--config", config, "--quiet"]);
    assert!(
        quiet.stdout.is_empty(),
        "--quiet prints nothing when nothing changes"
    );

    let retention = cityops(&["retention", "--config", config, "--dry-run"]);
    assert_eq!(retention.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&retention.stdout).contains("retention: 0 partition(s) would drop")
    );
}

#[test]
fn migrate_fails_clearly_when_clickhouse_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    let port = cityops_testkit::free_port();
    std::fs::write(
        &path,
        format!("[clickhouse]\nurl = \"http://127.0.0.1:{port}\"\n"),
    )
    .unwrap();
    let out = cityops(&["migrate", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "cannot reach ClickHouse at http://127.0.0.1:{port}"
        )),
        "{stderr}"
    );
}
