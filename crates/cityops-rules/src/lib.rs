//! Pure alert rule evaluation. Rule files (YAML, grouped like Prometheus rule groups) become a
//! [`RuleSet`]; an [`Engine`] takes events and processing time as arguments and returns
//! [`Transition`]s. No I/O and no clock read: the alerter service and `cityops rules test` drive
//! it the same way.

mod condition;
mod duration;
mod engine;
mod error;
mod file;
mod labels;
mod lifecycle;
mod notation;
mod rule;
mod selector;
mod template;
mod testfile;
#[cfg(test)]
mod testing;
mod window;

pub use condition::{Condition, Value};
pub use duration::DurationMs;
pub use engine::{
    ActiveAlert, Engine, QueryRow, RuleSnapshot, RuleStats, Snapshot, Transition, fingerprint_of,
};
pub use error::RuleError;
pub use labels::{Field, is_label_name};
pub use lifecycle::{AlertState, Lifecycle, Timers};
pub use rule::{
    Aggregate, DEFAULT_LATENESS_MS, DEFAULT_MAX_SERIES, Kind, MAX_WINDOW_SAMPLES, NOW_PLACEHOLDER,
    Rule, RuleSet, Severity, parse_file, render_sql,
};
pub use selector::{MatchOp, Matcher, Selector};
pub use testfile::TestFile;
