//! The WebSocket side of a connection's I/O loop: writing what is queued as far as the socket
//! takes it or reading a frame, over the whole socket; what a read error means; and the raw
//! stream under the WebSocket: for when it can no longer be read as frames, and to give back
//! the read buffer of a large frame.
//!
//! Plain TCP and TLS meet here as one type: the accept loop serves HTTP over either stream,
//! and the upgrade hands over hyper's [`Upgraded`], which owns whichever it was. The
//! WebSocket is therefore one concrete type, `WebSocketStream<Raw>`, polled whole.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{FutureExt, SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame as WsFrame;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};
use tokio_tungstenite::WebSocketStream;
use wsrelay_core::server::TransportError;

/// A connection's WebSocket, over plain TCP or TLS alike (see the module's documentation).
pub(crate) type Socket = WebSocketStream<Raw>;

/// A text frame holding `text` as is: the frame shares the bytes (a broadcast's buffer is
/// written to every recipient without a copy or a second UTF-8 check).
pub(crate) fn text_frame(text: bytes::Bytes) -> WsMessage {
    WsMessage::Frame(WsFrame::message(text, OpCode::Data(Data::Text), true))
}

/// What the socket did.
pub(crate) enum Io {
    /// Queued frames were written (or flushed): how many were mailbox frames.
    Written(Result<usize, tungstenite::Error>),
    /// A frame arrived, or the stream ended.
    Read(Option<Result<WsMessage, tungstenite::Error>>),
}

