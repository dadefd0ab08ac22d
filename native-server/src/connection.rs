//! One task per WebSocket connection.
//!
//! The task runs a reader and a writer concurrently (one `select!`, no extra spawn) over the
//! split socket, sharing the connection state by reference:
//!
//! - the **reader** decodes each text frame with [`Frame::decode`], de-duplicates by id through
//!   the [`ServerSession`], dispatches (handler, relay, response) and, after each batch of
//!   frames that were ready together, queues one `~ack`;
//! - the **writer** holds outbound frames until the client said whether it is a wsrelay client
//!   (a `~hello`) or a bare one, writes the welcome and any retransmits first, then writes every
//!   queued frame of a batch and flushes once; it also sends the WebSocket pings.
//!
//! Expected endings (the peer closed, went silent, was replaced) are not errors: each maps to a
//! [`DisconnectReason`], a close code, and whether the session is parked for a resume.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use axum::extract::ws::{CloseFrame, Message as WsMessage, Utf8Bytes, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{interval_at, timeout, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use wsrelay_core::protocol::{ErrorCode, ErrorReport, Frame, Message, RemoteError, VERSION};
use wsrelay_core::server::{Delivery, ServerSession};

use crate::config::OnDuplicate;
use crate::handlers::Reply;
use crate::hub::{lock, read, write, ClientEntry, Hub, Kill, Outbound, Parked, PushError};
use crate::{ClientInfo, DisconnectReason};

/// Frames read back to back before the reader acknowledges and yields.
const READ_BATCH: usize = 64;
/// Queued frames written before one flush.
const WRITE_BATCH: usize = 64;

/// What the connection knows about its client.
enum Mode {
    /// No frame yet: outbound frames are held until a hello or the hello timeout.
    Pending,
    /// A hello arrived; its session is being looked up (waiting for a replaced predecessor).
    Resolving,
    /// No hello: no session, no acks.
    Bare,
    /// A wsrelay client with its session.
    Session(ServerSession<Utf8Bytes>),
}

/// A connection's state, shared by its reader and writer.
struct Conn {
    hub: Arc<Hub>,
    source: String,
    conn_id: u64,
    tx: mpsc::Sender<Outbound>,
    kill: Arc<Kill>,
    decided: Arc<AtomicBool>,
    predecessor: Option<CancellationToken>,
    mode: Mutex<Mode>,
    /// Any frame received since the last ping.
    heard: AtomicBool,
    start: Mutex<Option<oneshot::Sender<Vec<Utf8Bytes>>>>,
    /// Handler calls of this connection that did not complete at once, run one at a time in
    /// arrival order by one task, so that a sender's messages are handled in the order sent
    /// (PROTOCOL.md section 11) even on a multi-threaded runtime. Created on first use: most
    /// connections never need it, and an idle connection should cost little memory.
    handler_calls: OnceLock<HandlerQueue>,
}

/// The queue of a connection's pending handler calls and the task that runs them.
struct HandlerQueue {
    calls: mpsc::Sender<HandlerCall>,
    /// Calls queued and not finished: while any is, a new call queues behind it instead of
    /// running inline.
    pending: Arc<AtomicUsize>,
}

impl HandlerQueue {
    fn start(hub: &Hub) -> HandlerQueue {
        let (calls, mut queued) = mpsc::channel::<HandlerCall>(HANDLER_QUEUE);
        hub.tracker.spawn(async move {
            while let Some(call) = queued.recv().await {
                call.await;
            }
        });
        HandlerQueue {
            calls,
            pending: Arc::new(AtomicUsize::new(0)),
        }
    }
}

/// A handler call and the sending of its response.
type HandlerCall = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Handler calls a connection may have waiting; beyond, messages are refused with `overflow`.
const HANDLER_QUEUE: usize = 1024;

