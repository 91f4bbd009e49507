//! Memory budgets: what client requests may make the broker hold, whatever they send.
//!
//! Two broker-wide byte budgets, each a semaphore of bytes:
//! - **requests** (`--queued-max-request-bytes`, Kafka's `queued.max.request.bytes`): frames read
//!   off sockets and the requests decoded from them, from the moment a frame's length is known
//!   until the request was handled (Produce: until its data is queued, where
//!   `--produce-buffer-max-bytes` takes over). A frame costs its length, and its decoded
//!   structures what they allocate: the vendored decoder charges every array and tagged-field
//!   section to a per-decode budget (`kafka_protocol::protocol::decode_budget`), reserved before
//!   decoding (up to [`DECODED_REQUEST_MAX_BYTES`]; the decoder can turn tiny elements into
//!   structs ~100× their wire size) and shrunk to what was used, so a request that waits long
//!   holds what it really takes. A request needing more fails to decode (its connection closes).
//! - **fetch responses** (`--fetch-buffer-max-bytes`): Fetch responses from the moment their
//!   records are read until their last byte is written to the socket; each connection may hold
//!   at most `--connection-fetch-buffer-max-bytes` of it, so a client that never reads its socket
//!   stalls only its own connection (and is closed after `--connection-write-timeout-ms`).
//!
//! When a budget is spent, readers wait (TCP then slows the clients), never the broker's own
//! tasks: sessions, the controller and flushes take nothing from these budgets.

use std::sync::Arc;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// Upper bound of decoded structures per wire byte: an array element takes at least one byte on
/// the wire and at most about this many once decoded (a Metadata request of empty topic names
/// decodes into 88× its frame). The reservation before decoding is the frame × this, capped.
pub const DECODED_BYTES_PER_WIRE_BYTE_MAX: usize = 100;

/// Most memory one request's decoded structures may take, beyond its frame (whose strings and
/// blobs they point into). The largest real requests need a few MiB (an OffsetCommit of 50,000
/// partitions ~4 MiB); a request needing more is refused as malformed.
pub const DECODED_REQUEST_MAX_BYTES: usize = 16 * 1024 * 1024;

/// Least a fetch takes from the broker-wide budget before it reads: when others hold most of
/// it, a fetch reads this much (or waits for it) rather than nothing.
const FETCH_RESERVATION_MIN_BYTES: usize = 1024 * 1024;

