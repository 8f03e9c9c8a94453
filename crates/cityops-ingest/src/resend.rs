//! Which MQTT deliveries are the broker's resends of messages already spooled: per session, the
//! latest delivery of every packet id with the hash of its content and when it came. Pure: the
//! spool persists a snapshot of it at each segment rotation and rebuilds it on open.
//!
//! A delivery is taken for a resend only when all of these hold: the same session, the same
//! packet id and the same content (topic and payload) as a remembered delivery, which came on an
//! *earlier connection attempt* (a broker resends only after a reconnect: MQTT 5 §4.4 forbids it
//! at any other time), and at most `window` deliveries of that session ago (so that a packet id
//! coming round again for a new message with the same content is never mistaken for a resend).
//! The packet id, not the content alone, ties a resend to its original: a broker saves each
//! queued or in-flight message with the id it gave it (mosquitto's persistence does), so a broker
//! that crashed and came back from an older save sends the same message with the same id.
//! Identical payloads that are genuinely new (a heartbeat without a time in it) differ by packet
//! id or come on the same connection attempt, and are stored.

use crate::le::{take_u16, take_u32, take_u64};

/// Packet ids a session can have: 1 to 65,535 (0 means QoS 0, never remembered).
const IDS: usize = 1 << 16;

/// The default window: three quarters of the packet ids a broker cycles through. A broker that
/// comes back from a save up to this many deliveries per session old is recognised; the quarter
/// left is the margin for deliveries the spool does not see (`$SYS`, skipped retained messages)
/// that still use up packet ids.
pub const DEFAULT_WINDOW: u64 = 49_152;

/// Bytes of one snapshot entry: packet id, content hash, delivery number.
const ENTRY_BYTES: usize = 18;

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    hash: u64,
    /// The session's delivery number when it came; 0: none yet.
    delivery: u64,
}

/// One session (connection) of the ingest.
#[derive(Debug)]
struct Session {
    /// Indexed by packet id.
    slots: Box<[Slot]>,
    /// Deliveries remembered so far: the session's clock.
    deliveries: u64,
    /// The connection attempt of the latest delivery (0: none in this run yet).
    epoch: u64,
    /// `deliveries` when that attempt began: slots at or below it came on earlier attempts.
    epoch_start: u64,
}

impl Session {
    fn new() -> Self {
        Session {
            slots: vec![Slot::default(); IDS].into_boxed_slice(),
            deliveries: 0,
            epoch: 0,
            epoch_start: 0,
        }
    }

    fn observe(&mut self, epoch: u64) {
        if epoch != self.epoch {
            self.epoch = epoch;
            self.epoch_start = self.deliveries;
        }
    }

    /// The next delivery number, stamped into `slot`.
    fn stamp(&mut self, pkid: u16, hash: u64) {
        self.deliveries += 1;
        self.slots[usize::from(pkid)] = Slot {
            hash,
            delivery: self.deliveries,
        };
    }
}

/// The recent deliveries of every session of one spool.
#[derive(Debug)]
pub struct ResendTable {
    sessions: Vec<Session>,
    window: u64,
}

impl ResendTable {
    /// An empty table for `connections` sessions that recognises resends within `window`
    /// deliveries of their session.
    pub fn new(connections: u16, window: u64) -> Self {
        ResendTable {
            sessions: (0..connections.max(1)).map(|_| Session::new()).collect(),
            window: window.max(1),
        }
    }

    /// Whether a QoS 1 delivery is a resend of a remembered one (see the module doc). A
    /// recognised resend counts as a delivery of this attempt, so that a new message with the
    /// same id and content later on the same attempt is stored.
    pub fn is_resend(&mut self, connection: u16, epoch: u64, pkid: u16, hash: u64) -> bool {
        let window = self.window;
        let Some(s) = self.sessions.get_mut(usize::from(connection)) else {
            return false;
        };
        s.observe(epoch);
        let slot = s.slots[usize::from(pkid)];
        let resent = slot.delivery != 0
            && slot.hash == hash
            && slot.delivery <= s.epoch_start
            && s.deliveries - slot.delivery < window;
        if resent {
            s.stamp(pkid, hash);
        }
        resent
    }

    /// Remembers a QoS 1 delivery that was spooled. `epoch` is its connection attempt; 0 when
    /// rebuilding from the spool on open (every attempt of this run comes later).
    pub fn remember(&mut self, connection: u16, epoch: u64, pkid: u16, hash: u64) {
        if let Some(s) = self.sessions.get_mut(usize::from(connection)) {
            s.observe(epoch);
            s.stamp(pkid, hash);
        }
    }

    /// Memory the table holds: a slot per packet id per session.
    pub fn memory_bytes(&self) -> usize {
        self.sessions.len() * IDS * std::mem::size_of::<Slot>()
    }