/// How the connection ends: why, what to tell the client last, and the close frame.
struct Ending {
    reason: DisconnectReason,
    last_words: Option<Utf8Bytes>,
    close: Option<(u16, &'static str)>,
}

impl Ending {
    fn new(reason: DisconnectReason) -> Ending {
        let close = match &reason {
            DisconnectReason::Closed(_) | DisconnectReason::Failed(_) => None,
            DisconnectReason::Replaced => Some((4409, "replaced by another connection")),
            DisconnectReason::SlowConsumer => Some((1008, "slow consumer")),
            DisconnectReason::Stale => Some((1000, "ping timeout")),
            DisconnectReason::Shutdown => None, // the writer sent it after draining
            DisconnectReason::TooLarge => Some((1009, "message too big")),
            DisconnectReason::InvalidUtf8 => Some((1007, "invalid UTF-8")),
            DisconnectReason::ProtocolError(_) => Some((1002, "protocol error")),
        };
        Ending {
            reason,
            last_words: None,
            close,
        }
    }

    fn with_last_words(mut self, frame: Utf8Bytes) -> Ending {
        self.last_words = Some(frame);
        self
    }

    fn failed(error: impl std::fmt::Display) -> Ending {
        Ending::new(DisconnectReason::Failed(error.to_string()))
    }

    /// Maps a read error: the transport's size limit, invalid UTF-8 in a text frame (RFC 6455
    /// requires failing the connection), protocol violations, or I/O.
    fn from_read_error(error: axum::Error) -> Ending {
        let inner = error.into_inner();
        match inner.downcast_ref::<tungstenite::Error>() {
            Some(tungstenite::Error::Capacity(_)) => Ending::new(DisconnectReason::TooLarge)
                .with_last_words(error_frame(
                    ErrorCode::TooLarge,
                    "frame too large to read".into(),
                    None,
                )),
            Some(tungstenite::Error::Utf8(_)) => Ending::new(DisconnectReason::InvalidUtf8)
                .with_last_words(error_frame(
                    ErrorCode::InvalidJson,
                    "text frame is not valid UTF-8".into(),
                    None,
                )),
            Some(tungstenite::Error::Protocol(
                tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
            )) => Ending::new(DisconnectReason::Closed(None)),
            Some(tungstenite::Error::Protocol(e)) => {
                Ending::new(DisconnectReason::ProtocolError(e.to_string()))
            }
            Some(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                Ending::new(DisconnectReason::Closed(None))
            }
            _ => Ending::failed(inner),
        }
    }
}

/// Encodes an `~error` frame.
pub(crate) fn error_frame(code: ErrorCode, message: String, re: Option<u64>) -> Utf8Bytes {
    let report = ErrorReport {
        error: RemoteError {
            code: code.as_str().to_owned(),
            message,
        },
        re,
    };
    Frame::Error(report).encode().into()
}

/// Encodes a message; the payload is copied verbatim.
pub(crate) fn encode(message: &Message<'_>) -> Utf8Bytes {
    let mut out =
        String::with_capacity(64 + message.kind.len() + message.payload.map_or(0, str::len));
    message.encode_into(&mut out);
    out.into()
}

/// Serves one upgraded connection for `source` until it ends.
pub(crate) async fn serve(
    socket: WebSocket,
    hub: Arc<Hub>,
    source: String,
    addr: Option<SocketAddr>,
) {
    let (tx, mut rx) = mpsc::channel(hub.config.outbound_queue.max(1));
    let (start_tx, start_rx) = oneshot::channel();
    let conn_id = hub.next_conn_id.fetch_add(1, Ordering::Relaxed);
    let kill = Arc::new(Kill::default());
    let decided = Arc::new(AtomicBool::new(false));
    let done = CancellationToken::new();
    let predecessor = {
        let mut clients = write(&hub.clients);
        let predecessor = match clients.get(&source) {
            Some(_) if hub.config.on_duplicate == OnDuplicate::Reject => Err(()),
            Some(old) => {
                if old.kill.kill(DisconnectReason::Replaced) {
                    hub.stats.replaced.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Some(old.done.clone()))
            }
            None => Ok(None),
        };
        if predecessor.is_ok() {
            let entry = ClientEntry {
                conn_id,
                tx: tx.clone(),
                kill: Arc::clone(&kill),
                decided: Arc::clone(&decided),
                done: done.clone(),
            };
            clients.insert(source.clone(), entry);
        }
        predecessor
    };
    let Ok(predecessor) = predecessor else {
        // Lost a race with another connection for the same source (checked at the upgrade).
        tracing::info!(source, "refused: source already connected");
        let mut socket = socket;
        let close = close_message(4409, "source already connected");
        let _ = timeout(hub.config.close_timeout, socket.send(close)).await;
        return;
    };
    let info = ClientInfo {
        source: source.clone(),
        addr,
    };
    tracing::debug!(source, conn = conn_id, ?addr, "connected");
    for hook in &hub.on_connect {
        hook(&info);
    }

    let conn = Conn {
        handler_calls: OnceLock::new(),
        hub: Arc::clone(&hub),
        source,
        conn_id,
        tx,
        kill,
        decided,
        predecessor,
        mode: Mutex::new(Mode::Pending),
        heard: AtomicBool::new(false),
        start: Mutex::new(Some(start_tx)),
    };
    let reason = conn.run(socket, &mut rx, start_rx).await;
    conn.finish(&mut rx, &reason);
    done.cancel();
    tracing::debug!(
        source = info.source,
        conn = conn_id,
        ?reason,
        "disconnected"
    );
    for hook in &hub.on_disconnect {
        hook(&info, &reason);
    }
}

/// The reply to a message whose handler panicked.
fn panicked(source: &str, kind: &str) -> Reply {
    tracing::error!(source, kind, "handler panicked");
    Reply::error(ErrorCode::HandlerError.as_str(), "the handler panicked")
}

/// Sends a handler's reply to message `id` of `source` as a response (none for `Reply::None`).
fn respond(hub: &Hub, source: &str, kind: &str, id: Option<u64>, reply: Reply) {
    let (payload, error) = match reply {
        Reply::None => return,
        Reply::Payload(payload) => (Some(payload), None),
        Reply::Error(error) => (None, Some(error)),
    };
    let Some(id) = id else {
        tracing::debug!(source, kind, "handler answered a message without id");
        return;
    };
    let response = Message {
        kind: Cow::Borrowed(kind),
        id: None,
        re: Some(id),
        to: None,
        source: None,
        payload: payload.as_deref(),
        error,
    };
    if let Err(error) = hub.send_frame(source, encode(&response)) {
        tracing::debug!(source, ?error, "response not delivered");
    }
}

fn close_message(code: u16, reason: &'static str) -> WsMessage {
    WsMessage::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    }))
}

