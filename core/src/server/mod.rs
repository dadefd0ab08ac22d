//! The server's sans-IO half: [`ServerConnection`], every decision about one WebSocket
//! connection, and the vocabulary of its seam with the engine that keeps sessions and routes
//! frames ([`engine`]), with the in-memory engine's state ([`memory`]), and the WebSocket
//! frames it is carried in ([`websocket`]).
//!
//! `wsrelay-server` drives a `ServerConnection` per connection with a plain I/O loop and
//! carries out its outputs against an engine (in memory by default, or Redis for several
//! relays); the simulation tests (`tests/sim`) drive the same state machines and the same
//! in-memory engine on a virtual clock.

mod connection;
pub mod engine;
mod limit;
pub mod memory;
pub mod websocket;

pub use connection::{
    error_frame, CloseFrame, ConnectionSettings, Counters, DisconnectReason, FrameText, HandlerSet,
    Output, ServerConnection, ServerEvent, TransportError, CLOSE_EXPIRED,
};
pub use limit::RateLimit;