    /// Appends the snapshot of the table (the entries still within the window) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.sessions.len() as u16).to_le_bytes());
        for s in &self.sessions {
            out.extend_from_slice(&s.deliveries.to_le_bytes());
            let live =
                |slot: &Slot| slot.delivery != 0 && s.deliveries - slot.delivery < self.window;
            let count = s.slots.iter().filter(|slot| live(slot)).count() as u32;
            out.extend_from_slice(&count.to_le_bytes());
            for (pkid, slot) in s.slots.iter().enumerate().filter(|(_, slot)| live(slot)) {
                out.extend_from_slice(&(pkid as u16).to_le_bytes());
                out.extend_from_slice(&slot.hash.to_le_bytes());
                out.extend_from_slice(&slot.delivery.to_le_bytes());
            }
        }
    }

    /// The table a snapshot describes, for `connections` sessions (sessions the snapshot has
    /// beyond them are dropped; missing ones start empty). `None` if it is malformed.
    pub fn decode(mut body: &[u8], connections: u16, window: u64) -> Option<Self> {
        let mut table = ResendTable::new(connections, window);
        let sessions = take_u16(&mut body)?;
        for n in 0..sessions {
            let deliveries = take_u64(&mut body)?;
            let count = take_u32(&mut body)? as usize;
            if body.len() < count * ENTRY_BYTES {
                return None;
            }
            let mut s = table.sessions.get_mut(usize::from(n));
            if let Some(s) = s.as_deref_mut() {
                s.deliveries = deliveries;
            }
            for _ in 0..count {
                let pkid = take_u16(&mut body)?;
                let hash = take_u64(&mut body)?;
                let delivery = take_u64(&mut body)?;
                if delivery == 0 || delivery > deliveries {
                    return None;
                }
                if let Some(s) = s.as_deref_mut() {
                    s.slots[usize::from(pkid)] = Slot { hash, delivery };
                }
            }
            if let Some(s) = s {
                s.epoch_start = s.deliveries;
            }
        }
        body.is_empty().then_some(table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_resend_comes_on_a_later_attempt_with_the_same_id_and_content() {
        let mut t = ResendTable::new(2, 100);
        assert!(!t.is_resend(0, 1, 7, 0xa));
        t.remember(0, 1, 7, 0xa);
        // The same attempt: a new message that happens to look the same (a heartbeat).
        assert!(!t.is_resend(0, 1, 7, 0xa));
        t.remember(0, 1, 7, 0xa);
        // A later attempt: the broker sending it again.
        assert!(t.is_resend(0, 2, 7, 0xa));
        // Once recognised, it counts as seen on this attempt: the next one is new.
        assert!(!t.is_resend(0, 2, 7, 0xa));
        // Another id, other content, or another session: not a resend.
        t.remember(0, 2, 8, 0xb);
        assert!(!t.is_resend(0, 3, 8, 0xc));
        assert!(!t.is_resend(0, 3, 9, 0xb));
        assert!(!t.is_resend(1, 3, 8, 0xb));
        assert!(t.is_resend(0, 3, 8, 0xb));
        // A connection the table does not have is never a resend.
        assert!(!t.is_resend(5, 1, 8, 0xb));
    }

    #[test]
    fn an_id_coming_round_again_beyond_the_window_is_a_new_message() {
        let mut t = ResendTable::new(1, 10);
        t.remember(0, 1, 1, 0xa);
        for pkid in 2..=10 {
            t.remember(0, 1, pkid, u64::from(pkid) << 8);
        }
        // 9 deliveries later: still within the window of 10.
        assert!(t.is_resend(0, 2, 1, 0xa));
        let mut t = ResendTable::new(1, 10);
        t.remember(0, 1, 1, 0xa);
        for pkid in 2..=11 {
            t.remember(0, 1, pkid, u64::from(pkid) << 8);
        }
        assert!(!t.is_resend(0, 2, 1, 0xa), "10 deliveries later: beyond it");
    }

    #[test]
    fn a_snapshot_restores_what_can_still_be_resent() {
        let mut t = ResendTable::new(2, 5);
        for pkid in 1..=8u16 {
            t.remember(0, 1, pkid, u64::from(pkid));
        }
        t.remember(1, 1, 3, 33);
        let mut bytes = Vec::new();
        t.encode(&mut bytes);
        assert_eq!(
            bytes.len(),
            2 + 2 * 12 + 6 * ENTRY_BYTES,
            "only the window is kept"
        );
        let mut back = ResendTable::decode(&bytes, 2, 5).unwrap();
        // Restored entries are from an earlier attempt than any of the new run (resent in
        // the order they first came, as brokers do).
        assert!(back.is_resend(0, 1, 4, 4));
        assert!(back.is_resend(0, 1, 8, 8));
        assert!(!back.is_resend(0, 1, 3, 3), "out of the window when saved");
        assert!(back.is_resend(1, 1, 3, 33));
        // Fewer sessions configured now: the others are dropped.
        let mut fewer = ResendTable::decode(&bytes, 1, 5).unwrap();
        assert!(!fewer.is_resend(1, 1, 3, 33));
        assert!(fewer.is_resend(0, 1, 8, 8));
        // Malformed snapshots are refused.
        assert!(ResendTable::decode(&bytes[..bytes.len() - 1], 2, 5).is_none());
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(ResendTable::decode(&longer, 2, 5).is_none());
    }

    #[test]
    fn the_table_takes_one_mebibyte_per_session() {
        assert_eq!(ResendTable::new(4, DEFAULT_WINDOW).memory_bytes(), 4 << 20);
    }

    proptest! {
        /// Whatever the deliveries, nothing on the attempt it first came on is a resend, and
        /// every delivery sent again on the next attempt (within the window) is one.
        #[test]
        fn resends_are_exactly_the_repeats_of_an_earlier_attempt(
            ids in proptest::collection::vec((1u16..40, 0u64..3), 1..200),
        ) {
            let mut t = ResendTable::new(1, DEFAULT_WINDOW);
            let mut latest = std::collections::HashMap::new();
            for (pkid, content) in &ids {
                prop_assert!(!t.is_resend(0, 1, *pkid, *content));
                t.remember(0, 1, *pkid, *content);
                latest.insert(*pkid, *content);
            }
            for (pkid, content) in &latest {
                prop_assert!(t.is_resend(0, 2, *pkid, *content));
                prop_assert!(!t.is_resend(0, 2, *pkid, content + 10));
            }
        }
    }
}
