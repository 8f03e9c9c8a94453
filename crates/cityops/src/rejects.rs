//! `cityops rejects replay`: after a config fix, decode chosen rejects again (by feed, reason
//! and arrival time) and store what now decodes, once.

use anyhow::{Context, bail};
use cityops_clickhouse::{ClickHouse, RejectFilter};
use cityops_config::Config;
use cityops_event::Timestamp;
use cityops_feeds::FeedSet;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `cityops rejects`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Decode the chosen rejects with the config's feeds as they are now and store the events
    /// of those that decode (with the ids the ingest would have given them; never twice).
    Replay(ReplayArgs),
}

#[derive(Debug, clap::Args)]
struct ReplayArgs {
    /// The config file: its feeds decode, its `[clickhouse]` is written to.
    #[arg(long, short)]
    config: PathBuf,
    /// Only rejects of this feed.
    #[arg(long)]
    feed: Option<String>,
    /// Only rejects with this reason (e.g. `wrong_type`, docs/configuration.md).
    #[arg(long)]
    reason: Option<String>,
    /// Only rejects that arrived at or after this time (RFC 3339).
    #[arg(long)]
    since: Option<String>,
    /// Only rejects that arrived before this time (RFC 3339).
    #[arg(long)]
    until: Option<String>,
    /// Read at most this many rejects.
    #[arg(long, default_value_t = 1_000_000)]
    limit: u64,
    /// Decode and count, store nothing.
    #[arg(long)]
    dry_run: bool,
}

/// Exit 0 after a replay (its summary on stdout), 2 on a usage, config or ClickHouse error.
pub fn run(args: &Args) -> ExitCode {
    let Action::Replay(args) = &args.action;
    match replay(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("cityops rejects replay: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn seconds(flag: &str, value: Option<&String>) -> anyhow::Result<Option<u32>> {
    value
        .map(|text| {
            let at = Timestamp::parse_rfc3339(text)
                .with_context(|| format!("--{flag} {text:?} is not an RFC 3339 time"))?;
            Ok(at.unix_seconds())
        })
        .transpose()
}

fn replay(args: &ReplayArgs) -> anyhow::Result<()> {
    let config = Config::load(&args.config)?;
    let feeds = FeedSet::new(&config.feeds, config.rejects.max_raw_bytes)
        .map_err(anyhow::Error::msg)?
        .with_label_names(&config.labels);
    if let Some(feed) = &args.feed
        && !config.feeds.iter().any(|f| &f.name == feed)
    {
        bail!("the config has no feed {feed:?}");
    }
    let filter = RejectFilter {
        feed: args.feed.clone(),
        reason: args.reason.clone(),
        since_s: seconds("since", args.since.as_ref())?,
        until_s: seconds("until", args.until.as_ref())?,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let report = runtime.block_on(async {
        let clickhouse = ClickHouse::connect(&config.clickhouse)
            .await
            .with_context(|| format!("cannot reach ClickHouse at {}", config.clickhouse.url))?;
        let rejects = clickhouse.rejects_matching(&filter, args.limit).await?;
        anyhow::Ok(
            cityops_ingest::replay::replay_rejects(&clickhouse, &feeds, &rejects, args.dry_run)
                .await?,
        )
    })?;
    let verb = if args.dry_run {
        "would store"
    } else {
        "stored"
    };
    println!(
        "{} rejects read; {} decode now: {verb} {} events ({} already stored); {} with a cut payload cannot be replayed",
        report.selected,
        report.decoded,
        report.events_stored,
        report.events_already_stored,
        report.truncated
    );
    for (reason, n) in &report.still_rejected {
        println!("still rejected: {reason}: {n}");
    }
    Ok(())
}
