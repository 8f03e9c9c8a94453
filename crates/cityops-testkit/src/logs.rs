//! What the suite logged, kept for the check that no test secret ever reaches a log: with
//! `CITYOPS_TEST_LOG_DIR` set (`make test` sets it), every service's log, every `cityops`
//! process's log and every captured command output is copied there before its temporary
//! folder goes; `deploy/local/grep-secrets.sh` then searches them for [`TEST_SECRETS`].

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// The folder logs are kept in, when set.
pub const LOG_DIR_ENV: &str = "CITYOPS_TEST_LOG_DIR";

/// Every password, token and key the tests use, one per line (also read by
/// `deploy/local/grep-secrets.sh`).
pub const TEST_SECRETS: &str = include_str!("test-secrets.txt");

/// The secrets of [`TEST_SECRETS`].
pub fn test_secrets() -> impl Iterator<Item = &'static str> {
    TEST_SECRETS.lines().filter(|l| !l.trim().is_empty())
}

static KEPT: AtomicU64 = AtomicU64::new(0);

fn kept_path(name: &str) -> Option<std::path::PathBuf> {
    let dir = std::env::var_os(LOG_DIR_ENV)?;
    let dir = Path::new(&dir);
    std::fs::create_dir_all(dir).ok()?;
    let name: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let n = KEPT.fetch_add(1, Ordering::Relaxed);
    Some(dir.join(format!("{}-{n}-{name}", std::process::id())))
}

/// Copies the file `log` into the kept logs as `name` (nothing when not keeping, or when the
/// file does not exist).
pub fn keep_log(log: &Path, name: &str) {
    if let Some(to) = kept_path(name) {
        let _ = std::fs::copy(log, to);
    }
}

/// Keeps `bytes` (a command's captured output) as `name`.
pub fn keep_output(name: &str, bytes: &[u8]) {
    if let Some(to) = kept_path(name) {
        let _ = std::fs::write(to, bytes);
    }
}

/// Keeps every `*.log`, `*.out` and `*.txt` file below `dir`, named by `prefix` and its path.
pub fn keep_logs_under(dir: &Path, prefix: &str) {
    if std::env::var_os(LOG_DIR_ENV).is_none() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            keep_logs_under(&path, &format!("{prefix}-{name}"));
        } else if [".log", ".out", ".txt"].iter().any(|e| name.ends_with(e)) {
            keep_log(&path, &format!("{prefix}-{name}"));
        }
    }
}

/// Keeps the logs below a folder when dropped: declare it after the folder's `TempDir`, so that
/// it runs first.
#[derive(Debug)]
pub struct KeepLogs {
    dir: std::path::PathBuf,
    prefix: String,
}

impl KeepLogs {
    /// Keeps the logs below `dir` as `prefix-...` when dropped.
    pub fn new(dir: &Path, prefix: &str) -> Self {
        KeepLogs {
            dir: dir.to_path_buf(),
            prefix: prefix.to_owned(),
        }
    }
}

impl Drop for KeepLogs {
    fn drop(&mut self) {
        keep_logs_under(&self.dir, &self.prefix);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secrets_the_test_kit_hands_out_are_listed() {
        let listed: Vec<&str> = test_secrets().collect();
        for secret in [
            crate::mosquitto::INGEST_PASSWORD,
            crate::mosquitto::PUBLISHER_PASSWORD,
            crate::kafka::SCRAM_PASSWORD,
        ] {
            assert!(
                listed.contains(&secret),
                "{secret} is not in test-secrets.txt"
            );
        }
        // The passwords of deploy/local/clickhouse/users.xml.
        let users =
            std::fs::read_to_string(crate::repo_root().join("deploy/local/clickhouse/users.xml"))
                .unwrap();
        for line in users.lines().filter(|l| l.contains("<password>")) {
            let password = line
                .trim()
                .trim_start_matches("<password>")
                .trim_end_matches("</password>");
            if !password.is_empty() {
                assert!(
                    listed.contains(&password),
                    "{password} is not in test-secrets.txt"
                );
            }
        }
    }
}
