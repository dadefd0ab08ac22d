//! The public handle: binding, sending, handlers, requests, hooks and graceful shutdown.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::{TcpListener, ToSocketAddrs};
use tokio_util::sync::CancellationToken;
use tungstenite::Utf8Bytes;
use wsrelay_core::protocol::RemoteError;

use crate::auth::{source_from_query, Authenticator, Identity, Rejection, UpgradeRequest};
use crate::clock::Clock;
use crate::config::ServerConfig;
use crate::engine::{Engine, EngineError, MemoryEngine, MessageRouter, RedisEngine, SendRefused};
use crate::handlers::{erase, ErasedHandler, Handlers, Incoming, IntoReply};
use crate::hooks::{ClientInfo, Hooks};
use crate::lifecycle::Lifecycle;
use crate::requests::{Requests, Response, ResponseHook};
use crate::state::ServerState;

/// Why a connection ended (from the server's state machine in `wsrelay-core`).
pub use wsrelay_core::server::DisconnectReason;

/// The close code [`WebSocketServer::close_with`] sends to every client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownCode {
    /// 1001: the server is going away.
    GoingAway,
    /// 1012: the service restarts; clients reconnect.
    Restart,
}

impl ShutdownCode {
    fn code(self) -> u16 {
        match self {
            ShutdownCode::GoingAway => 1001,
            ShutdownCode::Restart => 1012,
        }
    }
}

/// A snapshot of the server's counters (the same counters `GET /metrics` shows).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ServerStats {
    /// Clients connected now.
    pub connected: usize,
    /// Sessions kept for a resume after their client disconnected.
    pub parked_sessions: usize,
    /// Upgrades accepted since start.
    pub accepted: u64,
    /// Upgrades refused (origin, authentication, duplicate, limits).
    pub rejected: u64,
    /// Clients closed because they stayed behind for too long (1013, they may resume).
    pub slow_consumers: u64,
    /// Times a client's message waited for a recipient that was behind (flow control).
    pub blocked: u64,
    /// Whether the engine's store answers (always with the memory engine; Redis may be
    /// unreachable, and then nothing is acknowledged until it is back).
    pub engine_reachable: bool,
    /// Connections dropped for not answering pings.
    pub stale: u64,
    /// Connections replaced by another client instance with the same source (closed 4409).
    pub replaced: u64,
    /// Connections superseded by a newer connection attempt of the same client (closed 4410;
    /// the client had given up on them, e.g. over a stalled link).
    pub superseded: u64,
    /// Connection attempts refused because a newer attempt of the same client had claimed
    /// the source first (closed 4410; the client had given up on them).
    pub stale_attempts: u64,
    /// Invalid frames answered with `~error`.
    pub invalid_frames: u64,
}

/// Why a frame could not be sent to a client.
#[derive(Debug)]
#[non_exhaustive]
pub enum SendError {
    /// No client with that source is connected (nor within its session grace period).
    UnknownTarget,
    /// The client's mailbox is full (`ServerConfig::max_backlog`).
    Overflow,
    /// The payload could not be serialized.
    Payload(serde_json::Error),
    /// The engine (e.g. Redis) cannot be reached; nothing was sent.
    Unavailable(EngineError),
    /// The room name is not one the protocol takes.
    InvalidRoom(&'static str),
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::UnknownTarget => f.write_str("no client with that source"),
            SendError::Overflow => f.write_str("the client's mailbox is full"),
            SendError::Payload(error) => write!(f, "payload not serializable: {error}"),
            SendError::Unavailable(error) => error.fmt(f),
            SendError::InvalidRoom(problem) => f.write_str(problem),
        }
    }
}

impl std::error::Error for SendError {}

impl From<SendRefused> for SendError {
    fn from(refused: SendRefused) -> Self {
        match refused {
            SendRefused::UnknownTarget => SendError::UnknownTarget,
            SendRefused::Overflow => SendError::Overflow,
            SendRefused::Unavailable(error) => SendError::Unavailable(error),
        }
    }
}

