//! Integration tests of the `cityops` command, run as a subprocess the way operators run it.

// Test helpers may unwrap: a failure there is a test failure with its message.
#![allow(clippy::unwrap_used)]

mod check;
mod decode;
mod migrate;
mod sim;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs the built `cityops` binary with `args`.
pub fn cityops(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cityops"))
        .args(args)
        .output()
        .expect("the cityops binary runs")
}
