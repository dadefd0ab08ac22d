//! `wsrelay-server`: a ready relay, optionally serving static files on the same port.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use wsrelay_server::{ServerConfig, WebSocketServer};

/// The wsrelay relay server.
///
/// Clients connect to ws://HOST:PORT/ANY/PATH?source=ID. A message with `to` goes to that
/// client only; any other is broadcast to every other client, with `source` set by the server.
/// Joins and leaves are announced as `relay:presence` messages; a `relay:clients` request is
/// answered with the sources online.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Serve the files of this directory over HTTP on the same port.
    #[arg(long)]
    www: Option<PathBuf>,
    /// Seconds between WebSocket pings (a client silent until the next one is dropped).
    #[arg(long, default_value_t = 30)]
    ping_interval: u64,
    /// Most clients connected at once.
    #[arg(long, default_value_t = 10_000)]
    max_connections: usize,
    /// Keep sessions in the Redis at this URL (redis://HOST:PORT[/DB]), shared with every
    /// relay on it: they behave as one server, and a relay's death loses nothing it
    /// acknowledged. Without it, sessions live in this process.
    #[arg(long, env = "WSRELAY_REDIS")]
    redis: Option<String>,
    /// This relay's name among relays sharing Redis (default: generated).
    #[arg(long, env = "WSRELAY_NODE_ID")]
    node_id: Option<String>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if let Some(dir) = &args.www {
        if !dir.is_dir() {
            eprintln!("wsrelay-server: --www {} is not a directory", dir.display());
            return std::process::ExitCode::from(2);
        }
    }
    let config = ServerConfig {
        static_dir: args.www,
        ping_interval: std::time::Duration::from_secs(args.ping_interval.max(1)),
        max_connections: args.max_connections,
        presence: true,
        redis: args.redis,
        node_id: args.node_id,
        ..ServerConfig::default()
    };
    let server = match WebSocketServer::bind((args.host.as_str(), args.port), config).await {
        Ok(server) => server,
        Err(error) => {
            eprintln!(
                "wsrelay-server: cannot listen on {}:{}: {error}",
                args.host, args.port
            );
            return std::process::ExitCode::FAILURE;
        }
    };
    let addr: SocketAddr = server.local_addr();
    // Test harnesses read this one line for the port: print it once, flushed.
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "listening on http://{addr}");
    let _ = stdout.flush();
    drop(stdout);
    shutdown_signal().await;
    tracing::info!("shutting down");
    server.close().await;
    std::process::ExitCode::SUCCESS
}

/// Ctrl-C, or SIGTERM on Unix.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
