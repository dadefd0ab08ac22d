//! The wsrelay server for Node.js: the server library (`wsrelay-server`) as a Node-API addon,
//! built with napi-rs into the npm package `wsrelay-server` (`cargo xtask pkg`, into
//! `pkg-server/`).
//!
//! This crate is the native half, [`NativeServer`]; the JavaScript half (`js/index.js`) is the
//! API users meet, the original design's `WebSocketServer`: it checks arguments, keeps the
//! handlers and listeners, turns payloads into JSON text and back, and makes Promises.
//!
//! Threads: the server runs on a tokio runtime of its own threads ([`runtime`]). Handlers and
//! events reach JavaScript through one thread-safe function per server, several records per
//! wake-up of the event loop ([`bridge`]). JavaScript calls in with the methods below, on its
//! own thread: `sendTo` and `broadcast` on the in-memory engine finish there and then (no
//! thread hop, no Promise made natively); what has to wait (Redis, a request, `close`) runs on
//! the runtime and its outcome comes back as a record of a later batch, by operation number.
//! Sends keep their call order either way ([`Sends`]).
//!
//! While the server is open, its thread-safe function holds the event loop open, as a
//! listening `net.Server` does; `close()` releases it, and then nothing of the server keeps
//! the process alive.

mod bridge;
mod options;

use std::fmt::Write as _;
use std::future::Future;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use napi::bindgen_prelude::{Function, Unknown};
use napi::threadsafe_function::ThreadsafeCallContext;
use napi::Error;
use napi_derive::napi;
use serde_json::value::RawValue;
use tokio::runtime::Runtime;
use tokio::sync::mpsc;
use wsrelay_server::{
    ClientInfo, DisconnectReason, Incoming, JwtAuth, RequestError, Response, SendError,
    ShutdownCode, WebSocketServer,
};

use bridge::{push_json_option, push_json_string, Bridge};
pub use options::NativeOptions;

/// A failure JavaScript sees as an `Error` whose `code` is the string.
type Failure = Error<String>;

fn failure(code: &str, message: impl Into<String>) -> Failure {
    Error::new(code.to_owned(), message.into())
}

/// The runtime every server of the process runs on: tokio's multi-thread scheduler, one worker
/// per core this process may use. Made by the first server.
pub fn runtime() -> Result<&'static Runtime, String> {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    if let Some(runtime) = RUNTIME.get() {
        return Ok(runtime);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("wsrelay-server")
        .build()
        .map_err(|error| format!("cannot start the server's threads: {error}"))?;
    // A race with another thread's first server keeps one of the two.
    Ok(RUNTIME.get_or_init(|| runtime))
}

/// Logs of the server library on stderr, at `level` (`warn` when `None`; `RUST_LOG` replaces
/// it), as text or JSON: set by the first server of the process.
fn init_logs(level: Option<&str>, json: bool) {
    let level = level.unwrap_or("warn");
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::try_new(format!(
            "warn,wsrelay_server={level},wsrelay_core={level}"
        ))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"))
    });
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    // Already set (by an earlier server): kept.
    let _ = if json {
        logs.json().try_init()
    } else {
        logs.try_init()
    };
}

/// Polls `future` once, in the runtime's context: its output, or the future to run on.
fn poll_once<F: Future>(runtime: &Runtime, future: F) -> Result<F::Output, std::pin::Pin<Box<F>>> {
    let _context = runtime.enter();
    let mut future = Box::pin(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => Ok(output),
        Poll::Pending => Err(future),
    }
}

/// The code and message of a failed send.
fn send_failure(error: &SendError) -> (&'static str, String) {
    let code = match error {
        SendError::UnknownTarget => "unknown_target",
        SendError::Overflow => "overflow",
        SendError::Payload(_) => "invalid_payload",
        SendError::Unavailable(_) => "unavailable",
        SendError::InvalidRoom(_) => "invalid_room",
        _ => "failed",
    };
    (code, error.to_string())
}

/// A record of the outcome of operation `op`: its value (JSON text) or its failure.
fn done(out: &mut String, op: u32, outcome: Result<&str, (&str, &str)>) {
    match outcome {
        Ok(value) => {
            let _ = write!(out, "1,{op},{value}");
        }
        Err((code, message)) => {
            let _ = write!(out, "2,{op},");
            push_json_string(out, code);
            out.push(',');
            push_json_string(out, message);
        }
    }
}

