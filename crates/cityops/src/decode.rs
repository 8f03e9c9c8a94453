//! `cityops decode`: run one payload through the feeds of a config, as ingest would.

use anyhow::{Context, bail};
use cityops_config::{Config, SourceKind};
use cityops_event::{SourceCoordinates, Timestamp};
use cityops_feeds::{FeedSet, Message};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

/// Arguments of `cityops decode`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The config file whose feeds decode the payload.
    #[arg(long, short)]
    config: PathBuf,
    /// The transport the payload came from.
    #[arg(long, value_enum)]
    source: Source,
    /// The MQTT or Kafka topic it arrived on; selects the feed.
    #[arg(long)]
    topic: String,
    /// Read the payload from this file instead of stdin.
    #[arg(long)]
    file: Option<PathBuf>,
    /// Arrival time (RFC 3339); default now. Fixes `ingested_at` and relative times.
    #[arg(long)]
    received_at: Option<String>,
    /// Kafka partition, for event ids as ingest derives them (with --offset).
    #[arg(long, requires = "offset")]
    partition: Option<i32>,
    /// Kafka offset, for event ids as ingest derives them (with --partition).
    #[arg(long, requires = "partition")]
    offset: Option<i64>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Source {
    Mqtt,
    Kafka,
}

/// Exit 0 with events or a reject line; exit 2 for usage or config errors.
pub fn run(args: &Args) -> ExitCode {
    match decode(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("cityops decode: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn decode(args: &Args) -> anyhow::Result<()> {
    let config = Config::load(&args.config)?;
    let feeds = FeedSet::new(&config.feeds, config.rejects.max_raw_bytes)
        .map_err(anyhow::Error::msg)?
        .with_label_names(&config.labels);
    let source = match args.source {
        Source::Mqtt => SourceKind::Mqtt,
        Source::Kafka => SourceKind::Kafka,
    };
    let received_at = match &args.received_at {
        Some(text) => {
            Timestamp::parse_rfc3339(text).with_context(|| format!("--received-at {text:?}"))?
        }
        None => now()?,
    };
    let coordinates = match (args.partition, args.offset) {
        (Some(partition), Some(offset)) => {
            if source != SourceKind::Kafka {
                bail!("--partition and --offset apply to --source kafka");
            }
            Some(SourceCoordinates::Kafka {
                topic: args.topic.clone(),
                partition,
                offset,
            })
        }
        _ => None,
    };
    let payload = match &args.file {
        Some(path) => {
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?
        }
        None => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .context("cannot read stdin")?;
            buf
        }
    };
    let message = Message {
        source,
        topic: &args.topic,
        payload: &payload,
        received_at,
        coordinates: coordinates.as_ref(),
    };
    let mut out = std::io::stdout().lock();
    out.write_all(feeds.decode(&message).to_json_lines().as_bytes())?;
    out.flush()?;
    Ok(())
}

fn now() -> anyhow::Result<Timestamp> {
    let ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis();
    Ok(Timestamp::from_millis(i64::try_from(ms)?)?)
}
