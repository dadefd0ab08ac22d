//! The server's sans-IO half of a session.

mod session;

pub use session::{Delivery, ServerSession, SlowConsumer};
