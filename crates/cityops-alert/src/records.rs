//! What a transition becomes outside the engine: an Alertmanager v2 alert, a webhook body, an
//! `alert_events` row. Pure functions of the transition and the time, so that a retry or a
//! restart sends and stores exactly the same thing (ids are derived, not drawn).

use cityops_clickhouse::AlertEventRow;
use cityops_event::{Domain, Timestamp};
use cityops_rules::{AlertState, Severity, Transition, Value};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use uuid::Uuid;
use xxhash_rust::xxh3::Xxh3;

/// The id of one transition: the same for the same alert, state change and instant, in every
/// process. History rows and webhook bodies carry it, so that a receiver or a writer that sees
/// it twice knows.
pub fn transition_id(t: &Transition) -> Uuid {
    let mut h = Xxh3::new();
    h.update(b"cityops-alert-event-v1");
    h.update(&[0xff]);
    h.update(t.rule.as_bytes());
    h.update(&[0xff]);
    h.update(&t.fingerprint.to_le_bytes());
    h.update(t.from.as_str().as_bytes());
    h.update(&[0xff]);
    h.update(t.to.as_str().as_bytes());
    h.update(&t.at_ms.to_le_bytes());
    h.update(&t.active_since_ms.to_le_bytes());
    uuid::Builder::from_custom_bytes(h.digest128().to_be_bytes()).into_uuid()
}

/// A transition as the alerter keeps it on disk (the outbox, the state file) and hands it to
/// the receivers and the history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notice {
    /// The transition's id ([`transition_id`]).
    pub id: Uuid,
    /// The alert's name.
    pub rule: String,
    /// The alert's fingerprint.
    pub fingerprint: u64,
    /// State before.
    pub from: AlertState,
    /// State after.
    pub to: AlertState,
    /// When, ms.
    pub at_ms: i64,
    /// When the condition started to hold, ms.
    pub active_since_ms: i64,
    /// When it fired, ms.
    pub fired_at_ms: Option<i64>,
    /// Every label.
    pub labels: BTreeMap<String, String>,
    /// The rendered annotations.
    pub annotations: BTreeMap<String, String>,
    /// The deciding value, a number or a text.
    pub value: Option<Value>,
    /// The rule's severity.
    pub severity: Severity,
    /// The series' domain.
    pub domain: Domain,
    /// Set when this is not a state change but something done with the alert
    /// (acknowledged, commented, escalated): `from` and `to` are then its state at the time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<AlertAction>,
}

/// Something done with an alert, by a person or by the escalation policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertAction {
    /// What was done.
    pub kind: ActionKind,
    /// Who (the person, or `escalation`).
    pub actor: String,
    /// What they wrote (may be empty).
    pub comment: String,
    /// The escalation level after it.
    pub level: u8,
}

/// The kinds of [`AlertAction`]; their names are the `state` of their history rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    /// Someone took it on: escalation stops, notifications carry `acknowledged_by`.
    Acknowledged,
    /// The acknowledgement was taken back.
    Unacknowledged,
    /// A comment.
    Commented,
    /// Not acknowledged in time: sent again one level up.
    Escalated,
}

impl ActionKind {
    /// The name in history rows, metrics and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Acknowledged => "acknowledged",
            ActionKind::Unacknowledged => "unacknowledged",
            ActionKind::Commented => "commented",
            ActionKind::Escalated => "escalated",
        }
    }
}

/// The id of an action: the same for the same action on the same alert at the same instant
/// by the same actor, in every replica (so that a replica repeating another's action in the
/// history finds it stored).
pub fn action_id(alert: &Notice, action: &AlertAction, at_ms: i64) -> Uuid {
    let mut h = Xxh3::new();
    h.update(b"cityops-alert-action-v1");
    h.update(alert.rule.as_bytes());
    h.update(&[0xff]);
    h.update(&alert.fingerprint.to_le_bytes());
    h.update(&alert.active_since_ms.to_le_bytes());
    h.update(action.kind.as_str().as_bytes());
    h.update(&[0xff]);
    h.update(action.actor.as_bytes());
    h.update(&[0xff]);
    h.update(action.comment.as_bytes());
    h.update(&[action.level]);
    h.update(&at_ms.to_le_bytes());
    uuid::Builder::from_custom_bytes(h.digest128().to_be_bytes()).into_uuid()
}

