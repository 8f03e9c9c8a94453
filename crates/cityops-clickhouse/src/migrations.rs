//! Versioned, idempotent schema migrations recorded in `schema_migrations`.

use crate::{ClickHouse, Error, ServerVersion};
use serde::Deserialize;
use std::collections::BTreeMap;

/// One migration: a file of SQL statements under `deploy/clickhouse/migrations/`.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Version, from the file name; applied in ascending order.
    pub version: u32,
    /// Name, from the file name.
    pub name: &'static str,
    /// The SQL as written, with `{{database}}` placeholders. Statements end with `;`; lines
    /// starting with `--` are comments; a first line `-- requires: X.Y` gates the migration
    /// on the server version.
    pub sql: &'static str,
}

macro_rules! migration {
    ($version:expr, $name:expr, $file:expr) => {
        Migration {
            version: $version,
            name: $name,
            sql: include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../deploy/clickhouse/migrations/",
                $file
            )),
        }
    };
}

/// Every migration, in order. Base migrations (below 1000) run on every server, including 18.16;
/// modern-only ones (1000 and up) declare the server version they need.
pub const MIGRATIONS: &[Migration] = &[
    migration!(1, "events", "0001_events.sql"),
    migration!(2, "rejects", "0002_rejects.sql"),
    migration!(3, "alert_events", "0003_alert_events.sql"),
    migration!(4, "rollups", "0004_rollups.sql"),
    migration!(5, "alert_actions", "0005_alert_actions.sql"),
    migration!(6, "alert_episodes", "0006_alert_episodes.sql"),
    migration!(1001, "modern_storage", "1001_modern_storage.sql"),
];

impl Migration {
    /// The server version this migration needs, if any.
    pub fn requires(&self) -> Option<ServerVersion> {
        self.sql
            .lines()
            .find_map(|line| line.trim().strip_prefix("-- requires:"))
            .and_then(ServerVersion::parse)
    }

    /// The statements, with the database name filled in.
    pub fn statements(&self, database: &str) -> Vec<String> {
        let without_comments: Vec<&str> = self
            .sql
            .lines()
            .filter(|line| !line.trim_start().starts_with("--"))
            .collect();
        without_comments
            .join("\n")
            .split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.replace("{{database}}", database))
            .collect()
    }

    /// A checksum of the SQL, recorded when applied, to catch edits of applied migrations.
    pub fn checksum(&self) -> String {
        format!("{:016x}", xxhash_rust::xxh3::xxh3_64(self.sql.as_bytes()))
    }
}

/// What happened (or would happen) to one migration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MigrationOutcome {
    /// Applied now.
    Applied,
    /// Would be applied (dry run).
    WouldApply,
    /// Applied before; nothing to do.
    AlreadyApplied,
    /// The server is too old; applied once it is upgraded.
    NeedsServer(ServerVersion),
}