/// Payload text from JavaScript (`JSON.stringify`'s output).
fn payload(text: String) -> Result<Box<RawValue>, Failure> {
    RawValue::from_string(text)
        .map_err(|error| failure("invalid_payload", format!("payload is not JSON: {error}")))
}

/// The native half of `WebSocketServer`: one running server.
#[napi]
pub struct NativeServer {
    server: WebSocketServer,
    bridge: Arc<Bridge>,
    runtime: &'static Runtime,
    sends: Sends,
}

/// A send waiting for the ones before it.
type QueuedSend = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// The server's own sends that could not finish at once, carried out one after the other by
/// one task: `sendTo` and `broadcast` reach clients in the order JavaScript called them, also
/// when each takes a round trip to Redis.
struct Sends {
    /// Sends queued and not finished: while there is one, a new send queues behind it.
    outstanding: Arc<AtomicUsize>,
    queue: mpsc::UnboundedSender<QueuedSend>,
}

impl Sends {
    fn start(runtime: &Runtime) -> Sends {
        let (queue, mut queued) = mpsc::unbounded_channel::<QueuedSend>();
        runtime.spawn(async move {
            while let Some(send) = queued.recv().await {
                send.await;
            }
        });
        Sends {
            outstanding: Arc::default(),
            queue,
        }
    }
}

/// The server's counters (`server.stats()`).
#[napi(object)]
pub struct NativeStats {
    /// Clients connected now.
    pub connected: u32,
    /// Sessions kept for a resume after their client disconnected.
    pub parked_sessions: u32,
    /// Upgrades accepted since start.
    pub accepted: f64,
    /// Upgrades refused.
    pub rejected: f64,
    /// Clients closed for staying behind too long (1013).
    pub slow_consumers: f64,
    /// Times a client's message waited for a recipient that was behind.
    pub blocked: f64,
    /// Connections dropped for not answering pings.
    pub stale: f64,
    /// Invalid frames answered with `~error`.
    pub invalid_frames: f64,
    /// Whether the engine's store answers (Redis).
    pub engine_reachable: bool,
    /// Handler calls waiting for the JavaScript thread now.
    pub queued_calls: u32,
    /// Handler calls JavaScript has taken and not answered yet.
    pub unanswered_calls: u32,
}

