//! Wakes a connection's reader when the rest of its frame is there, not for every packet.
//!
//! A client sends a large request in pieces (librdkafka over TLS writes each 16 KiB record on
//! its own), and a reader that has drained the socket is woken for each piece: ten thousand
//! context switches a second for one TLS producer, a third of the broker's produce CPU. While a
//! frame's body is being read, the reader knows how many bytes it still needs; when the socket
//! has none, [`LowWatermark`] sets the socket's receive low-water mark (`SO_RCVLOWAT`) to that
//! many (less a margin for what TLS holds back, at most [`MAX_BYTES`]), so the kernel wakes the
//! reader once they have arrived. Between frames the mark is 1 byte again. The kernel itself
//! wakes a reader whose receive window is nearly full, so a mark can delay a read, never stall it.

use std::io;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;

/// The highest mark set: the kernel grows the socket's receive buffer to twice the mark.
pub const MAX_BYTES: usize = 512 * 1024;

/// Bytes a TLS transport's reader may still be waiting for although they are in rustls
/// already: at most one partial record (16 KiB of plaintext and its header and tag).
pub const TLS_MARGIN_BYTES: usize = 32 * 1024;

// SO_RCVLOWAT, which neither socket2, rustix nor nix name yet; defined with nix's own macro for
// options it lacks.
use nix::{setsockopt_impl, sockopt_impl};
sockopt_impl!(
    ReceiveLowWatermark,
    SetOnly,
    libc::SOL_SOCKET,
    libc::SO_RCVLOWAT,
    usize
);

/// How many more bytes of the current frame the connection's reader needs (0 between frames).
#[derive(Debug, Clone, Default)]
pub struct FrameNeed(Arc<AtomicUsize>);

impl FrameNeed {
    pub fn set(&self, bytes: usize) {
        self.0.store(bytes, Ordering::Relaxed);
    }

    fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// A socket read whose low-water mark follows the reader's [`FrameNeed`].
#[derive(Debug)]
pub struct LowWatermark<S> {
    inner: S,
    need: FrameNeed,
    /// Subtracted from the need: what a layer above (TLS) may hold already.
    margin: usize,
    mark: usize,
}

impl<S> LowWatermark<S> {
    pub fn new(inner: S, need: FrameNeed, margin: usize) -> Self {
        Self {
            inner,
            need,
            margin,
            mark: 1,
        }
    }

    /// The mark for a reader that needs `need` more bytes.
    fn mark_for(&self, need: usize) -> usize {
        need.saturating_sub(self.margin).clamp(1, MAX_BYTES)
    }
}

/// The TCP socket under a transport.
pub trait Socket {
    fn socket(&self) -> &TcpStream;
}

impl Socket for TcpStream {
    fn socket(&self) -> &TcpStream {
        self
    }
}

impl Socket for OwnedReadHalf {
    fn socket(&self) -> &TcpStream {
        self.as_ref()
    }
}

impl<S: AsyncRead + Socket + Unpin> AsyncRead for LowWatermark<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        if read.is_pending() {
            // Nothing to read and the waker registered: the kernel checks the new mark against
            // what it holds as it is set, so bytes already there still wake the reader.
            let mark = this.mark_for(this.need.get());
            if mark != this.mark {
                let socket = this.inner.socket().as_fd();
                match nix::sys::socket::setsockopt(&socket, ReceiveLowWatermark, &mark) {
                    Ok(()) => this.mark = mark,
                    Err(error) => tracing::debug!(%error, "SO_RCVLOWAT not set"),
                }
            }
        }
        read
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for LowWatermark<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A client socket, and its server end read under a mark with `margin`, needing 10,000 bytes.
    async fn watched(margin: usize) -> (TcpStream, FrameNeed, LowWatermark<TcpStream>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let (client, accepted) = tokio::join!(TcpStream::connect(address), listener.accept());
        let need = FrameNeed::default();
        let reader = LowWatermark::new(accepted.expect("accept").0, need.clone(), margin);
        need.set(10_000);
        (client.expect("connect"), need, reader)
    }

    #[tokio::test]
    async fn the_reader_wakes_once_the_needed_bytes_are_there() {
        let (mut client, need, mut reader) = watched(0).await;
        let reading = async {
            let mut got = vec![0u8; 10_000];
            let mut first = 0;
            // The first read waits (the mark is set to 10,000) and then gets all of it.
            while first == 0 {
                first = reader.read(&mut got).await.expect("read");
            }
            first
        };
        let sending = async {
            for _ in 0..10 {
                client.write_all(&[5u8; 1000]).await.expect("write");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        let (first, ()) = tokio::join!(reading, sending);
        assert_eq!(first, 10_000, "woken once, for the whole need");
        assert_eq!(reader.mark, 10_000);

        // Between frames the mark is 1 again: a lone byte wakes the reader.
        need.set(0);
        let mut one = [0u8; 1];
        let waiting = tokio::time::timeout(Duration::from_millis(50), reader.read(&mut one)).await;
        assert!(waiting.is_err(), "nothing sent yet");
        assert_eq!(reader.mark, 1);
        client.write_all(&[9]).await.expect("write");
        let n = tokio::time::timeout(Duration::from_secs(5), reader.read(&mut one))
            .await
            .expect("woken by one byte")
            .expect("read");
        assert_eq!((n, one[0]), (1, 9));
    }

    #[tokio::test]
    async fn a_margin_wakes_the_reader_before_the_whole_need_arrived() {
        let (mut client, _need, mut reader) = watched(4_000).await;
        let mut got = vec![0u8; 10_000];
        let waiting = tokio::time::timeout(Duration::from_millis(50), reader.read(&mut got)).await;
        assert!(waiting.is_err());
        assert_eq!(reader.mark, 6_000);
        client.write_all(&[1u8; 6_000]).await.expect("write");
        let n = tokio::time::timeout(Duration::from_secs(5), reader.read(&mut got))
            .await
            .expect("woken at the mark")
            .expect("read");
        assert_eq!(n, 6_000);
    }

    #[test]
    fn marks_are_bounded() {
        let (a, _) = std::os::unix::net::UnixStream::pair().expect("pair");
        let reader = LowWatermark::new(a, FrameNeed::default(), TLS_MARGIN_BYTES);
        assert_eq!(reader.mark_for(0), 1);
        assert_eq!(reader.mark_for(TLS_MARGIN_BYTES), 1);
        assert_eq!(reader.mark_for(TLS_MARGIN_BYTES + 100), 100);
        assert_eq!(reader.mark_for(100 << 20), MAX_BYTES);
    }
}
