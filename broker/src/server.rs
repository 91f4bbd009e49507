//! The Kafka listener: accepts connections and runs each one as a reader and a writer.
//!
//! The reader takes frames off the socket (length prefix checked against
//! `socket.request.max.bytes` before anything is allocated), decodes each request and spawns its
//! handler; the writer sends responses strictly in request order. At most
//! `connection_max_inflight_requests` requests per connection are in progress; past that the
//! reader stops reading, so a fast client is slowed by TCP, not by broker memory. Anything a
//! client sends can at worst close its own connection.

use crate::api::{self, Broker, Decoded, Reply};
use crate::frame::{read_frame, Frame, FrameLimits};
use crate::low_watermark::{FrameNeed, LowWatermark};
use crate::memory::Held;
use crate::security::sasl::Next;
use crate::security::{Admission, ListenerInfo, Session};
use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use kafka_protocol::messages::ApiKey;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_util::sync::CancellationToken;

/// One Kafka listener: its name and security protocol, and its TLS acceptor when it has TLS.
#[derive(Clone)]
pub struct ListenerContext {
    pub info: Arc<ListenerInfo>,
    pub tls: Option<Arc<crate::security::tls::ReloadingAcceptor>>,
    /// Client certificates' subjects to principals.
    pub principals: Arc<crate::security::principal::PrincipalMapper>,
}

/// Serves until `stop_accepting`; open connections keep being served until `close`, so a
/// shutting-down broker still answers the requests it is committing.
pub async fn serve(
    listener: TcpListener,
    context: ListenerContext,
    broker: Arc<Broker>,
    stop_accepting: CancellationToken,
    close: CancellationToken,
) {
    let shutdown = stop_accepting;
    let connections = Arc::new(Semaphore::new(broker.limits.max_connections));
    loop {
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => permit.expect("semaphore never closed"),
            _ = shutdown.cancelled() => return,
        };
        let (socket, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        let broker = broker.clone();
        let close = close.clone();
        let tls = context.tls.clone();
        let principals = context.principals.clone();
        let session = Session::new(context.info.clone(), peer);
        tokio::spawn(async move {
            let _permit = permit;
            let _counted = broker.metrics.connection();
            if let Err(error) = socket.set_nodelay(true) {
                tracing::debug!(%error, "set_nodelay failed");
            }
            let served = async {
                match tls {
                    None => {
                        let need = FrameNeed::default();
                        let (reader, writer) = socket.into_split();
                        let reader = LowWatermark::new(reader, need.clone(), 0);
                        let reader =
                            tokio::io::BufReader::with_capacity(HEADER_READ_AHEAD_BYTES, reader);
                        run_connection(reader, writer, broker, Arc::new(session), need).await;
                    }
                    Some(acceptor) => {
                        let need = FrameNeed::default();
                        let accepted = tokio::time::timeout(
                            crate::security::tls::HANDSHAKE_TIMEOUT,
                            acceptor.current().accept(LowWatermark::new(
                                socket,
                                need.clone(),
                                crate::low_watermark::TLS_MARGIN_BYTES,
                            )),
                        )
                        .await;
                        match accepted {
                            Ok(Ok(stream)) => {
                                // A verified client certificate names the principal.
                                let session = match principals
                                    .of_peer(stream.get_ref().1.peer_certificates())
                                {
                                    Some(principal) => session.with_certificate(principal),
                                    None => session,
                                };
                                let (reader, writer) = tokio::io::split(stream);
                                run_connection(reader, writer, broker, Arc::new(session), need)
                                    .await;
                            }
                            Ok(Err(error)) => {
                                broker.metrics.tls_handshake_failed();
                                tracing::debug!(%peer, %error, "TLS handshake failed");
                            }
                            Err(_) => {
                                broker.metrics.tls_handshake_failed();
                                tracing::debug!(%peer, "TLS handshake not finished in time");
                            }
                        }
                    }
                }
            };
            tokio::select! {
                _ = served => {}
                _ = close.cancelled() => {}
            }
            tracing::debug!(%peer, "connection closed");
        });
    }
}

/// What a plaintext connection reads ahead when it reads a frame's length: the length and the
/// API key then come with one system call rather than two (TLS reads come from rustls's buffer
/// already). Reads of a frame's body larger than this go straight into the frame's buffer, so
/// a body is copied out of this buffer only for its first few bytes.
const HEADER_READ_AHEAD_BYTES: usize = 64;

/// Bytes of a response written at a time; each write must make progress within
/// `connection_write_timeout`.
const RESPONSE_WRITE_CHUNK_BYTES: usize = 256 * 1024;

