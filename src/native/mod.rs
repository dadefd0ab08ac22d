//! The native client: a tokio driver of [`ClientCore`].
//!
//! [`WebSocketClient`] is a cheap handle; a background task (the driver, `driver.rs`) owns the
//! socket and one timer, feeds the core every transport event and timeout, and carries out the
//! core's outputs. Every decision (reconnect and backoff, queueing, acknowledgements, heartbeat,
//! request timeouts, graceful close) is the core's.
//!
//! ```no_run
//! # async fn demo() -> Result<(), wsrelay::Error> {
//! use wsrelay::{Incoming, WebSocketClient};
//!
//! let client = WebSocketClient::new("ws://127.0.0.1:8080", "alice")?;
//! client.on("chat-message", |message: Incoming<serde_json::Value>| async move {
//!     println!("{:?}: {}", message.source, message.payload);
//! });
//! // Resolves once the server has acknowledged the message.
//! client.send("chat-message", serde_json::json!({ "message": "Hello" })).await?;
//! client.close().await;
//! # Ok(())
//! # }
//! ```

mod driver;
mod journal_file;
mod waiters;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::BuildHasher;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{broadcast, oneshot, Notify};

use journal_file::JournalFile;
use waiters::{Outcome, Waiters};

pub use crate::client::Error;
use crate::client::{
    connect_url, ClientCore, Event, InboundMessage, Options, Outgoing, ReadyState, Stats,
};
use crate::protocol::{JOIN, LEAVE};
use crate::{Instant, IntoReply, Reply};

/// A message handed to an [`on`](WebSocketClient::on) handler.
#[derive(Debug, Clone, PartialEq)]
pub struct Incoming<T> {
    /// The message type.
    pub kind: String,
    /// The sender, as registered by the server (`None`: the server itself).
    pub source: Option<String>,
    /// The sender's message id (present when the message can be answered).
    pub id: Option<u64>,
    /// The room it was sent to (`None`: to this client alone, or to everyone).
    pub room: Option<String>,
    /// The payload, deserialized (a missing payload deserializes from `null`).
    pub payload: T,
}

/// The payload of `relay:join` and `relay:leave` (owned: the request's future outlives the
/// call).
#[derive(Serialize)]
struct RoomName {
    room: String,
}

/// Per-message options for [`send_with`](WebSocketClient::send_with),
/// [`post_with`](WebSocketClient::post_with) and [`request_with`](WebSocketClient::request_with).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SendOptions {
    /// Deliver to this `source` only (default: the server relays to everybody else).
    pub to: Option<String>,
    /// Deliver to every other member of this room (the client must have
    /// [joined](WebSocketClient::join) it).
    pub room: Option<String>,
    /// Fail with [`Error::Expired`] if the message could not be sent within this long.
    pub ttl: Option<Duration>,
    /// Requests only: how long to wait for the response (default: the client's
    /// `request_timeout`).
    pub timeout: Option<Duration>,
}

impl SendOptions {
    /// Options addressing `source` only.
    pub fn to(source: impl Into<String>) -> Self {
        SendOptions {
            to: Some(source.into()),
            ..SendOptions::default()
        }
    }

    /// Options addressing the other members of `room`.
    pub fn room(room: impl Into<String>) -> Self {
        SendOptions {
            room: Some(room.into()),
            ..SendOptions::default()
        }
    }

    /// The core's view of a message of `kind` with the JSON text `payload` and these options.
    fn outgoing<'a>(&'a self, kind: &'a str, payload: &'a str) -> Outgoing<'a> {
        Outgoing {
            kind,
            payload: Some(payload),
            to: self.to.as_deref(),
            room: self.room.as_deref(),
            ttl: self.ttl,
        }
    }
}

/// A future of a token, from [`ClientBuilder::token_fn`].
pub type TokenFuture = Pin<Box<dyn Future<Output = Result<String, String>> + Send>>;

