//! What people do with an alert and what the escalation policy does when nobody does: the
//! acknowledgement and the escalation level of each active alert. Pure: the API, the
//! evaluator and a restart's replay all apply the same action notices through [`apply`].

use crate::records::{ActionKind, AlertAction, Notice};
use cityops_rules::AlertState;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Who took an alert on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acknowledgement {
    /// Who.
    pub by: String,
    /// When, ms.
    pub at_ms: i64,
    /// What they wrote.
    pub comment: String,
}

/// The handling of one active alert.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handling {
    /// Set while acknowledged.
    pub ack: Option<Acknowledgement>,
    /// The escalation level reached (0: none).
    pub escalation: u8,
    /// When the last acknowledgement was taken back: escalation counts from there again.
    pub unacked_at_ms: Option<i64>,
}

/// Handling by (rule, fingerprint).
pub type HandlingMap = BTreeMap<(String, u64), Handling>;

/// Applies a notice: an action changes the alert's handling; a resolve (or a pending alert
/// that went away) ends it, so the next firing starts unacknowledged at level 0.
pub fn apply(map: &mut HandlingMap, n: &Notice) {
    let key = (n.rule.clone(), n.fingerprint);
    let Some(action) = &n.action else {
        if matches!(n.to, AlertState::Resolved | AlertState::Inactive) {
            map.remove(&key);
        }
        return;
    };
    let entry = map.entry(key).or_default();
    match action.kind {
        ActionKind::Acknowledged => {
            entry.ack = Some(Acknowledgement {
                by: action.actor.clone(),
                at_ms: n.at_ms,
                comment: action.comment.clone(),
            });
        }
        ActionKind::Unacknowledged => {
            entry.ack = None;
            entry.unacked_at_ms = Some(n.at_ms);
        }
        ActionKind::Commented => {}
        ActionKind::Escalated => entry.escalation = entry.escalation.max(action.level),
    }
}

/// The escalations due at `now_ms`: every firing alert nobody acknowledged whose rule
/// escalates (`after_ms(rule)` > 0) and whose next level's instant — `fired_at + level ×
/// after` (after an unacknowledgement, not before it) — has passed, up to `max_level`. The
/// instants do not depend on when this runs, so replicas write the same escalations.
pub fn escalations_due(
    alerts: &BTreeMap<(String, u64), Notice>,
    map: &HandlingMap,
    now_ms: i64,
    after_ms: impl Fn(&str) -> i64,
    max_level: u8,
) -> Vec<Notice> {
    let mut due = Vec::new();
    for (key, alert) in alerts {
        if alert.to != AlertState::Firing {
            continue;
        }
        let Some(fired_at) = alert.fired_at_ms else {
            continue;
        };
        let after = after_ms(&alert.rule);
        if after <= 0 {
            continue;
        }
        let handling = map.get(key).cloned().unwrap_or_default();
        if handling.ack.is_some() || handling.escalation >= max_level {
            continue;
        }
        let level = handling.escalation + 1;
        let mut at = fired_at.saturating_add(after.saturating_mul(i64::from(level)));
        if let Some(unacked) = handling.unacked_at_ms {
            at = at.max(unacked);
        }
        if at <= now_ms {
            due.push(Notice::of_action(
                alert,
                AlertAction {
                    kind: ActionKind::Escalated,
                    actor: "escalation".into(),
                    comment: String::new(),
                    level,
                },
                at,
            ));
        }
    }
    due
}

