//! The Kafka listener: accepts connections and runs each one as a reader and a writer.
//!
//! The reader takes frames off the socket (length prefix checked against
//! `socket.request.max.bytes` before anything is allocated), decodes each request and spawns its
//! handler; the writer sends responses strictly in request order. At most
//! `connection_max_inflight_requests` requests per connection are in progress; past that the
//! reader stops reading, so a fast client is slowed by TCP, not by broker memory. Anything a
//! client sends can at worst close its own connection.

use crate::api::{self, Broker, Decoded, Reply};
use bytes::BytesMut;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

pub async fn serve(listener: TcpListener, broker: Arc<Broker>, shutdown: CancellationToken) {
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
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(error) = socket.set_nodelay(true) {
                tracing::debug!(%error, "set_nodelay failed");
            }
            tokio::select! {
                _ = run_connection(socket, broker) => {}
                _ = shutdown.cancelled() => {}
            }
            tracing::debug!(%peer, "connection closed");
        });
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame length {0} is negative or over the limit {1}")]
    BadLength(i64, usize),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Reads one length-prefixed frame; `Ok(None)` on a clean end of stream.
pub async fn read_frame(
    reader: &mut (impl AsyncReadExt + Unpin),
    max_bytes: usize,
) -> Result<Option<BytesMut>, FrameError> {
    let mut prefix = [0u8; 4];
    match reader.read_exact(&mut prefix).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let length = i32::from_be_bytes(prefix);
    let Ok(length) = usize::try_from(length) else {
        return Err(FrameError::BadLength(i64::from(length), max_bytes));
    };
    if length > max_bytes {
        return Err(FrameError::BadLength(length as i64, max_bytes));
    }
    let mut frame = BytesMut::zeroed(length);
    reader.read_exact(&mut frame).await?;
    Ok(Some(frame))
}

async fn run_connection(socket: TcpStream, broker: Arc<Broker>) {
    let (mut reader, writer) = socket.into_split();
    let (responses, mut ordered) = mpsc::channel::<tokio::task::JoinHandle<Reply>>(
        broker.limits.connection_max_inflight_requests,
    );
    let writer_task = tokio::spawn(async move {
        let mut writer = BufWriter::new(writer);
        while let Some(handle) = ordered.recv().await {
            let response = match handle.await {
                Ok(response) => response,
                Err(error) => {
                    tracing::error!(%error, "request handler panicked; closing connection");
                    return;
                }
            };
            let response = match response {
                Reply::Respond(response) => response,
                Reply::Nothing => continue,
                Reply::Close => break,
            };
            if writer.write_all(&response).await.is_err() {
                return;
            }
            if ordered.is_empty() && writer.flush().await.is_err() {
                return;
            }
        }
        let _ = writer.flush().await;
    });
    loop {
        let frame = match read_frame(&mut reader, broker.limits.socket_request_max_bytes).await {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(error) => {
                tracing::info!(%error, "closing connection");
                break;
            }
        };
        let request = match api::decode_request(frame.freeze()) {
            Ok(request) => request,
            Err(error) => {
                tracing::info!(%error, "undecodable request; closing connection");
                break;
            }
        };
        let broker = broker.clone();
        let handle = match request {
            Decoded::Immediate(response) => tokio::spawn(async move { Reply::Respond(response) }),
            Decoded::Request(request) => {
                // In order: produce data is queued before the next request is read.
                let staged = api::stage(&broker, request).await;
                tokio::spawn(async move { api::complete(&broker, staged).await })
            }
        };
        if responses.send(handle).await.is_err() {
            break;
        }
    }
    drop(responses);
    let _ = writer_task.await;
}
