//! `cityops rules check`, `cityops rules test` and `cityops rules backtest`: the rule tooling
//! on-call engineers run before a rule file reaches the alerter (as `promtool check rules` /
//! `promtool test rules`), and the replay of stored history through rules to tune them.

use cityops_rules::{RuleError, RuleSet, TestFile};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Arguments of `cityops rules`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Check rule files: every error with file, line, column and what is wrong (exit 1 if any).
    Check {
        /// Rule files (YAML).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Run rule test files: input series over time and the alerts expected (exit 1 on a failure).
    Test {
        /// Test files (YAML); the rule files they name are read relative to each.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Replay the events stored in ClickHouse through rules (query rules at their interval)
    /// and print when each alert would have fired and resolved, with a summary per rule.
    Backtest(BacktestArgs),
}

/// Arguments of `cityops rules backtest`.
#[derive(Debug, clap::Args)]
pub struct BacktestArgs {
    /// The config: its `[clickhouse]` (and `[alert.queries]` for query rules).
    #[arg(long, short = 'c')]
    config: PathBuf,
    /// Rule files to replay (default: the config's `alert.rule_files`).
    #[arg(long = "rules")]
    rules: Vec<PathBuf>,
    /// Start of the replay (RFC 3339, e.g. 2026-10-01T00:00:00Z).
    #[arg(long)]
    from: String,
    /// End of the replay (RFC 3339).
    #[arg(long)]
    to: String,
    /// Which time an event arrived at: `event` (its event time: the city as it happened) or
    /// `stored` (the `ingested_at` the ingest stored, to the second).
    #[arg(long, default_value = "event")]
    arrival: String,
    /// Processing time moves on in steps of this (transitions fall at exact instants
    /// whatever the step; a smaller one is only slower).
    #[arg(long, default_value = "1m")]
    tick: humantime::Duration,
    /// Print transitions and the summary as JSON lines instead of text.
    #[arg(long)]
    json: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// Runs the subcommand.
pub fn run(args: &Args) -> ExitCode {
    let ok = match &args.command {
        Command::Check { files } => check(files),
        Command::Test { files } => test(files),
        Command::Backtest(args) => match backtest(args) {
            Ok(()) => true,
            Err(error) => {
                eprintln!("cityops rules backtest: {error:#}");
                false
            }
        },
    };
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Reads `(name, text)` of each file; a file that cannot be read is an error of its own.
pub fn read_files(files: &[PathBuf]) -> Result<Vec<(String, String)>, Vec<RuleError>> {
    let mut texts = Vec::new();
    let mut errors = Vec::new();
    for path in files {
        let name = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => texts.push((name, text)),
            Err(e) => errors.push(RuleError {
                file: name,
                line: 0,
                column: 0,
                message: format!("cannot read: {e}"),
            }),
        }
    }
    if errors.is_empty() {
        Ok(texts)
    } else {
        Err(errors)
    }
}

/// Loads rule files into a rule set, or every error.
pub fn load(files: &[PathBuf]) -> Result<RuleSet, Vec<RuleError>> {
    RuleSet::parse(&read_files(files)?)
}

fn check(files: &[PathBuf]) -> bool {
    let mut out = std::io::stdout().lock();
    match load(files) {
        Ok(set) => {
            for file in files {
                let name = file.display().to_string();
                let count = set.rules.iter().filter(|r| r.file == name).count();
                let _ = writeln!(out, "{name}: ok ({count} rules)");
            }
            true
        }
        Err(errors) => {
            for e in &errors {
                let _ = writeln!(out, "{e}");
            }
            let _ = writeln!(out, "{} error(s)", errors.len());
            false
        }
    }
}

fn test(files: &[PathBuf]) -> bool {
    let mut out = std::io::stdout().lock();
    let mut all_ok = true;
    for file in files {
        let name = file.display().to_string();
        let parsed = std::fs::read_to_string(file)
            .map_err(|e| {
                vec![RuleError {
                    file: name.clone(),
                    line: 0,
                    column: 0,
                    message: format!("cannot read: {e}"),
                }]
            })
            .and_then(|text| TestFile::parse(&name, &text));
        let test_file = match parsed {
            Ok(t) => t,
            Err(errors) => {
                all_ok = false;
                for e in &errors {
                    let _ = writeln!(out, "{e}");
                }
                continue;
            }
        };
        let dir = file.parent().unwrap_or(Path::new("."));
        let rule_files: Vec<PathBuf> = test_file.rule_files.iter().map(|r| dir.join(r)).collect();
        let rules = match load(&rule_files) {
            Ok(r) => r,
            Err(errors) => {
                all_ok = false;
                let _ = writeln!(out, "{name}: its rule files do not load:");
                for e in &errors {
                    let _ = writeln!(out, "  {e}");
                }
                continue;
            }
        };
        let failures = test_file.run(&rules);
        let (tests, checks) = test_file.counts();
        if failures.is_empty() {
            let _ = writeln!(out, "{name}: PASS ({tests} tests, {checks} checks)");
        } else {
            all_ok = false;
            let _ = writeln!(
                out,
                "{name}: FAIL ({} of {checks} checks in {tests} tests)",
                failures.len()
            );
            for f in &failures {
                let _ = write!(out, "  {f}");
                if !f.ends_with('\n') {
                    let _ = writeln!(out);
                }
            }
        }
    }
    all_ok
}

fn parse_time(text: &str, what: &str) -> anyhow::Result<i64> {
    cityops_event::Timestamp::parse_rfc3339(text)
        .map(|t| t.as_millis())
        .map_err(|e| anyhow::anyhow!("--{what} {text:?}: {e}"))
}

fn backtest(args: &BacktestArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    use cityops_alert::backtest::{self, Arrival, Options};
    let config = cityops_config::Config::load(&args.config)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("load {}", args.config.display()))?;
    // Config::load has made the config's rule files relative to where it is.
    let files: Vec<PathBuf> = if args.rules.is_empty() {
        config.alert.rule_files.clone()
    } else {
        args.rules.clone()
    };
    let rules = load(&files).map_err(|errors| {
        anyhow::anyhow!(
            "the rules do not load:\n{}",
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        )
    })?;
    let from_ms = parse_time(&args.from, "from")?.div_euclid(1_000) * 1_000;
    let to_ms = parse_time(&args.to, "to")?.div_euclid(1_000) * 1_000;
    anyhow::ensure!(to_ms > from_ms, "--to must be after --from");
    let arrival = match args.arrival.as_str() {
        "event" => Arrival::EventTime,
        "stored" => Arrival::Stored,
        other => anyhow::bail!("--arrival {other:?}: event or stored"),
    };
    let tick_ms = i64::try_from(args.tick.as_millis())
        .unwrap_or(i64::MAX)
        .max(1_000);
    let options = Options {
        from_ms,
        to_ms,
        arrival,
        tick_ms,
        chunk_ms: 3_600_000,
    };
    let bar = if args.quiet || args.json {
        indicatif::ProgressBar::hidden()
    } else {
        let bar = indicatif::ProgressBar::new(u64::try_from(to_ms - from_ms).unwrap_or(0) / 1_000);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{bar:40}] {percent:>3}% of the range, {msg}, ETA {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let started = std::time::Instant::now();
    let report = runtime
        .block_on(backtest::run(&config, &rules, &options, |p| {
            bar.set_position(u64::try_from(p.done_ms).unwrap_or(0) / 1_000);
            bar.set_message(format!("{} events", p.events));
        }))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    bar.finish_and_clear();
    let summary = backtest::summarize(&rules, &report.transitions, to_ms);
    let mut out = std::io::stdout().lock();
    if args.json {
        for t in &report.transitions {
            let line = serde_json::json!({
                "rule": &*t.rule,
                "fingerprint": format!("{:016x}", t.fingerprint),
                "from": t.from.as_str(),
                "to": t.to.as_str(),
                "at_ms": t.at_ms,
                "at": cityops_event::Timestamp::from_millis(t.at_ms).map(|t| t.to_string()).unwrap_or_default(),
                "labels": t.labels,
                "value": t.value.as_ref().and_then(cityops_rules::Value::as_f64),
            });
            writeln!(out, "{line}")?;
        }
        writeln!(
            out,
            "{}",
            serde_json::json!({"summary": summary, "events": report.events, "evaluations": report.evaluations, "failed_evaluations": report.failed_evaluations})
        )?;
        return Ok(());
    }
    for t in &report.transitions {
        writeln!(out, "{}", backtest::describe(t))?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "{:<32} {:>7} {:>9} {:>14} {:>6}",
        "RULE", "FIRED", "ALERTS", "FIRING TIME", "FLAPS"
    )?;
    for s in &summary {
        let firing = humantime::format_duration(std::time::Duration::from_secs(
            u64::try_from(s.firing_ms / 1_000).unwrap_or(0),
        ));
        writeln!(
            out,
            "{:<32} {:>7} {:>9} {:>14} {:>6}",
            s.rule,
            s.fired,
            s.instances,
            firing.to_string(),
            s.flaps
        )?;
    }
    writeln!(
        out,
        "\n{} events and {} query evaluations ({} failed) replayed in {:.1?}",
        report.events,
        report.evaluations,
        report.failed_evaluations,
        started.elapsed()
    )?;
    Ok(())
}
