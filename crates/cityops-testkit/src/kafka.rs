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

/// Tansu on one port.
#[derive(Debug)]
pub struct KafkaSpec {
    port: u16,
    binary: PathBuf,
}

impl ServiceSpec for KafkaSpec {
    const NAME: &'static str = "tansu";
    const STOP_GRACE: Duration = Duration::from_secs(10);
    const READY_TIMEOUT: Duration = Duration::from_secs(20);
    fn ready(&self) -> bool {
        port_open(self.port) && metadata_ok(&format!("127.0.0.1:{}", self.port))
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

impl KafkaBroker {
    /// Starts a fresh in-memory broker on a free port and waits until it answers metadata
    /// requests.
    pub fn start() -> Self {
        Self::start_with(tansu_binary(), "memory://tansu/")
    }

    /// Starts a fresh durable broker (SQLite in the instance directory) on a free port.
    pub fn start_durable() -> Self {
        // The SQLite path is relative to the working directory: the instance's data directory.
        Self::start_with(nisshi_binary(), "sqlite://broker.db")
    }

    fn start_with(binary: PathBuf, storage: &str) -> Self {
        let dir = instance_dir("tansu");
        make_dirs(dir.path(), &["data", "log"]);
        let port = crate::free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let process = ServiceProcess::new(
            "tansu",
            binary.clone(),
            vec![
                "broker".into(),
                "--listener-url".into(),
                url.clone(),
                "--advertised-listener-url".into(),
                url,
                "--storage-engine".into(),
                storage.into(),
            ],
            &dir.path().join("data"),
            dir.path().join("log/stdout.log"),
        );
        Instance::launch(dir, KafkaSpec { port, binary }, process)
    }

    /// `bootstrap.servers` for clients.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.spec.port)
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
        Ok(ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
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
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
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
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
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

fn metadata_ok(bootstrap: &str) -> bool {
    let client: Result<BaseConsumer, _> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create();
    client.is_ok_and(|c| c.fetch_metadata(None, Duration::from_secs(2)).is_ok())
}
