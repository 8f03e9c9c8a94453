//! `cityops spool check` and `cityops spool salvage`: look for damage in the MQTT ingest's
//! spool, and repair it keeping every intact message (the ingest must be stopped).

use anyhow::bail;
use cityops_config::Config;
use cityops_ingest::spool::{self, Inspection};
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `cityops spool`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Read every segment and the resend table; report damage (exit 1 if any), change nothing.
    Check(Target),
    /// Move damaged files to `<dir>/damaged/` and rewrite their intact records so the ingest
    /// starts again; reports the sequence numbers that could not be kept.
    Salvage(Target),
}

/// Which spool.
#[derive(Debug, clap::Args)]
struct Target {
    /// The config file whose `[mqtt.spool] dir` is the spool.
    #[arg(long, short, conflicts_with = "dir", required_unless_present = "dir")]
    config: Option<PathBuf>,
    /// The spool directory itself.
    #[arg(long)]
    dir: Option<PathBuf>,
}

impl Target {
    fn dir(&self) -> anyhow::Result<PathBuf> {
        match (&self.dir, &self.config) {
            (Some(dir), _) => Ok(dir.clone()),
            (None, Some(config)) => Ok(Config::load(config)?.mqtt.spool.dir),
            (None, None) => bail!("give --config or --dir"),
        }
    }
}

/// Exit 0 when the spool is sound (check) or repaired (salvage), 1 when check finds damage,
/// 2 when the spool cannot be read or is in use.
pub fn run(args: &Args) -> ExitCode {
    let (name, target) = match &args.action {
        Action::Check(t) => ("check", t),
        Action::Salvage(t) => ("salvage", t),
    };
    let result = target.dir().and_then(|dir| {
        if !dir.is_dir() {
            bail!("{} is not a directory", dir.display());
        }
        let found = match args.action {
            Action::Check(_) => spool::inspect(&dir)?,
            Action::Salvage(_) => spool::salvage(&dir)?,
        };
        Ok((dir, found))
    });
    match result {
        Ok((dir, found)) => {
            print!(
                "{}",
                report(&dir, &found, matches!(args.action, Action::Salvage(_)))
            );
            if matches!(args.action, Action::Check(_)) && found.damaged() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(error) => {
            eprintln!("cityops spool {name}: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// The human report: one line per finding, then what to do.
fn report(dir: &std::path::Path, found: &Inspection, salvaged: bool) -> String {
    let mut out = String::new();
    let range = found
        .seq_range
        .map_or("none".to_owned(), |(low, high)| format!("{low}..={high}"));
    out.push_str(&format!(
        "spool {}: {} segments, {} intact messages (sequence {range})\n",
        dir.display(),
        found.segments,
        found.messages
    ));
    if let Some(detail) = &found.table_damage {
        out.push_str(&format!(
            "damaged: resend-table: {detail} (the table is rebuilt from the segments; a resend of a message acknowledged before the newest segment may be stored again)\n"
        ));
    }
    for span in &found.spans {
        let kind = if span.torn_tail {
            "torn tail"
        } else {
            "damaged"
        };
        let lost = match span.intact_after {
            _ if span.torn_tail => "never acknowledged, nothing lost".to_owned(),
            Some(after) if after > span.intact_before + 1 => format!(
                "messages {}..={} unreadable",
                span.intact_before + 1,
                after - 1
            ),
            Some(_) => "no message missing".to_owned(),
            None => format!("messages after {} unreadable", span.intact_before),
        };
        out.push_str(&format!(
            "{kind}: {} at byte {}, {} bytes: {} ({lost})\n",
            span.path.display(),
            span.offset,
            span.bytes,
            span.detail
        ));
    }
    if salvaged {
        for path in &found.moved {
            out.push_str(&format!("moved aside: {}\n", path.display()));
        }
        for path in &found.written {
            out.push_str(&format!("written: {}\n", path.display()));
        }
        out.push_str(if found.damaged() {
            "salvaged: start the ingest again; unreadable messages are in the moved files only\n"
        } else {
            "nothing to salvage\n"
        });
    } else if found.damaged() {
        out.push_str("damage found: stop the ingest and run `cityops spool salvage`\n");
    } else {
        out.push_str("ok\n");
    }
    out
}
