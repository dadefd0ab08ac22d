#![doc = include_str!("../README.md")]

/// The client state machine both drivers share (from `wsrelay-core`).
pub use wsrelay_core::client;
/// What happened, for the application: the one event type of every driver.
pub use wsrelay_core::client::Event;
/// A client's statistics (`stats()`).
pub use wsrelay_core::client::Stats;
/// The wire protocol (from `wsrelay-core`).
pub use wsrelay_core::protocol;
/// A point in time as the core sees it (milliseconds from an origin the driver chooses).
pub use wsrelay_core::Instant;
/// Values an `on` handler may return (shared with the server library).
#[cfg(not(target_arch = "wasm32"))]
pub use wsrelay_core::IntoReply;
/// What a handler answers (shared with the server library).
pub use wsrelay_core::Reply;

// The platform driver, chosen here once: the browser / Node.js one on wasm32...
#[cfg(target_arch = "wasm32")]
mod web;
#[cfg(target_arch = "wasm32")]
pub use web::WebSocketClient;

// ...and tokio natively.
#[cfg(not(target_arch = "wasm32"))]
pub mod native;
#[cfg(not(target_arch = "wasm32"))]
pub use native::{ClientBuilder, Received, SendOptions, TokenFuture, WebSocketClient};
/// The TLS library of [`ClientBuilder::tls_config`] (rustls, `ring` provider).
#[cfg(all(feature = "tls", not(target_arch = "wasm32")))]
pub use rustls;

/// Every failure a client reports (shared by all drivers).
pub use wsrelay_core::client::Error;