#[napi]
impl NativeServer {
    /// Binds and starts the server. `dispatch` takes every batch (see `bridge`).
    #[napi(constructor)]
    pub fn new(
        options: NativeOptions,
        dispatch: Function<String, Unknown<'static>>,
    ) -> Result<Self, Failure> {
        init_logs(
            options.log_level.as_deref(),
            options.log_format.as_deref() == Some("json"),
        );
        let settings = options
            .settings()
            .map_err(|invalid| failure("invalid_option", invalid.0))?;
        let runtime = runtime().map_err(|message| failure("failed", message))?;
        let bridge = Bridge::new(settings.handler_timeout);
        let taker = Arc::clone(&bridge);
        let dispatch = dispatch
            .build_threadsafe_function::<()>()
            .callee_handled::<false>()
            .build_callback(move |_: ThreadsafeCallContext<()>| Ok(taker.take()))
            .map_err(|error| failure("failed", error.to_string()))?;
        bridge.connect(dispatch);
        let mut builder = WebSocketServer::builder(settings.config);
        if let Some(secret) = settings.auth_secret {
            let auth = JwtAuth::hs256(secret);
            builder = builder.authenticate(move |request| auth.verify(request));
        }
        let connected = Arc::clone(&bridge);
        let disconnected = Arc::clone(&bridge);
        let answered = Arc::clone(&bridge);
        builder = builder
            .on_connect(move |info: &ClientInfo| {
                let address = info.addr.map(|addr| addr.to_string());
                connected.push(|out| {
                    out.push_str("3,");
                    push_json_string(out, &info.source);
                    out.push(',');
                    push_json_option(out, address.as_deref());
                });
            })
            .on_disconnect(move |info: &ClientInfo, reason: &DisconnectReason| {
                let code = match reason {
                    DisconnectReason::Closed(Some(code)) => code.to_string(),
                    _ => "null".to_owned(),
                };
                disconnected.push(|out| {
                    out.push_str("4,");
                    push_json_string(out, &info.source);
                    out.push(',');
                    push_json_string(out, reason.kind());
                    out.push(',');
                    out.push_str(&code);
                });
            })
            .on_response(move |response: &Response| {
                answered.push(|out| match &response.result {
                    Ok(payload) => {
                        out.push_str("5,");
                        push_json_string(out, &response.source);
                        out.push(',');
                        push_json_string(out, &response.kind);
                        out.push(',');
                        out.push_str(payload.as_deref().unwrap_or("null"));
                    }
                    Err(error) => {
                        out.push_str("6,");
                        push_json_string(out, &response.source);
                        out.push(',');
                        push_json_string(out, &response.kind);
                        out.push(',');
                        push_json_string(out, &error.code);
                        out.push(',');
                        push_json_string(out, &error.message);
                    }
                });
            });
        let addr = (settings.host.clone(), settings.port);
        let server = match runtime.block_on(builder.bind(addr)) {
            Ok(server) => server,
            Err(error) => {
                // Nothing will be dispatched: let go of the event loop.
                bridge.close();
                let code = match error.kind() {
                    std::io::ErrorKind::AddrInUse => "EADDRINUSE",
                    std::io::ErrorKind::AddrNotAvailable => "EADDRNOTAVAIL",
                    std::io::ErrorKind::PermissionDenied => "EACCES",
                    std::io::ErrorKind::InvalidInput => "invalid_option",
                    _ => "failed",
                };
                return Err(failure(
                    code,
                    format!(
                        "cannot listen on {}:{}: {error}",
                        settings.host, settings.port
                    ),
                ));
            }
        };
        Ok(NativeServer {
            server,
            bridge,
            runtime,
            sends: Sends::start(runtime),
        })
    }

    /// The port the server listens on (the real one when asked for 0).
    #[napi(getter)]
    pub fn port(&self) -> u32 {
        u32::from(self.server.local_addr().port())
    }

    /// The address the server listens on.
    #[napi(getter)]
    pub fn host(&self) -> String {
        self.server.local_addr().ip().to_string()
    }

    /// Whether the server serves `wss://`.
    #[napi(getter)]
    pub fn tls(&self) -> bool {
        self.server.config().tls.is_some()
    }

    /// Sends messages of type `kind` to the JavaScript handler from now on (they are no
    /// longer relayed).
    #[napi]
    pub fn handle(&self, kind: String) {
        let bridge = Arc::clone(&self.bridge);
        let name = kind.clone();
        // Written for JavaScript as the server makes the call (in arrival order), awaited in
        // the connection's turn (see `bridge`).
        self.server
            .on(&kind, move |message: Incoming<Box<RawValue>>| {
                bridge.call(&name, &message.source, &message.payload)
            });
    }

    /// Stops calling JavaScript for `kind`; whether it had a handler.
    #[napi]
    pub fn unhandle(&self, kind: String) -> bool {
        self.server.off(&kind)
    }

    /// `sendTo`: `true` when done now; `null` when operation `op` finishes later.
    #[napi]
    pub fn send_to(
        &self,
        source: String,
        kind: String,
        payload_json: String,
        op: u32,
    ) -> Result<Option<bool>, Failure> {
        let payload = payload(payload_json)?;
        let server = self.server.clone();
        let sending = async move { server.send_to(&source, &kind, &*payload).await };
        self.send(op, sending, |()| "null".to_owned())
            .map(|done| done.map(|()| true))
    }

    /// `broadcast`: the number of recipients when done now; `null` when operation `op`
    /// finishes later.
    #[napi]
    pub fn broadcast(
        &self,
        kind: String,
        payload_json: String,
        exclude: Option<String>,
        op: u32,
    ) -> Result<Option<u32>, Failure> {
        let payload = payload(payload_json)?;
        let server = self.server.clone();
        let sending = async move {
            let recipients = server
                .broadcast(&kind, &*payload, exclude.as_deref())
                .await?;
            Ok(u32::try_from(recipients).unwrap_or(u32::MAX))
        };
        self.send(op, sending, |recipients| recipients.to_string())
    }

