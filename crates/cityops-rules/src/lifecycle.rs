//! The alert lifecycle of one series: inactive → pending → firing → resolved, with `for`,
//! hysteresis (`clear` held for `clear_for`) and `keep_firing_for`. Pure and exact: every
//! transition happens at the instant its duration elapsed, whenever the step that notices it.

use serde::{Deserialize, Serialize};

/// An alert's state as notifications and the API show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// Nothing wrong (or not known to be).
    Inactive,
    /// The condition holds, not yet for `for`.
    Pending,
    /// The alert is on.
    Firing,
    /// The alert was firing and is now off (the series is then inactive).
    Resolved,
}

impl AlertState {
    /// The lowercase name (history rows, API, metrics).
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Inactive => "inactive",
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
        }
    }
}

/// The durations of a rule's lifecycle, in the rule's clock (ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// Condition held this long before firing.
    pub for_ms: i64,
    /// Clear condition held this long before resolving.
    pub clear_for_ms: i64,
    /// Keep firing this long once the alert would resolve.
    pub keep_firing_for_ms: i64,
}

/// A change of state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    /// State before.
    pub from: AlertState,
    /// State after (`Resolved` for the end of a firing; `Inactive` for a pending alert whose
    /// condition stopped before `for`).
    pub to: AlertState,
    /// When it happened, in the rule's clock.
    pub at: i64,
    /// When the condition started to hold (the pending start) of this alert.
    pub active_since: i64,
    /// When the alert fired (firing and resolved changes).
    pub fired_at: Option<i64>,
}

/// State of one series' alert. `i64::MIN` marks "not started" to keep it small.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Lifecycle {
    /// Not pending or firing.
    Inactive,
    /// Condition holding since `since`.
    Pending {
        /// When it started to hold.
        since: i64,
    },
    /// Firing.
    Firing {
        /// When the condition started to hold.
        since: i64,
        /// When it fired.
        fired_at: i64,
        /// When the clear condition started to hold continuously (`i64::MIN`: it does not).
        clear_since: i64,
        /// When the clear requirement was met and keep-firing started (`i64::MIN`: not yet).
        keep_since: i64,
    },
}

const NONE: i64 = i64::MIN;

impl Lifecycle {
    /// The state shown outside.
    pub fn state(&self) -> AlertState {
        match self {
            Lifecycle::Inactive => AlertState::Inactive,
            Lifecycle::Pending { .. } => AlertState::Pending,
            Lifecycle::Firing { .. } => AlertState::Firing,
        }
    }

    /// When the condition started to hold, if pending or firing.
    pub fn active_since(&self) -> Option<i64> {
        match *self {
            Lifecycle::Inactive => None,
            Lifecycle::Pending { since } | Lifecycle::Firing { since, .. } => Some(since),
        }
    }

    /// When it fired, if firing.
    pub fn fired_at(&self) -> Option<i64> {
        match *self {
            Lifecycle::Firing { fired_at, .. } => Some(fired_at),
            _ => None,
        }
    }

    /// The next instant a timer completes if the conditions stay as they are (None: none runs).
    pub fn next_deadline(&self, t: &Timers) -> Option<i64> {
        match *self {
            Lifecycle::Inactive => None,
            Lifecycle::Pending { since } => Some(since.saturating_add(t.for_ms)),
            Lifecycle::Firing { keep_since, .. } if keep_since != NONE => {
                Some(keep_since.saturating_add(t.keep_firing_for_ms))
            }
            Lifecycle::Firing { clear_since, .. } if clear_since != NONE => {
                Some(clear_since.saturating_add(t.clear_for_ms))
            }
            Lifecycle::Firing { .. } => None,
        }
    }

    /// Lets time pass up to `to` with the conditions of the last step unchanged, completing
    /// every timer that elapses on the way.
    pub fn advance(&mut self, to: i64, t: &Timers, out: &mut Vec<Change>) {
        loop {
            match *self {
                Lifecycle::Pending { since } if to >= since.saturating_add(t.for_ms) => {
                    let at = since.saturating_add(t.for_ms);
                    *self = Lifecycle::Firing {
                        since,
                        fired_at: at,
                        clear_since: NONE,
                        keep_since: NONE,
                    };
                    out.push(Change {
                        from: AlertState::Pending,
                        to: AlertState::Firing,
                        at,
                        active_since: since,
                        fired_at: Some(at),
                    });
                }
                Lifecycle::Firing {
                    since,
                    fired_at,
                    clear_since,
                    keep_since,
                } if keep_since == NONE
                    && clear_since != NONE
                    && to >= clear_since.saturating_add(t.clear_for_ms) =>
                {
                    *self = Lifecycle::Firing {
                        since,
                        fired_at,
                        clear_since,
                        keep_since: clear_since.saturating_add(t.clear_for_ms),
                    };
                }
                Lifecycle::Firing {
                    since,
                    fired_at,
                    keep_since,
                    ..
                } if keep_since != NONE
                    && to >= keep_since.saturating_add(t.keep_firing_for_ms) =>
                {
                    let at = keep_since.saturating_add(t.keep_firing_for_ms);
                    *self = Lifecycle::Inactive;
                    out.push(Change {
                        from: AlertState::Firing,
                        to: AlertState::Resolved,
                        at,
                        active_since: since,
                        fired_at: Some(fired_at),
                    });
                }
                _ => return,
            }
        }
    }

