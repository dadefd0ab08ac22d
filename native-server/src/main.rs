//! `wsrelay-server`: a ready relay, optionally serving static files on the same port.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use tracing_subscriber::EnvFilter;
use wsrelay_server::{
    size_to_open_files, JwtAuth, OnDuplicate, RateLimit, RoomRetention, ServerConfig,
    WebSocketServer,
};

/// The relay's allocator: jemalloc, set to give memory back to the system soon after a
/// burst (see [`allocator`]).
#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// What the relay asks of its allocator: memory that a burst used and freed goes back to the
/// system within seconds, rather than stay resident until the next burst.
///
/// Measured with `tests/heap_after_burst.rs` (a burst of 50 000 broadcasts to 99 clients, which
/// then all leave; release build): under glibc's malloc the relay stayed 11 to 13 MiB above
/// its level before the burst, 10 s after it, with only 0.4 MiB of that still allocated
/// (glibc's `malloc_stats`; the engine's drained mailboxes had given back their room). The rest was free memory in the malloc arenas of tokio's worker
/// threads: glibc gives back only the top of a heap, and raises its thresholds once large
/// blocks have been freed, so a few blocks still in use pin what was freed below them; only
/// an explicit `malloc_trim`, which would need `unsafe`, gives it back. mimalloc (v2 and v3)
/// kept more still (40 to 120 MiB): it purges when the thread that freed allocates again, and
/// the worker threads of an idle relay do not. jemalloc purges on a timer of its own
/// (background threads), and `tikv-jemalloc-ctl` sets it up without `unsafe`: the relay is
/// back at its level before the burst, at 8 MiB (1 MiB more than under glibc when idle).
#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
mod allocator {
    use tikv_jemalloc_ctl::{arenas, background_thread, max_background_threads, Access, AsName};

    /// How long freed pages stay resident, unused, before jemalloc gives them back. Its own
    /// default, 10 s, gives back what a burst freed gradually over those 10 s; pages reused
    /// within the decay are not given back and faulted in again.
    const DECAY_MS: isize = 1000;

    /// Purges freed pages on a timer, after [`DECAY_MS`], in every arena. Without background
    /// threads jemalloc purges only as the arena's threads allocate, and the worker threads of
    /// an idle relay keep the burst's memory.
    pub(crate) fn give_memory_back() -> Result<(), tikv_jemalloc_ctl::Error> {
        // Arenas made from now on (one per thread, as threads start: up to four per core)...
        b"arenas.dirty_decay_ms\0".name().write(DECAY_MS)?;
        // ...and those made already. An arena not made yet refuses, and gets the default
        // above when it is made.
        for arena in 0..arenas::narenas::read()? {
            let _ = format!("arena.{arena}.dirty_decay_ms\0")
                .name()
                .write(DECAY_MS);
        }
        // One thread purges every arena: it wakes only when there is something to purge.
        max_background_threads::write(1)?;
        background_thread::write(true)
    }

    /// Turns off the calling thread's cache of freed blocks (its tcache). A thread keeps up to
    /// a few MiB of blocks it freed, for its next allocations, and gives them back to the
    /// arenas only as it allocates again: after a burst, the idle worker threads kept 2 MiB
    /// that way. Every allocation then goes to the thread's arena (threads are spread over
    /// four arenas per core); the relay allocates little per message (a broadcast's frame is
    /// shared, its buffers are pooled), and its CPU time for the burst was the same with the
    /// cache and without it (1.1 to 1.3 s, release build).
    pub(crate) fn no_thread_cache() {
        if let Err(error) = b"thread.tcache.enabled\0".name().write(false) {
            tracing::debug!(%error, "cannot turn off the thread's allocation cache");
        }
    }
}

