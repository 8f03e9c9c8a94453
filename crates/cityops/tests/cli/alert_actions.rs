//! Acknowledgement, comments and escalation on real services: the API with bearer tokens, the
//! labels Alertmanager gets (`escalation`, `acknowledged_by`), the rows in `alert_events`, and
//! `cityops alerts` in a terminal.

use crate::alert::{Rig, publish_until};
use crate::ingest_support::{http_get, metric_sum};
use serde_json::Value;
use std::time::{Duration, Instant};

pub(crate) const TOKEN: &str = "proof-token-0123456789abcdef";

/// `[alert]` keys: one token, escalation every 3 s up to level 2.
pub(crate) fn actions_config() -> String {
    format!(
        "[[alert.api_tokens]]\nname = \"truc-ban\"\ntoken = \"{TOKEN}\"\n[alert.escalation]\nafter_ms = 3000\nmax_level = 2\n"
    )
}

pub(crate) async fn post(port: u16, path: &str, token: Option<&str>, body: &str) -> (u16, Value) {
    let client = reqwest::Client::new();
    let mut request = client
        .post(format!("http://127.0.0.1:{port}{path}"))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    let response = request.send().await.expect("the alerter answers");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

pub(crate) async fn api_alert(port: u16, alertname: &str) -> Option<Value> {
    let (_, body) = http_get(port, "/api/v1/alerts").await;
    let v: Value = serde_json::from_str(&body).ok()?;
    v["data"]["alerts"]
        .as_array()?
        .iter()
        .find(|a| a["alertname"] == alertname)
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledging_stops_escalation_and_reaches_alertmanager_history_and_the_cli() {
    let rig = Rig::start();
    let alerter = rig.alerter("a", &actions_config()).await;
    let fired = publish_until(&rig, 2.6, "FloodGaugeHigh firing in the API", async || {
        api_alert(alerter.port, "FloodGaugeHigh")
            .await
            .filter(|a| a["state"] == "firing")
    })
    .await;
    let fp = fired["fingerprint"].as_str().unwrap().to_owned();

    // Without a valid token: 401, and nothing changes.
    for token in [None, Some("wrong-token-0123456789abcdef")] {
        let (status, body) = post(
            alerter.port,
            &format!("/api/v1/alerts/{fp}/ack"),
            token,
            "{}",
        )
        .await;
        assert_eq!(status, 401, "{body}");
    }
    let (status, _) = post(
        alerter.port,
        "/api/v1/alerts/0000000000000000/ack",
        Some(TOKEN),
        "{}",
    )
    .await;
    assert_eq!(status, 404, "an unknown fingerprint");
    let (status, _) = post(
        alerter.port,
        &format!("/api/v1/alerts/{fp}/unack"),
        Some(TOKEN),
        "{}",
    )
    .await;
    assert_eq!(status, 409, "unack of an alert nobody acknowledged");
    assert!(api_alert(alerter.port, "FloodGaugeHigh").await.unwrap()["acknowledged"].is_null());

    // Nobody acknowledges for 3 s: escalation 1, in the API and in Alertmanager's labels.
    publish_until(
        &rig,
        2.6,
        "the alert escalated to level 1 in Alertmanager",
        async || {
            rig.am_alerts("FloodGaugeHigh")
                .await
                .into_iter()
                .find(|a| a["labels"]["escalation"] == "1")
        },
    )
    .await;

    // Acknowledged from the terminal.
    let token_file = rig.dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let url = format!("http://127.0.0.1:{}", alerter.port);
    let out = crate::cityops(&[
        "alerts",
        "--url",
        &url,
        "--token-file",
        token_file.to_str().unwrap(),
        "ack",
        &fp,
        "--who",
        "Lan",
        "-m",
        "Đã cử đội kiểm tra cống",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(said.contains("acknowledged by Lan (truc-ban)"), "{said}");
    let acked = api_alert(alerter.port, "FloodGaugeHigh").await.unwrap();
    assert_eq!(acked["acknowledged"]["by"], "Lan (truc-ban)");
    assert_eq!(acked["acknowledged"]["comment"], "Đã cử đội kiểm tra cống");
    let level_at_ack = acked["escalation"].as_u64().unwrap();
    let acked_at = Instant::now();

    // The next Alertmanager notification carries acknowledged_by; the unacknowledged one ends.
    let am = publish_until(
        &rig,
        2.6,
        "acknowledged_by in Alertmanager and the unacknowledged alert gone",
        async || {
            let alerts = rig.am_alerts("FloodGaugeHigh").await;
            let with = alerts
                .iter()
                .find(|a| a["labels"]["acknowledged_by"] == "Lan (truc-ban)")
                .cloned();
            let without = alerts
                .iter()
                .any(|a| a["labels"].get("acknowledged_by").is_none());
            with.filter(|_| !without)
        },
    )
    .await;
    assert_eq!(am["labels"]["escalation"], level_at_ack.to_string());

    // `alerts list` shows who has it.
    let out = crate::cityops(&["alerts", "--url", &url, "list"]);
    let listed = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success() && listed.contains(&fp) && listed.contains("Lan (truc-ban)"),
        "{listed}"
    );

    // Acknowledged: no further escalation, however long it fires (level 2 was due 6 s after
    // firing; wait until that is well past the acknowledgement).
    let comment = r#"{"comment": "Nước đang rút chậm"}"#;
    let (status, body) = post(
        alerter.port,
        &format!("/api/v1/alerts/{fp}/comment"),
        Some(TOKEN),
        comment,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = post(
        alerter.port,
        &format!("/api/v1/alerts/{fp}/comment"),
        Some(TOKEN),
        "{}",
    )
    .await;
    assert_eq!(status, 400, "an empty comment");
    publish_until(&rig, 2.6, "8 s after the acknowledgement", async || {
        (acked_at.elapsed() >= Duration::from_secs(8)).then_some(())
    })
    .await;
    let still = api_alert(alerter.port, "FloodGaugeHigh").await.unwrap();
    assert_eq!(
        still["escalation"].as_u64(),
        Some(level_at_ack),
        "no escalation while acknowledged: {still}"
    );

    // Taken back: escalation resumes (to the last level), and acknowledged_by leaves the labels.
    let (status, body) = post(
        alerter.port,
        &format!("/api/v1/alerts/{fp}/unack"),
        Some(TOKEN),
        "{}",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    publish_until(
        &rig,
        2.6,
        "level 2 without acknowledged_by in Alertmanager",
        async || {
            rig.am_alerts("FloodGaugeHigh").await.into_iter().find(|a| {
                a["labels"]["escalation"] == "2" && a["labels"].get("acknowledged_by").is_none()
            })
        },
    )
    .await;

    // Every action is in alert_events, with who, what and the replica.
    let rows = crate::alert::wait_for(
        "the actions in alert_events",
        Duration::from_secs(60),
        async || {
            let rows = rig
                .clickhouse
                .rows(&format!("SELECT state, actor, comment, escalation, replica FROM proof.alert_events WHERE fingerprint = '{fp}' ORDER BY ts, ts_ms"))
                .await
                .ok()?;
            let states: Vec<&str> = rows.iter().filter_map(|r| r["state"].as_str()).collect();
            (states.contains(&"unacknowledged") && states.iter().filter(|s| **s == "escalated").count() >= 2)
                .then_some(rows)
        },
    )
    .await;
    let find = |state: &str| {
        rows.iter()
            .find(|r| r["state"] == state)
            .unwrap_or_else(|| panic!("{state} in {rows:?}"))
    };
    assert_eq!(find("acknowledged")["actor"], "Lan (truc-ban)");
    assert_eq!(find("acknowledged")["comment"], "Đã cử đội kiểm tra cống");
    assert_eq!(find("commented")["comment"], "Nước đang rút chậm");
    assert_eq!(find("unacknowledged")["actor"], "truc-ban");
    assert_eq!(find("escalated")["actor"], "escalation");
    assert!(rows.iter().all(|r| r["replica"] == "a"), "{rows:?}");
    assert_eq!(
        rows.iter().filter(|r| r["state"] == "acknowledged").count(),
        1,
        "one row per action: {rows:?}"
    );
    let m = alerter.metrics().await;
    assert!(
        metric_sum(&m, "cityops_alert_api_unauthorized_total", &[]) >= 2.0,
        "{m}"
    );
    assert_eq!(
        metric_sum(
            &m,
            "cityops_alert_actions_total",
            &["action=\"acknowledged\""]
        ),
        1.0
    );
    assert!(
        metric_sum(&m, "cityops_alert_escalations_total", &["\"2\""]) >= 1.0,
        "{m}"
    );
    assert!(
        !alerter.log_text().contains(TOKEN),
        "the token is never logged"
    );

    // The flood ends: the alert resolves in Alertmanager, its handling with it.
    publish_until(
        &rig,
        2.2,
        "the flood alert resolved in Alertmanager",
        async || {
            rig.am_alerts("FloodGaugeHigh")
                .await
                .is_empty()
                .then_some(())
        },
    )
    .await;
    let (status, _) = post(
        alerter.port,
        &format!("/api/v1/alerts/{fp}/ack"),
        Some(TOKEN),
        "{}",
    )
    .await;
    assert_eq!(status, 404, "a resolved alert cannot be acknowledged");
    let mut alerter = alerter;
    assert_eq!(alerter.terminate(Duration::from_secs(30)), Some(0));
}
