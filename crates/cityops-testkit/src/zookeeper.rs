//! A ZooKeeper server (Debian's `zookeeper` package, run as a plain Java process), for
//! ClickHouse replication and `ON CLUSTER` DDL.

use crate::ServiceProcess;
use crate::instance::{Instance, ServiceSpec};
use crate::support::{instance_dir, make_dirs, render, template};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where Debian's package puts ZooKeeper's classes.
const ZOOKEEPER_JAR: &str = "/usr/share/java/zookeeper.jar";

/// ZooKeeper on one client port.
#[derive(Debug)]
pub struct ZooKeeperSpec {
    port: u16,
}

impl ServiceSpec for ZooKeeperSpec {
    const NAME: &'static str = "zookeeper";
    const STOP_GRACE: Duration = Duration::from_secs(10);
    // A JVM start on a busy 2-core machine.
    const READY_TIMEOUT: Duration = Duration::from_secs(60);
    fn ready(&self) -> bool {
        // `ruok` answers `imok` before sessions are served; ClickHouse 18.16 connecting then
        // fails its handshake (and its DDL worker can crash on it). `srvr` names the mode only
        // once the server serves.
        four_letter_word(self.port, "srvr").is_some_and(|answer| answer.contains("Mode: "))
    }
}

/// A standalone ZooKeeper on 127.0.0.1, data in its own directory.
pub type ZooKeeper = Instance<ZooKeeperSpec>;

/// The `java` and class path that run ZooKeeper, or what to install.
pub fn zookeeper_command() -> Result<(PathBuf, String), String> {
    let java = crate::find_binary("java");
    match java {
        Ok(java) if Path::new(ZOOKEEPER_JAR).is_file() => Ok((java, ZOOKEEPER_JAR.to_owned())),
        _ => Err(
            "zookeeper is not installed: run `make deps` in the repository root (it installs Debian's zookeeper package)"
                .to_owned(),
        ),
    }
}

impl ZooKeeper {
    /// Starts a fresh ZooKeeper on a free port and waits until it answers `ruok`.
    pub fn start() -> Self {
        let (java, class_path) = zookeeper_command().unwrap_or_else(|e| panic!("{e}"));
        let dir = instance_dir("zookeeper");
        make_dirs(dir.path(), &["conf", "data", "log"]);
        let port = crate::free_port();
        let values = [
            ("ZK_PORT", port.to_string()),
            ("DATA_DIR", dir.path().join("data").display().to_string()),
        ];
        let config = dir.path().join("conf/zoo.cfg");
        std::fs::write(&config, render(&template("zookeeper/zoo.cfg"), &values))
            .expect("write zoo.cfg");
        let process = ServiceProcess::new(
            "zookeeper",
            java,
            vec![
                "-Xmx256m".to_owned(),
                "-XX:+UseSerialGC".to_owned(),
                "-cp".to_owned(),
                class_path,
                "org.apache.zookeeper.server.quorum.QuorumPeerMain".to_owned(),
                config.display().to_string(),
            ],
            &dir.path().join("data"),
            dir.path().join("log/stdout.log"),
        );
        Instance::launch(dir, ZooKeeperSpec { port }, process)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.spec.port
    }
}

/// Sends one of ZooKeeper's four-letter commands and returns the answer.
fn four_letter_word(port: u16, word: &str) -> Option<String> {
    let mut stream =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(500))
            .ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream.write_all(word.as_bytes()).ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    Some(answer)
}
