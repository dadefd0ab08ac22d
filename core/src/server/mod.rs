//! The server's sans-IO half: [`ServerConnection`], every decision about one WebSocket
//! connection, and the vocabulary of its seam with the engine that keeps sessions and routes
//! frames ([`engine`]), with the in-memory engine's state ([`memory`]), and the WebSocket
//! frames it is carried in ([`websocket`]).
//!
//! `wsrelay-server` drives a `ServerConnection` per connection with a plain I/O loop and
//! carries out its outputs against an engine (in memory by default, or Redis for several
//! relays); the reference driver of the feature `sim` (`sim::Relay`, the same loop,
//! synchronous) drives the same state machines over the same in-memory engine on a virtual
//! clock, for the simulation tests (`core/tests`) and the fuzz targets.

mod connection;
pub mod engine;
mod limit;
pub mod memory;
pub mod websocket;

pub use connection::{
    error_frame, CloseFrame, ConnectionSettings, ConnectionStats, DisconnectReason, FrameText,
    HandlerSet, Output, ServerConnection, ServerEvent, TransportError, CLOSE_EXPIRED,
};
pub use limit::RateLimit;

use std::collections::VecDeque;

/// The fewest slots [`shrink_drained`] leaves a queue: below it, giving memory back is not
/// worth a reallocation.
const QUEUE_KEEP: usize = 64;

/// Gives back most of a queue's capacity if it has drained to a quarter of it or less.
///
/// A `VecDeque` keeps the capacity of its longest moment. After a burst of small broadcasts a
/// mailbox or a connection's list of frames in flight that once held a backlog window's worth
/// of entries (tens of thousands) would keep that memory, about 1 MiB per recipient, for as
/// long as it lives, and a parked session lives its whole grace period. Called from periodic
/// work (the engine's sweep, the connection's liveness check), never per message: during a
/// burst a queue drains and fills again many times a second, and shrinking it each time would
/// regrow it through every doubling. It keeps twice what is left, so what is still flowing
/// keeps its room.
pub(crate) fn shrink_drained<T>(queue: &mut VecDeque<T>) {
    if queue.capacity() > QUEUE_KEEP && queue.len() <= queue.capacity() / 4 {
        queue.shrink_to((queue.len() * 2).max(QUEUE_KEEP));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_gives_back_its_room_once_drained_to_a_quarter() {
        let mut queue: VecDeque<u64> = (0..10_000).collect();
        let grown = queue.capacity();
        // Half full: the room stays for the traffic that goes on.
        queue.drain(..5_000);
        shrink_drained(&mut queue);
        assert_eq!(queue.capacity(), grown);
        // A tenth: twice what is left.
        queue.drain(..4_000);
        shrink_drained(&mut queue);
        assert!(queue.capacity() >= 2_000 && queue.capacity() < grown / 4);
        assert!(queue.iter().copied().eq(9_000..10_000), "order kept");
        // Empty: the floor.
        queue.clear();
        shrink_drained(&mut queue);
        assert!(queue.capacity() >= QUEUE_KEEP && queue.capacity() < 2 * QUEUE_KEEP);
    }
}