/// Where the token of each connection attempt comes from.
#[derive(Clone)]
pub(crate) enum Token {
    /// The same token every time.
    Fixed(String),
    /// Asked for before every attempt.
    Fetch(Arc<dyn Fn() -> TokenFuture + Send + Sync>),
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the token itself.
        f.write_str(match self {
            Token::Fixed(_) => "Token::Fixed(..)",
            Token::Fetch(_) => "Token::Fetch(..)",
        })
    }
}

/// How a connection attempt is made: the upgrade request, the credentials, the TLS settings.
#[derive(Debug, Clone)]
pub(crate) struct Dial {
    pub(crate) request: driver::Request,
    pub(crate) token: Option<Token>,
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<Arc<rustls::ClientConfig>>,
}

/// Configures a [`WebSocketClient`]: one setter per core option ([`Options`]).
#[derive(Debug, Clone)]
#[must_use]
pub struct ClientBuilder {
    url: String,
    source: String,
    options: Options,
    seed: Option<u64>,
    events: broadcast::Sender<Event>,
    token: Option<Token>,
    persist: Option<PathBuf>,
    #[cfg(feature = "tls")]
    tls: Option<Arc<rustls::ClientConfig>>,
}

/// How many events a slow [`subscribe`](WebSocketClient::subscribe) receiver may fall behind
/// before it misses the oldest.
const EVENT_CAPACITY: usize = 1024;

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty),* $(,)?) => {
        $(
            $(#[$doc])*
            pub fn $name(mut self, value: $ty) -> Self {
                self.options.$name = value;
                self
            }
        )*
    };
}

impl ClientBuilder {
    setters! {
        /// Delay before the first reconnect attempt (default 1 s).
        min_reconnection_delay: Duration,
        /// Cap on the delay between attempts (default 10 s).
        max_reconnection_delay: Duration,
        /// Each further attempt waits this many times longer (default 1.3).
        reconnection_delay_grow_factor: f64,
        /// Fraction of randomness in each delay, 0 to 1 (default 0.3).
        reconnection_jitter: f64,
        /// How long a connection must stay up before the retry count resets (default 5 s).
        min_uptime: Duration,
        /// How long an attempt may take, TCP and HTTP upgrade included, up to the server's
        /// welcome (default 4 s).
        connection_timeout: Duration,
        /// Give up after this many failed attempts in a row (default `None`: never).
        max_retries: Option<u32>,
        /// Do not connect until [`WebSocketClient::reconnect`] is called (default false).
        start_closed: bool,
        /// Most messages waiting for acknowledgement (default 10 000).
        max_enqueued_messages: usize,
        /// Most bytes waiting for acknowledgement (default 16 MiB).
        max_enqueued_bytes: usize,
        /// Largest frame the client sends (default 1 MiB).
        max_message_size: usize,
        /// Application ping interval while open (default 25 s).
        heartbeat_interval: Duration,
        /// Silence after which the connection is declared dead (default 45 s).
        heartbeat_timeout: Duration,
        /// Timeout of requests that name none (default 30 s).
        request_timeout: Duration,
        /// Received frames are acknowledged at most this long after arrival (default 1 s).
        ack_delay: Duration,
        /// ...or at once when this many are unacknowledged (default 128).
        ack_every: u64,
        /// ...or at once when this many bytes of frames are unacknowledged (default 64 KiB;
        /// 0: every frame at once).
        ack_bytes: usize,
        /// How long `close` waits for messages in flight to be acknowledged (default 5 s).
        close_timeout: Duration,
        /// Close codes after which the client stops reconnecting
        /// (default 1002, 1008, 4401, 4403, 4409).
        stop_codes: Vec<u16>,
    }

    /// Replaces every core option at once.
    pub fn options(mut self, options: Options) -> Self {
        self.options = options;
        self
    }

