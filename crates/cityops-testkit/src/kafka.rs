//! A Tansu (Kafka-protocol) broker instance, with topic, produce and consume helpers.

use crate::ServiceProcess;
use crate::instance::{Instance, ServiceSpec};
use crate::support::{cache_dir, instance_dir, make_dirs, port_open};
use anyhow::{Context, bail};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// The pinned Tansu release that `make deps` installs (see deploy/local/lib.sh).
const TANSU_VERSION: &str = "0.1.2";
/// The durable broker that `make deps-durable` builds (see deploy/local/lib.sh).
const NISSHI_VERSION: &str = "0.7.0-pre.2";

/// The durable broker binary: `CITYOPS_NISSHI_BIN`, else the one `make deps-durable` caches.
pub fn nisshi_binary() -> PathBuf {
    let path = std::env::var_os("CITYOPS_NISSHI_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_dir().join(format!("nisshi-{NISSHI_VERSION}/bin/nisshi")));
    assert!(
        path.is_file(),
        "the durable Kafka-protocol broker is not installed at {}: run `make deps-durable` in the repository root (about 12 minutes the first time)",
        path.display()
    );
    path
}

/// The Tansu binary: `CITYOPS_TANSU_BIN`, else the one `make deps` caches.
pub fn tansu_binary() -> PathBuf {
    let path = std::env::var_os("CITYOPS_TANSU_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_dir().join(format!("tansu-{TANSU_VERSION}/tansu")));
    assert!(
        path.is_file(),
        "the Tansu broker is not installed at {}: run `make deps` in the repository root",
        path.display()
    );
    path
}

/// The SCRAM user's password on a secured broker (listed in test-secrets.txt).
pub(crate) const SCRAM_PASSWORD: &str = "kafka-s3cret-Sơn-Trà";

/// Tansu on one port (and, when secured, its TLS front on another).
#[derive(Debug)]
pub struct KafkaSpec {
    port: u16,
    binary: PathBuf,
    secured: Option<KafkaSecured>,
}

/// What a secured broker adds: SASL/SCRAM-SHA-512 authentication, required by the broker, and
/// TLS on a front port. The durable broker parses `--cert`/`--key` but (0.7.0-pre.2) never
/// wraps its connections in TLS, so TLS is terminated in front of it by `socat`, as a TLS
/// load balancer would; clients see one TLS endpoint that demands SCRAM.
#[derive(Debug)]
pub struct KafkaSecured {
    /// The TLS port clients connect to (the broker advertises it).
    pub tls_port: u16,
    /// PEM of the CA that signed the front's certificate (for `IP:127.0.0.1`).
    pub ca_file: PathBuf,
    /// A user the broker knows (SCRAM-SHA-512).
    pub username: String,
    /// Its password.
    pub password: String,
    // The TLS front; stopped when the broker instance is dropped.
    _front: ServiceProcess,
}

impl ServiceSpec for KafkaSpec {
    const NAME: &'static str = "tansu";
    const STOP_GRACE: Duration = Duration::from_secs(10);
    const READY_TIMEOUT: Duration = Duration::from_secs(20);
    fn ready(&self) -> bool {
        match &self.secured {
            None => port_open(self.port) && metadata_ok(&self.client_settings()),
            Some(s) => {
                port_open(self.port)
                    && port_open(s.tls_port)
                    && metadata_ok(&self.client_settings())
            }
        }
    }
}

/// A running Kafka-protocol broker on 127.0.0.1: Tansu with in-memory storage ([`start`]),
/// whose data does not survive a restart, or its durable successor with SQLite storage
/// ([`start_durable`]), which keeps acknowledged records and committed offsets across a
/// restart or a kill -9.
///
/// [`start`]: KafkaBroker::start
/// [`start_durable`]: KafkaBroker::start_durable
pub type KafkaBroker = Instance<KafkaSpec>;

impl KafkaSpec {
    fn bootstrap(&self) -> String {
        match &self.secured {
            None => format!("127.0.0.1:{}", self.port),
            Some(s) => format!("127.0.0.1:{}", s.tls_port),
        }
    }

    fn client_settings(&self) -> Vec<(String, String)> {
        let mut settings = vec![("bootstrap.servers".to_owned(), self.bootstrap())];
        if let Some(s) = &self.secured {
            for (key, value) in [
                ("security.protocol", "SASL_SSL"),
                ("sasl.mechanism", "SCRAM-SHA-512"),
                ("sasl.username", s.username.as_str()),
                ("sasl.password", s.password.as_str()),
                ("ssl.ca.location", &s.ca_file.display().to_string()),
            ] {
                settings.push((key.to_owned(), value.to_owned()));
            }
        }
        settings
    }
}

impl KafkaBroker {
    /// Starts a fresh in-memory broker on a free port and waits until it answers metadata
    /// requests.
    pub fn start() -> Self {
        let port = crate::free_port();
        Self::start_with(tansu_binary(), "memory://tansu/", port, port)
    }

    /// Starts a fresh durable broker (SQLite in the instance directory) on a free port.
    pub fn start_durable() -> Self {
        let port = crate::free_port();
        Self::start_durable_advertising(port, port)
    }

    /// Starts a fresh durable broker listening on `port` that tells clients to reach it at
    /// `advertised` (after the bootstrap, every connection goes there): a [`FaultProxy`] on
    /// `advertised` forwarding to `port` puts itself between the broker and all its clients.
    ///
    /// [`FaultProxy`]: crate::FaultProxy
    pub fn start_durable_advertising(port: u16, advertised: u16) -> Self {
        // The SQLite path is relative to the working directory: the instance's data directory.
        Self::start_with(nisshi_binary(), "sqlite://broker.db", port, advertised)
    }

    fn start_with(binary: PathBuf, storage: &str, port: u16, advertised: u16) -> Self {
        let dir = instance_dir("tansu");
        make_dirs(dir.path(), &["data", "log"]);
        let process = ServiceProcess::new(
            "tansu",
            binary.clone(),
            broker_args(port, advertised, storage),
            &dir.path().join("data"),
            dir.path().join("log/stdout.log"),
        );
        Instance::launch(
            dir,
            KafkaSpec {
                port,
                binary,
                secured: None,
            },
            process,
        )
    }

    /// Starts a durable broker that demands SASL/SCRAM-SHA-512 over TLS (see [`KafkaSecured`]),
    /// with `topics` (name, partitions) created: the broker's own CLI cannot authenticate, so
    /// the user and the topics are made before authentication is switched on.
    pub fn start_durable_secured(topics: &[(&str, u32)]) -> Self {
        let binary = nisshi_binary();
        let socat = crate::support::require_binary("socat");
        let dir = instance_dir("tansu");
        make_dirs(dir.path(), &["data", "log", "tls"]);
        let certificates = crate::tls::make_certificates(&dir.path().join("tls"));
        let port = crate::free_port();
        let tls_port = crate::free_port();
        let broker_args = |advertised: u16, authentication: bool| {
            let mut args = broker_args(port, advertised, "sqlite://broker.db");
            if authentication {
                args.push("--authentication".into());
            }
            args
        };
        let (username, password) = ("cityops-ingest".to_owned(), SCRAM_PASSWORD.to_owned());
        // 1. Without authentication: the user and the topics.
        let mut setup = ServiceProcess::new(
            "tansu-setup",
            binary.clone(),
            broker_args(port, false),
            &dir.path().join("data"),
            dir.path().join("log/setup.log"),
        );
        setup.spawn();
        let plain = KafkaSpec {
            port,
            binary: binary.clone(),
            secured: None,
        };
        crate::support::try_wait_ready(&mut setup, "tansu", KafkaSpec::READY_TIMEOUT, || {
            plain.ready()
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let broker_url = format!("tcp://127.0.0.1:{port}");
        let run = |args: &[&str]| {
            let out = Command::new(&binary)
                .args(args)
                .args(["--broker", &broker_url])
                .output()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
            assert!(
                out.status.success(),
                "{} {} failed: {}{}",
                binary.display(),
                args.first().copied().unwrap_or_default(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&[
            "user",
            "create",
            &username,
            &password,
            "--mechanism",
            "scram512",
        ]);
        for (topic, partitions) in topics {
            run(&[
                "topic",
                "create",
                topic,
                "--partitions",
                &partitions.to_string(),
            ]);
        }
        setup.stop(KafkaSpec::STOP_GRACE);
        // 2. The TLS front, then the broker demanding SCRAM and advertising the front.
        let mut front = ServiceProcess::new(
            "kafka-tls-front",
            socat,
            vec![
                format!(
                    "OPENSSL-LISTEN:{tls_port},bind=127.0.0.1,reuseaddr,fork,cert={},key={},verify=0",
                    certificates.cert_file.display(),
                    certificates.key_file.display()
                ),
                format!("TCP:127.0.0.1:{port}"),
            ],
            dir.path(),
            dir.path().join("log/tls-front.log"),
        );
        front.spawn();
        let process = ServiceProcess::new(
            "tansu",
            binary.clone(),
            broker_args(tls_port, true),
            &dir.path().join("data"),
            dir.path().join("log/stdout.log"),
        );
        let secured = KafkaSecured {
            tls_port,
            ca_file: certificates.ca_file,
            username,
            password,
            _front: front,
        };
        Instance::launch(
            dir,
            KafkaSpec {
                port,
                binary,
                secured: Some(secured),
            },
            process,
        )
    }

    /// The TLS port, CA file and credentials of a secured broker.
    pub fn secured(&self) -> Option<&KafkaSecured> {
        self.spec.secured.as_ref()
    }

    /// `bootstrap.servers` for clients (the TLS front of a secured broker).
    pub fn bootstrap(&self) -> String {
        self.spec.bootstrap()
    }

    /// librdkafka settings a client needs: `bootstrap.servers`, and for a secured broker the
    /// TLS and SASL ones with the password.
    pub fn client_settings(&self) -> Vec<(String, String)> {
        self.spec.client_settings()
    }

    /// Creates a topic with `partitions` partitions (Tansu does not auto-create topics).
    pub fn create_topic(&self, name: &str, partitions: u32) -> anyhow::Result<()> {
        let out = Command::new(&self.spec.binary)
            .args([
                "topic",
                "create",
                name,
                "--partitions",
                &partitions.to_string(),
                "--broker",
            ])
            .arg(format!("tcp://127.0.0.1:{}", self.spec.port))
            .output()
            .context("run tansu topic create")?;
        if !out.status.success() {
            bail!(
                "creating topic {name} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// A producer with acks from all replicas, for tests.
    pub fn producer(&self) -> anyhow::Result<FutureProducer> {
        Ok(client_config(&self.client_settings())
            .set("acks", "all")
            .set("message.timeout.ms", "30000")
            .set("linger.ms", "5")
            .create()?)
    }

    /// Produces one record and returns its (partition, offset).
    pub async fn produce(
        &self,
        producer: &FutureProducer,
        topic: &str,
        key: &[u8],
        payload: &[u8],
    ) -> anyhow::Result<(i32, i64)> {
        let record = FutureRecord::to(topic).key(key).payload(payload);
        let delivery = producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| anyhow::anyhow!("produce to {topic} failed: {e}"))?;
        Ok((delivery.partition, delivery.offset))
    }

    /// Produces every (topic, key, payload) with the records in flight together, and waits
    /// for each acknowledgement.
    pub async fn produce_all(
        &self,
        producer: &FutureProducer,
        messages: &[(impl AsRef<str>, impl AsRef<[u8]>, impl AsRef<[u8]>)],
    ) -> anyhow::Result<()> {
        let mut deliveries = Vec::with_capacity(messages.len());
        for (topic, key, payload) in messages {
            let record = FutureRecord::to(topic.as_ref())
                .key(key.as_ref())
                .payload(payload.as_ref());
            let delivery = producer
                .send_result(record)
                .map_err(|(e, _)| anyhow::anyhow!("produce to {} failed: {e}", topic.as_ref()))?;
            deliveries.push(delivery);
        }
        for delivery in deliveries {
            delivery
                .await
                .context("the producer went away")?
                .map_err(|(e, _)| anyhow::anyhow!("a record was not acknowledged: {e}"))?;
        }
        Ok(())
    }

    /// Produces one record to partition `partition` of `topic`; returns its offset.
    pub async fn produce_to(
        &self,
        producer: &FutureProducer,
        topic: &str,
        partition: i32,
        payload: &[u8],
    ) -> anyhow::Result<i64> {
        let record = FutureRecord::<(), [u8]>::to(topic)
            .partition(partition)
            .payload(payload);
        let delivery = producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| anyhow::anyhow!("produce to {topic}/{partition} failed: {e}"))?;
        Ok(delivery.offset)
    }

    /// The offsets consumer group `group` committed on `topics` (name, partitions): the next
    /// offset to read of each partition, -1 where nothing is committed. (Tansu's in-memory
    /// broker misreports high watermarks, so tests compare these with what they produced.)
    pub fn committed_offsets(
        &self,
        group: &str,
        topics: &[(&str, i32)],
    ) -> anyhow::Result<Vec<(String, i32, i64)>> {
        // Asking for committed offsets does not join the group.
        let consumer: BaseConsumer = client_config(&self.client_settings())
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()?;
        let mut wanted = TopicPartitionList::new();
        for (topic, partitions) in topics {
            for partition in 0..*partitions {
                wanted.add_partition(topic, partition);
            }
        }
        let committed = consumer
            .committed_offsets(wanted, Duration::from_secs(30))
            .context("fetch committed offsets")?;
        Ok(committed
            .elements()
            .iter()
            .map(|e| {
                let offset = match e.offset() {
                    Offset::Offset(offset) => offset,
                    _ => -1,
                };
                (e.topic().to_owned(), e.partition(), offset)
            })
            .collect())
    }

    /// Reads every partition of `topic` from the beginning until `count` records arrived or
    /// `timeout` passed; returns (partition, offset, payload) in arrival order.
    pub fn consume(
        &self,
        topic: &str,
        partitions: i32,
        count: usize,
        timeout: Duration,
    ) -> anyhow::Result<Vec<(i32, i64, Vec<u8>)>> {
        let consumer: BaseConsumer = client_config(&self.client_settings())
            .set("group.id", format!("testkit-{}", crate::free_port()))
            .set("enable.auto.commit", "false")
            // Smaller fetches: the durable broker stalls on large backlog fetches otherwise.
            .set("fetch.max.bytes", "1048576")
            .set("max.partition.fetch.bytes", "262144")
            .create()?;
        let mut assignment = TopicPartitionList::new();
        for partition in 0..partitions {
            assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
        }
        consumer.assign(&assignment)?;
        let deadline = Instant::now() + timeout;
        let mut records = Vec::new();
        while records.len() < count && Instant::now() < deadline {
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(message)) => records.push((
                    message.partition(),
                    message.offset(),
                    message.payload().unwrap_or_default().to_vec(),
                )),
                Some(Err(e)) => bail!("consume from {topic} failed: {e}"),
                None => {}
            }
        }
        Ok(records)
    }
}

/// The broker's command line: listening on `port`, telling clients to come to `advertised`.
fn broker_args(port: u16, advertised: u16, storage: &str) -> Vec<String> {
    vec![
        "broker".into(),
        "--listener-url".into(),
        format!("tcp://127.0.0.1:{port}"),
        "--advertised-listener-url".into(),
        format!("tcp://127.0.0.1:{advertised}"),
        "--storage-engine".into(),
        storage.into(),
    ]
}

fn client_config(settings: &[(String, String)]) -> ClientConfig {
    let mut config = ClientConfig::new();
    for (key, value) in settings {
        config.set(key, value);
    }
    config
}

/// Asks for metadata with exactly these client settings; the error if none came in `timeout`.
pub fn metadata_with(settings: &[(String, String)], timeout: Duration) -> anyhow::Result<usize> {
    let client: BaseConsumer = client_config(settings).create()?;
    Ok(client.fetch_metadata(None, timeout)?.topics().len())
}

fn metadata_ok(settings: &[(String, String)]) -> bool {
    let client: Result<BaseConsumer, _> = client_config(settings).create();
    client.is_ok_and(|c| c.fetch_metadata(None, Duration::from_secs(2)).is_ok())
}
