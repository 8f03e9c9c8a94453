//! An Alertmanager instance, with API v2 helpers.

use crate::ServiceProcess;
use crate::support::{
    http_get, instance_dir, make_dirs, render, require_binary, template, wait_ready,
};
use anyhow::bail;
use std::time::Duration;
use tempfile::TempDir;

/// A running Alertmanager on 127.0.0.1 (clustering off) with `deploy/local/alertmanager.yml`.
#[derive(Debug)]
pub struct Alertmanager {
    dir: TempDir,
    port: u16,
    process: ServiceProcess,
}

impl Alertmanager {
    /// Starts a fresh instance on a free port and waits until it is ready.
    pub fn start() -> Self {
        let binary = require_binary("prometheus-alertmanager");
        let dir = instance_dir("alertmanager");
        make_dirs(dir.path(), &["conf", "data", "log"]);
        let port = crate::free_port();
        let conf = dir.path().join("conf/alertmanager.yml");
        std::fs::write(&conf, render(&template("alertmanager.yml"), &[]))
            .expect("write alertmanager.yml");
        let process = ServiceProcess::new(
            "alertmanager",
            binary,
            vec![
                format!("--config.file={}", conf.display()),
                format!("--storage.path={}", dir.path().join("data").display()),
                format!("--web.listen-address=127.0.0.1:{port}"),
                "--cluster.listen-address=".into(),
            ],
            dir.path(),
            dir.path().join("log/stdout.log"),
        );
        let mut alertmanager = Alertmanager { dir, port, process };
        alertmanager.start_again();
        alertmanager
    }

    /// Starts the stopped instance again with the same port and data.
    pub fn start_again(&mut self) {
        self.process.spawn();
        let url = format!("{}/-/ready", self.url());
        wait_ready(
            &mut self.process,
            "alertmanager",
            Duration::from_secs(30),
            || matches!(http_get(&url), Some((200, _))),
        );
    }

    /// Stops it (SIGTERM).
    pub fn stop(&mut self) {
        self.process.stop(Duration::from_secs(10));
    }

    /// Stops and starts it.
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// kill -9, as a crash.
    pub fn kill9(&mut self) {
        self.process.kill9();
    }

    /// Whether the process is alive.
    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// The pid while running.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// Base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The instance's directory.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
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
