//! The schema on a real ClickHouse 18.16 server started by the test kit.

use super::examples::{example_queries, seed_statements};
use cityops_clickhouse::{
    AlertEventRow, ClickHouse, EventRow, MIGRATIONS, MigrationOutcome, RejectRow, RetentionDays,
    RowSource, TableColumns, apply_retention, migrate,
};
use cityops_testkit::ClickHouseServer;

pub const RETENTION: RetentionDays = RetentionDays {
    events: 30,
    rollups: 60,
    rejects: 7,
    alert_events: 365,
};

pub async fn migrated() -> (ClickHouseServer, ClickHouse) {
    let server = ClickHouseServer::start();
    let ch = ClickHouse::connect(&server.config("cityops"))
        .await
        .unwrap();
    migrate(&ch, RETENTION, false).await.unwrap();
    (server, ch)
}

#[tokio::test(flavor = "multi_thread")]
async fn migrations_apply_once_and_a_second_run_changes_nothing() {
    let server = ClickHouseServer::start();
    let ch = ClickHouse::connect(&server.config("cityops"))
        .await
        .unwrap();
    assert_eq!(ch.version().major, 18, "the local server is Debian's 18.16");

    let dry = migrate(&ch, RETENTION, true).await.unwrap();
    assert!(dry.changed());
    assert!(
        server
            .sql("SELECT count() FROM system.databases WHERE name = 'cityops'")
            .await
            .unwrap()
            .trim()
            == "0",
        "a dry run creates nothing"
    );

    let first = migrate(&ch, RETENTION, false).await.unwrap();
    for (version, name, outcome, _) in &first.migrations {
        let expected = if *version >= 1000 { "needs" } else { "applied" };
        match (expected, outcome) {
            ("applied", MigrationOutcome::Applied)
            | ("needs", MigrationOutcome::NeedsServer(_)) => {}
            _ => panic!("migration {version} {name}: {outcome:?}"),
        }
    }
    let tables = server
        .sql("SELECT name FROM system.tables WHERE database = 'cityops' ORDER BY name")
        .await
        .unwrap();
    for table in [
        "alert_events",
        "events",
        "events_1m_district",
        "events_1m_entity",
        "events_1m_status",
        "rejects",
        "schema_migrations",
    ] {
        assert!(
            tables.lines().any(|t| t == table),
            "{table} missing from {tables}"
        );
    }

    let second = migrate(&ch, RETENTION, false).await.unwrap();
    assert!(!second.changed(), "second run must be a no-op: {second:?}");
    let recorded = server
        .scalar("SELECT count() FROM cityops.schema_migrations")
        .await
        .unwrap();
    assert_eq!(
        recorded as usize,
        MIGRATIONS.iter().filter(|m| m.version < 1000).count()
    );
}

