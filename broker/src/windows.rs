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
//!
//! A producer whose client batches are small (the Java client's 16 KB `batch.size`) never
//! buffers that much: each flush holds one window, whenever it happens, so lingering buys no
//! fewer objects per GiB, only fewer per second, and holds the producer to a window per linger.
//! Such a producer is *saturated*: its requests come as full as its client makes them. Its
//! requests are as large as its largest (within an eighth, the largest decaying slowly), four
//! windows in a row. When every blocked connection is saturated, the threshold is at most
//! what their windows of such requests hold (less an eighth): more never comes, so the flush
//! starts once their windows are in the buffer. Producers of large batches, whose windows hold
//! more than the threshold, keep it (and the objects per GiB it bounds). A paced
//! producer looks saturated while the linger fills its requests, but the request after an
//! early flush is smaller (less time to fill it), which ends its streak: it then lingers four
//! rounds before it can look saturated again, so it pays at most one early flush in five.

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
    /// Blocked connections that are also saturated.
    saturated: usize,
    /// What the saturated connections' windows hold: each window times its largest request.
    saturated_bytes: usize,
}

/// What a produce request's arrival says about flushing early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blocked {
    /// Every connection with produce requests waiting has its window full.
    pub all: bool,
    /// Their windows added up (at most five counted): how many requests the buffer can hold
    /// before the flush, however fast the producers are.
    pub windows: usize,
    /// When every blocked connection is saturated (its requests as full as its client makes
    /// them): what their windows hold, each window times its largest request.
    pub saturated_bytes: Option<usize>,
}

impl Blocked {
    /// The buffered bytes from which an early flush is worth its object: `min_bytes` for full
    /// windows of five, in proportion for smaller ones (a one-partition producer keeps one
    /// request in flight: its window holds a fifth of what five do, and waiting out the linger
    /// would only hold it to one request per linger, each flush one request either way).
    /// Saturated producers' windows never hold more than their requests: then what they hold
    /// (less an eighth, as full requests may be that much smaller than the largest) is enough.
    pub fn flush_threshold(&self, min_bytes: usize) -> usize {
        let scaled = min_bytes * self.windows.clamp(1, IDEMPOTENT_WINDOW) / IDEMPOTENT_WINDOW;
        match self.saturated_bytes {
            Some(held) => scaled.min(held - held / 8),
            None => scaled,
        }
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
    /// The largest idempotent request's records bytes, decaying by a sixteenth per request so
    /// that one outsized request does not count for ever.
    largest_bytes: usize,
    /// Idempotent requests in a row as large as the largest (within an eighth).
    full_streak: usize,
}

/// Windows in a row of full requests after which a connection is saturated.
const SATURATED_WINDOWS: usize = 4;

impl InFlightCounts {
    /// Every request waiting is idempotent and as many as the window: the producer can send
    /// nothing more until one is answered.
    fn blocked(&self) -> bool {
        self.all > 0 && self.idempotent == self.all && self.idempotent >= self.window
    }

    /// Blocked, and its last windows of requests were all full.
    fn saturated(&self) -> bool {
        self.blocked() && self.full_streak >= SATURATED_WINDOWS * self.window.max(1)
    }

    /// Counts an idempotent request of `bytes` in the streak of full ones.
    fn observe(&mut self, bytes: usize) {
        if bytes.saturating_mul(8) >= self.largest_bytes.saturating_mul(7) {
            self.full_streak = self.full_streak.saturating_add(1);
        } else {
            self.full_streak = 0;
        }
        self.largest_bytes = bytes.max(self.largest_bytes - self.largest_bytes / 16);
    }

