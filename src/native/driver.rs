//! The driver task: owns the socket and one timer, feeds the core, carries out its outputs.
//!
//! The loop is the str0m/quinn drain loop: after every input (a frame, a close, a connection
//! result, the timer, or a handle's command), drain `poll_output` and re-arm the timer at
//! `poll_timeout`. Nothing here decides anything: reconnecting, backoff, heartbeat and timeouts
//! are the core's outputs and deadlines.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Waker;
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::journal_file::JournalFile;
use super::{Dial, HandlerFuture, Shared, State, Token};
use crate::client::{attempt_url, Event, InboundMessage, Output, ReadyState, Save, TransportId};
use crate::protocol::RemoteError;
use crate::{Instant, Reply};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long a socket the core abandoned gets to write what was queued and its close frame
/// before it is dropped: a peer that stopped reading must not hold the task forever.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Bytes tungstenite reads per call. Its default, 128 KiB, is zero-filled before every read
/// (`BytesMut::resize`): with small frames (acknowledgements, chat messages) that memset was a
/// quarter of the client's instructions per message. 8 KiB still takes a few hundred small
/// frames per read; a large frame just takes more reads.
const READ_BUFFER: usize = 8 * 1024;

/// The upgrade request for `url` (validated once, at construction).
pub(super) fn request(url: &str) -> Result<Request, WsError> {
    url.into_client_request()
}

pub(crate) type Request = tokio_tungstenite::tungstenite::handshake::client::Request;

/// One connection attempt, named `attempt` in its URL: the token first (if the client has
/// one), then TCP, TLS and the upgrade.
async fn dial(dial: Dial, attempt: String) -> Result<Ws, WsError> {
    let mut request = dial.request;
    let uri = attempt_url(&request.uri().to_string(), &attempt);
    *request.uri_mut() = uri.parse().map_err(|error| {
        WsError::Io(std::io::Error::other(format!(
            "invalid attempt URL: {error}"
        )))
    })?;
    let token = match dial.token {
        None => None,
        Some(Token::Fixed(token)) => Some(token),
        Some(Token::Fetch(fetch)) => {
            let token = fetch().await.map_err(|error| {
                WsError::Io(std::io::Error::other(format!(
                    "token not available: {error}"
                )))
            })?;
            Some(token)
        }
    };
    if let Some(token) = token {
        let value = format!("Bearer {token}").parse().map_err(|_| {
            WsError::Io(std::io::Error::other(
                "token not usable: not a valid header value",
            ))
        })?;
        request.headers_mut().insert("authorization", value);
    }
    let config = Some(WebSocketConfig::default().read_buffer_size(READ_BUFFER));
    #[cfg(feature = "tls")]
    let connected = tokio_tungstenite::connect_async_tls_with_config(
        request,
        config,
        true,
        dial.tls.map(tokio_tungstenite::Connector::Rustls),
    )
    .await;
    #[cfg(not(feature = "tls"))]
    let connected = tokio_tungstenite::connect_async_with_config(request, config, true).await;
    connected.map(|(ws, _)| ws)
}

/// The open transport: the read half is polled by the driver loop, the write half belongs to a
/// writer task so that a slow or stalled peer never blocks the loop (the heartbeat timer must
/// still fire when writes stall).
///
/// Frames go to the writer in batches, one per drain of the core (`pending`, sent by
/// [`flush`](Self::flush)): one channel operation and one wake-up of the writer per batch
/// rather than per frame.
struct Socket {
    transport: TransportId,
    reader: SplitStream<Ws>,
    writer: mpsc::UnboundedSender<Vec<Message>>,
    pending: Vec<Message>,
    task: JoinHandle<()>,
}

impl Socket {
    /// Hands the frames queued since the last call to the writer.
    fn flush(&mut self) {
        if !self.pending.is_empty() {
            // The writer may already be gone (write error): the read half then reports the
            // connection's end, and the core sends the frames again on the next one.
            let _ = self.writer.send(std::mem::take(&mut self.pending));
        }
    }

    /// Stops using the socket: the writer sends what it has, then `close` (a close frame when
    /// given, otherwise the close handshake's reply), within `CLOSE_GRACE`.
    fn shut(mut self, close: Option<CloseFrame>) {
        if let Some(frame) = close {
            self.pending.push(Message::Close(Some(frame)));
        }
        self.flush();
        drop(self.writer);
        drop(self.reader);
        let mut task = self.task;
        tokio::spawn(async move {
            if tokio::time::timeout(CLOSE_GRACE, &mut task).await.is_err() {
                task.abort();
            }
        });
    }
}