    /// `join`: `true` when done now; `null` when operation `op` finishes later.
    #[napi]
    pub fn join(&self, source: String, room: String, op: u32) -> Result<Option<bool>, Failure> {
        let server = self.server.clone();
        let joining = async move { server.join(&source, &room).await };
        self.send(op, joining, |()| "null".to_owned())
            .map(|done| done.map(|()| true))
    }

    /// `leave`: whether the client was a member, when done now; `null` when operation `op`
    /// finishes later.
    #[napi]
    pub fn leave(&self, source: String, room: String, op: u32) -> Result<Option<bool>, Failure> {
        let server = self.server.clone();
        let leaving = async move { server.leave(&source, &room).await };
        self.send(op, leaving, |was| was.to_string())
    }

    /// `broadcastTo`: the number of recipients when done now; `null` when operation `op`
    /// finishes later.
    #[napi]
    pub fn broadcast_to(
        &self,
        room: String,
        kind: String,
        payload_json: String,
        exclude: Option<String>,
        op: u32,
    ) -> Result<Option<u32>, Failure> {
        let payload = payload(payload_json)?;
        let server = self.server.clone();
        let sending = async move {
            let recipients = server
                .broadcast_to(&room, &kind, &*payload, exclude.as_deref())
                .await?;
            Ok(u32::try_from(recipients).unwrap_or(u32::MAX))
        };
        self.send(op, sending, |recipients| recipients.to_string())
    }

    /// `members`: the members of `room` connected now, when known at once; `null` when
    /// operation `op` finishes later.
    #[napi]
    pub fn members(&self, room: String, op: u32) -> Result<Option<Vec<String>>, Failure> {
        let server = self.server.clone();
        let listing = async move { server.members(&room).await };
        self.send(op, listing, |members| {
            let mut list = String::from("[");
            for (index, source) in members.iter().enumerate() {
                if index > 0 {
                    list.push(',');
                }
                push_json_string(&mut list, source);
            }
            list.push(']');
            list
        })
    }

    /// `request`: finishes later, as operation `op`, with the response's payload.
    #[napi]
    pub fn request(
        &self,
        source: String,
        kind: String,
        payload_json: String,
        timeout_ms: f64,
        op: u32,
    ) -> Result<(), Failure> {
        let payload = payload(payload_json)?;
        if !(timeout_ms.is_finite() && timeout_ms >= 0.0) {
            return Err(failure("invalid_option", "timeout must be >= 0 ms"));
        }
        let timeout = Duration::from_millis(timeout_ms.min(1e12) as u64);
        let server = self.server.clone();
        let bridge = Arc::clone(&self.bridge);
        let requesting = async move {
            let outcome = server
                .request::<RawValue, Box<RawValue>>(&source, &kind, &payload, timeout)
                .await;
            bridge.push(|out| match &outcome {
                Ok(response) => done(out, op, Ok(response.get())),
                Err(RequestError::Timeout) => done(
                    out,
                    op,
                    Err(("timeout", &format!("no response from {source} in time"))),
                ),
                Err(RequestError::Remote(error)) => {
                    done(out, op, Err((&error.code, &error.message)));
                }
                Err(RequestError::Send(error)) => {
                    let (code, message) = send_failure(error);
                    done(out, op, Err((code, &message)));
                }
                Err(RequestError::Closed) => {
                    done(out, op, Err(("closed", "the server closed")));
                }
                Err(error) => done(out, op, Err(("failed", &error.to_string()))),
            });
        };
        // The request goes out now, in call order among the sends, when nothing sent before
        // it is under way and the engine takes it at once; then its answer is awaited on the
        // runtime.
        if self.sends.outstanding.load(Ordering::Acquire) == 0 {
            if let Err(waiting) = poll_once(self.runtime, requesting) {
                self.runtime.spawn(waiting);
            }
        } else {
            self.runtime.spawn(requesting);
        }
        Ok(())
    }

