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
//!   writes its queued frames and flushes once; queues are bounded and slow consumers cut off.
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
//! // Answer `add` requests; every other message type is relayed between clients.
//! server.on("add", |msg: Incoming<(i64, i64)>| async move { Some(msg.payload.0 + msg.payload.1) });
//! server.broadcast("announcement", &"hello everyone", None).expect("serializable");
//!
//! server.close().await;
//! # Ok(())
//! # }
//! ```
//!
//! Layout: [`config`](ServerConfig) (limits and policies), `auth` (the upgrade hook), `http`
//! (upgrade on any path, static files), `hub` (registry, parked sessions, fan-out),
//! `connection` (the per-connection task), `handlers` (typed handlers and replies), `server`
//! (the public handle).

mod auth;
mod config;
mod connection;
mod handlers;
mod http;
mod hub;
mod server;

pub use auth::{source_from_query, Authenticator, Rejection, UpgradeRequest};
/// Re-exported so that hooks can build [`Rejection`]s and read headers without a direct `http`
/// dependency.
pub use axum::http::StatusCode;
pub use config::{OnDuplicate, ServerConfig};
pub use handlers::{Incoming, IntoReply, Reply};
pub use server::{
    ClientInfo, DisconnectReason, RequestError, SendError, ServerBuilder, ServerStats,
    ShutdownCode, WebSocketServer,
};
/// The error object of responses (`PROTOCOL.md` section 6), from the shared protocol crate.
pub use wsrelay_core::protocol::RemoteError;