/// Why a [`WebSocketServer::request`] got no usable response.
#[derive(Debug)]
#[non_exhaustive]
pub enum RequestError {
    /// The request could not be sent.
    Send(SendError),
    /// No response within the timeout.
    Timeout,
    /// The client's handler failed.
    Remote(RemoteError),
    /// The response's payload is not a `R`.
    Payload(serde_json::Error),
    /// The server shut down while waiting.
    Closed,
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::Send(error) => write!(f, "request not sent: {error}"),
            RequestError::Timeout => f.write_str("no response in time"),
            RequestError::Remote(error) => write!(f, "{}: {}", error.code, error.message),
            RequestError::Payload(error) => write!(f, "unexpected response payload: {error}"),
            RequestError::Closed => f.write_str("server closed"),
        }
    }
}

impl std::error::Error for RequestError {}

/// Configures a server before it accepts its first connection: authentication, hooks and
/// handlers. Created by [`WebSocketServer::builder`].
pub struct ServerBuilder {
    config: ServerConfig,
    auth: Box<Authenticator>,
    hooks: Hooks,
    on_response: Vec<ResponseHook>,
    handlers: HashMap<String, ErasedHandler>,
}

impl fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl ServerBuilder {
    /// Replaces the authentication hook. It sees the upgrade request (path, query, headers
    /// including `Origin`, peer address) and returns the `source` to register (a `String`,
    /// or an [`Identity`] that also says when its credentials expire), or a [`Rejection`]
    /// with the HTTP status to refuse with. The default is
    /// [`source_from_query`](crate::source_from_query): the client is who `?source=` says;
    /// [`JwtAuth`](crate::JwtAuth) verifies a token instead.
    pub fn authenticate<F, I>(mut self, hook: F) -> Self
    where
        F: Fn(&UpgradeRequest) -> Result<I, Rejection> + Send + Sync + 'static,
        I: Into<Identity>,
    {
        self.auth = Box::new(move |request| hook(request).map(Into::into));
        self
    }

    /// Calls `hook` when a client is registered.
    pub fn on_connect<F>(mut self, hook: F) -> Self
    where
        F: Fn(&ClientInfo) + Send + Sync + 'static,
    {
        self.hooks.on_connect.push(Arc::new(hook));
        self
    }

    /// Calls `hook` when a client's connection has ended and it was removed.
    pub fn on_disconnect<F>(mut self, hook: F) -> Self
    where
        F: Fn(&ClientInfo, &DisconnectReason) + Send + Sync + 'static,
    {
        self.hooks.on_disconnect.push(Arc::new(hook));
        self
    }

    /// Calls `hook` with every answer a client sends to one of the server's own messages
    /// (`send_to`, `broadcast`) that no [`request`](WebSocketServer::request) waits for: a
    /// client handler's return value is always sent back (`PROTOCOL.md` section 6), and this is
    /// where it arrives.
    pub fn on_response<F>(mut self, hook: F) -> Self
    where
        F: Fn(&Response) + Send + Sync + 'static,
    {
        self.on_response.push(Arc::new(hook));
        self
    }