impl Conn {
    async fn run(
        &self,
        socket: WebSocket,
        rx: &mut mpsc::Receiver<Outbound>,
        start: oneshot::Receiver<Vec<Utf8Bytes>>,
    ) -> DisconnectReason {
        let hub = &self.hub;
        let close_timeout = hub.config.close_timeout;
        let (mut sink, mut stream) = socket.split();
        let ending = {
            let reader = self.read_loop(&mut stream);
            let writer = self.write_loop(&mut sink, rx, start);
            tokio::pin!(reader, writer);
            let ending = tokio::select! {
                ending = &mut reader => ending,
                ending = &mut writer => ending,
                () = self.kill.token.cancelled() => {
                    Ending::new(self.kill.reason().unwrap_or(DisconnectReason::Replaced))
                }
                () = hub.abort.cancelled() => Ending::new(DisconnectReason::Shutdown),
            };
            if ending.reason == DisconnectReason::Shutdown && !hub.abort.is_cancelled() {
                // The writer sent the close frame: give the client time to answer it.
                let answered = async {
                    tokio::select! {
                        _ = &mut reader => {}
                        () = hub.abort.cancelled() => {}
                    }
                };
                let _ = timeout(close_timeout, answered).await;
            }
            ending
        };
        let farewell = async {
            if let Some(words) = ending.last_words {
                sink.feed(WsMessage::Text(words)).await?;
            }
            if let Some((code, reason)) = ending.close {
                sink.feed(close_message(code, reason)).await?;
            }
            sink.close().await
        };
        let _ = timeout(close_timeout, farewell).await;
        ending.reason
    }

    /// Reads frames; acknowledges after every batch of frames that were ready together.
    async fn read_loop(&self, stream: &mut SplitStream<WebSocket>) -> Ending {
        loop {
            let mut next = stream.next().await;
            let mut count = 0;
            loop {
                let message = match next {
                    None => return Ending::new(DisconnectReason::Closed(None)),
                    Some(Err(error)) => return Ending::from_read_error(error),
                    Some(Ok(message)) => message,
                };
                self.heard.store(true, Ordering::Relaxed);
                if let Err(ending) = self.on_message(message).await {
                    return ending;
                }
                count += 1;
                if count == READ_BATCH {
                    break;
                }
                match stream.next().now_or_never() {
                    Some(more) => next = more,
                    None => break,
                }
            }
            let ack = match &mut *lock(&self.mode) {
                Mode::Session(session) => session.poll_ack(),
                _ => None,
            };
            if let Some(ack) = ack {
                self.queue(Outbound::Control(ack.encode().into()));
            }
        }
    }

