//! Fuzz target: spool recovery. A spool is written (messages, syncs, rotations), then its
//! files are damaged as a disk or a hand could (bits flipped, cut, bytes inserted or removed,
//! a segment lost or replaced by arbitrary bytes). Opening then either reads every whole
//! message (the reader hands out exactly those, in order) or refuses with damage; refused,
//! `inspect` reports the damage, `salvage` repairs it keeping every intact message, and the
//! spool opens.
#![no_main]

use cityops_ingest::spool::{self, Arrival, Spool, SpoolError, SpoolReader, SpoolSettings};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use std::path::{Path, PathBuf};

#[derive(Debug, Arbitrary)]
struct Input {
    /// Segment size: small, so that rotations happen.
    segment_bytes: u16,
    messages: Vec<Message>,
    damage: Vec<Damage>,
}

#[derive(Debug, Arbitrary)]
struct Message {
    connection: bool,
    pkid: u16,
    qos1: bool,
    payload: Vec<u8>,
    sync_after: bool,
}

#[derive(Debug, Arbitrary)]
enum Damage {
    Flip { file: u8, at: u32, mask: u8 },
    Cut { file: u8, at: u32 },
    Insert { file: u8, at: u32, bytes: Vec<u8> },
    Remove { file: u8, at: u32, len: u16 },
    Lose { file: u8 },
    Replace { file: u8, bytes: Vec<u8> },
}

fn settings(dir: &Path, segment_bytes: u64) -> SpoolSettings {
    SpoolSettings {
        dir: dir.to_owned(),
        max_bytes: 1 << 30,
        segment_bytes,
        window: 4,
        connections: 2,
    }
}

/// The spool's files that damage may hit: segments, then the table file.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "seg")
                || p.file_name().is_some_and(|n| n == "resend-table")
        })
        .collect();
    found.sort();
    found
}

fn damage(dir: &Path, d: &Damage) {
    let files = files(dir);
    if files.is_empty() {
        return;
    }
    let pick = |file: u8| &files[usize::from(file) % files.len()];
    let edit = |file: u8, f: &dyn Fn(&mut Vec<u8>)| {
        let path = pick(file);
        let mut bytes = std::fs::read(path).unwrap();
        f(&mut bytes);
        std::fs::write(path, bytes).unwrap();
    };
    let at = |bytes: &Vec<u8>, at: u32| at as usize % (bytes.len() + 1);
    match d {
        Damage::Flip { file, at: a, mask } => edit(*file, &|b| {
            if !b.is_empty() {
                let i = at(b, *a) % b.len();
                b[i] ^= mask | 1;
            }
        }),
        Damage::Cut { file, at: a } => edit(*file, &|b| b.truncate(at(b, *a))),
        Damage::Insert { file, at: a, bytes } => edit(*file, &|b| {
            let i = at(b, *a);
            b.splice(i..i, bytes.iter().copied());
        }),
        Damage::Remove { file, at: a, len } => edit(*file, &|b| {
            let i = at(b, *a);
            let end = (i + usize::from(*len)).min(b.len());
            b.drain(i..end);
        }),
        Damage::Lose { file } => std::fs::remove_file(pick(*file)).unwrap(),
        Damage::Replace { file, bytes } => std::fs::write(pick(*file), bytes).unwrap(),
    }
}

/// Opens the spool and reads it through; the messages it holds.
fn open_and_read(settings: &SpoolSettings) -> Result<u64, SpoolError> {
    let (spool, opened) = Spool::open(settings, 7)?;
    let mut reader = SpoolReader::new(&settings.dir, spool.first_seq());
    let mut read = 0;
    let mut last = 0;
    while let Some(m) = reader.next(spool.durable_seq())? {
        assert!(m.seq > last, "messages come in sequence order");
        last = m.seq;
        read += 1;
    }
    assert_eq!(
        read, opened.messages,
        "the reader hands out every message opening counted"
    );
    Ok(read)
}

fuzz_target!(|input: Input| {
    let dir = tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .expect("temp dir");
    let settings = settings(dir.path(), 64 + u64::from(input.segment_bytes % 4096));
    {
        let (mut spool, _) = Spool::open(&settings, 7).expect("a new spool opens");
        for m in input.messages.iter().take(24) {
            spool.append(&Arrival {
                received_ms: 1_795_654_800_000,
                connection: u16::from(m.connection),
                epoch: 1,
                pkid: m.pkid,
                qos1: m.qos1,
                dup: false,
                retain: false,
                topic: "danang/water/g-1",
                payload: &m.payload,
            });
            if m.sync_after {
                spool.sync().expect("sync");
            }
        }
        // What was appended and not synced is lost with the process, as in a crash.
    }
    for d in input.damage.iter().take(4) {
        damage(dir.path(), d);
    }
    match open_and_read(&settings) {
        Ok(_) => {}
        Err(SpoolError::Damaged { .. }) => {
            let found = spool::inspect(dir.path()).expect("a damaged spool can be inspected");
            assert!(
                found.damaged(),
                "opening refused what inspect finds sound: {found:?}"
            );
            spool::salvage(dir.path()).expect("salvage runs");
            let kept = open_and_read(&settings).expect("a salvaged spool opens");
            assert_eq!(kept, found.messages, "salvage keeps every intact message");
        }
        Err(other) => panic!("{other}"),
    }
});
