//! ClickHouse for cityops: the schema as versioned migrations, the server-version gate that keeps
//! one portable DDL for ClickHouse 18.16 and current servers, retention, and the Rust row types
//! of the tables.
//!
//! The SQL lives in `deploy/clickhouse/migrations/` (embedded at build time) so that engineers
//! read the schema as SQL and chDB checks the same files.

mod client;
mod cluster;
mod migrations;
mod readonly;
mod retention;
mod rowbinary;
mod rows;
mod store;
mod tls;
mod version;

/// The `clickhouse` client's error, as [`classify`] takes it.
pub use clickhouse::error::Error as ClickHouseError;
pub use client::{ClickHouse, Cluster};
pub use cluster::{
    DEDUPLICATION_WINDOW_BLOCKS, LOCAL_SUFFIX, all_replicas_cluster,
    bootstrap as cluster_bootstrap, clustered,
};
pub use migrations::{
    MIGRATIONS, Migration, MigrationOutcome, MigrationReport, RetentionDays, migrate,
    ttl_statements,
};
pub use readonly::{QueryLimits, QueryTable, ReadOnlyClient, ReadOnlyError};
pub use retention::{RetentionAction, RetentionReport, apply_retention, plan_drops};
pub use rowbinary::{decode_events, encode_event};
pub use rows::{AlertEventRow, EventRow, RejectRow, RowSource, TableColumns};
pub use store::{
    DayOffsets, FailureClass, INGEST_QUERY_ID_PREFIX, REFUSED_REASON, RejectFilter, StoredOffsets,
    classify, error_code, partition_day,
};
pub use tls::tls_client_config;
pub use version::ServerVersion;

/// What can go wrong talking to ClickHouse.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A query failed.
    #[error("clickhouse query failed ({what}): {}", error_chain(source))]
    Query {
        /// What the query was for.
        what: String,
        /// The client's error.
        source: clickhouse::error::Error,
    },
    /// TLS to the server cannot be set up (its CA file, the system's roots).
    #[error("TLS for ClickHouse: {what}: {reason}")]
    Tls {
        /// What was being read or set up.
        what: String,
        /// Why it failed.
        reason: String,
    },
    /// The cluster named in the config is not what the servers define.
    #[error("ClickHouse cluster {name:?}: {reason}")]
    Cluster {
        /// The cluster's name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The server's version string is not understood.
    #[error("cannot read the server version {0:?}")]
    Version(String),
    /// An applied migration no longer matches the embedded one.
    #[error(
        "migration {version} ({name}) was changed after it was applied (checksum {applied} in schema_migrations, {embedded} now); add a new migration instead of editing an applied one"
    )]
    ChangedMigration {
        /// Migration version.
        version: u32,
        /// Migration name.
        name: String,
        /// Checksum recorded when it was applied.
        applied: String,
        /// Checksum of the embedded SQL.
        embedded: String,
    },
}

/// An error and its causes, `a: b: c`: the client's own message ("network error") says little
/// without them (a refused certificate, a reset connection).
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        next = cause.source();
    }
    text
}
