//! A ClickHouse connection that knows its server's version.

use crate::{Error, ServerVersion};
use cityops_config::ClickHouseConfig;
use serde::Deserialize;

/// A client plus the server version it talks to.
#[derive(Clone)]
pub struct ClickHouse {
    client: clickhouse::Client,
    version: ServerVersion,
    database: String,
    /// Bound of every query that returns rows (and of the connect): a server that hangs or
    /// never answers must not hang the caller with it.
    query_timeout: std::time::Duration,
    /// The cluster of the cluster schema, when `[clickhouse] cluster` is set.
    cluster: Option<Cluster>,
}

/// A ClickHouse cluster cityops writes to (`[clickhouse] cluster`), as the servers define it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// Its name in the servers' `remote_servers`.
    pub name: String,
    /// The cluster listing each of its replicas as a shard of its own
    /// ([`crate::all_replicas_cluster`]).
    pub all_replicas: String,
    /// Number of shards.
    pub shards: u32,
    /// Every replica's native address, `host:port`, by shard then replica.
    pub replicas: Vec<String>,
}

#[derive(Deserialize, clickhouse::Row)]
struct ClusterRow {
    cluster: String,
    shard_num: u32,
    host_name: String,
    port: u16,
}

/// The default of [`ClickHouse::with_query_timeout`].
pub const DEFAULT_QUERY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

#[derive(Deserialize, clickhouse::Row)]
struct VersionRow {
    version: String,
}

impl ClickHouse {
    /// Connects (one `SELECT version()`), choosing client settings by server version: schema
    /// validation needs a format 18.16 lacks, so it is on only for servers that have it.
    pub async fn connect(config: &ClickHouseConfig) -> Result<Self, Error> {
        let tls = crate::tls::tls_client_config(config)?;
        let mut client = crate::tls::official_client(&tls)
            .with_url(&config.url)
            .with_user(&config.user)
            .with_validation(false)
            .with_compression(match config.compression {
                cityops_config::ClickHouseCompression::Lz4 => clickhouse::Compression::Lz4,
                cityops_config::ClickHouseCompression::None => clickhouse::Compression::None,
            });
        if let Some(password) = &config.password {
            client = client.with_password(password.expose());
        }
        let what = format!("connect to {}", config.url);
        let text = bounded(DEFAULT_QUERY_TIMEOUT, &what, async {
            client
                .query("SELECT version() AS version")
                .fetch_one::<VersionRow>()
                .await
        })
        .await?
        .version;
        let version = ServerVersion::parse(&text).ok_or(Error::Version(text))?;
        let mut client = client.with_validation(version.supports_client_validation());
        let cluster = match &config.cluster {
            Some(name) => {
                let cluster = read_cluster(&client, name).await?;
                // An INSERT into a Distributed table returns once every shard has stored its
                // rows (not once they are queued on this node): acknowledged means stored.
                client = client.with_setting("insert_distributed_sync", "1");
                Some(cluster)
            }
            None => None,
        };
        Ok(ClickHouse {
            client,
            version,
            database: config.database.clone(),
            query_timeout: DEFAULT_QUERY_TIMEOUT,
            cluster,
        })
    }

    /// The cluster of the cluster schema, if the config names one.
    pub fn cluster(&self) -> Option<&Cluster> {
        self.cluster.as_ref()
    }

    /// What to read to see every replica's rows of a cityops table: the table itself on one
    /// server, every replica's `<table>_local` on a cluster. The `Distributed` table asks one
    /// replica per shard, which may not have fetched a part another replica acknowledged.
    pub fn on_every_replica(&self, table: &str) -> String {
        match &self.cluster {
            None => table.to_owned(),
            Some(c) => format!(
                "cluster('{}', {}, {table}{})",
                c.all_replicas,
                self.database,
                crate::cluster::LOCAL_SUFFIX
            ),
        }
    }

    /// Like [`ClickHouse::on_every_replica`] for a `system` table (`processes`).
    pub fn system_on_every_replica(&self, table: &str) -> String {
        match &self.cluster {
            None => format!("system.{table}"),
            Some(c) => format!("cluster('{}', system, {table})", c.all_replicas),
        }
    }

