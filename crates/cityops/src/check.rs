//! `cityops check`: validate a config without touching any service.

use cityops_config::Config;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `cityops check`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The config file.
    #[arg(long, short)]
    config: PathBuf,
}

/// Prints a warning per secret written in clear, then `ok` and a summary (exit 0), or every
/// problem as `path: message` (exit 1).
pub fn run(args: &Args) -> ExitCode {
    let mut out = std::io::stdout().lock();
    // A closed stdout (`| head`) is not worth a panic; the exit code still tells.
    match Config::load(&args.config) {
        Ok(config) => {
            let mqtt = config
                .feeds
                .iter()
                .filter(|f| f.source == cityops_config::SourceKind::Mqtt)
                .count();
            let text = std::fs::read_to_string(&args.config).unwrap_or_default();
            for path in cityops_config::cleartext_secrets(&text) {
                let _ = writeln!(
                    out,
                    "warning: {path}: a secret written in clear in the config file; use a *_file key or \"${{ENV}}\" (docs/configuration.md)"
                );
            }
            let _ = writeln!(
                out,
                "{}: ok ({} feeds: {} mqtt, {} kafka)",
                args.config.display(),
                config.feeds.len(),
                mqtt,
                config.feeds.len() - mqtt
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            for problem in &error.problems {
                let _ = writeln!(out, "{problem}");
            }
            let _ = writeln!(
                out,
                "{}: {} problem(s)",
                args.config.display(),
                error.problems.len()
            );
            ExitCode::from(1)
        }
    }
}

/// Logs a warning per secret written in clear in the config file (services, at start).
pub fn warn_cleartext_secrets(config: &std::path::Path) {
    let text = std::fs::read_to_string(config).unwrap_or_default();
    for path in cityops_config::cleartext_secrets(&text) {
        tracing::warn!(
            path,
            "a secret written in clear in the config file; use a *_file key or \"${{ENV}}\""
        );
    }
}
