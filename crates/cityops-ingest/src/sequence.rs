//! Per-device sequence numbers: which numbers never arrived. Messages of one device may come
//! slightly out of order (several connections share a subscription), so a missing number is
//! counted only once it stayed missing for a grace period or fell 64 numbers behind. Pure: the
//! caller passes the time.

use std::collections::{BTreeMap, HashMap};

/// How far behind the highest number a late message can still fill a gap.
const WINDOW: u64 = 64;
/// A jump this large, or a step back to a number within the first window (a device counting
/// from its start again), is a restart or renumbering, not a loss.
const RESET_JUMP: u64 = 10_000;

#[derive(Debug, Clone, Copy)]
struct Device {
    highest: u64,
    /// Bit `i` set: number `highest - 1 - i` arrived (or was already counted missing).
    seen: u64,
    /// When the oldest gap still open appeared.
    gap_since_ms: Option<i64>,
}

/// Missing numbers found by [`SequenceTracker::sweep`] or by falling out of the window.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Gaps {
    /// Numbers that never arrived.
    pub missing: u64,
    /// Devices that restarted their numbering.
    pub resets: u64,
    /// Numbers that arrived after they had been counted missing (counted all the same: a
    /// counter cannot go back).
    pub late: u64,
}

/// Tracks devices by key (feed number, entity id).
#[derive(Debug)]
pub struct SequenceTracker {
    /// By feed number, then entity id (looked up by `&str`: no key built per message).
    devices: HashMap<u16, HashMap<String, Device>>,
    grace_ms: i64,
    pending: BTreeMap<u16, Gaps>,
}

impl SequenceTracker {
    /// A tracker that counts a gap once it stayed open for `grace_ms`.
    pub fn new(grace_ms: i64) -> Self {
        SequenceTracker {
            devices: HashMap::new(),
            grace_ms,
            pending: BTreeMap::new(),
        }
    }

    /// Devices tracked.
    pub fn devices(&self) -> usize {
        self.devices.values().map(HashMap::len).sum()
    }

    /// Records number `seq` from device `entity` of feed `feed` at `now_ms`.
    pub fn observe(&mut self, feed: u16, entity: &str, seq: u64, now_ms: i64) {
        let devices = self.devices.entry(feed).or_default();
        let Some(d) = devices.get_mut(entity) else {
            devices.insert(
                entity.to_owned(),
                Device {
                    highest: seq,
                    seen: u64::MAX,
                    gap_since_ms: None,
                },
            );
            return;
        };
        if seq == d.highest {
            return;
        }
        if seq < d.highest {
            let back = d.highest - seq;
            if back <= WINDOW {
                let bit = 1 << (back - 1);
                if d.seen & bit != 0 && d.gap_since_ms.is_none() {
                    // Seen already, or counted missing by a sweep.
                    return;
                }
                d.seen |= bit;
                if d.seen == u64::MAX {
                    d.gap_since_ms = None;
                }
            } else if seq <= WINDOW || back > RESET_JUMP {
                *d = restart(seq);
                self.pending.entry(feed).or_default().resets += 1;
            } else {
                self.pending.entry(feed).or_default().late += 1;
            }
            return;
        }
        let step = seq - d.highest;
        if step > RESET_JUMP {
            *d = restart(seq);
            self.pending.entry(feed).or_default().resets += 1;
            return;
        }
        // Numbers falling out of the window unseen are lost; the old highest was seen.
        let (seen, dropped_missing) = if step > WINDOW {
            let skipped_beyond = step - 1 - WINDOW;
            (0, u64::from((!d.seen).count_ones()) + skipped_beyond)
        } else {
            let shifted = (u128::from(d.seen) << step) | (1u128 << (step - 1));
            let dropped = (shifted >> 64) as u64;
            let dropped_bits = (!dropped) & low_bits(step);
            (shifted as u64, u64::from(dropped_bits.count_ones()))
        };
        if dropped_missing > 0 {
            self.pending.entry(feed).or_default().missing += dropped_missing;
        }
        d.highest = seq;
        d.seen = if step > WINDOW {
            // Only the numbers just below `seq` are still open.
            !low_bits(WINDOW.min(step - 1)) | seen
        } else {
            seen
        };
        if d.seen != u64::MAX {
            d.gap_since_ms.get_or_insert(now_ms);
        } else {
            d.gap_since_ms = None;
        }
    }