    /// The same connection with every row-returning query bounded by `timeout` (a timed-out
    /// query is an error like a network failure: retried by the callers that retry).
    #[must_use]
    pub fn with_query_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.query_timeout = timeout;
        self
    }

    /// The server's version.
    pub fn version(&self) -> ServerVersion {
        self.version
    }

    /// The bound of row-returning queries (see [`ClickHouse::with_query_timeout`]).
    pub fn query_timeout(&self) -> std::time::Duration {
        self.query_timeout
    }

    /// The cityops database name.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// A client bound to the cityops database, for inserts and typed queries. Tables are
    /// named without the database (`insert("events")`): ClickHouse 18.16 does not accept
    /// `db.table` in the client's INSERT.
    pub fn client(&self) -> clickhouse::Client {
        self.client.clone().with_database(&self.database)
    }

    /// Runs a statement that returns nothing (DDL, ALTER). The server answers only at the end
    /// (`wait_end_of_query`): an `ON CLUSTER` statement streams one line per node, and a node's
    /// failure must be the statement's error, not a line in a 200 response.
    pub async fn execute(&self, sql: &str, what: &str) -> Result<(), Error> {
        self.client
            .query(sql)
            .with_setting("wait_end_of_query", "1")
            .execute()
            .await
            .map_err(|source| Error::Query {
                what: what.to_owned(),
                source,
            })
    }

    /// Inserts `rows` into `table` (of the cityops database) in one INSERT, RowBinary.
    pub async fn insert<T>(&self, table: &str, rows: &[T]) -> Result<(), Error>
    where
        T: clickhouse::RowOwned + clickhouse::RowWrite,
    {
        let what = || format!("insert {} rows into {table}", rows.len());
        let client = self.client();
        let mut insert = client
            .insert::<T>(table)
            .await
            .map_err(|source| Error::Query {
                what: what(),
                source,
            })?;
        for row in rows {
            insert.write(row).await.map_err(|source| Error::Query {
                what: what(),
                source,
            })?;
        }
        insert.end().await.map_err(|source| Error::Query {
            what: what(),
            source,
        })
    }

    /// Runs a query returning rows of `T`. Tables are named with their database: this
    /// client is not bound to one (it runs before the database exists, in `migrate`).
    pub async fn fetch<T>(&self, sql: &str, what: &str) -> Result<Vec<T>, Error>
    where
        T: clickhouse::RowOwned + clickhouse::RowRead,
    {
        fetch_with(&self.client, sql, what, self.query_timeout).await
    }

    /// Like [`ClickHouse::fetch`], with unqualified table names in the cityops database.
    pub(crate) async fn fetch_here<T>(&self, sql: &str, what: &str) -> Result<Vec<T>, Error>
    where
        T: clickhouse::RowOwned + clickhouse::RowRead,
    {
        fetch_with(&self.client(), sql, what, self.query_timeout).await
    }

    /// Reads rows from every replica (a query over [`ClickHouse::on_every_replica`]). On a
    /// cluster with a replica that does not answer, the replicas that do must hold all it
    /// could: for each shard of `tables` some answering replica has pulled the whole
    /// replication log and fetched every part it names. Then the query reads the answering
    /// replicas only; otherwise it fails (to be retried) and says which shard is short. With
    /// no `tables`, replicas that do not answer are simply left out.
    pub(crate) async fn fetch_from_every_replica<T>(
        &self,
        tables: &[&str],
        sql: &str,
        what: &str,
    ) -> Result<Vec<T>, Error>
    where
        T: clickhouse::RowOwned + clickhouse::RowRead,
    {
        let Some(cluster) = &self.cluster else {
            return self.fetch_here(sql, what).await;
        };
        let tolerant = self.client().with_setting("skip_unavailable_shards", "1");
        if tables.is_empty() {
            return fetch_with(&tolerant, sql, what, self.query_timeout).await;
        }
        let listed: Vec<String> = tables
            .iter()
            .map(|t| format!("'{t}{}'", crate::cluster::LOCAL_SUFFIX))
            .collect();
        let replicas_sql = format!(
            "SELECT zookeeper_path AS path, any(total_replicas) AS total, count() AS answering, \
             max(inserts_in_queue = 0 AND log_pointer > log_max_index) AS complete, \
             max(inserts_in_queue = 0 AND log_pointer = 0 AND log_max_index = 0) AS maybe_empty \
             FROM {} WHERE database = '{}' AND table IN ({}) GROUP BY zookeeper_path",
            self.system_on_every_replica("replicas"),
            self.database,
            listed.join(", ")
        );
        let shards: Vec<ShardReplicas> = fetch_with(
            &tolerant,
            &replicas_sql,
            "read the replicas' state",
            self.query_timeout,
        )
        .await?;
        let expected = cluster.shards as usize * tables.len();
        let mut short = Vec::new();
        for s in shards
            .iter()
            .filter(|s| s.answering < u64::from(s.total) && s.complete == 0)
        {
            // 0 and 0 is a log never written to, or one entry not pulled yet: ZooKeeper tells.
            if s.maybe_empty == 1 {
                let log = format!(
                    "SELECT count() AS n FROM system.zookeeper WHERE path = '{}/log'",
                    s.path.replace('\'', "")
                );
                let entries: Vec<LogEntries> = fetch_with(
                    &tolerant,
                    &log,
                    "read a replication log",
                    self.query_timeout,
                )
                .await?;
                if entries.first().is_some_and(|e| e.n == 0) {
                    continue;
                }
            }
            short.push(format!(
                "{} ({} of {} replicas answer, none up to date)",
                s.path, s.answering, s.total
            ));
        }
        if shards.len() < expected || !short.is_empty() {
            return Err(Error::Cluster {
                name: cluster.name.clone(),
                reason: format!(
                    "cannot tell what is stored ({what}): {} of {expected} shard tables answer; {}",
                    shards.len(),
                    if short.is_empty() {
                        "a whole shard is down".to_owned()
                    } else {
                        short.join("; ")
                    }
                ),
            });
        }
        fetch_with(&tolerant, sql, what, self.query_timeout).await
    }
}

