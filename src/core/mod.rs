//! The sans-IO core: plain-data state machines that perform no I/O and never read a clock.
//!
//! Time is an input ([`Instant`]), randomness is a seed, and every effect is an output the
//! driver carries out. That makes the core identical on every platform, `Send`, and testable
//! with a virtual clock (see `tests/sim`).

mod server_session;

pub use server_session::{Delivery, ServerSession, SlowConsumer};

mod backoff;
mod client;
mod error;
mod options;
mod outbox;
mod time;

pub use backoff::delay_range;
pub use client::{
    ClientCore, Event, Incoming, Outgoing, Output, ReadyState, ReplyTarget, Response, TransportId,
};
pub use error::Error;
pub use options::Options;
pub use time::Instant;