    /// Counts gaps open longer than the grace period (they are then closed) and returns what
    /// was found since the last sweep, by feed.
    pub fn sweep(&mut self, now_ms: i64) -> BTreeMap<u16, Gaps> {
        for (feed, devices) in &mut self.devices {
            for d in devices.values_mut() {
                if d.gap_since_ms
                    .is_some_and(|since| now_ms - since >= self.grace_ms)
                {
                    self.pending.entry(*feed).or_default().missing +=
                        u64::from((!d.seen).count_ones());
                    d.seen = u64::MAX;
                    d.gap_since_ms = None;
                }
            }
        }
        std::mem::take(&mut self.pending)
    }
}

fn low_bits(n: u64) -> u64 {
    if n >= 64 { u64::MAX } else { (1u64 << n) - 1 }
}

fn restart(seq: u64) -> Device {
    Device {
        highest: seq,
        seen: u64::MAX,
        gap_since_ms: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn of_feed_0(gaps: BTreeMap<u16, Gaps>) -> Gaps {
        gaps.get(&0).copied().unwrap_or_default()
    }

    fn feed(t: &mut SequenceTracker, seqs: &[u64]) {
        for &s in seqs {
            t.observe(0, "d", s, 0);
        }
    }

    #[test]
    fn counts_numbers_that_never_come_and_forgives_late_ones() {
        let mut t = SequenceTracker::new(1_000);
        feed(&mut t, &[1, 2, 4, 3, 5, 8, 9]);
        assert!(t.sweep(999).is_empty(), "within the grace period");
        assert_eq!(of_feed_0(t.sweep(1_000)).missing, 2, "6 and 7");
        assert!(t.sweep(5_000).is_empty(), "counted once");
        t.observe(0, "d", 7, 6_000);
        assert!(t.sweep(10_000).is_empty(), "a late arrival after counting");
    }

    #[test]
    fn a_long_jump_counts_at_once_and_a_restart_is_not_a_loss() {
        let mut t = SequenceTracker::new(1_000);
        feed(&mut t, &[10, 11, 200]);
        // 12..=199 is 188 numbers: 124 fell out of the window now, 64 wait for the grace.
        assert_eq!(of_feed_0(t.sweep(0)).missing, 124);
        assert_eq!(of_feed_0(t.sweep(1_000)).missing, 64);
        feed(&mut t, &[1, 2]);
        let g = of_feed_0(t.sweep(2_000));
        assert_eq!((g.missing, g.resets), (0, 1));
        // Far behind but not a restart: a latecomer, counted missing before.
        feed(&mut t, &[500, 501, 300]);
        let g = of_feed_0(t.sweep(2_000));
        assert_eq!((g.resets, g.late), (0, 1));
        t.observe(1, "d", 5, 0);
        t.observe(0, "e", 5, 0);
        assert_eq!(t.devices(), 3);
    }

    proptest! {
        /// Any order of a set of numbers within the window, then a sweep: exactly the numbers
        /// absent from the set are counted.
        #[test]
        fn counts_exactly_the_absent_numbers(present in proptest::collection::btree_set(1u64..60, 1..50), seed in any::<u64>()) {
            let mut seqs: Vec<u64> = present.iter().copied().collect();
            // A deterministic shuffle of neighbours: reordering within the window.
            let mut state = seed;
            for i in (1..seqs.len()).rev() {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let j = (state >> 33) as usize % (i + 1);
                seqs.swap(i, j);
            }
            let mut t = SequenceTracker::new(1);
            t.observe(0, "d", 0, 0);
            for s in &seqs {
                t.observe(0, "d", *s, 0);
            }
            let highest = *present.iter().max().unwrap();
            let expected = (1..highest).filter(|s| !present.contains(s)).count() as u64;
            prop_assert_eq!(of_feed_0(t.sweep(10)).missing, expected);
        }
    }
}

#[cfg(test)]
mod drop_pattern {
    use super::*;

    #[test]
    fn long_runs_of_drops_with_sweeps_between_count_each_number_once() {
        let mut t = SequenceTracker::new(1_000);
        let mut kept = 0u64;
        let mut missing = 0u64;
        let mut now = 0;
        for i in 0..5_000u64 {
            // Keep 20, drop 70, keep 3, drop 7, ...
            let keep = matches!(i % 100, 0..20 | 90..93);
            if keep {
                kept += 1;
                t.observe(0, "g", i, now);
            }
            if i % 37 == 0 {
                now += 600;
                missing += t.sweep(now).values().map(|g| g.missing).sum::<u64>();
            }
        }
        now += 10_000;
        missing += t.sweep(now).values().map(|g| g.missing).sum::<u64>();
        // The numbers after the last one kept are unknowable.
        let last_kept = (0..5_000u64)
            .rev()
            .find(|i| matches!(i % 100, 0..20 | 90..93))
            .unwrap();
        assert_eq!(kept + missing, last_kept + 1);
    }
}