    async fn on_message(&self, message: WsMessage) -> Result<(), Ending> {
        if self.hub.shutdown.is_cancelled() {
            // Closing: consume nothing more (unacknowledged, the client sends it again).
            return match message {
                WsMessage::Close(frame) => {
                    Err(Ending::new(DisconnectReason::Closed(frame.map(|f| f.code))))
                }
                _ => Ok(()),
            };
        }
        match message {
            WsMessage::Text(text) => self.on_text(text.as_str()).await,
            WsMessage::Binary(_) => {
                self.decide_bare();
                self.reject(
                    ErrorCode::BinaryFrame,
                    "binary frames are not accepted".into(),
                    None,
                );
                Ok(())
            }
            WsMessage::Ping(_) | WsMessage::Pong(_) => Ok(()),
            WsMessage::Close(frame) => {
                Err(Ending::new(DisconnectReason::Closed(frame.map(|f| f.code))))
            }
        }
    }

    async fn on_text(&self, text: &str) -> Result<(), Ending> {
        let limit = self.hub.config.max_message_size;
        if text.len() > limit {
            self.decide_bare();
            let message = format!("frame of {} bytes exceeds the limit of {limit}", text.len());
            self.reject(ErrorCode::TooLarge, message, None);
            return Ok(());
        }
        let frame = match Frame::decode(text) {
            Ok(frame) => frame,
            Err(error) => {
                self.decide_bare();
                if error
                    .id
                    .is_some_and(|id| self.deliver(id) == Delivery::Duplicate)
                {
                    return Ok(());
                }
                self.reject(error.code, error.message.into_owned(), error.id);
                return Ok(());
            }
        };
        if let Frame::Hello {
            version,
            session,
            ack,
        } = frame
        {
            return self.on_hello(version, &session, ack).await;
        }
        self.decide_bare();
        match frame {
            Frame::Message(message) => {
                if message
                    .id
                    .is_some_and(|id| self.deliver(id) == Delivery::Duplicate)
                {
                    tracing::trace!(source = self.source, id = message.id, "duplicate dropped");
                    return Ok(());
                }
                self.route(message);
            }
            Frame::Ack { ack } => {
                if let Mode::Session(session) = &mut *lock(&self.mode) {
                    session.handle_ack(ack);
                }
            }
            Frame::Ping => self.queue(Outbound::Control(Frame::Pong.encode().into())),
            Frame::Pong => {}
            Frame::Welcome { .. } => self.reject(
                ErrorCode::ReservedType,
                "~welcome is sent by the server".into(),
                None,
            ),
            Frame::Error(report) => {
                tracing::debug!(
                    source = self.source,
                    code = report.error.code,
                    "client error"
                )
            }
            Frame::Hello { .. } => {}
        }
        Ok(())
    }

