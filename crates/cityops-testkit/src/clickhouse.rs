//! A ClickHouse server instance, with SQL helpers over HTTP.

use crate::ServiceProcess;
use crate::instance::{Instance, ServiceSpec};
use crate::support::{http_get, instance_dir, make_dirs, render, require_binary, template};
use anyhow::bail;
use cityops_config::{ClickHouseConfig, Secret};
use std::time::Duration;

/// ClickHouse on an HTTP and a native port (and an HTTPS one when started with TLS).
#[derive(Debug)]
pub struct ClickHouseSpec {
    http_port: u16,
    tcp_port: u16,
    https: Option<(u16, crate::TestCertificates)>,
}

impl ServiceSpec for ClickHouseSpec {
    const NAME: &'static str = "clickhouse-server";
    // 18.16 takes a few seconds to shut down.
    const STOP_GRACE: Duration = Duration::from_secs(20);
    const READY_TIMEOUT: Duration = Duration::from_secs(30);
    fn ready(&self) -> bool {
        let url = format!("http://127.0.0.1:{}/ping", self.http_port);
        matches!(http_get(&url), Some((200, body)) if body.trim() == "Ok.")
            && self
                .https
                .as_ref()
                .is_none_or(|(port, _)| crate::support::port_open(*port))
    }
}

/// A running ClickHouse server (Debian's 18.16 here) on 127.0.0.1, data in its own directory,
/// with the users of `deploy/local/clickhouse/users.xml`.
pub type ClickHouseServer = Instance<ClickHouseSpec>;

impl ClickHouseServer {
    /// Starts a fresh server on free ports and waits until `/ping` answers.
    pub fn start() -> Self {
        Self::start_with_tls(false)
    }

    /// Like [`ClickHouseServer::start`], also serving HTTPS on a port of its own with a server
    /// certificate for 127.0.0.1 signed by a CA made for this instance ([`Self::https_url`],
    /// [`Self::ca_file`]).
    pub fn start_https() -> Self {
        Self::start_with_tls(true)
    }

    fn start_with_tls(tls: bool) -> Self {
        Self::start_with(tls, (crate::free_port(), crate::free_port()), None)
    }

    /// Starts a server on the given HTTP and native ports, with `node` (the text of a
    /// `config.d/` file) merged into its config.
    fn start_with(tls: bool, (http_port, tcp_port): (u16, u16), node: Option<String>) -> Self {
        let binary = require_binary("clickhouse-server");
        let dir = instance_dir("clickhouse");
        make_dirs(
            dir.path(),
            &[
                "conf",
                "data/tmp",
                "data/user_files",
                "data/format_schemas",
                "log",
                "run",
                "conf/config.d",
            ],
        );
        if let Some(node) = node {
            std::fs::write(dir.path().join("conf/config.d/cluster.xml"), node)
                .expect("write the node's cluster config");
        }
        let values = [
            ("CH_HTTP_PORT", http_port.to_string()),
            ("CH_TCP_PORT", tcp_port.to_string()),
            ("DATA_DIR", dir.path().join("data").display().to_string()),
            ("LOG_DIR", dir.path().join("log").display().to_string()),
            ("CONF_DIR", dir.path().join("conf").display().to_string()),
        ];
        let https = tls.then(|| {
            let certificates = crate::tls::make_certificates(&dir.path().join("conf"));
            (crate::free_port(), certificates)
        });
        for file in ["config.xml", "users.xml"] {
            let mut text = render(&template(&format!("clickhouse/{file}")), &values);
            if let (Some((port, certificates)), "config.xml") = (&https, file) {
                // 18.16's HTTPS: a port and OpenSSL's server settings.
                let server = format!(
                    "    <https_port>{port}</https_port>\n    <openSSL><server>\n        <certificateFile>{}</certificateFile>\n        <privateKeyFile>{}</privateKeyFile>\n        <verificationMode>none</verificationMode>\n        <loadDefaultCAFile>false</loadDefaultCAFile>\n        <disableProtocols>sslv2,sslv3,tlsv1,tlsv1_1</disableProtocols>\n    </server></openSSL>\n</yandex>",
                    certificates.cert_file.display(),
                    certificates.key_file.display()
                );
                text = text.replace("</yandex>", &server);
            }
            std::fs::write(dir.path().join("conf").join(file), text)
                .expect("write ClickHouse config");
        }
        let config = dir.path().join("conf/config.xml");
        let process = ServiceProcess::new(
            "clickhouse",
            binary,
            vec![format!("--config-file={}", config.display())],
            &dir.path().join("data"),
            dir.path().join("log/stdout.log"),
        );
        Instance::launch(
            dir,
            ClickHouseSpec {
                http_port,
                tcp_port,
                https,
            },
            process,
        )
    }

