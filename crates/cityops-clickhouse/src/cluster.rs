//! The cluster variant of the schema, derived from the single-server migrations: each table
//! becomes a replicated `<table>_local` on every node plus a `Distributed` table under the
//! plain name, every statement runs `ON CLUSTER`.
//!
//! Deriving it (instead of keeping a second set of files) keeps one schema for engineers to
//! read and for chDB to check; the rewrite is pure and covered by goldens below.

/// Suffix of the replicated table on each node behind a `Distributed` table.
pub const LOCAL_SUFFIX: &str = "_local";

/// Blocks whose hashes each replicated table remembers for insert deduplication (ClickHouse's
/// default is 100). A writer resends an INSERT whose outcome it does not know; the resend is
/// dropped as a duplicate only while its block's hash is still remembered, and many writers
/// inserting into one shard during a long outage could otherwise push it out first.
pub const DEDUPLICATION_WINDOW_BLOCKS: u32 = 1000;

/// The name, in `remote_servers`, of the cluster that lists every replica of `cluster` as a
/// shard of its own: reading through it asks every replica (what the stored-offset check needs,
/// see ARCHITECTURE.md), with the credentials the servers' config holds.
pub fn all_replicas_cluster(cluster: &str) -> String {
    format!("{cluster}_all_replicas")
}

/// How rows are spread over the shards when written through the `Distributed` table. It must
/// be a function of the row alone (never `rand()` for a table that is written to): a resent
/// INSERT must split into the same blocks per shard, or replicated deduplication cannot
/// recognise them.
fn sharding_key(table: &str) -> &'static str {
    match table {
        // An entity's series stays on one shard: its panels and rules read one shard's rows.
        "events" => "cityHash64(entity_id)",
        "rejects" => "cityHash64(feed, source_topic, source_offset)",
        "alert_events" => "cityHash64(fingerprint)",
        // The rollups are written by materialized views on each node, never through their
        // Distributed table.
        _ => "rand()",
    }
}

/// The statements of the cluster schema for one statement of a base migration (already with
/// its database filled in).
pub fn clustered(statement: &str, db: &str, cluster: &str) -> Vec<String> {
    let on = format!("ON CLUSTER {cluster}");
    if let Some(rest) = statement.strip_prefix("CREATE DATABASE IF NOT EXISTS ") {
        return vec![format!(
            "CREATE DATABASE IF NOT EXISTS {} {on}",
            rest.trim()
        )];
    }
    if let Some(rest) = statement.strip_prefix("CREATE TABLE IF NOT EXISTS ") {
        return create_table(rest, db, cluster);
    }
    if let Some(rest) = statement.strip_prefix("CREATE MATERIALIZED VIEW IF NOT EXISTS ") {
        // A view on each node turns that node's inserts into its shard's rollup rows.
        let (name, body) = split_name(rest);
        let body = to_local_tables(body, db);
        return vec![format!(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS {name} {on}{body}"
        )];
    }
    if let Some(rest) = statement.strip_prefix("CREATE VIEW IF NOT EXISTS ") {
        // A plain view reads the Distributed tables: the whole cluster.
        let (name, body) = split_name(rest);
        return vec![format!("CREATE VIEW IF NOT EXISTS {name} {on}{body}")];
    }
    if let Some(rest) = statement.strip_prefix("ALTER TABLE ") {
        let (name, body) = split_name(rest);
        let local = format!("ALTER TABLE {name}{LOCAL_SUFFIX} {on}{body}");
        // Storage details (codecs, indexes, TTL) belong to the tables that store; the columns
        // a Distributed table shows must follow its local table's. 18.16 refuses `ALTER ... ON
        // CLUSTER` of a Distributed table over replicated shards, so it is made again from the
        // altered local table (it holds no rows: inserts through it are synchronous).
        let storage_only = ["CODEC(", "INDEX ", "TTL "]
            .iter()
            .any(|word| body.contains(word));
        if storage_only {
            return vec![local];
        }
        let (db_name, table) = name.split_once('.').unwrap_or((db, name));
        return vec![
            local,
            format!("DROP TABLE IF EXISTS {name} {on}"),
            distributed(db_name, table, cluster),
        ];
    }
    vec![statement.to_owned()]
}

/// `db.name rest` → (`db.name`, ` rest`).
fn split_name(text: &str) -> (&str, &str) {
    let end = text
        .find(|c: char| c.is_whitespace() || c == '(')
        .unwrap_or(text.len());
    text.split_at(end)
}

