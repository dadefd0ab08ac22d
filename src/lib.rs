#![doc = include_str!("../README.md")]

pub mod core;
pub mod protocol;

// The platform driver, chosen here once: the browser / Node.js one on wasm32.
#[cfg(target_arch = "wasm32")]
mod web;
#[cfg(target_arch = "wasm32")]
pub use web::WebSocketClient;

// The platform driver, chosen in one place: tokio natively; the browser's WebSocket on wasm32
// (`src/web`) will export the same names.
#[cfg(not(target_arch = "wasm32"))]
pub mod native;
#[cfg(not(target_arch = "wasm32"))]
pub use native::{
    ClientBuilder, ClientEvent, HandlerOutput, Received, SendOptions, WebSocketClient,
};

/// Every failure a client reports (shared by all drivers).
pub use crate::core::Error;