/// A socket operation, carried out after the core's lock is released.
enum Io {
    /// Open transport `TransportId`, named by the attempt's name.
    Connect(TransportId, String),
    Transmit(String),
    Close {
        transport: TransportId,
        code: u16,
        reason: String,
    },
    /// Store a batch of the journal (a client that persists).
    Save(Save),
}

struct Driver {
    shared: Arc<Shared>,
    dial: Dial,
    connecting: Option<(TransportId, JoinHandle<()>)>,
    socket: Option<Socket>,
    connected_tx: mpsc::UnboundedSender<(TransportId, Result<Ws, WsError>)>,
    dispatch_tx: mpsc::UnboundedSender<InboundMessage>,
    /// Wakers of settled futures, woken once the lock is released (kept for its capacity).
    wakers: Vec<Waker>,
    /// The journal of a client that persists its state.
    journal: Option<JournalFile>,
}

/// The driver task of one client. Ends when every handle is dropped and the core is closed.
///
/// The driver is built here, outside the returned future, so that dropping the task even
/// before its first poll (a runtime shut down at once) still runs `Driver`'s `Drop`.
pub(super) fn run(
    shared: Arc<Shared>,
    dial: Dial,
    journal: Option<JournalFile>,
) -> impl Future<Output = ()> + Send {
    let (connected_tx, mut connected_rx) = mpsc::unbounded_channel();
    let (dispatch_tx, dispatch_rx) = mpsc::unbounded_channel();
    let dispatcher = dispatch(Arc::clone(&shared), dispatch_rx);
    let mut driver = Driver {
        shared,
        dial,
        connecting: None,
        socket: None,
        connected_tx,
        dispatch_tx,
        wakers: Vec::new(),
        journal,
    };
    async move {
        tokio::spawn(dispatcher);
        loop {
            let (io, deadline, finished) = driver.drain();
            for io in io {
                driver.carry_out(io);
            }
            if let Some(socket) = &mut driver.socket {
                socket.flush();
            }
            if finished {
                break;
            }
            let shared = Arc::clone(&driver.shared);
            let deadline = deadline.map(|at| shared.start + Duration::from_millis(at.as_millis()));
            tokio::select! {
                () = shared.wake.notified() => {}
                () = sleep_until(deadline) => {
                    let now = shared.now();
                    shared.lock().core.handle_timeout(now);
                }
                Some((transport, result)) = connected_rx.recv() => {
                    driver.connected(transport, result);
                }
                frame = next_frame(&mut driver.socket) => driver.received(frame),
            }
        }
        if let Some((_, task)) = driver.connecting.take() {
            task.abort();
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

async fn next_frame(socket: &mut Option<Socket>) -> Option<Result<Message, WsError>> {
    match socket {
        Some(socket) => socket.reader.next().await,
        None => std::future::pending().await,
    }
}

/// However the driver ends (the loop is done, the runtime shut down, a bug panicked), the
/// futures waiting on it resolve: `send` and `request` with [`Error::Closed`](crate::Error),
/// `close` at once. With oneshot channels that came from dropping their senders; the waiters'
/// slots live in `Shared`, which those futures keep alive, so it is done here.
impl Drop for Driver {
    fn drop(&mut self) {
        let mut wakers = std::mem::take(&mut self.wakers);
        let close_waiters = {
            let mut state = self.shared.lock();
            state.sends.close(|| Err(crate::Error::Closed), &mut wakers);
            state
                .requests
                .close(|| Err(crate::Error::Closed), &mut wakers);
            std::mem::take(&mut state.close_waiters)
        };
        // Dropped, not sent to: `close` resolves either way.
        drop(close_waiters);
        for waker in wakers {
            waker.wake();
        }
    }
}

impl Driver {
    /// Drains the core's outputs: events are handled under the lock (they only resolve
    /// waiters and queue notifications), socket work is returned to be done after it.
    fn drain(&mut self) -> (Vec<Io>, Option<Instant>, bool) {
        let shared = Arc::clone(&self.shared);
        let mut state = shared.lock();
        let mut io = Vec::new();
        let mut wakers = std::mem::take(&mut self.wakers);
        while let Some(output) = state.core.poll_output() {
            match output {
                Output::Connect(transport) => {
                    io.push(Io::Connect(transport, state.core.attempt(transport)));
                }
                Output::Transmit(text) => io.push(Io::Transmit(text)),
                Output::CloseTransport {
                    transport,
                    code,
                    reason,
                } => io.push(Io::Close {
                    transport,
                    code,
                    reason,
                }),
                Output::Event(event) => self.event(&mut state, event, &mut wakers),
                Output::Save(save) => io.push(Io::Save(save)),
            }
        }
        let closed = state.core.ready_state() == ReadyState::Closed;
        if closed {
            for waiter in state.close_waiters.drain(..) {
                let _ = waiter.send(());
            }
        }
        let finished = closed && shared.dropped.load(Ordering::SeqCst);
        let timeout = state.core.poll_timeout();
        // Woken after the lock is released: on a multi-thread runtime a woken future may be
        // polled at once, and its poll takes the lock.
        drop(state);
        for waker in wakers.drain(..) {
            waker.wake();
        }
        self.wakers = wakers;
        (io, timeout, finished)
    }

    /// Routes one core event: messages to the handlers, outcomes to whoever awaits them, and
    /// everything else (and outcomes nobody awaits) to the application's subscribers.
    /// The wakers of the futures whose outcome came are pushed to `wakers`.
    fn event(&self, state: &mut State, event: Event, wakers: &mut Vec<Waker>) {
        // A waiter whose future was dropped takes its outcome silently, as before.
        let settled = match event {
            Event::Message(message) => {
                // The dispatcher lives as long as this driver; a send error cannot happen.
                let _ = self.dispatch_tx.send(message);
                return;
            }
            Event::Reply {
                request,
                result,
                source,
            } => match state
                .requests
                .settle(request, result.map_err(crate::Error::Remote))
            {
                // A reply whose future was dropped goes nowhere.
                Ok(waker) => waker,
                // One no future of this process ever waited for: a restored request's.
                Err(outcome) => {
                    let result = outcome.map_err(|error| match error {
                        crate::Error::Remote(error) => error,
                        other => RemoteError {
                            code: other.code().into(),
                            message: other.to_string(),
                        },
                    });
                    self.shared.emit(Event::Reply {
                        request,
                        source,
                        result,
                    });
                    return;
                }
            },
            Event::Delivered { id } => match state.sends.settle(id, Ok(())) {
                Ok(waker) => waker,
                Err(_) => {
                    self.shared.emit(event);
                    return;
                }
            },
            Event::Failed { id, error } => match state.sends.settle(id, Err(error)) {
                Ok(waker) => waker,
                Err(outcome) => match state.requests.settle(id, outcome.map(|()| None)) {
                    Ok(waker) => waker,
                    Err(outcome) => {
                        if let Err(error) = outcome {
                            self.shared.emit(Event::Failed { id, error });
                        }
                        return;
                    }
                },
            },
            event => {
                self.shared.emit(event);
                return;
            }
        };
        wakers.extend(settled);
    }

    fn carry_out(&mut self, io: Io) {
        match io {
            Io::Save(save) => {
                let Some(journal) = &mut self.journal else {
                    return;
                };
                let written = journal.write(&save);
                let now = self.shared.now();
                let mut state = self.shared.lock();
                match written {
                    Ok(()) => state.core.handle_saved(now, save.mark),
                    Err(error) => {
                        state.core.stop_persisting();
                        drop(state);
                        self.journal = None;
                        let message = format!("writing the journal: {error}");
                        self.shared
                            .emit(Event::Error(crate::Error::Storage(message)));
                    }
                }
                // What the confirmation let through goes out on the next turn.
                self.shared.wake.notify_one();
            }
            Io::Connect(transport, name) => {
                if let Some((_, task)) = self.connecting.take() {
                    task.abort();
                }
                let attempt = self.dial.clone();
                let tx = self.connected_tx.clone();
                // The core's connection_timeout bounds the whole attempt (token, TCP, TLS,
                // upgrade): when it fires, the core abandons this transport and the task is
                // aborted.
                let task = tokio::spawn(async move {
                    let _ = tx.send((transport, dial(attempt, name).await));
                });
                self.connecting = Some((transport, task));
            }
            Io::Transmit(text) => {
                // Without a socket the frame is dropped: the core keeps everything reliable in
                // its outbox and sends it again on the next connection.
                if let Some(socket) = &mut self.socket {
                    socket.pending.push(Message::text(text));
                }
            }
            Io::Close {
                transport,
                code,
                reason,
            } => {
                if self
                    .connecting
                    .as_ref()
                    .is_some_and(|(current, _)| *current == transport)
                {
                    if let Some((_, task)) = self.connecting.take() {
                        task.abort();
                    }
                }
                if self
                    .socket
                    .as_ref()
                    .is_some_and(|socket| socket.transport == transport)
                {
                    if let Some(socket) = self.socket.take() {
                        let frame = CloseFrame {
                            code: CloseCode::from(code),
                            reason: reason.into(),
                        };
                        socket.shut(Some(frame));
                    }
                }
            }
        }
    }

    /// A connection attempt finished.
    fn connected(&mut self, transport: TransportId, result: Result<Ws, WsError>) {
        if self
            .connecting
            .as_ref()
            .is_none_or(|(current, _)| *current != transport)
        {
            // An attempt the core gave up on while it completed: drop it.
            return;
        }
        self.connecting = None;
        let shared = Arc::clone(&self.shared);
        let now = shared.now();
        match result {
            Ok(ws) => {
                let (sink, reader) = ws.split();
                let (writer, rx) = mpsc::unbounded_channel();
                let task = tokio::spawn(write(sink, rx));
                if let Some(old) = self.socket.replace(Socket {
                    transport,
                    reader,
                    writer,
                    pending: Vec::new(),
                    task,
                }) {
                    old.shut(None);
                }
                shared.lock().core.handle_opened(now, transport);
            }
            Err(WsError::Http(response)) => {
                let status = response.status();
                let body = response
                    .body()
                    .as_deref()
                    .and_then(|body| std::str::from_utf8(body).ok())
                    .map(str::trim)
                    .filter(|body| !body.is_empty());
                let reason = body
                    .or(status.canonical_reason())
                    .unwrap_or("upgrade refused");
                let mut state = shared.lock();
                state
                    .core
                    .handle_refused(now, transport, status.as_u16(), reason);
            }
            Err(error) => shared
                .lock()
                .core
                .handle_error(now, transport, &error.to_string()),
        }
    }

    /// The current socket produced something.
    fn received(&mut self, frame: Option<Result<Message, WsError>>) {
        let Some(transport) = self.socket.as_ref().map(|socket| socket.transport) else {
            return;
        };
        let shared = Arc::clone(&self.shared);
        let now = shared.now();
        let mut state = shared.lock();
        let (code, reason) = match frame {
            Some(Ok(Message::Text(text))) => {
                state.core.handle_frame(now, transport, text.as_str());
                return;
            }
            Some(Ok(Message::Binary(_))) => {
                state.core.handle_binary(now, transport);
                return;
            }
            // WebSocket pings are answered by tungstenite; the core's heartbeat is its own.
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => return,
            Some(Ok(Message::Close(frame))) => match frame {
                Some(frame) => (u16::from(frame.code), frame.reason.to_string()),
                None => (1005, String::new()),
            },
            Some(Err(error)) => {
                state.core.handle_error(now, transport, &error.to_string());
                drop(state);
                if let Some(socket) = self.socket.take() {
                    socket.shut(None);
                }
                return;
            }
            None => (1006, "connection lost".to_owned()),
        };
        state.core.handle_closed(now, transport, code, &reason);
        drop(state);
        if let Some(socket) = self.socket.take() {
            socket.shut(None);
        }
    }
}

/// Writes queued frames, flushing once for whatever batches are there; ends when the driver
/// drops the sender (then closes the WebSocket: our close frame or the reply to the peer's) or
/// on a write error (the read half then reports the connection's end).
async fn write(mut sink: SplitSink<Ws, Message>, mut rx: mpsc::UnboundedReceiver<Vec<Message>>) {
    while let Some(mut batch) = rx.recv().await {
        let mut closing = false;
        loop {
            for message in batch {
                closing = matches!(message, Message::Close(_));
                if sink.feed(message).await.is_err() {
                    return;
                }
                if closing {
                    break;
                }
            }
            if closing {
                break;
            }
            match rx.try_recv() {
                Ok(next) => batch = next,
                Err(_) => break,
            }
        }
        if sink.flush().await.is_err() || closing {
            break;
        }
    }
    let _ = sink.close().await;
}

/// Calls the `on` handlers one at a time, in arrival order, then runs what each returns on a
/// task of its own and hands the reply to the core, which decides what becomes of it.
async fn dispatch(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<InboundMessage>) {
    let panicked = || Reply::error("handler_error", "handler panicked");
    while let Some(message) = rx.recv().await {
        let handler = shared
            .handlers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&message.kind)
            .cloned();
        let receipt = message.receipt;
        let Some(handler) = handler else {
            if let Some(receipt) = receipt {
                shared.lock().core.handled(receipt);
                shared.wake.notify_one();
            }
            continue;
        };
        let target = message.reply_target();
        let kind = message.kind.clone();
        // A panic in the handler's synchronous part must not end the dispatcher.
        let future: HandlerFuture = std::panic::catch_unwind(AssertUnwindSafe(|| handler(message)))
            .unwrap_or_else(|_| Box::pin(std::future::ready(panicked())));
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let reply = AssertUnwindSafe(future)
                .catch_unwind()
                .await
                .unwrap_or_else(|_| panicked());
            let mut state = shared.lock();
            state.core.answer(&kind, target.as_ref(), reply);
            // The answer is queued: both reach the journal in one batch.
            if let Some(receipt) = receipt {
                state.core.handled(receipt);
            }
            drop(state);
            shared.wake.notify_one();
        });
    }
}
