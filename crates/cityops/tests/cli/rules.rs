//! `cityops rules check` and `cityops rules test` as on-call engineers run them: the shipped
//! rules pass, a broken rule file or a wrong expectation exits 1 saying where and what.

use crate::{cityops, repo_root};

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn the_shipped_rules_check_and_their_tests_pass() {
    let root = repo_root().join("deploy/rules");
    let files: Vec<String> = ["water.yaml", "air.yaml", "devices.yaml", "city.yaml"]
        .iter()
        .map(|f| root.join(f).display().to_string())
        .collect();
    let mut args = vec!["rules", "check"];
    args.extend(files.iter().map(String::as_str));
    let out = cityops(&args);
    assert!(out.status.success(), "{}", stdout(&out));
    let tests: Vec<String> = ["water", "air", "devices", "city"]
        .iter()
        .map(|f| {
            root.join(format!("tests/{f}.test.yaml"))
                .display()
                .to_string()
        })
        .collect();
    let mut args = vec!["rules", "test"];
    args.extend(tests.iter().map(String::as_str));
    let out = cityops(&args);
    assert!(out.status.success(), "{}", stdout(&out));
    assert_eq!(
        stdout(&out).matches(": PASS (").count(),
        4,
        "{}",
        stdout(&out)
    );
}

#[test]
fn a_rule_file_with_errors_exits_1_with_each_error_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, "groups:\n- name: g\n  rules:\n  - alert: A\n    match: '{metric=\"x\"'\n    threshold: {fire: '> 1'}\n    for: 5min\n").unwrap();
    let out = cityops(&["rules", "check", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    let name = path.display().to_string();
    assert!(
        text.contains(&format!("{name}:5:12: match: expected '}}' at the end")),
        "{text}"
    );
    assert!(
        text.contains(&format!("{name}:7:10: for: invalid duration \"5min\"")),
        "{text}"
    );
    assert!(text.contains("2 error(s)"), "{text}");
}

#[test]
fn a_failing_rule_test_exits_1_with_a_diff() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("r.yaml"), "groups:\n- name: g\n  rules:\n  - alert: High\n    match: '{metric=\"level\"}'\n    threshold: {fire: '> 2.5'}\n    for: 2m\n").unwrap();
    let test = dir.path().join("r.test.yaml");
    std::fs::write(&test, "rule_files: [r.yaml]\ntests:\n- interval: 1m\n  input_series:\n  - series: '{metric=\"level\", entity_id=\"g1\"}'\n    values: '3x5'\n  alert_rule_test:\n  - eval_time: 1m\n    alertname: High\n    exp_alerts:\n    - exp_labels: {entity_id: g1, severity: warning}\n").unwrap();
    let out = cityops(&["rules", "test", test.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(text.contains("FAIL (1 of 1 checks in 1 tests)"), "{text}");
    assert!(text.contains("expected:\n      firing {entity_id=\"g1\", severity=\"warning\"}\n    got:\n      pending {entity_id=\"g1\", severity=\"warning\"}"), "{text}");
}
