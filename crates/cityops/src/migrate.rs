//! `cityops migrate` and `cityops retention`: bring the ClickHouse schema up to date, and drop
//! data older than its retention.

use anyhow::Context;
use cityops_clickhouse::{ClickHouse, MigrationOutcome, RetentionDays, apply_retention, migrate};
use cityops_config::Config;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `cityops migrate`.
#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    /// The config file (its `[clickhouse]` section).
    #[arg(long, short)]
    config: PathBuf,
    /// Print what would run, change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print nothing unless something changes or fails.
    #[arg(long)]
    quiet: bool,
}

/// Arguments of `cityops retention`.
#[derive(Debug, clap::Args)]
pub struct RetentionArgs {
    /// The config file (its `[clickhouse]` section).
    #[arg(long, short)]
    config: PathBuf,
    /// Print the partitions that would be dropped, drop nothing.
    #[arg(long)]
    dry_run: bool,
}

fn retention_days(config: &Config) -> RetentionDays {
    let ch = &config.clickhouse;
    RetentionDays {
        events: ch.events_retention_days,
        rollups: ch.rollups_retention_days,
        rejects: ch.rejects_retention_days,
        alert_events: ch.alert_events_retention_days,
    }
}

async fn connect(config: &Config) -> anyhow::Result<ClickHouse> {
    ClickHouse::connect(&config.clickhouse)
        .await
        .with_context(|| format!("cannot reach ClickHouse at {}", config.clickhouse.url))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Exit 0 when the schema is current (or the dry run could be planned), 1 on failure.
pub fn run_migrate(args: &MigrateArgs) -> ExitCode {
    report(runtime().and_then(|rt| rt.block_on(migrate_command(args))))
}

/// Exit 0 when retention ran (or was planned), 1 on failure.
pub fn run_retention(args: &RetentionArgs) -> ExitCode {
    report(runtime().and_then(|rt| rt.block_on(retention_command(args))))
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(1)
        }
    }
}

async fn migrate_command(args: &MigrateArgs) -> anyhow::Result<()> {
    let config = Config::load(&args.config)?;
    let ch = connect(&config).await?;
    let report = migrate(&ch, retention_days(&config), args.dry_run).await?;
    if args.quiet && !report.changed() {
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "ClickHouse {} at {}, database {}{}{}",
        report.server,
        config.clickhouse.url,
        ch.database(),
        ch.cluster()
            .map(|c| format!(
                ", ON CLUSTER {} ({} shards, {} replicas)",
                c.name,
                c.shards,
                c.replicas.len()
            ))
            .unwrap_or_default(),
        if args.dry_run {
            " (dry run: nothing is changed)"
        } else {
            ""
        }
    )?;
    for (version, name, outcome, statements) in &report.migrations {
        let state = match outcome {
            MigrationOutcome::Applied => "applied".to_owned(),
            MigrationOutcome::WouldApply => "would apply".to_owned(),
            MigrationOutcome::AlreadyApplied => "up to date".to_owned(),
            MigrationOutcome::NeedsServer(v) => format!("skipped: needs ClickHouse {v} or later"),
        };
        writeln!(out, "  {version:04} {name:<16} {state}")?;
        if args.dry_run {
            for statement in statements {
                writeln!(out, "       {};", statement.replace('\n', "\n       "))?;
            }
        }
    }
    if !report.other_statements.is_empty() {
        writeln!(
            out,
            "  {} bookkeeping and TTL statement(s){}",
            report.other_statements.len(),
            if args.dry_run { ":" } else { " run" }
        )?;
        if args.dry_run {
            for statement in &report.other_statements {
                writeln!(out, "       {statement};")?;
            }
        }
    }
    if !report.changed() {
        writeln!(out, "  nothing to do")?;
    }
    if !report.server.supports_ttl() {
        writeln!(
            out,
            "  retention: this server has no TTL; run `cityops retention` daily to drop old partitions"
        )?;
    }
    Ok(())
}

async fn retention_command(args: &RetentionArgs) -> anyhow::Result<()> {
    let config = Config::load(&args.config)?;
    let ch = connect(&config).await?;
    let report = apply_retention(&ch, retention_days(&config), args.dry_run).await?;
    let mut out = std::io::stdout().lock();
    let verb = if args.dry_run {
        "would drop"
    } else {
        "dropped"
    };
    for action in &report.actions {
        writeln!(
            out,
            "{verb} {}.{} partition {}",
            ch.database(),
            action.table,
            action.partition
        )?;
    }
    writeln!(
        out,
        "retention: {} partition(s) {verb}",
        report.actions.len()
    )?;
    Ok(())
}
