//! The local stack scripts (`make up`, `make status`, `make down`) on a temporary state
//! directory and free ports: all five services come up and answer, status shows them, down
//! leaves no process behind.

use cityops_e2e::repo_root;
use std::collections::BTreeSet;
use std::net::TcpListener;
use std::process::{Command, Output};
use std::time::Instant;

struct Stack {
    env: Vec<(String, String)>,
    ports: Vec<u16>,
}

impl Stack {
    fn new(state: &std::path::Path) -> Self {
        let (env, ports) = cityops_e2e::private_stack_env(state);
        Stack { env, ports }
    }

    fn run(&self, script: &str) -> Output {
        Command::new("bash")
            .arg(repo_root().join("deploy/local").join(script))
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .unwrap()
    }
}

fn pids_under(state: &std::path::Path) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(&state.display().to_string()) {
            pids.push(pid);
        }
    }
    pids
}

#[test]
fn up_status_and_down_manage_all_five_services() {
    let state = tempfile::tempdir().unwrap();
    let stack = Stack::new(state.path());

    let started = Instant::now();
    let up = stack.run("up.sh");
    let up_seconds = started.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&up.stdout);
    assert!(
        up.status.success(),
        "make up failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&up.stderr)
    );
    for service in [
        "mosquitto",
        "clickhouse",
        "tansu",
        "prometheus",
        "alertmanager",
    ] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(service) && l.contains(" up ")),
            "{service} not up:\n{stdout}"
        );
    }
    // How long depends on the machine's load: reported, not asserted.
    eprintln!("make up took {up_seconds:.1} s");

    // Idempotent: a second run starts nothing new and succeeds.
    let pids_before = pids_under(state.path());
    let again = stack.run("up.sh");
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(pids_under(state.path()), pids_before);

    let status = stack.run("status.sh");
    let text = String::from_utf8_lossy(&status.stdout);
    assert_eq!(
        text.lines().filter(|l| l.contains(" up ")).count(),
        5,
        "{text}"
    );

    let down = stack.run("down.sh");
    assert!(down.status.success());
    assert!(
        pids_under(state.path()).is_empty(),
        "processes left behind: {:?}",
        pids_under(state.path())
    );
    let status = stack.run("status.sh");
    assert_eq!(
        String::from_utf8_lossy(&status.stdout)
            .lines()
            .filter(|l| l.contains("stopped"))
            .count(),
        5
    );
}

#[test]
fn every_kafka_feed_of_the_example_config_has_its_topic_created_by_make_up() {
    let root = repo_root();
    let topics = std::fs::read_to_string(root.join("deploy/local/kafka-topics.txt")).unwrap();
    let created: BTreeSet<&str> = topics
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let config = std::fs::read_to_string(root.join("deploy/config/cityops.toml")).unwrap();
    let mut kafka_topics = Vec::new();
    let mut source = "";
    for line in config.lines() {
        if let Some(v) = line.strip_prefix("source = ") {
            source = if v.contains("kafka") { "kafka" } else { "mqtt" };
        }
        if let Some(v) = line.strip_prefix("topic = ")
            && source == "kafka"
        {
            kafka_topics.push(v.trim_matches('"').to_owned());
        }
    }
    assert_eq!(kafka_topics.len(), 4);
    for topic in kafka_topics {
        assert!(
            created.contains(topic.as_str()),
            "deploy/local/kafka-topics.txt lacks {topic}"
        );
    }
}

#[test]
fn up_fails_loudly_when_a_port_is_taken() {
    let state = tempfile::tempdir().unwrap();
    let stack = Stack::new(state.path());
    let taken = TcpListener::bind(("127.0.0.1", stack.ports[0])).unwrap();
    let up = stack.run("up.sh");
    let stderr = String::from_utf8_lossy(&up.stderr);
    assert!(!up.status.success());
    assert!(
        stderr.contains(&format!("port {} is taken", stack.ports[0])),
        "{stderr}"
    );
    drop(taken);
    assert!(stack.run("down.sh").status.success());
    assert!(pids_under(state.path()).is_empty());
}
