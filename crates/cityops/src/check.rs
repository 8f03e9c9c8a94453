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

/// Prints `ok` and a summary (exit 0), or every problem as `path: message` (exit 1).
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