/// Writes one response, closing the connection (an error) when the client reads nothing of it
/// for `timeout`: its memory is held until it is written. Large parts (Fetch records) go to the
/// socket straight from their shared buffers; small ones gather in the connection's buffer.
async fn write_response(
    writer: &mut (impl AsyncWriteExt + Unpin),
    response: &[Bytes],
    timeout: Duration,
) -> std::io::Result<()> {
    for chunk in response
        .iter()
        .flat_map(|part| part.chunks(RESPONSE_WRITE_CHUNK_BYTES))
    {
        match tokio::time::timeout(timeout, writer.write_all(chunk)).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("client read nothing for {timeout:?}"),
                ))
            }
        }
    }
    Ok(())
}

/// The largest frame read before a SASL login: a login step and its request header.
const LOGIN_FRAME_MAX_BYTES: usize = crate::security::sasl::AUTH_BYTES_MAX + 4096;

/// Ordered requests (all but Produce and Fetch) one connection may have decoded and in progress
/// or waiting for the one before them; further frames stay unread in the socket.
const ORDERED_REQUESTS_WAITING_MAX: usize = 8;

/// Whether a request takes effect in connection order: all but Produce (staged in order
/// instead, so pipelined produce keeps its throughput) and Fetch (reads only what was
/// committed), as Kafka, which handles a connection's requests one at a time.
fn ordered(api_key: ApiKey) -> bool {
    !matches!(api_key, ApiKey::Produce | ApiKey::Fetch)
}

/// A request's reply as the writer waits for it, in request order.
enum Pending {
    Ready(Reply),
    /// Handled by a task of its own, which may run ahead of the writer.
    Task(tokio::task::JoinHandle<Reply>),
    /// Handled by the writer when it reaches it.
    Inline(Pin<Box<dyn Future<Output = Reply> + Send>>),
}

impl Pending {
    /// The reply, or what a handler that panicked said.
    async fn reply(self) -> Result<Reply, String> {
        match self {
            Pending::Ready(reply) => Ok(reply),
            Pending::Task(handle) => handle.await.map_err(|e| e.to_string()),
            Pending::Inline(reply) => {
                AssertUnwindSafe(reply)
                    .catch_unwind()
                    .await
                    .map_err(|panic| {
                        panic
                            .downcast_ref::<&str>()
                            .map(|s| (*s).to_owned())
                            .or_else(|| panic.downcast_ref::<String>().cloned())
                            .unwrap_or_else(|| "panic".to_owned())
                    })
            }
        }
    }
}

