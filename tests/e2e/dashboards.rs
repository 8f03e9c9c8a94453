//! The dashboards and the self-monitoring rules, checked without running services: the JSON is
//! what dashboards/build.py writes, it parses into Grafana's own schema models with nothing
//! dropped, the Prometheus rules pass promtool and their unit tests, and every runbook link
//! points at a page (and heading) that exists. The queries themselves run in demo.rs.

use cityops_e2e::repo_root;
use std::path::PathBuf;
use std::process::Command;

fn run(program: &str, args: &[&str], env: &[(&str, String)]) -> String {
    let mut command = Command::new(program);
    command.args(args).current_dir(repo_root());
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e} (make deps installs it)"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{program} {}: {}\n{text}",
        args.join(" "),
        out.status
    );
    text
}

fn grafana_sdk() -> PathBuf {
    let cache = std::env::var_os("CITYOPS_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/cityops"));
    let dir = cache.join("grafana-foundation-sdk/1769699379-11.6.0");
    assert!(
        dir.join("grafana_foundation_sdk").is_dir(),
        "{} is missing: run `make deps`",
        dir.display()
    );
    dir
}

#[test]
fn the_dashboards_are_current_and_fit_grafanas_schema() {
    run("python3", &["dashboards/build.py", "--check"], &[]);
    let out = run(
        "python3",
        &[
            "dashboards/verify.py",
            "--clickhouse",
            "http://127.0.0.1:9",
            "--schema-only",
        ],
        &[("PYTHONPATH", grafana_sdk().display().to_string())],
    );
    assert!(out.contains("\"failures\": 0"), "{out}");
}

#[test]
fn a_dashboard_key_grafana_does_not_know_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(repo_root().join("dashboards/health.json"))
        .unwrap()
        .replacen("\"reduceOptions\"", "\"reduceOption\"", 1);
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, text).unwrap();
    let out = Command::new("python3")
        .arg(repo_root().join("dashboards/verify.py"))
        .args(["--clickhouse", "http://127.0.0.1:9", "--schema-only"])
        .arg(&bad)
        .env("PYTHONPATH", grafana_sdk())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("options.reduceOption: not in Grafana's schema"),
        "{text}"
    );
}

#[test]
fn the_self_monitoring_rules_pass_promtool_and_their_tests() {
    let out = run(
        "promtool",
        &["check", "rules", "deploy/prometheus/cityops.rules.yml"],
        &[],
    );
    assert!(out.contains("SUCCESS"), "{out}");
    let out = run(
        "promtool",
        &["test", "rules", "deploy/prometheus/cityops.rules.test.yml"],
        &[],
    );
    assert!(out.contains("SUCCESS"), "{out}");
    // The local stack's Prometheus config loads them (rendered as up.sh renders it).
    let dir = tempfile::tempdir().unwrap();
    let config = std::fs::read_to_string(repo_root().join("deploy/local/prometheus.yml"))
        .unwrap()
        .replace("@REPO_DIR@", &repo_root().display().to_string())
        .replace("@CONF_DIR@", &dir.path().display().to_string())
        .replace("@PROMETHEUS_PORT@", "19090")
        .replace("@ALERTMANAGER_PORT@", "19093");
    let path = dir.path().join("prometheus.yml");
    std::fs::write(&path, config).unwrap();
    let out = run(
        "promtool",
        &["check", "config", path.to_str().unwrap()],
        &[],
    );
    assert!(
        out.contains("cityops.rules.yml") && out.contains("SUCCESS: 15 rules found"),
        "{out}"
    );
}

#[test]
fn every_runbook_link_points_at_a_page_and_heading_that_exist() {
    let prefix = "https://github.com/cityops/cityops/blob/main/";
    let mut links = Vec::new();
    for dir in ["deploy/rules", "deploy/prometheus"] {
        for file in std::fs::read_dir(repo_root().join(dir)).unwrap() {
            let path = file.unwrap().path();
            if path.is_dir() {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for line in text.lines().filter(|l| l.contains("runbook_url:")) {
                let url = line.split('"').nth(1).unwrap_or_default().to_owned();
                links.push((path.display().to_string(), url));
            }
        }
    }
    assert!(links.len() >= 20, "{links:?}");
    for (file, url) in links {
        let rest = url
            .strip_prefix(prefix)
            .unwrap_or_else(|| panic!("{file}: {url} is not a page of this repository"));
        let (page, anchor) = rest.split_once('#').unwrap_or((rest, ""));
        let text = std::fs::read_to_string(repo_root().join(page))
            .unwrap_or_else(|_| panic!("{file}: {url}: no such page"));
        if !anchor.is_empty() {
            let headings: Vec<String> = text
                .lines()
                .filter(|l| l.starts_with('#'))
                .map(|l| {
                    l.trim_start_matches('#')
                        .trim()
                        .to_lowercase()
                        .chars()
                        .filter(|c| c.is_alphanumeric() || *c == '-' || *c == ' ')
                        .collect::<String>()
                        .replace(' ', "-")
                })
                .collect();
            assert!(
                headings.iter().any(|h| h == anchor),
                "{file}: {url}: no heading #{anchor} in {page} ({headings:?})"
            );
        }
    }
}
