//! The driver task: owns the socket and one timer, feeds the core, carries out its outputs.
//!
//! The loop is the str0m/quinn drain loop: after every input (a frame, a close, a connection
//! result, the timer, or a handle's command), drain `poll_output` and re-arm the timer at
//! `poll_timeout`. Nothing here decides anything: reconnecting, backoff, heartbeat and timeouts
//! are the core's outputs and deadlines.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::{Dial, HandlerFuture, Shared, State, Token};
use crate::client::{Event, InboundMessage, Output, ReadyState, TransportId};
use crate::{Instant, Reply};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long a socket the core abandoned gets to write what was queued and its close frame
/// before it is dropped: a peer that stopped reading must not hold the task forever.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// The upgrade request for `url` (validated once, at construction).
pub(super) fn request(url: &str) -> Result<Request, WsError> {
    url.into_client_request()
}

pub(crate) type Request = tokio_tungstenite::tungstenite::handshake::client::Request;

/// One connection attempt: the token first (if the client has one), then TCP, TLS and the
/// upgrade.
async fn dial(dial: Dial) -> Result<Ws, WsError> {
    let mut request = dial.request;
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
    #[cfg(feature = "tls")]
    let connected = tokio_tungstenite::connect_async_tls_with_config(
        request,
        None,
        true,
        dial.tls.map(tokio_tungstenite::Connector::Rustls),
    )
    .await;
    #[cfg(not(feature = "tls"))]
    let connected = tokio_tungstenite::connect_async_with_config(request, None, true).await;
    connected.map(|(ws, _)| ws)
}

/// The open transport: the read half is polled by the driver loop, the write half belongs to a
/// writer task so that a slow or stalled peer never blocks the loop (the heartbeat timer must
/// still fire when writes stall).
struct Socket {
    transport: TransportId,
    reader: SplitStream<Ws>,
    writer: mpsc::UnboundedSender<Message>,
    task: JoinHandle<()>,
}

