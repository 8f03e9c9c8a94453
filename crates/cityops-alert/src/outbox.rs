//! The outbox: every transition, appended and synced to `<state_dir>/outbox.jsonl` before
//! anything is sent, read by each consumer (the history writer, each webhook) from its own
//! cursor. A consumer moves its cursor only after its receiver took the notice, so a crash or
//! a receiver that is down loses nothing; the file is emptied once every consumer is past it.

use crate::records::Notice;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

/// A failure of the outbox's files.
#[derive(Debug, thiserror::Error)]
#[error("outbox {path}: {action}: {source}")]
pub struct OutboxError {
    /// The file.
    pub path: String,
    /// What was being done.
    pub action: &'static str,
    /// Why it failed.
    pub source: std::io::Error,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Line {
    seq: u64,
    #[serde(flatten)]
    notice: Notice,
}

/// The outbox of one alerter.
pub struct Outbox {
    dir: PathBuf,
    file: File,
    /// Notices some consumer has not taken yet, with their sequence numbers.
    pending: VecDeque<(u64, Notice)>,
    next_seq: u64,
    /// Last sequence number each consumer took.
    cursors: BTreeMap<String, u64>,
}

fn io<'a>(path: &'a Path, action: &'static str) -> impl FnOnce(std::io::Error) -> OutboxError + 'a {
    move |source| OutboxError {
        path: path.display().to_string(),
        action,
        source,
    }
}

impl Outbox {
    /// Opens (or creates) the outbox in `dir` for `consumers`. A consumer without a cursor
    /// (a webhook added since) starts after what is already there.
    pub fn open(dir: &Path, consumers: &[String]) -> Result<Outbox, OutboxError> {
        std::fs::create_dir_all(dir).map_err(io(dir, "create the directory"))?;
        let path = dir.join("outbox.jsonl");
        let cursors_path = dir.join("cursors.json");
        let saved: BTreeMap<String, u64> = match std::fs::read(&cursors_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| OutboxError {
                path: cursors_path.display().to_string(),
                action: "parse",
                source: std::io::Error::other(e),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(io(&cursors_path, "read")(e)),
        };
        let mut lines = Vec::new();
        if let Ok(file) = File::open(&path) {
            for line in BufReader::new(file).lines() {
                let line = line.map_err(io(&path, "read"))?;
                // A torn last line (a crash while appending, never synced) is dropped.
                if let Ok(parsed) = serde_json::from_str::<Line>(&line) {
                    lines.push(parsed);
                }
            }
        }
        let last = lines.last().map_or(0, |l| l.seq);
        let next_seq = saved.values().copied().max().unwrap_or(0).max(last) + 1;
        let cursors: BTreeMap<String, u64> = consumers
            .iter()
            .map(|c| (c.clone(), saved.get(c).copied().unwrap_or(next_seq - 1)))
            .collect();
        let low = cursors.values().copied().min().unwrap_or(next_seq - 1);
        let pending: VecDeque<(u64, Notice)> = lines
            .into_iter()
            .filter(|l| l.seq > low)
            .map(|l| (l.seq, l.notice))
            .collect();
        // Rewrite the file with only what is still wanted.
        let tmp = dir.join("outbox.jsonl.tmp");
        {
            let mut out = File::create(&tmp).map_err(io(&tmp, "create"))?;
            for (seq, notice) in &pending {
                write_line(&mut out, *seq, notice).map_err(io(&tmp, "write"))?;
            }
            out.sync_all().map_err(io(&tmp, "sync"))?;
        }
        std::fs::rename(&tmp, &path).map_err(io(&path, "replace"))?;
        sync_dir(dir)?;
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io(&path, "open"))?;
        let mut outbox = Outbox {
            dir: dir.to_owned(),
            file,
            pending,
            next_seq,
            cursors,
        };
        outbox.save_cursors()?;
        Ok(outbox)
    }

    /// Appends notices and syncs them: once this returns they survive a crash. Returns the
    /// sequence number of the last notice in the outbox.
    pub fn append(&mut self, notices: &[Notice]) -> Result<u64, OutboxError> {
        if notices.is_empty() {
            return Ok(self.next_seq - 1);
        }
        let path = self.dir.join("outbox.jsonl");
        let mut bytes = Vec::new();
        for notice in notices {
            let seq = self.next_seq;
            self.next_seq += 1;
            write_line(&mut bytes, seq, notice).map_err(io(&path, "encode"))?;
            self.pending.push_back((seq, notice.clone()));
        }
        self.file.write_all(&bytes).map_err(io(&path, "append"))?;
        self.file.sync_data().map_err(io(&path, "sync"))?;
        Ok(self.next_seq - 1)
    }

    /// The sequence number of the last notice appended (0 before any).
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// Up to `max` notices after `consumer`'s cursor, with their sequence numbers.
    pub fn next_for(&self, consumer: &str, max: usize) -> Vec<(u64, Notice)> {
        let Some(&cursor) = self.cursors.get(consumer) else {
            return Vec::new();
        };
        self.pending
            .iter()
            .filter(|(seq, _)| *seq > cursor)
            .take(max)
            .cloned()
            .collect()
    }