    /// HTTP URL, e.g. `http://127.0.0.1:34567`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.spec.http_port)
    }

    /// The HTTPS URL of a server started with [`ClickHouseServer::start_https`].
    pub fn https_url(&self) -> Option<String> {
        self.spec
            .https
            .as_ref()
            .map(|(port, _)| format!("https://127.0.0.1:{port}"))
    }

    /// PEM of the CA that signed the HTTPS certificate.
    pub fn ca_file(&self) -> Option<&std::path::Path> {
        self.spec.https.as_ref().map(|(_, c)| c.ca_file.as_path())
    }

    /// HTTP port.
    pub fn http_port(&self) -> u16 {
        self.spec.http_port
    }

    /// Native protocol port.
    pub fn tcp_port(&self) -> u16 {
        self.spec.tcp_port
    }

    /// A cityops `[clickhouse]` config pointing at this server as the admin user.
    pub fn config(&self, database: &str) -> ClickHouseConfig {
        ClickHouseConfig {
            url: self.url(),
            database: database.to_owned(),
            ..ClickHouseConfig::default()
        }
    }

    /// Like [`ClickHouseServer::config`], as one of the users of `users.xml`.
    pub fn config_as(&self, database: &str, user: &str, password: &str) -> ClickHouseConfig {
        ClickHouseConfig {
            user: user.to_owned(),
            password: Some(Secret::new(password)),
            ..self.config(database)
        }
    }

    /// Runs SQL as the admin user and returns the response body (TabSeparated for SELECTs).
    pub async fn sql(&self, sql: &str) -> anyhow::Result<String> {
        self.sql_as("default", "", sql).await
    }

    /// Runs SQL as `user`; Err carries the server's message.
    pub async fn sql_as(&self, user: &str, password: &str, sql: &str) -> anyhow::Result<String> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()?;
        let response = client
            .post(self.url())
            .header("X-ClickHouse-User", user)
            .header("X-ClickHouse-Key", password)
            .body(sql.to_owned())
            .send()
            .await?;
        let status = response.status();
        let body = response.text().await?;
        if !status.is_success() {
            bail!("ClickHouse answered {status}: {}", body.trim());
        }
        Ok(body)
    }

    /// Runs a SELECT and returns its rows as JSON objects.
    pub async fn rows(&self, sql: &str) -> anyhow::Result<Vec<serde_json::Value>> {
        let body = self.sql(&format!("{sql} FORMAT JSONEachRow")).await?;
        body.lines().map(|l| Ok(serde_json::from_str(l)?)).collect()
    }

    /// Runs a query returning one number (`SELECT count() ...`).
    pub async fn scalar(&self, sql: &str) -> anyhow::Result<f64> {
        let body = self.sql(sql).await?;
        Ok(body.trim().parse()?)
    }
}

/// A ClickHouse cluster on loopback ports: `shards` × `replicas` servers and the ZooKeeper
/// they coordinate through, with the two clusters cityops needs in every node's
/// `remote_servers` (`deploy/local/clickhouse/cluster.xml`). Nodes can be stopped, restarted
/// and killed one by one.
#[derive(Debug)]
pub struct ClickHouseCluster {
    name: String,
    // Declared before the ZooKeeper so that the servers stop first.
    nodes: Vec<ClickHouseServer>,
    replicas: u32,
    zookeeper: crate::ZooKeeper,
    // Last: released once the servers and ZooKeeper are gone.
    _one_at_a_time: std::sync::MutexGuard<'static, ()>,
}