#[derive(Deserialize, clickhouse::Row)]
struct ShardReplicas {
    path: String,
    total: u8,
    answering: u64,
    complete: u8,
    maybe_empty: u8,
}

#[derive(Deserialize, clickhouse::Row)]
struct LogEntries {
    n: u64,
}

/// Reads the cluster `name` and its all-replicas twin from `system.clusters`, and checks that
/// both list the same replicas.
async fn read_cluster(client: &clickhouse::Client, name: &str) -> Result<Cluster, Error> {
    let all = crate::all_replicas_cluster(name);
    let sql = format!(
        "SELECT cluster, shard_num, host_name, port FROM system.clusters \
         WHERE cluster IN ('{name}', '{all}') ORDER BY cluster, shard_num, replica_num"
    );
    let rows: Vec<ClusterRow> =
        fetch_with(client, &sql, "read the cluster", DEFAULT_QUERY_TIMEOUT).await?;
    let addresses = |cluster: &str| -> Vec<String> {
        rows.iter()
            .filter(|r| r.cluster == cluster)
            .map(|r| format!("{}:{}", r.host_name, r.port))
            .collect()
    };
    let replicas = addresses(name);
    let mut twin = addresses(&all);
    let mut sorted = replicas.clone();
    sorted.sort();
    twin.sort();
    if replicas.is_empty() || sorted != twin {
        return Err(Error::Cluster {
            name: name.to_owned(),
            reason: if replicas.is_empty() {
                "the server's remote_servers has no such cluster".to_owned()
            } else {
                format!(
                    "remote_servers must also define {all} with each replica of {name} as a shard of its own (it lists {twin:?}, {name} has {sorted:?})"
                )
            },
        });
    }
    let shards = rows
        .iter()
        .filter(|r| r.cluster == name)
        .map(|r| r.shard_num)
        .max()
        .unwrap_or(0);
    Ok(Cluster {
        name: name.to_owned(),
        all_replicas: all,
        shards,
        replicas,
    })
}

async fn fetch_with<T>(
    client: &clickhouse::Client,
    sql: &str,
    what: &str,
    timeout: std::time::Duration,
) -> Result<Vec<T>, Error>
where
    T: clickhouse::RowOwned + clickhouse::RowRead,
{
    bounded(timeout, what, client.query(sql).fetch_all::<T>()).await
}

/// Runs `query`, failing with the client's own `TimedOut` after `timeout` (dropping the
/// request closes its connection).
pub(crate) async fn bounded<T>(
    timeout: std::time::Duration,
    what: &str,
    query: impl std::future::Future<Output = Result<T, clickhouse::error::Error>>,
) -> Result<T, Error> {
    let source = match tokio::time::timeout(timeout, query).await {
        Ok(Ok(value)) => return Ok(value),
        Ok(Err(source)) => source,
        Err(_) => clickhouse::error::Error::TimedOut,
    };
    Err(Error::Query {
        what: what.to_owned(),
        source,
    })
}
