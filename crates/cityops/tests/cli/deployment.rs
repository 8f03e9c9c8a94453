//! The deployment files checked as the tools that run them would: the systemd units by
//! `systemd-analyze verify` and `systemd-analyze security`, the Kubernetes manifests against
//! Kubernetes' schemas, the compose file against the Compose Specification's schema, and each
//! against the shipped config and the repository.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

const UNITS: [&str; 2] = ["cityops-ingest.service", "cityops-alert.service"];

/// The highest exposure `systemd-analyze security` may give a unit (0 is the most locked
/// down, 10 the least; 1.5 is what the units score today).
const MAX_EXPOSURE: f64 = 2.0;

fn systemd_analyze() -> PathBuf {
    let path = PathBuf::from("/usr/bin/systemd-analyze");
    assert!(
        path.exists(),
        "systemd-analyze is missing: install it with `sudo apt-get install -y systemd` \
         (make deps does)"
    );
    path
}

/// The units with `/usr/bin/cityops` replaced by the binary under test (verify checks that
/// every command exists and is executable), in a folder of their own.
fn units_for_verify() -> (tempfile::TempDir, Vec<PathBuf>) {
    let dir = tempfile::tempdir().unwrap();
    let binary = env!("CARGO_BIN_EXE_cityops");
    let paths = UNITS
        .iter()
        .map(|name| {
            let text = std::fs::read_to_string(unit_path(name)).unwrap();
            assert!(
                text.contains("/usr/bin/cityops "),
                "{name} runs /usr/bin/cityops"
            );
            let path = dir.path().join(name);
            std::fs::write(&path, text.replace("/usr/bin/cityops", binary)).unwrap();
            path
        })
        .collect();
    (dir, paths)
}

/// Runs a checker; its exit status and everything it printed, stdout then stderr.
fn run(command: &mut Command) -> (ExitStatus, String) {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?} cannot run: {e}"));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status, said)
}

fn unit_path(name: &str) -> PathBuf {
    crate::repo_root().join("deploy/systemd").join(name)
}

/// The `Key=value` lines of a unit's `[Service]` section, every value of a repeated key.
fn service_settings(name: &str) -> BTreeMap<String, Vec<String>> {
    let text = std::fs::read_to_string(unit_path(name)).unwrap();
    let mut settings: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut in_service = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_service = line == "[Service]";
        } else if in_service
            && !line.starts_with('#')
            && let Some((key, value)) = line.split_once('=')
        {
            settings
                .entry(key.to_owned())
                .or_default()
                .push(value.to_owned());
        }
    }
    settings
}

#[test]
fn the_systemd_units_pass_systemd_analyze_verify_without_a_warning() {
    let (_dir, paths) = units_for_verify();
    let (status, said) = run(Command::new(systemd_analyze()).arg("verify").args(&paths));
    // verify exits 0 on unknown keys and misplaced settings, which it only prints.
    assert!(
        status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {status}\n{said}"
    );
}

