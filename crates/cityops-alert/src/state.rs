//! The state file, `<state_dir>/state.json`: the engine's series (pending and firing alerts
//! with their clocks, windows) and the alerts as last notified. Written whole and atomically
//! every `snapshot_interval_ms`, so that a kill -9 at any moment leaves the last one whole; the
//! transitions since are in the outbox.

use crate::outbox::{OutboxError, write_atomically};
use crate::records::Notice;
use cityops_rules::Snapshot;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// What the state file holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StateDoc {
    /// The engine's series.
    pub engine: Snapshot,
    /// Pending and firing alerts as last notified (their labels and annotations).
    pub alerts: Vec<Notice>,
    /// Alerts resolved lately, still sent to Alertmanager a few times.
    pub resolved: Vec<(Notice, u8)>,
    /// Acknowledgements and escalation levels of active alerts.
    #[serde(default)]
    pub handling: Vec<((String, u64), crate::handling::Handling)>,
}

/// The state file of one alerter.
pub struct StateFile {
    dir: PathBuf,
    path: PathBuf,
}

impl StateFile {
    /// The state file in `dir` (created if missing).
    pub fn new(dir: &Path) -> Result<StateFile, OutboxError> {
        std::fs::create_dir_all(dir).map_err(|source| OutboxError {
            path: dir.display().to_string(),
            action: "create the directory",
            source,
        })?;
        Ok(StateFile {
            dir: dir.to_owned(),
            path: dir.join("state.json"),
        })
    }

    /// The saved state; `None` if there is none yet.
    pub fn load(&self) -> Result<Option<StateDoc>, OutboxError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| OutboxError {
                    path: self.path.display().to_string(),
                    action: "parse",
                    source: std::io::Error::other(e),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(OutboxError {
                path: self.path.display().to_string(),
                action: "read",
                source,
            }),
        }
    }

    /// Replaces the saved state.
    pub fn save(&self, doc: &StateDoc) -> Result<(), OutboxError> {
        let bytes = serde_json::to_vec(doc).map_err(|e| OutboxError {
            path: self.path.display().to_string(),
            action: "encode",
            source: std::io::Error::other(e),
        })?;
        write_atomically(&self.dir, &self.path, &bytes)
    }
}
