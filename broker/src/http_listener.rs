//! Serving the HTTP API (admin views, console, compactor progress) on `--http-listeners`:
//! plain HTTP, or HTTPS when the listener is written `https://IP:PORT`.
//!
//! HTTPS serves the Kafka listeners' certificate (`--ssl-keystore-location`, reloaded with it
//! when renewed). Callers authenticate with HTTP Basic or a Bearer token (`http_auth`), as a
//! SASL_SSL client does with SASL, so a password never crosses the network in the clear; with
//! `--ssl-client-auth` other than `none` the port also asks for a client certificate (never
//! insists: probes and browsers have none), and one it verified names the caller as it names
//! an SSL client (`--ssl-principal-mapping-rules`). Handshakes run in their own tasks, at most
//! [`HANDSHAKES_MAX`] at once and each within the Kafka listeners' handshake timeout, so a
//! client that stalls its handshake holds up no one else.

use crate::security::principal::PrincipalMapper;
use crate::security::tls::{ReloadingAcceptor, HANDSHAKE_TIMEOUT};
use crate::security::Principal;
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

/// Who is at the other end of a connection, as the handlers see it
/// (`ConnectInfo<HttpPeer>`), whichever the listener.
#[derive(Clone, Debug)]
pub struct HttpPeer {
    pub addr: SocketAddr,
    /// The principal of the client certificate verified in the TLS handshake, if any.
    pub certificate: Option<Principal>,
}

impl Connected<IncomingStream<'_, TcpListener>> for HttpPeer {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Self {
        HttpPeer {
            addr: *stream.remote_addr(),
            certificate: None,
        }
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for HttpPeer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        stream.remote_addr().clone()
    }
}

/// Called for each TLS handshake that fails or does not finish in time.
pub type HandshakeFailed = Arc<dyn Fn() + Send + Sync>;

/// HTTPS: the acceptor, and how client certificates' subjects become principals.
pub struct Https {
    pub acceptor: Arc<ReloadingAcceptor>,
    pub principals: Arc<PrincipalMapper>,
    pub handshake_failed: HandshakeFailed,
}

/// Serves `app` on `tcp` (over TLS with `tls`) until `shutdown`, then lets requests in
/// progress finish.
pub async fn serve(
    tcp: TcpListener,
    tls: Option<Https>,
    app: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = app.into_make_service_with_connect_info::<HttpPeer>();
    let stopped = shutdown.clone();
    match tls {
        None => {
            axum::serve(tcp, app)
                .with_graceful_shutdown(async move { stopped.cancelled().await })
                .await
        }
        Some(https) => {
            let listener = TlsListener::spawn(tcp, https, shutdown)?;
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { stopped.cancelled().await })
                .await
        }
    }
}

/// Accepted connections after their TLS handshake, for axum.
pub struct TlsListener {
    accepted: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, HttpPeer)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Starts accepting on `tcp`: each connection is handshaken in a task of its own.
    fn spawn(
        tcp: TcpListener,
        https: Https,
        shutdown: CancellationToken,
    ) -> std::io::Result<TlsListener> {
        let Https {
            acceptor,
            principals,
            handshake_failed,
        } = https;
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
                let principals = principals.clone();
                tokio::spawn(async move {
                    let accepted =
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(socket)).await;
                    drop(permit);
                    match accepted {
                        Ok(Ok(stream)) => {
                            let peer = HttpPeer {
                                addr: peer,
                                certificate: principals
                                    .of_peer(stream.get_ref().1.peer_certificates()),
                            };
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
    type Addr = HttpPeer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(accepted) => accepted,
            // The accepting task ends only at shutdown, when axum stops asking.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(HttpPeer {
            addr: self.local,
            certificate: None,
        })
    }
}
