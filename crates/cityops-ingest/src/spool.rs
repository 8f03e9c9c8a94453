//! The MQTT ingest's crash-safe local spool: an append-only log of what the broker delivered,
//! numbered by one sequence, synced (fdatasync) before any of it is acknowledged, read back in
//! order by the pipeline, and deleted segment by segment once ClickHouse holds it.
//!
//! Layout: `<dir>/spool-id` (the spool's number, the `source_partition` of its rows) and
//! segments `<dir>/<first seq, 20 digits>.seg`. A record is a 13-byte header (kind, body
//! length, XXH3-64 of the body) and a body. A *message* record holds the sequence number,
//! arrival time, connection, packet id, flags, topic and payload; a *memo* record (written at
//! the start of each segment) carries the duplicate-detection window over from the previous
//! segment. A torn record at the end of the last segment (a crash mid-write) is cut off on
//! open; a damaged record anywhere else stops the open with an error rather than skipping
//! data silently.

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
    /// A record failed its checksum or framing before the end of the spool.
    #[error("spool {path}: damaged record at byte {offset}: {detail}")]
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
const KIND_MEMO: u8 = 0xC6;
const HEADER: usize = 13;
/// Bytes of one memo entry: connection, packet id, content hash, sequence number.
const MEMO_ENTRY: usize = 20;
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
    /// A resend (DUP) of the message already spooled as this sequence number: not written
    /// again; acknowledge it once that number is durable.
    Duplicate(u64),
    /// The disk bound is reached: nothing written. Hold it, unacknowledged, and try later.
    Full,
}

/// One recent delivery of a connection, to recognise the broker's resends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Recent {
    pkid: u16,
    hash: u64,
    seq: u64,
}