impl Notice {
    /// The notice of `action` on the alert whose latest notice is `alert`, at `at_ms`.
    pub fn of_action(alert: &Notice, action: AlertAction, at_ms: i64) -> Notice {
        Notice {
            id: action_id(alert, &action, at_ms),
            from: alert.to,
            at_ms,
            action: Some(action),
            ..alert.clone()
        }
    }

    /// The notice of a transition.
    pub fn of(t: &Transition) -> Notice {
        Notice {
            id: transition_id(t),
            rule: t.rule.to_string(),
            fingerprint: t.fingerprint,
            from: t.from,
            to: t.to,
            at_ms: t.at_ms,
            active_since_ms: t.active_since_ms,
            fired_at_ms: t.fired_at_ms,
            labels: t.labels.clone(),
            annotations: t.annotations.clone(),
            value: t.value.clone(),
            severity: t.severity,
            domain: t.domain,
            action: None,
        }
    }

    /// Whether receivers are told of it (firing and resolved; pending and actions are history
    /// only, actions reaching Alertmanager as labels of the alert).
    pub fn is_notified(&self) -> bool {
        self.action.is_none() && matches!(self.to, AlertState::Firing | AlertState::Resolved)
    }
}

/// The fingerprint as text: 16 hexadecimal digits, as Alertmanager shows its own.
pub fn fingerprint_hex(fingerprint: u64) -> String {
    format!("{fingerprint:016x}")
}

fn rfc3339(ms: i64) -> String {
    Timestamp::from_millis(ms.clamp(Timestamp::MIN.as_millis(), Timestamp::MAX.as_millis()))
        .map_or_else(|_| String::new(), |t| t.to_string())
}

/// One alert of Alertmanager's `POST /api/v2/alerts`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertmanagerAlert {
    /// Every label (Alertmanager groups, routes and dedupes on them).
    pub labels: BTreeMap<String, String>,
    /// The rendered annotations.
    pub annotations: BTreeMap<String, String>,
    /// When it fired.
    #[serde(rename = "startsAt")]
    pub starts_at: String,
    /// When it resolved; for a firing alert, a time ahead that the next resend moves on, so
    /// that an alerter that died lets the alert expire instead of firing for ever.
    #[serde(rename = "endsAt")]
    pub ends_at: String,
    /// Back to the alerter's API for this alert.
    #[serde(rename = "generatorURL")]
    pub generator_url: String,
}

/// The Alertmanager alert of a firing or resolved alert at processing time `now_ms`; a firing
/// one stays valid for four resend intervals (as Prometheus does).
pub fn alertmanager_alert(
    t: &Notice,
    now_ms: i64,
    resend_interval_ms: i64,
    external_url: &str,
) -> Option<AlertmanagerAlert> {
    let fired_at = t.fired_at_ms?;
    let ends_at = match t.to {
        AlertState::Firing => now_ms.saturating_add(resend_interval_ms.saturating_mul(4)),
        AlertState::Resolved => t.at_ms,
        _ => return None,
    };
    Some(AlertmanagerAlert {
        labels: t.labels.clone(),
        annotations: t.annotations.clone(),
        starts_at: rfc3339(fired_at),
        ends_at: rfc3339(ends_at),
        generator_url: format!(
            "{}/api/v1/alerts?fingerprint={}",
            external_url.trim_end_matches('/'),
            fingerprint_hex(t.fingerprint)
        ),
    })
}

