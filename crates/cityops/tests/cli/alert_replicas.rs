//! Two alerters with the same rules on real services: both notify one Alertmanager, which
//! deduplicates; an acknowledgement made on one is seen by the other; one killed with -9 loses
//! no notification; the history marks which replica wrote each row. And two alerters sending
//! to an Alertmanager cluster of two gossiping peers, one alerter and one peer killed: every
//! notification is sent once.

use crate::alert::{Receiver, Rig, publish_gauge_until, wait_for};
use crate::alert_actions::{api_alert, post};
use crate::ingest_support::metric_sum;
use cityops_testkit::Alertmanager;
use serde_json::Value;
use std::time::{Duration, Instant};

const TOKEN: &str = "replica-token-0123456789abcdef";

/// Writes replica `name`'s config: its own MQTT session (each replica reads every event), its
/// name in the history, the peers' actions read every 300 ms, and the API token.
fn replica_config(rig: &Rig, name: &str) -> std::path::PathBuf {
    let path = rig.config(
        name,
        &format!("[[alert.api_tokens]]\nname = \"truc-ban\"\ntoken = \"{TOKEN}\"\n"),
    );
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("tick_ms = 100\n"));
    let text = text.replacen(
        "tick_ms = 100\n",
        &format!("tick_ms = 100\nreplica = \"{name}\"\npeer_sync_ms = 300\n"),
        1,
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// The alerts in Alertmanager's notifications to the receiver so far, with the notification's
/// index: `(index, alert)`.
fn notified(receiver: &Receiver) -> Vec<(usize, Value)> {
    receiver
        .taken()
        .into_iter()
        .enumerate()
        .flat_map(|(i, body)| {
            body["alerts"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |a| (i, a))
        })
        .collect()
}

fn is(alert: &Value, entity: &str, status: &str) -> bool {
    alert["labels"]["alertname"] == "FloodGaugeHigh"
        && alert["labels"]["entity_id"] == entity
        && alert["status"] == status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_notify_once_share_acknowledgements_and_one_killed_with_9_loses_no_notification()
 {
    let receiver = Receiver::start(Instant::now()).await;
    let alertmanager =
        Alertmanager::start_notifying(&format!("http://127.0.0.1:{}/am", receiver.port));
    let rig = Rig::start_around("proof", "", alertmanager);
    let config_a = replica_config(&rig, "a");
    let config_b = replica_config(&rig, "b");
    let mut a = rig.spawn_ready(&config_a, "a").await;
    let b = rig.spawn_ready(&config_b, "b").await;

    // Both replicas fire; on-call staff are told once.
    let fired = publish_gauge_until(
        &rig,
        "wl-cam-le-03",
        2.6,
        "FloodGaugeHigh firing on both replicas",
        async || {
            let on_a = api_alert(a.port, "FloodGaugeHigh")
                .await
                .filter(|x| x["state"] == "firing")?;
            api_alert(b.port, "FloodGaugeHigh")
                .await
                .filter(|x| x["state"] == "firing")?;
            Some(on_a)
        },
    )
    .await;
    let fp = fired["fingerprint"].as_str().unwrap().to_owned();
    wait_for(
        "a firing notification from Alertmanager",
        Duration::from_secs(30),
        async || {
            notified(&receiver)
                .iter()
                .any(|(_, x)| is(x, "wl-cam-le-03", "firing"))
                .then_some(())
        },
    )
    .await;
    let active = rig.am_alerts("FloodGaugeHigh").await;
    assert_eq!(
        active.len(),
        1,
        "two replicas' alerts are one in Alertmanager: {active:?}"
    );

    // Acknowledged on b; a sees it, and Alertmanager's next notification carries it.
    let (status, body) = post(
        b.port,
        &format!("/api/v1/alerts/{fp}/ack"),
        Some(TOKEN),
        r#"{"who": "Lan", "comment": "Đội cứu hộ đang tới"}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let acked_at = Instant::now();
    let on_a = wait_for(
        "the acknowledgement made on b in a's API",
        Duration::from_secs(30),
        async || {
            api_alert(a.port, "FloodGaugeHigh")
                .await
                .filter(|x| x["acknowledged"]["by"] == "Lan (truc-ban)")
        },
    )
    .await;
    eprintln!(
        "two alerters: acknowledgement on b seen by a after {:?}",
        acked_at.elapsed()
    );
    assert_eq!(on_a["acknowledged"]["comment"], "Đội cứu hộ đang tới");
    publish_gauge_until(
        &rig,
        "wl-cam-le-03",
        2.6,
        "one alert in Alertmanager, acknowledged by Lan, in a notification",
        async || {
            let alerts = rig.am_alerts("FloodGaugeHigh").await;
            let settled =
                alerts.len() == 1 && alerts[0]["labels"]["acknowledged_by"] == "Lan (truc-ban)";
            let told = notified(&receiver).iter().any(|(_, x)| {
                is(x, "wl-cam-le-03", "firing")
                    && x["labels"]["acknowledged_by"] == "Lan (truc-ban)"
            });
            (settled && told).then_some(())
        },
    )
    .await;

    // a is killed with -9: b alone tells of the resolve and of a new alert.
    a.kill9();
    let killed_at = Instant::now();
    publish_gauge_until(
        &rig,
        "wl-cam-le-03",
        2.2,
        "the resolve notified after a was killed",
        async || {
            notified(&receiver)
                .iter()
                .any(|(_, x)| {
                    is(x, "wl-cam-le-03", "resolved")
                        && x["labels"]["acknowledged_by"] == "Lan (truc-ban)"
                })
                .then_some(())
        },
    )
    .await;
    eprintln!(
        "two alerters: resolve notified {:?} after a was killed",
        killed_at.elapsed()
    );
    publish_gauge_until(
        &rig,
        "wl-hoa-vang-07",
        2.7,
        "a new alert notified after a was killed",
        async || {
            notified(&receiver)
                .iter()
                .any(|(_, x)| is(x, "wl-hoa-vang-07", "firing"))
                .then_some(())
        },
    )
    .await;
    assert!(
        rig.am_alerts("FloodGaugeHigh")
            .await
            .iter()
            .all(|x| x["labels"]["entity_id"] == "wl-hoa-vang-07"),
        "the resolved alert is gone from Alertmanager"
    );

    // a comes back: it catches up with what it missed (the first gauge resolved, the second
    // firing) and Alertmanager still has one alert.
    let a = rig.spawn_ready(&config_a, "a-restarted").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, body) = crate::ingest_support::http_get(a.port, "/api/v1/alerts").await;
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let firing: Vec<String> = v["data"]["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|x| x["alertname"] == "FloodGaugeHigh" && x["state"] == "firing")
            .filter_map(|x| x["labels"]["entity_id"].as_str().map(str::to_owned))
            .collect();
        if firing == ["wl-hoa-vang-07"] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the restarted replica should have the second gauge firing and the first resolved; after 60 s its API says: {body}\nlog: {}",
            a.log.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let active = rig.am_alerts("FloodGaugeHigh").await;
    assert_eq!(active.len(), 1, "{active:?}");
    // Once the restarted replica has sent Alertmanager its picture three times, what it
    // restored as firing has not been sent again: Alertmanager and the receiver never saw the
    // resolved alert firing again.
    wait_for(
        "three sends to Alertmanager by the restarted replica",
        Duration::from_secs(60),
        async || {
            let m = a.metrics().await;
            (metric_sum(
                &m,
                "cityops_alert_notifications_sent_total",
                &["alertmanager:0"],
            ) >= 3.0)
                .then_some(())
        },
    )
    .await;
    let all = notified(&receiver);
    let resolved_in = all
        .iter()
        .find(|(_, x)| is(x, "wl-cam-le-03", "resolved"))
        .map(|(i, _)| *i)
        .unwrap();
    let refired: Vec<_> = all
        .iter()
        .filter(|(i, x)| *i > resolved_in && is(x, "wl-cam-le-03", "firing"))
        .collect();
    assert!(
        refired.is_empty(),
        "the resolved alert was notified firing again after the restart: {refired:?}"
    );
    assert_eq!(rig.am_alerts("FloodGaugeHigh").await.len(), 1);

    // The history: one episode of the first gauge, acknowledged once, every row marked with the
    // replica that wrote it.
    let rows = rig
        .clickhouse
        .rows(&format!(
            "SELECT state, replica, count() AS n, uniqExact(alert_event_id) AS ids, groupArray(concat(toString(ts), '.', toString(ts_ms), ' from ', toString(previous_state))) AS at FROM proof.alert_events WHERE fingerprint = '{fp}' GROUP BY state, replica ORDER BY state, replica"
        ))
        .await
        .unwrap();
    eprintln!("two alerters: history of the first gauge by state and replica: {rows:?}");
    assert!(
        rows.iter()
            .all(|r| r["replica"] == "a" || r["replica"] == "b"),
        "{rows:?}"
    );
    let acks: u64 = rows
        .iter()
        .filter(|r| r["state"] == "acknowledged")
        .map(|r| r["n"].as_str().unwrap_or("0").parse::<u64>().unwrap())
        .sum();
    assert_eq!(
        acks, 1,
        "the acknowledgement is written once, by b: {rows:?}"
    );
    let episodes = rig
        .clickhouse
        .rows(&format!(
            "SELECT acknowledged_by, resolved_ms > 0 AS resolved, arraySort(replicas) AS replica_list FROM proof.alert_episodes WHERE fingerprint = '{fp}'"
        ))
        .await
        .unwrap();
    assert_eq!(episodes.len(), 1, "one episode: {episodes:?}");
    assert_eq!(episodes[0]["acknowledged_by"], "Lan (truc-ban)");
    assert_eq!(episodes[0]["resolved"], 1);
    drop((a, b));
}

/// How many times `entity`'s alert was notified with `status` so far.
fn times_notified(receiver: &Receiver, entity: &str, status: &str) -> usize {
    notified(receiver)
        .iter()
        .filter(|(_, x)| is(x, entity, status))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_alerters_and_two_alertmanagers_one_of_each_killed_every_alert_is_notified_once() {
    let receiver = Receiver::start(Instant::now()).await;
    let mut peers =
        Alertmanager::start_cluster_notifying(&format!("http://127.0.0.1:{}/am", receiver.port), 2);
    let second = peers.pop().unwrap();
    let first = peers.pop().unwrap();
    wait_for(
        "the two Alertmanagers gossiping as one cluster",
        Duration::from_secs(60),
        async || (first.cluster_peers().await.ok()? == 2).then_some(()),
    )
    .await;
    let second_url = second.url();
    let mut rig = Rig::start_around("proof", "", first);
    // Each alerter sends to both peers, as Prometheus does: the peers agree on who notifies.
    let config = |name: &str| {
        let path = replica_config(&rig, name);
        let text = std::fs::read_to_string(&path).unwrap().replacen(
            "timeout_ms = 2000\n",
            &format!("timeout_ms = 2000\n[[alert.alertmanagers]]\nurl = \"{second_url}\"\ntimeout_ms = 2000\n"),
            1,
        );
        std::fs::write(&path, text).unwrap();
        path
    };
    let mut a = rig.spawn_ready(&config("a"), "a").await;
    let b = rig.spawn_ready(&config("b"), "b").await;

    publish_gauge_until(
        &rig,
        "wl-cam-le-03",
        2.6,
        "the first gauge notified firing",
        async || (times_notified(&receiver, "wl-cam-le-03", "firing") > 0).then_some(()),
    )
    .await;
    // The peer that notified tells the other through gossip (every 100 ms); an Alertmanager
    // killed before its notification log reached the other would be notified again by it
    // (Alertmanager clusters notify at least once). Nothing shows when the log has spread, so
    // the kill waits three of the peers' turns.
    tokio::time::sleep(cityops_testkit::CLUSTER_PEER_TIMEOUT * 3).await;
    rig.alertmanager.kill9();
    a.kill9();
    let killed_at = Instant::now();

    // The first gauge resolves, then a second one fires: each notified after the kills.
    let mut after = Vec::new();
    for (gauge, level, status) in [
        ("wl-cam-le-03", 2.2, "resolved"),
        ("wl-hoa-vang-07", 2.7, "firing"),
    ] {
        publish_gauge_until(
            &rig,
            gauge,
            level,
            &format!("{gauge} notified {status} after the kills"),
            async || (times_notified(&receiver, gauge, status) > 0).then_some(()),
        )
        .await;
        after.push(killed_at.elapsed().as_secs_f64());
    }
    // A second notification of any of them would come from the other peer's turn, a peer
    // timeout later: look for one over three of them.
    tokio::time::sleep(cityops_testkit::CLUSTER_PEER_TIMEOUT * 3).await;
    // Alertmanager sends a group's alerts together: the new alert's notification carries the
    // resolved one again, as one Alertmanager alone does. A peer's duplicate would be the same
    // notification twice: same group, same alerts, same states.
    let notifications: Vec<String> = receiver
        .taken()
        .iter()
        .map(|body| {
            let mut alerts: Vec<String> = body["alerts"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|x| format!("{}={}", x["labels"]["entity_id"], x["status"]))
                .collect();
            alerts.sort();
            format!("{} {}", body["groupKey"], alerts.join(","))
        })
        .collect();
    let mut distinct = notifications.clone();
    distinct.sort();
    distinct.dedup();
    eprintln!(
        "an Alertmanager and an alerter killed: resolve notified {:.1} s later, a new alert {:.1} s later; notifications: {notifications:?}",
        after[0], after[1]
    );
    assert_eq!(
        distinct.len(),
        notifications.len(),
        "a notification was sent twice: {notifications:#?}"
    );
    for (entity, status) in [
        ("wl-cam-le-03", "firing"),
        ("wl-cam-le-03", "resolved"),
        ("wl-hoa-vang-07", "firing"),
    ] {
        assert!(times_notified(&receiver, entity, status) >= 1);
    }
    assert_eq!(
        second.alerts().await.unwrap().len(),
        1,
        "the surviving peer holds the firing alert"
    );
    drop((b, second));
}
