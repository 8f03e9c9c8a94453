//! A service process in its own process group, stopped by pid when dropped.

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running (or stopped) service process: program, arguments, working directory, log file.
#[derive(Debug)]
pub struct ServiceProcess {
    name: String,
    program: PathBuf,
    args: Vec<String>,
    cwd: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl ServiceProcess {
    /// Describes a process; nothing runs until [`ServiceProcess::spawn`].
    pub fn new(name: &str, program: PathBuf, args: Vec<String>, cwd: &Path, log: PathBuf) -> Self {
        ServiceProcess {
            name: name.to_owned(),
            program,
            args,
            cwd: cwd.to_path_buf(),
            log,
            child: None,
        }
    }

    /// Starts the process in a new process group, stdout and stderr appended to its log.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap_or_else(|e| {
                panic!("{}: cannot open log {}: {e}", self.name, self.log.display())
            });
        let err = log.try_clone().expect("clone the log handle");
        let child = Command::new(&self.program)
            .args(&self.args)
            .current_dir(&self.cwd)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "{}: cannot start {}: {e}",
                    self.name,
                    self.program.display()
                )
            });
        self.child = Some(child);
    }

    /// The pid while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is still alive.
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGTERM to the process group, then SIGKILL after `grace`; waits until it is gone.
    pub fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let group = Pid::from_raw(child.id() as i32);
        let _ = killpg(group, Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                // The leader is gone; make sure no helper process of the group stays behind.
                let _ = killpg(group, Signal::SIGKILL);
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = killpg(group, Signal::SIGKILL);
        let _ = child.wait();
    }

    /// kill -9 of the whole process group, as a crash would; waits until it is gone.
    pub fn kill9(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
        let _ = child.wait();
    }

    /// The last `lines` lines of the log, and of any `*.err.log` beside it (where ClickHouse
    /// writes why it stopped), for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let tail = |path: &Path| {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            // An error log's stack frames would crowd out the messages.
            let errors = path.to_string_lossy().ends_with(".err.log");
            let all: Vec<&str> = text
                .lines()
                .filter(|l| !errors || l.contains("<Error>") || l.contains("<Fatal>"))
                .collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        };
        let mut out = tail(&self.log);
        let beside = self
            .log
            .parent()
            .and_then(|dir| std::fs::read_dir(dir).ok());
        for entry in beside.into_iter().flatten().filter_map(Result::ok) {
            let path = entry.path();
            if path.to_string_lossy().ends_with(".err.log") {
                out.push_str(&format!("\n--- {}:\n{}", path.display(), tail(&path)));
            }
        }
        out
    }

    /// The log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        // Instances are throwaway: no need to wait for a graceful shutdown.
        self.kill9();
        crate::logs::keep_log(&self.log, &format!("{}.log", self.name));
    }
}