/// The last `window` deliveries of one connection, in order, and the latest per packet id.
#[derive(Debug, Default)]
struct Recents {
    ring: VecDeque<Recent>,
    by_pkid: std::collections::HashMap<u16, (u64, u64)>,
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
    window: usize,
    segments: VecDeque<Segment>,
    active: File,
    buffer: Vec<u8>,
    next_seq: u64,
    /// Highest sequence written and synced.
    durable_seq: u64,
    total_bytes: u64,
    recent: Vec<Recents>,
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

/// A parsed record: a message or a memo entry list.
enum Record {
    Message(SpooledMessage),
    Memo(Vec<(u16, Recent)>),
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
fn parse(bytes: &[u8]) -> Result<Option<(Record, usize)>, String> {
    if bytes.len() < HEADER {
        return Ok(None);
    }
    let kind = bytes[0];
    let len = u32::from_le_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
    if kind != KIND_MESSAGE && kind != KIND_MEMO {
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
    let record = if kind == KIND_MESSAGE {
        Record::Message(parse_message(body).ok_or("malformed message record")?)
    } else {
        Record::Memo(parse_memo(body).ok_or("malformed memo record")?)
    };
    Ok(Some((record, HEADER + len)))
}

fn take<'a>(body: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if body.len() < n {
        return None;
    }
    let (head, rest) = body.split_at(n);
    *body = rest;
    Some(head)
}

fn take_u16(body: &mut &[u8]) -> Option<u16> {
    take(body, 2).map(|b| u16::from_le_bytes([b[0], b[1]]))
}

fn take_u64(body: &mut &[u8]) -> Option<u64> {
    take(body, 8).map(|b| {
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        u64::from_le_bytes(a)
    })
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

fn parse_memo(mut body: &[u8]) -> Option<Vec<(u16, Recent)>> {
    let mut entries = Vec::with_capacity(body.len() / MEMO_ENTRY);
    while !body.is_empty() {
        let connection = take_u16(&mut body)?;
        let pkid = take_u16(&mut body)?;
        let hash = take_u64(&mut body)?;
        let seq = take_u64(&mut body)?;
        entries.push((connection, Recent { pkid, hash, seq }));
    }
    Some(entries)
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
    /// Resend-detection window per connection (at least the broker's in-flight window).
    pub window: usize,
    /// Connections.
    pub connections: u16,
}

impl Spool {
    /// Opens (or creates) the spool: reads every segment, cuts a torn tail, rebuilds the
    /// resend window, and syncs, so that everything in it is durable from here on.
    pub fn open(settings: &SpoolSettings, new_id: i32) -> Result<(Spool, Opened), SpoolError> {
        let dir = settings.dir.clone();
        std::fs::create_dir_all(&dir).map_err(io_error(&dir, "create"))?;
        let id = read_or_create_id(&dir, new_id)?;
        let mut recent: Vec<Recents> = (0..settings.connections.max(1))
            .map(|_| Recents::default())
            .collect();
        let mut segments = VecDeque::new();
        let mut opened = Opened::default();
        let mut next_seq = 1;
        let files = list_segments(&dir)?;
        let count = files.len();
        for (i, (first_seq, path)) in files.into_iter().enumerate() {
            let last = i + 1 == count;
            let bytes = std::fs::read(&path).map_err(io_error(&path, "read"))?;
            let mut offset = 0usize;
            let mut last_seq = first_seq.saturating_sub(1);
            loop {
                match parse(&bytes[offset..]) {
                    Ok(Some((record, used))) => {
                        match record {
                            Record::Message(m) => {
                                last_seq = m.seq;
                                opened.messages += 1;
                                remember(
                                    &mut recent,
                                    settings.window,
                                    m.connection,
                                    m.qos1.then(|| Recent {
                                        pkid: m.pkid,
                                        hash: content_hash(&m.topic, &m.payload),
                                        seq: m.seq,
                                    }),
                                );
                            }
                            Record::Memo(entries) => {
                                for (c, r) in entries {
                                    remember(&mut recent, settings.window, c, Some(r));
                                }
                            }
                        }
                        offset += used;
                    }
                    Ok(None) if offset == bytes.len() => break,
                    Ok(None) | Err(_) if last => {
                        // A crash mid-write leaves a torn last record: it was never synced,
                        // so never acknowledged; the broker sends it again.
                        opened.truncated_bytes = (bytes.len() - offset) as u64;
                        let file = OpenOptions::new()
                            .write(true)
                            .open(&path)
                            .map_err(io_error(&path, "open"))?;
                        file.set_len(offset as u64)
                            .map_err(io_error(&path, "truncate"))?;
                        break;
                    }
                    Ok(None) => {
                        return Err(SpoolError::Damaged {
                            path,
                            offset: offset as u64,
                            detail: "incomplete record before the last segment".into(),
                        });
                    }
                    Err(detail) => {
                        return Err(SpoolError::Damaged {
                            path,
                            offset: offset as u64,
                            detail,
                        });
                    }
                }
            }
            next_seq = next_seq.max(last_seq + 1);
            segments.push_back(Segment {
                first_seq,
                path,
                bytes: offset as u64,
                last_seq,
            });
        }
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
            window: settings.window.max(1),
            segments,
            active,
            buffer: Vec::with_capacity(1 << 20),
            next_seq,
            durable_seq: next_seq - 1,
            total_bytes,
            recent,
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
    #[allow(clippy::too_many_arguments)]
    pub fn append(
        &mut self,
        received_ms: i64,
        connection: u16,
        pkid: u16,
        qos1: bool,
        dup: bool,
        retain: bool,
        topic: &str,
        payload: &[u8],
    ) -> Appended {
        let hash = if qos1 {
            content_hash(topic, payload)
        } else {
            0
        };
        if qos1 {
            // The broker numbers a session's deliveries in turn, wrapping at 65,535: within
            // the window, the same packet id with the same content is the same message sent
            // again (the DUP flag is not relied on: not every resend carries it).
            let resent = self
                .recent
                .get(usize::from(connection))
                .and_then(|r| r.by_pkid.get(&pkid))
                .filter(|(h, _)| *h == hash);
            if let Some((_, seq)) = resent {
                return Appended::Duplicate(*seq);
            }
        }
        let size = (HEADER + 23 + topic.len() + payload.len()) as u64;
        // Room is kept for the memo the next segment starts with, so rotating never passes
        // the bound.
        if self.total_bytes + size + self.memo_bytes() > self.max_bytes {
            return Appended::Full;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let before = self.buffer.len();
        let flags = if dup { FLAG_DUP } else { 0 }
            | if retain { FLAG_RETAIN } else { 0 }
            | if qos1 { FLAG_QOS1 } else { 0 };
        encode_message(
            &mut self.buffer,
            &NewMessage {
                seq,
                received_ms,
                connection,
                pkid,
                flags,
                topic,
                payload,
            },
        );
        let written = (self.buffer.len() - before) as u64;
        self.total_bytes += written;
        if let Some(active) = self.segments.back_mut() {
            active.bytes += written;
            active.last_seq = seq;
        }
        let window = self.window;
        remember(
            &mut self.recent,
            window,
            connection,
            qos1.then_some(Recent { pkid, hash, seq }),
        );
        Appended::New(seq)
    }

    /// Size of the memo a new segment would start with.
    fn memo_bytes(&self) -> u64 {
        let entries: usize = self.recent.iter().map(|r| r.ring.len()).sum();
        (HEADER + entries * MEMO_ENTRY) as u64
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
        let path = self
            .segments
            .back()
            .map(|s| s.path.clone())
            .unwrap_or_default();
        self.active
            .write_all(&self.buffer)
            .map_err(io_error(&path, "write"))?;
        self.active.sync_data().map_err(io_error(&path, "sync"))?;
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

    /// Starts a new segment whose first record carries the resend window over.
    fn rotate(&mut self) -> Result<(), SpoolError> {
        let path = self.dir.join(segment_name(self.next_seq));
        let mut file = create_segment(&path)?;
        let mut memo = Vec::with_capacity(self.memo_bytes() as usize);
        frame(&mut memo, KIND_MEMO, |body| {
            for (connection, recent) in self.recent.iter().enumerate() {
                for r in &recent.ring {
                    body.extend_from_slice(&(connection as u16).to_le_bytes());
                    body.extend_from_slice(&r.pkid.to_le_bytes());
                    body.extend_from_slice(&r.hash.to_le_bytes());
                    body.extend_from_slice(&r.seq.to_le_bytes());
                }
            }
        });
        file.write_all(&memo).map_err(io_error(&path, "write"))?;
        file.sync_data().map_err(io_error(&path, "sync"))?;
        sync_dir(&self.dir)?;
        self.total_bytes += memo.len() as u64;
        self.segments.push_back(Segment {
            first_seq: self.next_seq,
            path,
            bytes: memo.len() as u64,
            last_seq: self.next_seq - 1,
        });
        self.active = file;
        Ok(())
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

fn create_segment(path: &Path) -> Result<File, SpoolError> {
    OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(path)
        .map_err(io_error(path, "create"))
}

fn remember(recent: &mut [Recents], window: usize, connection: u16, r: Option<Recent>) {
    let (Some(r), Some(list)) = (r, recent.get_mut(usize::from(connection))) else {
        return;
    };
    // On open, a segment's memo repeats entries the previous segment's messages gave.
    if list.ring.back().is_some_and(|last| last.seq >= r.seq) {
        return;
    }
    list.ring.push_back(r);
    list.by_pkid.insert(r.pkid, (r.hash, r.seq));
    while list.ring.len() > window {
        if let Some(old) = list.ring.pop_front()
            && list
                .by_pkid
                .get(&old.pkid)
                .is_some_and(|(_, seq)| *seq == old.seq)
        {
            list.by_pkid.remove(&old.pkid);
        }
    }
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
                        // This segment is exhausted: the next one starts at `next_seq`.
                        let next = self.dir.join(segment_name(self.next_seq));
                        if next.exists() {
                            self.file = None;
                        } else {
                            return Ok(None);
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
        let Some((_, path)) = segments
            .iter()
            .rev()
            .find(|(first, _)| *first <= self.next_seq)
            .or_else(|| segments.first())
        else {
            return Ok(false);
        };
        let file = File::open(path).map_err(io_error(path, "open"))?;
        self.file = Some((file, path.clone()));
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

    fn add(spool: &mut Spool, connection: u16, pkid: u16, dup: bool, payload: &str) -> Appended {
        spool.append(
            1,
            connection,
            pkid,
            true,
            dup,
            false,
            "t/a",
            payload.as_bytes(),
        )
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
                add(&mut spool, 0, i + 1, false, &format!("p{i}")),
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
        assert_eq!(add(&mut spool, 0, 11, false, "late"), Appended::New(11));
        assert_eq!(read_all(dir.path(), 11, spool.durable_seq()).len(), 0);
    }

    #[test]
    fn recognises_resends_also_after_rotation_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), 100, 1 << 20);
        let (mut spool, _) = Spool::open(&s, 1).unwrap();
        assert_eq!(add(&mut spool, 0, 7, false, "a"), Appended::New(1));
        // Same packet id on the other connection, or other content: a different message.
        assert_eq!(add(&mut spool, 1, 7, true, "a"), Appended::New(2));
        assert_eq!(add(&mut spool, 0, 7, true, "b"), Appended::New(3));
        // The latest message with packet id 7 on connection 0 is "b": with or without DUP.
        assert_eq!(add(&mut spool, 0, 7, true, "b"), Appended::Duplicate(3));
        assert_eq!(add(&mut spool, 0, 7, false, "b"), Appended::Duplicate(3));
        assert_eq!(add(&mut spool, 0, 7, true, "a"), Appended::New(4));
        assert_eq!(add(&mut spool, 0, 8, false, "a"), Appended::New(5));
        spool.sync().unwrap();
        for i in 0..3 {
            add(&mut spool, 1, 100 + i, false, "x");
            spool.sync().unwrap();
        }
        drop(spool);
        let (mut spool, opened) = Spool::open(&s, 9).unwrap();
        assert_eq!(spool.id(), 1, "the id is the spool's, kept across opens");
        assert_eq!(opened.messages, 8);
        assert_eq!(add(&mut spool, 0, 7, true, "a"), Appended::Duplicate(4));
        assert_eq!(add(&mut spool, 0, 8, false, "a"), Appended::Duplicate(5));
        assert_eq!(add(&mut spool, 1, 102, true, "x"), Appended::Duplicate(8));
        // Pushed out of the window of 4 per connection: treated as new.
        assert_eq!(add(&mut spool, 1, 103, false, "y"), Appended::New(9));
        assert_eq!(add(&mut spool, 1, 7, true, "a"), Appended::New(10));
    }

    #[test]
    fn cuts_a_torn_tail_and_refuses_damage_elsewhere() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), 1 << 20, 1 << 30);
        let (mut spool, _) = Spool::open(&s, 1).unwrap();
        add(&mut spool, 0, 1, false, "one");
        add(&mut spool, 0, 2, false, "two");
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
    fn stops_at_the_disk_bound_and_frees_stored_segments() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = Spool::open(&settings(dir.path(), 100, 400), 1).unwrap();
        let mut seqs = Vec::new();
        loop {
            let pkid = seqs.len() as u16 + 1;
            match add(&mut spool, 0, pkid, false, "0123456789") {
                Appended::New(seq) => seqs.push(seq),
                Appended::Full => break,
                Appended::Duplicate(_) => unreachable!(),
            }
            spool.sync().unwrap();
        }
        assert!(spool.bytes() <= 400);
        let last = *seqs.last().unwrap();
        assert_eq!(spool.release(0).unwrap(), 0);
        let freed = spool.release(last).unwrap();
        assert!(freed > 0);
        assert!(matches!(
            add(&mut spool, 0, 999, false, "0123456789"),
            Appended::New(_)
        ));
        assert_eq!(spool.first_seq(), spool.segments.back().unwrap().first_seq);
    }
}
