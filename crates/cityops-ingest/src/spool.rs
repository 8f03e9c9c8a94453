//! The MQTT ingest's crash-safe local spool: an append-only log of what the broker delivered,
//! numbered by one sequence, synced (fdatasync) before any of it is acknowledged, read back in
//! order by the pipeline, and deleted segment by segment once ClickHouse holds it.
//!
//! Layout: `<dir>/spool-id` (the spool's number, the `source_partition` of its rows),
//! segments `<dir>/<first seq, 20 digits>.seg`, and `<dir>/resend-table`, the snapshot of the
//! resend table (`resend.rs`) as it was when the active segment was started. A record is a
//! 13-byte header (kind, body length, XXH3-64 of the body) and a body. A *message* record holds
//! the sequence number, arrival time, connection, packet id, flags, topic and payload; the
//! table file is one *table* record (the last sequence number it covers, then the table).
//! Spools written before the table file carry the table in a *memo* record at the start of
//! each segment instead; they are still read. A torn record at the end of the last segment (a
//! crash mid-write: nothing after it is whole) is cut off on open; a damaged record anywhere
//! else, a gap in a segment's sequence numbers, or a damaged table file stops the open with an
//! error naming the file and byte rather than skipping data silently. [`inspect`] and
//! [`salvage`] (`cityops spool check|salvage`) report such damage and keep what is intact.
//! A lock file (`<dir>/lock`) keeps a second process off a spool in use.

use crate::le::{take, take_u16, take_u64};
use crate::resend::ResendTable;
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use xxhash_rust::xxh3::xxh3_64;

/// What can go wrong with the spool.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// A file operation failed.
    #[error("spool {path}: {action}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The error.
        source: io::Error,
    },
    /// The filesystem is full: what was appended is kept in memory, the segment is as it
    /// was before the write, nothing of it is acknowledged; retry once there is room.
    #[error("spool {path}: no space left on the spool's filesystem ({action}): {source}")]
    NoSpace {
        /// The segment.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The error.
        source: io::Error,
    },
    /// Another process holds the spool.
    #[error("spool {path}: in use by another process (one spool per process)")]
    InUse {
        /// The lock file.
        path: PathBuf,
    },
    /// A record failed its checksum or framing before the end of the spool.
    #[error(
        "spool {path}: damaged record at byte {offset}: {detail} (stop the ingest and run `cityops spool salvage` to keep what is intact; see docs/runbooks/cityops-pipeline.md, \"The spool is damaged\")"
    )]
    Damaged {
        /// The segment.
        path: PathBuf,
        /// Where.
        offset: u64,
        /// What is wrong.
        detail: String,
    },
}

const KIND_MESSAGE: u8 = 0xC5;
/// Written by spools before the table file; read, never written.
const KIND_MEMO: u8 = 0xC6;
const KIND_TABLE: u8 = 0xC7;
const HEADER: usize = 13;
/// The resend table's snapshot, replaced whole at each rotation.
const TABLE_FILE: &str = "resend-table";
const FLAG_DUP: u8 = 1;
const FLAG_RETAIN: u8 = 2;
const FLAG_QOS1: u8 = 4;
/// Largest body accepted when reading (a payload is bounded by the MQTT packet size).
const MAX_BODY: usize = 256 * 1024 * 1024;

/// One message as the spool holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpooledMessage {
    /// Spool sequence number.
    pub seq: u64,
    /// Arrival time, milliseconds since the epoch.
    pub received_ms: i64,
    /// Connection it arrived on.
    pub connection: u16,
    /// Its packet id there.
    pub pkid: u16,
    /// DUP flag as received.
    pub dup: bool,
    /// Retain flag as received.
    pub retain: bool,
    /// Received at QoS 1 (else 0).
    pub qos1: bool,
    /// Topic.
    pub topic: String,
    /// Payload.
    pub payload: Vec<u8>,
}

/// What [`Spool::append`] did with a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Written with this sequence number; durable after the next [`Spool::sync`].
    New(u64),
    /// The broker's resend of a message already spooled (see `resend.rs`): not written again;
    /// acknowledge it after the next [`Spool::sync`] (its original may be in that sync).
    Resend,
    /// The disk bound is reached: nothing written. Hold it, unacknowledged, and try later.
    Full,
}

/// A delivery to append, as the broker sent it.
#[derive(Debug, Clone, Copy)]
pub struct Arrival<'a> {
    /// Arrival time, milliseconds since the epoch.
    pub received_ms: i64,
    /// Connection (session) it came on.
    pub connection: u16,
    /// The connection attempt it came on.
    pub epoch: u64,
    /// Its packet id there (0 for QoS 0).
    pub pkid: u16,
    /// Received at QoS 1 (else 0).
    pub qos1: bool,
    /// DUP flag as received.
    pub dup: bool,
    /// Retain flag as received.
    pub retain: bool,
    /// Topic.
    pub topic: &'a str,
    /// Payload.
    pub payload: &'a [u8],
}

#[derive(Debug)]
struct Segment {
    first_seq: u64,
    path: PathBuf,
    bytes: u64,
    /// Highest message sequence in it; `first_seq - 1` when it holds none.
    last_seq: u64,
}

/// The writing side of the spool (one per process, used from one thread).
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    id: i32,
    max_bytes: u64,
    segment_bytes: u64,
    segments: VecDeque<Segment>,
    active: File,
    buffer: Vec<u8>,
    next_seq: u64,
    /// Highest sequence written and synced.
    durable_seq: u64,
    total_bytes: u64,
    resends: ResendTable,
    /// Held (locked) while the spool is open.
    _lock: File,
}

/// The content hash that tells a resend of the same message from a new one.
fn content_hash(topic: &str, payload: &[u8]) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(topic.as_bytes());
    h.update(&[0xff]);
    h.update(payload);
    h.digest()
}

fn io_error<'a>(path: &'a Path, action: &'static str) -> impl FnOnce(io::Error) -> SpoolError + 'a {
    move |source| SpoolError::Io {
        path: path.to_owned(),
        action,
        source,
    }
}

fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}.seg")
}

fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir, "sync directory"))
}

/// One entry of a legacy memo record: connection, packet id, content hash, sequence number.
type MemoEntry = (u16, u16, u64, u64);

/// A parsed record.
enum Record<'a> {
    Message(SpooledMessage),
    /// The resend table of spools written before the table file.
    Memo(Vec<MemoEntry>),
    /// The table file's body.
    Table(&'a [u8]),
}

/// Appends a record of `kind` whose body `write_body` writes in place (no copy of the
/// payload on the hot path); the length and checksum are filled in after.
fn frame(out: &mut Vec<u8>, kind: u8, write_body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.push(kind);
    out.extend_from_slice(&[0; HEADER - 1]);
    write_body(out);
    let body = &out[start + HEADER..];
    let len = (body.len() as u32).to_le_bytes();
    let sum = xxh3_64(body).to_le_bytes();
    out[start + 1..start + 5].copy_from_slice(&len);
    out[start + 5..start + HEADER].copy_from_slice(&sum);
}