#[test]
fn the_systemd_units_are_locked_down() {
    let (_dir, paths) = units_for_verify();
    for path in &paths {
        let out = Command::new(systemd_analyze())
            .args(["security", "--offline=yes", "--no-pager"])
            .arg(path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let exposure: f64 = text
            .lines()
            .find_map(|l| {
                l.split_once("Overall exposure level for ")?
                    .1
                    .split_once(": ")
            })
            .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no exposure level for {}:\n{text}", path.display()));
        eprintln!("{}: exposure {exposure}", path.display());
        assert!(
            exposure <= MAX_EXPOSURE,
            "{} scores {exposure} (at most {MAX_EXPOSURE}):\n{text}",
            path.display()
        );
    }
}

/// The units' environment given to the shipped config puts the spool and the alerter's state
/// in the units' state directories, and systemd waits longer than the drain before SIGKILL.
#[test]
fn the_systemd_units_and_the_shipped_config_agree() {
    let config_path = crate::repo_root().join("deploy/config/cityops.toml");
    let text = std::fs::read_to_string(&config_path).unwrap();
    let mut env = BTreeMap::new();
    let mut stop_timeouts_ms = BTreeMap::new();
    for name in UNITS {
        let settings = service_settings(name);
        for assignment in settings.get("Environment").into_iter().flatten() {
            let (key, value) = assignment.split_once('=').unwrap();
            // %S is the root of state directories: /var/lib for system units.
            env.insert(key.to_owned(), value.replace("%S", "/var/lib"));
        }
        let state = &settings["StateDirectory"];
        assert_eq!(state.len(), 1, "{name}: one state directory");
        assert_eq!(settings["DynamicUser"], ["yes"], "{name}");
        assert_eq!(settings["Restart"], ["always"], "{name}");
        let seconds: u64 = settings["TimeoutStopSec"][0].parse().unwrap();
        stop_timeouts_ms.insert(name, seconds * 1000);
    }
    // Every setting of the example environment file is one the config reads.
    let env_file =
        std::fs::read_to_string(crate::repo_root().join("deploy/systemd/cityops.env")).unwrap();
    for line in env_file.lines().map(str::trim) {
        let line = line.trim_start_matches("# ");
        let Some((key, _)) = line.split_once('=') else {
            continue;
        };
        if key.starts_with("CITYOPS_") {
            assert!(
                text.contains(&format!("${{{key}")),
                "cityops.env sets {key}, which deploy/config/cityops.toml does not read"
            );
        }
    }
    let config = cityops_config::Config::from_str_with_env(&text, &|name| env.get(name).cloned())
        .unwrap_or_else(|e| panic!("the shipped config with the units' environment: {e}"));
    assert_eq!(
        config.mqtt.spool.dir,
        Path::new("/var/lib/cityops-ingest/spool"),
        "the spool is in cityops-ingest's StateDirectory"
    );
    assert_eq!(
        config.alert.state_dir,
        Path::new("/var/lib/cityops-alert"),
        "the alerter's state is in cityops-alert's StateDirectory"
    );
    let drain_ms = config.ingest.shutdown_deadline_ms;
    assert!(
        stop_timeouts_ms["cityops-ingest.service"] > drain_ms + 10_000,
        "TimeoutStopSec leaves 10 s above the drain deadline of {drain_ms} ms"
    );
}

fn kubernetes_dir() -> PathBuf {
    crate::repo_root().join("deploy/kubernetes")
}

/// The manifests of deploy/kubernetes, and the ConfigMaps `configmaps.py` prints, checked
/// against Kubernetes' own resource schemas (kubernetes-validate, strict: no unknown field).
#[test]
fn the_kubernetes_manifests_pass_kubernetes_own_schemas() {
    let validator = cityops_testkit::cache_dir().join("kubernetes-validate/1.37.0");
    assert!(
        validator.join("kubernetes_validate").is_dir(),
        "kubernetes-validate is missing from {}: run `make deps`",
        validator.display()
    );
    let generated = Command::new("python3")
        .arg(kubernetes_dir().join("configmaps.py"))
        .output()
        .unwrap();
    assert!(
        generated.status.success(),
        "configmaps.py: {}",
        String::from_utf8_lossy(&generated.stderr)
    );
    let dir = tempfile::tempdir().unwrap();
    let configmaps = dir.path().join("configmaps.yaml");
    std::fs::write(&configmaps, &generated.stdout).unwrap();
    let mut files: Vec<PathBuf> = std::fs::read_dir(kubernetes_dir())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "the manifests: {files:?}");
    files.push(configmaps);
    let mut validate = Command::new("python3");
    validate
        .args([
            "-m",
            "kubernetes_validate",
            "--strict",
            "--kubernetes-version",
            "1.37.0",
        ])
        .args(&files)
        .env("PYTHONPATH", &validator);
    let (status, said) = run(&mut validate);
    let passed = said
        .lines()
        .filter(|l| l.contains(" passed for resource "))
        .count();
    eprintln!("kubernetes-validate: {passed} resources passed");
    // Every resource: the namespace, cityops-env, three services, the StatefulSet, two
    // Deployments, the alerter's claim and the two generated ConfigMaps.
    assert!(
        status.success() && passed >= 11 && !said.contains("WARN") && !said.contains("ERROR"),
        "kubernetes-validate {status}:\n{said}"
    );
}

/// `- name: KEY` / `value: VALUE` pairs of containers' `env`, and `KEY: value` lines of the
/// `cityops-env` ConfigMap, as plain text: enough for these files, which keep to that form.
fn manifest_env(text: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut lines = text.lines().map(str::trim).peekable();
    let mut in_data = false;
    while let Some(line) = lines.next() {
        if line == "data:" {
            in_data = true;
            continue;
        }
        if in_data {
            match line.split_once(": ") {
                Some((key, value)) if key.starts_with("CITYOPS_") => {
                    found.push((key.to_owned(), value.trim_matches('"').to_owned()));
                    continue;
                }
                _ if line.starts_with('#') => continue,
                _ => in_data = false,
            }
        }
        if let Some(name) = line.strip_prefix("- name: ")
            && name.starts_with("CITYOPS_")
        {
            let value = lines
                .peek()
                .and_then(|next| next.strip_prefix("value: "))
                .unwrap_or("<from the pod>");
            found.push((name.to_owned(), value.to_owned()));
        }
    }
    found
}

