//! The accept loop: every TCP connection gets a pending place (bounded in total: accepting
//! waits for one; and per address: closed at once), an optional TLS handshake and HTTP/1.1 with a header-read timeout, all within
//! `handshake_timeout`; a connection that upgrades to a WebSocket leaves the pending count.
//! Accept errors (out of file descriptors, most likely) are logged and waited out.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::admission::Place;
use crate::http::Peer;
use crate::logs::LogLimit;
use crate::state::ServerState;

/// Largest request head (request line and headers) read; hyper's own default is 400 KiB.
const MAX_HEAD: usize = 32 * 1024;

/// Accepts connections until `stop` is cancelled.
pub(crate) async fn accept(
    listener: TcpListener,
    state: Arc<ServerState>,
    app: Router,
    stop: CancellationToken,
) {
    let tls = state.config.tls.clone().map(TlsAcceptor::from);
    static ACCEPT_ERRORS: LogLimit = LogLimit::new();
    static TURNED_AWAY: LogLimit = LogLimit::new();
    loop {
        let permit = tokio::select! {
            () = stop.cancelled() => return,
            permit = state.admission.pending_place() => permit,
        };
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (tcp, addr) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                state.metrics.accept_errors.inc();
                if let Some(suppressed) = ACCEPT_ERRORS.allow() {
                    tracing::warn!(%error, suppressed, "accept failed");
                }
                // Out of file descriptors, typically: give connections time to end rather
                // than spin on the error.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(place) = state.admission.pending(addr.ip(), permit) else {
            state.metrics.turned_away.inc();
            if let Some(suppressed) = TURNED_AWAY.allow() {
                tracing::warn!(
                    peer = %addr.ip(),
                    suppressed,
                    "too many connections waiting to upgrade from this address: closed"
                );
            }
            continue;
        };
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "TCP_NODELAY not set");
        }
        let (state, app, tls, stop) = (Arc::clone(&state), app.clone(), tls.clone(), stop.clone());
        // Not tracked, as the listener: these end with it, gracefully (see `serve`).
        tokio::spawn(async move {
            let timeout = state.config.handshake_timeout;
            match tls {
                Some(acceptor) => match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => serve(stream, addr, true, place, &state, app, stop).await,
                    Ok(Err(error)) => tracing::debug!(peer = %addr, %error, "TLS handshake failed"),
                    Err(_) => tracing::debug!(peer = %addr, "TLS handshake timed out"),
                },
                None => serve(tcp, addr, false, place, &state, app, stop).await,
            }
        });
    }
}

/// HTTP/1.1 on one connection, until it closes, upgrades, or the server stops.
async fn serve<I>(
    io: I,
    addr: SocketAddr,
    secure: bool,
    place: Place,
    state: &ServerState,
    app: Router,
    stop: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = Peer { addr, secure };
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(peer);
        app.clone().oneshot(request)
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(state.config.handshake_timeout)
        .max_buf_size(MAX_HEAD);
    let connection = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = stop.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(peer = %addr, %error, "HTTP connection ended");
    }
    drop(place);
}
