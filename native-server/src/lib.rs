//! The wsrelay server: a WebSocket relay and application server speaking wsrelay protocol v1
//! (`PROTOCOL.md`), as a library and as the `wsrelay-server` binary.
//!
//! - Clients connect to `ws://HOST:PORT/ANY/PATH?source=ID` (any path). wsrelay clients open
//!   with a `~hello` and get sessions: acknowledgements, de-duplication of retransmits, and
//!   retransmission of what they missed when they resume within the grace period. Bare clients
//!   (any WebSocket speaking `{"type", "payload"}`) just work, without those guarantees.
//! - Messages of a type with a handler ([`WebSocketServer::on`]) go to it; the handler's value
//!   is the response. Others are relayed: to the client named by `to`, or to every other
//!   client, with `source` set by the server.
//! - Fan-out encodes a frame once and hands every recipient the same bytes; each connection
//!   writes its frames and flushes once per batch. Flow control instead of disconnection: a
//!   client's message to a recipient that is behind waits (unacknowledged) until it catches
//!   up; mailboxes are bounded in bytes, and a client behind for too long is closed with a
//!   code that lets it reconnect and resume.
//!
//! # Example
//!
//! ```
//! use wsrelay_server::{Incoming, ServerConfig, WebSocketServer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let server = WebSocketServer::bind("127.0.0.1:0", ServerConfig::default()).await?;
//! println!("listening on ws://{}/?source=ID", server.local_addr());
//!
//! // Response `add` requests; every other message type is relayed between clients.
//! server.on("add", |msg: Incoming<(i64, i64)>| async move { Some(msg.payload.0 + msg.payload.1) });
//! server.broadcast("announcement", &"hello everyone", None).await.expect("serializable");
//!
//! server.close().await;
//! # Ok(())
//! # }
//! ```
//!
//! Layout: every protocol decision about a connection is made by the sans-IO state machine
//! `wsrelay_core::server::ServerConnection`. Here: [`config`](ServerConfig) (limits and
//! policies), `auth` (the upgrade hook), `http` (upgrade on any path, static files),
//! `connection` (the per-connection I/O loop that drives the state machine), `engine` (the
//! seam where sessions live and frames travel, and its in-memory implementation), `hub`
//! (what connections share), `requests` (the server's own requests and answers), `handlers`
//! (typed handlers and replies), `clock` (tokio's clock as the core counts), `server` (the
//! public handle).

mod admission;
mod auth;
mod clock;
mod config;
mod connection;
mod engine;
mod handlers;
mod hooks;
mod http;
mod jwt;
mod lifecycle;
mod listener;
mod logs;
mod metrics;
mod presence;
mod requests;
mod server;
mod state;
mod tls;
mod websocket;

pub use admission::size_to_open_files;
pub use auth::{source_from_query, Authenticator, Identity, Rejection, RoomAccess, UpgradeRequest};
/// Re-exported so that hooks can build [`Rejection`]s and read headers without a direct `http`
/// dependency.
pub use axum::http::StatusCode;
pub use config::{OnDuplicate, RateLimit, RoomRetention, ServerConfig};
pub use engine::EngineError;
pub use handlers::{Incoming, IntoReply, Reply};
pub use hooks::ClientInfo;
pub use jwt::JwtAuth;
pub use presence::{CLIENTS, CLIENTS_PAGE, PRESENCE};
pub use requests::Response;
/// The TLS library of [`ServerConfig::tls`] (rustls, with the `ring` crypto provider).
pub use rustls;
pub use server::{
    DisconnectReason, RequestError, SendError, ServerBuilder, ServerStats, ShutdownCode,
    WebSocketServer,
};
pub use tls::{tls_config, tls_config_from_der};
/// The error object of responses (`PROTOCOL.md` section 6), from the shared protocol crate.
pub use wsrelay_core::protocol::RemoteError;
pub use wsrelay_core::protocol::{JOIN, LEAVE};