/// Tokio semaphores count in u32 per acquisition.
fn permits(bytes: usize) -> u32 {
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

/// Bytes of one budget; given back, and waiters told, when dropped.
#[derive(Debug)]
struct Permit {
    permit: Option<OwnedSemaphorePermit>,
    released: Arc<Notify>,
}

impl Permit {
    fn bytes(&self) -> usize {
        self.permit
            .as_ref()
            .map_or(0, OwnedSemaphorePermit::num_permits)
    }

    /// Adds another permit of the same budget.
    fn merge(&mut self, mut other: Permit) {
        if let (Some(mine), Some(theirs)) = (self.permit.as_mut(), other.permit.take()) {
            mine.merge(theirs);
        }
    }

    /// Gives back all but `keep` bytes.
    fn shrink_to(&mut self, keep: usize) {
        let surplus = self.bytes().saturating_sub(keep);
        if surplus > 0 {
            if let Some(permit) = self.permit.as_mut() {
                drop(permit.split(surplus));
                self.released.notify_waiters();
            }
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        // Give the bytes back first, then wake those waiting for them.
        drop(self.permit.take());
        self.released.notify_waiters();
    }
}

/// Memory held on behalf of one request or response; given back when dropped.
#[derive(Debug, Default)]
pub struct Held(Vec<Permit>);

impl Held {
    fn push(&mut self, permit: Permit) {
        self.0.push(permit);
    }

    /// Bytes held, over every budget it holds from.
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.0.iter().map(Permit::bytes).sum()
    }

    /// Keeps at most `bytes` of the first budget it holds (a decode reservation shrinks to what
    /// decoding used).
    pub fn shrink_to(&mut self, bytes: usize) {
        if let Some(permit) = self.0.first_mut() {
            permit.shrink_to(bytes);
        }
    }

    /// Bytes of the first budget it holds.
    pub fn first_bytes(&self) -> usize {
        self.0.first().map_or(0, Permit::bytes)
    }

    pub fn merge(&mut self, other: Held) {
        self.0.extend(other.0);
    }
}

#[derive(Debug)]
struct Budget {
    semaphore: Arc<Semaphore>,
    max_bytes: usize,
    released: Arc<Notify>,
}

impl Budget {
    fn new(max_bytes: usize) -> Self {
        Self {
            semaphore: Arc::new(Semaphore::new(max_bytes)),
            max_bytes,
            released: Arc::new(Notify::new()),
        }
    }

    fn wrap(&self, permit: OwnedSemaphorePermit) -> Permit {
        Permit {
            permit: Some(permit),
            released: self.released.clone(),
        }
    }

    /// Waits for `bytes` (at most the whole budget) without queueing: a large request waiting
    /// for room never holds back smaller ones that fit now (a FIFO queue would let one waiting
    /// request stall every connection).
    async fn acquire_unqueued(&self, bytes: usize) -> Permit {
        let wanted = permits(bytes.min(self.max_bytes));
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if let Ok(permit) = self.semaphore.clone().try_acquire_many_owned(wanted) {
                return self.wrap(permit);
            }
            released.await;
        }
    }

    fn try_acquire(&self, bytes: usize) -> Option<Permit> {
        let permit = self
            .semaphore
            .clone()
            .try_acquire_many_owned(permits(bytes));
        permit.ok().map(|p| self.wrap(p))
    }

    /// Waits (queued) for what is free of `wanted`, but at least
    /// [`FETCH_RESERVATION_MIN_BYTES`] (or `wanted`, if less).
    async fn acquire_free_part(&self, wanted: usize) -> Permit {
        let take = wanted
            .min(self.available())
            .max(FETCH_RESERVATION_MIN_BYTES.min(wanted));
        let permit = self
            .semaphore
            .clone()
            .acquire_many_owned(permits(take.min(self.max_bytes)))
            .await
            .expect("budget semaphores are never closed");
        self.wrap(permit)
    }

    fn available(&self) -> usize {
        self.semaphore.available_permits()
    }
}

/// The broker-wide budgets.
#[derive(Debug)]
pub struct Budgets {
    requests: Budget,
    fetch: Budget,
    connection_fetch_max_bytes: usize,
    pub non_produce_request_max_bytes: usize,
}

#[derive(Debug, Clone, Copy)]
pub struct BudgetSettings {
    pub queued_max_request_bytes: usize,
    pub non_produce_request_max_bytes: usize,
    pub fetch_buffer_max_bytes: usize,
    pub connection_fetch_buffer_max_bytes: usize,
}

impl BudgetSettings {
    /// Checks that every request that passes the frame limits fits in the budgets.
    pub fn validate(&self, socket_request_max_bytes: usize) -> Result<(), String> {
        let largest = socket_request_max_bytes.saturating_add(DECODED_REQUEST_MAX_BYTES);
        if largest > self.queued_max_request_bytes {
            return Err(format!(
                "--queued-max-request-bytes {} cannot hold the largest request: \
                 --socket-request-max-bytes {socket_request_max_bytes} plus \
                 {DECODED_REQUEST_MAX_BYTES} bytes of decoded structures",
                self.queued_max_request_bytes
            ));
        }
        if self.connection_fetch_buffer_max_bytes > self.fetch_buffer_max_bytes {
            return Err(format!(
                "--connection-fetch-buffer-max-bytes {} is more than --fetch-buffer-max-bytes {}",
                self.connection_fetch_buffer_max_bytes, self.fetch_buffer_max_bytes
            ));
        }
        if self.connection_fetch_buffer_max_bytes == 0 || self.non_produce_request_max_bytes == 0 {
            return Err("memory budgets must be positive".to_owned());
        }
        Ok(())
    }
}