/// Serves one connection (plain TCP or TLS) until it closes.
async fn run_connection<R, W>(
    mut reader: R,
    writer: W,
    broker: Arc<Broker>,
    session: Arc<Session>,
    need: FrameNeed,
) where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (responses, mut ordered_replies) =
        mpsc::channel::<Pending>(broker.limits.connection_max_inflight_requests);
    let write_timeout = broker.limits.connection_write_timeout;
    let writer_task = tokio::spawn(async move {
        let mut writer = BufWriter::new(writer);
        while let Some(pending) = ordered_replies.recv().await {
            let mut reply = std::pin::pin!(pending.reply());
            // Responses written so far go out before waiting for one still being handled: a
            // pipelining producer always has a next request queued, so "flush when nothing is
            // queued" alone held its acknowledgements back until the buffer filled.
            let response = match reply.as_mut().now_or_never() {
                Some(response) => response,
                None => {
                    match tokio::time::timeout(write_timeout, writer.flush()).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) | Err(_) => return,
                    }
                    reply.await
                }
            };
            let response = match response {
                Ok(response) => response,
                Err(error) => {
                    tracing::error!(error, "request handler panicked; closing connection");
                    return;
                }
            };
            let (response, held) = match response {
                Reply::Respond(response, held) => (response, held),
                Reply::Nothing => continue,
                Reply::Close => break,
            };
            if let Err(error) = write_response(&mut writer, &response, write_timeout).await {
                tracing::info!(%error, "closing connection");
                return;
            }
            if ordered_replies.is_empty() {
                match tokio::time::timeout(write_timeout, writer.flush()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) | Err(_) => return,
                }
            }
            drop(held);
        }
        let _ = tokio::time::timeout(write_timeout, writer.flush()).await;
    });
    let connection = Arc::new(broker.budgets.connection());
    let window = Arc::new(crate::windows::ConnectionWindow::default());
    let limits = FrameLimits {
        max_bytes: broker.limits.socket_request_max_bytes,
        non_produce_max_bytes: broker.budgets.non_produce_request_max_bytes,
    };
    let ordered_slots = Arc::new(Semaphore::new(ORDERED_REQUESTS_WAITING_MAX));
    // Completes when the last ordered request so far has been handled.
    let mut previous: Option<oneshot::Receiver<()>> = None;
    // A connection to a SASL listener has this long to log in, all steps together.
    let login_deadline = session
        .listener
        .protocol
        .sasl()
        .then(|| tokio::time::Instant::now() + broker.sasl.login_timeout);
    loop {
        let authenticated = session.authenticated();
        let idle = match login_deadline {
            Some(deadline) if !authenticated => {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                if left.is_zero() {
                    tracing::info!(peer = %session.peer, "closing connection: no SASL login in time");
                    break;
                }
                left.min(broker.limits.connections_max_idle)
            }
            _ => broker.limits.connections_max_idle,
        };
        // Before a SASL login, frames are no larger than a login step needs (Kafka's
        // `sasl.server.max.receive.size`): strangers cannot make the broker read and hold large
        // requests it will refuse.
        let frame_limits = if !authenticated {
            FrameLimits {
                max_bytes: limits.max_bytes.min(LOGIN_FRAME_MAX_BYTES),
                non_produce_max_bytes: limits.non_produce_max_bytes.min(LOGIN_FRAME_MAX_BYTES),
            }
        } else {
            limits
        };
        let frame = match read_frame(&mut reader, frame_limits, idle, &broker.budgets, &need).await
        {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(error) => {
                tracing::info!(%error, "closing connection");
                break;
            }
        };
        let Frame { bytes, mut held } = frame;
        if session.expects_raw_token() {
            // A login begun with SaslHandshake v0: the frame is a bare SASL token.
            let (reply, next) = raw_sasl_step(&broker, &session, bytes.freeze()).await;
            drop(held);
            if queue_login_step(&responses, reply, next).await {
                continue;
            }
            break;
        }
        // Decoding allocates within a reservation, which then shrinks to what it used: a request
        // holds what it really takes for as long as it waits.
        let mut decoding = broker.budgets.decoding(bytes.len()).await;
        let (request, used) = api::decode_request_within(bytes.freeze(), decoding.first_bytes());
        decoding.shrink_to(used);
        held.merge(decoding);
        let request = match request {
            Ok(request) => request,
            Err(error) => {
                tracing::info!(%error, "undecodable request; closing connection");
                break;
            }
        };
        if let Decoded::Request(request) = &request {
            if let Admission::Close(reason) =
                session.admit(request.api_key, tokio::time::Instant::now())
            {
                tracing::info!(
                    peer = %session.peer,
                    api = ?request.api_key,
                    reason,
                    "closing connection"
                );
                break;
            }
        }
        let broker = broker.clone();
        let pending = match request {
            Decoded::Immediate(response) => Pending::Ready(Reply::Respond(vec![response], held)),
            Decoded::Request(request)
                if session.listener.protocol.sasl()
                    && matches!(
                        request.api_key,
                        ApiKey::SaslHandshake | ApiKey::SaslAuthenticate
                    ) =>
            {
                // A login step takes effect before the next request is read: the requests
                // before it first (a re-authentication comes between requests).
                if let Some(previous) = previous.take() {
                    let _ = previous.await;
                }
                let (reply, next) = sasl_step(&broker, &session, *request).await;
                drop(held);
                if queue_login_step(&responses, Some(reply), next).await {
                    continue;
                }
                break;
            }
            Decoded::Request(request) if request.api_key == ApiKey::Produce => {
                // Queued after every earlier request took effect, before the next is read.
                if let Some(previous) = previous.take() {
                    let _ = previous.await;
                }
                let staged = api::stage(&broker, request, &session).await;
                drop(held);
                let in_flight = staged.produce_window().map(|(idempotent, bytes)| {
                    let (in_flight, blocked) = broker.windows.enter(&window, idempotent, bytes);
                    let min_bytes = broker.flush_window_min_bytes;
                    if blocked.all
                        && min_bytes > 0
                        && broker.log.buffered_bytes() >= blocked.flush_threshold(min_bytes)
                    {
                        broker.log.flush_without_linger();
                    }
                    in_flight
                });
                // Completed by the writer, in order: a task per request cost a wake-up of the
                // other worker each (a sixth of the broker's CPU at 1,500 small requests/s); the
                // writer is woken once per flush instead.
                let connection = connection.clone();
                let session = session.clone();
                Pending::Inline(Box::pin(async move {
                    let reply = api::complete(&broker, staged, &connection, &session).await;
                    drop(in_flight);
                    reply
                }))
            }
            Decoded::Request(request) if !ordered(request.api_key) => {
                let connection = connection.clone();
                let session = session.clone();
                Pending::Task(tokio::spawn(async move {
                    let staged = api::stage(&broker, request, &session).await;
                    let reply = api::complete(&broker, staged, &connection, &session).await;
                    drop(held);
                    reply
                }))
            }
            Decoded::Request(request) => {
                // Kafka handles a connection's requests one at a time and leaves the rest in the
                // socket; a few may wait here, decoded, behind one that waits long (a rebalance).
                let Ok(slot) = ordered_slots.clone().acquire_owned().await else {
                    break;
                };
                let (done, next) = oneshot::channel();
                let after = previous.replace(next);
                let connection = connection.clone();
                let session = session.clone();
                Pending::Task(tokio::spawn(async move {
                    if let Some(after) = after {
                        // Err: that handler panicked; its connection closes anyway.
                        let _ = after.await;
                    }
                    let staged = api::stage(&broker, request, &session).await;
                    let reply = api::complete(&broker, staged, &connection, &session).await;
                    drop((held, slot));
                    let _ = done.send(());
                    reply
                }))
            }
        };
        if responses.send(pending).await.is_err() {
            break;
        }
    }
    drop(responses);
    let _ = writer_task.await;
}

