//! Window-limited producers. An idempotent producer (the default of the Java client and of
//! franz-go) keeps at most five produce requests in flight per connection (Kafka requires it for
//! idempotence); with all five waiting for the flush, it cannot send more, and the rest of the
//! flush linger only delays it. When every connection that has produce requests waiting is so
//! blocked, nothing more can arrive before the flush: waiting cannot make the object fuller, so
//! the broker flushes at once (or as soon as the flush in progress ends). A connection whose
//! window is unknown (a plain producer) or not full keeps the linger. At high load from many
//! producers nothing changes; a lone idempotent producer is no longer held to five requests per
//! linger.

use std::sync::{Arc, Mutex};

/// Produce requests an idempotent producer may have in flight per connection (Kafka's limit
/// for `enable.idempotence`: `max.in.flight.requests.per.connection` ≤ 5).
pub const IDEMPOTENT_WINDOW: usize = 5;

/// Broker-wide: connections with produce requests waiting, and those of them blocked.
#[derive(Debug, Default)]
pub struct ProduceWindows {
    counts: Mutex<Counts>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counts {
    waiting: usize,
    blocked: usize,
}

/// One connection's produce requests waiting for their flush: all, and the idempotent ones.
#[derive(Debug, Default)]
pub struct ConnectionWindow {
    in_flight: Mutex<(usize, usize)>,
}

/// A produce request waiting for its flush; leaves its window when dropped.
#[derive(Debug)]
pub struct InFlight {
    windows: Arc<ProduceWindows>,
    connection: Arc<ConnectionWindow>,
    idempotent: bool,
}

impl ProduceWindows {
    /// Counts a produce request (that will be answered) of `connection` as waiting. Returns
    /// its guard, and whether every waiting connection is now blocked (flush without linger).
    pub fn enter(
        self: &Arc<Self>,
        connection: &Arc<ConnectionWindow>,
        idempotent: bool,
    ) -> (InFlight, bool) {
        let mut counts = self.counts.lock().expect("windows poisoned");
        let mut in_flight = connection.in_flight.lock().expect("window poisoned");
        let (was_waiting, was_blocked) = (in_flight.0 > 0, in_flight.1 >= IDEMPOTENT_WINDOW);
        in_flight.0 += 1;
        in_flight.1 += usize::from(idempotent);
        if !was_waiting {
            counts.waiting += 1;
        }
        if !was_blocked && in_flight.1 >= IDEMPOTENT_WINDOW {
            counts.blocked += 1;
        }
        let all_blocked = counts.waiting > 0 && counts.blocked == counts.waiting;
        let guard = InFlight {
            windows: self.clone(),
            connection: connection.clone(),
            idempotent,
        };
        (guard, all_blocked)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut counts = self.windows.counts.lock().expect("windows poisoned");
        let mut in_flight = self.connection.in_flight.lock().expect("window poisoned");
        let was_blocked = in_flight.1 >= IDEMPOTENT_WINDOW;
        in_flight.0 -= 1;
        in_flight.1 -= usize::from(self.idempotent);
        if was_blocked && in_flight.1 < IDEMPOTENT_WINDOW {
            counts.blocked -= 1;
        }
        if in_flight.0 == 0 {
            counts.waiting -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(windows: &ProduceWindows) -> Counts {
        *windows.counts.lock().expect("poisoned")
    }

    #[test]
    fn only_a_full_idempotent_window_on_every_waiting_connection_skips_the_linger() {
        let windows = Arc::new(ProduceWindows::default());
        let idempotent = Arc::new(ConnectionWindow::default());
        let plain = Arc::new(ConnectionWindow::default());
        let mut guards = Vec::new();
        for i in 1..=IDEMPOTENT_WINDOW {
            let (guard, all_blocked) = windows.enter(&idempotent, true);
            assert_eq!(all_blocked, i == IDEMPOTENT_WINDOW, "request {i}");
            guards.push(guard);
        }
        // A plain producer waiting too: it could send more, so the linger holds.
        let (plain_guard, all_blocked) = windows.enter(&plain, false);
        assert!(!all_blocked);
        assert_eq!(
            counts(&windows),
            Counts {
                waiting: 2,
                blocked: 1
            }
        );
        drop(plain_guard);
        // Acknowledged: the window opens again, and closes again at the next fifth request.
        guards.pop();
        assert_eq!(
            counts(&windows),
            Counts {
                waiting: 1,
                blocked: 0
            }
        );
        let (guard, all_blocked) = windows.enter(&idempotent, true);
        assert!(all_blocked);
        guards.push(guard);
        guards.clear();
        assert_eq!(counts(&windows), Counts::default());
        // Plain requests never block, however many.
        let plain_guards: Vec<_> = (0..10)
            .map(|_| {
                let (guard, all_blocked) = windows.enter(&plain, false);
                assert!(!all_blocked);
                guard
            })
            .collect();
        drop(plain_guards);
        assert_eq!(counts(&windows), Counts::default());
    }
}