    /// A hello: resume the parked session it names, or start a fresh one, and release the
    /// writer with the welcome and the retransmits.
    async fn on_hello(&self, version: u64, token: &str, ack: u64) -> Result<(), Ending> {
        if version != VERSION {
            let message = format!(
                "protocol version {version} is not supported; this server speaks {VERSION}"
            );
            let reason = DisconnectReason::ProtocolError(message.clone());
            let words = error_frame(ErrorCode::UnsupportedVersion, message, None);
            return Err(Ending::new(reason).with_last_words(words));
        }
        let length = token.chars().count();
        if !(8..=64).contains(&length) {
            let message = "the session token must be 8 to 64 characters".to_owned();
            let reason = DisconnectReason::ProtocolError(message.clone());
            let words = error_frame(ErrorCode::InvalidFrame, message, None);
            return Err(Ending::new(reason).with_last_words(words));
        }
        {
            let mut mode = lock(&self.mode);
            match &*mode {
                Mode::Pending => *mode = Mode::Resolving,
                Mode::Session(_) | Mode::Resolving => {
                    drop(mode);
                    self.reject(ErrorCode::InvalidFrame, "duplicate hello".into(), None);
                    return Ok(());
                }
                Mode::Bare => {
                    // The hello came after the hello timeout: frames already written were not
                    // numbered. Start a fresh session from here.
                    tracing::warn!(source = self.source, "late hello: fresh session");
                    let session = ServerSession::new(token, self.hub.config.max_unacked);
                    let welcome = session.welcome(false).encode();
                    *mode = Mode::Session(session);
                    drop(mode);
                    self.queue(Outbound::Control(welcome.into()));
                    return Ok(());
                }
            }
        }
        if let Some(predecessor) = &self.predecessor {
            // A replaced connection parks its session when it ends: wait for that (bounded).
            let wait = self.hub.config.close_timeout * 2;
            let _ = timeout(wait, predecessor.cancelled()).await;
        }
        let parked = {
            let _clients = read(&self.hub.clients);
            self.decided.store(true, Ordering::Relaxed);
            lock(&self.hub.parked).remove(&self.source)
        };
        let mut resumed = None;
        if let Some(Parked { mut session, .. }) = parked {
            if session.token() == token {
                let again = session
                    .resume(ack)
                    .map(|frames| frames.cloned().collect::<Vec<_>>());
                if let Some(again) = again {
                    resumed = Some((session, again));
                }
            }
        }
        let (session, preamble) = match resumed {
            Some((session, again)) => {
                tracing::debug!(
                    source = self.source,
                    frames = again.len(),
                    "session resumed"
                );
                let mut preamble = Vec::with_capacity(again.len() + 1);
                preamble.push(session.welcome(true).encode().into());
                preamble.extend(again);
                (session, preamble)
            }
            None => {
                let session = ServerSession::new(token, self.hub.config.max_unacked);
                let welcome = session.welcome(false).encode().into();
                (session, vec![welcome])
            }
        };
        *lock(&self.mode) = Mode::Session(session);
        if let Some(start) = lock(&self.start).take() {
            // The writer is gone only when the connection is ending anyway.
            let _ = start.send(preamble);
        }
        Ok(())
    }

    /// The first frame was not a hello (or none came in time): a bare client.
    fn decide_bare(&self) {
        let mut mode = lock(&self.mode);
        if !matches!(*mode, Mode::Pending) {
            return;
        }
        *mode = Mode::Bare;
        drop(mode);
        {
            let _clients = read(&self.hub.clients);
            self.decided.store(true, Ordering::Relaxed);
            // A session parked under this source can no longer be resumed without gaps.
            lock(&self.hub.parked).remove(&self.source);
        }
        if let Some(start) = lock(&self.start).take() {
            let _ = start.send(Vec::new());
        }
    }

    fn deliver(&self, id: u64) -> Delivery {
        match &mut *lock(&self.mode) {
            Mode::Session(session) => session.deliver(id),
            _ => Delivery::New,
        }
    }

