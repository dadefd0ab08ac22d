#![doc = include_str!("../README.md")]

/// The client state machine both drivers share (from `wsrelay-core`).
pub use wsrelay_core::client;
/// The wire protocol (from `wsrelay-core`).
pub use wsrelay_core::protocol;
/// A point in time as the core sees it (milliseconds from an origin the driver chooses).
pub use wsrelay_core::Instant;

// The platform driver, chosen here once: the browser / Node.js one on wasm32...
#[cfg(target_arch = "wasm32")]
mod web;
#[cfg(target_arch = "wasm32")]
pub use web::WebSocketClient;

// ...and tokio natively.
#[cfg(not(target_arch = "wasm32"))]
pub mod native;
#[cfg(not(target_arch = "wasm32"))]
pub use native::{
    ClientBuilder, ClientEvent, HandlerOutput, Received, SendOptions, WebSocketClient,
};

/// Every failure a client reports (shared by all drivers).
pub use wsrelay_core::client::Error;
