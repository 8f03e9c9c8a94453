//! Shared helpers: free ports, binaries, paths, config templates, readiness polling.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The per-user cache of slow-to-obtain tools (`CITYOPS_CACHE_DIR`, else `~/.cache/cityops`),
/// the same one `make deps` fills.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CITYOPS_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    base.join("cityops")
}

/// A port free on 127.0.0.1 right now, never handed out before by this test process: a
/// stopped service keeps its ports for `start_again`, and another test must not be given one.
/// The service binds it a moment later; starts retry on the rare clash.
///
/// Ports come from outside the kernel's ephemeral range (`ip_local_port_range`, where it
/// picks the local ports of outgoing connections): a service stopped mid-test (a ClickHouse
/// node of a cluster) could otherwise find its port taken, for as long as that connection
/// lives, by a connection another service opened meanwhile.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let candidates = outside_ephemeral_range();
    // Test binaries run one after another; each starts at its own place in the range.
    let start = (std::process::id() as usize).wrapping_mul(7919) % candidates.len().max(1);
    for i in 0..candidates.len() {
        let port = candidates[(start + i) % candidates.len()];
        if given.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return port;
        }
    }
    // Every such port is taken: fall back to one the kernel chooses.
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port on 127.0.0.1");
        let port = listener.local_addr().expect("local address").port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// Ports the kernel never gives an outgoing connection: above its ephemeral range (61000 and
/// up by default on Linux), or below it when that leaves too few.
fn outside_ephemeral_range() -> Vec<u16> {
    let (low, high) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut parts = text.split_whitespace().map(|p| p.parse::<u16>().ok());
            Some((parts.next()??, parts.next()??))
        })
        .unwrap_or((32768, 60999));
    if high < 63_000 {
        (high + 1..=65_535).collect()
    } else {
        // The local stack's fixed ports (deploy/local/lib.sh) are below 20000.
        (20_000..low.max(20_001)).collect()
    }
}

/// Finds an executable on PATH (or at an absolute path). Err says how to install it.
pub fn find_binary(name: &str) -> Result<PathBuf, String> {
    let candidate = Path::new(name);
    if candidate.is_absolute() {
        return if candidate.is_file() {
            Ok(candidate.to_path_buf())
        } else {
            Err(missing(name))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| missing(name))
}

fn missing(name: &str) -> String {
    format!(
        "{name} is not installed: run `make deps` in the repository root (it installs every service the tests use)"
    )
}

/// Finds a binary or panics with the install command.
pub(crate) fn require_binary(name: &str) -> PathBuf {
    find_binary(name).unwrap_or_else(|e| panic!("{e}"))
}

/// Fills the `@NAME@` placeholders of a config template from `deploy/local/`.
pub(crate) fn render(template: &str, values: &[(&str, String)]) -> String {
    let mut text = template.to_owned();
    for (name, value) in values {
        text = text.replace(&format!("@{name}@"), value);
    }
    text
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
pub(crate) fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok()
}

/// Polls `check` every 100 ms until it is true or `timeout` passes.
pub(crate) fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A blocking HTTP GET returning status and body, for readiness checks outside async code.
pub(crate) fn http_get(url: &str) -> Option<(u16, String)> {
    // Readiness runs from sync code (constructors, Drop); a small current-thread runtime keeps
    // the kit usable from both sync and async tests.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    let url = url.to_owned();
    std::thread::spawn(move || {
        runtime.block_on(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()
                .ok()?;
            let response = client.get(&url).send().await.ok()?;
            let status = response.status().as_u16();
            Some((status, response.text().await.ok()?))
        })
    })
    .join()
    .ok()?
}

/// Whether the Prometheus-style readiness endpoint `/-/ready` on `port` answers 200.
pub(crate) fn ready_endpoint(port: u16) -> bool {
    matches!(
        http_get(&format!("http://127.0.0.1:{port}/-/ready")),
        Some((200, _))
    )
}

/// Waits until `check` passes; says why not (with the log's tail) if the process dies or
/// time runs out.
pub(crate) fn try_wait_ready(
    process: &mut crate::ServiceProcess,
    name: &str,
    timeout: Duration,
    mut check: impl FnMut() -> bool,
) -> Result<(), String> {
    let mut died = false;
    let ready = wait_until(timeout, || {
        if !process.is_running() {
            died = true;
            return true;
        }
        check()
    });
    if died || !ready {
        return Err(format!(
            "{name} did not become ready within {timeout:?}{}; last lines of {}:\n{}",
            if died { " (the process exited)" } else { "" },
            process.log_path().display(),
            process.log_tail(30)
        ));
    }
    Ok(())
}

/// Creates `dir/sub` for each of `subs`.
pub(crate) fn make_dirs(dir: &Path, subs: &[&str]) {
    for sub in subs {
        std::fs::create_dir_all(dir.join(sub))
            .unwrap_or_else(|e| panic!("create {}: {e}", dir.join(sub).display()));
    }
}

/// A temporary directory for one service instance, removed when the instance is dropped.
pub(crate) fn instance_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("cityops-{name}-"))
        .tempdir()
        .expect("create a temporary directory")
}

/// Reads a config template of `deploy/local/`.
pub(crate) fn template(relative: &str) -> String {
    let path = repo_root().join("deploy/local").join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}
