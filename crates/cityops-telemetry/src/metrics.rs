//! Metric registration that enforces `cityops_<subsystem>_<name>_<unit>` on a passed-in registry.

use crate::TelemetryError;
use prometheus::{
    Counter, CounterVec, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntGauge, Opts, Registry,
};

/// Units (and unit-like nouns) a gauge or histogram name may end with. Counters end in `_total`.
const UNITS: [&str; 16] = [
    "seconds",
    "alerts",
    "series",
    "rules",
    "notifications",
    "bytes",
    "ratio",
    "info",
    "rows",
    "messages",
    "events",
    "partitions",
    "connections",
    "tasks",
    "state",
    "offset",
];

/// What kind of metric a name is checked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Other,
}

/// Checks a full metric name against the house rule: `cityops_<subsystem>_<name>_<unit>`,
/// lowercase snake case, counters ending in `_total`, other metrics in a base unit.
pub fn check_metric_name(name: &str, is_counter: bool) -> Result<(), String> {
    check(
        name,
        if is_counter {
            Kind::Counter
        } else {
            Kind::Other
        },
    )
}

fn check(name: &str, kind: Kind) -> Result<(), String> {
    let Some(rest) = name.strip_prefix("cityops_") else {
        return Err("must start with cityops_".into());
    };
    if !rest
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        || rest.contains("__")
        || rest.ends_with('_')
    {
        return Err("must be lowercase snake_case".into());
    }
    let parts: Vec<&str> = rest.split('_').collect();
    if parts.len() < 3 {
        return Err("must be cityops_<subsystem>_<name>_<unit>".into());
    }
    let last = parts[parts.len() - 1];
    match kind {
        Kind::Counter if last != "total" => Err("a counter must end in _total".into()),
        Kind::Other if last == "total" => Err("only counters end in _total".into()),
        Kind::Other if !UNITS.contains(&last) => {
            Err(format!("must end in a unit, one of: {}", UNITS.join(", ")))
        }
        _ => Ok(()),
    }
}

/// Registers one subsystem's metrics (`cityops_<subsystem>_...`) on a shared registry.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    subsystem: &'static str,
}

impl Metrics {
    /// A helper for `subsystem` (e.g. `ingest`, `clickhouse`) on `registry`.
    pub fn new(registry: &Registry, subsystem: &'static str) -> Self {
        Metrics {
            registry: registry.clone(),
            subsystem,
        }
    }

    fn full_name(&self, name: &str, kind: Kind) -> Result<String, TelemetryError> {
        let full = format!("cityops_{}_{name}", self.subsystem);
        check(&full, kind).map_err(|reason| TelemetryError::Metric {
            name: full.clone(),
            reason,
        })?;
        Ok(full)
    }

    fn register<M: prometheus::core::Collector + Clone + 'static>(
        &self,
        name: &str,
        metric: M,
    ) -> Result<M, TelemetryError> {
        self.registry
            .register(Box::new(metric.clone()))
            .map_err(|e| TelemetryError::Metric {
                name: name.to_owned(),
                reason: e.to_string(),
            })?;
        Ok(metric)
    }

    /// A counter vector; `name` must end in `_total`.
    pub fn counter_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<CounterVec, TelemetryError> {
        let full = self.full_name(name, Kind::Counter)?;
        let metric =
            CounterVec::new(Opts::new(&full, help), labels).map_err(|e| invalid(&full, e))?;
        self.register(&full, metric)
    }

    /// A counter; `name` must end in `_total`.
    pub fn counter(&self, name: &str, help: &str) -> Result<Counter, TelemetryError> {
        let full = self.full_name(name, Kind::Counter)?;
        let metric = Counter::with_opts(Opts::new(&full, help)).map_err(|e| invalid(&full, e))?;
        self.register(&full, metric)
    }

    /// A gauge vector; `name` must end in a unit.
    pub fn gauge_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<GaugeVec, TelemetryError> {
        let full = self.full_name(name, Kind::Other)?;
        let metric =
            GaugeVec::new(Opts::new(&full, help), labels).map_err(|e| invalid(&full, e))?;
        self.register(&full, metric)
    }

    /// A gauge; `name` must end in a unit.
    pub fn gauge(&self, name: &str, help: &str) -> Result<Gauge, TelemetryError> {
        let full = self.full_name(name, Kind::Other)?;
        let metric = Gauge::with_opts(Opts::new(&full, help)).map_err(|e| invalid(&full, e))?;
        self.register(&full, metric)
    }

    /// A histogram with explicit buckets; `name` must end in a unit.
    pub fn histogram(
        &self,
        name: &str,
        help: &str,
        buckets: Vec<f64>,
    ) -> Result<prometheus::Histogram, TelemetryError> {
        let full = self.full_name(name, Kind::Other)?;
        let opts = HistogramOpts::new(&full, help).buckets(buckets);
        let metric = prometheus::Histogram::with_opts(opts).map_err(|e| invalid(&full, e))?;
        self.register(&full, metric)
    }

    /// A histogram vector with explicit buckets; `name` must end in a unit.
    pub fn histogram_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
        buckets: Vec<f64>,
    ) -> Result<HistogramVec, TelemetryError> {
        let full = self.full_name(name, Kind::Other)?;
        let opts = HistogramOpts::new(&full, help).buckets(buckets);
        let metric = HistogramVec::new(opts, labels).map_err(|e| invalid(&full, e))?;
        self.register(&full, metric)
    }
}

fn invalid(name: &str, e: prometheus::Error) -> TelemetryError {
    TelemetryError::Metric {
        name: name.to_owned(),
        reason: e.to_string(),
    }
}

/// Registers the standard `process_*` metrics (CPU, memory, file descriptors) and
/// `cityops_build_version_info{version}`. The `process_*` names are the ones every Prometheus
/// exporter uses, so dashboards and alerts written for them work unchanged.
pub fn register_process_metrics(registry: &Registry, version: &str) -> Result<(), TelemetryError> {
    let collector = prometheus::process_collector::ProcessCollector::for_self();
    registry
        .register(Box::new(collector))
        .map_err(|e| invalid("process_*", e))?;
    let name = "cityops_build_version_info";
    let info = IntGauge::with_opts(
        Opts::new(name, "Build information; the value is always 1").const_label("version", version),
    )
    .map_err(|e| invalid(name, e))?;
    registry
        .register(Box::new(info.clone()))
        .map_err(|e| invalid(name, e))?;
    info.set(1);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_house_rule() {
        assert!(check_metric_name("cityops_ingest_rows_inserted_total", true).is_ok());
        assert!(check_metric_name("cityops_clickhouse_insert_duration_seconds", false).is_ok());
        assert!(check_metric_name("ingest_rows_total", true).is_err());
        assert!(check_metric_name("cityops_ingest_rows", true).is_err());
        assert!(check_metric_name("cityops_ingest_lag", false).is_err());
        assert!(check_metric_name("cityops_ingest_Rows_total", true).is_err());
        assert!(check_metric_name("cityops_ingest_rows_total", false).is_err());
    }

    #[test]
    fn helper_refuses_bad_names_and_duplicates() {
        let registry = Registry::new();
        let m = Metrics::new(&registry, "ingest");
        assert!(
            m.counter_vec("rows_inserted_total", "rows", &["feed"])
                .is_ok()
        );
        assert!(
            m.counter_vec("rows_inserted_total", "rows", &["feed"])
                .is_err()
        );
        assert!(m.gauge("lag", "no unit").is_err());
        assert!(
            m.histogram_vec("batch_rows", "rows per batch", &["feed"], vec![1.0, 10.0])
                .is_ok()
        );
    }
}