impl Socket {
    /// Stops using the socket: the writer sends what it has, then `close` (a close frame when
    /// given, otherwise the close handshake's reply), within `CLOSE_GRACE`.
    fn shut(self, close: Option<CloseFrame>) {
        if let Some(frame) = close {
            // The writer may already be gone (write error): then the socket is dead anyway.
            let _ = self.writer.send(Message::Close(Some(frame)));
        }
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
    Connect(TransportId),
    Transmit(String),
    Close {
        transport: TransportId,
        code: u16,
        reason: String,
    },
}

struct Driver {
    shared: Arc<Shared>,
    dial: Dial,
    connecting: Option<(TransportId, JoinHandle<()>)>,
    socket: Option<Socket>,
    connected_tx: mpsc::UnboundedSender<(TransportId, Result<Ws, WsError>)>,
    dispatch_tx: mpsc::UnboundedSender<InboundMessage>,
}

/// The driver task of one client. Ends when every handle is dropped and the core is closed.
pub(super) async fn run(shared: Arc<Shared>, dial: Dial) {
    let (connected_tx, mut connected_rx) = mpsc::unbounded_channel();
    let (dispatch_tx, dispatch_rx) = mpsc::unbounded_channel();
    tokio::spawn(dispatch(Arc::clone(&shared), dispatch_rx));
    let mut driver = Driver {
        shared,
        dial,
        connecting: None,
        socket: None,
        connected_tx,
        dispatch_tx,
    };
    loop {
        let (io, deadline, finished) = driver.drain();
        for io in io {
            driver.carry_out(io);
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

impl Driver {
    /// Drains the core's outputs: events are handled under the lock (they only resolve
    /// waiters and queue notifications), socket work is returned to be done after it.
    fn drain(&mut self) -> (Vec<Io>, Option<Instant>, bool) {
        let shared = Arc::clone(&self.shared);
        let mut state = shared.lock();
        let mut io = Vec::new();
        while let Some(output) = state.core.poll_output() {
            match output {
                Output::Connect(transport) => io.push(Io::Connect(transport)),
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
                Output::Event(event) => self.event(&mut state, event),
            }
        }
        let closed = state.core.ready_state() == ReadyState::Closed;
        if closed {
            for waiter in state.close_waiters.drain(..) {
                let _ = waiter.send(());
            }
        }
        let finished = closed && shared.dropped.load(Ordering::SeqCst);
        (io, state.core.poll_timeout(), finished)
    }

    /// Routes one core event: messages to the handlers, outcomes to whoever awaits them, and
    /// everything else (and outcomes nobody awaits) to the application's subscribers.
    fn event(&self, state: &mut State, event: Event) {
        // A waiter whose future was dropped is gone: `send` on it fails, which is fine.
        match event {
            Event::Message(message) => {
                // The dispatcher lives as long as this driver; a send error cannot happen.
                let _ = self.dispatch_tx.send(message);
            }
            Event::Reply {
                request, result, ..
            } => {
                if let Some(tx) = state.requests.remove(&request) {
                    let _ = tx.send(result.map_err(crate::Error::Remote));
                }
            }
            Event::Delivered { id } => match state.sends.remove(&id) {
                Some(tx) => {
                    let _ = tx.send(Ok(()));
                }
                None => self.shared.emit(event),
            },
            Event::Failed { id, error } => {
                if let Some(tx) = state.sends.remove(&id) {
                    let _ = tx.send(Err(error));
                } else if let Some(tx) = state.requests.remove(&id) {
                    let _ = tx.send(Err(error));
                } else {
                    self.shared.emit(Event::Failed { id, error });
                }
            }
            event => self.shared.emit(event),
        }
    }

    fn carry_out(&mut self, io: Io) {
        match io {
            Io::Connect(transport) => {
                if let Some((_, task)) = self.connecting.take() {
                    task.abort();
                }
                let attempt = self.dial.clone();
                let tx = self.connected_tx.clone();
                // The core's connection_timeout bounds the whole attempt (token, TCP, TLS,
                // upgrade): when it fires, the core abandons this transport and the task is
                // aborted.
                let task = tokio::spawn(async move {
                    let _ = tx.send((transport, dial(attempt).await));
                });
                self.connecting = Some((transport, task));
            }
            Io::Transmit(text) => {
                // Without a socket the frame is dropped: the core keeps everything reliable in
                // its outbox and sends it again on the next connection.
                if let Some(socket) = &self.socket {
                    let _ = socket.writer.send(Message::text(text));
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
                    task,
                }) {
                    old.shut(None);
                }
                shared.lock().core.handle_opened(now, transport);
            }
            Err(WsError::Http(response)) => {
                let status = response.status();
                // PROTOCOL.md section 9: a refused upgrade is the close code the browser
                // could not have seen, so the core's stop codes apply to native clients too.
                let code = match status.as_u16() {
                    401 => Some(4401),
                    403 => Some(4403),
                    409 => Some(4409),
                    _ => None,
                };
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
                match code {
                    Some(code) => state.core.handle_closed(now, transport, code, reason),
                    None => state.core.handle_error(
                        now,
                        transport,
                        &format!("upgrade refused: HTTP {status}: {reason}"),
                    ),
                }
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

/// Writes queued frames, flushing once per batch; ends when the driver drops the sender
/// (then closes the WebSocket: our close frame or the reply to the peer's) or on a write error
/// (the read half then reports the connection's end).
async fn write(mut sink: SplitSink<Ws, Message>, mut rx: mpsc::UnboundedReceiver<Message>) {
    while let Some(message) = rx.recv().await {
        let mut closing = matches!(message, Message::Close(_));
        if sink.feed(message).await.is_err() {
            return;
        }
        while !closing {
            let Ok(message) = rx.try_recv() else { break };
            closing = matches!(message, Message::Close(_));
            if sink.feed(message).await.is_err() {
                return;
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
        let Some(handler) = handler else { continue };
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
            shared.lock().core.answer(&kind, target.as_ref(), reply);
            shared.wake.notify_one();
        });
    }
}
