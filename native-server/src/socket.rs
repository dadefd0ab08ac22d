//! The WebSocket side of a connection's I/O loop: writing what is queued as far as the socket
//! takes it, and what a read error means.

use std::collections::VecDeque;
use std::task::{Context, Poll};

use axum::extract::ws::{Message as WsMessage, WebSocket};
use futures_util::{SinkExt, StreamExt};
use wsrelay_core::server::TransportError;

/// What the socket did.
pub(crate) enum Io {
    /// Queued frames were written (or flushed): how many were mailbox frames.
    Written(Result<usize, axum::Error>),
    /// A frame arrived, or the stream ended.
    Read(Option<Result<WsMessage, axum::Error>>),
}

/// Writes what is queued if the socket takes it, else reads a frame if `read`. One function
/// over the whole socket rather than split halves: splitting puts the socket behind a lock
/// that every write and read then takes (8% of a broadcast's instructions per delivery).
pub(crate) fn poll_io(
    socket: &mut WebSocket,
    cx: &mut Context<'_>,
    outq: &mut VecDeque<(WsMessage, bool)>,
    unflushed: &mut bool,
    read: bool,
) -> Poll<Io> {
    if !outq.is_empty() || *unflushed {
        if let Poll::Ready(written) = poll_write(socket, cx, outq, unflushed) {
            return Poll::Ready(Io::Written(written));
        }
    }
    if read {
        if let Poll::Ready(frame) = socket.poll_next_unpin(cx) {
            return Poll::Ready(Io::Read(frame));
        }
    }
    Poll::Pending
}

/// Writes queued frames as far as the socket takes them, then flushes. Ready when it made
/// progress, with how many mailbox frames were handed to the socket.
pub(crate) fn poll_write(
    socket: &mut WebSocket,
    cx: &mut Context<'_>,
    outq: &mut VecDeque<(WsMessage, bool)>,
    unflushed: &mut bool,
) -> Poll<Result<usize, axum::Error>> {
    let mut delivered = 0;
    let mut progressed = false;
    while !outq.is_empty() {
        match socket.poll_ready_unpin(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
            Poll::Pending => break,
        }
        let Some((message, numbered)) = outq.pop_front() else {
            break;
        };
        if let Err(error) = socket.start_send_unpin(message) {
            return Poll::Ready(Err(error));
        }
        delivered += usize::from(numbered);
        progressed = true;
        *unflushed = true;
    }
    if *unflushed {
        match socket.poll_flush_unpin(cx) {
            Poll::Ready(Ok(())) => {
                *unflushed = false;
                progressed = true;
            }
            Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
            Poll::Pending => {}
        }
    }
    if progressed {
        Poll::Ready(Ok(delivered))
    } else {
        Poll::Pending
    }
}

/// What a read error means: the transport's size limit, invalid UTF-8 in a text frame (RFC 6455
/// requires failing the connection), protocol violations, I/O; `None` when the connection just
/// ended without a close handshake.
pub(crate) fn transport_error(error: axum::Error) -> Option<TransportError> {
    let inner = error.into_inner();
    Some(match inner.downcast_ref::<tungstenite::Error>() {
        Some(tungstenite::Error::Capacity(_)) => TransportError::TooLarge,
        Some(tungstenite::Error::Utf8(_)) => TransportError::InvalidUtf8,
        Some(tungstenite::Error::Protocol(
            tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
        ))
        | Some(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
            return None
        }
        Some(tungstenite::Error::Protocol(error)) => TransportError::Protocol(error.to_string()),
        _ => TransportError::Io(inner.to_string()),
    })
}
