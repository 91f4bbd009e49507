//! Window-limited producers. An idempotent producer (the default of the Java client and of
//! franz-go) keeps at most five produce requests in flight per connection (Kafka requires it for
//! idempotence), often fewer (librdkafka keeps one or two per partition); with its window full,
//! it cannot send more, and the rest of the flush linger only delays it. When every connection
//! that has produce requests waiting is so blocked, nothing more can arrive before the flush:
//! waiting cannot make the object fuller, so the broker flushes at once (or as soon as the
//! flush in progress ends), provided `--flush-window-min-bytes` are buffered (in proportion
//! when the blocked windows hold fewer than five requests in all), which bounds the objects
//! this adds. A connection's window is the most idempotent requests it has had in
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
    /// The windows of the blocked connections, added up.
    blocked_windows: usize,
}

/// What a produce request's arrival says about flushing early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blocked {
    /// Every connection with produce requests waiting has its window full.
    pub all: bool,
    /// Their windows added up (at most five counted): how many requests the buffer can hold
    /// before the flush, however fast the producers are.
    pub windows: usize,
}

impl Blocked {
    /// The buffered bytes from which an early flush is worth its object: `min_bytes` for full
    /// windows of five, in proportion for smaller ones (a one-partition producer keeps one
    /// request in flight: its window holds a fifth of what five do, and waiting out the linger
    /// would only hold it to one request per linger, each flush one request either way).
    pub fn flush_threshold(&self, min_bytes: usize) -> usize {
        min_bytes * self.windows.clamp(1, IDEMPOTENT_WINDOW) / IDEMPOTENT_WINDOW
    }
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
    /// its guard, and whether every waiting connection is now blocked (flush without linger
    /// once enough is buffered, see [`Blocked::flush_threshold`]).
    pub fn enter(
        self: &Arc<Self>,
        connection: &Arc<ConnectionWindow>,
        idempotent: bool,
    ) -> (InFlight, Blocked) {
        let mut counts = self.counts.lock().expect("windows poisoned");
        let mut in_flight = connection.in_flight.lock().expect("window poisoned");
        let was_waiting = in_flight.all > 0;
        let was = (in_flight.blocked(), in_flight.window);
        in_flight.all += 1;
        in_flight.idempotent += usize::from(idempotent);
        in_flight.window = in_flight
            .window
            .max(in_flight.idempotent)
            .min(IDEMPOTENT_WINDOW);
        if !was_waiting {
            counts.waiting += 1;
        }
        transition(&mut counts, was, &in_flight);
        let blocked = Blocked {
            all: counts.waiting > 0 && counts.blocked == counts.waiting,
            windows: counts.blocked_windows,
        };
        let guard = InFlight {
            windows: self.clone(),
            connection: connection.clone(),
            idempotent,
        };
        (guard, blocked)
    }
}

/// Keeps the broker-wide counts true after a connection's counts changed from `was` (blocked,
/// window) to `now`.
fn transition(counts: &mut Counts, was: (bool, usize), now: &InFlightCounts) {
    let (was_blocked, was_window) = was;
    if was_blocked {
        counts.blocked -= 1;
        counts.blocked_windows -= was_window;
    }
    if now.blocked() {
        counts.blocked += 1;
        counts.blocked_windows += now.window;
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut counts = self.windows.counts.lock().expect("windows poisoned");
        let mut in_flight = self.connection.in_flight.lock().expect("window poisoned");
        let was = (in_flight.blocked(), in_flight.window);
        in_flight.all -= 1;
        in_flight.idempotent -= usize::from(self.idempotent);
        transition(&mut counts, was, &in_flight);
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
        let (first, blocked) = windows.enter(&idempotent, true);
        assert_eq!(
            blocked,
            Blocked {
                all: true,
                windows: 1
            }
        );
        let (second, blocked) = windows.enter(&idempotent, true);
        assert_eq!(
            blocked,
            Blocked {
                all: true,
                windows: 2
            }
        );
        // One answered: below its window of two, it may send again.
        drop(first);
        assert_eq!(
            counts(&windows),
            Counts {
                waiting: 1,
                blocked: 0,
                blocked_windows: 0
            }
        );
        let (third, blocked) = windows.enter(&idempotent, true);
        assert_eq!(
            blocked,
            Blocked {
                all: true,
                windows: 2
            },
            "two in flight again: the window is full"
        );
        // A plain producer waiting too: its window is unknown, so the linger holds.
        let plain = Arc::new(ConnectionWindow::default());
        let (plain_guard, blocked) = windows.enter(&plain, false);
        assert!(!blocked.all);
        assert_eq!(
            counts(&windows),
            Counts {
                waiting: 2,
                blocked: 1,
                blocked_windows: 2
            }
        );
        drop((second, third, plain_guard));
        assert_eq!(counts(&windows), Counts::default());
        // Never past five.
        let guards: Vec<_> = (0..IDEMPOTENT_WINDOW + 2)
            .map(|_| windows.enter(&idempotent, true).0)
            .collect();
        assert_eq!(counts(&windows).blocked, 1);
        assert_eq!(counts(&windows).blocked_windows, IDEMPOTENT_WINDOW);
        drop(guards);
        assert_eq!(counts(&windows), Counts::default());
    }

    #[test]
    fn windows_of_blocked_connections_add_up_and_scale_the_flush_threshold() {
        let windows = Arc::new(ProduceWindows::default());
        // A one-partition producer: one request in flight at a time.
        let one = Arc::new(ConnectionWindow::default());
        let (one_guard, blocked) = windows.enter(&one, true);
        assert_eq!(blocked.flush_threshold(5_000_000), 1_000_000);
        // Another with two in flight: three requests' worth between them.
        let two = Arc::new(ConnectionWindow::default());
        let (two_a, _) = windows.enter(&two, true);
        let (two_b, blocked) = windows.enter(&two, true);
        assert_eq!(
            blocked,
            Blocked {
                all: true,
                windows: 3
            }
        );
        assert_eq!(blocked.flush_threshold(5_000_000), 3_000_000);
        drop(two_a);
        assert_eq!(counts(&windows).blocked_windows, 1);
        drop((one_guard, two_b));
        assert_eq!(counts(&windows), Counts::default());
        // Never more than the full threshold, never nothing.
        let full = Blocked {
            all: true,
            windows: 12,
        };
        assert_eq!(full.flush_threshold(5_000_000), 5_000_000);
        let none = Blocked {
            all: true,
            windows: 0,
        };
        assert_eq!(none.flush_threshold(5_000_000), 1_000_000);
    }

    #[test]
    fn plain_requests_never_block() {
        let windows = Arc::new(ProduceWindows::default());
        let plain = Arc::new(ConnectionWindow::default());
        let guards: Vec<_> = (0..10)
            .map(|_| {
                let (guard, blocked) = windows.enter(&plain, false);
                assert!(!blocked.all);
                guard
            })
            .collect();
        drop(guards);
        assert_eq!(counts(&windows), Counts::default());
    }
}