    /// Sends `token` with every connection attempt (`Authorization: Bearer`), for a relay
    /// that verifies identities. A token that expires needs [`token_fn`](Self::token_fn).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(Token::Fixed(token.into()));
        self
    }

    /// Calls `fetch` before every connection attempt for the token to send (`Authorization:
    /// Bearer`): an expiring token is renewed on each reconnect, and a relay that closes a
    /// connection whose token expired (4001) gets a fresh one. A fetch that fails is a failed
    /// attempt, retried with the usual backoff; it counts in the attempt's
    /// `connection_timeout`.
    ///
    /// ```no_run
    /// # fn demo() -> Result<(), wsrelay::Error> {
    /// let client = wsrelay::WebSocketClient::builder("wss://relay.example", "alice")
    ///     .token_fn(|| async { Ok::<_, std::io::Error>("a fresh token".to_owned()) })
    ///     .build()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn token_fn<F, Fut, E>(mut self, fetch: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, E>> + Send + 'static,
        E: fmt::Display,
    {
        let fetch = move || -> TokenFuture {
            let token = fetch();
            Box::pin(async move { token.await.map_err(|error| error.to_string()) })
        };
        self.token = Some(Token::Fetch(Arc::new(fetch)));
        self
    }

    /// The TLS settings of `wss://` connections, e.g. with a root certificate of your own
    /// (default: the webpki roots). rustls is re-exported as [`crate::rustls`].
    #[cfg(feature = "tls")]
    pub fn tls_config(mut self, config: Arc<rustls::ClientConfig>) -> Self {
        self.tls = Some(config);
        self
    }

    /// Keeps the client's state in the file at `path` (PROTOCOL.md section 13), so that a new
    /// process built with the same path carries on where this one stopped, even if it was
    /// killed: the messages it had queued and not seen acknowledged are sent, once, in their
    /// order, before anything sent later (their outcomes arrive as events, after an
    /// [`Event::Restored`] naming them), and a message whose handler finished is not handled
    /// again. One path per client: two live clients on one file would overwrite each other.
    ///
    /// A file that cannot be opened or written (a missing directory, a full disk) is reported
    /// as [`Error::Storage`] on the events and the client goes on in memory; an unreadable
    /// journal is moved aside (`.damaged` added to its name), reported, and started afresh.
    /// Events from [`ClientBuilder::subscribe`] see those reports.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), wsrelay::Error> {
    /// let client = wsrelay::WebSocketClient::builder("ws://127.0.0.1:8080", "alice")
    ///     .persist("alice.journal")
    ///     .build()?;
    /// // Queued and journaled at once; sent when connected, even by the next process.
    /// let id = client.post("chat-message", "Hello")?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn persist(mut self, path: impl Into<PathBuf>) -> Self {
        self.persist = Some(path.into());
        self
    }

    /// Seeds the jitter and the session token (default: random), for reproducible tests.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// A receiver of the client's events that sees every event from the very start,
    /// including the first `Open`: on a multi-thread runtime the first connection can open
    /// before a [`WebSocketClient::subscribe`] made right after `build` runs.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Creates the client and starts connecting in the background (unless `start_closed`).
    /// Never blocks.
    ///
    /// Fails with [`Error::InvalidOption`] when an option is out of range
    /// ([`Options::validate`]), the URL is not a `ws://` or `wss://` URL (or `wss://` without
    /// the `tls` feature), or `source` is not 1 to 128 bytes ([`connect_url`]); with
    /// [`Error::Transport`] when called outside a tokio runtime.
    pub fn build(self) -> Result<WebSocketClient, Error> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|error| Error::Transport(format!("no tokio runtime: {error}")))?;
        self.options.validate()?;
        let url = connect_url(&self.url, &self.source)?;
        if !cfg!(feature = "tls") && url.get(..4).is_some_and(|s| s.eq_ignore_ascii_case("wss:")) {
            return Err(Error::InvalidOption(
                "wss:// needs the `tls` feature of wsrelay".into(),
            ));
        }
        // Parsed once here so that a malformed URL fails construction instead of every attempt.
        let request = driver::request(&url)
            .map_err(|error| Error::InvalidOption(format!("invalid URL {}: {error}", self.url)))?;
        let seed = self
            .seed
            .unwrap_or_else(|| std::collections::hash_map::RandomState::new().hash_one(0u8));
        let start = tokio::time::Instant::now();
        let (core, journal) = match &self.persist {
            Some(path) => restore(path, self.options, seed, &self.events),
            None => (
                ClientCore::new(self.options, seed, Instant::from_millis(0)),
                None,
            ),
        };
        let events = self.events;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                core,
                sends: Waiters::default(),
                requests: Waiters::default(),
                close_waiters: Vec::new(),
            }),
            wake: Notify::new(),
            events,
            handlers: RwLock::new(HashMap::new()),
            start,
            dropped: AtomicBool::new(false),
        });
        let dial = Dial {
            request,
            token: self.token,
            #[cfg(feature = "tls")]
            tls: self.tls,
        };
        runtime.spawn(driver::run(Arc::clone(&shared), dial, journal));
        Ok(WebSocketClient {
            handle: Arc::new(Handle { shared }),
        })
    }
}

