//! `cityops alerts list|ack|unack|comment`: on-call staff's terminal client of the alerter's
//! API (the same endpoints as the on-call console).

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use serde_json::Value;
use std::process::ExitCode;

#[derive(Debug, Parser)]
pub struct Args {
    /// The alerter's address (its `alert.external_url`).
    #[arg(
        long,
        env = "CITYOPS_ALERT_URL",
        default_value = "http://127.0.0.1:9465",
        global = true
    )]
    url: String,
    /// File holding the bearer token (else `CITYOPS_ALERT_TOKEN`); needed to act.
    #[arg(long, global = true)]
    token_file: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: AlertsCommand,
}

#[derive(Debug, Subcommand)]
enum AlertsCommand {
    /// The pending and firing alerts, most severe first.
    List {
        /// Only this state (pending, firing).
        #[arg(long)]
        state: Option<String>,
        /// Only this severity (critical, warning, info).
        #[arg(long)]
        severity: Option<String>,
        /// Only alerts with this label value (`district=Cẩm Lệ`); repeatable.
        #[arg(long = "label", value_name = "NAME=VALUE")]
        labels: Vec<String>,
        /// Print the API's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Take an alert on: escalation stops and notifications carry `acknowledged_by`.
    Ack(Action),
    /// Take an acknowledgement back.
    Unack(Action),
    /// Add a comment to an alert's history.
    Comment(Action),
}

#[derive(Debug, Parser)]
struct Action {
    /// The alert's fingerprint (16 hex digits, from `cityops alerts list`).
    fingerprint: String,
    /// What to write in its history.
    #[arg(long, short = 'm')]
    comment: Option<String>,
    /// Who is acting (default: the token's name).
    #[arg(long)]
    who: Option<String>,
}

pub fn run(args: &Args) -> ExitCode {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the runtime")
        .and_then(|rt| rt.block_on(execute(args)))
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("cityops alerts: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn token(args: &Args) -> anyhow::Result<String> {
    if let Some(file) = &args.token_file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("read the token file {}", file.display()))?;
        return Ok(text.trim_end_matches(['\n', '\r']).to_owned());
    }
    std::env::var("CITYOPS_ALERT_TOKEN")
        .context("acting on an alert needs a token: --token-file FILE or CITYOPS_ALERT_TOKEN")
}

async fn execute(args: &Args) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()?;
    let base = args.url.trim_end_matches('/');
    match &args.command {
        AlertsCommand::List {
            state,
            severity,
            labels,
            json,
        } => {
            let mut query: Vec<(String, String)> = Vec::new();
            if let Some(s) = state {
                query.push(("state".into(), s.clone()));
            }
            if let Some(s) = severity {
                query.push(("severity".into(), s.clone()));
            }
            for l in labels {
                let (k, v) = l
                    .split_once('=')
                    .with_context(|| format!("--label {l:?}: NAME=VALUE"))?;
                query.push((k.into(), v.into()));
            }
            let response = client
                .get(format!("{base}/api/v1/alerts"))
                .query(&query)
                .send()
                .await
                .with_context(|| format!("reach the alerter at {base}"))?;
            let body = answer(response).await?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&body)?);
            } else {
                print!("{}", table(&body));
            }
            Ok(())
        }
        AlertsCommand::Ack(a) | AlertsCommand::Unack(a) | AlertsCommand::Comment(a) => {
            let verb = match &args.command {
                AlertsCommand::Ack(_) => "ack",
                AlertsCommand::Unack(_) => "unack",
                _ => "comment",
            };
            let token = token(args)?;
            let mut body = serde_json::Map::new();
            if let Some(c) = &a.comment {
                body.insert("comment".into(), Value::from(c.as_str()));
            }
            if let Some(w) = &a.who {
                body.insert("who".into(), Value::from(w.as_str()));
            }
            let response = client
                .post(format!("{base}/api/v1/alerts/{}/{verb}", a.fingerprint))
                .bearer_auth(token)
                .header("content-type", "application/json")
                .body(Value::Object(body).to_string())
                .send()
                .await
                .with_context(|| format!("reach the alerter at {base}"))?;
            let body = answer(response).await?;
            let alert = &body["data"];
            let ack = &alert["acknowledged"];
            println!(
                "{} {} {}: {}",
                alert["alertname"].as_str().unwrap_or(""),
                alert["fingerprint"].as_str().unwrap_or(""),
                verb,
                if ack.is_null() {
                    "not acknowledged".to_owned()
                } else {
                    format!("acknowledged by {}", ack["by"].as_str().unwrap_or(""))
                }
            );
            Ok(())
        }
    }
}

