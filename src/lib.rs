//! wsrelay: reliable real-time messaging over WebSocket.
//!
//! The crate is laid out the way the work is split:
//!
//! - [`protocol`]: wire protocol v1 (`PROTOCOL.md`), its frames and their JSON codec.
//! - [`core`]: the sans-IO state machines. [`core::ClientCore`] holds every decision a client
//!   makes (reconnect, queueing, heartbeat, acknowledgements, request/response) and performs no
//!   I/O and reads no clock: drivers feed it events and the time, and carry out what it asks.
//!   [`core::ServerSession`] is the server's half of a session, shared with `wsrelay-server`.
//!
//! The drivers (tokio natively, the browser's `WebSocket` on wasm32) build on [`core`].

pub mod core;
pub mod protocol;