/// The core of a client that persists to `path`, restored from its journal, and the open
/// journal; failures are reported on `events` as [`Error::Storage`] (the client then keeps its
/// state in memory, or starts a fresh journal when the old one was unreadable).
fn restore(
    path: &Path,
    options: Options,
    seed: u64,
    events: &broadcast::Sender<Event>,
) -> (ClientCore, Option<JournalFile>) {
    let now = Instant::from_millis(0);
    let epoch_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        });
    let report = |message: String| {
        // No receiver is not an error: nobody subscribed.
        let _ = events.send(Event::Error(Error::Storage(message)));
    };
    let fresh = |options| {
        ClientCore::restore(options, seed, now, epoch_ms, "")
            .unwrap_or_else(|_| unreachable!("an empty journal always reads"))
    };
    let (mut file, text) = match JournalFile::open(path) {
        Ok(opened) => opened,
        Err(error) => {
            report(format!("{}: {error}", path.display()));
            return (ClientCore::new(options, seed, now), None);
        }
    };
    match ClientCore::restore(options.clone(), seed, now, epoch_ms, &text) {
        Ok(core) => (core, Some(file)),
        Err(damage) => match file.set_aside() {
            Ok(aside) => {
                report(format!(
                    "{}: {damage}; moved to {}, starting afresh",
                    path.display(),
                    aside.display()
                ));
                (fresh(options), Some(file))
            }
            Err(error) => {
                report(format!("{}: {damage}; {error}", path.display()));
                (ClientCore::new(options, seed, now), None)
            }
        },
    }
}

/// A wsrelay client: reliable, acknowledged messaging over a WebSocket that reconnects by itself.
///
/// Cheap to clone: every clone is a handle to the same connection, usable from any task. The
/// connection lives in a background task that shuts down cleanly (a graceful close, in-flight
/// messages given `close_timeout` to be acknowledged) once the last handle is dropped. A handler
/// registered with [`on`](Self::on) that captures a clone of its own client keeps the client
/// alive: call [`close`](Self::close) explicitly then.
///
/// Must be created inside a tokio runtime.
#[derive(Clone)]
pub struct WebSocketClient {
    handle: Arc<Handle>,
}

/// The last clone of a [`WebSocketClient`] to go drops this, which shuts the driver down.
struct Handle {
    shared: Arc<Shared>,
}

