//! Query rules on real services: the shipped SQL (deploy/rules/queries.yaml, run every 2 s
//! instead of minutes) on a real ClickHouse as the read-only user, its alerts in a real
//! Alertmanager and in `alert_events`, and failing, slow and oversized queries marking only
//! their own rule unhealthy.

use crate::alert::{Rig, wait_for, wait_ready};
use crate::ingest_support::{Ingest as Service, http_get, metric_sum};
use serde_json::Value;
use std::time::Duration;

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The shipped query rules, evaluated every 2 s and without `for`, plus three that fail.
fn rules() -> String {
    let shipped = std::fs::read_to_string(crate::repo_root().join("deploy/rules/queries.yaml"))
        .expect("deploy/rules/queries.yaml");
    let mut fast = String::new();
    for line in shipped.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("interval:") {
            let indent = &line[..line.len() - trimmed.len()];
            fast.push_str(&format!("{indent}interval: 2s\n"));
        } else if trimmed.starts_with("for:") {
            continue;
        } else {
            fast.push_str(line);
            fast.push('\n');
        }
    }
    fast.push_str(
        r#"
  - name: failing
    rules:
      - alert: BrokenQuery
        by: [k]
        query:
          interval: 2s
          sql: "SELECT 'x' AS k, 1 AS value FROM no_such_table WHERE ts <= $now"
          fire: "> 0"
      - alert: SlowQuery
        by: [k]
        query:
          interval: 2s
          sql: "SELECT 'x' AS k, sleep(3) AS value WHERE $now > toDateTime(0)"
          fire: ">= 0"
      - alert: TooManyRows
        by: [k]
        query:
          interval: 2s
          sql: "SELECT toString(number) AS k, 1 AS value FROM numbers(100) WHERE $now > toDateTime(0)"
          fire: "> 0"
"#,
    );
    fast
}

