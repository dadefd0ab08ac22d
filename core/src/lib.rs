//! The sans-IO heart of wsrelay, shared by every client and the server: the wire protocol and
//! the two state machines that make every protocol decision.
//!
//! - [`protocol`]: the frames of `PROTOCOL.md` and their JSON codec.
//! - [`client`]: [`ClientCore`](client::ClientCore), driven by the native (tokio) and the
//!   browser / Node.js drivers of the `wsrelay` crate.
//! - [`server`]: the server's per-connection state, driven by `wsrelay-server`.
//! - `sim` (feature `sim`): the simulation and the server's reference driver (`Relay`).
//! - [`Reply`] (and, with the feature `serde`, `IntoReply`): what a handler answers, on
//!   either side.
//!
//! Nothing here performs I/O or reads a clock: time is an input ([`Instant`]), randomness a
//! seed, and every effect an output the driver carries out. That makes the code identical on
//! every platform, `Send`, and testable with a virtual clock: with the feature `sim`, the module
//! `sim` holds a deterministic simulation of clients and server, and the server's reference
//! driver, which the tests in `core/tests` and the fuzz targets drive.

#![cfg_attr(not(feature = "std"), no_std)]

extern crate alloc;

mod bucket;
pub mod client;
pub mod protocol;
mod reply;
#[cfg(feature = "std")]
pub mod server;
#[cfg(feature = "sim")]
pub mod sim;
mod time;

#[cfg(feature = "serde")]
pub use reply::IntoReply;
pub use reply::Reply;
pub use time::Instant;
