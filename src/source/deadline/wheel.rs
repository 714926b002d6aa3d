//! The deadline watcher's schedule: which orders to look at when, in 10 ms slots.
//!
//! It holds only the order ids, grouped by the slot of their deadline: 8 bytes per pending
//! order plus 100 to 200 per slot in use (the map's entry, the list's allocation and its spare
//! room). A burst of a million orders due at the same instant costs 8 MB, not the 48 of a heap
//! of (instant, id, key wait) entries; a steady 1,000 orders a second, ten to a slot, about 20
//! bytes an order; an order alone in its slot, about 100 (when orders are that sparse there are
//! few of them). A slot is due once its end has come, so an order is never looked at before its
//! deadline, and at most one slot (10 ms) after it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The width of a slot.
pub(super) const SLOT: Duration = Duration::from_millis(10);

pub(super) struct Wheel {
    epoch: Instant,
    /// Slot number (its end, in [`SLOT`]s since `epoch`) to the orders due in it.
    slots: BTreeMap<u64, Vec<u64>>,
}

impl Wheel {
    pub(super) fn new(epoch: Instant) -> Self {
        Self {
            epoch,
            slots: BTreeMap::new(),
        }
    }

    /// Schedules `order` at `at` (rounded up to the end of its slot).
    pub(super) fn insert(&mut self, at: Instant, order: u64) {
        let nanos = at.saturating_duration_since(self.epoch).as_nanos();
        let slot = nanos.div_ceil(SLOT.as_nanos());
        let slot = u64::try_from(slot).unwrap_or(u64::MAX);
        self.slots.entry(slot).or_default().push(order);
    }

    /// When the first scheduled slot is due, if any.
    pub(super) fn next_due(&self) -> Option<Instant> {
        self.slots
            .first_key_value()
            .map(|(&slot, _)| time_of(self.epoch, slot))
    }

    /// Takes up to `max` orders of the slots due at `now`, the earliest slots first, each with
    /// its slot's time (the deadline it was scheduled for, up to 10 ms late).
    pub(super) fn take_due(&mut self, now: Instant, max: usize) -> Vec<(Instant, u64)> {
        let mut due = Vec::new();
        while due.len() < max {
            let Some(mut entry) = self.slots.first_entry() else {
                break;
            };
            let at = time_of(self.epoch, *entry.key());
            if at > now {
                break;
            }
            let orders = entry.get_mut();
            let take = orders.len().min(max - due.len());
            due.extend(orders.drain(orders.len() - take..).map(|order| (at, order)));
            if orders.is_empty() {
                entry.remove();
            }
        }
        due
    }

    /// Orders scheduled.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.slots.values().map(Vec::len).sum()
    }
}

/// When slot number `slot` after `epoch` ends.
fn time_of(epoch: Instant, slot: u64) -> Instant {
    let nanos = u128::from(slot) * SLOT.as_nanos();
    let offset = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
    epoch.checked_add(offset).unwrap_or(epoch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_come_due_at_the_end_of_their_slot_earliest_first() {
        let t0 = Instant::now();
        let mut wheel = Wheel::new(t0);
        let ms = Duration::from_millis;
        wheel.insert(t0 + ms(25), 3);
        wheel.insert(t0 + ms(21), 2);
        wheel.insert(t0 + ms(5), 1);
        wheel.insert(t0 + ms(10), 4);
        assert_eq!(wheel.next_due(), Some(t0 + ms(10)));
        assert_eq!(
            wheel.take_due(t0 + ms(9), 10),
            [],
            "not before its deadline"
        );
        let at10: Vec<u64> = wheel
            .take_due(t0 + ms(10), 10)
            .iter()
            .map(|d| d.1)
            .collect();
        assert_eq!(
            at10,
            [1, 4],
            "5 ms and 10 ms share the slot ending at 10 ms"
        );
        assert_eq!(wheel.next_due(), Some(t0 + ms(30)));
        let rest = wheel.take_due(t0 + ms(31), 10);
        assert_eq!(
            rest,
            [(t0 + ms(30), 3), (t0 + ms(30), 2)],
            "a slot in the order scheduled"
        );
        assert_eq!((wheel.len(), wheel.next_due()), (0, None));
    }

    #[test]
    fn a_crowded_slot_is_handed_out_in_pages() {
        let t0 = Instant::now();
        let mut wheel = Wheel::new(t0);
        for order in 0..5000 {
            wheel.insert(t0, order);
        }
        wheel.insert(t0 + SLOT, 9999);
        let sizes: Vec<usize> = (0..4)
            .map(|_| wheel.take_due(t0 + SLOT, 2000).len())
            .collect();
        assert_eq!(sizes, [2000, 2000, 1001, 0]);
        assert_eq!(wheel.len(), 0);
    }
}
