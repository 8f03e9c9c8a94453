//! Deliveries that wait in memory while the spool cannot take them. QoS 1 deliveries are bounded
//! by the broker's in-flight window (it sends no more until they are acknowledged) and are never
//! dropped; QoS 0 deliveries keep coming, so their bytes are bounded and the oldest are dropped
//! beyond the bound (the broker keeps no copy of a QoS 0 message, and the newest readings are
//! the ones an operator needs when the spool has room again).

use cityops_mqtt::Delivery;
use std::collections::VecDeque;

/// Held deliveries in arrival order, with the QoS 0 ones' bytes bounded.
#[derive(Debug)]
pub(crate) struct Held {
    queue: VecDeque<Delivery>,
    qos0_bytes: u64,
    qos0_max_bytes: u64,
}

/// What a QoS 0 delivery costs against the bound: what it keeps in memory.
fn cost(d: &Delivery) -> u64 {
    (d.payload.len() + d.topic.len()) as u64
}

impl Held {
    /// Nothing held; QoS 0 deliveries bounded to `qos0_max_bytes`.
    pub(crate) fn new(qos0_max_bytes: u64) -> Self {
        Held {
            queue: VecDeque::new(),
            qos0_bytes: 0,
            qos0_max_bytes,
        }
    }

    /// Holds `d` after the others; returns how many QoS 0 deliveries were dropped (oldest
    /// first, possibly `d` itself) to stay within the bound.
    pub(crate) fn push_back(&mut self, d: Delivery) -> u64 {
        if d.qos == 0 {
            self.qos0_bytes += cost(&d);
        }
        self.queue.push_back(d);
        let mut dropped = 0;
        while self.qos0_bytes > self.qos0_max_bytes {
            // QoS 1 deliveries ahead are at most the broker's in-flight window: the scan is short.
            let Some(oldest) = self.queue.iter().position(|d| d.qos == 0) else {
                break;
            };
            let gone = self.queue.remove(oldest).expect("position is in the queue");
            self.qos0_bytes -= cost(&gone);
            dropped += 1;
        }
        dropped
    }

    /// The oldest delivery held.
    pub(crate) fn pop_front(&mut self) -> Option<Delivery> {
        let d = self.queue.pop_front()?;
        if d.qos == 0 {
            self.qos0_bytes -= cost(&d);
        }
        Some(d)
    }

    /// Puts back the delivery [`Held::pop_front`] gave, which the spool could not take: it
    /// stays first, and nothing is dropped for it.
    pub(crate) fn push_front(&mut self, d: Delivery) {
        if d.qos == 0 {
            self.qos0_bytes += cost(&d);
        }
        self.queue.push_front(d);
    }

    /// Whether nothing is held.
    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Bytes of the QoS 0 deliveries held.
    pub(crate) fn qos0_bytes(&self) -> u64 {
        self.qos0_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(pkid: u16, qos: u8, payload: &str) -> Delivery {
        Delivery {
            connection: 0,
            epoch: 1,
            pkid,
            qos,
            dup: false,
            retain: false,
            topic: "d/x".into(),
            payload: payload.as_bytes().to_vec().into(),
        }
    }

    fn drain(held: &mut Held) -> Vec<(u16, u8)> {
        std::iter::from_fn(|| held.pop_front())
            .map(|d| (d.pkid, d.qos))
            .collect()
    }

    #[test]
    fn within_the_bound_everything_is_held_in_arrival_order() {
        let mut held = Held::new(100);
        for (pkid, qos) in [(1, 0), (2, 1), (3, 0), (4, 1)] {
            assert_eq!(held.push_back(delivery(pkid, qos, "1234567")), 0);
        }
        // Only the QoS 0 ones count: 2 × (7 + 3).
        assert_eq!(held.qos0_bytes(), 20);
        assert_eq!(drain(&mut held), [(1, 0), (2, 1), (3, 0), (4, 1)]);
        assert_eq!(held.qos0_bytes(), 0);
        assert!(held.is_empty());
    }

    #[test]
    fn beyond_the_bound_the_oldest_qos0_deliveries_go_and_qos1_ones_never() {
        // Room for three QoS 0 deliveries of 10 bytes each.
        let mut held = Held::new(30);
        let mut dropped = 0;
        for pkid in 1..=8 {
            let qos = u8::from(pkid % 2 == 0);
            dropped += held.push_back(delivery(pkid, qos, "1234567"));
        }
        assert_eq!(
            dropped, 1,
            "four QoS 0 deliveries of 10 bytes, room for three"
        );
        assert_eq!(held.qos0_bytes(), 30);
        assert_eq!(
            drain(&mut held),
            [(2, 1), (3, 0), (4, 1), (5, 0), (6, 1), (7, 0), (8, 1)]
        );
    }

    #[test]
    fn a_qos0_delivery_larger_than_the_bound_is_dropped_itself() {
        let mut held = Held::new(5);
        assert_eq!(held.push_back(delivery(1, 1, "a long payload")), 0);
        assert_eq!(held.push_back(delivery(2, 0, "a long payload")), 1);
        assert_eq!(held.qos0_bytes(), 0);
        assert_eq!(drain(&mut held), [(1, 1)]);
    }

    #[test]
    fn a_delivery_put_back_stays_first_and_counts_again() {
        let mut held = Held::new(20);
        held.push_back(delivery(1, 0, "1234567"));
        held.push_back(delivery(2, 0, "1234567"));
        let first = held.pop_front().unwrap();
        assert_eq!(held.qos0_bytes(), 10);
        held.push_front(first);
        assert_eq!(held.qos0_bytes(), 20);
        assert_eq!(drain(&mut held), [(1, 0), (2, 0)]);
    }

    #[test]
    fn a_bound_of_zero_holds_no_qos0_delivery() {
        let mut held = Held::new(0);
        assert_eq!(held.push_back(delivery(1, 0, "x")), 1);
        assert_eq!(held.push_back(delivery(2, 1, "x")), 0);
        assert_eq!(drain(&mut held), [(2, 1)]);
    }
}