    /// Registers a handler before the server starts; see [`WebSocketServer::on`].
    pub fn on<T, R, F, Fut>(mut self, kind: &str, handler: F) -> Self
    where
        T: DeserializeOwned + Send + 'static,
        R: IntoReply + 'static,
        F: Fn(Incoming<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
    {
        self.handlers.insert(kind.to_owned(), erase(handler));
        self
    }

    /// Binds `addr` (port 0 picks a free port) and starts accepting connections.
    pub async fn bind(self, addr: impl ToSocketAddrs) -> std::io::Result<WebSocketServer> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let clock = Clock::start();
        let admission = crate::admission::Admission::new(&self.config);
        let requests = Arc::new(Requests::new(self.on_response));
        let shutdown = CancellationToken::new();
        let limits = self.config.memory_limits();
        let engine = match &self.config.redis {
            Some(url) => {
                let node_id = self.config.node_id.clone();
                let redis = RedisEngine::start(
                    url,
                    node_id,
                    limits,
                    self.config.room_retention,
                    Arc::clone(&requests),
                    shutdown.clone(),
                )
                .map_err(|error| std::io::Error::new(std::io::ErrorKind::InvalidInput, error))?;
                Engine::Redis(redis)
            }
            None => Engine::Memory(MemoryEngine::new(limits, clock, Arc::clone(&requests))),
        };
        let state = Arc::new(ServerState {
            engine,
            config: self.config,
            auth: self.auth,
            handlers: Arc::new(Handlers::new(self.handlers)),
            requests,
            hooks: self.hooks,
            clock,
            admission,
            metrics: crate::metrics::Metrics::new(),
            lifecycle: Lifecycle::new(shutdown),
            presence: Arc::default(),
        });
        if state.config.presence {
            crate::presence::install_clients_handler(&state);
            let announcer =
                crate::presence::announce(Arc::downgrade(&state), Arc::clone(&state.presence));
            state.lifecycle.tracker.spawn(announcer);
        }
        let accept = CancellationToken::new();
        let app = crate::http::router(Arc::clone(&state));
        // Not tracked: the listener outlives the connections' drain (see `close_with`).
        let serve = crate::listener::accept(listener, Arc::clone(&state), app, accept.clone());
        let listening = tokio::spawn(serve);
        let sweeper = Arc::clone(&state);
        state.lifecycle.tracker.spawn(async move {
            let period = (sweeper.config.session_grace / 4)
                .clamp(Duration::from_millis(50), Duration::from_secs(5));
            let mut tick = tokio::time::interval(period);
            loop {
                tokio::select! {
                    () = sweeper.lifecycle.shut_down() => return,
                    _ = tick.tick() => {
                        let expired = sweeper.engine.expire();
                        sweeper.metrics.sessions_expired.inc_by(expired as u64);
                        if expired > 0 {
                            tracing::debug!(expired, "sessions expired");
                        }
                    }
                }
            }
        });
        tracing::info!(%local_addr, "listening");
        let stop = Arc::new(StopOnDrop {
            state: Arc::clone(&state),
            accept,
            listening: std::sync::Mutex::new(Some(listening)),
            closed: AtomicBool::new(false),
        });
        Ok(WebSocketServer {
            state,
            local_addr,
            stop,
        })
    }
}

/// Stops the server when the last handle is dropped without `close()`.
struct StopOnDrop {
    state: Arc<ServerState>,
    accept: CancellationToken,
    /// The accept loop, awaited by `close` so that the port is free when it returns.
    listening: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    closed: AtomicBool,
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if !self.closed.load(Ordering::Relaxed) {
            self.accept.cancel();
            self.state.lifecycle.abort();
        }
    }
}

/// A running wsrelay server. Cheap to clone; every clone is a handle to the same server.
/// Dropping the last handle without [`close`](Self::close) stops it abruptly.
///
/// See the [crate documentation](crate) for an example.
#[derive(Clone)]
pub struct WebSocketServer {
    state: Arc<ServerState>,
    local_addr: SocketAddr,
    stop: Arc<StopOnDrop>,
}