    /// A new evaluation at `at` (not before the previous one): `fire` and `clear` are whether
    /// the firing and clear conditions hold now. Time up to `at` passes first with the
    /// previous conditions. When both hold, firing wins.
    pub fn step(&mut self, at: i64, fire: bool, clear: bool, t: &Timers, out: &mut Vec<Change>) {
        self.advance(at, t, out);
        match *self {
            Lifecycle::Inactive if fire => {
                *self = Lifecycle::Pending { since: at };
                out.push(Change {
                    from: AlertState::Inactive,
                    to: AlertState::Pending,
                    at,
                    active_since: at,
                    fired_at: None,
                });
            }
            Lifecycle::Inactive => {}
            Lifecycle::Pending { since } if !fire => {
                *self = Lifecycle::Inactive;
                out.push(Change {
                    from: AlertState::Pending,
                    to: AlertState::Inactive,
                    at,
                    active_since: since,
                    fired_at: None,
                });
            }
            Lifecycle::Pending { .. } => {}
            Lifecycle::Firing {
                since,
                fired_at,
                clear_since,
                keep_since,
            } => {
                *self = if fire {
                    Lifecycle::Firing {
                        since,
                        fired_at,
                        clear_since: NONE,
                        keep_since: NONE,
                    }
                } else if keep_since != NONE {
                    // The clear requirement was met: only firing again stops the keep-firing time.
                    Lifecycle::Firing {
                        since,
                        fired_at,
                        clear_since,
                        keep_since,
                    }
                } else if clear {
                    let clear_since = if clear_since == NONE { at } else { clear_since };
                    Lifecycle::Firing {
                        since,
                        fired_at,
                        clear_since,
                        keep_since: NONE,
                    }
                } else {
                    // Between the bounds: the clear condition must hold again from the start.
                    Lifecycle::Firing {
                        since,
                        fired_at,
                        clear_since: NONE,
                        keep_since: NONE,
                    }
                };
            }
        }
        // Zero-length timers complete at once.
        self.advance(at, t, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AlertState::*;

    fn run(
        t: Timers,
        steps: &[(i64, bool, bool)],
        until: i64,
    ) -> Vec<(AlertState, AlertState, i64)> {
        let mut l = Lifecycle::Inactive;
        let mut out = Vec::new();
        for &(at, fire, clear) in steps {
            l.step(at, fire, clear, &t, &mut out);
        }
        l.advance(until, &t, &mut out);
        out.iter().map(|c| (c.from, c.to, c.at)).collect()
    }

    const T: Timers = Timers {
        for_ms: 300,
        clear_for_ms: 900,
        keep_firing_for_ms: 0,
    };

    #[test]
    fn fires_when_for_has_elapsed_at_that_instant() {
        assert_eq!(
            run(T, &[(0, true, false), (100, true, false)], 1000),
            [(Inactive, Pending, 0), (Pending, Firing, 300)]
        );
    }

    #[test]
    fn a_pending_alert_whose_condition_stops_goes_back_to_inactive() {
        assert_eq!(
            run(T, &[(0, true, false), (200, false, false)], 1000),
            [(Inactive, Pending, 0), (Pending, Inactive, 200)]
        );
    }

    #[test]
    fn hysteresis_needs_the_clear_condition_for_clear_for_without_a_break() {
        let steps = [
            (0, true, false),
            (400, false, true),
            (1000, false, false),
            (1100, false, true),
            (1500, false, true),
        ];
        assert_eq!(
            run(T, &steps, 2000),
            [
                (Inactive, Pending, 0),
                (Pending, Firing, 300),
                (Firing, Resolved, 2000)
            ]
        );
    }

    #[test]
    fn keep_firing_for_extends_the_alert_and_firing_again_cancels_it() {
        let t = Timers {
            for_ms: 0,
            clear_for_ms: 0,
            keep_firing_for_ms: 500,
        };
        assert_eq!(
            run(
                t,
                &[
                    (0, true, false),
                    (100, false, true),
                    (400, true, false),
                    (450, false, true)
                ],
                2000
            ),
            [
                (Inactive, Pending, 0),
                (Pending, Firing, 0),
                (Firing, Resolved, 950)
            ]
        );
    }

    #[test]
    fn zero_timers_resolve_at_the_first_clear_evaluation() {
        let t = Timers {
            for_ms: 0,
            clear_for_ms: 0,
            keep_firing_for_ms: 0,
        };
        assert_eq!(
            run(t, &[(0, true, false), (10, false, true)], 10),
            [
                (Inactive, Pending, 0),
                (Pending, Firing, 0),
                (Firing, Resolved, 10)
            ]
        );
    }
}