/// The JSON body POSTed to a webhook for a firing or resolved transition (docs/alerting.md).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WebhookBody {
    /// Format version: `1`.
    pub version: &'static str,
    /// The transition's id: the same on every retry and after a restart.
    pub id: Uuid,
    /// `firing` or `resolved`.
    pub status: &'static str,
    /// The alert's name.
    pub alertname: String,
    /// The alert's fingerprint (16 hex digits).
    pub fingerprint: String,
    /// `critical`, `warning` or `info`.
    pub severity: &'static str,
    /// Every label.
    pub labels: BTreeMap<String, String>,
    /// The rendered annotations.
    pub annotations: BTreeMap<String, String>,
    /// When it fired (RFC 3339, UTC).
    #[serde(rename = "startsAt")]
    pub starts_at: String,
    /// When it resolved; absent while firing.
    #[serde(rename = "endsAt", skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<String>,
    /// The value that decided; a number or a text.
    pub value: serde_json::Value,
    /// The alerter's page of the alert.
    #[serde(rename = "generatorURL")]
    pub generator_url: String,
}

/// The webhook body of a transition, if it is one webhooks get (firing, resolved).
pub fn webhook_body(t: &Notice, external_url: &str) -> Option<WebhookBody> {
    if t.action.is_some() {
        return None;
    }
    let status = match t.to {
        AlertState::Firing => "firing",
        AlertState::Resolved => "resolved",
        _ => return None,
    };
    Some(WebhookBody {
        version: "1",
        id: t.id,
        status,
        alertname: t.rule.clone(),
        fingerprint: fingerprint_hex(t.fingerprint),
        severity: t.severity.as_str(),
        labels: t.labels.clone(),
        annotations: t.annotations.clone(),
        starts_at: rfc3339(t.fired_at_ms.unwrap_or(t.at_ms)),
        ends_at: (t.to == AlertState::Resolved).then(|| rfc3339(t.at_ms)),
        value: match &t.value {
            Some(Value::Num(n)) => serde_json::json!(n),
            Some(Value::Text(s)) => serde_json::json!(&**s),
            None => serde_json::Value::Null,
        },
        generator_url: format!(
            "{}/api/v1/alerts?fingerprint={}",
            external_url.trim_end_matches('/'),
            fingerprint_hex(t.fingerprint)
        ),
    })
}

