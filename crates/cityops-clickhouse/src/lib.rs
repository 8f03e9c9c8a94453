//! ClickHouse for cityops: the schema as versioned migrations, the server-version gate that keeps
//! one portable DDL for ClickHouse 18.16 and current servers, retention, and the Rust row types
//! of the tables.
//!
//! The SQL lives in `deploy/clickhouse/migrations/` (embedded at build time) so that engineers
//! read the schema as SQL and chDB checks the same files.

mod client;
mod migrations;
mod readonly;
mod retention;
mod rowbinary;
mod rows;
mod store;
mod version;

/// The `clickhouse` client's error, as [`classify`] takes it.
pub use clickhouse::error::Error as ClickHouseError;
pub use client::ClickHouse;
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
pub use version::ServerVersion;

/// What can go wrong talking to ClickHouse.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A query failed.
    #[error("clickhouse query failed ({what}): {source}")]
    Query {
        /// What the query was for.
        what: String,
        /// The client's error.
        source: clickhouse::error::Error,
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