impl Budgets {
    pub fn new(settings: BudgetSettings) -> Self {
        Self {
            requests: Budget::new(settings.queued_max_request_bytes),
            fetch: Budget::new(settings.fetch_buffer_max_bytes),
            connection_fetch_max_bytes: settings.connection_fetch_buffer_max_bytes,
            non_produce_request_max_bytes: settings.non_produce_request_max_bytes,
        }
    }

    /// Holds a frame of `bytes` about to be read.
    pub async fn frame(&self, bytes: usize) -> Held {
        let mut held = Held::default();
        held.push(self.requests.acquire_unqueued(bytes).await);
        held
    }

    /// Reserves what decoding a frame of `frame_bytes` may allocate; shrink it to what decoding
    /// used (see [`Held::shrink_to`]). Waits holding nothing else of the budget but the frame,
    /// unqueued, so requests never wait on one another in a cycle.
    pub async fn decoding(&self, frame_bytes: usize) -> Held {
        let wanted = frame_bytes
            .saturating_mul(DECODED_BYTES_PER_WIRE_BYTE_MAX - 1)
            .clamp(1, DECODED_REQUEST_MAX_BYTES);
        let mut held = Held::default();
        held.push(self.requests.acquire_unqueued(wanted).await);
        held
    }

    /// A new connection's share of the fetch budget.
    pub fn connection(self: &Arc<Self>) -> ConnectionMemory {
        ConnectionMemory {
            budgets: self.clone(),
            fetch: Budget::new(self.connection_fetch_max_bytes),
        }
    }

    #[cfg(test)]
    pub fn fetch_available(&self) -> usize {
        self.fetch.available()
    }
}

/// One connection's budget for its Fetch responses.
#[derive(Debug)]
pub struct ConnectionMemory {
    budgets: Arc<Budgets>,
    fetch: Budget,
}

/// Bytes reserved for one Fetch response being read, from its connection's share and from the
/// broker's budget (the same amount from each).
#[derive(Debug)]
pub struct FetchReservation<'a> {
    connection: Permit,
    broker: Permit,
    budgets: (&'a Budget, &'a Budget),
}

impl FetchReservation<'_> {
    /// How many bytes of records the response may take.
    pub fn bytes(&self) -> usize {
        self.broker.bytes()
    }

    /// Keeps what a response of `bytes` needs and gives back the rest. A response larger than
    /// its reservation (KIP-74: the first batch is sent whole) takes the difference when it is
    /// free; when it is not, the response goes over the budget by at most that one batch.
    pub fn shrink_to(mut self, bytes: usize) -> Held {
        if let Some(more) = bytes.checked_sub(self.bytes()).filter(|more| *more > 0) {
            let (connection, broker) = self.budgets;
            if let (Some(c), Some(b)) = (connection.try_acquire(more), broker.try_acquire(more)) {
                self.connection.merge(c);
                self.broker.merge(b);
            }
        }
        let keep = bytes.min(self.bytes());
        self.connection.shrink_to(keep);
        self.broker.shrink_to(keep);
        let mut held = Held::default();
        held.push(self.connection);
        held.push(self.broker);
        held
    }
}

