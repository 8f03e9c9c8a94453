//! The on-call console in a real headless Chromium, as the duty officer uses it: a flood alert
//! appears, they sign in with their token, acknowledge it with a comment, and the
//! acknowledgement shows in the page, the API, `alert_events` and Alertmanager's labels. On a
//! phone-sized screen nothing scrolls sideways.

use crate::alert::{Rig, publish_until};
use crate::alert_actions::TOKEN;
use cityops_testkit::{Browser, screenshot_dir};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duty_officer_acknowledges_a_flood_alert_in_the_console_on_a_wall_screen_and_a_phone() {
    let rig = Rig::start();
    let tokens = format!(
        "[[alert.api_tokens]]\nname = \"truc-ban\"\ntoken = \"{TOKEN}\"\n[alert.escalation]\nafter_ms = 0\n"
    );
    let alerter = rig.alerter("ui", &tokens).await;
    // A station name as a payload could carry it: shown as text, never run as markup.
    let hostile = "<img src=x onerror=\"document.title='pwned'\">";
    publish_until(
        &rig,
        2.6,
        "two flood alerts firing in the API",
        async || {
            rig.publish("wl-song-han-09", hostile, 2.7, crate::alert::now_ms())
                .await;
            let (_, body) =
                crate::ingest_support::http_get(alerter.port, "/api/v1/alerts?state=firing").await;
            let v: serde_json::Value = serde_json::from_str(&body).ok()?;
            (v["data"]["alerts"].as_array()?.len() == 2).then_some(())
        },
    )
    .await;
    let (_, body) =
        crate::ingest_support::http_get(alerter.port, "/api/v1/alerts?entity_id=wl-cam-le-03")
            .await;
    let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
    let fp = listed["data"]["alerts"][0]["fingerprint"]
        .as_str()
        .unwrap_or_else(|| panic!("the Cầu Rồng alert in {body}"))
        .to_owned();
    let console = format!("http://127.0.0.1:{}/ui/", alerter.port);

    let wall = Browser::start(1280, 800).await;
    wall.goto(&console).await.unwrap();
    let card = format!(".alert[data-fingerprint=\"{fp}\"]");
    wall.wait_for_text(&card, "Mực nước tại Cầu Rồng đạt 2.6 m", WAIT)
        .await
        .unwrap();
    let text = wall
        .text(&wall.wait_for(&card, WAIT).await.unwrap())
        .await
        .unwrap();
    assert!(
        // The badge is upper-cased by the style sheet.
        text.to_lowercase().contains("nghiêm trọng") && text.contains("Chưa ai xác nhận"),
        "{text}"
    );
    let page = wall.text_of_page().await.unwrap();
    assert!(
        page.contains(hostile),
        "the hostile label is shown as text:\n{page}"
    );
    assert_ne!(wall.script("return document.title").await.unwrap(), "pwned");
    wall.screenshot(&screenshot_dir().join("console-wall.png"))
        .await
        .unwrap();

    // Sign in with the token.
    wall.click(&wall.wait_for("#signin-button", WAIT).await.unwrap())
        .await
        .unwrap();
    let input = wall.wait_for("#token-input", WAIT).await.unwrap();
    wall.type_into(&input, TOKEN).await.unwrap();
    wall.click(&wall.wait_for("#signin-submit", WAIT).await.unwrap())
        .await
        .unwrap();
    wall.wait_for_text("#whoami", "Đăng nhập: truc-ban", WAIT)
        .await
        .unwrap();

    // Open the alert, write a comment, acknowledge.
    wall.click(
        &wall
            .wait_for(&format!("{card} .details-button"), WAIT)
            .await
            .unwrap(),
    )
    .await
    .unwrap();
    let comment = wall
        .wait_for(&format!("{card} .comment-input"), WAIT)
        .await
        .unwrap();
    wall.type_into(&comment, "Đội ứng cứu đã đến hiện trường")
        .await
        .unwrap();
    wall.click(
        &wall
            .wait_for(&format!("{card} .ack-button"), WAIT)
            .await
            .unwrap(),
    )
    .await
    .unwrap();
    wall.wait_for_text(
        &format!("{card} .ack-state.on"),
        "Đã xác nhận: truc-ban",
        WAIT,
    )
    .await
    .unwrap();

    // The same acknowledgement in the API, the history and Alertmanager.
    let (_, body) =
        crate::ingest_support::http_get(alerter.port, "/api/v1/alerts?entity_id=wl-cam-le-03")
            .await;
    let acked =
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["data"]["alerts"][0].clone();
    assert_eq!(acked["acknowledged"]["by"], "truc-ban", "{acked}");
    assert_eq!(
        acked["acknowledged"]["comment"],
        "Đội ứng cứu đã đến hiện trường"
    );
    let am = crate::alert::wait_for("acknowledged_by in Alertmanager", WAIT, async || {
        rig.am_alerts("FloodGaugeHigh").await.into_iter().find(|a| {
            a["labels"]["acknowledged_by"] == "truc-ban"
                && a["labels"]["entity_id"] == "wl-cam-le-03"
        })
    })
    .await;
    assert_eq!(am["labels"]["station"], "Cầu Rồng");
    let rows = crate::alert::wait_for("the acknowledgement in alert_events", WAIT, async || {
        let rows = rig
            .clickhouse
            .rows(&format!("SELECT actor, comment FROM proof.alert_events WHERE fingerprint = '{fp}' AND state = 'acknowledged'"))
            .await
            .ok()?;
        (!rows.is_empty()).then_some(rows)
    })
    .await;
    assert_eq!(rows[0]["actor"], "truc-ban");
    assert_eq!(rows[0]["comment"], "Đội ứng cứu đã đến hiện trường");
    // ... and in the page's history of the alert, read back from alert_events.
    wall.wait_for_text(
        &format!("{card} .history-box"),
        "đã xác nhận — truc-ban: Đội ứng cứu đã đến hiện trường",
        WAIT,
    )
    .await
    .unwrap();

    // English for a colleague who reads it.
    wall.click(&wall.wait_for("#lang-button", WAIT).await.unwrap())
        .await
        .unwrap();
    wall.wait_for_text("#title", "On-call console", WAIT)
        .await
        .unwrap();
    wall.wait_for_text(
        &format!("{card} .ack-state"),
        "Acknowledged: truc-ban",
        WAIT,
    )
    .await
    .unwrap();

    // A phone: the same alert, nothing wider than the screen.
    let phone = Browser::start(390, 844).await;
    phone.goto(&console).await.unwrap();
    phone
        .wait_for_text(&card, "Đã xác nhận: truc-ban", WAIT)
        .await
        .unwrap();
    phone
        .click(
            &phone
                .wait_for(&format!("{card} .details-button"), WAIT)
                .await
                .unwrap(),
        )
        .await
        .unwrap();
    phone
        .wait_for(&format!("{card} .history-box table"), WAIT)
        .await
        .unwrap();
    let widths = phone
        .script("return [document.documentElement.scrollWidth, document.documentElement.clientWidth, window.innerWidth]")
        .await
        .unwrap();
    let scroll = widths[0].as_u64().unwrap();
    let client = widths[1].as_u64().unwrap();
    assert_eq!(
        widths[2].as_u64(),
        Some(390),
        "a phone-sized viewport: {widths}"
    );
    assert!(
        scroll <= client,
        "the page scrolls sideways on a phone: {widths}"
    );
    let (w, h) = phone
        .screenshot(&screenshot_dir().join("console-phone.png"))
        .await
        .unwrap();
    assert_eq!(w, 390, "screenshot {w}×{h}");
}