/// Given each pod's environment, the shipped config keeps the spool and the alerter's state on
/// the pods' volumes, and every name the manifests set is one the config reads.
#[test]
fn the_kubernetes_manifests_and_the_shipped_config_agree() {
    let config_text =
        std::fs::read_to_string(crate::repo_root().join("deploy/config/cityops.toml")).unwrap();
    let read = |name: &str| std::fs::read_to_string(kubernetes_dir().join(name)).unwrap();
    let shared = manifest_env(&read("env.yaml"));
    assert!(shared.len() >= 4, "cityops-env: {shared:?}");
    for (pod, mount, check) in [
        ("ingest-mqtt.yaml", "mountPath: /var/lib/cityops\n", "spool"),
        ("ingest-kafka.yaml", "", "none"),
        ("alert.yaml", "mountPath: /var/lib/cityops\n", "state"),
    ] {
        let text = read(pod);
        let mut env: BTreeMap<String, String> = shared.iter().cloned().collect();
        env.extend(manifest_env(&text));
        for key in env.keys() {
            assert!(
                config_text.contains(&format!("${{{key}")),
                "{pod} sets {key}, which deploy/config/cityops.toml does not read"
            );
        }
        assert!(
            text.contains("path: /healthz") && text.contains("path: /readyz"),
            "{pod}"
        );
        assert!(
            text.contains("--listen-addr\", \"0.0.0.0:"),
            "{pod}: probes reach the pod"
        );
        assert!(text.contains("mountPath: /etc/cityops/config\n"), "{pod}");
        assert!(text.contains("mountPath: /etc/cityops/rules\n"), "{pod}");
        assert!(text.contains(mount), "{pod}: {mount}");
        let config =
            cityops_config::Config::from_str_with_env(&config_text, &|name| env.get(name).cloned())
                .unwrap_or_else(|e| panic!("the shipped config with {pod}'s environment: {e}"));
        match check {
            "spool" => {
                assert_eq!(config.mqtt.spool.dir, Path::new("/var/lib/cityops/spool"));
                assert_eq!(
                    env["CITYOPS_MQTT_CLIENT_ID"], "<from the pod>",
                    "one per pod"
                );
            }
            "state" => {
                assert_eq!(
                    config.alert.state_dir,
                    Path::new("/var/lib/cityops/alert-state")
                )
            }
            _ => {}
        }
        // The rule files the config names are in the rules ConfigMap (deploy/rules).
        for rule in &config.alert.rule_files {
            let rule = Path::new("/etc/cityops/config").join(rule);
            let name = rule.file_name().unwrap();
            assert!(
                rule.starts_with("/etc/cityops/config/../rules")
                    && crate::repo_root().join("deploy/rules").join(name).exists(),
                "{pod}: the rule file {} is not in cityops-rules",
                rule.display()
            );
        }
    }
}

fn compose_dir() -> PathBuf {
    crate::repo_root().join("deploy/compose")
}

/// Runs deploy/compose/check.py on `file` (the Compose Specification's schema, jsonschema and
/// PyYAML from `make deps`); with `json`, it also writes the file there as JSON.
fn check_compose(file: &Path, json: Option<&Path>) -> (ExitStatus, String) {
    let cache = cityops_testkit::cache_dir();
    let schema = cache.join("compose-spec/1.29.2/compose_spec.json");
    let python = cache.join("kubernetes-validate/1.37.0");
    assert!(
        schema.is_file() && python.join("jsonschema").is_dir(),
        "{} or jsonschema is missing: run `make deps`",
        schema.display()
    );
    let mut command = Command::new("python3");
    command
        .arg(compose_dir().join("check.py"))
        .arg(&schema)
        .arg(file)
        .env("PYTHONPATH", &python);
    if let Some(json) = json {
        command.arg("--json").arg(json);
    }
    run(&mut command)
}

#[test]
fn the_compose_file_fits_the_compose_specification() {
    let (status, said) = check_compose(&compose_dir().join("compose.yaml"), None);
    assert!(
        status.success() && said.contains("0 problems"),
        "check.py {status}:\n{said}"
    );
    // And the check is not blind: a key the specification does not have is reported.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("compose.yaml");
    let text = std::fs::read_to_string(compose_dir().join("compose.yaml")).unwrap();
    std::fs::write(
        &bad,
        text.replacen("stop_grace_period:", "stop_grace_periods:", 1),
    )
    .unwrap();
    let (status, said) = check_compose(&bad, None);
    assert!(
        !status.success() && said.contains("'stop_grace_periods' does not match"),
        "{said}"
    );
}

