//! Helpers shared by the end-to-end tests: where the repository is and which files it tracks.

use std::path::{Path, PathBuf};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Every file under `dir` (recursively) with extension `ext`, skipping build output and
/// hidden folders.
pub fn files_with_extension(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&current) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if path.is_dir() {
                if !name.starts_with('.') && name != "target" {
                    stack.push(path);
                }
            } else if path.extension().is_some_and(|e| e == ext) {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// A free TCP port on 127.0.0.1 (free when asked; the caller binds it soon after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// The `cityops` binary built for the tests (target/<profile>/cityops, next to deps/).
pub fn cityops_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let binary = dir.join("cityops");
    assert!(
        binary.is_file(),
        "{} is missing: build it with `cargo build -p cityops`",
        binary.display()
    );
    binary
}

/// The environment of the local-stack scripts (and the demo) for a private stack: six distinct
/// free ports, the state directory, the binary. Returns it and the ports.
pub fn private_stack_env(state: &Path) -> (Vec<(String, String)>, Vec<u16>) {
    let names = [
        "CITYOPS_MQTT_PORT",
        "CITYOPS_KAFKA_PORT",
        "CITYOPS_CLICKHOUSE_HTTP_PORT",
        "CITYOPS_CLICKHOUSE_TCP_PORT",
        "CITYOPS_PROMETHEUS_PORT",
        "CITYOPS_ALERTMANAGER_PORT",
    ];
    let mut ports = std::collections::BTreeSet::new();
    while ports.len() < names.len() {
        ports.insert(free_port());
    }
    let ports: Vec<u16> = ports.into_iter().collect();
    let mut env: Vec<(String, String)> = names
        .iter()
        .zip(&ports)
        .map(|(n, p)| ((*n).to_owned(), p.to_string()))
        .collect();
    env.push(("CITYOPS_STATE_DIR".into(), state.display().to_string()));
    env.push(("CITYOPS_BIN".into(), cityops_binary().display().to_string()));
    (env, ports)
}
