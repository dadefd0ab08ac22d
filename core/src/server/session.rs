//! The server's half of a v1 session (`PROTOCOL.md` sections 3 to 5), sans-IO.
//!
//! `wsrelay-server` keeps one per connected wsrelay client (and for a grace period after it
//! disconnects); the simulation tests pair it with [`ClientCore`](super::ClientCore). It is
//! generic over the frame buffer `F` so the server can keep reference-counted bytes that every
//! broadcast recipient shares, while the tests keep plain strings.

use std::collections::VecDeque;

use crate::protocol::{Frame, VERSION};

/// What to do with a client message, by its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// First time seen: handle or relay it.
    New,
    /// Already consumed (a retransmit after a reconnect): drop it; the next ack covers it.
    Duplicate,
}

/// The session's retransmit buffer is full: the client does not keep up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlowConsumer;

/// The server's memory of one client session.
#[derive(Debug)]
pub struct ServerSession<F> {
    token: String,
    consumed: u64,
    acknowledged: u64,
    written: u64,
    unacked: VecDeque<F>,
    max_unacked: usize,
}

impl<F: Clone> ServerSession<F> {
    /// A fresh session named by the client's `token`, keeping at most `max_unacked` reliable
    /// frames the client has not acknowledged.
    pub fn new(token: &str, max_unacked: usize) -> Self {
        ServerSession {
            token: token.to_owned(),
            consumed: 0,
            acknowledged: 0,
            written: 0,
            unacked: VecDeque::new(),
            max_unacked,
        }
    }

    /// The client's session token.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Reliable frames waiting for the client's acknowledgement.
    pub fn unacked_len(&self) -> usize {
        self.unacked.len()
    }

    /// The client reconnected with a hello saying it received `client_ack` reliable frames.
    /// Returns the frames to send again, in order, after the welcome; or `None` when the claim
    /// is impossible (more than was ever written), in which case the caller starts a fresh
    /// session.
    pub fn resume(&mut self, client_ack: u64) -> Option<impl Iterator<Item = &F>> {
        if client_ack > self.written {
            return None;
        }
        self.handle_ack(client_ack);
        self.acknowledged = self.consumed;
        Some(self.unacked.iter())
    }

    /// The welcome frame answering a hello for this session.
    pub fn welcome(&self, resumed: bool) -> Frame<'_> {
        Frame::Welcome {
            version: VERSION,
            session: self.token.as_str().into(),
            ack: self.consumed,
            resumed,
        }
    }

    /// A client message with `id` arrived: is it new or a retransmitted duplicate?
    pub fn deliver(&mut self, id: u64) -> Delivery {
        if id <= self.consumed {
            Delivery::Duplicate
        } else {
            self.consumed = id;
            Delivery::New
        }
    }

    /// The acknowledgement to send after a batch of reads, if anything new was consumed since
    /// the last one. Duplicates need no new ack: the ack that covers them was already sent,
    /// and the client's retransmit is settled by the welcome's `ack`.
    #[must_use]
    pub fn poll_ack(&mut self) -> Option<Frame<'static>> {
        (self.consumed > self.acknowledged).then(|| {
            self.acknowledged = self.consumed;
            Frame::Ack { ack: self.consumed }
        })
    }

    /// Records a reliable frame as written to the client (it is kept until acknowledged).
    pub fn record_written(&mut self, frame: F) -> Result<(), SlowConsumer> {
        if self.unacked.len() >= self.max_unacked {
            return Err(SlowConsumer);
        }
        self.written += 1;
        self.unacked.push_back(frame);
        Ok(())
    }

    /// The client acknowledged `ack` reliable frames. Stale or impossible values are ignored.
    pub fn handle_ack(&mut self, ack: u64) {
        let first_unacked = self.written - self.unacked.len() as u64;
        let settled = ack.min(self.written).saturating_sub(first_unacked);
        for _ in 0..settled {
            self.unacked.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedupes_by_id_and_acks_once_per_batch() {
        let mut session = ServerSession::<String>::new("t", 8);
        assert_eq!(session.deliver(1), Delivery::New);
        assert_eq!(session.deliver(3), Delivery::New);
        assert_eq!(session.deliver(2), Delivery::Duplicate);
        assert_eq!(session.deliver(3), Delivery::Duplicate);
        assert_eq!(session.poll_ack(), Some(Frame::Ack { ack: 3 }));
        assert_eq!(session.poll_ack(), None);
    }

    #[test]
    fn resume_retransmits_what_the_client_lacks() {
        let mut session = ServerSession::new("t", 8);
        for frame in ["a", "b", "c", "d"] {
            session.record_written(frame.to_owned()).expect("room");
        }
        session.handle_ack(1);
        assert_eq!(session.unacked_len(), 3);
        let again: Vec<_> = session.resume(2).expect("valid").cloned().collect();
        assert_eq!(again, ["c", "d"]);
        assert!(session.resume(5).is_none(), "more than was written");
        session.handle_ack(1);
        assert_eq!(session.unacked_len(), 2, "stale ack ignored");
    }

    #[test]
    fn a_full_buffer_is_a_slow_consumer() {
        let mut session = ServerSession::new("t", 2);
        session.record_written(1).expect("room");
        session.record_written(2).expect("room");
        assert_eq!(session.record_written(3), Err(SlowConsumer));
        session.handle_ack(1);
        assert_eq!(session.record_written(3), Ok(()));
    }
}