/// The compose file against the repository: every file it mounts exists, every port is
/// published on 127.0.0.1 only, the cityops services' environment is one the shipped config
/// reads and puts their state on their volumes, Grafana gets every variable its provisioning
/// files use, Prometheus scrapes the ports the services listen on.
#[test]
fn the_compose_file_and_the_repository_agree() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("compose.json");
    let (status, said) = check_compose(&compose_dir().join("compose.yaml"), Some(&json));
    assert!(status.success(), "{said}");
    let compose: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let services = compose["services"].as_object().unwrap();
    let config_text =
        std::fs::read_to_string(crate::repo_root().join("deploy/config/cityops.toml")).unwrap();
    let dockerfile = std::fs::read_to_string(compose_dir().join("Dockerfile")).unwrap();
    assert!(
        dockerfile.contains("COPY deploy/config/cityops.toml /etc/cityops/config/cityops.toml")
            && dockerfile.contains("COPY deploy/rules/ /etc/cityops/rules/")
            && dockerfile.contains("/usr/bin/cityops"),
        "the image holds the binary, the config and the rules where the services look"
    );
    // `${NAME:?...}` and `${NAME}` are filled in from the .env file at `up`.
    let secret = |value: &str| {
        if value.starts_with("${") {
            "trial-secret".to_owned()
        } else {
            value.to_owned()
        }
    };
    let mut cityops_services = 0;
    for (name, service) in services {
        for port in service["ports"].as_array().into_iter().flatten() {
            let port = port.as_str().unwrap();
            assert!(
                port.starts_with("127.0.0.1:"),
                "{name} publishes {port} beyond this host"
            );
        }
        for volume in service["volumes"].as_array().into_iter().flatten() {
            let source = volume.as_str().unwrap().split(':').next().unwrap();
            if source.starts_with('.') {
                assert!(
                    compose_dir().join(source).exists(),
                    "{name} mounts {source}, which is not in the repository"
                );
            }
        }
        if service["image"] != "cityops:0.1.0" {
            continue;
        }
        cityops_services += 1;
        let env: BTreeMap<String, String> = service["environment"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), secret(v.as_str().unwrap())))
            .collect();
        for key in env.keys() {
            assert!(
                config_text.contains(&format!("${{{key}")),
                "{name} sets {key}, which deploy/config/cityops.toml does not read"
            );
        }
        let command: Vec<&str> = service["command"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        if command[0] != "sim" {
            assert_eq!(
                command[1..3],
                ["--config", "/etc/cityops/config/cityops.toml"],
                "{name}"
            );
        }
        let config =
            cityops_config::Config::from_str_with_env(&config_text, &|k| env.get(k).cloned())
                .unwrap_or_else(|e| panic!("the shipped config with {name}'s environment: {e}"));
        let mounted = |path: &Path| {
            service["volumes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str()?.split(':').nth(1))
                .any(|target| path.starts_with(target))
        };
        match command[0] {
            "ingest" => {
                assert!(mounted(&config.mqtt.spool.dir), "the spool is on a volume");
                let grace = service["stop_grace_period"].as_str().unwrap();
                let grace_ms: u64 = grace.trim_end_matches('s').parse::<u64>().unwrap() * 1000;
                assert!(
                    grace_ms > config.ingest.shutdown_deadline_ms + 10_000,
                    "{grace}"
                );
            }
            "alert" => assert!(mounted(&config.alert.state_dir), "the state is on a volume"),
            _ => {}
        }
        for rule in &config.alert.rule_files {
            let name = rule.file_name().unwrap();
            assert!(
                rule.starts_with("../rules")
                    && crate::repo_root().join("deploy/rules").join(name).exists(),
                "{} is not among the image's rules",
                rule.display()
            );
        }
    }
    assert_eq!(cityops_services, 4, "migrate, ingest, alert, sim");

    // Grafana: every ${NAME} of the provisioning files is in its environment.
    let grafana = services["grafana"]["environment"].as_object().unwrap();
    for file in ["datasources/cityops.yaml", "dashboards/cityops.yaml"] {
        let text = std::fs::read_to_string(
            crate::repo_root()
                .join("dashboards/provisioning")
                .join(file),
        )
        .unwrap();
        let settings: Vec<&str> = text
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .collect();
        for part in settings.join("\n").split("${").skip(1) {
            let name = part.split('}').next().unwrap();
            assert!(
                grafana.contains_key(name),
                "Grafana lacks {name} for {file}"
            );
        }
    }
    // Prometheus scrapes each cityops service on the port it listens on.
    let prometheus = std::fs::read_to_string(compose_dir().join("prometheus.yml")).unwrap();
    for (service, port) in [("ingest", "9464"), ("alert", "9465"), ("sim", "9466")] {
        assert!(
            prometheus.contains(&format!("\"{service}:{port}\"")),
            "{service}"
        );
        let command = services[service]["command"].to_string();
        assert!(
            command.contains(&format!("0.0.0.0:{port}")),
            "{service}: {command}"
        );
    }
}
