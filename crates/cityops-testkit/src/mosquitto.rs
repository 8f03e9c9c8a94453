//! A mosquitto instance, with MQTT publish and subscribe helpers.

use crate::ServiceProcess;
use crate::instance::{Instance, ServiceSpec};
use crate::support::{instance_dir, make_dirs, port_open, render, require_binary, template};
use anyhow::{Context, bail};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::time::Duration;
use tokio::sync::mpsc;

/// The name of the user running the tests: mosquitto started as root switches to the user
/// named in its config, which must own the instance directory.
fn current_user() -> String {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map_or_else(|| "root".to_owned(), |u| u.name)
}

/// mosquitto on one port.
#[derive(Debug)]
pub struct MosquittoSpec {
    port: u16,
}

impl ServiceSpec for MosquittoSpec {
    const NAME: &'static str = "mosquitto";
    const STOP_GRACE: Duration = Duration::from_secs(10);
    const READY_TIMEOUT: Duration = Duration::from_secs(15);
    fn ready(&self) -> bool {
        port_open(self.port)
    }
}

/// A running mosquitto broker on 127.0.0.1 with persistence in its own directory.
pub type Mosquitto = Instance<MosquittoSpec>;

impl Mosquitto {
    /// Starts a fresh instance on a free port and waits until it accepts connections.
    pub fn start() -> Self {
        let binary = require_binary("mosquitto");
        let dir = instance_dir("mosquitto");
        make_dirs(dir.path(), &["conf", "data", "log"]);
        let port = crate::free_port();
        let conf = dir.path().join("conf/mosquitto.conf");
        let text = render(
            &template("mosquitto.conf"),
            &[
                ("MQTT_PORT", port.to_string()),
                ("DATA_DIR", dir.path().join("data").display().to_string()),
                ("LOG_DIR", dir.path().join("log").display().to_string()),
                ("RUN_USER", current_user()),
            ],
        );
        std::fs::write(&conf, text).expect("write mosquitto.conf");
        let process = ServiceProcess::new(
            "mosquitto",
            binary,
            vec!["-c".into(), conf.display().to_string()],
            dir.path(),
            dir.path().join("log/stdout.log"),
        );
        Instance::launch(dir, MosquittoSpec { port }, process)
    }

    /// The MQTT port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.spec.port
    }

    fn options(&self, client_id: &str) -> MqttOptions {
        let mut options = MqttOptions::new(client_id, "127.0.0.1", self.spec.port);
        options.set_keep_alive(Duration::from_secs(5));
        options
    }

    /// Publishes each payload to `topic` at QoS 1 and returns once the broker acknowledged all.
    pub async fn publish(&self, topic: &str, payloads: &[Vec<u8>]) -> anyhow::Result<()> {
        let id = format!("testkit-pub-{}", crate::free_port());
        let (client, mut events) = AsyncClient::new(self.options(&id), 100);
        let mut acked = 0;
        let mut sent = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while acked < payloads.len() {
            // Keep at most 10 unacknowledged: mosquitto's inflight window is 20.
            while sent < payloads.len() && sent - acked < 10 {
                client
                    .publish(topic, QoS::AtLeastOnce, false, payloads[sent].clone())
                    .await?;
                sent += 1;
            }
            let event = tokio::time::timeout_at(deadline, events.poll())
                .await
                .context("timed out waiting for PUBACKs")??;
            if let Event::Incoming(Packet::PubAck(_)) = event {
                acked += 1;
            }
        }
        client.disconnect().await?;
        Ok(())
    }

    /// Subscribes to `filter` at QoS 1; returns once the broker confirmed the subscription.
    pub async fn subscribe(&self, filter: &str) -> anyhow::Result<MqttSubscription> {
        let id = format!("testkit-sub-{}", crate::free_port());
        let (client, mut events) = AsyncClient::new(self.options(&id), 100);
        client.subscribe(filter, QoS::AtLeastOnce).await?;
        loop {
            let event = tokio::time::timeout(Duration::from_secs(10), events.poll())
                .await
                .context("timed out waiting for SUBACK")??;
            match event {
                Event::Incoming(Packet::SubAck(ack)) => {
                    if ack
                        .return_codes
                        .iter()
                        .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
                    {
                        bail!("the broker refused the subscription to {filter}");
                    }
                    break;
                }
                _ => continue,
            }
        }
        let (tx, rx) = mpsc::channel(10_000);
        let task = tokio::spawn(async move {
            while let Ok(event) = events.poll().await {
                if let Event::Incoming(Packet::Publish(p)) = event {
                    if tx
                        .send((p.topic.clone(), p.payload.to_vec()))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        });
        Ok(MqttSubscription {
            _client: client,
            rx,
            task,
        })
    }
}

/// Messages received on a subscription.
#[derive(Debug)]
pub struct MqttSubscription {
    _client: AsyncClient,
    rx: mpsc::Receiver<(String, Vec<u8>)>,
    task: tokio::task::JoinHandle<()>,
}

impl MqttSubscription {
    /// The next message (topic, payload), or `None` after `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Option<(String, Vec<u8>)> {
        tokio::time::timeout(timeout, self.rx.recv())
            .await
            .ok()
            .flatten()
    }
}

impl Drop for MqttSubscription {
    fn drop(&mut self) {
        self.task.abort();
    }
}
