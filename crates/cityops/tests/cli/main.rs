//! Integration tests of the `cityops` command, run as a subprocess the way operators run it.

// Test helpers may unwrap: a failure there is a test failure with its message.
#![allow(clippy::unwrap_used)]

mod alert;
mod alert_actions;
mod alert_backtest;
mod alert_console;
mod alert_feed;
mod alert_queries;
mod alert_replicas;
mod bad_payloads;
mod check;
mod cluster;
mod decode;
mod deployment;
mod ingest_faults;
mod ingest_kafka;
mod ingest_mqtt;
mod ingest_spool;
mod ingest_support;
mod migrate;
mod rejects_replay;
mod rules;
mod scale_out;
mod sim;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs the built `cityops` binary with `args`.
pub fn cityops(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_cityops"))
        .args(args)
        .output()
        .expect("the cityops binary runs");
    keep_output(args, &out);
    out
}

/// Keeps what a `cityops` command printed for the search for test secrets in logs.
pub fn keep_output(args: &[&str], out: &Output) {
    let name = format!("cityops-{}.out", args.first().copied().unwrap_or("command"));
    let mut text = out.stdout.clone();
    text.extend_from_slice(&out.stderr);
    cityops_testkit::keep_output(&name, &text);
}

/// One entry of a samples manifest (`deploy/config/samples/samples.toml`, `cityops sim --dump`).
#[derive(serde::Deserialize)]
pub struct Sample {
    /// Payload file, relative to the manifest.
    pub file: String,
    /// `mqtt` or `kafka`.
    pub source: String,
    /// Topic it arrived on.
    pub topic: String,
    /// Arrival time.
    pub received_at: String,
}

#[derive(serde::Deserialize)]
struct Samples {
    sample: Vec<Sample>,
}

/// Decodes every sample of the manifest `dir/samples.toml` with `config` through the binary;
/// returns each sample with what `cityops decode` printed.
pub fn decode_manifest(dir: &Path, config: &Path) -> Vec<(Sample, String)> {
    let manifest: Samples =
        toml::from_str(&std::fs::read_to_string(dir.join("samples.toml")).unwrap()).unwrap();
    manifest
        .sample
        .into_iter()
        .map(|s| {
            let file = dir.join(&s.file);
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
            assert_eq!(out.status.code(), Some(0), "{}", s.file);
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            (s, stdout)
        })
        .collect()
}
