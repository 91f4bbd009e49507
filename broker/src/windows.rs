//! Window-limited producers. An idempotent producer (the default of the Java client and of
//! franz-go) keeps at most five produce requests in flight per connection (Kafka requires it for
//! idempotence), often fewer (librdkafka keeps one or two per partition); with its window full,
//! it cannot send more, and the rest of the flush linger only delays it. When every connection
//! that has produce requests waiting is so blocked, nothing more can arrive before the flush:
//! waiting cannot make the object fuller, so the broker flushes at once (or as soon as the
//! flush in progress ends), provided `--flush-window-min-bytes` are buffered, which bounds the
//! objects this adds. A connection's window is the most idempotent requests it has had in
//! flight at once (at most five); a plain producer's window is unknown, and keeps the linger.
//! At high load from many producers nothing changes; a lone idempotent producer is no longer
//! held to one window per linger.

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

/// One connection's produce requests waiting for their flush.
#[derive(Debug, Default)]
pub struct ConnectionWindow {
    in_flight: Mutex<InFlightCounts>,
}

#[derive(Debug, Default, Clone, Copy)]
struct InFlightCounts {
    all: usize,
    idempotent: usize,
    /// The most idempotent requests seen in flight at once (at most the idempotent window).
    window: usize,
}

impl InFlightCounts {
    /// Every request waiting is idempotent and as many as the window: the producer can send
    /// nothing more until one is answered.
    fn blocked(&self) -> bool {
        self.all > 0 && self.idempotent == self.all && self.idempotent >= self.window
    }
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
        let (was_waiting, was_blocked) = (in_flight.all > 0, in_flight.blocked());
        in_flight.all += 1;
        in_flight.idempotent += usize::from(idempotent);
        in_flight.window = in_flight
            .window
            .max(in_flight.idempotent)
            .min(IDEMPOTENT_WINDOW);
        if !was_waiting {
            counts.waiting += 1;
        }
        match (was_blocked, in_flight.blocked()) {
            (false, true) => counts.blocked += 1,
            (true, false) => counts.blocked -= 1,
            _ => {}
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
        let was_blocked = in_flight.blocked();
        in_flight.all -= 1;
        in_flight.idempotent -= usize::from(self.idempotent);
        match (was_blocked, in_flight.blocked()) {
            (false, true) => counts.blocked += 1,
            (true, false) => counts.blocked -= 1,
            _ => {}
        }
        if in_flight.all == 0 {
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
    fn a_connection_is_blocked_at_the_most_it_had_in_flight() {
        let windows = Arc::new(ProduceWindows::default());
        let idempotent = Arc::new(ConnectionWindow::default());
        // Ramping up, each new most-in-flight is a full window.
        let (first, all_blocked) = windows.enter(&idempotent, true);
        assert!(all_blocked);
        let (second, all_blocked) = windows.enter(&idempotent, true);
        assert!(all_blocked);
        // One answered: below its window of two, it may send again.
        drop(first);
        assert_eq!(
            counts(&windows),
            Counts {
                waiting: 1,
                blocked: 0
            }
        );
        let (third, all_blocked) = windows.enter(&idempotent, true);
        assert!(all_blocked, "two in flight again: the window is full");
        // A plain producer waiting too: its window is unknown, so the linger holds.
        let plain = Arc::new(ConnectionWindow::default());
        let (plain_guard, all_blocked) = windows.enter(&plain, false);
        assert!(!all_blocked);
        assert_eq!(
            counts(&windows),
            Counts {
                waiting: 2,
                blocked: 1
            }
        );
        drop((second, third, plain_guard));
        assert_eq!(counts(&windows), Counts::default());
        // Never past five.
        let guards: Vec<_> = (0..IDEMPOTENT_WINDOW + 2)
            .map(|_| windows.enter(&idempotent, true).0)
            .collect();
        assert_eq!(counts(&windows).blocked, 1);
        drop(guards);
        assert_eq!(counts(&windows), Counts::default());
    }

    #[test]
    fn plain_requests_never_block() {
        let windows = Arc::new(ProduceWindows::default());
        let plain = Arc::new(ConnectionWindow::default());
        let guards: Vec<_> = (0..10)
            .map(|_| {
                let (guard, all_blocked) = windows.enter(&plain, false);
                assert!(!all_blocked);
                guard
            })
            .collect();
        drop(guards);
        assert_eq!(counts(&windows), Counts::default());
    }
}
