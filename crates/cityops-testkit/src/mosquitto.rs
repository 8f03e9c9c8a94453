//! A mosquitto instance, with MQTT publish and subscribe helpers.

use crate::ServiceProcess;
use crate::instance::{Instance, ServiceSpec};
use crate::support::{
    instance_dir, make_dirs, port_open, render, require_binary, template, wait_until,
};
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

/// mosquitto on one port (and a TLS port when secured).
#[derive(Debug)]
pub struct MosquittoSpec {
    port: u16,
    secured: Option<Secured>,
}

/// What a secured instance adds: a TLS listener and a password file.
#[derive(Debug, Clone)]
pub struct Secured {
    /// The TLS listener's port on 127.0.0.1.
    pub tls_port: u16,
    /// PEM of the CA that signed the broker's certificate (for `IP:127.0.0.1`).
    pub ca_file: std::path::PathBuf,
    /// The ingest's user: it may read [`SECURED_TOPICS`] and nothing else.
    pub username: String,
    /// Its password.
    pub password: String,
    /// The sensors' user: it may write [`SECURED_TOPICS`] and `other/#`, and read nothing.
    pub publisher_username: String,
    /// Its password.
    pub publisher_password: String,
}

/// The ingest user's password on a secured instance (listed in test-secrets.txt).
pub(crate) const INGEST_PASSWORD: &str = "s3cret-Đà-Nẵng";
/// The sensors' user's password on a secured instance (listed in test-secrets.txt).
pub(crate) const PUBLISHER_PASSWORD: &str = "pub-s3cret-Hải-Châu";

/// The topics a secured instance's ACL lets the ingest user read.
pub const SECURED_TOPICS: &str = "danang/#";

impl ServiceSpec for MosquittoSpec {
    const NAME: &'static str = "mosquitto";
    const STOP_GRACE: Duration = Duration::from_secs(10);
    const READY_TIMEOUT: Duration = Duration::from_secs(15);
    fn ready(&self) -> bool {
        port_open(self.port) && self.secured.as_ref().is_none_or(|s| port_open(s.tls_port))
    }
}

/// A running mosquitto broker on 127.0.0.1 with persistence in its own directory.
pub type Mosquitto = Instance<MosquittoSpec>;

impl Mosquitto {
    /// Starts a fresh instance on a free port and waits until it accepts connections.
    pub fn start() -> Self {
        Mosquitto::launch_with(|_| None, "")
    }

    /// Starts a fresh instance with `extra` appended to its config (e.g. limits a test
    /// needs).
    pub fn start_with_config(extra: &str) -> Self {
        Mosquitto::launch_with(|_| None, extra)
    }

    /// Starts an instance that requires a user name and password (a mosquitto password file),
    /// applies an ACL (the ingest user reads only [`SECURED_TOPICS`]) and also listens with
    /// TLS, with a CA and server certificate made by `openssl` for this instance.
    pub fn start_secured() -> Self {
        Mosquitto::launch_with(secure, "")
    }

    /// The TLS port, CA file and credentials of a secured instance.
    pub fn secured(&self) -> Option<&Secured> {
        self.spec.secured.as_ref()
    }

    /// Launches on fresh free ports, up to three times: a port chosen free can be taken by
    /// another test's service before mosquitto binds it.
    fn launch_with(
        secure: impl Fn(&std::path::Path) -> Option<(Secured, String)>,
        extra: &str,
    ) -> Self {
        let mut failures = Vec::new();
        for _ in 0..3 {
            match Mosquitto::try_launch_with(&secure, extra) {
                Ok(instance) => return instance,
                Err(message) => failures.push(message),
            }
        }
        panic!(
            "mosquitto did not start in three attempts:\n{}",
            failures.join("\n")
        );
    }

    fn try_launch_with(
        secure: &impl Fn(&std::path::Path) -> Option<(Secured, String)>,
        extra: &str,
    ) -> Result<Self, String> {
        let binary = require_binary("mosquitto");
        let dir = instance_dir("mosquitto");
        make_dirs(dir.path(), &["conf", "data", "log"]);
        let port = crate::free_port();
        let conf = dir.path().join("conf/mosquitto.conf");
        let secured = secure(dir.path());
        let mut text = render(
            &template("mosquitto.conf"),
            &[
                ("MQTT_PORT", port.to_string()),
                ("DATA_DIR", dir.path().join("data").display().to_string()),
                ("LOG_DIR", dir.path().join("log").display().to_string()),
                ("RUN_USER", current_user()),
            ],
        );
        if let Some((_, settings)) = &secured {
            text = text.replace("allow_anonymous true\n", "");
            text.push_str(settings);
        }
        text.push('\n');
        text.push_str(extra);
        text.push('\n');
        std::fs::write(&conf, text).expect("write mosquitto.conf");
        let process = ServiceProcess::new(
            "mosquitto",
            binary,
            vec!["-c".into(), conf.display().to_string()],
            dir.path(),
            dir.path().join("log/stdout.log"),
        );
        let secured = secured.map(|(s, _)| s);
        Instance::try_launch(dir, MosquittoSpec { port, secured }, process)
    }

