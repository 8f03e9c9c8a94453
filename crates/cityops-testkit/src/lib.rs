//! The test kit: starts fresh, isolated instances of the real services cityops works with —
//! mosquitto, ClickHouse (one server or a cluster with ZooKeeper), Tansu (Kafka protocol),
//! Prometheus and Alertmanager — on free ports
//! (and a headless Chromium for web pages)
//! with temporary directories, waits until each answers, and stops each by pid when dropped
//! (also when the test panics). Tests can restart or kill -9 a service mid-test, or put a
//! [`FaultProxy`] in front of one (delays, stalls, cut connections).
//!
//! Setup failures panic with a message saying what to run (`make deps`): a missing service
//! fails the test loudly, it never skips it. Helpers that talk to a service return
//! `anyhow::Result` so that tests can assert on failures (a query while ClickHouse is down).
//!
//! Dev-dependency only: no production crate may depend on it.

mod alertmanager;
mod browser;
mod clickhouse;
mod fault_proxy;
mod instance;
mod kafka;
mod logs;
mod mosquitto;
mod mqtt_proxy;
mod process;
mod prometheus;
mod support;
mod tls;
mod zookeeper;

pub use alertmanager::{Alertmanager, AlertmanagerSpec, CLUSTER_PEER_TIMEOUT};
pub use browser::{Browser, Element, png_size, screenshot_dir};
pub use clickhouse::{ClickHouseCluster, ClickHouseServer, ClickHouseSpec};
pub use fault_proxy::FaultProxy;
pub use instance::{Instance, ServiceSpec};
pub use kafka::{KafkaBroker, KafkaSecured, KafkaSpec, metadata_with, nisshi_binary, tansu_binary};
pub use logs::{
    KeepLogs, LOG_DIR_ENV, TEST_SECRETS, keep_log, keep_logs_under, keep_output, test_secrets,
};
pub use mosquitto::{Mosquitto, MosquittoSpec, MqttSubscription, SECURED_TOPICS, Secured};
pub use mqtt_proxy::MqttProxy;
pub use process::ServiceProcess;
pub use prometheus::{Prometheus, PrometheusSpec};
pub use support::{cache_dir, find_binary, free_port, repo_root};
pub use tls::{TestCertificates, make_certificates};
pub use zookeeper::{ZooKeeper, ZooKeeperSpec, zookeeper_command};
