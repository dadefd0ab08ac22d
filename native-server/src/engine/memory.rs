//! The embedded default engine: every source's state in this process, behind one lock.
//!
//! The decisions are [`MemoryState`]'s (sans-IO, shared with the simulation tests); this adds
//! the lock, the clock, the doorbells and the resolution of the server's own requests. The
//! lock is held for map operations and queue pushes only, never across an `.await`.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tungstenite::Utf8Bytes;
use wsrelay_core::server::memory::{EngineLimits, Fenced, MemoryState, Refused};

use super::{
    Attempt, Claim, ClaimError, ClaimRefused, Doorbell, Effect, EngineError, Hello, MessageRouter,
    Opened, Routed, SendRefused, SessionStore, Signal,
};
use crate::clock::Clock;
use crate::requests::Requests;

/// Sessions and mailboxes in memory: they live as long as the process.
pub(crate) struct MemoryEngine {
    state: Mutex<MemoryState<Utf8Bytes, Doorbell>>,
    clock: Clock,
    requests: Arc<Requests>,
}

fn ring(doorbell: &Doorbell, signal: Signal) {
    doorbell.ring(signal);
}

impl MemoryEngine {
    pub(crate) fn new(limits: EngineLimits, clock: Clock, requests: Arc<Requests>) -> Self {
        // Session instances are named after this process: a random number, so that a client
        // resuming after a restart is never taken for one of the new process's sessions.
        let instance = std::hash::BuildHasher::hash_one(
            &std::collections::hash_map::RandomState::new(),
            std::process::id(),
        );
        MemoryEngine {
            state: Mutex::new(MemoryState::new(limits, instance)),
            clock,
            requests,
        }
    }

    /// Poisoning only means a thread panicked while holding the lock; the state stays usable
    /// (every operation leaves it consistent before it can panic).
    fn state(&self) -> MutexGuard<'_, MemoryState<Utf8Bytes, Doorbell>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Forgets the sessions whose grace period is over; returns how many.
    pub(crate) fn expire(&self) -> usize {
        let now = self.clock.now();
        self.state().expire(now)
    }

    /// Sessions parked for a resume, and sources connected to this process.
    pub(crate) fn local_counts(&self) -> (usize, usize) {
        let state = self.state();
        (state.parked(), state.connected().count())
    }

    /// Forgets everything (the server closed).
    pub(crate) fn clear(&self) {
        self.state().clear();
    }
}

impl SessionStore for MemoryEngine {
    async fn claim(
        &self,
        source: &str,
        attempt: Option<&Attempt>,
        doorbell: &Doorbell,
        exclusive: bool,
    ) -> Result<Claim, ClaimError> {
        self.state()
            .claim(source, attempt, doorbell.clone(), exclusive, &mut ring)
            .map_err(|refused| match refused {
                ClaimRefused::Occupied => ClaimError::Occupied,
                ClaimRefused::Stale => ClaimError::Stale,
                ClaimRefused::Unavailable => {
                    ClaimError::Unavailable(EngineError("the memory engine refused".into()))
                }
            })
    }

    async fn open(
        &self,
        claim: &mut Claim,
        hello: Option<&Hello>,
        fresh_next: u64,
    ) -> Result<Opened, EngineError> {
        let opened = self
            .state()
            .open(claim, hello, fresh_next)
            .map_err(|Fenced| EngineError("the source was claimed again".into()))?;
        claim.session = hello.map(|hello| hello.token.clone());
        Ok(opened)
    }

    async fn fetch(
        &self,
        claim: &Claim,
        from: u64,
        out: &mut Vec<Utf8Bytes>,
        max: usize,
    ) -> Result<usize, EngineError> {
        Ok(self.state().fetch(claim, from, out, max))
    }

    async fn settle(&self, claim: &Claim, through: u64) -> Result<(), EngineError> {
        self.state().settle(claim, through, &mut ring);
        Ok(())
    }

    async fn release(&self, claim: &Claim) {
        let now = self.clock.now();
        self.state().release(claim, now, &mut ring);
    }
}

impl MessageRouter for MemoryEngine {
    async fn route(
        &self,
        claim: &Claim,
        id: Option<u64>,
        effect: &Effect<Utf8Bytes>,
        waiter: &Doorbell,
    ) -> Routed {
        let routed = self.state().route(claim, id, effect, waiter, &mut ring);
        if let (Routed::Done, Effect::Resolve { kind, re, result }) = (&routed, effect) {
            self.requests
                .resolve(&claim.source, kind, *re, result.clone());
        }
        routed
    }

    async fn append(&self, claim: &Claim, frame: Utf8Bytes) -> Result<(), EngineError> {
        self.state().append(claim, frame, &mut ring);
        Ok(())
    }

    async fn send_to(&self, target: &str, frame: Utf8Bytes) -> Result<(), SendRefused> {
        self.state()
            .send(target, frame, &mut ring)
            .map_err(|refused| match refused {
                Refused::UnknownTarget => SendRefused::UnknownTarget,
                Refused::Overflow => SendRefused::Overflow,
            })
    }

    async fn broadcast(
        &self,
        frame: Utf8Bytes,
        exclude: Option<&str>,
    ) -> Result<usize, EngineError> {
        Ok(self.state().broadcast(&frame, exclude, &mut ring))
    }

    async fn clients(&self) -> Result<Vec<String>, EngineError> {
        let mut sources: Vec<String> = self.state().connected().map(str::to_owned).collect();
        sources.sort_unstable();
        Ok(sources)
    }

    async fn is_connected(&self, source: &str) -> Result<bool, EngineError> {
        Ok(self.state().is_connected(source))
    }

    async fn join(&self, source: &str, room: &str) -> Result<(), SendRefused> {
        match self.state().join(source, room) {
            true => Ok(()),
            false => Err(SendRefused::UnknownTarget),
        }
    }

    async fn leave(&self, source: &str, room: &str) -> Result<bool, SendRefused> {
        Ok(self.state().leave(source, room))
    }

    async fn send_to_room(
        &self,
        room: &str,
        frame: Utf8Bytes,
        exclude: Option<&str>,
    ) -> Result<usize, SendRefused> {
        Ok(self.state().send_to_room(room, &frame, exclude, &mut ring))
    }

    async fn members(&self, room: &str) -> Result<Vec<String>, SendRefused> {
        let mut members: Vec<String> = self.state().members(room).map(str::to_owned).collect();
        members.sort_unstable();
        Ok(members)
    }

    async fn is_member(&self, source: &str, room: &str) -> Result<bool, SendRefused> {
        Ok(self.state().is_member(source, room))
    }

    async fn rooms(&self) -> Result<Vec<(String, Vec<String>)>, SendRefused> {
        let state = self.state();
        let mut rooms: Vec<(String, Vec<String>)> = state
            .rooms()
            .map(|(room, members)| {
                let mut members: Vec<String> = members.map(str::to_owned).collect();
                members.sort_unstable();
                (room.to_owned(), members)
            })
            .collect();
        rooms.sort_unstable();
        Ok(rooms)
    }
}
