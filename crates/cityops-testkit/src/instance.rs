//! What every service instance shares: its directory, its process, and the lifecycle (start
//! again, stop, restart, kill -9) around a service-specific readiness check.

use crate::ServiceProcess;
use crate::support::try_wait_ready;
use std::path::Path;
use std::time::Duration;
use tempfile::TempDir;

/// What makes one kind of service: its name, timings, and how to tell it is ready.
pub trait ServiceSpec {
    /// Name for messages.
    const NAME: &'static str;
    /// How long a graceful stop may take before SIGKILL.
    const STOP_GRACE: Duration;
    /// How long a start may take before the test fails.
    const READY_TIMEOUT: Duration;
    /// Whether the service answers now.
    fn ready(&self) -> bool;
}

/// A running (or stopped) instance of a service, in its own temporary directory, killed when
/// dropped. The service types (`Mosquitto`, `ClickHouseServer`, ...) are instances of their spec.
#[derive(Debug)]
pub struct Instance<S> {
    // Declared before `dir` so that the process dies before its directory is removed.
    process: ServiceProcess,
    pub(crate) spec: S,
    dir: TempDir,
}

impl<S: ServiceSpec> Instance<S> {
    /// Starts `process` and waits until the service is ready.
    pub(crate) fn launch(dir: TempDir, spec: S, process: ServiceProcess) -> Self {
        let mut instance = Instance { process, spec, dir };
        instance.start_again();
        instance
    }

    /// Starts `process`; if it exits before it is ready (its port was taken between choosing
    /// and binding it, when many tests start services at once) says why, so that the caller
    /// can try again on other ports.
    pub(crate) fn try_launch(
        dir: TempDir,
        spec: S,
        process: ServiceProcess,
    ) -> Result<Self, String> {
        let mut instance = Instance { process, spec, dir };
        instance.process.spawn();
        let spec = &instance.spec;
        try_wait_ready(&mut instance.process, S::NAME, S::READY_TIMEOUT, || {
            spec.ready()
        })?;
        Ok(instance)
    }

    /// Starts the stopped instance again with the same ports and data. A start that exits at
    /// once is tried again for a while: one of its ports may still be held by an outgoing
    /// connection that the kernel gave it while the service was down.
    pub fn start_again(&mut self) {
        let mut last = String::new();
        for _ in 0..10 {
            self.process.spawn();
            let spec = &self.spec;
            match try_wait_ready(&mut self.process, S::NAME, S::READY_TIMEOUT, || {
                spec.ready()
            }) {
                Ok(()) => return,
                Err(message) if !self.process.is_running() => {
                    last = message;
                    // Reap the exited attempt before the next one.
                    self.process.kill9();
                    std::thread::sleep(std::time::Duration::from_secs(1));
                }
                Err(message) => panic!("{message}"),
            }
        }
        panic!("{last}");
    }

    /// Stops it gracefully (SIGTERM, then SIGKILL after the service's grace period).
    pub fn stop(&mut self) {
        self.process.stop(S::STOP_GRACE);
    }

    /// Stops and starts it.
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// kill -9 of its process group, as a crash.
    pub fn kill9(&mut self) {
        self.process.kill9();
    }

    /// Whether the process is alive.
    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// The pid while running.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// The instance's directory (config, data, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}