/// The `alert_events` row of a transition or an action (every one is a row), written by
/// `replica`.
pub fn history_row(t: &Notice, replica: &str) -> AlertEventRow {
    let at = Timestamp::from_millis(
        t.at_ms
            .clamp(Timestamp::MIN.as_millis(), Timestamp::MAX.as_millis()),
    )
    .unwrap_or(Timestamp::MIN);
    let label = |name: &str| t.labels.get(name).cloned().unwrap_or_default();
    AlertEventRow {
        alert_event_id: t.id,
        ts: at.unix_seconds(),
        ts_ms: at.subsec_millis(),
        rule: t.rule.clone(),
        fingerprint: fingerprint_hex(t.fingerprint),
        previous_state: t.from.as_str().to_owned(),
        severity: t.severity.as_str().to_owned(),
        domain: t.domain.as_str().to_owned(),
        entity_id: label("entity_id"),
        district: label("district"),
        value: t.value.as_ref().and_then(Value::as_f64),
        summary: t.annotations.get("summary").cloned().unwrap_or_default(),
        label_keys: t.labels.keys().cloned().collect(),
        label_values: t.labels.values().cloned().collect(),
        state: match &t.action {
            Some(a) => a.kind.as_str().to_owned(),
            None => t.to.as_str().to_owned(),
        },
        actor: t
            .action
            .as_ref()
            .map(|a| a.actor.clone())
            .unwrap_or_default(),
        comment: t
            .action
            .as_ref()
            .map(|a| a.comment.clone())
            .unwrap_or_default(),
        escalation: t.action.as_ref().map_or(0, |a| a.level),
        replica: replica.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn transition(to: AlertState) -> Transition {
        Transition {
            rule: Arc::from("FloodGaugeHigh"),
            fingerprint: 0x00ab_cdef_0123_4567,
            labels: BTreeMap::from([
                ("alertname".to_string(), "FloodGaugeHigh".to_string()),
                ("severity".to_string(), "critical".to_string()),
                ("entity_id".to_string(), "wl-cam-le-03".to_string()),
                ("district".to_string(), "Cẩm Lệ".to_string()),
            ]),
            from: if to == AlertState::Firing {
                AlertState::Pending
            } else {
                AlertState::Firing
            },
            to,
            at_ms: if to == AlertState::Firing {
                1_767_225_900_000
            } else {
                1_767_227_400_000
            },
            active_since_ms: 1_767_225_600_000,
            fired_at_ms: Some(1_767_225_900_000),
            value: Some(Value::Num(2.61)),
            suspect: false,
            annotations: BTreeMap::from([(
                "summary".to_string(),
                "Mực nước tại trạm wl-cam-le-03 đạt 2.61 m".to_string(),
            )]),
            severity: Severity::Critical,
            domain: Domain::Water,
        }
    }

    #[test]
    fn alertmanager_gets_starts_at_the_firing_instant_and_ends_at_on_resolve() {
        let firing = alertmanager_alert(
            &Notice::of(&transition(AlertState::Firing)),
            1_767_225_901_000,
            60_000,
            "http://alerter:9465/",
        )
        .unwrap();
        assert_eq!(firing.starts_at, "2026-01-01T00:05:00.000Z");
        assert_eq!(firing.ends_at, "2026-01-01T00:09:01.000Z");
        assert_eq!(
            firing.generator_url,
            "http://alerter:9465/api/v1/alerts?fingerprint=00abcdef01234567"
        );
        let json = serde_json::to_value(&firing).unwrap();
        assert_eq!(json["labels"]["district"], "Cẩm Lệ");
        assert_eq!(
            json["annotations"]["summary"],
            "Mực nước tại trạm wl-cam-le-03 đạt 2.61 m"
        );
        let resolved = alertmanager_alert(
            &Notice::of(&transition(AlertState::Resolved)),
            1_767_227_401_000,
            60_000,
            "http://alerter:9465",
        )
        .unwrap();
        assert_eq!(resolved.starts_at, "2026-01-01T00:05:00.000Z");
        assert_eq!(resolved.ends_at, "2026-01-01T00:30:00.000Z");
        let mut pending = transition(AlertState::Pending);
        pending.fired_at_ms = None;
        assert!(alertmanager_alert(&Notice::of(&pending), 0, 60_000, "http://a").is_none());
    }

    #[test]
    fn ids_are_the_same_for_the_same_transition_and_differ_between_transitions() {
        let firing = transition(AlertState::Firing);
        assert_eq!(transition_id(&firing), transition_id(&firing.clone()));
        assert_ne!(
            transition_id(&firing),
            transition_id(&transition(AlertState::Resolved))
        );
        let notice = Notice::of(&firing);
        let body = webhook_body(&notice, "http://a").unwrap();
        assert_eq!(body.id, history_row(&notice, "a").alert_event_id);
        let json = serde_json::to_string(&notice).unwrap();
        assert_eq!(serde_json::from_str::<Notice>(&json).unwrap(), notice);
        assert_eq!(body.status, "firing");
        assert!(body.ends_at.is_none());
        assert_eq!(serde_json::to_value(&body).unwrap()["value"], 2.61);
    }

    #[test]
    fn the_history_row_carries_labels_summary_and_domain() {
        let row = history_row(&Notice::of(&transition(AlertState::Resolved)), "a");
        assert_eq!(
            (row.state.as_str(), row.previous_state.as_str()),
            ("resolved", "firing")
        );
        assert_eq!(row.ts, 1_767_227_400);
        assert_eq!(row.domain, "water");
        assert_eq!(row.entity_id, "wl-cam-le-03");
        assert_eq!(row.district, "Cẩm Lệ");
        assert_eq!(row.value, Some(2.61));
        assert_eq!(
            row.label_keys,
            ["alertname", "district", "entity_id", "severity"]
        );
        assert_eq!(row.fingerprint, "00abcdef01234567");
    }
}
