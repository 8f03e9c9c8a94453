//! The `cityops` command: one binary, one subcommand per job.

mod alert;
mod alerts;
mod check;
mod decode;
mod ingest;
mod migrate;
mod rejects;
mod rules;
mod sim;
mod spool;

use clap::{Parser, Subcommand};

/// mimalloc instead of glibc's allocator: the services decode events on one thread and free
/// them on another (the alerter's sources and evaluator, the ingest's reader and writer), which
/// glibc serves with contended arena locks (measured in BENCHMARKS.md, `make bench-alert`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::process::ExitCode;

/// cityops: the event pipeline of a city Intelligent Operations Center.
#[derive(Debug, Parser)]
#[command(name = "cityops", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the alert rules on the live feeds: Alertmanager, webhooks, alert history, API.
    Alert(alert::Args),
    /// List, acknowledge, unacknowledge and comment alerts through the alerter's API.
    Alerts(alerts::Args),
    /// Validate a config file and print every problem with its path (exit 1 if any).
    Check(check::Args),
    /// Decode one payload with a config's feeds and print events as JSON lines, or the reject.
    Decode(decode::Args),
    /// Consume the config's Kafka and MQTT feeds into ClickHouse until SIGTERM (no loss, no
    /// duplicates), or retire an MQTT ingest for good (`--retire`).
    Ingest(ingest::Args),
    /// Apply pending ClickHouse schema migrations (idempotent; --dry-run prints them).
    Migrate(migrate::MigrateArgs),
    /// Decode chosen rejects again after a config fix and store what now decodes, once.
    Rejects(rejects::Args),
    /// Drop ClickHouse partitions older than the configured retention.
    Retention(migrate::RetentionArgs),
    /// Check alert rule files and run their tests.
    Rules(rules::Args),
    /// Simulate Da Nang's feeds in their real formats (deterministic with --seed).
    Sim(sim::Args),
    /// Check the MQTT ingest's spool for damage, or salvage what is intact (ingest stopped).
    Spool(spool::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Alert(args) => alert::run(&args),
        Command::Alerts(args) => alerts::run(&args),
        Command::Check(args) => check::run(&args),
        Command::Decode(args) => decode::run(&args),
        Command::Ingest(args) => ingest::run(&args),
        Command::Migrate(args) => migrate::run_migrate(&args),
        Command::Rejects(args) => rejects::run(&args),
        Command::Retention(args) => migrate::run_retention(&args),
        Command::Rules(args) => rules::run(&args),
        Command::Sim(args) => sim::run(&args),
        Command::Spool(args) => spool::run(&args),
    }
}