/// The wsrelay relay server.
///
/// Clients connect to ws://HOST:PORT/ANY/PATH?source=ID (wss:// with --tls-cert). A message
/// with `to` goes to that client only; any other is broadcast to every other client, with
/// `source` set by the server. Joins and leaves are announced as `relay:presence` messages; a
/// `relay:clients` request is answered with the sources online. GET /healthz, /readyz and
/// /metrics (Prometheus) answer on the same port. Every option can also be set from the
/// environment variable shown with it.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Port to listen on (0 picks a free one).
    #[arg(long, env = "WSRELAY_PORT", default_value_t = 8080)]
    port: u16,
    /// Address to listen on (0.0.0.0 for every interface).
    #[arg(long, env = "WSRELAY_HOST", default_value = "127.0.0.1")]
    host: String,
    /// Serve the files of this directory over HTTP on the same port.
    #[arg(long, env = "WSRELAY_WWW")]
    www: Option<PathBuf>,
    /// Seconds between WebSocket pings (a client silent until the next one is dropped).
    #[arg(long, env = "WSRELAY_PING_INTERVAL", default_value_t = 30)]
    ping_interval: u64,
    /// Most clients connected at once; beyond it upgrades get 503 with Retry-After. Default
    /// 10000, or what the open-file limit allows (with a warning).
    #[arg(long, env = "WSRELAY_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Most clients connected at once from one IP address; beyond it upgrades get 429 (behind
    /// a reverse proxy every client has the proxy's address).
    #[arg(long, env = "WSRELAY_MAX_CONNECTIONS_PER_IP")]
    max_connections_per_ip: Option<usize>,
    /// Most connections not upgraded yet (HTTP requests, TLS handshakes); at the bound the
    /// relay accepts nothing more until one ends. Default 1024, or what the open-file limit
    /// allows (with a warning).
    #[arg(long, env = "WSRELAY_MAX_PENDING_CONNECTIONS")]
    max_pending_connections: Option<usize>,
    /// Most connections not upgraded yet from one IP address; one more is closed at once.
    #[arg(long, env = "WSRELAY_MAX_PENDING_PER_IP")]
    max_pending_per_ip: Option<usize>,
    /// Seconds a connection may take for its TLS handshake and each HTTP request's headers.
    #[arg(long, env = "WSRELAY_HANDSHAKE_TIMEOUT", default_value_t = 10)]
    handshake_timeout: u64,
    /// Messages per second each client may send (0: no limit, the default: flow control
    /// always protects the other clients). wsrelay clients pace themselves to it; others are
    /// refused with `rate_limited`, then closed with 1008.
    #[arg(long, env = "WSRELAY_RATE_LIMIT", default_value_t = 0)]
    rate_limit: u32,
    /// Messages a client may send at once after a quiet spell (default: twice the rate).
    #[arg(long, env = "WSRELAY_RATE_BURST")]
    rate_burst: Option<u32>,
    /// Verify identities: HS256 JSON Web Tokens signed with this secret (`sub` is the source,
    /// `exp` required), from `?token=` or `Authorization: Bearer`. Prefer the environment
    /// variable or --auth-secret-file: a command line is visible to every local user.
    #[arg(long, env = "WSRELAY_AUTH_SECRET", hide_env_values = true)]
    auth_secret: Option<String>,
    /// Read the token secret from this file (trailing newline ignored).
    #[arg(long, env = "WSRELAY_AUTH_SECRET_FILE", conflicts_with = "auth_secret")]
    auth_secret_file: Option<PathBuf>,
    /// What a second connection with a connected source does: replace the first (which is
    /// told, with 4409) or be refused with 409.
    #[arg(long, env = "WSRELAY_ON_DUPLICATE", value_enum, default_value_t = Duplicate::Replace)]
    on_duplicate: Duplicate,
    /// A browser origin allowed to connect, e.g. https://app.example.com (repeatable; the
    /// environment variable takes a comma-separated list). Without it, any origin may
    /// connect, or with --www only the relay's own.
    #[arg(long, env = "WSRELAY_ALLOWED_ORIGIN", value_delimiter = ',')]
    allowed_origin: Vec<String>,
    /// PEM certificate chain: serve wss:// (and --www over https://) on the same port.
    #[arg(long, env = "WSRELAY_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "WSRELAY_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Log lines as text or as JSON objects, one per line.
    #[arg(long, env = "WSRELAY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Level of the relay's own log lines (error, warn, info, debug, trace); other crates log
    /// warnings and errors only. RUST_LOG, when set, replaces both.
    #[arg(long, env = "WSRELAY_LOG_LEVEL", default_value = "info")]
    log_level: String,
    /// Keep sessions in the Redis at this URL (redis://HOST:PORT[/DB]), shared with every
    /// relay on it: they behave as one server, and a relay's death loses nothing it
    /// acknowledged. Without it, sessions live in this process.
    #[arg(long, env = "WSRELAY_REDIS")]
    redis: Option<String>,
    /// This relay's name among relays sharing Redis (default: generated).
    #[arg(long, env = "WSRELAY_NODE_ID")]
    node_id: Option<String>,
    /// With --redis: the most messages a room's log keeps. A member further behind is told
    /// how many it lost.
    #[arg(long, env = "WSRELAY_ROOM_RETENTION", default_value_t = 100_000)]
    room_retention: usize,
    /// With --redis: seconds a room's log without new messages is kept.
    #[arg(long, env = "WSRELAY_ROOM_IDLE", default_value_t = 600)]
    room_idle: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Duplicate {
    Replace,
    Reject,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn init_logs(args: &Args) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        let level = &args.log_level;
        EnvFilter::try_new(format!(
            "warn,wsrelay_server={level},wsrelay_core={level},wsrelay={level}"
        ))
        .unwrap_or_else(|_| EnvFilter::new("warn,wsrelay_server=info"))
    });
    // Colours for a person at a terminal only, never into files or container logs.
    let ansi = std::io::stderr().is_terminal();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match args.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
}