/// What the handles and the driver task share.
///
/// Design: the core sits behind a `std::sync::Mutex` shared by the handles and the driver,
/// rather than living alone in the driver task behind a command channel. Every critical section
/// is a few non-blocking core calls (never held across an `.await`), and in exchange:
/// - commands answer synchronously, as in the browser: `post` returns its id or `queue_full`
///   at once, getters read the core's current state;
/// - a send's waiter is registered under the same lock that queues the message, so its
///   acknowledgement can never be processed before somebody waits for it;
/// - order is the order of the calls, from any number of tasks.
///
/// After changing the core, a handle calls `wake` so the driver drains the core's outputs (the
/// socket is the driver's alone).
pub(crate) struct Shared {
    state: Mutex<State>,
    wake: Notify,
    events: broadcast::Sender<Event>,
    handlers: RwLock<HashMap<String, ErasedHandler>>,
    /// Origin of the core's clock: core `Instant`s are milliseconds since this tokio instant,
    /// so a paused tokio clock (`start_paused` tests) drives the core too.
    start: tokio::time::Instant,
    /// Set when the last handle dropped: the driver exits once the core is closed.
    dropped: AtomicBool,
}

pub(crate) struct State {
    core: ClientCore,
    /// `send` futures waiting for their message's acknowledgement, by id.
    sends: Waiters<Result<(), Error>>,
    /// `request` futures waiting for their response, by id.
    requests: Waiters<Result<Option<String>, Error>>,
    /// `close()` calls waiting for the core to reach `Closed`.
    close_waiters: Vec<oneshot::Sender<()>>,
}

/// The waiters of each kind, as `fn` pointers for [`Outcome`].
impl State {
    fn sends(&mut self) -> &mut Waiters<Result<(), Error>> {
        &mut self.sends
    }

    fn requests(&mut self) -> &mut Waiters<Result<Option<String>, Error>> {
        &mut self.requests
    }
}

type HandlerFuture = Pin<Box<dyn Future<Output = Reply> + Send>>;
/// A handler with its payload type erased: called with the raw message, it decodes the
/// payload and runs the application's closure at once (its synchronous part), and returns the
/// rest as a future of the reply.
type ErasedHandler = Arc<dyn Fn(InboundMessage) -> HandlerFuture + Send + Sync>;

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock can only come from a core bug; the core's state is
        // still the best there is, so keep going rather than poisoning every handle.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn now(&self) -> Instant {
        let elapsed = self.start.elapsed().as_millis();
        Instant::from_millis(u64::try_from(elapsed).unwrap_or(u64::MAX))
    }

    fn emit(&self, event: Event) {
        // No receiver is not an error: nobody subscribed.
        let _ = self.events.send(event);
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        let shared = &self.shared;
        shared.dropped.store(true, Ordering::SeqCst);
        let now = shared.now();
        shared.lock().core.close(now, 1000, "client dropped");
        shared.wake.notify_one();
    }
}

impl fmt::Debug for WebSocketClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.handle.shared.lock();
        f.debug_struct("WebSocketClient")
            .field("ready_state", &state.core.ready_state())
            .field("queued", &state.core.queued())
            .finish_non_exhaustive()
    }
}

/// JSON text of a payload; a value serde cannot write as JSON is an invalid payload.
fn encode(payload: &impl Serialize) -> Result<String, Error> {
    serde_json::to_string(payload).map_err(|_| Error::InvalidPayload)
}

fn decode<R: DeserializeOwned>(payload: Option<&str>) -> Result<R, Error> {
    serde_json::from_str(payload.unwrap_or("null"))
        .map_err(|error| Error::Decode(format!("response payload: {error}")))
}

impl WebSocketClient {
    /// A client with default options for `url`, identified by `source` (added to the URL as
    /// the `source` query parameter). Connects in the background.
    pub fn new(url: impl Into<String>, source: impl Into<String>) -> Result<Self, Error> {
        Self::builder(url, source).build()
    }