fn create_table(rest: &str, db: &str, cluster: &str) -> Vec<String> {
    let (name, body) = split_name(rest);
    let table = name.rsplit('.').next().unwrap_or(name);
    let local = format!("{table}{LOCAL_SUFFIX}");
    let Some(engine_at) = body.find("ENGINE = ") else {
        return vec![format!(
            "CREATE TABLE IF NOT EXISTS {name} ON CLUSTER {cluster}{body}"
        )];
    };
    let (columns, engine_text) = body.split_at(engine_at);
    let engine_text = &engine_text["ENGINE = ".len()..];
    let engine_end = engine_text
        .find(|c: char| !c.is_ascii_alphanumeric())
        .unwrap_or(engine_text.len());
    let (engine, after) = engine_text.split_at(engine_end);
    let path = format!("'/clickhouse/tables/{{shard}}/{db}/{local}', '{{replica}}'");
    let (arguments, after) = match after.strip_prefix('(') {
        Some(inner) => {
            let close = inner.find(')').unwrap_or(inner.len());
            let existing = inner[..close].trim();
            let arguments = if existing.is_empty() {
                path
            } else {
                format!("{path}, {existing}")
            };
            (arguments, inner.get(close + 1..).unwrap_or(""))
        }
        None => (path, after),
    };
    let window = format!("replicated_deduplication_window = {DEDUPLICATION_WINDOW_BLOCKS}");
    let after = match after.find("SETTINGS ") {
        Some(at) => format!("{}SETTINGS {window}, {}", &after[..at], &after[at + 9..]),
        None => format!("{}\nSETTINGS {window}", after.trim_end()),
    };
    vec![
        format!(
            "CREATE TABLE IF NOT EXISTS {db}.{local} ON CLUSTER {cluster}{columns}ENGINE = Replicated{engine}({arguments}){after}"
        ),
        distributed(db, table, cluster),
    ]
}

/// The `Distributed` table `db.table` over every shard's `table_local`.
fn distributed(db: &str, table: &str, cluster: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {db}.{table} ON CLUSTER {cluster} AS {db}.{table}{LOCAL_SUFFIX}\nENGINE = Distributed({cluster}, {db}, {table}{LOCAL_SUFFIX}, {})",
        sharding_key(table)
    )
}

/// `FROM db.t` and `TO db.t` in a materialized view name the local tables.
fn to_local_tables(body: &str, db: &str) -> String {
    let mut out = String::with_capacity(body.len() + 16);
    let mut rest = body;
    while let Some(at) = rest.find(&format!("{db}.")) {
        let before = &rest[..at];
        let keyword = before.trim_end();
        let names_a_table = keyword.ends_with("FROM") || keyword.ends_with("TO");
        let after = &rest[at..];
        let (name, tail) = split_name(after);
        out.push_str(before);
        out.push_str(name);
        if names_a_table {
            out.push_str(LOCAL_SUFFIX);
        }
        rest = tail;
    }
    out.push_str(rest);
    out
}

