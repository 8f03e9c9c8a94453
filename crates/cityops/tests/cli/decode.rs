//! `cityops decode`: the golden files through the real binary, the example config's samples,
//! and exit codes.

use super::{cityops, decode_manifest, repo_root};
use serde::Deserialize;

#[derive(Deserialize)]
struct Cases {
    case: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    source: String,
    topic: String,
    received_at: String,
    payload: String,
    partition: Option<i32>,
    offset: Option<i64>,
}

#[test]
fn every_golden_file_decodes_through_the_binary_as_expected() {
    let golden = repo_root().join("crates/cityops-feeds/tests/golden");
    let config = golden.join("feeds.toml");
    let mut checked = 0;
    for decoder in ["json", "senml", "senml_cbor", "ngsi_ld"] {
        let dir = golden.join(decoder);
        let cases: Cases =
            toml::from_str(&std::fs::read_to_string(dir.join("cases.toml")).unwrap()).unwrap();
        for case in cases.case {
            let payload = dir.join(&case.payload);
            let mut args = vec![
                "decode".to_owned(),
                "--config".into(),
                config.to_str().unwrap().into(),
                "--source".into(),
                case.source.clone(),
                "--topic".into(),
                case.topic.clone(),
                "--file".into(),
                payload.to_str().unwrap().into(),
                "--received-at".into(),
                case.received_at.clone(),
            ];
            if let (Some(p), Some(o)) = (case.partition, case.offset) {
                args.extend([
                    "--partition".into(),
                    p.to_string(),
                    "--offset".into(),
                    o.to_string(),
                ]);
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = cityops(&args);
            assert_eq!(
                out.status.code(),
                Some(0),
                "{decoder}/{}: {}",
                case.name,
                String::from_utf8_lossy(&out.stderr)
            );
            let expected =
                std::fs::read_to_string(dir.join(format!("{}.expected.jsonl", case.name))).unwrap();
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                expected,
                "{decoder}/{}",
                case.name
            );
            checked += 1;
        }
    }
    assert!(checked >= 60);
}

#[test]
fn every_sample_of_the_example_config_decodes_without_reject() {
    let root = repo_root().join("deploy/config");
    let decoded = decode_manifest(&root.join("samples"), &root.join("cityops.toml"));
    assert_eq!(decoded.len(), 11, "one sample per feed");
    for (sample, stdout) in decoded {
        assert!(!stdout.contains("\"reject\""), "{}: {stdout}", sample.file);
        for line in stdout.lines() {
            let event: serde_json::Value = serde_json::from_str(line).unwrap();
            assert!(
                event["entity_id"].as_str().is_some_and(|e| !e.is_empty()),
                "{}: {line}",
                sample.file
            );
        }
    }
}

#[test]
fn stdin_payloads_rejects_and_usage_errors() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let config = repo_root().join("deploy/config/cityops.toml");
    let mut child = Command::new(env!("CARGO_BIN_EXE_cityops"))
        .args([
            "decode",
            "--config",
            config.to_str().unwrap(),
            "--source",
            "kafka",
            "--topic",
            "danang.health.beds",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"{\"hospital_id\": 7,")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(line["reject"]["reason"], "invalid_json");
    assert_eq!(line["reject"]["feed"], "hospital_beds");

    // A usage error (unknown source) and a config error both exit 2.
    let out = cityops(&[
        "decode",
        "--config",
        config.to_str().unwrap(),
        "--source",
        "amqp",
        "--topic",
        "x",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let out = cityops(&[
        "decode",
        "--config",
        "/nonexistent.toml",
        "--source",
        "mqtt",
        "--topic",
        "x",
        "--file",
        "/dev/null",
    ]);
    assert_eq!(out.status.code(), Some(2));
}
