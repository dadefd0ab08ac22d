//! A connection's WebSocket: the relay's own frame codec
//! ([`wsrelay_core::server::websocket`]) over the upgraded stream. Plain TCP and TLS meet here
//! as one type: the accept loop serves HTTP over either, and the upgrade hands over hyper's
//! [`Upgraded`], which owns whichever it was.
//!
//! Memory is held only while there is something in it. Bytes read go into a buffer taken when a
//! read begins and given back when all of it was decoded and the stream has nothing more for
//! now; frames to write are encoded into a buffer given back once written. An idle connection
//! holds neither, and a large message's buffer goes with the message. Buffers given back wait
//! in a small pool per thread for the next connection that reads or writes: taking one from
//! the allocator and freeing it on every turn cost about a fifth of a message's instructions
//! (glibc's malloc consolidating 8 KiB chunks). Text messages are handed to the
//! caller as `&str` into the read buffer, unmasked in place: no copy per message.
//!
//! Writing and reading go through one function over the whole socket ([`poll_io`]) rather than
//! split halves: splitting puts the socket behind a lock that every write and read then takes.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use wsrelay_core::server::websocket::{close_payload, header, Decoder, Inbound, Opcode};
use wsrelay_core::server::TransportError;

/// A frame for the client, in the order the connection produced them.
#[derive(Debug)]
pub(crate) enum Outbound {
    /// A text frame: the bytes are shared (a broadcast's buffer goes to every recipient
    /// without a copy or a second UTF-8 check).
    Text(Bytes),
    /// A text frame from the mailbox: counted when handed to the socket.
    Delivery(Bytes),
    /// A ping.
    Ping,
}

/// What the client sent, as the connection hears it.
#[derive(Debug)]
pub(crate) enum Read<'a> {
    /// A message or control frame (a ping is answered already).
    Frame(Inbound<'a>),
    /// The stream ended without a close frame.
    Ended,
    /// The stream cannot be read any more: a protocol violation, or I/O.
    Failed(TransportError),
}

/// What the socket did (see [`poll_io`]).
pub(crate) enum Progress {
    /// Frames were written (or flushed): how many were mailbox frames.
    Written(io::Result<usize>),
    /// Something can be read with [`WebSocket::next`].
    Readable,
}

/// One connection's WebSocket (see the module's documentation).
pub(crate) struct WebSocket {
    io: TokioIo<Upgraded>,
    decoder: Decoder,
    /// Bytes read and not decoded yet; no allocation while there are none.
    input: BytesMut,
    /// How many bytes at the front of `input` the message last handed over occupies: they go
    /// at the next read.
    decoded: usize,
    /// Encoded frames not written yet; no allocation while there are none.
    output: BytesMut,
    /// Bytes were written since the last flush (TLS holds records until flushed).
    unflushed: bool,
    /// The most a read takes, and the most encoded before a write.
    read_size: usize,
    write_size: usize,
    /// The stream ended (`Some(None)`) or failed.
    end: Option<Option<io::Error>>,
    /// A close frame was queued (ours, or the echo of the client's): nothing is written after
    /// it.
    closed: bool,
    /// The decoder refused the client's input (a frame too large, a protocol violation): the
    /// stream can no longer be read as frames.
    refused: bool,
}

impl WebSocket {
    /// The WebSocket over an upgraded connection, refusing frames and messages over `limit`
    /// bytes; reads take at most `read_size` bytes (more for a frame known to be larger) and
    /// writes gather about `write_size`.
    pub(crate) fn new(
        upgraded: Upgraded,
        limit: usize,
        read_size: usize,
        write_size: usize,
    ) -> Self {
        WebSocket {
            io: TokioIo::new(upgraded),
            decoder: Decoder::new(limit),
            input: BytesMut::new(),
            decoded: 0,
            output: BytesMut::new(),
            unflushed: false,
            read_size: read_size.max(64),
            write_size: write_size.max(64),
            end: None,
            closed: false,
            refused: false,
        }
    }

    /// Bytes wait to be written or flushed.
    pub(crate) fn wants_write(&self) -> bool {
        !self.output.is_empty() || self.unflushed
    }