/// `schema_migrations` on a cluster: one replicated table whose replicas are every node (one
/// ZooKeeper path without the shard), so that each node knows what was applied.
pub fn bootstrap(db: &str, cluster: &str) -> [String; 2] {
    [
        format!("CREATE DATABASE IF NOT EXISTS {db} ON CLUSTER {cluster}"),
        format!(
            "CREATE TABLE IF NOT EXISTS {db}.schema_migrations ON CLUSTER {cluster} (version UInt32, name String, checksum String, applied_at DateTime('UTC'), server_version String) ENGINE = ReplicatedMergeTree('/clickhouse/tables/all/{db}/schema_migrations', '{{replica}}') ORDER BY version"
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MIGRATIONS;

    #[test]
    fn a_table_becomes_a_replicated_local_table_and_a_distributed_one() {
        let base = "CREATE TABLE IF NOT EXISTS city.rejects\n(\n    reject_id UUID,\n    feed String\n)\nENGINE = MergeTree\nPARTITION BY toYYYYMMDD(received_at)\nORDER BY (feed)\nSETTINGS index_granularity = 8192";
        let out = clustered(base, "city", "iot");
        assert_eq!(
            out,
            [
                "CREATE TABLE IF NOT EXISTS city.rejects_local ON CLUSTER iot\n(\n    reject_id UUID,\n    feed String\n)\nENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/city/rejects_local', '{replica}')\nPARTITION BY toYYYYMMDD(received_at)\nORDER BY (feed)\nSETTINGS replicated_deduplication_window = 1000, index_granularity = 8192",
                "CREATE TABLE IF NOT EXISTS city.rejects ON CLUSTER iot AS city.rejects_local\nENGINE = Distributed(iot, city, rejects_local, cityHash64(feed, source_topic, source_offset))",
            ]
        );
        let aggregating = "CREATE TABLE IF NOT EXISTS c.events_1m_entity\n(\n    minute DateTime('UTC')\n)\nENGINE = AggregatingMergeTree\nPARTITION BY toYYYYMMDD(minute)\nORDER BY (minute)";
        let out = clustered(aggregating, "c", "k");
        assert!(out[0].contains(
            "ENGINE = ReplicatedAggregatingMergeTree('/clickhouse/tables/{shard}/c/events_1m_entity_local', '{replica}')\nPARTITION BY"
        ), "{}", out[0]);
        assert!(
            out[0].ends_with("ORDER BY (minute)\nSETTINGS replicated_deduplication_window = 1000"),
            "{}",
            out[0]
        );
        let replacing =
            "CREATE TABLE IF NOT EXISTS c.t (v UInt64) ENGINE = ReplacingMergeTree(v) ORDER BY v";
        assert!(clustered(replacing, "c", "k")[0].contains(
            "ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/c/t_local', '{replica}', v) ORDER BY v"
        ));
    }

    #[test]
    fn views_read_local_tables_when_they_feed_rollups_and_distributed_ones_otherwise() {
        let mv = "CREATE MATERIALIZED VIEW IF NOT EXISTS c.r_mv\nTO c.r\nAS SELECT a FROM c.events\nWHERE c.events.x = 1";
        assert_eq!(
            clustered(mv, "c", "k"),
            [
                "CREATE MATERIALIZED VIEW IF NOT EXISTS c.r_mv ON CLUSTER k\nTO c.r_local\nAS SELECT a FROM c.events_local\nWHERE c.events.x = 1"
            ]
        );
        let view = "CREATE VIEW IF NOT EXISTS c.episodes AS\nSELECT 1 FROM c.alert_events";
        assert_eq!(
            clustered(view, "c", "k"),
            ["CREATE VIEW IF NOT EXISTS c.episodes ON CLUSTER k AS\nSELECT 1 FROM c.alert_events"]
        );
    }

    #[test]
    fn column_changes_reach_both_tables_and_storage_changes_only_the_local_one() {
        let add = "ALTER TABLE c.alert_events\n    ADD COLUMN actor String DEFAULT ''";
        assert_eq!(
            clustered(add, "c", "k"),
            [
                "ALTER TABLE c.alert_events_local ON CLUSTER k\n    ADD COLUMN actor String DEFAULT ''",
                "DROP TABLE IF EXISTS c.alert_events ON CLUSTER k",
                "CREATE TABLE IF NOT EXISTS c.alert_events ON CLUSTER k AS c.alert_events_local\nENGINE = Distributed(k, c, alert_events_local, cityHash64(fingerprint))",
            ]
        );
        let codec = "ALTER TABLE c.events MODIFY COLUMN ts DateTime('UTC') CODEC(DoubleDelta, LZ4)";
        assert_eq!(
            clustered(codec, "c", "k"),
            [
                "ALTER TABLE c.events_local ON CLUSTER k MODIFY COLUMN ts DateTime('UTC') CODEC(DoubleDelta, LZ4)"
            ]
        );
        assert_eq!(
            clustered("CREATE DATABASE IF NOT EXISTS c", "c", "k"),
            ["CREATE DATABASE IF NOT EXISTS c ON CLUSTER k"]
        );
    }

    #[test]
    fn every_statement_of_every_migration_runs_on_the_cluster() {
        for m in MIGRATIONS {
            for statement in m.statements("db") {
                for out in clustered(&statement, "db", "k") {
                    assert!(
                        out.contains(" ON CLUSTER k"),
                        "migration {} left a statement for one server: {out}",
                        m.name
                    );
                    if out.contains("ENGINE = Distributed") {
                        continue;
                    }
                    assert!(
                        !out.contains("ENGINE = MergeTree")
                            && !out.contains("ENGINE = AggregatingMergeTree"),
                        "migration {}: an unreplicated table: {out}",
                        m.name
                    );
                }
            }
        }
    }
}