/// The result of a migrate run.
#[derive(Debug, Clone)]
pub struct MigrationReport {
    /// The server's version.
    pub server: ServerVersion,
    /// Per migration: version, name, outcome and the statements run (or to run).
    pub migrations: Vec<(u32, &'static str, MigrationOutcome, Vec<String>)>,
    /// Bookkeeping and TTL statements run (or to run) besides the migrations.
    pub other_statements: Vec<String>,
}

impl MigrationReport {
    /// Whether the run changed (or would change) anything.
    pub fn changed(&self) -> bool {
        !self.other_statements.is_empty()
            || self.migrations.iter().any(|(_, _, o, _)| {
                matches!(o, MigrationOutcome::Applied | MigrationOutcome::WouldApply)
            })
    }
}

#[derive(Deserialize, clickhouse::Row)]
struct Count {
    n: u64,
}

#[derive(Deserialize, clickhouse::Row)]
struct Applied {
    version: u32,
    checksum: String,
}

#[derive(Deserialize, clickhouse::Row)]
struct EngineFull {
    name: String,
    engine_full: String,
}

/// Retention in days per table family; 0 keeps data forever.
#[derive(Debug, Clone, Copy)]
pub struct RetentionDays {
    /// `events`.
    pub events: u32,
    /// The `events_1m_*` rollups.
    pub rollups: u32,
    /// `rejects`.
    pub rejects: u32,
    /// `alert_events`.
    pub alert_events: u32,
}

impl RetentionDays {
    /// Retention by table: (table, time column, days).
    pub fn by_table(&self) -> [(&'static str, &'static str, u32); 6] {
        [
            ("events", "ts", self.events),
            ("events_1m_entity", "minute", self.rollups),
            ("events_1m_district", "minute", self.rollups),
            ("events_1m_status", "minute", self.rollups),
            ("rejects", "received_at", self.rejects),
            ("alert_events", "ts", self.alert_events),
        ]
    }
}

fn bootstrap(database: &str) -> [String; 2] {
    [
        format!("CREATE DATABASE IF NOT EXISTS {database}"),
        format!(
            "CREATE TABLE IF NOT EXISTS {database}.schema_migrations (version UInt32, name String, checksum String, applied_at DateTime('UTC'), server_version String) ENGINE = MergeTree ORDER BY version"
        ),
    ]
}

/// Applies pending migrations (or, with `dry_run`, lists them) and, on servers with TTL, sets
/// each table's TTL to its retention. Running it again changes nothing.
pub async fn migrate(
    ch: &ClickHouse,
    retention: RetentionDays,
    dry_run: bool,
) -> Result<MigrationReport, Error> {
    let db = ch.database();
    let server = ch.version();
    let mut other_statements = Vec::new();

    let exists = ch
        .fetch::<Count>(
            &format!("SELECT count() AS n FROM system.tables WHERE database = '{db}' AND name = 'schema_migrations'"),
            "look for schema_migrations",
        )
        .await?
        .first()
        .is_some_and(|c| c.n > 0);
    let mut applied = BTreeMap::new();
    if exists {
        let rows = ch
            .fetch::<Applied>(
                &format!("SELECT version, any(checksum) AS checksum FROM {db}.schema_migrations GROUP BY version"),
                "read schema_migrations",
            )
            .await?;
        applied.extend(rows.into_iter().map(|r| (r.version, r.checksum)));
    } else {
        let bootstrap = match ch.cluster() {
            Some(cluster) => crate::cluster::bootstrap(db, &cluster.name),
            None => bootstrap(db),
        };
        for statement in bootstrap {
            if !dry_run {
                ch.execute(&statement, "create schema_migrations").await?;
            }
            other_statements.push(statement);
        }
    }

    let mut migrations = Vec::new();
    for m in MIGRATIONS {
        let statements = match ch.cluster() {
            Some(cluster) => m
                .statements(db)
                .iter()
                .flat_map(|s| crate::clustered(s, db, &cluster.name))
                .collect(),
            None => m.statements(db),
        };
        let outcome = if let Some(checksum) = applied.get(&m.version) {
            if *checksum != m.checksum() {
                return Err(Error::ChangedMigration {
                    version: m.version,
                    name: m.name.to_owned(),
                    applied: checksum.clone(),
                    embedded: m.checksum(),
                });
            }
            MigrationOutcome::AlreadyApplied
        } else if let Some(needed) = m.requires().filter(|needed| server < *needed) {
            MigrationOutcome::NeedsServer(needed)
        } else if dry_run {
            MigrationOutcome::WouldApply
        } else {
            for statement in &statements {
                ch.execute(statement, &format!("migration {} {}", m.version, m.name))
                    .await?;
            }
            ch.execute(
                &format!(
                    "INSERT INTO {db}.schema_migrations (version, name, checksum, applied_at, server_version) VALUES ({}, '{}', '{}', now(), '{server}')",
                    m.version,
                    m.name,
                    m.checksum()
                ),
                "record migration",
            )
            .await?;
            tracing::info!(version = m.version, name = m.name, "migration applied");
            MigrationOutcome::Applied
        };
        let shown = match outcome {
            MigrationOutcome::Applied | MigrationOutcome::WouldApply => statements,
            _ => Vec::new(),
        };
        migrations.push((m.version, m.name, outcome, shown));
    }

    if server.supports_ttl() {
        let tables: BTreeMap<String, String> = if exists || !dry_run {
            ch.fetch::<EngineFull>(
                &format!("SELECT name, engine_full FROM system.tables WHERE database = '{db}'"),
                "read table engines",
            )
            .await?
            .into_iter()
            .map(|t| (t.name, t.engine_full))
            .collect()
        } else {
            BTreeMap::new()
        };
        for (table, column, days) in retention.by_table() {
            // On a cluster the TTL belongs to the tables that store, on every node.
            let (table, on_cluster) = match ch.cluster() {
                Some(c) => (
                    format!("{table}{}", crate::LOCAL_SUFFIX),
                    format!(" ON CLUSTER {}", c.name),
                ),
                None => (table.to_owned(), String::new()),
            };
            let engine = tables.get(&table).map(String::as_str).unwrap_or("");
            let statement =
                ttl_statement(db, &format!("{table}{on_cluster}"), column, days, engine);
            if let Some(statement) = statement {
                if !dry_run {
                    ch.execute(&statement, &format!("set TTL of {table}"))
                        .await?;
                }
                other_statements.push(statement);
            }
        }
    }
    Ok(MigrationReport {
        server,
        migrations,
        other_statements,
    })
}

/// The TTL statements for freshly created tables (no TTL yet), one per table with a retention.
pub fn ttl_statements(db: &str, retention: RetentionDays) -> Vec<String> {
    retention
        .by_table()
        .into_iter()
        .filter_map(|(table, column, days)| ttl_statement(db, table, column, days, ""))
        .collect()
}

/// The statement that brings a table's TTL to `days` (0: none), or `None` when it already is.
/// `table` may carry an `ON CLUSTER` clause (`events_local ON CLUSTER c`).
fn ttl_statement(
    db: &str,
    table: &str,
    column: &str,
    days: u32,
    engine_full: &str,
) -> Option<String> {
    let has_ttl = engine_full.contains(" TTL ");
    if days == 0 {
        return has_ttl.then(|| format!("ALTER TABLE {db}.{table} REMOVE TTL"));
    }
    let wanted = format!("TTL {column} + toIntervalDay({days})");
    (!engine_full.contains(&wanted))
        .then(|| format!("ALTER TABLE {db}.{table} MODIFY TTL {column} + INTERVAL {days} DAY"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_ordered_and_split_into_statements() {
        let versions: Vec<u32> = MIGRATIONS.iter().map(|m| m.version).collect();
        let mut sorted = versions.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(versions, sorted);
        let first = MIGRATIONS[0].statements("city");
        assert_eq!(first.len(), 2);
        assert!(first[0].starts_with("CREATE DATABASE IF NOT EXISTS city"));
        assert!(first[1].contains("CREATE TABLE IF NOT EXISTS city.events"));
        for m in MIGRATIONS {
            assert_eq!(
                m.requires().is_some(),
                m.version >= 1000,
                "migration {}",
                m.version
            );
            for s in m.statements("db") {
                assert!(!s.contains("{{"), "unfilled placeholder in {}: {s}", m.name);
            }
        }
    }

    #[test]
    fn ttl_statements_only_when_the_ttl_differs() {
        let engine = "MergeTree PARTITION BY toYYYYMMDD(ts) ORDER BY (domain) TTL ts + toIntervalDay(90) SETTINGS index_granularity = 8192";
        assert_eq!(ttl_statement("c", "events", "ts", 90, engine), None);
        assert_eq!(
            ttl_statement("c", "events", "ts", 30, engine).as_deref(),
            Some("ALTER TABLE c.events MODIFY TTL ts + INTERVAL 30 DAY")
        );
        assert_eq!(
            ttl_statement("c", "events", "ts", 0, engine).as_deref(),
            Some("ALTER TABLE c.events REMOVE TTL")
        );
        assert_eq!(
            ttl_statement("c", "events", "ts", 0, "MergeTree ORDER BY x"),
            None
        );
    }
}