async fn answer(response: reqwest::Response) -> anyhow::Result<Value> {
    let status = response.status();
    let text = response.text().await?;
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text.clone()));
    if !status.is_success() {
        let message = body["error"].as_str().unwrap_or(&text);
        bail!("the alerter answered {status}: {message}");
    }
    Ok(body)
}

fn severity_rank(s: &str) -> u8 {
    match s {
        "critical" => 0,
        "warning" => 1,
        _ => 2,
    }
}

/// The alerts as a table, most severe and oldest first.
fn table(body: &Value) -> String {
    let mut alerts: Vec<&Value> = body["data"]["alerts"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    alerts.sort_by_key(|a| {
        (
            severity_rank(a["severity"].as_str().unwrap_or("")),
            a["activeAt"].as_str().unwrap_or("").to_owned(),
        )
    });
    let mut rows = vec![[
        "FINGERPRINT".to_owned(),
        "SEVERITY".to_owned(),
        "STATE".to_owned(),
        "ALERT".to_owned(),
        "DISTRICT".to_owned(),
        "SINCE".to_owned(),
        "ACK".to_owned(),
        "SUMMARY".to_owned(),
    ]];
    for a in &alerts {
        let s = |v: &Value| v.as_str().unwrap_or("").to_owned();
        let mut state = s(&a["state"]);
        if a["escalation"].as_u64().unwrap_or(0) > 0 {
            state = format!("{state}↑{}", a["escalation"]);
        }
        rows.push([
            s(&a["fingerprint"]),
            s(&a["severity"]),
            state,
            s(&a["alertname"]),
            s(&a["labels"]["district"]),
            s(&a["activeAt"]),
            s(&a["acknowledged"]["by"]),
            s(&a["annotations"]["summary"]),
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &rows {
        for (i, width) in widths.iter().enumerate() {
            let cell = &r[i];
            out.push_str(cell);
            out.push_str(&" ".repeat(width - cell.chars().count() + 2));
        }
        out.push_str(&r[7]);
        out.push('\n');
    }
    if alerts.is_empty() {
        out.push_str("(no pending or firing alerts)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_puts_critical_first_and_shows_who_acknowledged() {
        let body = serde_json::json!({"data": {"alerts": [
            {"fingerprint": "00000000000000aa", "severity": "warning", "state": "firing", "alertname": "SensorSilent",
             "labels": {"district": "Hải Châu"}, "activeAt": "2026-01-01T00:00:00.000Z", "acknowledged": null,
             "escalation": 0, "annotations": {"summary": "im lặng"}},
            {"fingerprint": "00000000000000bb", "severity": "critical", "state": "firing", "alertname": "FloodGaugeHigh",
             "labels": {"district": "Cẩm Lệ"}, "activeAt": "2026-01-01T00:05:00.000Z", "acknowledged": {"by": "lan"},
             "escalation": 1, "annotations": {"summary": "Mực nước 2.6 m"}}
        ]}});
        let text = table(&body);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("FINGERPRINT"), "{text}");
        assert!(
            lines[1].contains("FloodGaugeHigh")
                && lines[1].contains("firing↑1")
                && lines[1].contains("lan"),
            "{text}"
        );
        assert!(lines[2].contains("SensorSilent"), "{text}");
    }
}
