//! `cityops check`: valid configs exit 0, every problem is printed with its path, exit 1.

use super::{cityops, repo_root};

#[test]
fn the_example_config_is_valid() {
    let config = repo_root().join("deploy/config/cityops.toml");
    let out = cityops(&["check", "--config", config.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("ok (11 feeds: 7 mqtt, 4 kafka)"),
        "{stdout}"
    );
}

#[test]
fn a_config_with_three_mistakes_prints_all_three_with_paths() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    // Mistake 1: an unknown key in feed 0. Mistake 2: a bad MQTT pattern in feed 1.
    // Mistake 3: an invalid JSON Pointer in feed 2's field 0.
    std::fs::write(
        &path,
        r#"
[[feeds]]
name = "air"
source = "mqtt"
topic = "danang/{district}/air/{entity_id}"
domain = "environment"
colour = "blue"
decoder = { type = "senml" }

[[feeds]]
name = "flood"
source = "mqtt"
topic = "danang/#/water/{entity_id}"
domain = "water"
decoder = { type = "senml" }

[[feeds]]
name = "beds"
source = "kafka"
topic = "danang.health.beds"
domain = "health"
decoder = { type = "json", entity_id = "/hospital_id", fields = [{ metric = "beds", pointer = "beds/total" }] }
"#,
    )
    .unwrap();
    let out = cityops(&["check", "--config", path.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let problems: Vec<&str> = stdout.lines().filter(|l| l.starts_with("feeds[")).collect();
    assert_eq!(problems.len(), 3, "{stdout}");
    assert!(
        problems[0].starts_with("feeds[0].colour: unknown field `colour`"),
        "{stdout}"
    );
    assert!(
        problems[1].starts_with(
            "feeds[1].topic: \"danang/#/water/{entity_id}\": '#' may only be the last level"
        ),
        "{stdout}"
    );
    assert!(
        problems[2].starts_with(
            "feeds[2].decoder.fields[0].pointer: \"beds/total\" is not a JSON Pointer"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("3 problem(s)"), "{stdout}");
}

#[test]
fn env_substitution_and_secret_files_are_applied_and_missing_ones_reported() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ch.pass"), "s3cret\n").unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        "[clickhouse]\nurl = \"${CITYOPS_TEST_CH_URL:-http://127.0.0.1:8123}\"\npassword_file = \"ch.pass\"\n\n[telemetry]\nlog_level = \"${CITYOPS_TEST_UNSET_LEVEL}\"\n",
    )
    .unwrap();
    let out = cityops(&["check", "--config", path.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout.contains("line 6: environment variable CITYOPS_TEST_UNSET_LEVEL is not set"),
        "{stdout}"
    );
    assert!(!stdout.contains("s3cret"));

    std::fs::write(&path, "[clickhouse]\npassword_file = \"missing.pass\"\n").unwrap();
    let out = cityops(&["check", "--config", path.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout.contains("clickhouse.password_file: cannot read"),
        "{stdout}"
    );
}

#[test]
fn a_missing_file_or_bad_usage_fails() {
    let out = cityops(&["check", "--config", "/nonexistent/cityops.toml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("cannot read config file"));
    let out = cityops(&["check"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_secret_written_in_clear_is_a_warning_naming_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clear.toml");
    std::fs::write(
        &path,
        "[clickhouse]\npassword = \"hunter2-clear\"\n[mqtt]\nusername = \"ingest\"\npassword = \"${MQTT_PASSWORD}\"\n\
         [kafka.settings]\n\"sasl.password\" = \"kafka-clear\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cityops"))
        .args(["check", "--config", path.to_str().unwrap()])
        .env("MQTT_PASSWORD", "from-env")
        .output()
        .unwrap();
    crate::keep_output(&["check"], &out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "a warning, not an error: {stdout}"
    );
    let warnings: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("warning:"))
        .collect();
    assert_eq!(warnings.len(), 2, "{stdout}");
    assert!(warnings[0].starts_with("warning: clickhouse.password: a secret written in clear"));
    assert!(warnings[1].starts_with("warning: kafka.settings.\"sasl.password\""));
    // The warning names the key, never the value.
    assert!(
        !stdout.contains("hunter2-clear") && !stdout.contains("kafka-clear"),
        "{stdout}"
    );
}
