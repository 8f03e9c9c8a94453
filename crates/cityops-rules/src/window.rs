//! Sliding windows of event time: the samples a window or rate-of-change rule keeps per series,
//! and the aggregates computed over them. Samples arrive in event-time order (the series'
//! reorder buffer sees to it), so expiring is popping from the front.

use crate::rule::Aggregate;
use serde::{Deserialize, Serialize};
use std::collections::{HashSet, VecDeque};

/// One event in a window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Event time, ms.
    pub ts: i64,
    /// The value (0 for events without one, counted but not averaged... see `has_value`).
    pub value: f64,
    /// Hash of the entity, for count_distinct.
    pub entity: u64,
    /// Whether the value exists (count rules also count text events).
    pub has_value: bool,
    /// The event's quality was `suspect`.
    pub suspect: bool,
}

/// The samples of `(end - over, end]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Window {
    samples: VecDeque<Sample>,
}

impl Window {
    /// Adds a sample (not earlier than the last one) and drops the oldest beyond `max`.
    /// Returns how many were dropped early.
    pub fn push(&mut self, sample: Sample, max: usize) -> usize {
        self.samples.push_back(sample);
        let mut dropped = 0;
        while self.samples.len() > max {
            self.samples.pop_front();
            dropped += 1;
        }
        dropped
    }

    /// Removes samples at or before `end - over`.
    pub fn expire(&mut self, end: i64, over: i64) {
        while self.samples.front().is_some_and(|s| s.ts <= end - over) {
            self.samples.pop_front();
        }
    }

    /// When the oldest sample leaves the window, if any.
    pub fn next_expiry(&self, over: i64) -> Option<i64> {
        self.samples.front().map(|s| s.ts + over)
    }

    /// Number of samples.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether any sample is suspect.
    pub fn any_suspect(&self) -> bool {
        self.samples.iter().any(|s| s.suspect)
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.samples.capacity() * std::mem::size_of::<Sample>()
    }

    /// The aggregate over the current samples; None when there are fewer than `min_samples`
    /// (or, for aggregates of values, fewer values).
    pub fn aggregate(&self, aggregate: Aggregate, min_samples: u32) -> Option<f64> {
        let min = min_samples.max(1) as usize;
        if self.samples.len() < min {
            return None;
        }
        if !aggregate.needs_values() {
            return Some(match aggregate {
                Aggregate::Count => self.samples.len() as f64,
                _ => self
                    .samples
                    .iter()
                    .map(|s| s.entity)
                    .collect::<HashSet<_>>()
                    .len() as f64,
            });
        }
        let values = || self.samples.iter().filter(|s| s.has_value).map(|s| s.value);
        let n = values().count();
        if n < min {
            return None;
        }
        Some(match aggregate {
            Aggregate::Avg => values().sum::<f64>() / n as f64,
            Aggregate::Sum => values().sum(),
            Aggregate::Min => values().fold(f64::INFINITY, f64::min),
            Aggregate::Max => values().fold(f64::NEG_INFINITY, f64::max),
            Aggregate::Delta => {
                let (first, last) = self.first_last()?;
                last.value - first.value
            }
            Aggregate::Rate => {
                let (first, last) = self.first_last()?;
                if last.ts <= first.ts {
                    return None;
                }
                let mut increase = 0.0;
                let mut previous = first.value;
                for v in values().skip(1) {
                    // A counter that went down restarted from zero.
                    increase += if v >= previous { v - previous } else { v };
                    previous = v;
                }
                increase * 1000.0 / (last.ts - first.ts) as f64
            }
            Aggregate::Quantile(q) => {
                let mut sorted: Vec<f64> = values().collect();
                sorted.sort_by(f64::total_cmp);
                // Nearest rank: the smallest value with at least q of the samples at or below it.
                let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
                sorted[rank - 1]
            }
            Aggregate::Count | Aggregate::CountDistinct => return None,
        })
    }

    /// `(last - first) / (t_last - t_first) * per_ms`, if the samples span at least `min_span`.
    pub fn change_per(&self, per_ms: i64, min_span_ms: i64) -> Option<f64> {
        let (first, last) = self.first_last()?;
        let span = last.ts - first.ts;
        if span < min_span_ms || span <= 0 {
            return None;
        }
        Some((last.value - first.value) * per_ms as f64 / span as f64)
    }

    fn first_last(&self) -> Option<(Sample, Sample)> {
        let first = self.samples.iter().find(|s| s.has_value)?;
        let last = self.samples.iter().rev().find(|s| s.has_value)?;
        Some((*first, *last))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(values: &[(i64, f64, u64)]) -> Window {
        let mut w = Window::default();
        for &(ts, value, entity) in values {
            w.push(
                Sample {
                    ts,
                    value,
                    entity,
                    has_value: true,
                    suspect: false,
                },
                100,
            );
        }
        w
    }

    #[test]
    fn aggregates_over_the_samples() {
        let w = window(&[(0, 1.0, 1), (10, 3.0, 2), (20, 2.0, 1), (30, 10.0, 3)]);
        assert_eq!(w.aggregate(Aggregate::Avg, 1), Some(4.0));
        assert_eq!(w.aggregate(Aggregate::Sum, 1), Some(16.0));
        assert_eq!(w.aggregate(Aggregate::Min, 1), Some(1.0));
        assert_eq!(w.aggregate(Aggregate::Max, 1), Some(10.0));
        assert_eq!(w.aggregate(Aggregate::Count, 1), Some(4.0));
        assert_eq!(w.aggregate(Aggregate::CountDistinct, 1), Some(3.0));
        assert_eq!(w.aggregate(Aggregate::Delta, 1), Some(9.0));
        assert_eq!(w.aggregate(Aggregate::Quantile(0.95), 1), Some(10.0));
        assert_eq!(w.aggregate(Aggregate::Quantile(0.5), 1), Some(2.0));
        assert_eq!(w.aggregate(Aggregate::Avg, 5), None);
    }

    #[test]
    fn rate_counts_a_counter_reset_as_a_restart() {
        // 10 → 20 (+10), reset to 5 (+5), → 15 (+10): 25 over 3 s.
        let w = window(&[
            (0, 10.0, 1),
            (1000, 20.0, 1),
            (2000, 5.0, 1),
            (3000, 15.0, 1),
        ]);
        let rate = w.aggregate(Aggregate::Rate, 1).unwrap();
        assert!((rate - 25.0 / 3.0).abs() < 1e-12, "{rate}");
    }

    #[test]
    fn samples_expire_at_the_window_edge() {
        let mut w = window(&[(0, 1.0, 1), (10, 3.0, 2)]);
        assert_eq!(w.next_expiry(100), Some(100));
        w.expire(99, 100);
        assert_eq!(w.len(), 2);
        w.expire(100, 100);
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn change_per_needs_the_minimum_span() {
        let w = window(&[(0, 1.0, 1), (300_000, 1.06, 1)]);
        assert_eq!(w.change_per(600_000, 400_000), None);
        let change = w.change_per(600_000, 300_000).unwrap();
        assert!((change - 0.12).abs() < 1e-9, "{change}");
    }
}
