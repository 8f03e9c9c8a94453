//! Retention by dropping whole daily (or monthly) partitions: works on every server, including
//! 18.16, which has no TTL.

use crate::migrations::RetentionDays;
use crate::{ClickHouse, Error};
use serde::Deserialize;
use time::{Date, Month};

/// One partition to drop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionAction {
    /// Table name.
    pub table: String,
    /// Partition value (`20261126` for daily, `202611` for monthly partitions).
    pub partition: String,
    /// The statement that drops it.
    pub statement: String,
}

/// The result of a retention run.
#[derive(Debug, Clone, Default)]
pub struct RetentionReport {
    /// Partitions dropped (or, in a dry run, to drop).
    pub actions: Vec<RetentionAction>,
}

/// The last day a partition id covers: `YYYYMMDD` is that day, `YYYYMM` the month's last day.
fn last_day(partition: &str) -> Option<Date> {
    let digits = partition.trim_matches('\'');
    let year: i32 = digits.get(0..4)?.parse().ok()?;
    let month = Month::try_from(digits.get(4..6)?.parse::<u8>().ok()?).ok()?;
    match digits.len() {
        8 => Date::from_calendar_date(year, month, digits.get(6..8)?.parse().ok()?).ok(),
        6 => Date::from_calendar_date(year, month, time::util::days_in_month(month, year)).ok(),
        _ => None,
    }
}

/// Pure planning: which of `partitions` of `table` hold only data older than `days` before
/// `today`. `days == 0` keeps everything; unrecognised partition ids are kept.
pub fn plan_drops(
    db: &str,
    table: &str,
    partitions: &[String],
    today: Date,
    days: u32,
) -> Vec<RetentionAction> {
    if days == 0 {
        return Vec::new();
    }
    let Some(cutoff) = today.checked_sub(time::Duration::days(i64::from(days))) else {
        return Vec::new();
    };
    partitions
        .iter()
        .filter(|p| last_day(p).is_some_and(|d| d < cutoff))
        .map(|p| RetentionAction {
            table: table.to_owned(),
            partition: p.clone(),
            statement: format!("ALTER TABLE {db}.{table} DROP PARTITION {p}"),
        })
        .collect()
}

#[derive(Deserialize, clickhouse::Row)]
struct Partition {
    table: String,
    partition: String,
}

#[derive(Deserialize, clickhouse::Row)]
struct Today {
    today: String,
}

/// Drops the partitions older than the retention of each table (or lists them in a dry run).
/// "Today" is the server's, so a skewed client clock cannot drop fresh data.
pub async fn apply_retention(
    ch: &ClickHouse,
    retention: RetentionDays,
    dry_run: bool,
) -> Result<RetentionReport, Error> {
    let db = ch.database();
    let today_text = ch
        .fetch::<Today>(
            "SELECT toString(today()) AS today",
            "read the server's date",
        )
        .await?
        .pop()
        .map(|t| t.today)
        .unwrap_or_default();
    let today = Date::parse(
        &today_text,
        time::macros::format_description!("[year]-[month]-[day]"),
    )
    .map_err(|_| Error::Version(format!("unexpected date {today_text:?}")))?;
    let parts = ch
        .fetch::<Partition>(
            &format!(
                "SELECT DISTINCT table, partition FROM {} WHERE database = '{db}' AND active",
                // On a cluster each shard holds its own partitions: ask every replica.
                ch.system_on_every_replica("parts")
            ),
            "list partitions",
        )
        .await?;
    let mut report = RetentionReport::default();
    for (table, _, days) in retention.by_table() {
        let stored_in = match ch.cluster() {
            Some(_) => format!("{table}{}", crate::LOCAL_SUFFIX),
            None => table.to_owned(),
        };
        let mut partitions: Vec<String> = parts
            .iter()
            .filter(|p| p.table == stored_in)
            .map(|p| p.partition.clone())
            .collect();
        partitions.sort();
        partitions.dedup();
        for mut action in plan_drops(db, table, &partitions, today, days) {
            if let Some(cluster) = ch.cluster() {
                // Dropped on every node: each replica of each shard drops its copy.
                action.statement = format!(
                    "ALTER TABLE {db}.{stored_in} ON CLUSTER {} DROP PARTITION {}",
                    cluster.name, action.partition
                );
            }
            if !dry_run {
                ch.execute(
                    &action.statement,
                    &format!("drop partition {} of {table}", action.partition),
                )
                .await?;
                tracing::info!(table, partition = %action.partition, "retention dropped a partition");
            }
            report.actions.push(action);
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    #[test]
    fn drops_only_partitions_entirely_older_than_the_retention() {
        let parts: Vec<String> = ["20260901", "20261026", "20261027", "20261126", "garbage"]
            .map(String::from)
            .to_vec();
        let drops = plan_drops("c", "events", &parts, date!(2026 - 11 - 26), 30);
        let dropped: Vec<&str> = drops.iter().map(|a| a.partition.as_str()).collect();
        assert_eq!(dropped, ["20260901", "20261026"]);
        assert_eq!(
            drops[0].statement,
            "ALTER TABLE c.events DROP PARTITION 20260901"
        );
        assert!(plan_drops("c", "events", &parts, date!(2026 - 11 - 26), 0).is_empty());
    }

    #[test]
    fn monthly_partitions_count_to_their_last_day() {
        let parts: Vec<String> = ["202609", "202610"].map(String::from).to_vec();
        // October ends on the 31st: with 30 days of retention on 2026-11-26 it is still needed.
        let drops = plan_drops("c", "alert_events", &parts, date!(2026 - 11 - 26), 30);
        assert_eq!(drops.len(), 1);
        assert_eq!(drops[0].partition, "202609");
    }
}