/// Queues a login step's answer (none for a failed bare token) and, when the login failed, the
/// close after `--connection-failed-authentication-delay-ms`; whether the connection goes on.
async fn queue_login_step(
    responses: &mpsc::Sender<Pending>,
    reply: Option<Reply>,
    next: Next,
) -> bool {
    let delay = match next {
        Next::Continue => None,
        Next::Close(delay) => Some(delay),
    };
    let answer = tokio::spawn(async move {
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        reply.unwrap_or(Reply::Nothing)
    });
    if responses.send(Pending::Task(answer)).await.is_err() {
        return false;
    }
    if delay.is_some() {
        let _ = responses.send(Pending::Ready(Reply::Close)).await;
        return false;
    }
    true
}

/// One SaslHandshake or SaslAuthenticate on a SASL listener: its answer, and whether the
/// connection goes on.
async fn sasl_step(broker: &Broker, session: &Session, request: api::Request) -> (Reply, Next) {
    use kafka_protocol::messages::{RequestKind, ResponseKind};
    let version = request.header.request_api_version;
    let correlation_id = request.header.correlation_id;
    let started = tokio::time::Instant::now();
    let (response, next) = match request.body {
        RequestKind::SaslHandshake(req) => {
            let (response, next) = broker
                .sasl
                .handshake(session, &req, version, &broker.metrics);
            (ResponseKind::SaslHandshake(response), next)
        }
        RequestKind::SaslAuthenticate(req) => {
            let (response, next) = broker
                .sasl
                .authenticate(session, &req, &broker.metrics)
                .await;
            (ResponseKind::SaslAuthenticate(response), next)
        }
        _ => return (Reply::Close, Next::Close(Duration::ZERO)),
    };
    let api_key = request.api_key;
    broker.metrics.request(
        if api_key == ApiKey::SaslHandshake {
            "SaslHandshake"
        } else {
            "SaslAuthenticate"
        },
        started.elapsed(),
    );
    let reply = api::respond(api_key, version, correlation_id, &response, Held::default());
    (reply, next)
}

/// One bare SASL token (after SaslHandshake v0): the answer as a bare token, or none when the
/// login failed (the connection closes; this framing has no room for an error).
async fn raw_sasl_step(broker: &Broker, session: &Session, token: Bytes) -> (Option<Reply>, Next) {
    let request =
        kafka_protocol::messages::SaslAuthenticateRequest::default().with_auth_bytes(token);
    let (response, next) = broker
        .sasl
        .authenticate(session, &request, &broker.metrics)
        .await;
    if response.error_code != 0 {
        return (None, next);
    }
    let mut frame = BytesMut::with_capacity(4 + response.auth_bytes.len());
    let length = u32::try_from(response.auth_bytes.len()).unwrap_or(u32::MAX);
    frame.extend_from_slice(&length.to_be_bytes());
    frame.extend_from_slice(&response.auth_bytes);
    (
        Some(Reply::Respond(vec![frame.freeze()], Held::default())),
        next,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_client_that_stops_reading_is_closed() {
        let (_client, mut server) = tokio::io::duplex(1024);
        let response = vec![Bytes::from(vec![7u8; 4096])];
        let result = write_response(&mut server, &response, Duration::from_secs(30)).await;
        assert_eq!(
            result.expect_err("times out").kind(),
            std::io::ErrorKind::TimedOut
        );
    }
}