    fn state(&self) -> State {
        State {
            blocked: self.blocked(),
            window: self.window,
            saturated_bytes: self
                .saturated()
                .then(|| self.window.saturating_mul(self.largest_bytes)),
        }
    }
}

/// What the broker-wide counts hold of one connection.
#[derive(Debug, Clone, Copy)]
struct State {
    blocked: bool,
    window: usize,
    /// Saturated: what its window holds.
    saturated_bytes: Option<usize>,
}

/// A produce request waiting for its flush; leaves its window when dropped.
#[derive(Debug)]
pub struct InFlight {
    windows: Arc<ProduceWindows>,
    connection: Arc<ConnectionWindow>,
    idempotent: bool,
}

impl ProduceWindows {
    /// Counts a produce request (that will be answered) of `connection`, carrying `bytes` of
    /// records, as waiting. Returns its guard, and whether every waiting connection is now
    /// blocked (flush without linger once enough is buffered, see [`Blocked::flush_threshold`]).
    pub fn enter(
        self: &Arc<Self>,
        connection: &Arc<ConnectionWindow>,
        idempotent: bool,
        bytes: usize,
    ) -> (InFlight, Blocked) {
        let mut counts = self.counts.lock().expect("windows poisoned");
        let mut in_flight = connection.in_flight.lock().expect("window poisoned");
        let was_waiting = in_flight.all > 0;
        let was = in_flight.state();
        in_flight.all += 1;
        if idempotent {
            in_flight.idempotent += 1;
            in_flight.observe(bytes);
        }
        in_flight.window = in_flight
            .window
            .max(in_flight.idempotent)
            .min(IDEMPOTENT_WINDOW);
        if !was_waiting {
            counts.waiting += 1;
        }
        transition(&mut counts, was, in_flight.state());
        let all = counts.waiting > 0 && counts.blocked == counts.waiting;
        let blocked = Blocked {
            all,
            windows: counts.blocked_windows,
            saturated_bytes: (all && counts.saturated == counts.blocked)
                .then_some(counts.saturated_bytes),
        };
        let guard = InFlight {
            windows: self.clone(),
            connection: connection.clone(),
            idempotent,
        };
        (guard, blocked)
    }
}

/// Keeps the broker-wide counts true after a connection's state changed from `was` to `now`.
fn transition(counts: &mut Counts, was: State, now: State) {
    if was.blocked {
        counts.blocked -= 1;
        counts.blocked_windows -= was.window;
    }
    if let Some(bytes) = was.saturated_bytes {
        counts.saturated -= 1;
        counts.saturated_bytes -= bytes;
    }
    if now.blocked {
        counts.blocked += 1;
        counts.blocked_windows += now.window;
    }
    if let Some(bytes) = now.saturated_bytes {
        counts.saturated += 1;
        counts.saturated_bytes += bytes;
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut counts = self.windows.counts.lock().expect("windows poisoned");
        let mut in_flight = self.connection.in_flight.lock().expect("window poisoned");
        let was = in_flight.state();
        in_flight.all -= 1;
        in_flight.idempotent -= usize::from(self.idempotent);
        transition(&mut counts, was, in_flight.state());
        if in_flight.all == 0 {
            counts.waiting -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every waiting connection blocked, `windows` requests in their windows, none saturated.
    fn waiting_blocked(windows: usize) -> Blocked {
        Blocked {
            all: true,
            windows,
            saturated_bytes: None,
        }
    }

    fn counts(windows: &ProduceWindows) -> Counts {
        *windows.counts.lock().expect("poisoned")
    }

    #[test]
    fn a_connection_is_blocked_at_the_most_it_had_in_flight() {
        let windows = Arc::new(ProduceWindows::default());
        let idempotent = Arc::new(ConnectionWindow::default());
        // Ramping up, each new most-in-flight is a full window.
        let (first, blocked) = windows.enter(&idempotent, true, 1000);
        assert_eq!(blocked, waiting_blocked(1));
        let (second, blocked) = windows.enter(&idempotent, true, 1000);
        assert_eq!(blocked, waiting_blocked(2));
        // One answered: below its window of two, it may send again.
        drop(first);
        assert_eq!(
            counts(&windows),
            Counts {
                waiting: 1,
                blocked: 0,
                blocked_windows: 0,
                saturated: 0,
                saturated_bytes: 0
            }
        );
        let (third, blocked) = windows.enter(&idempotent, true, 1000);
        assert_eq!(
            blocked,
            waiting_blocked(2),
            "two in flight again: the window is full"
        );
        // A plain producer waiting too: its window is unknown, so the linger holds.
        let plain = Arc::new(ConnectionWindow::default());
        let (plain_guard, blocked) = windows.enter(&plain, false, 1000);
        assert!(!blocked.all);
        assert_eq!(
            counts(&windows),
            Counts {
                waiting: 2,
                blocked: 1,
                blocked_windows: 2,
                saturated: 0,
                saturated_bytes: 0
            }
        );
        drop((second, third, plain_guard));
        assert_eq!(counts(&windows), Counts::default());
        // Never past five.
        let guards: Vec<_> = (0..IDEMPOTENT_WINDOW + 2)
            .map(|_| windows.enter(&idempotent, true, 1000).0)
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
        let (one_guard, blocked) = windows.enter(&one, true, 1000);
        assert_eq!(blocked.flush_threshold(5_000_000), 1_000_000);
        // Another with two in flight: three requests' worth between them.
        let two = Arc::new(ConnectionWindow::default());
        let (two_a, _) = windows.enter(&two, true, 1000);
        let (two_b, blocked) = windows.enter(&two, true, 1000);
        assert_eq!(blocked, waiting_blocked(3));
        assert_eq!(blocked.flush_threshold(5_000_000), 3_000_000);
        drop(two_a);
        assert_eq!(counts(&windows).blocked_windows, 1);
        drop((one_guard, two_b));
        assert_eq!(counts(&windows), Counts::default());
        // Never more than the full threshold, never nothing.
        let full = Blocked {
            all: true,
            windows: 12,
            saturated_bytes: None,
        };
        assert_eq!(full.flush_threshold(5_000_000), 5_000_000);
        let none = Blocked {
            all: true,
            windows: 0,
            saturated_bytes: None,
        };
        assert_eq!(none.flush_threshold(5_000_000), 1_000_000);
    }

    /// Enters and answers one request of `bytes` (a window of one): whether it was saturated.
    fn round(
        windows: &Arc<ProduceWindows>,
        connection: &Arc<ConnectionWindow>,
        bytes: usize,
    ) -> bool {
        let (guard, blocked) = windows.enter(connection, true, bytes);
        assert!(blocked.all);
        drop(guard);
        blocked.saturated_bytes.is_some()
    }

    #[test]
    fn full_requests_four_windows_in_a_row_saturate_a_connection() {
        let windows = Arc::new(ProduceWindows::default());
        let small = Arc::new(ConnectionWindow::default());
        let rounds: Vec<bool> = (0..6).map(|_| round(&windows, &small, 16_000)).collect();
        assert_eq!(rounds, [false, false, false, true, true, true]);
        // Within an eighth of the largest is full (record boundaries, compression).
        assert!(round(&windows, &small, 14_500));
        assert!(
            !round(&windows, &small, 13_000),
            "a smaller request ends the streak"
        );
        assert_eq!(counts(&windows), Counts::default());
    }

    #[test]
    fn saturated_windows_lower_the_threshold_to_what_they_hold() {
        let min_bytes = 2 << 20;
        let windows = Arc::new(ProduceWindows::default());
        let small = Arc::new(ConnectionWindow::default());
        for _ in 0..3 {
            round(&windows, &small, 16_000);
        }
        let (guard, blocked) = windows.enter(&small, true, 16_000);
        assert_eq!(blocked.saturated_bytes, Some(16_000));
        assert_eq!(blocked.flush_threshold(min_bytes), 14_000);
        drop(guard);
        // Large requests: a window holds more than the threshold, which stays.
        let large = Arc::new(ConnectionWindow::default());
        for _ in 0..3 {
            round(&windows, &large, 1_000_000);
        }
        let (guard, blocked) = windows.enter(&large, true, 1_000_000);
        assert_eq!(blocked.saturated_bytes, Some(1_000_000));
        assert_eq!(blocked.flush_threshold(min_bytes), min_bytes / 5);
        // Both blocked and saturated: their windows add up.
        let (small_guard, blocked) = windows.enter(&small, true, 16_000);
        assert_eq!(blocked.saturated_bytes, Some(1_016_000));
        assert_eq!(blocked.flush_threshold(min_bytes), 2 * min_bytes / 5);
        drop((guard, small_guard));
        assert_eq!(counts(&windows), Counts::default());
    }

    #[test]
    fn a_paced_producer_looks_saturated_at_most_one_round_in_five() {
        let windows = Arc::new(ProduceWindows::default());
        let paced = Arc::new(ConnectionWindow::default());
        // A linger's worth of records each round; after a round that was saturated (an
        // early flush) the next request holds a flush's worth only.
        let mut saturated_rounds = 0;
        let mut after_early = false;
        for _ in 0..50 {
            let bytes = if after_early { 2_000 } else { 40_000 };
            after_early = round(&windows, &paced, bytes);
            saturated_rounds += usize::from(after_early);
        }
        assert!(
            (8..=10).contains(&saturated_rounds),
            "{saturated_rounds} of 50"
        );
    }

    #[test]
    fn one_outsized_request_stops_counting_after_a_while() {
        let windows = Arc::new(ProduceWindows::default());
        let connection = Arc::new(ConnectionWindow::default());
        round(&windows, &connection, 100_000);
        let first = (0..40)
            .position(|_| round(&windows, &connection, 50_000))
            .expect("saturated once the largest decayed");
        assert!((10..20).contains(&first), "after {first} rounds");
    }

    #[test]
    fn saturated_needs_every_blocked_connection_saturated() {
        let windows = Arc::new(ProduceWindows::default());
        let saturated = Arc::new(ConnectionWindow::default());
        for _ in 0..4 {
            round(&windows, &saturated, 16_000);
        }
        // A window of two: four windows in a row are eight requests.
        let fresh = Arc::new(ConnectionWindow::default());
        let (a, _) = windows.enter(&fresh, true, 16_000);
        let (b, _) = windows.enter(&fresh, true, 16_000);
        let (guard, blocked) = windows.enter(&saturated, true, 16_000);
        assert!(blocked.all);
        assert_eq!(
            blocked.saturated_bytes, None,
            "the fresh connection has no streak yet"
        );
        assert_eq!(counts(&windows).saturated, 1);
        drop((a, b, guard));
        assert_eq!(counts(&windows), Counts::default());
    }

    #[test]
    fn plain_requests_never_block() {
        let windows = Arc::new(ProduceWindows::default());
        let plain = Arc::new(ConnectionWindow::default());
        let guards: Vec<_> = (0..10)
            .map(|_| {
                let (guard, blocked) = windows.enter(&plain, false, 1000);
                assert!(!blocked.all);
                guard
            })
            .collect();
        drop(guards);
        assert_eq!(counts(&windows), Counts::default());
    }
}
