//! A Prometheus instance, with query and scrape-target helpers.

use crate::ServiceProcess;
use crate::instance::{Instance, ServiceSpec};
use crate::support::{instance_dir, make_dirs, ready_endpoint, render, require_binary, template};
use anyhow::{Context, bail};
use std::time::Duration;

/// Prometheus on one port.
#[derive(Debug)]
pub struct PrometheusSpec {
    port: u16,
}

impl ServiceSpec for PrometheusSpec {
    const NAME: &'static str = "prometheus";
    const STOP_GRACE: Duration = Duration::from_secs(10);
    const READY_TIMEOUT: Duration = Duration::from_secs(30);
    fn ready(&self) -> bool {
        ready_endpoint(self.port)
    }
}

/// A running Prometheus on 127.0.0.1 with the config of `deploy/local/prometheus.yml`.
pub type Prometheus = Instance<PrometheusSpec>;

impl Prometheus {
    /// Starts a fresh Prometheus; alerts go to the Alertmanager on `alertmanager_port`, if any.
    pub fn start(alertmanager_port: Option<u16>) -> Self {
        let binary = require_binary("prometheus");
        let dir = instance_dir("prometheus");
        make_dirs(dir.path(), &["conf/targets", "data", "log"]);
        let port = crate::free_port();
        let conf = dir.path().join("conf/prometheus.yml");
        let text = render(
            &template("prometheus.yml"),
            &[
                ("PROMETHEUS_PORT", port.to_string()),
                // Port 9 (discard) when no Alertmanager: sends fail quietly.
                (
                    "ALERTMANAGER_PORT",
                    alertmanager_port.unwrap_or(9).to_string(),
                ),
                ("CONF_DIR", dir.path().join("conf").display().to_string()),
                ("REPO_DIR", crate::repo_root().display().to_string()),
            ],
        );
        std::fs::write(&conf, text).expect("write prometheus.yml");
        let process = ServiceProcess::new(
            "prometheus",
            binary,
            vec![
                format!("--config.file={}", conf.display()),
                format!("--storage.tsdb.path={}", dir.path().join("data").display()),
                format!("--web.listen-address=127.0.0.1:{port}"),
                "--web.enable-lifecycle".into(),
            ],
            dir.path(),
            dir.path().join("log/stdout.log"),
        );
        Instance::launch(dir, PrometheusSpec { port }, process)
    }

    /// Base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.spec.port)
    }

    /// Adds a scrape target (`host:port` serving `/metrics`) to the `cityops` job; Prometheus
    /// picks it up within 5 s.
    pub fn add_target(&self, name: &str, address: &str) -> anyhow::Result<()> {
        let file = self.dir().join(format!("conf/targets/{name}.json"));
        let body =
            serde_json::json!([{ "targets": [address], "labels": { "instance_name": name } }]);
        std::fs::write(&file, body.to_string()).with_context(|| format!("write {}", file.display()))
    }

    /// Runs an instant PromQL query and returns `data.result`.
    pub async fn query(&self, expr: &str) -> anyhow::Result<Vec<serde_json::Value>> {
        let response: serde_json::Value = reqwest::Client::new()
            .get(format!("{}/api/v1/query", self.url()))
            .query(&[("query", expr)])
            .send()
            .await?
            .json()
            .await?;
        if response["status"] != "success" {
            bail!("query {expr} failed: {response}");
        }
        Ok(response["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }
}