impl fmt::Debug for WebSocketServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebSocketServer")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl WebSocketServer {
    /// A builder with `config`, the default authentication and no hooks.
    pub fn builder(config: ServerConfig) -> ServerBuilder {
        ServerBuilder {
            config,
            auth: Box::new(source_from_query),
            hooks: Hooks::default(),
            on_response: Vec::new(),
            handlers: HashMap::new(),
        }
    }

    /// Binds `addr` with `config` and the defaults of [`ServerBuilder`].
    pub async fn bind(
        addr: impl ToSocketAddrs,
        config: ServerConfig,
    ) -> std::io::Result<WebSocketServer> {
        WebSocketServer::builder(config).bind(addr).await
    }

    /// The address the server listens on (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The server's settings.
    pub fn config(&self) -> &ServerConfig {
        &self.state.config
    }

    /// Sends a message of type `kind` from the server (no `source`) to the client `source`.
    /// A client within its session grace period gets it when it resumes. The message carries
    /// an id, so the client's handler can answer it: the answer reaches the
    /// [`on_response`](ServerBuilder::on_response) hooks.
    pub async fn send_to<P: Serialize + ?Sized>(
        &self,
        source: &str,
        kind: &str,
        payload: &P,
    ) -> Result<(), SendError> {
        let frame = self.server_message(kind, payload, false)?.1;
        Ok(self.state.engine.send_to(source, frame).await?)
    }

    /// Sends a message of type `kind` to every client except `exclude`. The frame is encoded
    /// once; every recipient's mailbox gets the same bytes. Returns how many clients got it.
    pub async fn broadcast<P: Serialize + ?Sized>(
        &self,
        kind: &str,
        payload: &P,
        exclude: Option<&str>,
    ) -> Result<usize, SendError> {
        let frame = self.server_message(kind, payload, false)?.1;
        self.state
            .engine
            .broadcast(frame, exclude)
            .await
            .map_err(SendError::Unavailable)
    }

    /// Makes the client `source` a member of `room`, as its own `relay:join` would (the
    /// server decides; the room's access rules are for clients). Membership belongs to the
    /// client's session: it lasts while the session does, across reconnections. Fails with
    /// [`SendError::UnknownTarget`] when no client with that source is connected or within its
    /// session grace period.
    pub async fn join(&self, source: &str, room: &str) -> Result<(), SendError> {
        check_room(room)?;
        self.state.engine.join(source, room).await?;
        self.state.presence.changed();
        Ok(())
    }

    /// The client `source` is no longer a member of `room`; `false` when it was not one.
    pub async fn leave(&self, source: &str, room: &str) -> Result<bool, SendError> {
        let was_member = self.state.engine.leave(source, room).await?;
        self.state.presence.changed();
        Ok(was_member)
    }

    /// Sends a message of type `kind` from the server to every member of `room` except
    /// `exclude`, with `room` in its envelope. Encoded once; every member's mailbox holds the
    /// same bytes. Returns how many members got it.
    pub async fn broadcast_to<P: Serialize + ?Sized>(
        &self,
        room: &str,
        kind: &str,
        payload: &P,
        exclude: Option<&str>,
    ) -> Result<usize, SendError> {
        check_room(room)?;
        let payload = serde_json::to_string(payload).map_err(SendError::Payload)?;
        let frame = self.state.requests.room_message(room, kind, &payload);
        Ok(self.state.engine.send_to_room(room, frame, exclude).await?)
    }

    /// The members of `room` connected now, sorted.
    pub async fn members(&self, room: &str) -> Result<Vec<String>, SendError> {
        Ok(self.state.engine.members(room).await?)
    }

    /// A message from the server, with its id (`request`: a request's).
    fn server_message<P: Serialize + ?Sized>(
        &self,
        kind: &str,
        payload: &P,
        request: bool,
    ) -> Result<(u64, Utf8Bytes), SendError> {
        let payload = serde_json::to_string(payload).map_err(SendError::Payload)?;
        Ok(self.state.requests.server_message(kind, &payload, request))
    }

    /// Handles messages of type `kind` (replacing any handler for it). The handler gets the
    /// sender and the payload decoded as `T`; what it returns ([`IntoReply`]) goes back to
    /// the sender as a response to the message's `id`. A payload that is not a `T` is
    /// answered with a `handler_error` without calling the handler. Messages of a type with
    /// a handler are not relayed. The handler is called as each message is consumed, in
    /// arrival order; the futures of one connection's calls are awaited one at a time, in
    /// that order, on the connection's task, and their answers go back in that order.
    pub fn on<T, R, F, Fut>(&self, kind: &str, handler: F)
    where
        T: DeserializeOwned + Send + 'static,
        R: IntoReply + 'static,
        F: Fn(Incoming<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
    {
        self.state.handlers.insert(kind, erase(handler));
    }

    /// Removes the handler of `kind`; returns whether there was one.
    pub fn off(&self, kind: &str) -> bool {
        self.state.handlers.remove(kind)
    }

    /// Sends a request (a message with an `id`) to `source` and waits up to `timeout` for the
    /// client's response, decoded as `R`.
    pub async fn request<P, R>(
        &self,
        source: &str,
        kind: &str,
        payload: &P,
        timeout: Duration,
    ) -> Result<R, RequestError>
    where
        P: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        let (id, frame) = self
            .server_message(kind, payload, true)
            .map_err(RequestError::Send)?;
        let requests = &self.state.requests;
        let response = requests.expect(id, source);
        if let Err(refused) = self.state.engine.send_to(source, frame).await {
            requests.forget(id);
            return Err(RequestError::Send(refused.into()));
        }
        match tokio::time::timeout(timeout, response).await {
            Err(_) => {
                requests.forget(id);
                Err(RequestError::Timeout)
            }
            Ok(Err(_)) => Err(RequestError::Closed),
            Ok(Ok(Err(remote))) => Err(RequestError::Remote(remote)),
            Ok(Ok(Ok(payload))) => serde_json::from_str(payload.as_deref().unwrap_or("null"))
                .map_err(RequestError::Payload),
        }
    }

    /// The sources of the connected clients, sorted.
    pub async fn clients(&self) -> Result<Vec<String>, EngineError> {
        self.state.engine.clients().await
    }

    /// Whether a client with `source` is connected.
    pub async fn is_connected(&self, source: &str) -> Result<bool, EngineError> {
        self.state.engine.is_connected(source).await
    }

    /// Whether the server is ready for clients, as `GET /readyz` answers: `Err` says why not
    /// (it is shutting down, or Redis does not answer; with the memory engine only the
    /// former).
    pub fn ready(&self) -> Result<(), String> {
        self.state.ready()
    }

    /// The server's counters.
    pub fn stats(&self) -> ServerStats {
        let metrics = &self.state.metrics;
        let (parked_sessions, connected) = self.state.engine.local_counts();
        ServerStats {
            connected,
            parked_sessions,
            accepted: metrics.opened.get(),
            rejected: metrics.refused_total(),
            slow_consumers: metrics.disconnects("slow_consumer"),
            blocked: metrics.blocked.get(),
            engine_reachable: self.state.engine.healthy(),
            stale: metrics.disconnects("stale"),
            replaced: metrics.disconnects("replaced"),
            superseded: metrics.disconnects("superseded"),
            stale_attempts: metrics.stale_attempts(),
            invalid_frames: metrics.invalid_frames.get(),
        }
    }

    /// Shuts down gracefully with 1001 (going away); see [`close_with`](Self::close_with).
    pub async fn close(&self) {
        self.close_with(ShutdownCode::GoingAway).await;
    }

    /// Shuts down gracefully: stops accepting, lets every connection write what is queued for
    /// it, closes it with `code` and waits for the client's answer; connections still open at
    /// the `shutdown_timeout` deadline are dropped. Pending requests fail with
    /// [`RequestError::Closed`].
    pub async fn close_with(&self, code: ShutdownCode) {
        let state = &self.state;
        self.stop.closed.store(true, Ordering::Relaxed);
        // While the connections drain, the listener stays open: `/readyz` answers 503 and
        // upgrades are refused with 503, so a load balancer learns to send clients elsewhere.
        state.lifecycle.shut_down_with(code.code());
        let deadline = state.config.shutdown_timeout;
        if tokio::time::timeout(deadline, state.lifecycle.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                remaining = state.lifecycle.tracker.len(),
                "shutdown deadline passed: dropping"
            );
            state.lifecycle.abort();
            let _ =
                tokio::time::timeout(state.config.close_timeout, state.lifecycle.tracker.wait())
                    .await;
        }
        self.stop.accept.cancel();
        let listening = self
            .stop
            .listening
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(listening) = listening {
            let _ = listening.await;
        }
        state.requests.clear();
        state.engine.clear();
        tracing::info!("closed");
    }
}

/// A room name the protocol takes (1 to 128 bytes, no control characters), else
/// [`SendError::InvalidRoom`].
fn check_room(room: &str) -> Result<(), SendError> {
    match wsrelay_core::protocol::room_problem(room) {
        None => Ok(()),
        Some(problem) => Err(SendError::InvalidRoom(problem)),
    }
}
