//! The messages being worked on, by delivery (receipt handle), for the shutdown hand-back and the
//! in-flight gauge. An entry lives exactly as long as its guard, so a task that ends in any way, a
//! panic or an abort included, leaves neither its entry nor the gauge behind.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::observe::metrics::Telemetry;
use crate::worker::lease::Lease;

#[derive(Debug, Default)]
pub struct InFlight {
    /// Keyed by receipt handle: two concurrent deliveries of one message (a standard queue may
    /// redeliver) are two entries, and finishing one does not forget the other.
    leases: Mutex<HashMap<String, Arc<Lease>>>,
    /// Woken whenever a delivery leaves.
    left: tokio::sync::Notify,
}

impl InFlight {
    /// Registers a delivery; it is removed when the guard drops.
    pub fn enter(&self, lease: Arc<Lease>, telemetry: Arc<Telemetry>) -> InFlightGuard<'_> {
        telemetry.metrics.in_flight(1);
        let key = lease.receipt_handle().to_owned();
        lock(&self.leases).insert(key.clone(), lease);
        InFlightGuard {
            registry: self,
            key,
            telemetry,
        }
    }

    /// The deliveries still being worked on whose delete was not submitted yet.
    pub fn unfinished(&self) -> Vec<Arc<Lease>> {
        lock(&self.leases)
            .values()
            .filter(|lease| !lease.is_committed())
            .cloned()
            .collect()
    }

    /// Completes when a delivery leaves (or at once if one left since the last wait).
    pub async fn one_left(&self) {
        self.left.notified().await;
    }

    pub fn len(&self) -> usize {
        lock(&self.leases).len()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub struct InFlightGuard<'a> {
    registry: &'a InFlight,
    key: String,
    telemetry: Arc<Telemetry>,
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        lock(&self.registry.leases).remove(&self.key);
        self.telemetry.metrics.in_flight(-1);
        self.registry.left.notify_one();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn entries_are_per_delivery_and_leave_with_their_task_even_on_panic() {
        let telemetry = Arc::new(Telemetry::new(Duration::from_secs(60)));
        let registry = Arc::new(InFlight::default());
        let first = Arc::new(Lease::new("m-1".into(), "receipt-a".into()));
        let second = Arc::new(Lease::new("m-1".into(), "receipt-b".into()));
        let a = registry.enter(first, telemetry.clone());
        let b = registry.enter(second, telemetry.clone());
        assert_eq!(
            registry.len(),
            2,
            "two deliveries of one message are two entries"
        );
        drop(a);
        assert_eq!(registry.unfinished()[0].receipt_handle(), "receipt-b");
        drop(b);
        assert!(registry.is_empty());

        let (r, t) = (registry.clone(), telemetry.clone());
        let task = tokio::spawn(async move {
            let _g = r.enter(Arc::new(Lease::new("m-2".into(), "receipt-c".into())), t);
            panic!("a bug in a message task");
        });
        assert!(task.await.unwrap_err().is_panic());
        assert!(registry.is_empty(), "the panic left no entry");
        assert!(telemetry.render().contains("mpr_in_flight 0"));
    }
}
