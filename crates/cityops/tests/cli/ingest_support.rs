//! What the service proofs share (the ingest's of every source, the alerter's): the running
//! binary, its metrics endpoint, and the proof messages' time base.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The start of every proof message's time: an hour ago, so every event lands in the window.
pub fn base_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    now - 3_600_000
}

/// The rows of `events` a proof record gives (a `value` and a `note` event), as
/// [`Tables::assert_rows_equal_source`] reads them back.
pub fn expected_rows(id: &str, note: &str, v: f64, ts: i64, feed: &str) -> Vec<String> {
    vec![
        format!("{id}\tnote\t\\N\t{note}\t{ts}\t{feed}"),
        format!("{id}\tvalue\t{v}\t\\N\t{ts}\t{feed}"),
    ]
}

/// A running `cityops ingest`.
pub struct Ingest {
    pub child: Child,
    pub port: u16,
    pub log: PathBuf,
}

impl Ingest {
    /// Starts `cityops ingest --config <config>` with its log as `<dir>/<name>.log`.
    pub fn spawn(config: &Path, dir: &Path, name: &str) -> Ingest {
        Ingest::spawn_subcommand("ingest", config, dir, name)
    }

    /// Starts `cityops <subcommand> --config <config>` (a service: `ingest` or `alert`) with
    /// its log as `<dir>/<name>.log`.
    pub fn spawn_subcommand(subcommand: &str, config: &Path, dir: &Path, name: &str) -> Ingest {
        let port = cityops_testkit::free_port();
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_cityops"))
            .args([subcommand, "--config", config.to_str().unwrap()])
            .args(["--listen-addr", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Ingest { child, port, log }
    }

    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGSTOP: the process freezes with its connections open (nothing read, nothing
    /// acknowledged) until [`Ingest::resume`]. Returns once the kernel says it is stopped
    /// (the signal takes effect asynchronously).
    pub fn pause(&self) {
        self.signal(nix::sys::signal::Signal::SIGSTOP);
        let tasks = format!("/proc/{}/task", self.child.id());
        // The state follows the command name, which is in parentheses.
        let state = |stat: &str| -> Option<String> {
            let text = std::fs::read_to_string(stat).ok()?;
            let (_, rest) = text.rsplit_once(')')?;
            rest.split_whitespace().next().map(str::to_owned)
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // Every thread, not only the first, must have stopped.
            let states: Vec<Option<String>> = std::fs::read_dir(&tasks)
                .map(|dir| {
                    dir.filter_map(Result::ok)
                        .map(|t| state(&t.path().join("stat").display().to_string()))
                        .collect()
                })
                .unwrap_or_default();
            if !states.is_empty() && states.iter().all(|s| s.as_deref() == Some("T")) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the ingest did not stop: {states:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGCONT after [`Ingest::pause`].
    pub fn resume(&self) {
        self.signal(nix::sys::signal::Signal::SIGCONT);
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    /// SIGTERM, then the exit code.
    pub fn terminate(&mut self, timeout: Duration) -> Option<i32> {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "ingest did not stop within {timeout:?}:\n{}",
            self.log_text()
        );
    }

    /// Waits until the process holds nothing it received and has not stored: no rows in
    /// flight, no spooled message waiting. From then on the tables show everything it stores
    /// of what it received, duplicates included (a check for duplicates waits for this, not
    /// for a fixed time).
    pub async fn wait_settled(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let m = self.metrics().await;
            let pending = metric_sum(&m, "cityops_ingest_in_flight_bytes", &[])
                + metric_sum(&m, "cityops_ingest_spool_backlog_messages", &[]);
            if !m.is_empty() && pending == 0.0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the ingest still holds what it has not stored after 60 s:\n{m}\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn metrics(&self) -> String {
        http_get(self.port, "/metrics").await.1
    }

    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        cityops_testkit::keep_log(&self.log, "cityops.log");
    }
}

/// A GET on 127.0.0.1:`port`: status code and body ("" when nothing answers).
pub async fn http_get(port: u16, path: &str) -> (u16, String) {
    let url = format!("http://127.0.0.1:{port}{path}");
    match reqwest::get(&url).await {
        Ok(response) => {
            let status = response.status().as_u16();
            (status, response.text().await.unwrap_or_default())
        }
        Err(_) => (0, String::new()),
    }
}

/// The sum of a metric's samples whose line contains every one of `labels`.
pub fn metric_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The proof's ClickHouse and the database the ingest writes to.
pub struct Tables<'a> {
    pub clickhouse: &'a cityops_testkit::ClickHouseServer,
    pub db: &'a str,
}

impl Tables<'_> {
    pub async fn count(&self, sql: &str) -> f64 {
        self.clickhouse
            .scalar(&sql.replace("{db}", self.db))
            .await
            .unwrap_or(-1.0)
    }

    /// Waits until `events` holds `want` rows (or `timeout`), returning the last count.
    pub async fn wait_for_rows(&self, want: f64, timeout: Duration) -> f64 {
        let deadline = Instant::now() + timeout;
        loop {
            let n = self.count("SELECT count() FROM {db}.events").await;
            if n >= want || Instant::now() >= deadline {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Checks `events` holds each expected row exactly once, with the source's values.
    pub async fn assert_rows_equal_source(&self, expected: &BTreeMap<String, Vec<String>>) {
        let want: usize = expected.values().map(Vec::len).sum();
        let n = self.count("SELECT count() FROM {db}.events").await;
        assert_eq!(n, want as f64, "rows in events");
        assert_eq!(
            self.count("SELECT uniqExact(event_id) FROM {db}.events")
                .await,
            want as f64,
            "distinct event ids"
        );
        let body = self
            .clickhouse
            .sql(&format!(
                "SELECT entity_id, metric, value, text, toUInt64(ts) * 1000 + ts_ms, feed \
                 FROM {}.events ORDER BY entity_id, metric FORMAT TSV",
                self.db
            ))
            .await
            .unwrap();
        let mut stored: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for line in body.lines() {
            let entity = line.split('\t').next().unwrap().to_owned();
            stored.entry(entity).or_default().push(line.to_owned());
        }
        assert_eq!(stored.len(), expected.len(), "entities");
        for (entity, rows) in expected {
            assert_eq!(stored.get(entity), Some(rows), "rows of {entity}");
        }
    }
}

/// A proof rig with its tables: the helpers come with `tables`.
pub(crate) trait ProofTables {
    /// The rig's ClickHouse and database.
    fn tables(&self) -> Tables<'_>;

    /// A number from `sql` (`{db}` is the database); -1 when the query fails.
    async fn count(&self, sql: &str) -> f64 {
        self.tables().count(sql).await
    }

    /// Waits until `events` holds `want` rows (or `timeout`), returning the last count.
    async fn wait_for_rows(&self, want: f64, timeout: Duration) -> f64 {
        self.tables().wait_for_rows(want, timeout).await
    }

    /// Checks `events` holds each expected row exactly once, with the source's values.
    async fn assert_rows_equal_source(&self, expected: &BTreeMap<String, Vec<String>>) {
        self.tables().assert_rows_equal_source(expected).await;
    }
}
