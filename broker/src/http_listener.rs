//! Serving the HTTP API (admin views, console, compactor progress) on `--http-listeners`:
//! plain HTTP, or HTTPS when the listener is written `https://IP:PORT`.
//!
//! HTTPS serves the Kafka listeners' certificate (`--ssl-keystore-location`, reloaded with it
//! when renewed) and asks no client certificate: callers authenticate with HTTP Basic or a
//! Bearer token (`http_auth`), as a SASL_SSL client does with SASL, so a password never
//! crosses the network in the clear. Handshakes run in their own tasks, at most
//! [`HANDSHAKES_MAX`] at once and each within the Kafka listeners' handshake timeout, so a
//! client that stalls its handshake holds up no one else.

use crate::security::tls::{ReloadingAcceptor, HANDSHAKE_TIMEOUT};
use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use axum::Router;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

/// TLS handshakes of the HTTPS listener in progress at once; more connections wait in the
/// kernel's accept queue.
pub const HANDSHAKES_MAX: usize = 256;
/// Handshaken connections waiting for the HTTP server to take them.
const ACCEPTED_QUEUE_MAX: usize = 64;

/// The caller's address, as the handlers see it (`ConnectInfo<HttpPeer>`), whichever the
/// listener.
#[derive(Clone, Copy, Debug)]
pub struct HttpPeer(pub SocketAddr);

impl Connected<IncomingStream<'_, TcpListener>> for HttpPeer {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Self {
        HttpPeer(*stream.remote_addr())
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for HttpPeer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        HttpPeer(*stream.remote_addr())
    }
}

/// Called for each TLS handshake that fails or does not finish in time.
pub type HandshakeFailed = Arc<dyn Fn() + Send + Sync>;

/// Serves `app` on `tcp` (over TLS with `tls`) until `shutdown`, then lets requests in
/// progress finish.
pub async fn serve(
    tcp: TcpListener,
    tls: Option<Arc<ReloadingAcceptor>>,
    app: Router,
    shutdown: CancellationToken,
    handshake_failed: HandshakeFailed,
) -> std::io::Result<()> {
    let app = app.into_make_service_with_connect_info::<HttpPeer>();
    let stopped = shutdown.clone();
    match tls {
        None => {
            axum::serve(tcp, app)
                .with_graceful_shutdown(async move { stopped.cancelled().await })
                .await
        }
        Some(acceptor) => {
            let listener = TlsListener::spawn(tcp, acceptor, handshake_failed, shutdown)?;
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { stopped.cancelled().await })
                .await
        }
    }
}

/// Accepted connections after their TLS handshake, for axum.
pub struct TlsListener {
    accepted: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Starts accepting on `tcp`: each connection is handshaken in a task of its own.
    fn spawn(
        tcp: TcpListener,
        acceptor: Arc<ReloadingAcceptor>,
        handshake_failed: HandshakeFailed,
        shutdown: CancellationToken,
    ) -> std::io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let (sender, accepted) = tokio::sync::mpsc::channel(ACCEPTED_QUEUE_MAX);
        let handshakes = Arc::new(tokio::sync::Semaphore::new(HANDSHAKES_MAX));
        tokio::spawn(async move {
            loop {
                let permit = tokio::select! {
                    permit = handshakes.clone().acquire_owned() => {
                        permit.expect("the semaphore is never closed")
                    }
                    _ = shutdown.cancelled() => return,
                };
                let (socket, peer) = tokio::select! {
                    accepted = tcp.accept() => match accepted {
                        Ok(accepted) => accepted,
                        Err(error) => {
                            // Out of file descriptors and the like: let the condition pass.
                            tracing::warn!(%error, "HTTPS listener cannot accept connections");
                            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                    _ = shutdown.cancelled() => return,
                };
                let tls = acceptor.current();
                let sender = sender.clone();
                let handshake_failed = handshake_failed.clone();
                tokio::spawn(async move {
                    let accepted =
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(socket)).await;
                    drop(permit);
                    match accepted {
                        Ok(Ok(stream)) => {
                            // The server has stopped when nothing receives.
                            let _ = sender.send((stream, peer)).await;
                        }
                        Ok(Err(error)) => {
                            handshake_failed();
                            tracing::debug!(%peer, %error, "HTTPS: TLS handshake failed");
                        }
                        Err(_) => {
                            handshake_failed();
                            tracing::debug!(%peer, "HTTPS: TLS handshake not finished in time");
                        }
                    }
                });
            }
        });
        Ok(TlsListener { accepted, local })
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(accepted) => accepted,
            // The accepting task ends only at shutdown, when axum stops asking.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
