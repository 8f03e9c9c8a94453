//! Query rules' evaluations: each query rule's SQL runs on ClickHouse as the read-only user
//! at every multiple of its interval (the same instants in every replica and in a backtest),
//! and its rows go to the evaluator. A failing or slow query marks its rule unhealthy and
//! never holds up another rule or the stream rules.

use crate::service::{Input, Shared, lock, now_ms};
use cityops_clickhouse::{QueryLimits, QueryTable, ReadOnlyClient};
use cityops_config::Config;
use cityops_rules::{Kind, QueryRow, Rule};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// What the scheduler needs of a query rule.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryRuleSpec {
    /// The rule's name.
    pub name: String,
    /// Its SQL as written (`$now` not yet filled in).
    pub sql: String,
    /// Its interval.
    pub interval_ms: i64,
    /// The label columns, in the rule's order.
    pub by: Vec<String>,
    /// The value column.
    pub value_column: String,
}

impl QueryRuleSpec {
    /// The spec of a query rule (None for other kinds).
    pub fn of(rule: &Rule) -> Option<QueryRuleSpec> {
        let Kind::Query {
            sql,
            interval_ms,
            value_column,
            ..
        } = &rule.kind
        else {
            return None;
        };
        Some(QueryRuleSpec {
            name: rule.name.to_string(),
            sql: sql.clone(),
            interval_ms: *interval_ms,
            by: rule.by.iter().map(|(n, _)| n.clone()).collect(),
            value_column: value_column.clone(),
        })
    }
}

/// The last evaluation instant at or before `now_ms` for a rule of `interval_ms`.
pub fn aligned(now_ms: i64, interval_ms: i64) -> i64 {
    now_ms.div_euclid(interval_ms) * interval_ms
}

/// The result of one evaluation as the evaluator takes it.
pub struct QueryOutcome {
    /// The rule.
    pub rule: String,
    /// The evaluation instant.
    pub at_ms: i64,
    /// The rows, or why there are none.
    pub result: Result<Vec<QueryRow>, String>,
}

/// Turns a result table into rows: the `by` columns (as text) and the value column (a
/// number; NULL or text that is not a number gives no value).
pub fn rows_of(spec: &QueryRuleSpec, table: &QueryTable) -> Result<Vec<QueryRow>, String> {
    let position = |name: &str| table.columns.iter().position(|c| c == name);
    let missing: Vec<&str> = spec
        .by
        .iter()
        .map(String::as_str)
        .chain([spec.value_column.as_str()])
        .filter(|c| position(c).is_none())
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "the query returned columns {:?}; the rule needs {:?} (by) and {:?} (the value), missing {:?}",
            table.columns, spec.by, spec.value_column, missing
        ));
    }
    let label_at: Vec<usize> = spec.by.iter().filter_map(|b| position(b)).collect();
    let value_at = position(&spec.value_column).unwrap_or(0);
    Ok(table
        .rows
        .iter()
        .map(|row| QueryRow {
            labels: label_at
                .iter()
                .map(|&i| match row.get(i) {
                    Some(serde_json::Value::String(s)) => s.clone(),
                    Some(serde_json::Value::Null) | None => String::new(),
                    Some(other) => other.to_string(),
                })
                .collect(),
            value: match row.get(value_at) {
                Some(serde_json::Value::Number(n)) => n.as_f64(),
                Some(serde_json::Value::String(s)) => s.parse().ok(),
                _ => None,
            },
        })
        .collect())
}

/// The client the query rules read with: the query user's credentials, the server's TLS.
pub fn client(config: &Config) -> Result<ReadOnlyClient, cityops_clickhouse::Error> {
    let q = &config.alert.queries;
    ReadOnlyClient::new(
        &config.clickhouse,
        &q.user,
        q.password.as_ref().map(|p| p.expose()),
    )
}

