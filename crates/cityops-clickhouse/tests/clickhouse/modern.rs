//! The modern path on the ClickHouse 26.9 engine through chDB: every migration (including the
//! modern-only ones), the TTL statements, and the example queries; and the cluster schema's
//! statements, which chDB (one process, no cluster) can parse but not run.

use super::examples::{example_queries, seed_statements};
use cityops_clickhouse::{MIGRATIONS, RetentionDays, cluster_bootstrap, clustered, ttl_statements};
use cityops_testkit::{cache_dir, repo_root};
use std::io::Write;
use std::process::{Command, Stdio};

/// The chDB version `make deps` installs (deploy/local/deps.sh).
const CHDB_VERSION: &str = "26.9.0";

#[test]
fn modern_ddl_ttl_and_example_queries_run_on_clickhouse_26() {
    let mut statements: Vec<String> = MIGRATIONS
        .iter()
        .flat_map(|m| m.statements("cityops"))
        .collect();
    let ddl_count = statements.len();
    statements.extend(ttl_statements(
        "cityops",
        RetentionDays {
            events: 365,
            rollups: 730,
            rejects: 30,
            alert_events: 730,
        },
    ));
    let ttl_end = statements.len();
    statements.extend(seed_statements());
    let seed_end = statements.len();
    let queries = example_queries();
    statements.extend(queries.iter().map(|(_, sql)| sql.clone()));

    let report = run_on_chdb(&statements);
    let results = report["results"].as_array().unwrap();
    assert_eq!(results.len(), statements.len());
    for (i, result) in results.iter().enumerate() {
        let what = if i < ddl_count {
            "migration statement"
        } else if i < ttl_end {
            "TTL statement"
        } else if i < seed_end {
            "seed statement"
        } else {
            queries[i - seed_end].0.as_str()
        };
        assert_eq!(
            result["ok"], true,
            "{what} failed on ClickHouse 26: {}\n{}",
            result["error"], statements[i]
        );
        if i >= seed_end {
            assert!(
                result["rows"].as_u64().unwrap() > 0,
                "example query {what:?} found no rows on ClickHouse 26"
            );
        }
    }
}

#[test]
fn the_cluster_schema_parses_on_clickhouse_26() {
    let mut statements: Vec<String> = cluster_bootstrap("cityops", "iot").to_vec();
    statements.extend(MIGRATIONS.iter().flat_map(|m| {
        m.statements("cityops")
            .iter()
            .flat_map(|s| clustered(s, "cityops", "iot"))
            .collect::<Vec<_>>()
    }));
    // The TTL statements as migrate sends them to a cluster (see migrations.rs).
    statements.push(
        "ALTER TABLE cityops.events_local ON CLUSTER iot MODIFY TTL ts + INTERVAL 365 DAY".into(),
    );
    assert!(statements.len() > 20, "{statements:?}");
    let explained: Vec<String> = statements
        .iter()
        .map(|s| format!("EXPLAIN AST {s}"))
        .collect();
    let report = run_on_chdb(&explained);
    for (result, statement) in report["results"]
        .as_array()
        .unwrap()
        .iter()
        .zip(&statements)
    {
        assert_eq!(
            result["ok"], true,
            "the cluster statement does not parse on ClickHouse 26: {}\n{statement}",
            result["error"]
        );
    }
}

/// Runs `statements` in order in a fresh chDB session (deploy/clickhouse/chdb_run.py) and
/// returns its report: the engine's version and, per statement, `ok`, `error`, `rows` and the
/// first rows as `data`.
pub fn run_on_chdb(statements: &[String]) -> serde_json::Value {
    let chdb = cache_dir().join("chdb").join(CHDB_VERSION);
    assert!(
        chdb.join("chdb").is_dir(),
        "chDB {CHDB_VERSION} is not installed at {}: run `make deps` in the repository root",
        chdb.display()
    );
    let mut child = Command::new("python3")
        .arg(repo_root().join("deploy/clickhouse/chdb_run.py"))
        .env("PYTHONPATH", &chdb)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs (make deps installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(&statements).unwrap().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "chdb_run.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        report["version"].as_str().unwrap().starts_with("26."),
        "{report}"
    );
    report
}
