#![doc = include_str!("../README.md")]
// The package's wasm build leaves std out (see the feature `std` in Cargo.toml).
#![cfg_attr(all(target_arch = "wasm32", not(feature = "std")), no_std)]

extern crate alloc;

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

/// The wasm build's allocator: std's dlmalloc is about 8.5 KB of the module, lol_alloc's free
/// list about 1 KB. The driver is single-threaded; the lock is the safe constructor's price.
#[cfg(all(target_arch = "wasm32", feature = "small-allocator"))]
#[global_allocator]
static ALLOCATOR: lol_alloc::LockedAllocator<lol_alloc::FreeListAllocator> =
    lol_alloc::LockedAllocator::new(lol_alloc::FreeListAllocator::new());

/// Without std, a panic traps: the `unreachable` instruction, a `RuntimeError` in JavaScript,
/// as std's `panic = "abort"` ends too (on wasm32 its message is printed nowhere). The message
/// and location are not read, so no formatting code is linked.
#[cfg(all(target_arch = "wasm32", not(feature = "std")))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    core::arch::wasm32::unreachable()
}

// ...and tokio natively.
#[cfg(not(target_arch = "wasm32"))]
pub mod native;
#[cfg(not(target_arch = "wasm32"))]
pub use native::{ClientBuilder, Incoming, SendOptions, TokenFuture, WebSocketClient};
/// The TLS library of [`ClientBuilder::tls_config`] (rustls, `ring` provider).
#[cfg(all(feature = "tls", not(target_arch = "wasm32")))]
pub use rustls;

/// Every failure a client reports (shared by all drivers).
pub use wsrelay_core::client::Error;