/// Runs the query rules with `client` until `cancel`; the set of rules follows reloads
/// (`shared.query_rules`).
pub async fn run(
    config: &Config,
    client: ReadOnlyClient,
    shared: Arc<Shared>,
    cancel: CancellationToken,
) {
    let q = &config.alert.queries;
    let limits = QueryLimits {
        timeout: Duration::from_millis(q.timeout_ms),
        max_rows: q.max_rows,
    };
    let slots = Arc::new(tokio::sync::Semaphore::new(q.concurrency));
    let running: Arc<std::sync::Mutex<HashSet<String>>> = Arc::default();
    let mut last: HashMap<String, i64> = HashMap::new();
    let tasks = tokio_util::task::TaskTracker::new();
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
        let specs = lock(&shared.query_rules).clone();
        last.retain(|name, _| specs.iter().any(|s| &s.name == name));
        let now = now_ms();
        for spec in specs {
            let at = aligned(now, spec.interval_ms);
            if last.get(&spec.name).is_some_and(|&l| l >= at) {
                continue;
            }
            last.insert(spec.name.clone(), at);
            if !lock(&running).insert(spec.name.clone()) {
                // The previous evaluation is still running: this one is skipped, not queued.
                shared
                    .metrics
                    .query_evaluations
                    .with_label_values(&[&spec.name, "skipped"])
                    .inc();
                tracing::warn!(
                    rule = spec.name,
                    "query rule skipped an evaluation: the previous one is still running"
                );
                continue;
            }
            let (client, slots, running, shared) = (
                client.clone(),
                Arc::clone(&slots),
                Arc::clone(&running),
                Arc::clone(&shared),
            );
            tasks.spawn(async move {
                let outcome = match slots.acquire().await {
                    Ok(_permit) => evaluate(&client, &spec, at, limits, &shared).await,
                    Err(_) => return,
                };
                lock(&running).remove(&spec.name);
                hand_over(&shared, Input::Query(outcome)).await;
            });
        }
    }
    tasks.close();
    let _ = tokio::time::timeout(Duration::from_secs(2), tasks.wait()).await;
}

/// One evaluation: the SQL with `$now` filled in, run within the limits.
async fn evaluate(
    client: &ReadOnlyClient,
    spec: &QueryRuleSpec,
    at_ms: i64,
    limits: QueryLimits,
    shared: &Shared,
) -> QueryOutcome {
    let sql = cityops_rules::render_sql(&spec.sql, at_ms);
    let started = Instant::now();
    let answer = client.select(&sql, limits).await;
    let metrics = &shared.metrics;
    metrics
        .query_duration
        .with_label_values(&[&spec.name])
        .observe(started.elapsed().as_secs_f64());
    let result = match answer {
        Ok(table) => rows_of(spec, &table).map_err(|e| ("columns", e)),
        Err(e) => Err((e.kind(), e.to_string())),
    };
    let outcome = match &result {
        Ok(_) => "ok",
        Err((kind, _)) => kind,
    };
    metrics
        .query_evaluations
        .with_label_values(&[&spec.name, outcome])
        .inc();
    metrics
        .query_unhealthy
        .with_label_values(&[&spec.name])
        .set(f64::from(u8::from(result.is_err())));
    if let Err((_, error)) = &result {
        tracing::warn!(rule = spec.name, %error, took_ms = started.elapsed().as_millis() as u64, "query rule failed; its alerts stay as they were");
    }
    QueryOutcome {
        rule: spec.name.clone(),
        at_ms,
        result: result.map_err(|(_, e)| e),
    }
}

/// Hands an input to the evaluator, waiting while its queue is full.
async fn hand_over(shared: &Shared, mut input: Input) {
    loop {
        match shared.input.try_send(input) {
            Ok(()) => return,
            Err(std::sync::mpsc::TrySendError::Full(back)) => {
                input = back;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec() -> QueryRuleSpec {
        QueryRuleSpec {
            name: "R".into(),
            sql: "SELECT 1".into(),
            interval_ms: 60_000,
            by: vec!["district".into(), "ward".into()],
            value_column: "ratio".into(),
        }
    }

    #[test]
    fn rows_take_labels_in_the_rules_order_and_the_value_as_a_number() {
        let table = QueryTable {
            columns: vec!["ward".into(), "ratio".into(), "district".into()],
            types: vec!["String".into(), "Float64".into(), "String".into()],
            rows: vec![
                vec![json!("Hòa Xuân"), json!(3.5), json!("Cẩm Lệ")],
                vec![json!("An Hải Bắc"), json!(null), json!("Sơn Trà")],
                vec![json!(12), json!("2.5"), json!("Sơn Trà")],
            ],
        };
        let rows = rows_of(&spec(), &table).unwrap();
        assert_eq!(rows[0].labels, ["Cẩm Lệ", "Hòa Xuân"]);
        assert_eq!(rows[0].value, Some(3.5));
        assert_eq!(rows[1].value, None);
        assert_eq!(rows[2].labels, ["Sơn Trà", "12"]);
        assert_eq!(rows[2].value, Some(2.5));
    }

    #[test]
    fn a_missing_column_is_an_error_that_names_it() {
        let table = QueryTable {
            columns: vec!["district".into(), "value".into()],
            types: vec!["String".into(), "Float64".into()],
            rows: vec![],
        };
        let error = rows_of(&spec(), &table).unwrap_err();
        assert!(error.contains(r#"missing ["ward", "ratio"]"#), "{error}");
    }

    #[test]
    fn evaluations_fall_on_multiples_of_the_interval() {
        assert_eq!(aligned(1_767_225_659_999, 60_000), 1_767_225_600_000);
        assert_eq!(aligned(1_767_225_660_000, 60_000), 1_767_225_660_000);
    }
}