    /// A builder to set options before connecting.
    pub fn builder(url: impl Into<String>, source: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            url: url.into(),
            source: source.into(),
            options: Options::default(),
            seed: None,
            events: broadcast::channel(EVENT_CAPACITY).0,
            token: None,
            persist: None,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    fn shared(&self) -> &Shared {
        &self.handle.shared
    }

    /// Runs `f` on the core under the lock, then wakes the driver to carry out its outputs.
    fn command<R>(&self, f: impl FnOnce(&mut State, Instant) -> R) -> R {
        let shared = self.shared();
        let now = shared.now();
        let result = f(&mut shared.lock(), now);
        shared.wake.notify_one();
        result
    }

    /// Sends a message to every other client (through the server) and resolves once the server
    /// has acknowledged it: `Ok` means the server has it, exactly once.
    ///
    /// The message is queued when `send` is called, not when the future is first polled, so
    /// calls keep their order; dropping the future does not cancel the message. Fails with the
    /// core's error: [`Error::QueueFull`], [`Error::TooLarge`], [`Error::InvalidPayload`],
    /// [`Error::Closed`], [`Error::Rejected`], [`Error::RetriesExhausted`], or the server's
    /// [`Error::Remote`] report (e.g. `unknown_target`).
    pub fn send(
        &self,
        kind: &str,
        payload: impl Serialize,
    ) -> impl Future<Output = Result<(), Error>> + Send + 'static {
        self.send_with(kind, payload, SendOptions::default())
    }

