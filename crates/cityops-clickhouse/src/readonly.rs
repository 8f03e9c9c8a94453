//! Operator-written SELECTs (the alerter's query rules) run over HTTP as a read-only user with
//! a time and a row limit; results come back as JSON whatever their columns.

use std::time::Duration;

/// A client for SELECTs whose columns are not known in advance.
#[derive(Clone)]
pub struct ReadOnlyClient {
    http: reqwest::Client,
    url: String,
    database: String,
    user: String,
    password: Option<String>,
}

/// The limits of one query.
#[derive(Debug, Clone, Copy)]
pub struct QueryLimits {
    /// The server stops the query after this long (and the client gives up a second later).
    pub timeout: Duration,
    /// More rows than this make the query fail (never a silently cut result).
    pub max_rows: u64,
}

/// A result: column names and types, then the rows as JSON values in column order.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryTable {
    /// Column names, in order.
    pub columns: Vec<String>,
    /// Column types as ClickHouse names them.
    pub types: Vec<String>,
    /// The rows.
    pub rows: Vec<Vec<serde_json::Value>>,
}

/// Why a query gave no result.
#[derive(Debug, thiserror::Error)]
pub enum ReadOnlyError {
    /// The query ran longer than its timeout.
    #[error("timed out after {after_ms} ms")]
    Timeout {
        /// The timeout.
        after_ms: u64,
    },
    /// The result had more rows than allowed.
    #[error("more than {max_rows} rows")]
    TooManyRows {
        /// The limit.
        max_rows: u64,
    },
    /// The server refused or failed the query.
    #[error("ClickHouse error {code}: {message}")]
    Server {
        /// ClickHouse's error code (0 when it gave none).
        code: u32,
        /// Its message, first line.
        message: String,
    },
    /// The server could not be reached or the answer was cut.
    #[error("cannot reach ClickHouse: {0}")]
    Transport(String),
    /// The answer was not the JSON asked for.
    #[error("unexpected answer: {0}")]
    Format(String),
}

impl ReadOnlyError {
    /// A short bounded name of the kind of failure, for metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            ReadOnlyError::Timeout { .. } => "timeout",
            ReadOnlyError::TooManyRows { .. } => "too_many_rows",
            ReadOnlyError::Server { .. } => "server",
            ReadOnlyError::Transport(_) => "transport",
            ReadOnlyError::Format(_) => "format",
        }
    }
}

/// ClickHouse's code for an exceeded time limit, and for an exceeded result size (18.16 and
/// current servers; 158 is also "too many rows to read", told apart by its message).
const TIMEOUT_EXCEEDED: u32 = 159;
const TOO_MANY_ROWS: [u32; 2] = [158, 396];

#[derive(serde::Deserialize)]
struct Meta {
    name: String,
    #[serde(rename = "type")]
    type_: String,
}

#[derive(serde::Deserialize)]
struct Compact {
    meta: Vec<Meta>,
    data: Vec<Vec<serde_json::Value>>,
}

impl ReadOnlyClient {
    /// A client for the server and database of `clickhouse` (its url and TLS settings),
    /// reading as `user`.
    pub fn new(
        clickhouse: &cityops_config::ClickHouseConfig,
        user: &str,
        password: Option<&str>,
    ) -> Result<ReadOnlyClient, crate::Error> {
        let tls = crate::tls::tls_client_config(clickhouse)?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls((*tls).clone())
            .build()
            .map_err(|e| crate::Error::Tls {
                what: "the read-only HTTP client".into(),
                reason: e.to_string(),
            })?;
        Ok(ReadOnlyClient {
            http,
            url: clickhouse.url.trim_end_matches('/').to_owned(),
            database: clickhouse.database.clone(),
            user: user.to_owned(),
            password: password.map(str::to_owned),
        })
    }

    /// Runs one SELECT. Unqualified tables are those of the cityops database. The limits are
    /// the server's own settings (`max_execution_time`, `max_result_rows` with `throw`), so a
    /// query that would exceed them fails instead of returning part of its rows.
    pub async fn select(
        &self,
        sql: &str,
        limits: QueryLimits,
    ) -> Result<QueryTable, ReadOnlyError> {
        let seconds = limits.timeout.as_secs_f64().ceil().max(1.0) as u64;
        let settings = [
            ("database", self.database.clone()),
            ("default_format", "JSONCompact".to_owned()),
            ("max_execution_time", seconds.to_string()),
            ("timeout_overflow_mode", "throw".to_owned()),
            ("max_result_rows", limits.max_rows.to_string()),
            ("result_overflow_mode", "throw".to_owned()),
            ("output_format_json_quote_64bit_integers", "0".to_owned()),
            // Errors come as an HTTP status, never after a 200 and half a result.
            ("wait_end_of_query", "1".to_owned()),
            // On a cluster a subquery over a Distributed table inside a query over another
            // (`IN`, `JOIN`) runs once, on the node asked, and its result goes to every shard:
            // the same answer as on one server. ClickHouse's default refuses such queries.
            // (No effect without Distributed tables.)
            ("distributed_product_mode", "global".to_owned()),
        ];
        let mut request = self
            .http
            .post(&self.url)
            .query(&settings)
            .header("X-ClickHouse-User", &self.user)
            .timeout(limits.timeout + Duration::from_secs(1))
            .body(sql.to_owned());
        if let Some(password) = &self.password {
            request = request.header("X-ClickHouse-Key", password);
        }
        let timeout_ms = limits.timeout.as_millis() as u64;
        let transport = |e: reqwest::Error| {
            if e.is_timeout() {
                ReadOnlyError::Timeout {
                    after_ms: timeout_ms,
                }
            } else {
                ReadOnlyError::Transport(crate::error_chain(&e))
            }
        };
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        let body = response.bytes().await.map_err(transport)?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body);
            let code = error_code_of(&text);
            return Err(match code {
                TIMEOUT_EXCEEDED => ReadOnlyError::Timeout {
                    after_ms: timeout_ms,
                },
                c if TOO_MANY_ROWS.contains(&c) && text.contains("Limit for result") => {
                    ReadOnlyError::TooManyRows {
                        max_rows: limits.max_rows,
                    }
                }
                code => ReadOnlyError::Server {
                    code,
                    message: text.lines().next().unwrap_or("").trim().to_owned(),
                },
            });
        }
        let parsed: Compact =
            serde_json::from_slice(&body).map_err(|e| ReadOnlyError::Format(e.to_string()))?;
        Ok(QueryTable {
            columns: parsed.meta.iter().map(|m| m.name.clone()).collect(),
            types: parsed.meta.into_iter().map(|m| m.type_).collect(),
            rows: parsed.data,
        })
    }
}

/// The `Code: N` of a ClickHouse error text (0 if none).
fn error_code_of(text: &str) -> u32 {
    text.split("Code: ")
        .nth(1)
        .and_then(|rest| {
            rest.split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_are_read_from_both_server_generations() {
        assert_eq!(
            error_code_of("Code: 159, e.displayText() = DB::Exception: Timeout exceeded"),
            159
        );
        assert_eq!(
            error_code_of(
                "Code: 396. DB::Exception: Limit for result exceeded. (TOO_MANY_ROWS_OR_BYTES)"
            ),
            396
        );
        assert_eq!(error_code_of("something else"), 0);
    }
}