    /// Makes the broker write its persistence database now (SIGUSR1, as its periodic autosave
    /// does) and waits until the new file has replaced the old one. A later crash (`kill9`)
    /// restarts the broker from exactly this state.
    pub fn save_now(&self) -> anyhow::Result<()> {
        use std::os::unix::fs::MetadataExt;
        let db = self.dir().join("data/mosquitto.db");
        let identity = || {
            std::fs::metadata(&db)
                .ok()
                .map(|m| (m.ino(), m.mtime_nsec()))
        };
        let before = identity();
        let pid = self.pid().context("mosquitto is not running")?;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGUSR1,
        )
        .context("signal mosquitto")?;
        // mosquitto writes `mosquitto.db.new` and renames it over the old file.
        if !wait_until(Duration::from_secs(60), || {
            identity().is_some_and(|now| Some(now) != before)
        }) {
            bail!("mosquitto did not replace {} within 60 s", db.display());
        }
        Ok(())
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

    /// Publishes each `(topic, payload)` at QoS 1 over one connection and waits for every
    /// acknowledgement (a round of many devices, each on its own topic).
    pub async fn publish_many(&self, messages: &[(String, Vec<u8>)]) -> anyhow::Result<()> {
        let id = format!("testkit-pub-{}", crate::free_port());
        let (client, mut events) = AsyncClient::new(self.options(&id), 100);
        let mut acked = 0;
        let mut sent = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while acked < messages.len() {
            while sent < messages.len() && sent - acked < 10 {
                let (topic, payload) = &messages[sent];
                client
                    .publish(topic, QoS::AtLeastOnce, false, payload.clone())
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

    /// Publishes each `(topic, payload)` at QoS 0 over one connection (the broker neither
    /// acknowledges nor keeps them) and disconnects once every one is written: the broker reads
    /// them, in order, before the DISCONNECT.
    pub async fn publish_qos0_many(&self, messages: &[(String, Vec<u8>)]) -> anyhow::Result<()> {
        let id = format!("testkit-pub0-{}", crate::free_port());
        let (client, mut events) = AsyncClient::new(self.options(&id), 100);
        let (mut queued, mut written) = (0, 0);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        async fn poll(
            events: &mut rumqttc::EventLoop,
            deadline: tokio::time::Instant,
        ) -> anyhow::Result<Event> {
            tokio::time::timeout_at(deadline, events.poll())
                .await
                .context("timed out writing QoS 0 messages")?
                .context("the broker connection failed")
        }
        while written < messages.len() {
            // Fewer queued than the request channel holds: publishing never waits on a poll.
            while queued < messages.len() && queued - written < 50 {
                let (topic, payload) = &messages[queued];
                client
                    .publish(topic, QoS::AtMostOnce, false, payload.clone())
                    .await?;
                queued += 1;
            }
            if let Event::Outgoing(rumqttc::Outgoing::Publish(_)) =
                poll(&mut events, deadline).await?
            {
                written += 1;
            }
        }
        client.disconnect().await?;
        while !matches!(
            poll(&mut events, deadline).await?,
            Event::Outgoing(rumqttc::Outgoing::Disconnect)
        ) {}
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
                if let Event::Incoming(Packet::Publish(p)) = event
                    && tx
                        .send((p.topic.clone(), p.payload.to_vec()))
                        .await
                        .is_err()
                {
                    break;
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

/// Makes the CA, the server certificate (for 127.0.0.1 and localhost), the password file and
/// the ACL of a secured instance in `dir/conf`; returns them with the config lines that use
/// them.
fn secure(dir: &std::path::Path) -> Option<(Secured, String)> {
    let passwd = require_binary("mosquitto_passwd");
    let conf = dir.join("conf");
    let certificates = crate::tls::make_certificates(&conf);
    let (username, password) = ("cityops-ingest".to_owned(), INGEST_PASSWORD.to_owned());
    let (publisher_username, publisher_password) =
        ("city-sensors".to_owned(), PUBLISHER_PASSWORD.to_owned());
    let passwords = conf.join("passwords");
    for (i, (user, pass)) in [
        (&username, &password),
        (&publisher_username, &publisher_password),
    ]
    .into_iter()
    .enumerate()
    {
        let mut args = vec!["-b"];
        if i == 0 {
            args.push("-c");
        }
        let out = std::process::Command::new(&passwd)
            .args(&args)
            .arg(&passwords)
            .args([user.as_str(), pass.as_str()])
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", passwd.display()));
        assert!(
            out.status.success(),
            "mosquitto_passwd failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The ingest user may only read the city's topics; the sensors' user may only write them.
    std::fs::write(
        conf.join("acl"),
        format!(
            "user {username}\ntopic read {SECURED_TOPICS}\n\nuser {publisher_username}\ntopic write {SECURED_TOPICS}\ntopic write other/#\n"
        ),
    )
    .expect("write the ACL file");
    let tls_port = crate::free_port();
    let settings = format!(
        "allow_anonymous false\npassword_file {passwords}\nacl_file {conf}/acl\nlistener {tls_port} 127.0.0.1\ncafile {ca}\ncertfile {cert}\nkeyfile {key}\n",
        passwords = passwords.display(),
        conf = conf.display(),
        ca = certificates.ca_file.display(),
        cert = certificates.cert_file.display(),
        key = certificates.key_file.display(),
    );
    Some((
        Secured {
            tls_port,
            ca_file: certificates.ca_file,
            username,
            password,
            publisher_username,
            publisher_password,
        },
        settings,
    ))
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
