//! `cityops rules check` and `cityops rules test`: the rule tooling on-call engineers run before
//! a rule file reaches the alerter (as `promtool check rules` / `promtool test rules`).

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
}

/// Runs the subcommand.
pub fn run(args: &Args) -> ExitCode {
    let ok = match &args.command {
        Command::Check { files } => check(files),
        Command::Test { files } => test(files),
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