/// A fatal start-up error: said once, as a log line (JSON in JSON mode), and exit code 2.
fn fail(message: impl std::fmt::Display) -> std::process::ExitCode {
    tracing::error!("{message}");
    std::process::ExitCode::from(2)
}

/// The system's allocator, as it is (the `jemalloc` feature is off, or jemalloc does not
/// build for the target).
#[cfg(not(all(feature = "jemalloc", not(target_env = "msvc"))))]
mod allocator {
    /// Nothing to set.
    pub(crate) fn give_memory_back() -> Result<(), std::convert::Infallible> {
        Ok(())
    }

    /// Nothing to set.
    pub(crate) fn no_thread_cache() {}
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    init_logs(&args);
    if let Err(error) = allocator::give_memory_back() {
        tracing::warn!(%error, "the allocator may keep memory freed after bursts");
    }
    allocator::no_thread_cache();
    // `#[tokio::main]`'s runtime, with the allocator's setting for every thread it starts.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_start(allocator::no_thread_cache)
        .build();
    match runtime {
        Ok(runtime) => runtime.block_on(serve(args)),
        Err(error) => fail(format_args!("cannot start the runtime: {error}")),
    }
}

/// The relay, from its arguments to its shutdown.
async fn serve(args: Args) -> std::process::ExitCode {
    if let Some(dir) = &args.www {
        if !dir.is_dir() {
            return fail(format_args!("--www {} is not a directory", dir.display()));
        }
    }
    let (max_connections, max_pending_connections) = match size_to_open_files(
        args.max_connections,
        args.max_pending_connections,
        ["--max-connections", "--max-pending-connections"],
    ) {
        Ok(bounds) => bounds,
        Err(message) => return fail(message),
    };
    let secret = match (&args.auth_secret, &args.auth_secret_file) {
        (Some(secret), _) => Some(secret.clone().into_bytes()),
        (None, Some(path)) => match std::fs::read(path) {
            Ok(mut secret) => {
                while secret.last().is_some_and(u8::is_ascii_whitespace) {
                    secret.pop();
                }
                Some(secret)
            }
            Err(error) => {
                return fail(format_args!(
                    "--auth-secret-file {}: {error}",
                    path.display()
                ))
            }
        },
        (None, None) => None,
    };
    if secret.as_ref().is_some_and(Vec::is_empty) {
        return fail("the token secret is empty");
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => match wsrelay_server::tls_config(cert, key) {
            Ok(tls) => Some(tls),
            Err(error) => return fail(format_args!("TLS: {error}")),
        },
        _ => None,
    };
    let rate_limit = (args.rate_limit > 0).then(|| RateLimit {
        per_second: args.rate_limit,
        burst: args
            .rate_burst
            .unwrap_or(args.rate_limit.saturating_mul(2))
            .max(1),
    });
    // The relay's own pages are its only expected browser clients: with --www and no
    // --allowed-origin, other origins are refused (a page elsewhere cannot borrow a visitor's
    // connection). Without --www, the relay serves apps hosted elsewhere: any origin.
    let own_origin = args.www.is_some() && args.allowed_origin.is_empty();
    let config = ServerConfig {
        static_dir: args.www.clone(),
        ping_interval: Duration::from_secs(args.ping_interval.max(1)),
        max_connections,
        max_connections_per_ip: args.max_connections_per_ip,
        max_pending_connections,
        max_pending_per_ip: args.max_pending_per_ip,
        handshake_timeout: Duration::from_secs(args.handshake_timeout.max(1)),
        rate_limit,
        on_duplicate: match args.on_duplicate {
            Duplicate::Replace => OnDuplicate::Replace,
            Duplicate::Reject => OnDuplicate::Reject,
        },
        allowed_origins: args.allowed_origin.clone(),
        own_origin,
        tls,
        presence: true,
        redis: args.redis,
        node_id: args.node_id,
        room_retention: RoomRetention {
            entries: args.room_retention.max(1),
            idle: Duration::from_secs(args.room_idle.max(1)),
        },
        ..ServerConfig::default()
    };
    let mut builder = WebSocketServer::builder(config);
    match secret {
        Some(secret) => {
            let auth = JwtAuth::hs256(secret);
            builder = builder.authenticate(move |request| auth.verify(request));
        }
        None => tracing::warn!(
            "identities are not verified: any client can connect as any source \
             (--auth-secret turns on tokens)"
        ),
    }
    if own_origin {
        tracing::warn!(
            "browsers may connect from this relay's own pages only; other origins are refused \
             (--allowed-origin allows them)"
        );
    } else if args.allowed_origin.is_empty() {
        tracing::warn!("browsers may connect from any origin (--allowed-origin restricts them)");
    }
    let server = match builder.bind((args.host.as_str(), args.port)).await {
        Ok(server) => server,
        Err(error) => {
            return fail(format_args!(
                "cannot listen on {}:{}: {error}",
                args.host, args.port
            ))
        }
    };
    let addr: SocketAddr = server.local_addr();
    let scheme = if server.config().tls.is_some() {
        "https"
    } else {
        "http"
    };
    let stop = shutdown_signal();
    // Test harnesses read this one line for the port: print it once, flushed. In JSON mode
    // it is JSON too: in a container stdout and stderr are one stream.
    let mut stdout = std::io::stdout().lock();
    let _ = match args.log_format {
        LogFormat::Text => writeln!(stdout, "listening on {scheme}://{addr}"),
        LogFormat::Json => writeln!(stdout, "{{\"listening\":\"{scheme}://{addr}\"}}"),
    };
    let _ = stdout.flush();
    drop(stdout);
    stop.await;
    tracing::info!("shutting down");
    server.close().await;
    std::process::ExitCode::SUCCESS
}

/// Ctrl-C, or SIGTERM on Unix: listened for from the call on (before the relay says it
/// listens, so that a supervisor's SIGTERM right after that line is a graceful shutdown, not
/// the default action that kills the process).
#[cfg(unix)]
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let listen = |kind: SignalKind, name: &'static str| {
        let signal = signal(kind);
        async move {
            match signal {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(error) => {
                    tracing::error!(%error, "cannot listen for {name}");
                    std::future::pending::<()>().await;
                }
            }
        }
    };
    let interrupt = listen(SignalKind::interrupt(), "Ctrl-C");
    let terminate = listen(SignalKind::terminate(), "SIGTERM");
    async move {
        tokio::select! {
            () = interrupt => {}
            () = terminate => {}
        }
    }
}

/// Ctrl-C.
#[cfg(not(unix))]
async fn shutdown_signal() {
    if let Err(error) = tokio::signal::ctrl_c().await {
        tracing::error!(%error, "cannot listen for Ctrl-C");
        std::future::pending::<()>().await;
    }
}
