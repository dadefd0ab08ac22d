//! The WebSocket side of a connection's I/O loop: writing what is queued as far as the socket
//! takes it, and what a read error means.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::task::Poll;

use axum::extract::ws::{Message as WsMessage, WebSocket};
use futures_util::stream::SplitSink;
use futures_util::SinkExt;
use wsrelay_core::server::TransportError;

/// The writing half of a connection's socket.
pub(crate) type Sink = SplitSink<WebSocket, WsMessage>;

/// Writes queued frames as far as the socket takes them, then flushes. Completes when it made
/// progress; returns how many mailbox frames were handed to the socket.
pub(crate) fn write_some<'a>(
    sink: &'a mut Sink,
    outq: &'a mut VecDeque<(WsMessage, bool)>,
    unflushed: &'a mut bool,
) -> impl Future<Output = Result<usize, axum::Error>> + 'a {
    poll_fn(move |cx| {
        let mut delivered = 0;
        let mut progressed = false;
        while !outq.is_empty() {
            match sink.poll_ready_unpin(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => break,
            }
            let Some((message, numbered)) = outq.pop_front() else {
                break;
            };
            if let Err(error) = sink.start_send_unpin(message) {
                return Poll::Ready(Err(error));
            }
            delivered += usize::from(numbered);
            progressed = true;
            *unflushed = true;
        }
        if *unflushed {
            match sink.poll_flush_unpin(cx) {
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
    })
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