async fn check_columns<T: TableColumns>(server: &ClickHouseServer) {
    // 18.16's system.columns has no `position` column; it lists columns in table order.
    let rows = server
        .rows(&format!(
            "SELECT name, type FROM system.columns WHERE database = 'cityops' AND table = '{}'",
            T::TABLE
        ))
        .await
        .unwrap();
    let actual: Vec<(String, String)> = rows
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_owned(),
                r["type"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let declared: Vec<(String, String)> = T::COLUMNS
        .iter()
        .map(|(n, t)| ((*n).to_owned(), (*t).to_owned()))
        .collect();
    assert_eq!(
        actual,
        declared,
        "the Rust row type of {} does not match the table",
        T::TABLE
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn row_types_match_system_columns_and_round_trip_through_rowbinary() {
    let (server, ch) = migrated().await;
    check_columns::<EventRow>(&server).await;
    check_columns::<RejectRow>(&server).await;
    check_columns::<AlertEventRow>(&server).await;

    // A real decoded event with Vietnamese text, through the same row type ingest will use.
    let config = cityops_config::Config::load(
        &cityops_testkit::repo_root().join("deploy/config/cityops.toml"),
    )
    .unwrap();
    let feeds = cityops_feeds::FeedSet::new(&config.feeds, 65536).unwrap();
    let payload = std::fs::read(
        cityops_testkit::repo_root().join("deploy/config/samples/citizen_reports.json"),
    )
    .unwrap();
    let message = cityops_feeds::Message {
        source: cityops_config::SourceKind::Kafka,
        topic: "danang.citizen.reports",
        payload: &payload,
        received_at: cityops_event::Timestamp::parse_rfc3339("2026-11-26T00:00:00.123Z").unwrap(),
        coordinates: None,
    };
    let cityops_feeds::Outcome::Events(events) = feeds.decode(&message) else {
        panic!("sample rejected")
    };
    let source = RowSource {
        kind: "kafka",
        topic: "danang.citizen.reports",
        partition: 3,
        offset: 41873,
    };
    let rows: Vec<EventRow> = events.iter().map(|e| EventRow::new(e, &source)).collect();
    let mut insert = ch.client().insert::<EventRow>("events").await.unwrap();
    for row in &rows {
        insert.write(row).await.unwrap();
    }
    insert.end().await.unwrap();
    let back: Vec<EventRow> = ch
        .client()
        .query("SELECT ?fields FROM cityops.events WHERE feed = 'citizen_reports' ORDER BY metric DESC")
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(back.len(), rows.len());
    let mut expected = rows.clone();
    expected.sort_by(|a, b| b.metric.cmp(&a.metric));
    assert_eq!(back, expected);
    assert!(back.iter().any(|r| {
        r.text
            .as_deref()
            .is_some_and(|t| t.contains("Rác thải tồn đọng"))
    }));

    // The ingest's own RowBinary writer gives the same rows as the client's serializer.
    let source = RowSource {
        topic: "danang.citizen.reports.raw",
        ..source
    };
    let mut bytes = Vec::new();
    for event in &events {
        cityops_clickhouse::encode_event(&mut bytes, event, &source);
    }
    ch.insert_rowbinary(
        "events",
        bytes.into(),
        "cityops-ingest-test",
        std::time::Duration::from_secs(30),
    )
    .await
    .unwrap();
    let raw_back: Vec<EventRow> = ch
        .client()
        .query("SELECT ?fields FROM cityops.events WHERE source_topic = 'danang.citizen.reports.raw' ORDER BY metric DESC")
        .fetch_all()
        .await
        .unwrap();
    let mut expected: Vec<EventRow> = events.iter().map(|e| EventRow::new(e, &source)).collect();
    expected.sort_by(|a, b| b.metric.cmp(&a.metric));
    assert_eq!(raw_back, expected);

    let reject = RejectRow {
        reject_id: uuid::Uuid::from_u128(0x1234_5678_9abc_4def_8123_4567_89ab_cdef),
        received_at: 1_795_651_200,
        received_ms: 7,
        feed: "water_level".into(),
        reason: "invalid_utf8".into(),
        message: "payload is not UTF-8: invalid byte at offset 3".into(),
        raw: vec![b'{', b'"', b'a', 0xff, 0xfe, b'}'],
        raw_len: 6,
        raw_truncated: 0,
        source_kind: "mqtt".into(),
        source_topic: "danang/cam-le/water/wl-03".into(),
        source_partition: -1,
        source_offset: -1,
    };
    let mut insert = ch.client().insert::<RejectRow>("rejects").await.unwrap();
    insert.write(&reject).await.unwrap();
    insert.end().await.unwrap();
    let back: Vec<RejectRow> = ch
        .client()
        .query("SELECT ?fields FROM cityops.rejects")
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(back, [reject], "raw bytes that are not UTF-8 must survive");

    let alert = AlertEventRow {
        alert_event_id: uuid::Uuid::from_u128(0xabcd_ef01_2345_4678_9abc_def0_1234_5678),
        ts: 1_795_651_200,
        ts_ms: 0,
        rule: "flood_level_high".into(),
        fingerprint: "f1".into(),
        state: "firing".into(),
        previous_state: "pending".into(),
        severity: "critical".into(),
        domain: "water".into(),
        entity_id: "wl-cam-le-03".into(),
        district: "Cẩm Lệ".into(),
        value: Some(2.43),
        summary: "Mực nước 2.43 m".into(),
        label_keys: vec!["district".into()],
        label_values: vec!["Cẩm Lệ".into()],
        actor: "lan (truc-ban)".into(),
        comment: "Đã cử đội kiểm tra".into(),
        escalation: 1,
        replica: "a".into(),
    };
    let mut insert = ch
        .client()
        .insert::<AlertEventRow>("alert_events")
        .await
        .unwrap();
    insert.write(&alert).await.unwrap();
    insert.end().await.unwrap();
    let back: Vec<AlertEventRow> = ch
        .client()
        .query("SELECT ?fields FROM cityops.alert_events")
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(back, [alert]);

    // The materialized view fed the status rollup: the short status counts, the long report
    // text (over 64 bytes) does not.
    let statuses = server
        .rows(
            "SELECT status, countMerge(samples) AS n FROM cityops.events_1m_status GROUP BY status",
        )
        .await
        .unwrap();
    assert_eq!(statuses.len(), 1, "{statuses:?}");
    assert_eq!(statuses[0]["status"], "received");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_example_query_of_the_docs_runs_and_finds_the_seeded_rows() {
    let (server, _ch) = migrated().await;
    for statement in seed_statements() {
        server
            .sql(&statement)
            .await
            .unwrap_or_else(|e| panic!("seed failed: {e}\n{statement}"));
    }
    let queries = example_queries();
    assert!(queries.len() >= 10);
    for (title, sql) in queries {
        let rows = server
            .rows(&sql)
            .await
            .unwrap_or_else(|e| panic!("example query {title:?} failed on 18.16: {e}"));
        assert!(
            !rows.is_empty(),
            "example query {title:?} found no rows in the seed data"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn users_can_do_only_their_job() {
    let (server, _ch) = migrated().await;
    let insert = "INSERT INTO cityops.events (event_id, ts, ingested_at, feed, domain, entity_id, metric) SELECT generateUUIDv4(), now(), now(), 'f', 'other', 'e', 'm'";
    server
        .sql_as("cityops_ingest", "ingest-local", insert)
        .await
        .unwrap();
    let ddl = server
        .sql_as(
            "cityops_ingest",
            "ingest-local",
            "CREATE TABLE cityops.x (a UInt8) ENGINE = Memory",
        )
        .await;
    assert!(ddl.is_err(), "the ingest user must not change the schema");
    assert!(
        server
            .sql_as("cityops_ingest", "ingest-local", "SELECT 1 FROM system.one")
            .await
            .is_ok()
    );

    assert_eq!(
        server
            .sql_as(
                "cityops_dashboard",
                "dashboard-local",
                "SELECT count() FROM cityops.events"
            )
            .await
            .unwrap()
            .trim(),
        "1"
    );
    assert!(
        server
            .sql_as("cityops_dashboard", "dashboard-local", insert)
            .await
            .is_err(),
        "dashboards are read-only"
    );
    let limited = server
        .sql_as(
            "cityops_dashboard",
            "dashboard-local",
            "SELECT number FROM system.numbers LIMIT 200000",
        )
        .await;
    assert!(limited.is_err(), "dashboard result size is bounded");

    let alert = "INSERT INTO cityops.alert_events (alert_event_id, ts, rule, fingerprint, state) SELECT generateUUIDv4(), now(), 'r', 'f', 'firing'";
    server
        .sql_as("cityops_alerter", "alerter-local", alert)
        .await
        .unwrap();
    assert!(
        server
            .sql_as(
                "cityops_alerter",
                "alerter-local",
                "DROP TABLE cityops.events"
            )
            .await
            .is_err()
    );
    assert!(
        server
            .sql_as("cityops_ingest", "wrong-password", "SELECT 1")
            .await
            .is_err()
    );

    // The query rules' user reads, within its limits, and cannot write.
    let queries = cityops_clickhouse::ReadOnlyClient::new(
        &server.config("cityops"),
        "cityops_alert_query",
        Some("alert-query-local"),
    )
    .unwrap();
    let limits = cityops_clickhouse::QueryLimits {
        timeout: std::time::Duration::from_secs(5),
        max_rows: 10,
    };
    let table = queries
        .select("SELECT count() AS value FROM events", limits)
        .await
        .expect("the query user reads events");
    assert_eq!(table.columns, ["value"]);
    let refused = queries
        .select("INSERT INTO events (entity_id) VALUES ('x')", limits)
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("readonly"),
        "the query user cannot write: {refused}"
    );
    let many = queries
        .select("SELECT number FROM numbers(100)", limits)
        .await
        .unwrap_err();
    assert!(
        matches!(
            many,
            cityops_clickhouse::ReadOnlyError::TooManyRows { max_rows: 10 }
        ),
        "{many}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_drops_old_partitions_and_keeps_recent_ones() {
    let (server, ch) = migrated().await;
    for days_ago in [0, 10, 29, 31, 45, 400] {
        server
            .sql(&format!(
                "INSERT INTO cityops.events (event_id, ts, ingested_at, feed, domain, entity_id, metric, value) SELECT generateUUIDv4(), now() - {days_ago} * 86400, now(), 'f', 'water', 'e', 'm', 1"
            ))
            .await
            .unwrap();
    }
    let report = apply_retention(&ch, RETENTION, true).await.unwrap();
    let events_drops = report
        .actions
        .iter()
        .filter(|a| a.table == "events")
        .count();
    assert_eq!(
        events_drops, 3,
        "days 31, 45 and 400 are past 30 days: {report:?}"
    );
    assert_eq!(
        server
            .scalar("SELECT count() FROM cityops.events")
            .await
            .unwrap(),
        6.0,
        "dry run drops nothing"
    );

    apply_retention(&ch, RETENTION, false).await.unwrap();
    assert_eq!(
        server
            .scalar("SELECT count() FROM cityops.events")
            .await
            .unwrap(),
        3.0
    );
    // The rollups keep 60 days: the 31- and 45-day-old minutes are still there.
    assert_eq!(
        server
            .scalar("SELECT countMerge(samples) FROM cityops.events_1m_entity")
            .await
            .unwrap(),
        5.0
    );
    assert!(
        apply_retention(&ch, RETENTION, false)
            .await
            .unwrap()
            .actions
            .is_empty(),
        "a second run has nothing to drop"
    );
}
