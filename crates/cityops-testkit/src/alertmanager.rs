//! An Alertmanager instance, with API v2 helpers.

use crate::ServiceProcess;
use crate::instance::{Instance, ServiceSpec};
use crate::support::{instance_dir, make_dirs, ready_endpoint, render, require_binary, template};
use anyhow::bail;
use std::time::Duration;

/// Alertmanager on one port.
#[derive(Debug)]
pub struct AlertmanagerSpec {
    port: u16,
}

impl ServiceSpec for AlertmanagerSpec {
    const NAME: &'static str = "alertmanager";
    const STOP_GRACE: Duration = Duration::from_secs(10);
    const READY_TIMEOUT: Duration = Duration::from_secs(30);
    fn ready(&self) -> bool {
        ready_endpoint(self.port)
    }
}

/// A running Alertmanager on 127.0.0.1 (clustering off, or a peer of a cluster) with
/// `deploy/local/alertmanager.yml`.
pub type Alertmanager = Instance<AlertmanagerSpec>;

/// How long a peer of a test cluster waits per position before notifying.
pub const CLUSTER_PEER_TIMEOUT: Duration = Duration::from_secs(5);

impl Alertmanager {
    /// Starts a fresh instance on a free port and waits until it is ready.
    pub fn start() -> Self {
        Self::start_with_receiver("")
    }

    /// As [`Alertmanager::start`], with its receiver also posting every notification (firing
    /// and resolved) to the webhook `url`: what on-call staff would be sent.
    pub fn start_notifying(url: &str) -> Self {
        Self::start_with_receiver(&format!(
            "    webhook_configs:\n      - url: \"{url}\"\n        send_resolved: true\n"
        ))
    }

    /// `peers` Alertmanagers gossiping as one cluster on loopback, each posting its
    /// notifications to the webhook `url` as [`Alertmanager::start_notifying`]. Peers wait
    /// [`CLUSTER_PEER_TIMEOUT`] per position before notifying what another may have notified
    /// (Alertmanager's default is 15 s), so that a duplicate would show within seconds.
    pub fn start_cluster_notifying(url: &str, peers: usize) -> Vec<Self> {
        let receiver =
            format!("    webhook_configs:\n      - url: \"{url}\"\n        send_resolved: true\n");
        let ports: Vec<u16> = (0..peers).map(|_| crate::free_port()).collect();
        ports
            .iter()
            .map(|&own| {
                let mut args = vec![
                    format!("--cluster.listen-address=127.0.0.1:{own}"),
                    format!(
                        "--cluster.peer-timeout={}ms",
                        CLUSTER_PEER_TIMEOUT.as_millis()
                    ),
                    "--cluster.gossip-interval=100ms".to_owned(),
                    "--cluster.pushpull-interval=2s".to_owned(),
                    "--cluster.settle-timeout=5s".to_owned(),
                ];
                args.extend(
                    ports
                        .iter()
                        .filter(|p| **p != own)
                        .map(|p| format!("--cluster.peer=127.0.0.1:{p}")),
                );
                Self::start_with(&receiver, args)
            })
            .collect()
    }

    fn start_with_receiver(receiver_config: &str) -> Self {
        Self::start_with(receiver_config, vec!["--cluster.listen-address=".into()])
    }

    fn start_with(receiver_config: &str, cluster_args: Vec<String>) -> Self {
        let binary = require_binary("prometheus-alertmanager");
        let dir = instance_dir("alertmanager");
        make_dirs(dir.path(), &["conf", "data", "log"]);
        let port = crate::free_port();
        let conf = dir.path().join("conf/alertmanager.yml");
        let mut config = render(&template("alertmanager.yml"), &[]);
        if !config.ends_with('\n') {
            config.push('\n');
        }
        config.push_str(receiver_config);
        std::fs::write(&conf, config).expect("write alertmanager.yml");
        let mut args = vec![
            format!("--config.file={}", conf.display()),
            format!("--storage.path={}", dir.path().join("data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
        ];
        args.extend(cluster_args);
        let process = ServiceProcess::new(
            "alertmanager",
            binary,
            args,
            dir.path(),
            dir.path().join("log/stdout.log"),
        );
        Instance::launch(dir, AlertmanagerSpec { port }, process)
    }

    /// Base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.spec.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.spec.port
    }

    /// Posts alerts (`POST /api/v2/alerts`, a JSON array of alerts).
    pub async fn post_alerts(&self, alerts: &serde_json::Value) -> anyhow::Result<()> {
        let response = reqwest::Client::new()
            .post(format!("{}/api/v2/alerts", self.url()))
            .json(alerts)
            .send()
            .await?;
        if !response.status().is_success() {
            bail!(
                "Alertmanager answered {}: {}",
                response.status(),
                response.text().await?
            );
        }
        Ok(())
    }

    /// The peers this instance's cluster status lists (`GET /api/v2/status`), itself included.
    pub async fn cluster_peers(&self) -> anyhow::Result<usize> {
        let status: serde_json::Value = reqwest::Client::new()
            .get(format!("{}/api/v2/status", self.url()))
            .timeout(Duration::from_secs(10))
            .send()
            .await?
            .json()
            .await?;
        Ok(status["cluster"]["peers"].as_array().map_or(0, Vec::len))
    }

    /// The alerts Alertmanager holds (`GET /api/v2/alerts`).
    pub async fn alerts(&self) -> anyhow::Result<Vec<serde_json::Value>> {
        let response: serde_json::Value = reqwest::Client::new()
            .get(format!("{}/api/v2/alerts", self.url()))
            .timeout(Duration::from_secs(10))
            .send()
            .await?
            .json()
            .await?;
        Ok(response.as_array().cloned().unwrap_or_default())
    }
}
