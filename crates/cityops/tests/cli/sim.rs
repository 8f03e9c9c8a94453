//! `cityops sim`: deterministic output, dumps that decode with the shipped config, ground truth.

use super::{cityops, repo_root};
use serde::Deserialize;

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

#[derive(Deserialize)]
struct Samples {
    sample: Vec<Sample>,
}

#[derive(Deserialize)]
struct Sample {
    file: String,
    source: String,
    topic: String,
    received_at: String,
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
    let manifest: Samples =
        toml::from_str(&std::fs::read_to_string(dir.path().join("samples.toml")).unwrap()).unwrap();
    assert_eq!(
        manifest.sample.len(),
        33,
        "3 samples for each of the 11 feeds"
    );
    let config = repo_root().join("deploy/config/cityops.toml");
    for s in &manifest.sample {
        let file = dir.path().join(&s.file);
        let out = cityops(&[
            "decode",
            "--config",
            config.to_str().unwrap(),
            "--source",
            &s.source,
            "--topic",
            &s.topic,
            "--file",
            file.to_str().unwrap(),
            "--received-at",
            &s.received_at,
        ]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(!stdout.contains("\"reject\""), "{}: {stdout}", s.file);
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
