//! The connections of a TLS listener: TCP connections accepted in one task, each handshake in
//! its own (a slow or failing client never holds the others up), the finished ones handed to
//! the server (tonic as a stream, axum as a listener).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Longest a client may take for its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The established TLS connections of a listener, until its cancellation token fires.
pub struct TlsListener {
    connections: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Accept on `listener` with `config` until `cancel`; `what` names the listener in logs.
    pub fn new(
        listener: TcpListener,
        config: Arc<ServerConfig>,
        what: &'static str,
        cancel: CancellationToken,
    ) -> TlsListener {
        let local = listener.local_addr().expect("a bound listener has an address");
        let (tx, connections) = mpsc::channel(64);
        let acceptor = TlsAcceptor::from(config);
        let span = tracing::info_span!("tls_accept", what, %local);
        tokio::spawn(
            async move {
                loop {
                    let (tcp, peer) = tokio::select! {
                        _ = cancel.cancelled() => return,
                        r = listener.accept() => match r {
                            Ok(c) => c,
                            Err(e) => {
                                // Out of descriptors and the like: pass, do not spin.
                                tracing::warn!(%e, "cannot accept a connection");
                                tokio::time::sleep(Duration::from_millis(50)).await;
                                continue;
                            }
                        },
                    };
                    let _ = tcp.set_nodelay(true);
                    let (acceptor, tx, cancel) = (acceptor.clone(), tx.clone(), cancel.clone());
                    tokio::spawn(async move {
                        let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
                        let tls = tokio::select! {
                            _ = cancel.cancelled() => return,
                            r = handshake => r,
                        };
                        match tls {
                            Ok(Ok(s)) => {
                                let _ = tx.send((s, peer)).await;
                            }
                            // A client's problem (plaintext, unknown CA, no client certificate):
                            // worth a line, not an alarm.
                            Ok(Err(e)) => tracing::info!(%peer, %e, "TLS handshake failed"),
                            Err(_) => tracing::info!(%peer, "TLS handshake timed out"),
                        }
                    });
                }
            }
            .instrument(span),
        );
        TlsListener { connections, local }
    }
}

impl tokio_stream::Stream for TlsListener {
    type Item = Result<TlsStream<TcpStream>, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.connections.poll_recv(cx).map(|c| c.map(|(s, _)| Ok(s)))
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.connections.recv().await {
            Some(c) => c,
            // Cancelled: the server's graceful shutdown ends it.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
