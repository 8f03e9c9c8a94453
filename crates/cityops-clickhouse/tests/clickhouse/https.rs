//! ClickHouse over HTTPS (18.16's `https_port`), trusting only the CA of `clickhouse.ca_file`.

use super::schema::RETENTION;
use cityops_clickhouse::{ClickHouse, QueryLimits, ReadOnlyClient, migrate};
use cityops_config::ClickHouseConfig;
use cityops_testkit::ClickHouseServer;
use std::time::Duration;

fn https_config(server: &ClickHouseServer, ca_file: &std::path::Path) -> ClickHouseConfig {
    ClickHouseConfig {
        url: server.https_url().unwrap(),
        ca_file: Some(ca_file.to_path_buf()),
        ..server.config("cityops")
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn https_with_a_ca_file_migrates_writes_and_reads_and_another_ca_is_refused() {
    let server = ClickHouseServer::start_https();
    let config = https_config(&server, server.ca_file().unwrap());
    let ch = ClickHouse::connect(&config).await.unwrap();
    migrate(&ch, RETENTION, false).await.unwrap();
    // The query rules' read-only user over the same TLS.
    let queries =
        ReadOnlyClient::new(&config, "cityops_alert_query", Some("alert-query-local")).unwrap();
    let limits = QueryLimits {
        timeout: Duration::from_secs(5),
        max_rows: 10,
    };
    let table = queries
        .select("SELECT count() AS value FROM events", limits)
        .await
        .unwrap();
    assert_eq!(table.rows.len(), 1, "{table:?}");

    // A CA that did not sign the server's certificate: refused, saying why, before any query.
    let other = tempfile::tempdir().unwrap();
    let other_ca = cityops_testkit::make_certificates(other.path()).ca_file;
    let error = match ClickHouse::connect(&https_config(&server, &other_ca)).await {
        Ok(_) => panic!("connected trusting a CA that did not sign the server's certificate"),
        Err(error) => format!("{error:#}"),
    };
    eprintln!("another CA: {error}");
    assert!(
        error.contains("connect to https://127.0.0.1")
            && error.contains("invalid peer certificate"),
        "{error}"
    );
    let readonly = ReadOnlyClient::new(
        &https_config(&server, &other_ca),
        "cityops_alert_query",
        Some("alert-query-local"),
    )
    .unwrap()
    .select("SELECT 1 AS value", limits)
    .await
    .unwrap_err()
    .to_string();
    assert!(
        readonly.contains("cannot reach ClickHouse")
            && readonly.contains("invalid peer certificate"),
        "{readonly}"
    );
    // Plain HTTP to the HTTPS port is no way around it.
    let plain = ClickHouseConfig {
        url: server.https_url().unwrap().replace("https://", "http://"),
        ca_file: None,
        ..config.clone()
    };
    assert!(ClickHouse::connect(&plain).await.is_err());
}