/// Parses the record at the start of `bytes`: `Ok(None)` if it is incomplete.
fn parse(bytes: &[u8]) -> Result<Option<(Record<'_>, usize)>, String> {
    if bytes.len() < HEADER {
        return Ok(None);
    }
    let kind = bytes[0];
    let len = u32::from_le_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
    if kind != KIND_MESSAGE && kind != KIND_MEMO && kind != KIND_TABLE {
        return Err(format!("unknown record kind {kind:#x}"));
    }
    if len > MAX_BODY {
        return Err(format!("record length {len} is implausible"));
    }
    if bytes.len() < HEADER + len {
        return Ok(None);
    }
    let mut sum = [0u8; 8];
    sum.copy_from_slice(&bytes[5..13]);
    let body = &bytes[HEADER..HEADER + len];
    if xxh3_64(body) != u64::from_le_bytes(sum) {
        return Err("checksum mismatch".into());
    }
    let record = match kind {
        KIND_MESSAGE => Record::Message(parse_message(body).ok_or("malformed message record")?),
        KIND_MEMO => Record::Memo(parse_memo(body).ok_or("malformed memo record")?),
        _ => Record::Table(body),
    };
    Ok(Some((record, HEADER + len)))
}

fn parse_message(mut body: &[u8]) -> Option<SpooledMessage> {
    let seq = take_u64(&mut body)?;
    let received_ms = take_u64(&mut body)? as i64;
    let connection = take_u16(&mut body)?;
    let pkid = take_u16(&mut body)?;
    let flags = *take(&mut body, 1)?.first()?;
    let topic_len = usize::from(take_u16(&mut body)?);
    let topic = std::str::from_utf8(take(&mut body, topic_len)?)
        .ok()?
        .to_owned();
    Some(SpooledMessage {
        seq,
        received_ms,
        connection,
        pkid,
        dup: flags & FLAG_DUP != 0,
        retain: flags & FLAG_RETAIN != 0,
        qos1: flags & FLAG_QOS1 != 0,
        topic,
        payload: body.to_vec(),
    })
}

fn parse_memo(mut body: &[u8]) -> Option<Vec<MemoEntry>> {
    let mut entries = Vec::with_capacity(body.len() / 20);
    while !body.is_empty() {
        let connection = take_u16(&mut body)?;
        let pkid = take_u16(&mut body)?;
        let hash = take_u64(&mut body)?;
        let seq = take_u64(&mut body)?;
        entries.push((connection, pkid, hash, seq));
    }
    Some(entries)
}

/// Where a segment stops being readable.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Damage {
    offset: usize,
    detail: String,
}

/// How a segment's records ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Walked {
    /// Bytes of whole records.
    end: usize,
    /// Highest message sequence; `first_seq - 1` when there is none.
    last_seq: u64,
    /// Bytes of a torn last record after `end` (only in the last segment).
    torn_bytes: usize,
}

/// The first offset at or after `from` where a whole record with a good checksum starts.
fn next_whole(bytes: &[u8], from: usize) -> Option<usize> {
    (from..bytes.len()).find(|&p| matches!(parse(&bytes[p..]), Ok(Some(_))))
}

/// Walks the records of a segment whose name says it starts at `first_seq` (after a segment
/// whose last message is `after`), handing each to `on_record`. A bad record is a torn tail (a crash mid-write) only in the last segment and
/// only when nothing whole follows it; a bad record anywhere else, a message out of sequence,
/// or a table record is damage.
fn walk<'a>(
    bytes: &'a [u8],
    first_seq: u64,
    after: u64,
    last: bool,
    mut on_record: impl FnMut(Record<'a>),
) -> Result<Walked, Damage> {
    if first_seq <= after {
        return Err(Damage {
            offset: 0,
            detail: format!(
                "the segment starts at message {first_seq} but the one before holds up to {after}"
            ),
        });
    }
    let mut offset = 0;
    let mut last_seq = first_seq.saturating_sub(1);
    loop {
        let detail = match parse(&bytes[offset..]) {
            Ok(Some((record, used))) => {
                match &record {
                    Record::Message(m) if m.seq != last_seq + 1 => {
                        return Err(Damage {
                            offset,
                            detail: format!(
                                "message {} where {} was expected (messages are missing)",
                                m.seq,
                                last_seq + 1
                            ),
                        });
                    }
                    Record::Message(m) => last_seq = m.seq,
                    Record::Table(_) => {
                        return Err(Damage {
                            offset,
                            detail: "a table record inside a segment".into(),
                        });
                    }
                    Record::Memo(_) => {}
                }
                on_record(record);
                offset += used;
                continue;
            }
            Ok(None) if offset == bytes.len() => {
                return Ok(Walked {
                    end: offset,
                    last_seq,
                    torn_bytes: 0,
                });
            }
            Ok(None) => "incomplete record".to_owned(),
            Err(detail) => detail,
        };
        return match next_whole(bytes, offset + 1) {
            None if last => Ok(Walked {
                end: offset,
                last_seq,
                torn_bytes: bytes.len() - offset,
            }),
            None => Err(Damage {
                offset,
                detail: format!("{detail}, before the last segment"),
            }),
            Some(resumes) => Err(Damage {
                offset,
                detail: format!("{detail}; whole records follow from byte {resumes}"),
            }),
        };
    }
}

/// A message to append, borrowing its topic and payload.
struct NewMessage<'a> {
    seq: u64,
    received_ms: i64,
    connection: u16,
    pkid: u16,
    flags: u8,
    topic: &'a str,
    payload: &'a [u8],
}

fn encode_message(out: &mut Vec<u8>, m: &NewMessage<'_>) {
    let topic = m.topic.as_bytes();
    let topic_len = topic.len().min(usize::from(u16::MAX));
    frame(out, KIND_MESSAGE, |body| {
        body.extend_from_slice(&m.seq.to_le_bytes());
        body.extend_from_slice(&m.received_ms.to_le_bytes());
        body.extend_from_slice(&m.connection.to_le_bytes());
        body.extend_from_slice(&m.pkid.to_le_bytes());
        body.push(m.flags);
        body.extend_from_slice(&(topic_len as u16).to_le_bytes());
        body.extend_from_slice(&topic[..topic_len]);
        body.extend_from_slice(m.payload);
    });
}