impl ConnectionMemory {
    /// Reserves up to `wanted` bytes for a Fetch response: what this connection's share has
    /// free (its earlier responses not yet written hold the rest), then as much of that as the
    /// broker has free; each at least [`FETCH_RESERVATION_MIN_BYTES`], waiting for that much if
    /// need be.
    pub async fn reserve_fetch(&self, wanted: usize) -> FetchReservation<'_> {
        let wanted = wanted.clamp(1, self.fetch.max_bytes);
        let mut connection = self.fetch.acquire_free_part(wanted).await;
        let broker = self
            .budgets
            .fetch
            .acquire_free_part(connection.bytes())
            .await;
        connection.shrink_to(broker.bytes());
        FetchReservation {
            connection,
            broker,
            budgets: (&self.fetch, &self.budgets.fetch),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn budgets(fetch: usize, connection: usize) -> Arc<Budgets> {
        Arc::new(Budgets::new(BudgetSettings {
            queued_max_request_bytes: 1000,
            non_produce_request_max_bytes: 10,
            fetch_buffer_max_bytes: fetch,
            connection_fetch_buffer_max_bytes: connection,
        }))
    }

    #[tokio::test]
    async fn a_connection_that_never_writes_stalls_only_itself() {
        let mib = 1024 * 1024;
        let budgets = budgets(8 * mib, 4 * mib);
        let stuck = budgets.connection();
        let held = stuck.reserve_fetch(10 * mib).await.shrink_to(4 * mib);
        assert_eq!(
            held.bytes(),
            8 * mib,
            "4 MiB of the connection and of the broker"
        );
        // Its next fetch waits for the first response to be written...
        let waiting =
            tokio::time::timeout(Duration::from_millis(50), stuck.reserve_fetch(mib)).await;
        assert!(waiting.is_err());
        // ...while another connection is served from what is left.
        let healthy = budgets.connection();
        let reservation = healthy.reserve_fetch(10 * mib).await;
        assert_eq!(reservation.bytes(), 4 * mib);
        drop(reservation);
        drop(held);
        assert_eq!(budgets.fetch_available(), 8 * mib);
    }

    #[tokio::test]
    async fn a_fetch_takes_what_is_free_but_at_least_the_minimum() {
        let mib = 1024 * 1024;
        let budgets = budgets(3 * mib, 3 * mib);
        let (first, second, third) = (
            budgets.connection(),
            budgets.connection(),
            budgets.connection(),
        );
        let a = first.reserve_fetch(mib + mib / 2).await;
        let b = second.reserve_fetch(3 * mib).await;
        assert_eq!(b.bytes(), mib + mib / 2, "only what is free");
        drop(b);
        let _c = third.reserve_fetch(mib).await;
        // Half a MiB free, less than the minimum: waits until `a` is written.
        let late = budgets.connection();
        let waiting =
            tokio::time::timeout(Duration::from_millis(50), late.reserve_fetch(mib)).await;
        assert!(waiting.is_err());
        drop(a);
        let d = late.reserve_fetch(3 * mib).await;
        assert_eq!(d.bytes(), 2 * mib);
    }

    #[tokio::test]
    async fn a_large_request_waiting_for_room_never_holds_back_small_ones() {
        let budgets = budgets(1 << 20, 1 << 20); // requests: 1000 bytes
        let first = budgets.frame(600).await;
        let waiting = budgets.frame(500);
        tokio::pin!(waiting);
        assert!(
            tokio::time::timeout(Duration::from_millis(20), waiting.as_mut())
                .await
                .is_err(),
            "500 do not fit beside 600"
        );
        // A FIFO queue would make this wait behind the 500.
        let small = tokio::time::timeout(Duration::from_millis(20), budgets.frame(100))
            .await
            .expect("100 fit now");
        drop(small);
        drop(first);
        let big = tokio::time::timeout(Duration::from_millis(100), waiting)
            .await
            .expect("woken when room was given back");
        assert_eq!(big.bytes(), 500);
        drop(big);
        // A decode reservation shrinks to what decoding used.
        let mut decoding = budgets.decoding(5).await;
        assert_eq!(decoding.bytes(), 5 * (DECODED_BYTES_PER_WIRE_BYTE_MAX - 1));
        decoding.shrink_to(20);
        assert_eq!(decoding.bytes(), 20);
    }

    #[test]
    fn settings_that_let_a_request_exceed_the_budget_are_refused() {
        let mut settings = BudgetSettings {
            queued_max_request_bytes: 512 << 20,
            non_produce_request_max_bytes: 2 << 20,
            fetch_buffer_max_bytes: 512 << 20,
            connection_fetch_buffer_max_bytes: 64 << 20,
        };
        assert!(settings.validate(100 << 20).is_ok());
        assert!(
            settings.validate(500 << 20).is_err(),
            "no room for its decoding"
        );
        // A lower socket limit simply caps every frame, non-Produce ones too.
        settings.non_produce_request_max_bytes = 200 << 20;
        assert!(settings.validate(64 << 10).is_ok());
    }
}