/// The labels Alertmanager gets for an alert: its own, plus `escalation` once escalated and
/// `acknowledged_by` while acknowledged (so that routes can send each level to its tier and
/// receivers show who has it).
pub fn alertmanager_labels(
    alert: &Notice,
    handling: Option<&Handling>,
) -> BTreeMap<String, String> {
    let mut labels = alert.labels.clone();
    if let Some(h) = handling {
        if h.escalation > 0 {
            labels.insert("escalation".into(), h.escalation.to_string());
        }
        if let Some(ack) = &h.ack {
            labels.insert("acknowledged_by".into(), ack.by.clone());
        }
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;
    use cityops_event::Domain;
    use cityops_rules::Severity;

    fn firing(fired_at: i64) -> Notice {
        Notice {
            id: uuid::Uuid::nil(),
            rule: "FloodGaugeHigh".into(),
            fingerprint: 42,
            from: AlertState::Pending,
            to: AlertState::Firing,
            at_ms: fired_at,
            active_since_ms: fired_at - 1_000,
            fired_at_ms: Some(fired_at),
            labels: BTreeMap::from([("alertname".into(), "FloodGaugeHigh".into())]),
            annotations: BTreeMap::new(),
            value: None,
            severity: Severity::Critical,
            domain: Domain::Water,
            action: None,
        }
    }

    fn act(alert: &Notice, kind: ActionKind, by: &str, at: i64) -> Notice {
        Notice::of_action(
            alert,
            AlertAction {
                kind,
                actor: by.into(),
                comment: "đang xử lý".into(),
                level: 0,
            },
            at,
        )
    }

    #[test]
    fn escalation_climbs_one_level_per_interval_until_acknowledged_and_resumes_after_unack() {
        let alert = firing(0);
        let alerts = BTreeMap::from([(("FloodGaugeHigh".to_string(), 42), alert.clone())]);
        let mut map = HandlingMap::new();
        let after = |_: &str| 600_000;
        assert!(escalations_due(&alerts, &map, 599_999, after, 2).is_empty());
        let first = escalations_due(&alerts, &map, 600_000, after, 2);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].at_ms, 600_000);
        assert_eq!(first[0].action.as_ref().unwrap().level, 1);
        // The same instant however late it is noticed (replicas agree).
        assert_eq!(
            escalations_due(&alerts, &map, 650_000, after, 2)[0].id,
            first[0].id
        );
        apply(&mut map, &first[0]);
        let labels = alertmanager_labels(&alert, map.get(&("FloodGaugeHigh".into(), 42)));
        assert_eq!(labels["escalation"], "1");
        apply(
            &mut map,
            &act(&alert, ActionKind::Acknowledged, "lan", 700_000),
        );
        assert!(escalations_due(&alerts, &map, 5_000_000, after, 2).is_empty());
        let labels = alertmanager_labels(&alert, map.get(&("FloodGaugeHigh".into(), 42)));
        assert_eq!(labels["acknowledged_by"], "lan");
        apply(
            &mut map,
            &act(&alert, ActionKind::Unacknowledged, "lan", 2_000_000),
        );
        let second = escalations_due(&alerts, &map, 2_000_000, after, 2);
        assert_eq!(second[0].action.as_ref().unwrap().level, 2);
        assert_eq!(second[0].at_ms, 2_000_000, "not before the unack");
        apply(&mut map, &second[0]);
        assert!(
            escalations_due(&alerts, &map, 9_000_000, after, 2).is_empty(),
            "max_level"
        );
        // Resolving ends the handling.
        let mut resolved = alert.clone();
        resolved.to = AlertState::Resolved;
        apply(&mut map, &resolved);
        assert!(map.is_empty());
    }

    #[test]
    fn rules_that_do_not_escalate_and_pending_alerts_are_left_alone() {
        let mut pending = firing(0);
        pending.to = AlertState::Pending;
        pending.fired_at_ms = None;
        let alerts = BTreeMap::from([
            (("FloodGaugeHigh".to_string(), 42), pending),
            (("Other".to_string(), 7), {
                let mut f = firing(0);
                f.rule = "Other".into();
                f.fingerprint = 7;
                f
            }),
        ]);
        let after = |rule: &str| if rule == "Other" { 0 } else { 1_000 };
        assert!(escalations_due(&alerts, &HandlingMap::new(), 10_000_000, after, 2).is_empty());
    }
}
