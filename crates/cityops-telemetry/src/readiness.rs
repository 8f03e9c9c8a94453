//! Readiness: each component reports whether it can do its job; `/readyz` is the conjunction.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

/// The readiness of every registered component.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    components: Arc<Mutex<BTreeMap<String, bool>>>,
}

/// One component's handle to report its readiness; starts not ready.
#[derive(Debug, Clone)]
pub struct ReadinessHandle {
    name: String,
    components: Arc<Mutex<BTreeMap<String, bool>>>,
}

impl Readiness {
    /// Registers a component (e.g. `clickhouse`, `kafka`), initially not ready.
    pub fn register(&self, name: impl Into<String>) -> ReadinessHandle {
        let name = name.into();
        self.lock().insert(name.clone(), false);
        ReadinessHandle {
            name,
            components: Arc::clone(&self.components),
        }
    }

    /// The components that are not ready, by name; empty means ready.
    pub fn not_ready(&self) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|(_, ready)| !**ready)
            .map(|(name, _)| name.clone())
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, bool>> {
        // A panic elsewhere while holding this lock leaves a plain map of flags: still usable.
        self.components
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl ReadinessHandle {
    /// Reports whether the component can do its job now.
    pub fn set_ready(&self, ready: bool) {
        self.components
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(self.name.clone(), ready);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_component_is() {
        let r = Readiness::default();
        assert!(r.not_ready().is_empty());
        let ch = r.register("clickhouse");
        let kafka = r.register("kafka");
        assert_eq!(r.not_ready(), ["clickhouse", "kafka"]);
        ch.set_ready(true);
        kafka.set_ready(true);
        assert!(r.not_ready().is_empty());
        ch.set_ready(false);
        assert_eq!(r.not_ready(), ["clickhouse"]);
    }
}
