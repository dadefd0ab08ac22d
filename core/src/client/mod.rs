//! The client's sans-IO state machine, [`ClientCore`]: reconnection with backoff, the queue of
//! unacknowledged messages, heartbeat, acknowledgements and request/response. Both client
//! drivers (tokio natively, the runtime's `WebSocket` in browsers and Node.js) feed it events
//! and carry out its outputs; neither makes a protocol decision of its own.

mod backoff;
mod error;
mod events;
#[cfg(feature = "persist")]
mod journal;
mod machine;
mod options;
mod outbox;
mod stats;
mod url;

pub use crate::protocol::MAX_SOURCE_LEN;
pub use backoff::delay_range;
pub use error::Error;
pub use events::{
    Event, InboundMessage, Outgoing, Output, ReadyState, Receipt, ReplyTarget, Response,
    RestoredMessage, Save, TransportId,
};
#[cfg(feature = "persist")]
pub use journal::JournalError;
pub use machine::ClientCore;
pub use options::{OptionValue, Options};
pub use stats::Stats;
pub use url::{attempt_url, connect_url, token_url};