    /// Notices `consumer` has not taken yet.
    pub fn backlog(&self, consumer: &str) -> usize {
        let Some(&cursor) = self.cursors.get(consumer) else {
            return 0;
        };
        self.pending.iter().filter(|(seq, _)| *seq > cursor).count()
    }

    /// `consumer` took everything up to `seq`: its cursor moves (synced), and what every
    /// consumer has taken leaves the outbox.
    pub fn taken(&mut self, consumer: &str, seq: u64) -> Result<(), OutboxError> {
        if let Some(cursor) = self.cursors.get_mut(consumer) {
            *cursor = (*cursor).max(seq);
        }
        self.save_cursors()?;
        let low = self
            .cursors
            .values()
            .copied()
            .min()
            .unwrap_or(self.next_seq - 1);
        while self.pending.front().is_some_and(|(s, _)| *s <= low) {
            self.pending.pop_front();
        }
        if self.pending.is_empty() {
            let path = self.dir.join("outbox.jsonl");
            self.file.set_len(0).map_err(io(&path, "truncate"))?;
        }
        Ok(())
    }

    fn save_cursors(&mut self) -> Result<(), OutboxError> {
        let path = self.dir.join("cursors.json");
        let bytes = serde_json::to_vec(&self.cursors)
            .map_err(|e| io(&path, "encode")(std::io::Error::other(e)))?;
        write_atomically(&self.dir, &path, &bytes)
    }
}

fn write_line(out: &mut impl Write, seq: u64, notice: &Notice) -> std::io::Result<()> {
    serde_json::to_writer(
        &mut *out,
        &Line {
            seq,
            notice: notice.clone(),
        },
    )
    .map_err(std::io::Error::other)?;
    out.write_all(b"\n")
}

fn sync_dir(dir: &Path) -> Result<(), OutboxError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir, "sync the directory"))
}

/// Writes `bytes` to `path` so that a crash leaves either the old file or the new one whole:
/// a temporary file, synced, renamed over it, the directory synced.
pub fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), OutboxError> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp).map_err(io(&tmp, "create"))?;
        f.write_all(bytes).map_err(io(&tmp, "write"))?;
        f.sync_all().map_err(io(&tmp, "sync"))?;
    }
    std::fs::rename(&tmp, path).map_err(io(path, "replace"))?;
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cityops_event::Domain;
    use cityops_rules::{AlertState, Severity};

    fn notice(n: i64) -> Notice {
        Notice {
            id: uuid::Uuid::from_u128(n as u128),
            rule: "R".into(),
            fingerprint: 7,
            from: AlertState::Pending,
            to: AlertState::Firing,
            at_ms: n,
            active_since_ms: 0,
            fired_at_ms: Some(n),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            value: None,
            severity: Severity::Warning,
            domain: Domain::Water,
            action: None,
        }
    }

    #[test]
    fn each_consumer_reads_from_its_cursor_and_nothing_is_lost_across_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let consumers = ["history".to_string(), "webhook:ops".to_string()];
        let mut outbox = Outbox::open(dir.path(), &consumers).unwrap();
        assert_eq!(
            outbox.append(&[notice(1), notice(2), notice(3)]).unwrap(),
            3
        );
        outbox.taken("history", 3).unwrap();
        outbox.taken("webhook:ops", 1).unwrap();
        drop(outbox);
        let mut reopened = Outbox::open(dir.path(), &consumers).unwrap();
        assert!(reopened.next_for("history", 10).is_empty());
        let next: Vec<i64> = reopened
            .next_for("webhook:ops", 10)
            .iter()
            .map(|(_, n)| n.at_ms)
            .collect();
        assert_eq!(next, [2, 3]);
        reopened.taken("webhook:ops", 3).unwrap();
        assert_eq!(
            std::fs::metadata(dir.path().join("outbox.jsonl"))
                .unwrap()
                .len(),
            0
        );
        reopened.append(&[notice(4)]).unwrap();
        assert_eq!(
            reopened.next_for("history", 10)[0].0,
            4,
            "sequence numbers go on after an empty outbox"
        );
    }

    #[test]
    fn a_torn_last_line_is_dropped_and_a_new_consumer_starts_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = Outbox::open(dir.path(), &["history".to_string()]).unwrap();
        outbox.append(&[notice(1)]).unwrap();
        drop(outbox);
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join("outbox.jsonl"))
            .unwrap();
        f.write_all(b"{\"seq\":2,\"id\":").unwrap();
        let reopened = Outbox::open(
            dir.path(),
            &["history".to_string(), "webhook:new".to_string()],
        )
        .unwrap();
        assert_eq!(reopened.backlog("history"), 1);
        assert_eq!(reopened.backlog("webhook:new"), 0);
    }
}
