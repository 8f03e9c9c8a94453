//! The Da Nang rules in `deploy/rules/`: they load, each has a runbook line, each is exercised
//! by a check of `deploy/rules/tests/`, and all those tests pass.

use cityops_rules::{RuleSet, TestFile};
use std::path::{Path, PathBuf};

fn rules_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/rules")
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("rules dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn load(files: &[PathBuf]) -> RuleSet {
    let texts: Vec<(String, String)> = files
        .iter()
        .map(|f| {
            (
                f.display().to_string(),
                std::fs::read_to_string(f).expect("read"),
            )
        })
        .collect();
    RuleSet::parse(&texts).unwrap_or_else(|e| {
        panic!(
            "{}",
            e.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        )
    })
}

#[test]
fn the_shipped_rules_load_and_each_has_a_runbook_and_a_summary() {
    let set = load(&yaml_files(&rules_dir()));
    assert!(set.rules.len() >= 9, "{} rules", set.rules.len());
    let prefix = "https://github.com/cityops/cityops/blob/main/";
    for rule in &set.rules {
        assert!(
            rule.annotations.contains_key("runbook"),
            "{rule}: no runbook line (what to do, for the person on call)"
        );
        let url = rule.annotations.get("runbook_url").map(String::as_str);
        let page = url.and_then(|u| u.strip_prefix(prefix));
        assert!(
            page.is_some_and(|p| p.starts_with("docs/runbooks/")
                && Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../..")
                    .join(p)
                    .is_file()),
            "{rule}: runbook_url {url:?} is not a page of docs/runbooks/ in this repository"
        );
        assert!(
            rule.annotations.contains_key("summary"),
            "{rule}: no summary"
        );
    }
}