    /// `clients`: the sources connected now, when known at once; `undefined` when operation
    /// `op` finishes later (Redis).
    #[napi]
    pub fn clients(&self, op: u32) -> Result<Option<Vec<String>>, Failure> {
        let server = self.server.clone();
        let listing = async move { server.clients().await };
        match poll_once(self.runtime, listing) {
            Ok(Ok(clients)) => Ok(Some(clients)),
            Ok(Err(error)) => Err(failure("unavailable", error.to_string())),
            Err(listing) => {
                let bridge = Arc::clone(&self.bridge);
                self.runtime.spawn(async move {
                    let outcome = listing.await;
                    bridge.push(|out| match &outcome {
                        Ok(clients) => {
                            let mut list = String::from("[");
                            for (index, source) in clients.iter().enumerate() {
                                if index > 0 {
                                    list.push(',');
                                }
                                push_json_string(&mut list, source);
                            }
                            list.push(']');
                            done(out, op, Ok(&list));
                        }
                        Err(error) => done(out, op, Err(("unavailable", &error.to_string()))),
                    });
                });
                Ok(None)
            }
        }
    }

    /// The answers of handler calls (see `bridge`).
    #[napi]
    pub fn settle(&self, answers: String) -> Result<(), Failure> {
        self.bridge
            .settle(&answers)
            .map_err(|message| failure("invalid_answer", message))
    }

    /// The server's counters.
    #[napi]
    pub fn stats(&self) -> NativeStats {
        let stats = self.server.stats();
        let small = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        NativeStats {
            connected: small(stats.connected),
            parked_sessions: small(stats.parked_sessions),
            accepted: stats.accepted as f64,
            rejected: stats.rejected as f64,
            slow_consumers: stats.slow_consumers as f64,
            blocked: stats.blocked as f64,
            stale: stats.stale as f64,
            invalid_frames: stats.invalid_frames as f64,
            engine_reachable: stats.engine_reachable,
            queued_calls: small(self.bridge.queued_calls()),
            unanswered_calls: small(self.bridge.unanswered_calls()),
        }
    }

    /// Closes gracefully (1001, or 1012 with `restart`), as operation `op`; then the last
    /// batch says so and the event loop is let go.
    #[napi]
    pub fn close(&self, restart: bool, op: u32) {
        let server = self.server.clone();
        let bridge = Arc::clone(&self.bridge);
        let code = if restart {
            ShutdownCode::Restart
        } else {
            ShutdownCode::GoingAway
        };
        self.runtime.spawn(async move {
            server.close_with(code).await;
            bridge.push(|out| done(out, op, Ok("null")));
            bridge.close();
        });
    }
}

impl NativeServer {
    /// Carries out one of the server's own sends in call order: at once when nothing sent
    /// before it is still under way and it completes without waiting (the in-memory engine),
    /// returning its value; otherwise behind the sends under way, on the runtime, its outcome
    /// (`value` as JSON text) a record of a later batch for operation `op`.
    fn send<T, F>(&self, op: u32, sending: F, value: fn(T) -> String) -> Result<Option<T>, Failure>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, SendError>> + Send + 'static,
    {
        let sending = if self.sends.outstanding.load(Ordering::Acquire) == 0 {
            match poll_once(self.runtime, sending) {
                Ok(Ok(done)) => return Ok(Some(done)),
                Ok(Err(error)) => {
                    let (code, message) = send_failure(&error);
                    return Err(failure(code, message));
                }
                Err(under_way) => under_way,
            }
        } else {
            Box::pin(sending)
        };
        self.sends.outstanding.fetch_add(1, Ordering::AcqRel);
        let bridge = Arc::clone(&self.bridge);
        let outstanding = Arc::clone(&self.sends.outstanding);
        let queued = self.sends.queue.send(Box::pin(async move {
            let outcome = sending.await;
            // Before the outcome is told: a send JavaScript makes on hearing it may go at once.
            outstanding.fetch_sub(1, Ordering::AcqRel);
            bridge.push(|out| match outcome {
                Ok(done) => self::done(out, op, Ok(&value(done))),
                Err(error) => {
                    let (code, message) = send_failure(&error);
                    self::done(out, op, Err((code, &message)));
                }
            });
        }));
        if queued.is_err() {
            return Err(failure("closed", "the server's threads are gone"));
        }
        Ok(None)
    }
}

impl Drop for NativeServer {
    fn drop(&mut self) {
        // Collected without `close()` (only possible once closed or never started): nothing
        // more goes to JavaScript.
        if self.bridge.is_open() {
            self.bridge.close();
        }
    }
}