    /// Ready when [`next`](Self::next) has something: a whole frame read, or the stream's end.
    pub(crate) fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let rest = self.input.get(self.decoded..).unwrap_or_default();
            let frame = match self.decoder.wanted(rest) {
                Some(frame) if self.end.is_none() => frame,
                _ => return Poll::Ready(()),
            };
            self.input.advance(self.decoded);
            self.decoded = 0;
            // Room for the frame being read when its header says how large it is.
            let wanted = frame.max(self.input.len() + self.read_size);
            if self.input.capacity() == 0 {
                self.input = take(self.read_size);
            }
            if self.input.capacity() - self.input.len() < self.read_size.min(wanted) {
                self.input.reserve(wanted - self.input.len());
            }
            match tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.input) {
                Poll::Ready(Ok(0)) => self.end = Some(None),
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(error)) => self.end = Some(Some(error)),
                Poll::Pending => {
                    if self.input.is_empty() {
                        give_back(std::mem::take(&mut self.input));
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    /// The next frame read, or the stream's end; `None` when nothing more can be decoded from
    /// what was read ([`poll_readable`](Self::poll_readable) tells when there is). A ping is
    /// answered and a close frame echoed here.
    pub(crate) fn next(&mut self) -> Option<Read<'_>> {
        self.input.advance(self.decoded);
        self.decoded = 0;
        if self.input.is_empty() && self.input.capacity() > 4 * self.read_size {
            // A large message's buffer goes with it.
            give_back(std::mem::take(&mut self.input));
        }
        let WebSocket {
            decoder,
            input,
            decoded,
            output,
            end,
            closed,
            refused,
            ..
        } = self;
        match decoder.decode(input) {
            Ok((used, Some(frame))) => {
                *decoded = used;
                match frame {
                    Inbound::Ping(payload) if !*closed => encode(output, Opcode::Pong, payload),
                    Inbound::Close(code) if !*closed => {
                        *closed = true;
                        let echo = code.map(|code| close_payload(code, "")).unwrap_or_default();
                        encode(output, Opcode::Close, &echo);
                    }
                    _ => {}
                }
                Some(Read::Frame(frame))
            }
            Ok((used, None)) => {
                *decoded = used;
                match end.take()? {
                    None => Some(Read::Ended),
                    Some(error) => Some(Read::Failed(TransportError::Io(error.to_string()))),
                }
            }
            // The decoder reads nothing after a violation.
            Err(error) => {
                *refused = true;
                Some(Read::Failed(error.into()))
            }
        }
    }

    /// Whether the client's input was refused (see [`drain_and_close`](Self::drain_and_close)).
    pub(crate) fn refused_input(&self) -> bool {
        self.refused
    }

    /// Queues a close frame; nothing is written after it.
    pub(crate) fn queue_close(&mut self, code: u16, reason: &str) {
        if !self.closed {
            self.closed = true;
            encode(
                &mut self.output,
                Opcode::Close,
                &close_payload(code, reason),
            );
        }
    }

    /// Encodes frames from `outq` and writes them as far as the socket takes them, then
    /// flushes. Ready when it made progress, with how many mailbox frames were handed to the
    /// socket.
    pub(crate) fn poll_write(
        &mut self,
        cx: &mut Context<'_>,
        outq: &mut VecDeque<Outbound>,
    ) -> Poll<io::Result<usize>> {
        let mut delivered = 0;
        let mut progressed = false;
        loop {
            while self.output.len() < self.write_size && !self.closed {
                let Some(frame) = outq.pop_front() else {
                    break;
                };
                progressed = true;
                match frame {
                    Outbound::Text(text) => encode(&mut self.output, Opcode::Text, &text),
                    Outbound::Delivery(text) => {
                        encode(&mut self.output, Opcode::Text, &text);
                        delivered += 1;
                    }
                    Outbound::Ping => encode(&mut self.output, Opcode::Ping, &[]),
                }
            }
            if self.output.is_empty() {
                break;
            }
            match Pin::new(&mut self.io).poll_write(cx, &self.output) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(written)) => {
                    self.output.advance(written);
                    self.unflushed = true;
                    progressed = true;
                }
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => break,
            }
        }
        if self.output.is_empty() {
            give_back(std::mem::take(&mut self.output));
            if self.unflushed {
                match Pin::new(&mut self.io).poll_flush(cx) {
                    Poll::Ready(Ok(())) => {
                        self.unflushed = false;
                        progressed = true;
                    }
                    Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                    Poll::Pending => {}
                }
            }
        }
        if progressed {
            Poll::Ready(Ok(delivered))
        } else {
            Poll::Pending
        }
    }

    /// Writes everything in `outq` (unless a close frame went first) and the socket's own
    /// buffer, flushed.
    pub(crate) async fn write_all(&mut self, outq: &mut VecDeque<Outbound>) -> io::Result<()> {
        poll_fn(|cx| loop {
            if (outq.is_empty() || self.closed) && !self.wants_write() {
                return Poll::Ready(Ok(()));
            }
            match self.poll_write(cx, outq) {
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => return Poll::Pending,
            }
        })
        .await
    }

    /// Reads until the client's close frame (or the stream's end), discarding anything else.
    pub(crate) async fn read_until_close(&mut self) {
        loop {
            poll_fn(|cx| self.poll_readable(cx)).await;
            while let Some(received) = self.next() {
                match received {
                    Read::Frame(Inbound::Close(_)) | Read::Ended | Read::Failed(_) => return,
                    Read::Frame(_) => {}
                }
            }
        }
    }

    /// Writes what is queued (a close frame's echo, say) and ends our side.
    pub(crate) async fn finish(&mut self) {
        if self.write_all(&mut VecDeque::new()).await.is_ok() {
            let _ = self.io.shutdown().await;
        }
    }

    /// After a frame was refused from its header, the stream cannot be read as frames (its
    /// payload is still arriving). Reads and discards until the client closes or `patience`
    /// runs out, then closes our side: closing a socket with unread data in it sends a reset,
    /// which would destroy the close frame just written before the client reads it.
    pub(crate) async fn drain_and_close(&mut self, patience: Duration) {
        self.input = BytesMut::new();
        // On the heap: an array here would be part of every connection task's future.
        let mut scrap = vec![0u8; 8192];
        let io = &mut self.io;
        let drain = async { while matches!(io.read(&mut scrap).await, Ok(read) if read > 0) {} };
        let _ = tokio::time::timeout(patience, drain).await;
        let _ = tokio::time::timeout(patience, self.io.shutdown()).await;
    }
}