    /// [`send`](Self::send) to one client only.
    pub fn send_to(
        &self,
        to: &str,
        kind: &str,
        payload: impl Serialize,
    ) -> impl Future<Output = Result<(), Error>> + Send + 'static {
        self.send_with(kind, payload, SendOptions::to(to))
    }

    /// [`send`](Self::send) with options (`to`, `ttl`).
    pub fn send_with(
        &self,
        kind: &str,
        payload: impl Serialize,
        options: SendOptions,
    ) -> impl Future<Output = Result<(), Error>> + Send + 'static {
        let queued = encode(&payload).and_then(|payload| {
            self.command(|state, now| {
                let id = state.core.send(now, options.outgoing(kind, &payload))?;
                state.sends.register(id);
                Ok(id)
            })
        });
        let outcome =
            queued.map(|id| Outcome::new(Arc::clone(&self.handle.shared), id, State::sends));
        async move { outcome?.await }
    }

    /// [`send`](Self::send) to the other members of `room`; fails with [`Error::Remote`]
    /// code `not_member` unless this client has [joined](Self::join) it.
    pub fn send_to_room(
        &self,
        room: &str,
        kind: &str,
        payload: impl Serialize,
    ) -> impl Future<Output = Result<(), Error>> + Send + 'static {
        self.send_with(kind, payload, SendOptions::room(room))
    }

    /// Joins `room`: resolves once the server has made this client's session a member, from
    /// when on it receives what is sent to the room. Membership belongs to the session: it is
    /// kept across reconnections, and gone when the session is lost
    /// ([`Event::SessionLost`]): join again then. Fails
    /// with [`Error::Remote`] code `forbidden` when the client's credentials do not allow
    /// the room.
    pub fn join(&self, room: &str) -> impl Future<Output = Result<(), Error>> + Send + 'static {
        let room = RoomName { room: room.into() };
        self.request::<()>(JOIN, room, Option::<Duration>::None)
    }

    /// Leaves `room`: resolves once the server has it (nothing sent to the room after that
    /// reaches this client).
    pub fn leave(&self, room: &str) -> impl Future<Output = Result<(), Error>> + Send + 'static {
        let room = RoomName { room: room.into() };
        self.request::<()>(LEAVE, room, Option::<Duration>::None)
    }

    /// Sends without waiting: returns the message id at once (or the reason it was refused).
    /// Its outcome arrives on [`subscribe`](Self::subscribe) as [`Event::Delivered`] or
    /// [`Event::Failed`] with that id.
    pub fn post(&self, kind: &str, payload: impl Serialize) -> Result<u64, Error> {
        self.post_with(kind, payload, SendOptions::default())
    }

    /// [`post`](Self::post) with options (`to`, `ttl`).
    pub fn post_with(
        &self,
        kind: &str,
        payload: impl Serialize,
        options: SendOptions,
    ) -> Result<u64, Error> {
        let payload = encode(&payload)?;
        self.command(|state, now| state.core.send(now, options.outgoing(kind, &payload)))
    }

    /// Sends a request and resolves with the response's payload, deserialized.
    ///
    /// The timeout (default: the client's `request_timeout`) runs from the call, queueing
    /// included; then it fails with [`Error::Timeout`]. A responder's error arrives as
    /// [`Error::Remote`] (code `handler_error` for a failed handler); a payload that does not
    /// deserialize into `R` as [`Error::Decode`].
    pub fn request<R: DeserializeOwned>(
        &self,
        kind: &str,
        payload: impl Serialize,
        timeout: impl Into<Option<Duration>>,
    ) -> impl Future<Output = Result<R, Error>> + Send + 'static {
        let options = SendOptions {
            timeout: timeout.into(),
            ..SendOptions::default()
        };
        self.request_with(kind, payload, options)
    }

    /// [`request`](Self::request) answered by one client only. A client with no handler for
    /// `kind` answers at once with [`Error::Remote`] code `no_handler`.
    pub fn request_to<R: DeserializeOwned>(
        &self,
        to: &str,
        kind: &str,
        payload: impl Serialize,
        timeout: impl Into<Option<Duration>>,
    ) -> impl Future<Output = Result<R, Error>> + Send + 'static {
        let options = SendOptions {
            timeout: timeout.into(),
            ..SendOptions::to(to)
        };
        self.request_with(kind, payload, options)
    }

    /// [`request`](Self::request) with options (`to`, `ttl`, `timeout`).
    pub fn request_with<R: DeserializeOwned>(
        &self,
        kind: &str,
        payload: impl Serialize,
        options: SendOptions,
    ) -> impl Future<Output = Result<R, Error>> + Send + 'static {
        let queued = encode(&payload).and_then(|payload| {
            self.command(|state, now| {
                let message = options.outgoing(kind, &payload);
                let id = state.core.request(now, message, options.timeout)?;
                state.requests.register(id);
                Ok(id)
            })
        });
        let outcome =
            queued.map(|id| Outcome::new(Arc::clone(&self.handle.shared), id, State::requests));
        async move {
            let payload = outcome?.await?;
            decode(payload.as_deref())
        }
    }

    /// Registers the handler of messages of type `kind`, replacing any previous one (one
    /// handler per type, in every driver).
    ///
    /// The payload is deserialized into `T` (use `serde_json::Value` for anything). Handlers
    /// are called one at a time in arrival order, so messages from one sender reach them in the
    /// order sent; the future a handler returns then runs on its own task, concurrently with
    /// later messages (work that must stay in order belongs before the `async` block). What
    /// the future resolves to ([`IntoReply`]: `()`/`None` nothing, `Some(value)` a payload,
    /// `Err(error)` a `handler_error`) is carried out by the core
    /// ([`ClientCore::answer`](crate::client::ClientCore::answer)): sent back when the message
    /// has an id, reported as [`Error::Unanswerable`] on [`subscribe`](Self::subscribe) when it
    /// has none. A failure (an `Err`, a panic, a payload that does not deserialize into `T`)
    /// is answered with `handler_error` and reported as [`Error::Handler`]; it never stops
    /// the client. Responses (frames answering one of ours) never reach handlers.
    pub fn on<T, F, Fut>(&self, kind: impl Into<String>, handler: F)
    where
        T: DeserializeOwned + Send + 'static,
        F: Fn(Incoming<T>) -> Fut + Send + Sync + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: IntoReply,
    {
        let erased: ErasedHandler = Arc::new(move |message: InboundMessage| -> HandlerFuture {
            let text = message.payload.as_deref().unwrap_or("null");
            match serde_json::from_str::<T>(text) {
                Ok(payload) => {
                    let future = handler(Incoming {
                        kind: message.kind,
                        source: message.source,
                        id: message.id,
                        room: message.room,
                        payload,
                    });
                    Box::pin(async move { future.await.into_reply() })
                }
                Err(error) => {
                    let reply = Reply::error(
                        "handler_error",
                        format!("payload does not match the handler's type: {error}"),
                    );
                    Box::pin(std::future::ready(reply))
                }
            }
        });
        let kind = kind.into();
        let shared = self.shared();
        shared.lock().core.set_handled(&kind, true);
        shared
            .handlers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(kind, erased);
    }

    /// Removes the handler of `kind`: such messages are then ignored, and requests of that
    /// type are answered `no_handler`.
    pub fn off(&self, kind: &str) {
        let shared = self.shared();
        shared.lock().core.set_handled(kind, false);
        shared
            .handlers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(kind);
    }

    /// A receiver of the client's events from now on: the core's [`Event`]s that nobody else
    /// takes (open, close, reconnecting, errors, responses nobody awaits, and the outcomes of
    /// [`post`](Self::post)ed messages and handler answers). `Message` and `Reply` never arrive
    /// here: they go to the handlers and to the request futures. To see the first `Open` for
    /// sure, subscribe on the builder ([`ClientBuilder::subscribe`]). A refused HTTP upgrade
    /// closes with 4401, 4403 or 4409 for 401, 403 or 409 (`PROTOCOL.md` section 9). A
    /// receiver that falls more than 1024 events behind gets `RecvError::Lagged` and misses
    /// the oldest.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.shared().events.subscribe()
    }

    /// Closes gracefully with 1000: no new messages are accepted, messages in flight get up to
    /// `close_timeout` to be acknowledged, then the connection closes; whatever is still
    /// unacknowledged fails with [`Error::Closed`], as do pending requests. Resolves once the
    /// client is closed. [`reconnect`](Self::reconnect) starts it again.
    pub async fn close(&self) {
        self.close_with(1000, "").await
    }

    /// [`close`](Self::close) with a code (1000 or 3000-4999) and reason.
    pub async fn close_with(&self, code: u16, reason: &str) {
        let (tx, rx) = oneshot::channel();
        self.command(|state, now| {
            state.core.close(now, code, reason);
            // Once the driver is gone nobody would answer: dropping `tx` resolves `rx` now.
            if !state.sends.is_closed() {
                state.close_waiters.push(tx);
            }
        });
        // An error means the driver is gone: nothing can be open any more.
        let _ = rx.await;
    }

    /// Connects now: from closed (or `start_closed`), or replacing the current connection. The
    /// retry count starts again from zero.
    pub fn reconnect(&self) {
        self.command(|state, now| state.core.reconnect(now));
    }

    /// The connection state, as `WebSocket.readyState` names it.
    pub fn ready_state(&self) -> ReadyState {
        self.shared().lock().core.ready_state()
    }

    /// Messages waiting to be sent or acknowledged.
    pub fn queued(&self) -> usize {
        self.shared().lock().core.queued()
    }

    /// Failed attempts since the last connection that stayed up `min_uptime`.
    pub fn retry_count(&self) -> u32 {
        self.shared().lock().core.retry_count()
    }

    /// The session token this client resumes its session with.
    pub fn session(&self) -> String {
        self.shared().lock().core.session().to_owned()
    }

    /// Round-trip times, reconnects, retransmissions, the queue and message outcomes so far.
    pub fn stats(&self) -> Stats {
        self.shared().lock().core.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_is_a_send_sync_handle() {
        fn assert_handle<T: Clone + Send + Sync + 'static>() {}
        assert_handle::<WebSocketClient>();
    }
}