/// Inserts rows into `events` with the columns the query rules read.
async fn insert(rig: &Rig, select: &str) {
    let sql = format!(
        "INSERT INTO cityops.events (event_id, ts, ingested_at, feed, domain, entity_id, metric, value, text, district, ward, attr_keys, attr_values, quality) {select}"
    );
    rig.clickhouse
        .sql(&sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_query_rules_fire_on_clickhouse_data_and_a_failing_query_marks_only_its_rule() {
    let rig = Rig::start_in("cityops");
    std::fs::write(rig.rules_path(), rules()).unwrap();
    let now = now_s();
    // Public services: 12 overdue dossiers at one agency, 2 at another.
    insert(&rig, &format!(
        "SELECT generateUUIDv4(), toDateTime({t}), toDateTime({t}), 'public_service_dossiers', 'public_service', concat('{p}-', toString(number)), 'status', CAST(NULL AS Nullable(Float64)), CAST('overdue' AS Nullable(String)), 'Hải Châu', '', ['agency'], ['{a}'], 'good' FROM numbers({n})",
        t = now - 3_600, p = "xd", a = "Sở Xây dựng", n = 12)).await;
    insert(&rig, &format!(
        "SELECT generateUUIDv4(), toDateTime({t}), toDateTime({t}), 'public_service_dossiers', 'public_service', concat('{p}-', toString(number)), 'status', CAST(NULL AS Nullable(Float64)), CAST('overdue' AS Nullable(String)), 'Hải Châu', '', ['agency'], ['{a}'], 'good' FROM numbers({n})",
        t = now - 3_600, p = "tp", a = "Sở Tư pháp", n = 2)).await;
    // Air: 60 µg/m³ in the last hour, 20 in the same hour a week ago.
    for (t, pm25) in [(now - 1_800, 60.0), (now - 7 * 86_400 - 1_800, 20.0)] {
        insert(&rig, &format!(
            "SELECT generateUUIDv4(), toDateTime({t} + number), toDateTime({t} + number), 'air_quality', 'environment', 'aq-lien-chieu-01', 'pm25', CAST({pm25} AS Nullable(Float64)), CAST(NULL AS Nullable(String)), 'Liên Chiểu', '', [], [], 'good' FROM numbers(10)")).await;
    }
    // Citizens: 8 reports in one ward since local midnight (UTC+7), 2 ten days ago (the
    // history the baseline needs: at least 7 days).
    let midnight = (now + 25_200).div_euclid(86_400) * 86_400 - 25_200;
    let today = (now - 60).max(midnight);
    let earlier = today - 10 * 86_400;
    for (t, n) in [(today, 8), (earlier, 2)] {
        insert(&rig, &format!(
            "SELECT generateUUIDv4(), toDateTime({t}), toDateTime({t}), 'citizen_reports', 'citizen_report', concat('r-{t}-', toString(number)), 'status', CAST(NULL AS Nullable(Float64)), CAST('received' AS Nullable(String)), 'Cẩm Lệ', 'Hòa Xuân', ['category'], ['rac_thai'], 'good' FROM numbers({n})")).await;
    }

    let config = rig.config(
        "q",
        "[alert.queries]\npassword = \"alert-query-local\"\ntimeout_ms = 1500\nmax_rows = 50\n",
    );
    let alerter = Service::spawn_subcommand("alert", &config, rig.dir.path(), "q");
    wait_ready(&alerter).await;

    let firing = wait_for(
        "the three shipped query rules' alerts in Alertmanager",
        Duration::from_secs(90),
        async || {
            let dossiers = rig.am_alerts("DossiersOverdueByAgency").await;
            let air = rig.am_alerts("PM25AboveLastWeek").await;
            let citizens = rig.am_alerts("CitizenReportsAboveBaseline").await;
            (!dossiers.is_empty() && !air.is_empty() && !citizens.is_empty())
                .then_some((dossiers, air, citizens))
        },
    )
    .await;
    let (dossiers, air, citizens) = firing;
    assert_eq!(dossiers.len(), 1, "only the agency above 10: {dossiers:?}");
    assert_eq!(dossiers[0]["labels"]["agency"], "Sở Xây dựng");
    assert_eq!(
        dossiers[0]["annotations"]["summary"],
        "12 hồ sơ dịch vụ công quá hạn tại Sở Xây dựng"
    );
    let starts = crate::alert::ms_of(dossiers[0]["startsAt"].as_str().unwrap());
    assert_eq!(
        starts % 2_000,
        0,
        "evaluations fall on multiples of the interval: {starts}"
    );
    assert_eq!(air[0]["labels"]["district"], "Liên Chiểu");
    assert_eq!(
        air[0]["annotations"]["summary"],
        "PM2.5 giờ qua tại Liên Chiểu gấp 3.0 lần cùng giờ tuần trước"
    );
    assert_eq!(citizens[0]["labels"]["ward"], "Hòa Xuân");
    assert_eq!(
        citizens[0]["annotations"]["summary"],
        "Phường Hòa Xuân, Cẩm Lệ: phản ánh hôm nay gấp 8.0 lần mức thường ngày"
    );

    // The failing rules are unhealthy, each with its reason; the shipped ones are healthy.
    let rules = wait_for(
        "the three failing rules unhealthy in /api/v1/rules",
        Duration::from_secs(60),
        async || {
            let (_, body) = http_get(alerter.port, "/api/v1/rules").await;
            let v: Value = serde_json::from_str(&body).ok()?;
            let rules = v["data"]["rules"].as_array()?.clone();
            let unhealthy = rules.iter().filter(|r| r["health"] == "err").count();
            (unhealthy == 3).then_some(rules)
        },
    )
    .await;
    let by_name = |name: &str| {
        rules
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {rules:?}"))
            .clone()
    };
    for ok in [
        "DossiersOverdueByAgency",
        "PM25AboveLastWeek",
        "CitizenReportsAboveBaseline",
    ] {
        let rule = by_name(ok);
        assert_eq!(rule["health"], "ok", "{rule}");
        assert_eq!(rule["kind"], "query");
        assert_eq!(rule["intervalSeconds"], 2.0);
    }
    let broken = by_name("BrokenQuery")["lastError"].to_string();
    assert!(broken.contains("ClickHouse error 60"), "{broken}");
    let slow = by_name("SlowQuery")["lastError"].to_string();
    assert!(slow.contains("timed out after 1500 ms"), "{slow}");
    let many = by_name("TooManyRows")["lastError"].to_string();
    assert!(many.contains("more than 50 rows"), "{many}");
    let m = alerter.metrics().await;
    for (rule, outcome) in [
        ("BrokenQuery", "server"),
        ("SlowQuery", "timeout"),
        ("TooManyRows", "too_many_rows"),
        ("DossiersOverdueByAgency", "ok"),
    ] {
        assert!(
            metric_sum(
                &m,
                "cityops_alert_query_evaluations_total",
                &[rule, outcome]
            ) >= 1.0,
            "{rule} {outcome}:\n{m}"
        );
    }
    assert_eq!(
        metric_sum(
            &m,
            "cityops_alert_query_unhealthy_state",
            &["rule=\"BrokenQuery\""]
        ),
        1.0
    );
    assert!(
        alerter
            .log_text()
            .contains("query rule failed; its alerts stay as they were"),
        "the failures are logged"
    );

    // The agency's dossiers are done: it leaves the result and the alert resolves.
    insert(&rig, &format!(
        "SELECT generateUUIDv4(), toDateTime({t}), toDateTime({t}), 'public_service_dossiers', 'public_service', concat('xd-', toString(number)), 'status', CAST(NULL AS Nullable(Float64)), CAST('done' AS Nullable(String)), 'Hải Châu', '', ['agency'], ['Sở Xây dựng'], 'good' FROM numbers(12)",
        t = now_s() - 1)).await;
    wait_for(
        "the dossier alert resolved in Alertmanager",
        Duration::from_secs(60),
        async || {
            rig.am_alerts("DossiersOverdueByAgency")
                .await
                .is_empty()
                .then_some(())
        },
    )
    .await;
    let history = wait_for(
        "the dossier alert's firing and resolved rows in alert_events",
        Duration::from_secs(60),
        async || {
            let rows = rig
                .clickhouse
                .rows("SELECT state, domain, summary FROM cityops.alert_events WHERE rule = 'DossiersOverdueByAgency' ORDER BY ts, state")
                .await
                .ok()?;
            rows.iter()
                .any(|r| r["state"] == "resolved")
                .then_some(rows)
        },
    )
    .await;
    assert!(
        history
            .iter()
            .any(|r| r["state"] == "firing" && r["domain"] == "public_service"),
        "{history:?}"
    );
    let mut alerter = alerter;
    assert_eq!(alerter.terminate(Duration::from_secs(30)), Some(0));
}