/// Buffers given back, per thread (see the module's documentation).
const POOLED: usize = 64;
/// Larger buffers (a large message's) go back to the allocator.
const POOLED_SIZE: usize = 64 * 1024;

thread_local! {
    static POOL: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer with room for `size` bytes, from the pool when it has one.
fn take(size: usize) -> BytesMut {
    let mut buffer = POOL
        .with(|pool| pool.try_borrow_mut().ok()?.pop())
        .unwrap_or_default();
    // A pooled buffer keeps its allocation: reserving moves its start back, nothing more.
    buffer.reserve(size);
    buffer
}

/// Gives an empty buffer back to the pool, or to the allocator.
fn give_back(mut buffer: BytesMut) {
    if buffer.capacity() == 0 || buffer.capacity() > POOLED_SIZE {
        return;
    }
    buffer.clear();
    POOL.with(|pool| {
        if let Ok(mut pool) = pool.try_borrow_mut() {
            if pool.len() < POOLED {
                pool.push(buffer);
            }
        }
    });
}

/// Appends a frame to `output`.
fn encode(output: &mut BytesMut, opcode: Opcode, payload: &[u8]) {
    let (head, size) = header(opcode, payload.len());
    if output.capacity() == 0 {
        *output = take((size + payload.len()).max(4096));
    }
    output.reserve(size + payload.len());
    output.extend_from_slice(head.get(..size).unwrap_or_default());
    output.extend_from_slice(payload);
}

/// Writes what is queued if the socket takes it, else reports that frames can be read, if
/// `read`.
pub(crate) fn poll_io(
    socket: &mut WebSocket,
    cx: &mut Context<'_>,
    outq: &mut VecDeque<Outbound>,
    read: bool,
) -> Poll<Progress> {
    if !outq.is_empty() || socket.wants_write() {
        if let Poll::Ready(written) = socket.poll_write(cx, outq) {
            return Poll::Ready(Progress::Written(written));
        }
    }
    if read && socket.poll_readable(cx).is_ready() {
        return Poll::Ready(Progress::Readable);
    }
    Poll::Pending
}