#[test]
fn the_shipped_rule_tests_pass_and_cover_every_rule() {
    let dir = rules_dir();
    let all = load(&yaml_files(&dir));
    let mut covered = std::collections::HashSet::new();
    let mut failures = Vec::new();
    for test in yaml_files(&dir.join("tests")) {
        let text = std::fs::read_to_string(&test).expect("read test");
        let file =
            TestFile::parse(&test.display().to_string(), &text).unwrap_or_else(|e| panic!("{e:?}"));
        let rule_files: Vec<PathBuf> = file
            .rule_files
            .iter()
            .map(|r| test.parent().expect("dir").join(r))
            .collect();
        let set = load(&rule_files);
        failures.extend(file.run(&set));
        for name in text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("alertname: "))
        {
            covered.insert(name.trim().to_string());
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    for rule in &all.rules {
        assert!(
            covered.contains(&*rule.name),
            "{rule} has no check in deploy/rules/tests"
        );
    }
}

#[test]
fn a_wrong_expectation_fails_with_a_readable_diff() {
    let rules = RuleSet::parse(&[("r.yaml".into(), "groups:\n- name: g\n  rules:\n  - alert: High\n    match: '{metric=\"level\"}'\n    threshold: {fire: '> 2.5'}\n    annotations: {summary: 'Mực nước {{ value }} m'}\n".into())]).unwrap();
    let test = "rule_files: [r.yaml]\ntests:\n- interval: 1m\n  input_series:\n  - series: '{metric=\"level\", entity_id=\"g1\"}'\n    values: '3 3 3'\n  alert_rule_test:\n  - eval_time: 2m\n    alertname: High\n    exp_alerts:\n    - exp_labels: {entity_id: g1, severity: warning}\n      exp_annotations: {summary: 'Mực nước 2 m'}\n";
    let failures = TestFile::parse("t.yaml", test).unwrap().run(&rules);
    assert_eq!(failures.len(), 1, "{failures:?}");
    let report = &failures[0];
    assert!(
        report.starts_with("t.yaml:8: \"test 1\": alertname High at 2m:"),
        "{report}"
    );
    assert!(report.contains("expected:\n      firing {entity_id=\"g1\", severity=\"warning\"}\n        annotations {summary=\"Mực nước 2 m\"}"), "{report}");
    assert!(report.contains("got:\n      firing {entity_id=\"g1\", severity=\"warning\"}\n        annotations {summary=\"Mực nước 3.0 m\"}"), "{report}");
}

#[test]
fn rule_file_errors_carry_file_line_and_column_and_all_are_reported() {
    let text = "groups:\n- name: g\n  rules:\n  - alert: A\n    match: '{metric=~\"(\"}'\n    threshold: {fire: '> x'}\n    for: 5min\n  - alert: B\n    match: '{}'\n    window: {aggregate: median, over: 1h, fire: '> 1'}\n    severity: urgent\n  - alert: A\n    match: '{}'\n    absence: {}\n";
    let errors = RuleSet::parse(&[("bad.yaml".into(), text.into())]).unwrap_err();
    let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
    let expect = [
        "bad.yaml:5:12: match: label metric: invalid regular expression \"(\": unclosed group",
        "bad.yaml:6:23: fire: condition \"> x\": \"x\" is not a number",
        "bad.yaml:7:10: for: invalid duration \"5min\"",
        "bad.yaml:10:25: aggregate \"median\" must be one of",
        "bad.yaml:11:15: severity \"urgent\"",
        "bad.yaml:12:12: absence: give expected_interval",
    ];
    for e in expect {
        assert!(
            lines.iter().any(|l| l.starts_with(e)),
            "missing {e:?} in:\n{}",
            lines.join("\n")
        );
    }
    let unknown = RuleSet::parse(&[("u.yaml".into(), "groups:\n- name: g\n  rules:\n  - alert: A\n    match: '{}'\n    treshold: {fire: '> 1'}\n".into())]).unwrap_err();
    assert_eq!(unknown.len(), 1);
    let text = unknown[0].to_string();
    assert!(
        text.starts_with("u.yaml:6:5: unknown field `treshold`"),
        "{text}"
    );
}

#[test]
fn query_rules_take_sql_with_now_by_columns_and_no_match() {
    let good = "groups:\n- name: g\n  rules:\n  - alert: Q\n    by: [agency]\n    query:\n      interval: 1m\n      sql: SELECT agency, count() AS value FROM events WHERE ts <= $now GROUP BY agency\n      fire: '> 10'\n";
    let set = RuleSet::parse(&[("q.yaml".into(), good.into())]).expect("a good query rule");
    assert_eq!(set.rules[0].kind.name(), "query");
    assert_eq!(
        cityops_rules::render_sql("SELECT 1 WHERE ts <= $now", 1_767_225_600_999),
        "SELECT 1 WHERE ts <= toDateTime(1767225600)"
    );
    let bad = "groups:\n- name: g\n  rules:\n  - alert: A\n    match: '{}'\n    query: {interval: 1m, sql: 'SELECT 1 AS value WHERE now() > 0', fire: '> 1'}\n  - alert: B\n    by: [value]\n    query: {interval: 500ms, sql: 'DROP TABLE events', fire: '> 1'}\n  - alert: C\n    query: {interval: 1m, sql: 'SELECT 1 AS value', fire: '> 1'}\n";
    let errors: Vec<String> = RuleSet::parse(&[("bad.yaml".into(), bad.into())])
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect();
    let expect = [
        "bad.yaml:5:12: match: a query rule reads ClickHouse, not events",
        "bad.yaml:4:12: by: a query rule lists the label columns",
        "bad.yaml:6:32: sql: uses now(): write $now",
        "bad.yaml:8:9: by: \"value\" is the value column",
        "bad.yaml:9:35: sql: must be a SELECT",
        "bad.yaml:9:23: interval: at least 1s",
        "bad.yaml:10:12: by: a query rule lists the label columns",
        "bad.yaml:11:32: sql: never mentions $now",
    ];
    for e in expect {
        assert!(
            errors.iter().any(|l| l.starts_with(e)),
            "missing {e:?} in:\n{}",
            errors.join("\n")
        );
    }
}