/// Segment files of `dir`, oldest first.
fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, SpoolError> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_error(dir, "list"))? {
        let entry = entry.map_err(io_error(dir, "list"))?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".seg")) else {
            continue;
        };
        if let Ok(first) = stem.parse::<u64>() {
            found.push((first, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// What opening found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Opened {
    /// Messages in the spool.
    pub messages: u64,
    /// Bytes cut off a torn last record.
    pub truncated_bytes: u64,
}

/// How the spool is sized.
#[derive(Debug, Clone)]
pub struct SpoolSettings {
    /// The directory.
    pub dir: PathBuf,
    /// Disk bound.
    pub max_bytes: u64,
    /// Segment size.
    pub segment_bytes: u64,
    /// Resend-detection window: deliveries per connection (see `resend.rs`).
    pub window: u64,
    /// Connections.
    pub connections: u16,
}

impl Spool {
    /// Opens (or creates) the spool: reads every segment, cuts a torn tail, rebuilds the
    /// resend window, and syncs, so that everything in it is durable from here on.
    pub fn open(settings: &SpoolSettings, new_id: i32) -> Result<(Spool, Opened), SpoolError> {
        let dir = settings.dir.clone();
        std::fs::create_dir_all(&dir).map_err(io_error(&dir, "create"))?;
        let lock = lock(&dir)?;
        let id = read_or_create_id(&dir, new_id)?;
        // The table as the active segment began, then every message after it.
        let (mut resends, covered) = read_table(settings)?;
        let legacy = covered.is_none();
        let covered = covered.unwrap_or(0);
        // Legacy memos repeat entries of the segments before them: the last sequence number
        // applied per connection tells them apart.
        let mut applied = vec![0u64; usize::from(settings.connections.max(1))];
        let mut segments = VecDeque::new();
        let mut opened = Opened::default();
        let mut next_seq = 1;
        let files = list_segments(&dir)?;
        let count = files.len();
        for (i, (first_seq, path)) in files.into_iter().enumerate() {
            let last = i + 1 == count;
            let bytes = std::fs::read(&path).map_err(io_error(&path, "read"))?;
            let after = segments.back().map_or(0, |s: &Segment| s.last_seq);
            let walked = walk(&bytes, first_seq, after, last, |record| match record {
                Record::Message(m) => {
                    opened.messages += 1;
                    if m.qos1 && m.seq > covered {
                        let hash = content_hash(&m.topic, &m.payload);
                        resends.remember(m.connection, 0, m.pkid, hash);
                        if let Some(a) = applied.get_mut(usize::from(m.connection)) {
                            *a = m.seq;
                        }
                    }
                }
                Record::Memo(entries) if legacy => {
                    for (connection, pkid, hash, seq) in entries {
                        let Some(a) = applied.get_mut(usize::from(connection)) else {
                            continue;
                        };
                        if seq > *a {
                            *a = seq;
                            resends.remember(connection, 0, pkid, hash);
                        }
                    }
                }
                Record::Memo(_) | Record::Table(_) => {}
            })
            .map_err(|damage| SpoolError::Damaged {
                path: path.clone(),
                offset: damage.offset as u64,
                detail: damage.detail,
            })?;
            if walked.torn_bytes > 0 {
                // A crash mid-write leaves a torn last record: it was never synced, so never
                // acknowledged; the broker sends it again.
                opened.truncated_bytes = walked.torn_bytes as u64;
                let file = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io_error(&path, "open"))?;
                file.set_len(walked.end as u64)
                    .map_err(io_error(&path, "truncate"))?;
            }
            next_seq = next_seq.max(walked.last_seq + 1);
            segments.push_back(Segment {
                first_seq,
                path,
                bytes: walked.end as u64,
                last_seq: walked.last_seq,
            });
        }
        // Sequence numbers are never given twice, even if segments went missing.
        next_seq = next_seq.max(covered + 1);
        let total_bytes = segments.iter().map(|s| s.bytes).sum();
        let (active, segments) = match segments.back() {
            Some(s) => {
                let file = OpenOptions::new()
                    .append(true)
                    .open(&s.path)
                    .map_err(io_error(&s.path, "open"))?;
                file.sync_all().map_err(io_error(&s.path, "sync"))?;
                (file, segments)
            }
            None => {
                let path = dir.join(segment_name(next_seq));
                let file = create_segment(&path)?;
                sync_dir(&dir)?;
                let mut segments = segments;
                segments.push_back(Segment {
                    first_seq: next_seq,
                    path,
                    bytes: 0,
                    last_seq: next_seq - 1,
                });
                (file, segments)
            }
        };
        let spool = Spool {
            dir,
            id,
            max_bytes: settings.max_bytes,
            segment_bytes: settings.segment_bytes,
            segments,
            active,
            buffer: Vec::with_capacity(1 << 20),
            next_seq,
            durable_seq: next_seq - 1,
            total_bytes,
            resends,
            _lock: lock,
        };
        Ok((spool, opened))
    }

    /// The spool's id.
    pub fn id(&self) -> i32 {
        self.id
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Highest sequence number written and synced.
    pub fn durable_seq(&self) -> u64 {
        self.durable_seq
    }

    /// Lowest sequence number still in the spool.
    pub fn first_seq(&self) -> u64 {
        self.segments.front().map_or(self.next_seq, |s| s.first_seq)
    }

    /// Bytes on disk (and in the write buffer).
    pub fn bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Appends a delivery unless it is a resend of a spooled message or the disk bound is
    /// reached.
    pub fn append(&mut self, a: &Arrival<'_>) -> Appended {
        let hash = if a.qos1 {
            content_hash(a.topic, a.payload)
        } else {
            0
        };
        if a.qos1 && self.resends.is_resend(a.connection, a.epoch, a.pkid, hash) {
            return Appended::Resend;
        }
        let size = (HEADER + 23 + a.topic.len() + a.payload.len()) as u64;
        if self.total_bytes + size > self.max_bytes {
            return Appended::Full;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let before = self.buffer.len();
        let flags = if a.dup { FLAG_DUP } else { 0 }
            | if a.retain { FLAG_RETAIN } else { 0 }
            | if a.qos1 { FLAG_QOS1 } else { 0 };
        encode_message(
            &mut self.buffer,
            &NewMessage {
                seq,
                received_ms: a.received_ms,
                connection: a.connection,
                pkid: a.pkid,
                flags,
                topic: a.topic,
                payload: a.payload,
            },
        );
        let written = (self.buffer.len() - before) as u64;
        self.total_bytes += written;
        if let Some(active) = self.segments.back_mut() {
            active.bytes += written;
            active.last_seq = seq;
        }
        if a.qos1 {
            self.resends.remember(a.connection, a.epoch, a.pkid, hash);
        }
        Appended::New(seq)
    }

    /// Memory the resend table holds.
    pub fn resend_table_bytes(&self) -> usize {
        self.resends.memory_bytes()
    }

    /// Whether anything was appended since the last sync.
    pub fn needs_sync(&self) -> bool {
        !self.buffer.is_empty()
    }

    /// Writes what was appended and syncs it; starts a new segment when the active one is
    /// full. Returns the durable sequence number.
    pub fn sync(&mut self) -> Result<u64, SpoolError> {
        if self.buffer.is_empty() {
            return Ok(self.durable_seq);
        }
        let (path, synced_bytes) = self
            .segments
            .back()
            .map(|s| (s.path.clone(), s.bytes - self.buffer.len() as u64))
            .unwrap_or_default();
        let written = self
            .active
            .write_all(&self.buffer)
            .map_err(|e| (e, "write"))
            .and_then(|()| self.active.sync_data().map_err(|e| (e, "sync")));
        if let Err((error, action)) = written {
            if !is_no_space(&error) {
                return Err(io_error(&path, action)(error));
            }
            // Put the segment back as it was, so that the next try writes the same records
            // whole; what was appended stays in the buffer, unacknowledged.
            self.active
                .set_len(synced_bytes)
                .map_err(io_error(&path, "truncate after a full disk"))?;
            return Err(SpoolError::NoSpace {
                path,
                action,
                source: error,
            });
        }
        self.buffer.clear();
        self.durable_seq = self.next_seq - 1;
        if self
            .segments
            .back()
            .is_some_and(|s| s.bytes >= self.segment_bytes)
        {
            self.rotate()?;
        }
        Ok(self.durable_seq)
    }

    /// Replaces the table file with the table as it is now (every message so far is synced
    /// and in it), then starts a new segment: the segments before can be deleted once stored
    /// without the table forgetting them. On a full disk the rotation waits for the next sync
    /// (the active segment grows past its size meanwhile); a table written without its new
    /// segment is still right, as it covers the messages before it.
    fn rotate(&mut self) -> Result<(), SpoolError> {
        let path = self.dir.join(segment_name(self.next_seq));
        let rotated = self.write_table().and_then(|()| {
            let file = create_segment(&path)?;
            file.sync_all().map_err(io_error(&path, "sync"))?;
            sync_dir(&self.dir)?;
            Ok(file)
        });
        let file = match rotated {
            Ok(file) => file,
            Err(SpoolError::Io { source, .. }) if is_no_space(&source) => {
                let _ = std::fs::remove_file(&path);
                let _ = std::fs::remove_file(self.dir.join(format!("{TABLE_FILE}.tmp")));
                tracing::warn!(error = %source, "spool: no space to start a new segment; retrying at the next sync");
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        self.segments.push_back(Segment {
            first_seq: self.next_seq,
            path,
            bytes: 0,
            last_seq: self.next_seq - 1,
        });
        self.active = file;
        Ok(())
    }

    /// Writes the table file (a temporary file synced and renamed over the old one).
    fn write_table(&mut self) -> Result<(), SpoolError> {
        let mut record = Vec::new();
        frame(&mut record, KIND_TABLE, |body| {
            body.extend_from_slice(&(self.next_seq - 1).to_le_bytes());
            self.resends.encode(body);
        });
        let tmp = self.dir.join(format!("{TABLE_FILE}.tmp"));
        let mut file = File::create(&tmp).map_err(io_error(&tmp, "create"))?;
        file.write_all(&record).map_err(io_error(&tmp, "write"))?;
        file.sync_all().map_err(io_error(&tmp, "sync"))?;
        let path = self.dir.join(TABLE_FILE);
        std::fs::rename(&tmp, &path).map_err(io_error(&path, "rename"))?;
        sync_dir(&self.dir)
    }

    /// Deletes segments (never the active one) whose messages are all at or below `stored`.
    /// Returns the bytes freed.
    pub fn release(&mut self, stored: u64) -> Result<u64, SpoolError> {
        let mut freed = 0;
        while self.segments.len() > 1 && self.segments.front().is_some_and(|s| s.last_seq <= stored)
        {
            if let Some(s) = self.segments.pop_front() {
                std::fs::remove_file(&s.path).map_err(io_error(&s.path, "delete"))?;
                self.total_bytes -= s.bytes;
                freed += s.bytes;
            }
        }
        Ok(freed)
    }
}

/// Locks the spool directory for this process (released when the file is closed, also by a
/// crash).
fn lock(dir: &Path) -> Result<File, SpoolError> {
    let path = dir.join("lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_error(&path, "open"))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(SpoolError::InUse { path }),
        Err(std::fs::TryLockError::Error(e)) => Err(io_error(&path, "lock")(e)),
    }
}

/// Whether an I/O error means the filesystem (or the user's quota) is full.
fn is_no_space(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

fn create_segment(path: &Path) -> Result<File, SpoolError> {
    OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(path)
        .map_err(io_error(path, "create"))
}

/// The table file's table and the last sequence number it covers; an empty table and `None`
/// when there is no file (a new spool, or one written before the table file).
fn read_table(settings: &SpoolSettings) -> Result<(ResendTable, Option<u64>), SpoolError> {
    let path = settings.dir.join(TABLE_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok((
                ResendTable::new(settings.connections, settings.window),
                None,
            ));
        }
        Err(e) => return Err(io_error(&path, "read")(e)),
    };
    let damaged = |detail: String| SpoolError::Damaged {
        path: path.clone(),
        offset: 0,
        detail,
    };
    let body = match parse(&bytes) {
        Ok(Some((Record::Table(body), used))) if used == bytes.len() => body,
        Ok(_) => return Err(damaged("not one complete table record".into())),
        Err(detail) => return Err(damaged(detail)),
    };
    let mut rest = body;
    let covered = take_u64(&mut rest).ok_or_else(|| damaged("no sequence number".into()))?;
    let table = ResendTable::decode(rest, settings.connections, settings.window)
        .ok_or_else(|| damaged("malformed table".into()))?;
    Ok((table, Some(covered)))
}

fn read_or_create_id(dir: &Path, new_id: i32) -> Result<i32, SpoolError> {
    let path = dir.join("spool-id");
    match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().parse().map_err(|e| SpoolError::Damaged {
            path: path.clone(),
            offset: 0,
            detail: format!("not a spool id: {e}"),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let tmp = dir.join("spool-id.tmp");
            let mut file = File::create(&tmp).map_err(io_error(&tmp, "create"))?;
            writeln!(file, "{new_id}").map_err(io_error(&tmp, "write"))?;
            file.sync_all().map_err(io_error(&tmp, "sync"))?;
            std::fs::rename(&tmp, &path).map_err(io_error(&path, "rename"))?;
            sync_dir(dir)?;
            Ok(new_id)
        }
        Err(e) => Err(io_error(&path, "read")(e)),
    }
}

/// Reads spooled messages in order, up to the durable sequence the writer reports.
#[derive(Debug)]
pub struct SpoolReader {
    dir: PathBuf,
    file: Option<(File, PathBuf)>,
    position: u64,
    buffer: Vec<u8>,
    start: usize,
    /// The next sequence number to hand out.
    next_seq: u64,
    /// The first sequence number of the open segment (its name).
    segment_first: u64,
}

/// Bytes read from a segment at a time.
const READ_CHUNK: usize = 1 << 20;

impl SpoolReader {
    /// A reader that hands out messages from `from_seq` on (earlier ones are skipped).
    pub fn new(dir: &Path, from_seq: u64) -> Self {
        SpoolReader {
            dir: dir.to_owned(),
            file: None,
            position: 0,
            buffer: Vec::new(),
            start: 0,
            next_seq: from_seq,
            segment_first: 0,
        }
    }

    /// The next message with a sequence number at or below `durable`, or `None` when there is
    /// none yet.
    pub fn next(&mut self, durable: u64) -> Result<Option<SpooledMessage>, SpoolError> {
        while self.next_seq <= durable {
            if self.file.is_none() && !self.open_segment()? {
                return Ok(None);
            }
            match parse(&self.buffer[self.start..]) {
                Ok(Some((record, used))) => {
                    self.start += used;
                    if let Record::Message(m) = record
                        && m.seq >= self.next_seq
                    {
                        self.next_seq = m.seq + 1;
                        return Ok(Some(m));
                    }
                }
                Ok(None) => {
                    if !self.fill()? {
                        // This segment is exhausted once a later one exists: it usually starts
                        // at `next_seq`, later if a salvage dropped damaged messages.
                        let later = list_segments(&self.dir)?
                            .into_iter()
                            .find(|(first, _)| *first > self.segment_first);
                        match later {
                            Some((first, _)) => {
                                self.file = None;
                                self.next_seq = self.next_seq.max(first);
                            }
                            None => return Ok(None),
                        }
                    }
                }
                Err(detail) => {
                    let path = self
                        .file
                        .as_ref()
                        .map(|(_, p)| p.clone())
                        .unwrap_or_default();
                    return Err(SpoolError::Damaged {
                        path,
                        offset: self.position - (self.buffer.len() - self.start) as u64,
                        detail,
                    });
                }
            }
        }
        Ok(None)
    }

    /// Opens the segment holding `next_seq`. Returns false if there is none.
    fn open_segment(&mut self) -> Result<bool, SpoolError> {
        let segments = list_segments(&self.dir)?;
        let Some((first, path)) = segments
            .iter()
            .rev()
            .find(|(first, _)| *first <= self.next_seq)
            .or_else(|| segments.first())
        else {
            return Ok(false);
        };
        let file = File::open(path).map_err(io_error(path, "open"))?;
        self.file = Some((file, path.clone()));
        self.segment_first = *first;
        self.position = 0;
        self.buffer.clear();
        self.start = 0;
        Ok(true)
    }

    /// Reads more of the current segment; false at its end.
    fn fill(&mut self) -> Result<bool, SpoolError> {
        let Some((file, path)) = &self.file else {
            return Ok(false);
        };
        if self.start > 0 {
            self.buffer.drain(..self.start);
            self.start = 0;
        }
        let old = self.buffer.len();
        self.buffer.resize(old + READ_CHUNK, 0);
        let n = file
            .read_at(&mut self.buffer[old..], self.position)
            .map_err(io_error(path, "read"))?;
        self.buffer.truncate(old + n);
        self.position += n as u64;
        Ok(n > 0)
    }
}

/// One damaged span of a segment, as [`inspect`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedSpan {
    /// The segment.
    pub path: PathBuf,
    /// Where the damage starts.
    pub offset: u64,
    /// Bytes up to the next whole record (or the end of the file).
    pub bytes: u64,
    /// What is wrong at `offset`.
    pub detail: String,
    /// The last sequence number intact before it (`first - 1` of the segment if none).
    pub intact_before: u64,
    /// The first sequence number intact after it in this segment, if any.
    pub intact_after: Option<u64>,
    /// A crash's torn last record: never synced, never acknowledged, nothing lost.
    pub torn_tail: bool,
}

/// What [`inspect`] found in a spool directory (or [`salvage`] repaired).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inspection {
    /// Segment files read.
    pub segments: usize,
    /// Whole messages in them.
    pub messages: u64,
    /// Lowest and highest sequence number of those messages.
    pub seq_range: Option<(u64, u64)>,
    /// Damaged spans, in file order.
    pub spans: Vec<DamagedSpan>,
    /// What is wrong with the resend table's file, if anything.
    pub table_damage: Option<String>,
    /// Files moved into `<dir>/damaged/` (by [`salvage`]).
    pub moved: Vec<PathBuf>,
    /// Segment files written with the intact records (by [`salvage`]).
    pub written: Vec<PathBuf>,
}

impl Inspection {
    /// Whether anything needs a salvage (a torn tail alone does not: opening cuts it).
    pub fn damaged(&self) -> bool {
        self.table_damage.is_some() || self.spans.iter().any(|s| !s.torn_tail)
    }
}

/// A run of consecutive whole messages of one segment, as byte ranges.
struct Run {
    first_seq: u64,
    last_seq: u64,
    ranges: Vec<(usize, usize)>,
}

/// Reads one segment the way [`salvage`] keeps it: runs of whole, consecutive records, and
/// the damaged spans between them.
fn survey(
    path: &Path,
    bytes: &[u8],
    first_seq: u64,
    after: u64,
    last: bool,
) -> (Vec<Run>, Vec<DamagedSpan>) {
    let mut runs: Vec<Run> = Vec::new();
    let mut spans = Vec::new();
    let mut offset = 0;
    // What `walk` expects next; anything at or below `after` belongs to an earlier segment.
    let mut last_seq = first_seq.saturating_sub(1);
    let mut highest = after;
    // Records before a message (legacy memos) join the run of that message.
    let mut pending: Vec<(usize, usize)> = Vec::new();
    while offset < bytes.len() {
        let problem = match parse(&bytes[offset..]) {
            Ok(Some((Record::Message(m), used))) if m.seq > highest.max(last_seq) => {
                // Right after a damaged span, that span accounts for the missing numbers.
                let after_damage = spans
                    .last()
                    .is_some_and(|s: &DamagedSpan| s.offset + s.bytes == offset as u64);
                if m.seq != last_seq + 1 && !after_damage {
                    spans.push(DamagedSpan {
                        path: path.to_owned(),
                        offset: offset as u64,
                        bytes: 0,
                        detail: format!(
                            "message {} where {} was expected (messages are missing)",
                            m.seq,
                            last_seq + 1
                        ),
                        intact_before: last_seq,
                        intact_after: Some(m.seq),
                        torn_tail: false,
                    });
                }
                highest = m.seq;
                pending.push((offset, used));
                match runs.last_mut() {
                    Some(run) if m.seq == run.last_seq + 1 && run.last_seq == last_seq => {
                        run.last_seq = m.seq;
                        run.ranges.append(&mut pending);
                    }
                    _ => runs.push(Run {
                        first_seq: m.seq,
                        last_seq: m.seq,
                        ranges: std::mem::take(&mut pending),
                    }),
                }
                last_seq = m.seq;
                offset += used;
                continue;
            }
            Ok(Some((Record::Message(m), _))) => {
                format!(
                    "message {} after message {} (out of order)",
                    m.seq,
                    highest.max(last_seq)
                )
            }
            Ok(Some((Record::Memo(_), used))) => {
                pending.push((offset, used));
                offset += used;
                continue;
            }
            Ok(Some((Record::Table(_), _))) => "a table record inside a segment".to_owned(),
            Ok(None) => "incomplete record".to_owned(),
            Err(detail) => detail,
        };
        // A whole record in the wrong place is never a crash's torn write.
        let whole = matches!(parse(&bytes[offset..]), Ok(Some(_)));
        let resumes = next_whole(bytes, offset + 1);
        let end = resumes.unwrap_or(bytes.len());
        let intact_after = resumes.and_then(|p| match parse(&bytes[p..]) {
            Ok(Some((Record::Message(m), _))) => Some(m.seq),
            _ => None,
        });
        spans.push(DamagedSpan {
            path: path.to_owned(),
            offset: offset as u64,
            bytes: (end - offset) as u64,
            detail: problem,
            intact_before: last_seq,
            intact_after,
            torn_tail: last && !whole && resumes.is_none(),
        });
        offset = end;
    }
    (runs, spans)
}

/// Checks every file of a spool without changing it (`cityops spool check`). Takes the
/// spool's lock: a spool in use is refused.
pub fn inspect(dir: &Path) -> Result<Inspection, SpoolError> {
    let _lock = lock(dir)?;
    Ok(survey_dir(dir)?.0)
}

type Surveyed = (Inspection, Vec<(u64, PathBuf, Vec<u8>, Vec<Run>)>);

fn survey_dir(dir: &Path) -> Result<Surveyed, SpoolError> {
    let mut inspection = Inspection::default();
    let table = dir.join(TABLE_FILE);
    match std::fs::read(&table) {
        Ok(bytes) => match parse(&bytes) {
            Ok(Some((Record::Table(body), used))) if used == bytes.len() && body.len() >= 8 => {}
            Ok(_) => inspection.table_damage = Some("not one complete table record".into()),
            Err(detail) => inspection.table_damage = Some(detail),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error(&table, "read")(e)),
    }
    let files = list_segments(dir)?;
    let count = files.len();
    let mut surveyed = Vec::with_capacity(count);
    let mut highest = 0;
    for (i, (first_seq, path)) in files.into_iter().enumerate() {
        let bytes = std::fs::read(&path).map_err(io_error(&path, "read"))?;
        let (runs, spans) = survey(&path, &bytes, first_seq, highest, i + 1 == count);
        highest = highest.max(runs.iter().map(|r| r.last_seq).max().unwrap_or(0));
        inspection.segments += 1;
        for run in &runs {
            inspection.messages += run.last_seq - run.first_seq + 1;
            let (low, high) = inspection
                .seq_range
                .get_or_insert((run.first_seq, run.last_seq));
            *low = (*low).min(run.first_seq);
            *high = (*high).max(run.last_seq);
        }
        inspection.spans.extend(spans);
        surveyed.push((first_seq, path, bytes, runs));
    }
    Ok((inspection, surveyed))
}

/// The smallest a message record can be: a header and a body with an empty topic and payload.
const MIN_MESSAGE_RECORD: u64 = (HEADER + 23) as u64;

/// Repairs a damaged spool so that it opens again, keeping every whole record
/// (`cityops spool salvage`; the ingest must be stopped). Each damaged segment is moved to
/// `<dir>/damaged/` and replaced by segments of its intact runs; a damaged table file is moved
/// there too (the resend table is then rebuilt from the segments). Sequence numbers are never
/// given twice: when damage hides how far they went, an empty segment starts the numbering
/// past what the damaged bytes could have held. Returns what was found and done.
pub fn salvage(dir: &Path) -> Result<Inspection, SpoolError> {
    let _lock = lock(dir)?;
    let (mut inspection, surveyed) = survey_dir(dir)?;
    let quarantine = dir.join("damaged");
    let move_aside = |path: &Path, inspection: &mut Inspection| -> Result<(), SpoolError> {
        std::fs::create_dir_all(&quarantine).map_err(io_error(&quarantine, "create"))?;
        let name = path.file_name().unwrap_or_default();
        let mut target = quarantine.join(name);
        let mut n = 1;
        while target.exists() {
            target = quarantine.join(format!("{}.{n}", name.to_string_lossy()));
            n += 1;
        }
        std::fs::rename(path, &target).map_err(io_error(path, "move aside"))?;
        inspection.moved.push(target);
        Ok(())
    };
    if inspection.table_damage.is_some() {
        move_aside(&dir.join(TABLE_FILE), &mut inspection)?;
    }
    let mut highest = 0u64;
    let mut floor = 0u64;
    for (first_seq, path, bytes, runs) in &surveyed {
        highest = highest.max(first_seq.saturating_sub(1));
        highest = highest.max(runs.iter().map(|r| r.last_seq).max().unwrap_or(0));
        let spans: Vec<&DamagedSpan> = inspection
            .spans
            .iter()
            .filter(|s| &s.path == path)
            .collect();
        if spans.is_empty() {
            continue;
        }
        if spans.iter().all(|s| s.torn_tail) {
            // What opening would do anyway: cut the torn record.
            let end = spans[0].offset;
            OpenOptions::new()
                .write(true)
                .open(path)
                .and_then(|f| f.set_len(end).and_then(|()| f.sync_all()))
                .map_err(io_error(path, "truncate"))?;
            continue;
        }
        for span in spans.iter().filter(|s| !s.torn_tail) {
            let could_hold = span.bytes.div_ceil(MIN_MESSAGE_RECORD);
            floor = floor.max(span.intact_before + could_hold + 1);
        }
        let mut written = Vec::new();
        for run in runs {
            let tmp = dir.join(format!("{}.salvage", segment_name(run.first_seq)));
            let mut out = Vec::new();
            for &(start, len) in &run.ranges {
                out.extend_from_slice(&bytes[start..start + len]);
            }
            let mut file = File::create(&tmp).map_err(io_error(&tmp, "create"))?;
            file.write_all(&out).map_err(io_error(&tmp, "write"))?;
            file.sync_all().map_err(io_error(&tmp, "sync"))?;
            written.push((tmp, dir.join(segment_name(run.first_seq))));
        }
        move_aside(path, &mut inspection)?;
        for (tmp, target) in written {
            std::fs::rename(&tmp, &target).map_err(io_error(&target, "rename"))?;
            inspection.written.push(target);
        }
    }
    if floor > highest + 1 {
        let path = dir.join(segment_name(floor));
        create_segment(&path)?
            .sync_all()
            .map_err(io_error(&path, "sync"))?;
        inspection.written.push(path);
    }
    sync_dir(dir)?;
    Ok(inspection)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(dir: &Path, segment_bytes: u64, max_bytes: u64) -> SpoolSettings {
        SpoolSettings {
            dir: dir.to_owned(),
            max_bytes,
            segment_bytes,
            window: 4,
            connections: 2,
        }
    }

    /// Appends a QoS 1 delivery of connection attempt `epoch`.
    fn add(spool: &mut Spool, connection: u16, epoch: u64, pkid: u16, payload: &str) -> Appended {
        spool.append(&Arrival {
            received_ms: 1,
            connection,
            epoch,
            pkid,
            qos1: true,
            dup: epoch > 1,
            retain: false,
            topic: "t/a",
            payload: payload.as_bytes(),
        })
    }

    fn read_all(dir: &Path, from: u64, durable: u64) -> Vec<SpooledMessage> {
        let mut reader = SpoolReader::new(dir, from);
        let mut out = Vec::new();
        while let Some(m) = reader.next(durable).unwrap() {
            out.push(m);
        }
        out
    }

    #[test]
    fn numbers_syncs_reads_back_and_rotates() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, opened) = Spool::open(&settings(dir.path(), 200, 1 << 20), 42).unwrap();
        assert_eq!(opened, Opened::default());
        assert_eq!(spool.id(), 42);
        for i in 0..10u16 {
            assert_eq!(
                add(&mut spool, 0, 1, i + 1, &format!("p{i}")),
                Appended::New(u64::from(i) + 1)
            );
            spool.sync().unwrap();
        }
        assert!(list_segments(dir.path()).unwrap().len() > 2, "rotated");
        let all = read_all(dir.path(), 1, spool.durable_seq());
        assert_eq!(all.len(), 10);
        assert_eq!(all[9].payload, b"p9");
        assert_eq!(all[3].seq, 4);
        let tail = read_all(dir.path(), 7, spool.durable_seq());
        assert_eq!(tail.first().map(|m| m.seq), Some(7));
        // Nothing beyond the durable mark is handed out.
        assert_eq!(add(&mut spool, 0, 1, 11, "late"), Appended::New(11));
        assert_eq!(read_all(dir.path(), 11, spool.durable_seq()).len(), 0);
    }

    #[test]
    fn recognises_resends_after_a_reconnect_also_across_rotations_deletions_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), 100, 1 << 20);
        let (mut spool, _) = Spool::open(&s, 1).unwrap();
        assert_eq!(add(&mut spool, 0, 1, 7, "a"), Appended::New(1));
        // Same packet id on the other connection, or other content: a different message.
        assert_eq!(add(&mut spool, 1, 1, 7, "a"), Appended::New(2));
        assert_eq!(add(&mut spool, 0, 1, 7, "b"), Appended::New(3));
        // The same id and content on the same connection attempt: a new message that looks
        // the same (brokers resend only after a reconnect).
        assert_eq!(add(&mut spool, 0, 1, 7, "b"), Appended::New(4));
        // The next attempt: the latest message with packet id 7 on connection 0 is "b".
        assert_eq!(add(&mut spool, 0, 2, 7, "b"), Appended::Resend);
        assert_eq!(add(&mut spool, 0, 2, 7, "a"), Appended::New(5));
        assert_eq!(add(&mut spool, 0, 2, 8, "a"), Appended::New(6));
        spool.sync().unwrap();
        for i in 0..3 {
            assert_eq!(
                add(&mut spool, 1, 1, 100 + i, "x"),
                Appended::New(7 + u64::from(i))
            );
            spool.sync().unwrap();
        }
        // Everything is stored: the segments before the active one are deleted, and only the
        // table file remembers their deliveries.
        spool.release(9).unwrap();
        assert_eq!(list_segments(dir.path()).unwrap().len(), 1);
        drop(spool);
        let (mut spool, opened) = Spool::open(&s, 9).unwrap();
        assert_eq!(spool.id(), 1, "the id is the spool's, kept across opens");
        assert_eq!(opened.messages, 0);
        // What the last run remembered came on earlier attempts than any of this run.
        assert_eq!(add(&mut spool, 0, 1, 7, "a"), Appended::Resend);
        assert_eq!(add(&mut spool, 0, 1, 8, "a"), Appended::Resend);
        assert_eq!(add(&mut spool, 1, 1, 102, "x"), Appended::Resend);
        assert_eq!(add(&mut spool, 1, 1, 103, "y"), Appended::New(10));
        // Pushed out of the window of 4 deliveries of connection 1: treated as new.
        assert_eq!(add(&mut spool, 1, 1, 7, "a"), Appended::New(11));
    }

    #[test]
    fn reads_the_memo_records_of_spools_written_before_the_table_file() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), 1 << 20, 1 << 30);
        std::fs::write(dir.path().join("spool-id"), "5\n").unwrap();
        let mut bytes = Vec::new();
        frame(&mut bytes, KIND_MEMO, |body| {
            for (connection, pkid, payload, seq) in [(0u16, 3u16, "old", 1u64), (1, 4, "other", 2)]
            {
                body.extend_from_slice(&connection.to_le_bytes());
                body.extend_from_slice(&pkid.to_le_bytes());
                body.extend_from_slice(&content_hash("t/a", payload.as_bytes()).to_le_bytes());
                body.extend_from_slice(&seq.to_le_bytes());
            }
        });
        encode_message(
            &mut bytes,
            &NewMessage {
                seq: 3,
                received_ms: 1,
                connection: 0,
                pkid: 9,
                flags: FLAG_QOS1,
                topic: "t/a",
                payload: b"new",
            },
        );
        std::fs::write(dir.path().join(segment_name(3)), &bytes).unwrap();
        let (mut spool, opened) = Spool::open(&s, 1).unwrap();
        assert_eq!(
            (spool.id(), opened.messages, spool.durable_seq()),
            (5, 1, 3)
        );
        assert_eq!(add(&mut spool, 0, 1, 3, "old"), Appended::Resend);
        assert_eq!(add(&mut spool, 1, 1, 4, "other"), Appended::Resend);
        assert_eq!(add(&mut spool, 0, 1, 9, "new"), Appended::Resend);
        assert_eq!(add(&mut spool, 0, 1, 10, "new"), Appended::New(4));
    }

    #[test]
    fn cuts_a_torn_tail_and_refuses_damage_elsewhere() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), 1 << 20, 1 << 30);
        let (mut spool, _) = Spool::open(&s, 1).unwrap();
        add(&mut spool, 0, 1, 1, "one");
        add(&mut spool, 0, 1, 2, "two");
        spool.sync().unwrap();
        drop(spool);
        let (_, path) = list_segments(dir.path()).unwrap().remove(0);
        let mut bytes = std::fs::read(&path).unwrap();
        let full = bytes.len();
        bytes.truncate(full - 2);
        std::fs::write(&path, &bytes).unwrap();
        let (spool, opened) = Spool::open(&s, 1).unwrap();
        assert_eq!(opened.messages, 1);
        assert!(opened.truncated_bytes > 0);
        assert_eq!(spool.durable_seq(), 1);
        drop(spool);
        // Damage in the middle of a complete segment that is not the last: an error.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[HEADER + 2] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        std::fs::write(dir.path().join(segment_name(2)), b"").unwrap();
        assert!(matches!(
            Spool::open(&s, 1),
            Err(SpoolError::Damaged { .. })
        ));
    }

    #[test]
    fn a_damaged_table_file_stops_the_open_and_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), 100, 1 << 20);
        let (mut spool, _) = Spool::open(&s, 1).unwrap();
        for pkid in 1..=4 {
            add(&mut spool, 0, 1, pkid, "0123456789");
            spool.sync().unwrap();
        }
        drop(spool);
        let table = dir.path().join(TABLE_FILE);
        let mut bytes = std::fs::read(&table).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&table, &bytes).unwrap();
        let error = Spool::open(&s, 1).unwrap_err().to_string();
        assert!(
            error.contains("resend-table") && error.contains("checksum"),
            "{error}"
        );
    }

    #[test]
    fn stops_at_the_disk_bound_and_frees_stored_segments() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = Spool::open(&settings(dir.path(), 100, 400), 1).unwrap();
        let mut seqs = Vec::new();
        loop {
            let pkid = seqs.len() as u16 + 1;
            match add(&mut spool, 0, 1, pkid, "0123456789") {
                Appended::New(seq) => seqs.push(seq),
                Appended::Full => break,
                Appended::Resend => unreachable!(),
            }
            spool.sync().unwrap();
        }
        assert!(spool.bytes() <= 400);
        let last = *seqs.last().unwrap();
        assert_eq!(spool.release(0).unwrap(), 0);
        let freed = spool.release(last).unwrap();
        assert!(freed > 0);
        assert!(matches!(
            add(&mut spool, 0, 1, 999, "0123456789"),
            Appended::New(_)
        ));
        assert_eq!(spool.first_seq(), spool.segments.back().unwrap().first_seq);
    }

    /// A spool of `n` messages in one segment (synced one by one), closed.
    fn spool_of(dir: &Path, n: u16) -> SpoolSettings {
        let s = settings(dir, 1 << 20, 1 << 30);
        let (mut spool, _) = Spool::open(&s, 1).unwrap();
        for pkid in 1..=n {
            add(&mut spool, 0, 1, pkid, &format!("payload {pkid}"));
            spool.sync().unwrap();
        }
        s
    }

    #[test]
    fn a_flipped_byte_mid_file_of_the_last_segment_is_damage_not_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let s = spool_of(dir.path(), 10);
        let (_, path) = list_segments(dir.path()).unwrap().remove(0);
        let mut bytes = std::fs::read(&path).unwrap();
        let record = bytes.len() / 10;
        // The fifth record's payload.
        bytes[4 * record + record - 2] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        let error = Spool::open(&s, 1).unwrap_err().to_string();
        let offset = 4 * record;
        assert!(
            error.contains(&path.display().to_string())
                && error.contains(&format!("at byte {offset}:"))
                && error.contains("checksum")
                && error.contains("cityops spool salvage"),
            "{error}"
        );
        // Nothing was cut.
        assert_eq!(std::fs::read(&path).unwrap(), bytes);

        let found = inspect(dir.path()).unwrap();
        assert_eq!(found.messages, 9);
        assert_eq!(found.spans.len(), 1, "{found:?}");
        let span = &found.spans[0];
        assert_eq!((span.offset, span.bytes), (offset as u64, record as u64));
        assert_eq!((span.intact_before, span.intact_after), (4, Some(6)));
        assert!(found.damaged() && !span.torn_tail);

        let done = salvage(dir.path()).unwrap();
        assert_eq!(
            done.moved,
            vec![dir.path().join("damaged").join(path.file_name().unwrap())]
        );
        assert_eq!(done.written.len(), 2, "{done:?}");
        let (spool, opened) = Spool::open(&s, 1).unwrap();
        assert_eq!(opened.messages, 9);
        assert_eq!(spool.durable_seq(), 10);
        let seqs: Vec<u64> = read_all(dir.path(), 1, 10).iter().map(|m| m.seq).collect();
        assert_eq!(seqs, vec![1, 2, 3, 4, 6, 7, 8, 9, 10]);
        drop(spool);
        assert!(!inspect(dir.path()).unwrap().damaged());
    }

    #[test]
    fn a_gap_in_a_segment_is_damage() {
        let dir = tempfile::tempdir().unwrap();
        let s = spool_of(dir.path(), 3);
        let (_, path) = list_segments(dir.path()).unwrap().remove(0);
        let bytes = std::fs::read(&path).unwrap();
        let record = bytes.len() / 3;
        let mut cut = bytes[..record].to_vec();
        cut.extend_from_slice(&bytes[2 * record..]);
        std::fs::write(&path, &cut).unwrap();
        let error = Spool::open(&s, 1).unwrap_err().to_string();
        assert!(error.contains("message 3 where 2 was expected"), "{error}");
    }

    #[test]
    fn salvage_numbers_past_what_unreadable_bytes_could_have_held() {
        let dir = tempfile::tempdir().unwrap();
        let s = spool_of(dir.path(), 2);
        let (_, path) = list_segments(dir.path()).unwrap().remove(0);
        let mut bytes = std::fs::read(&path).unwrap();
        // Garbage, then a whole legacy memo record: the garbage's sequence numbers are unknown.
        bytes.extend_from_slice(&[0xAB; 360]);
        frame(&mut bytes, KIND_MEMO, |_| {});
        std::fs::write(&path, &bytes).unwrap();
        assert!(Spool::open(&s, 1).is_err());
        let done = salvage(dir.path()).unwrap();
        // 360 bytes hold at most 10 messages after message 2.
        assert!(
            done.written.contains(&dir.path().join(segment_name(13))),
            "{done:?}"
        );
        let (mut spool, _) = Spool::open(&s, 1).unwrap();
        assert_eq!(add(&mut spool, 1, 1, 1, "next"), Appended::New(13));
    }

    #[test]
    fn a_second_process_is_kept_off_a_spool_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), 1 << 20, 1 << 30);
        let (spool, _) = Spool::open(&s, 1).unwrap();
        assert!(matches!(Spool::open(&s, 1), Err(SpoolError::InUse { .. })));
        assert!(matches!(salvage(dir.path()), Err(SpoolError::InUse { .. })));
        drop(spool);
        assert!(Spool::open(&s, 1).is_ok());
    }
}