    /// Dispatches a new application message: response, directed relay, handler, broadcast.
    fn route(&self, message: Message<'_>) {
        let hub = &self.hub;
        let relay = hub.config.relay;
        if let Some(re) = message.re {
            match &message.to {
                Some(to) if relay => self.relay_to(&to.clone(), message),
                Some(_) => tracing::debug!(source = self.source, "directed response not relayed"),
                None => {
                    let result = match message.error {
                        Some(error) => Err(error),
                        None => Ok(message.payload.map(str::to_owned)),
                    };
                    hub.resolve(&self.source, re, result);
                }
            }
            return;
        }
        if relay {
            if let Some(to) = &message.to {
                self.relay_to(&to.clone(), message);
                return;
            }
        }
        if let Some(handler) = hub.handler(&message.kind) {
            let id = message.id;
            let mut call = handler(self.source.clone(), message.payload.map(str::to_owned));
            let idle = self
                .handler_calls
                .get()
                .is_none_or(|queue| queue.pending.load(Ordering::Acquire) == 0);
            if idle {
                // No earlier call of this connection is waiting, so running this one now keeps
                // the order. A handler that completes at once (the common case) then queues its
                // response before the batch's `~ack`, and the writer sends both in one write
                // instead of two.
                let first_poll = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    (&mut call).now_or_never()
                }));
                let reply = match first_poll {
                    Ok(Some(reply)) => Some(reply),
                    Ok(None) => None,
                    Err(_) => Some(panicked(&self.source, &message.kind)),
                };
                if let Some(reply) = reply {
                    respond(hub, &self.source, &message.kind, id, reply);
                    return;
                }
            }
            // Still pending: later calls must queue behind it to keep the order.
            let hub = Arc::clone(hub);
            let source = self.source.clone();
            let kind = message.kind.into_owned();
            let queue = self
                .handler_calls
                .get_or_init(|| HandlerQueue::start(&self.hub));
            let pending_calls = Arc::clone(&queue.pending);
            pending_calls.fetch_add(1, Ordering::AcqRel);
            let queued = queue.calls.try_send(Box::pin(async move {
                // A panicking handler must not take the connection's later handler calls with
                // it, and its sender deserves an answer rather than a timeout.
                let reply = match std::panic::AssertUnwindSafe(call).catch_unwind().await {
                    Ok(reply) => reply,
                    Err(_) => panicked(&source, &kind),
                };
                respond(&hub, &source, &kind, id, reply);
                // Only after the response is queued: an inline call may then overtake nothing.
                pending_calls.fetch_sub(1, Ordering::AcqRel);
            }));
            if queued.is_err() {
                queue.pending.fetch_sub(1, Ordering::AcqRel);
                let text = format!("more than {HANDLER_QUEUE} messages wait for handlers");
                self.reject(ErrorCode::Overflow, text, id);
            }
            return;
        }
        if relay {
            let frame = self.relayed(message);
            hub.broadcast_frame(&frame, Some(&self.source));
        } else {
            tracing::debug!(source = self.source, kind = %message.kind, "no handler: dropped");
        }
    }

    fn relay_to(&self, to: &str, message: Message<'_>) {
        let id = message.id;
        let frame = self.relayed(message);
        match self.hub.send_frame(to, frame) {
            Ok(()) => {}
            Err(PushError::UnknownTarget) => {
                let text = format!("no client with source {to:?}");
                self.reject(ErrorCode::UnknownTarget, text, id);
            }
            Err(PushError::Overflow) => {
                let text = format!("the outbound queue of {to:?} is full");
                self.reject(ErrorCode::Overflow, text, id);
            }
        }
    }

    /// The frame as relayed: the same fields, `source` set to the registered identity.
    fn relayed(&self, message: Message<'_>) -> Utf8Bytes {
        encode(&Message {
            source: Some(Cow::Borrowed(&self.source)),
            ..message
        })
    }

    /// Logs an input problem and answers it with a reliable `~error`.
    fn reject(&self, code: ErrorCode, message: String, re: Option<u64>) {
        self.hub
            .stats
            .invalid_frames
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(source = self.source, conn = self.conn_id, %code, re, message, "invalid input");
        self.queue(Outbound::Reliable(error_frame(code, message, re)));
    }

    /// Queues a frame for this connection; a full queue makes it a slow consumer.
    fn queue(&self, frame: Outbound) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(frame) {
            if self.kill.kill(DisconnectReason::SlowConsumer) {
                self.hub
                    .stats
                    .slow_consumers
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Writes the preamble once the client's kind is known, then queued frames in batches,
    /// one flush per batch; sends pings and notices a silent peer; drains on shutdown.
    async fn write_loop(
        &self,
        sink: &mut SplitSink<WebSocket, WsMessage>,
        rx: &mut mpsc::Receiver<Outbound>,
        mut start: oneshot::Receiver<Vec<Utf8Bytes>>,
    ) -> Ending {
        let config = &self.hub.config;
        let preamble = tokio::select! {
            preamble = &mut start => preamble.unwrap_or_default(),
            () = tokio::time::sleep(config.hello_timeout) => {
                self.decide_bare();
                (&mut start).await.unwrap_or_default()
            }
        };
        for frame in preamble {
            if let Err(error) = sink.feed(WsMessage::Text(frame)).await {
                return Ending::failed(error);
            }
        }
        if let Err(error) = sink.flush().await {
            return Ending::failed(error);
        }
        let period = config.ping_interval;
        let mut ping = interval_at(tokio::time::Instant::now() + period, period);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut awaiting_pong = false;
        let mut batch = Vec::with_capacity(WRITE_BATCH);
        // Created once: a `cancelled()` made anew at every wake-up registers and removes a
        // waiter on the token that every connection shares (a mutex and a list each time).
        let shutdown = self.hub.shutdown.cancelled();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => {
                    while let Ok(frame) = rx.try_recv() {
                        if let Err(ending) = self.write_frame(sink, frame).await {
                            return ending;
                        }
                    }
                    let code = self.hub.shutdown_code.load(Ordering::Relaxed);
                    let close = close_message(code, "server shutting down");
                    if let Err(error) = sink.send(close).await {
                        return Ending::failed(error);
                    }
                    return Ending::new(DisconnectReason::Shutdown);
                }
                _ = ping.tick() => {
                    if self.heard.swap(false, Ordering::Relaxed) {
                        // The client spoke during this period (a wsrelay client's `~ping` comes
                        // every 15 s): it is alive, and a ping would only cost both sides a
                        // write and a read.
                        awaiting_pong = false;
                        continue;
                    }
                    if awaiting_pong {
                        return Ending::new(DisconnectReason::Stale);
                    }
                    awaiting_pong = true;
                    if let Err(error) = sink.send(WsMessage::Ping(bytes::Bytes::new())).await {
                        return Ending::failed(error);
                    }
                }
                received = rx.recv_many(&mut batch, WRITE_BATCH) => {
                    if received == 0 {
                        return Ending::failed("outbound queue closed");
                    }
                    for frame in batch.drain(..) {
                        if let Err(ending) = self.write_frame(sink, frame).await {
                            return ending;
                        }
                    }
                    if let Err(error) = sink.flush().await {
                        return Ending::failed(error);
                    }
                }
            }
        }
    }

    /// Feeds one frame (no flush); a reliable frame is numbered in the session first.
    async fn write_frame(
        &self,
        sink: &mut SplitSink<WebSocket, WsMessage>,
        frame: Outbound,
    ) -> Result<(), Ending> {
        let text = match frame {
            Outbound::Reliable(text) => {
                if let Mode::Session(session) = &mut *lock(&self.mode) {
                    if session.record_written(text.clone()).is_err() {
                        if self.kill.kill(DisconnectReason::SlowConsumer) {
                            self.hub
                                .stats
                                .slow_consumers
                                .fetch_add(1, Ordering::Relaxed);
                        }
                        return Err(Ending::new(DisconnectReason::SlowConsumer));
                    }
                }
                text
            }
            Outbound::Control(text) => text,
        };
        sink.feed(WsMessage::Text(text))
            .await
            .map_err(Ending::failed)
    }

    /// Unregisters the connection and, when the client may come back, parks its session with
    /// every frame still queued for it.
    fn finish(&self, rx: &mut mpsc::Receiver<Outbound>, reason: &DisconnectReason) {
        let hub = &self.hub;
        match reason {
            DisconnectReason::Stale => {
                hub.stats.stale.fetch_add(1, Ordering::Relaxed);
            }
            DisconnectReason::SlowConsumer => {
                // Counted where it was detected (queue push or session buffer).
            }
            _ => {}
        }
        let mut clients = write(&hub.clients);
        if clients
            .get(&self.source)
            .is_some_and(|entry| entry.conn_id == self.conn_id)
        {
            clients.remove(&self.source);
        }
        let mode = std::mem::replace(&mut *lock(&self.mode), Mode::Bare);
        let Mode::Session(mut session) = mode else {
            return;
        };
        // A slow consumer's session ends (`PROTOCOL.md` section 5); a shutdown ends them all.
        let resumable = !matches!(
            reason,
            DisconnectReason::SlowConsumer | DisconnectReason::Shutdown
        );
        if !resumable {
            return;
        }
        while let Ok(frame) = rx.try_recv() {
            if let Outbound::Reliable(text) = frame {
                if session.record_written(text).is_err() {
                    hub.stats.slow_consumers.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        }
        // A successor that already has its own session (or is bare) owns the source now.
        if clients
            .get(&self.source)
            .is_some_and(|entry| entry.decided.load(Ordering::Relaxed))
        {
            return;
        }
        let expires = Instant::now() + hub.config.session_grace;
        lock(&hub.parked).insert(self.source.clone(), Parked { session, expires });
    }
}
