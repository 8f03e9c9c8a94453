//! Noticing a group member the group gives no partitions: a wedged group (a member killed
//! while joining can leave the broker's group so) otherwise looks like a quiet, healthy
//! consumer. Pure: the caller polls the consumer and passes the time in.

/// What one look at the member's assignment found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AssignmentView {
    /// Partitions this member holds.
    pub assigned: usize,
    /// Partitions of the topics it subscribed to (`None`: the metadata could not be read).
    pub total: Option<usize>,
    /// Other live members of its group (`None`: the broker did not say).
    pub others: Option<usize>,
}

impl AssignmentView {
    /// Whether the member is short of partitions: it holds none, or it holds fewer than the
    /// topics have while no other member could hold the rest.
    pub fn short(&self) -> bool {
        self.assigned == 0
            || (self.others == Some(0) && self.total.is_some_and(|t| self.assigned < t))
    }
}

/// A change the watch reports (each once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssignmentChange {
    /// Short of partitions for longer than the timeout.
    Stalled {
        /// Since how long.
        for_ms: i64,
        /// What the last look found.
        view: AssignmentView,
    },
    /// Holding its partitions again after a stall.
    Recovered {
        /// How long the stall lasted.
        after_ms: i64,
    },
}

/// Whether a member has been short of partitions for longer than a timeout.
#[derive(Debug, Clone)]
pub struct AssignmentWatch {
    timeout_ms: i64,
    short_since: Option<i64>,
    stalled: bool,
}

impl AssignmentWatch {
    /// A watch that reports a stall after `timeout_ms` short of partitions (0: never).
    pub fn new(timeout_ms: u64) -> AssignmentWatch {
        AssignmentWatch {
            timeout_ms: i64::try_from(timeout_ms).unwrap_or(i64::MAX),
            short_since: None,
            stalled: false,
        }
    }

    /// Whether a stall is going on.
    pub fn stalled(&self) -> bool {
        self.stalled
    }

    /// Takes a look at `now_ms` (milliseconds on any clock that only goes forward).
    pub fn observe(&mut self, now_ms: i64, view: AssignmentView) -> Option<AssignmentChange> {
        if self.timeout_ms == 0 {
            return None;
        }
        if !view.short() {
            let since = self.short_since.take();
            if std::mem::take(&mut self.stalled) {
                return Some(AssignmentChange::Recovered {
                    after_ms: since.map_or(0, |s| now_ms - s),
                });
            }
            return None;
        }
        let since = *self.short_since.get_or_insert(now_ms);
        if !self.stalled && now_ms - since >= self.timeout_ms {
            self.stalled = true;
            return Some(AssignmentChange::Stalled {
                for_ms: now_ms - since,
                view,
            });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(assigned: usize, total: Option<usize>, others: Option<usize>) -> AssignmentView {
        AssignmentView {
            assigned,
            total,
            others,
        }
    }

    #[test]
    fn no_partitions_for_longer_than_the_timeout_is_a_stall_reported_once_then_a_recovery() {
        let mut w = AssignmentWatch::new(60_000);
        assert_eq!(w.observe(0, view(0, Some(21), None)), None);
        assert_eq!(w.observe(59_999, view(0, Some(21), None)), None);
        assert!(!w.stalled());
        assert_eq!(
            w.observe(60_000, view(0, Some(21), None)),
            Some(AssignmentChange::Stalled {
                for_ms: 60_000,
                view: view(0, Some(21), None)
            })
        );
        assert!(w.stalled());
        assert_eq!(w.observe(90_000, view(0, Some(21), None)), None);
        assert_eq!(
            w.observe(95_000, view(21, Some(21), Some(0))),
            Some(AssignmentChange::Recovered { after_ms: 95_000 })
        );
        assert!(!w.stalled());
    }

    #[test]
    fn a_short_spell_within_the_timeout_is_no_stall_and_starts_the_count_again() {
        let mut w = AssignmentWatch::new(10_000);
        w.observe(0, view(0, None, None));
        assert_eq!(w.observe(5_000, view(3, Some(3), Some(0))), None);
        assert_eq!(w.observe(12_000, view(0, None, None)), None);
        assert_eq!(w.observe(21_999, view(0, None, None)), None);
        assert!(w.observe(22_000, view(0, None, None)).is_some());
    }

    #[test]
    fn fewer_partitions_than_the_topics_have_is_short_only_without_other_members() {
        assert!(view(0, Some(6), Some(2)).short(), "none at all");
        assert!(view(2, Some(6), Some(0)).short(), "alone and missing four");
        assert!(
            !view(2, Some(6), Some(2)).short(),
            "the others hold the rest"
        );
        assert!(
            !view(2, Some(6), None).short(),
            "members unknown: not judged"
        );
        assert!(!view(6, Some(6), Some(0)).short());
        assert!(
            !view(2, None, Some(0)).short(),
            "partitions unknown: not judged"
        );
    }

    #[test]
    fn a_zero_timeout_never_reports() {
        let mut w = AssignmentWatch::new(0);
        assert_eq!(w.observe(0, view(0, None, None)), None);
        assert_eq!(w.observe(i64::MAX / 2, view(0, None, None)), None);
    }
}