/// One cluster at a time per test process: each is five services, and two side by side on a
/// 2-core machine under load left an `ON CLUSTER` statement unfinished past ClickHouse's
/// 180 s.
static CLUSTER_SLOT: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl ClickHouseCluster {
    /// Starts ZooKeeper and `shards` × `replicas` servers of a cluster named `cityops`.
    pub fn start(shards: u32, replicas: u32) -> Self {
        let slot = CLUSTER_SLOT
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let name = "cityops".to_owned();
        let zookeeper = crate::ZooKeeper::start();
        let ports: Vec<Vec<(u16, u16)>> = (0..shards)
            .map(|_| {
                (0..replicas)
                    .map(|_| (crate::free_port(), crate::free_port()))
                    .collect()
            })
            .collect();
        let remote_servers = remote_servers(&name, &ports);
        let mut nodes = Vec::new();
        for (shard, replicas_ports) in ports.iter().enumerate() {
            for (replica, &node_ports) in replicas_ports.iter().enumerate() {
                let values = [
                    ("ZK_PORT", zookeeper.port().to_string()),
                    ("INTERSERVER_PORT", crate::free_port().to_string()),
                    ("SHARD", format!("{:02}", shard + 1)),
                    ("REPLICA", format!("s{}r{}", shard + 1, replica + 1)),
                    ("CLUSTER", name.clone()),
                    ("REMOTE_SERVERS", remote_servers.clone()),
                ];
                let node = render(&template("clickhouse/cluster.xml"), &values);
                nodes.push(ClickHouseServer::start_with(false, node_ports, Some(node)));
            }
        }
        ClickHouseCluster {
            name,
            nodes,
            replicas,
            zookeeper,
            _one_at_a_time: slot,
        }
    }

    /// The cluster's name in `remote_servers`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The server of `shard` and `replica` (both from 1).
    pub fn node(&self, shard: u32, replica: u32) -> &ClickHouseServer {
        &self.nodes[self.index(shard, replica)]
    }

    /// Like [`ClickHouseCluster::node`], to stop, restart or kill it.
    pub fn node_mut(&mut self, shard: u32, replica: u32) -> &mut ClickHouseServer {
        let index = self.index(shard, replica);
        &mut self.nodes[index]
    }

    /// Every server, by shard then replica.
    pub fn nodes(&self) -> &[ClickHouseServer] {
        &self.nodes
    }

    /// The ZooKeeper the servers use.
    pub fn zookeeper(&self) -> &crate::ZooKeeper {
        &self.zookeeper
    }

    fn index(&self, shard: u32, replica: u32) -> usize {
        assert!(shard >= 1 && replica >= 1 && replica <= self.replicas);
        ((shard - 1) * self.replicas + replica - 1) as usize
    }

    /// A cityops `[clickhouse]` config of the cluster schema, entering through the server of
    /// `shard` and `replica`, as the admin user.
    pub fn config(&self, database: &str, (shard, replica): (u32, u32)) -> ClickHouseConfig {
        ClickHouseConfig {
            cluster: Some(self.name.clone()),
            ..self.node(shard, replica).config(database)
        }
    }
}

/// The `<remote_servers>` entries: the cluster (shards of replicas) and its all-replicas twin.
fn remote_servers(name: &str, ports: &[Vec<(u16, u16)>]) -> String {
    let replica = |tcp: u16| format!("<replica><host>127.0.0.1</host><port>{tcp}</port></replica>");
    let mut text = format!("        <{name}>\n");
    for shard in ports {
        text.push_str("            <shard><internal_replication>true</internal_replication>\n");
        for (_, tcp) in shard {
            text.push_str(&format!("                {}\n", replica(*tcp)));
        }
        text.push_str("            </shard>\n");
    }
    text.push_str(&format!(
        "        </{name}>\n        <{name}_all_replicas>\n"
    ));
    for (_, tcp) in ports.iter().flatten() {
        text.push_str(&format!("            <shard>{}</shard>\n", replica(*tcp)));
    }
    text.push_str(&format!("        </{name}_all_replicas>"));
    text
}
