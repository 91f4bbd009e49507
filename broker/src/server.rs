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
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

/// Serves until `stop_accepting`; open connections keep being served until `close`, so a
/// shutting-down broker still answers the requests it is committing.
pub async fn serve(
    listener: TcpListener,
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
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(error) = socket.set_nodelay(true) {
                tracing::debug!(%error, "set_nodelay failed");
            }
            tokio::select! {
                _ = run_connection(socket, broker) => {}
                _ = close.cancelled() => {}
            }
            tracing::debug!(%peer, "connection closed");
        });
    }
}

/// Bytes read into a frame at a time: memory follows what the client actually sent, not the
/// length it announced.
const FRAME_READ_CHUNK_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame length {0} is negative or over the limit {1}")]
    BadLength(i64, usize),
    #[error("connection idle for longer than {0:?}")]
    Idle(Duration),
    #[error("connection closed in the middle of a frame")]
    Truncated,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Reads one length-prefixed frame; `Ok(None)` on a clean end of stream. Waiting for the frame
/// to start, and then for its last byte, each may take at most `idle`.
pub async fn read_frame(
    reader: &mut (impl AsyncReadExt + Unpin),
    max_bytes: usize,
    idle: Duration,
) -> Result<Option<BytesMut>, FrameError> {
    let mut prefix = [0u8; 4];
    match tokio::time::timeout(idle, reader.read_exact(&mut prefix)).await {
        Err(_) => return Err(FrameError::Idle(idle)),
        Ok(Ok(_)) => {}
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Ok(Err(e)) => return Err(e.into()),
    }
    let length = i32::from_be_bytes(prefix);
    let Ok(length) = usize::try_from(length) else {
        return Err(FrameError::BadLength(i64::from(length), max_bytes));
    };
    if length > max_bytes {
        return Err(FrameError::BadLength(length as i64, max_bytes));
    }
    let mut frame = BytesMut::with_capacity(length.min(FRAME_READ_CHUNK_BYTES));
    let body = async {
        while frame.len() < length {
            let wanted = (length - frame.len()).min(FRAME_READ_CHUNK_BYTES);
            frame.reserve(wanted);
            let read = (&mut *reader)
                .take(wanted as u64)
                .read_buf(&mut frame)
                .await?;
            if read == 0 {
                return Err(FrameError::Truncated);
            }
        }
        Ok(())
    };
    match tokio::time::timeout(idle, body).await {
        Err(_) => Err(FrameError::Idle(idle)),
        Ok(result) => result.map(|()| Some(frame)),
    }
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
        let frame = match read_frame(
            &mut reader,
            broker.limits.socket_request_max_bytes,
            broker.limits.connections_max_idle,
        )
        .await
        {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_are_bounded_and_read_as_they_arrive() {
        let idle = Duration::from_secs(5);
        let mut ok: &[u8] = &[0, 0, 0, 3, b'a', b'b', b'c'];
        let frame = read_frame(&mut ok, 10, idle)
            .await
            .expect("frame")
            .expect("some");
        assert_eq!(&frame[..], b"abc");
        let mut empty: &[u8] = &[];
        assert!(read_frame(&mut empty, 10, idle)
            .await
            .expect("eof")
            .is_none());
        let mut too_long: &[u8] = &[0, 0, 0, 11];
        assert!(matches!(
            read_frame(&mut too_long, 10, idle).await,
            Err(FrameError::BadLength(11, 10))
        ));
        let mut negative: &[u8] = &[0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            read_frame(&mut negative, 10, idle).await,
            Err(FrameError::BadLength(-1, 10))
        ));
        // Announces 100 MB, sends 2 bytes: an error, and no 100 MB buffer.
        let mut short: &[u8] = &[0x05, 0xf5, 0xe1, 0x00, 1, 2];
        assert!(matches!(
            read_frame(&mut short, 200_000_000, idle).await,
            Err(FrameError::Truncated)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn silent_connections_time_out() {
        let (mut client, mut server) = tokio::io::duplex(64);
        let idle = Duration::from_secs(30);
        let reading = tokio::spawn(async move { read_frame(&mut server, 10, idle).await });
        client.write_all(&[0, 0, 0, 5, 1]).await.expect("write");
        let result = reading.await.expect("join");
        assert!(matches!(result, Err(FrameError::Idle(_))), "{result:?}");
    }
}