/// Writes what is queued if the socket takes it, else reads a frame if `read`. One function
/// over the whole socket rather than split halves: splitting puts the socket behind a lock
/// that every write and read then takes (8% of a broadcast's instructions per delivery).
pub(crate) fn poll_io(
    socket: &mut Socket,
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
    socket: &mut Socket,
    cx: &mut Context<'_>,
    outq: &mut VecDeque<(WsMessage, bool)>,
    unflushed: &mut bool,
) -> Poll<Result<usize, tungstenite::Error>> {
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
pub(crate) fn transport_error(error: tungstenite::Error) -> Option<TransportError> {
    Some(match error {
        tungstenite::Error::Capacity(_) => TransportError::TooLarge,
        tungstenite::Error::Utf8(_) => TransportError::InvalidUtf8,
        tungstenite::Error::Protocol(
            tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
        )
        | tungstenite::Error::ConnectionClosed
        | tungstenite::Error::AlreadyClosed => return None,
        tungstenite::Error::Protocol(error) => TransportError::Protocol(error.to_string()),
        other => TransportError::Io(other.to_string()),
    })
}

/// A connection's WebSocket as the I/O loop gets it from the upgrade.
pub(crate) struct Transport {
    pub(crate) socket: Socket,
    /// [`Raw`]'s signal that the WebSocket's buffer holds nothing unread.
    pub(crate) clean: Arc<AtomicBool>,
    /// The WebSocket's settings, for [`renew`].
    pub(crate) config: WebSocketConfig,
}

impl Transport {
    /// The WebSocket over an upgraded connection.
    pub(crate) async fn new(upgraded: Upgraded, config: WebSocketConfig) -> Transport {
        let (raw, clean) = Raw::new(TokioIo::new(upgraded));
        let socket = WebSocketStream::from_raw_socket(raw, Role::Server, Some(config)).await;
        Transport {
            socket,
            clean,
            config,
        }
    }
}

/// A frame whose payload is at least this large is a large frame (see [`Raw`]).
pub(crate) const LARGE_FRAME: u64 = 64 * 1024;

/// The raw byte stream under a connection's WebSocket, watching the frame headers go by.
///
/// tungstenite reads a frame into a buffer it grows to the frame's size, and keeps that buffer
/// (and its capacity) for the rest of the connection: a client that sent one 1 MiB frame costs
/// 1 MiB for as long as it stays. While the payload of a large frame is read, this stream
/// hands over no byte past the frame's end, so that once tungstenite returns the message its
/// buffer holds nothing unread; the connection then starts a fresh WebSocket over the same
/// stream ([`renew`]) and the large buffer goes. Between large frames, reads pass through.
#[derive(Debug)]
pub(crate) struct Raw {
    io: TokioIo<Upgraded>,
    at: Position,
    /// The bytes handed over end exactly with a large frame: tungstenite has nothing unread.
    clean: Arc<AtomicBool>,
}

/// Where the bytes handed over so far end, in the frame sequence.
#[derive(Debug, Clone, Copy)]
enum Position {
    /// In a frame header, of which `have` bytes are in `bytes`.
    Header { bytes: [u8; 14], have: usize },
    /// In a payload, `left` bytes to go.
    Payload { left: u64, large: bool },
}

impl Raw {
    pub(crate) fn new(io: TokioIo<Upgraded>) -> (Raw, Arc<AtomicBool>) {
        let clean = Arc::new(AtomicBool::new(false));
        let raw = Raw {
            io,
            at: Position::Header {
                bytes: [0; 14],
                have: 0,
            },
            clean: Arc::clone(&clean),
        };
        (raw, clean)
    }

    /// How many bytes may be handed over now: up to the end of a large frame's payload.
    fn allowed(&self) -> usize {
        match self.at {
            Position::Payload { left, large: true } => usize::try_from(left).unwrap_or(usize::MAX),
            _ => usize::MAX,
        }
    }

    /// Follows the frame sequence over `data`, handed over just now.
    fn watch(&mut self, mut data: &[u8]) {
        let mut clean = false;
        while let Some((&first, rest)) = data.split_first() {
            match &mut self.at {
                Position::Header { bytes, have } => {
                    bytes[*have] = first;
                    *have += 1;
                    data = rest;
                    if *have < 2 {
                        continue;
                    }
                    let short = u64::from(bytes[1] & 0x7f);
                    let extended = match short {
                        126 => 2,
                        127 => 8,
                        _ => 0,
                    };
                    let mask = if bytes[1] & 0x80 != 0 { 4 } else { 0 };
                    if *have < 2 + extended + mask {
                        continue;
                    }
                    let length = match extended {
                        0 => short,
                        _ => bytes[2..2 + extended]
                            .iter()
                            .fold(0u64, |n, &b| n << 8 | u64::from(b)),
                    };
                    self.at = match length {
                        0 => Position::Header {
                            bytes: [0; 14],
                            have: 0,
                        },
                        left => Position::Payload {
                            left,
                            large: left >= LARGE_FRAME,
                        },
                    };
                }
                Position::Payload { left, large } => {
                    let taken = data.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                    *left -= taken as u64;
                    data = &data[taken..];
                    if *left == 0 {
                        clean = *large && data.is_empty();
                        self.at = Position::Header {
                            bytes: [0; 14],
                            have: 0,
                        };
                    }
                }
            }
        }
        self.clean.store(clean, Ordering::Relaxed);
    }
}

impl AsyncRead for Raw {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // Through a small buffer of our own: a `ReadBuf` cannot be cut short without `unsafe`.
        // tungstenite reads `read_buffer_size` (1 KiB) at a time anyway.
        let mut scratch = [0u8; 4096];
        let room = buf.remaining().min(self.allowed()).min(scratch.len());
        let mut limited = ReadBuf::new(&mut scratch[..room]);
        match Pin::new(&mut self.io).poll_read(cx, &mut limited) {
            Poll::Ready(Ok(())) => {
                let read = limited.filled().len();
                let read = scratch.get(..read).unwrap_or_default();
                buf.put_slice(read);
                self.watch(read);
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl AsyncWrite for Raw {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, data)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// After a large message: when nothing is unread in the WebSocket's buffer and nothing is
/// waiting to be written, a fresh WebSocket over the same stream replaces it (see [`Raw`]);
/// otherwise the socket is given back as it was.
pub(crate) async fn renew(
    mut socket: Socket,
    clean: &AtomicBool,
    config: WebSocketConfig,
) -> Socket {
    let flushed = matches!(socket.flush().now_or_never(), Some(Ok(())));
    if !(flushed && clean.load(Ordering::Relaxed)) {
        return socket;
    }
    let raw = socket.into_inner();
    WebSocketStream::from_raw_socket(raw, Role::Server, Some(config)).await
}

/// After a frame was refused from its header, the WebSocket cannot be read any more (its
/// payload is still arriving). Reads and discards the raw stream until the peer closes it or
/// `patience` runs out, then closes our side: closing a socket with unread data in it sends a
/// reset, which would destroy the close frame just written before the client reads it.
pub(crate) async fn drain_and_close(socket: Socket, patience: Duration) {
    let mut io = socket.into_inner();
    // On the heap: an array here would be part of every connection task's future.
    let mut scrap = vec![0u8; 8192];
    let drain = async { while matches!(io.read(&mut scrap).await, Ok(read) if read > 0) {} };
    let _ = tokio::time::timeout(patience, drain).await;
    let _ = tokio::time::timeout(patience, io.shutdown()).await;
}
