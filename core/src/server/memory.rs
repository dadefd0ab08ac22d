//! The in-memory engine's state, as plain data: every source's mailbox, session and owner.
//!
//! `wsrelay-server` keeps one [`MemoryState`] behind a lock (the embedded default engine); the
//! simulation tests drive the same code with a virtual clock. Owners are any handle `O` the
//! caller chooses (a connection's doorbell, a simulated connection's id); what the engine has
//! to tell them goes through the `notify` callback of each call, so no lock is held while a
//! connection reacts.
//!
//! Every operation is atomic (the caller holds `&mut`), which is what makes its promises easy:
//! a route is consumed (watermark advanced) and delivered in one step, and "durable" means "in
//! this process": if the process dies, its sessions die with it.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use super::connection::FrameText;
use super::engine::{
    Attempt, Claim, ClaimRefused, Effect, Hello, Opened, Routed, Signal, Succession,
};
use crate::Instant;

/// Bounds of the in-memory engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineLimits {
    /// Bytes waiting in a connected source's mailbox beyond which clients' messages to it wait
    /// (flow control). Messages from the server's own API do not wait.
    pub backlog_window: usize,
    /// Bytes a mailbox holds at most. A directed message past it is refused (its sender is
    /// told); a broadcast past it breaks the recipient's session, which its client learns as
    /// `resumed: false` with the count of frames lost.
    pub max_backlog: usize,
    /// How long a disconnected client's session is kept for a resume.
    pub session_grace: Duration,
}

impl Default for EngineLimits {
    fn default() -> Self {
        EngineLimits {
            backlog_window: 1 << 20,
            max_backlog: 8 << 20,
            session_grace: Duration::from_secs(60),
        }
    }
}

/// The claim is no longer current: another connection owns the source now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fenced;

/// Why the server's own message could not be sent to a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Nobody with that source is connected or within its grace period.
    UnknownTarget,
    /// The source's mailbox is at its hard bound.
    Overflow,
}

#[derive(Debug)]
struct Session {
    token: String,
    /// This instance's name (see [`Opened::sid`]).
    sid: String,
    consumed: u64,
    base: u64,
}

/// Frames at consecutive positions `first..first + frames.len()`.
#[derive(Debug)]
struct Mailbox<F> {
    first: u64,
    frames: VecDeque<F>,
    bytes: usize,
}

impl<F: FrameText> Mailbox<F> {
    fn end(&self) -> u64 {
        self.first + self.frames.len() as u64
    }

    fn push(&mut self, frame: F) {
        self.bytes += frame.len();
        self.frames.push_back(frame);
    }

    /// Drops the frames up to position `through`; returns how many.
    fn trim(&mut self, through: u64) -> u64 {
        let mut dropped = 0;
        while self.first <= through {
            let Some(frame) = self.frames.pop_front() else {
                // Nothing left: positions continue after `through` all the same.
                self.first = through + 1;
                break;
            };
            self.bytes -= frame.len();
            self.first += 1;
            dropped += 1;
        }
        dropped
    }
}

#[derive(Debug)]
struct Slot<F, O> {
    source: String,
    epoch: u64,
    owner: Option<O>,
    /// The attempt of the last claim, kept while the slot lives (connected or not): a stale
    /// attempt arriving between two connections is refused all the same.
    attempt: Option<Attempt>,
    session: Option<Session>,
    mailbox: Mailbox<F>,
    parked_until: Option<Instant>,
    /// Connections blocked on this source's backlog, woken when it drains or leaves.
    waiters: Vec<O>,
    /// Counted in `MemoryState::over_window`.
    over_window: bool,
    /// Frames refused since the session broke (a broadcast found the mailbox full): the
    /// session cannot be resumed, and its client is told how many frames it lost.
    lost: u64,
    broken: bool,
    /// The rooms the session is a member of: they belong to the session, kept while it is
    /// parked and left with it when it ends or is opened afresh.
    rooms: BTreeSet<String>,
}

impl<F: FrameText, O> Slot<F, O> {
    /// Whether frames addressed to the source are taken: a connection holds it, or it has a
    /// session within its grace period.
    fn reachable(&self) -> bool {
        self.owner.is_some() || (self.session.is_some() && !self.broken)
    }
}

/// Every source's state in one process. See the module documentation.
///
/// Slots live in a slab; a [`Claim`]'s `key` is its slot's index, so a connection's own
/// operations (routing its messages, fetching, settling) find it without hashing. Epochs are
/// unique in the process, so a slot reused for another claim never matches an old one.
#[derive(Debug)]
pub struct MemoryState<F, O> {
    slots: Vec<Option<Slot<F, O>>>,
    free: Vec<usize>,
    index: HashMap<String, usize>,
    limits: EngineLimits,
    /// Connected sources whose backlog is over the window: while none is, a broadcast needs
    /// no scan for flow control.
    over_window: usize,
    last_epoch: u64,
    /// Every room with at least one member: the members' slots, in the order they joined.
    rooms: HashMap<String, Vec<usize>>,
    /// Names this process's session instances apart from any other's.
    instance: u64,
    sessions_opened: u64,
}

/// Registers `waiter` for a wake-up when `slot` drains (once, however often it retries).
fn wait_for<F, O: PartialEq + Clone>(slot: &mut Slot<F, O>, waiter: &O) {
    if !slot.waiters.contains(waiter) {
        slot.waiters.push(waiter.clone());
    }
}

impl<F: FrameText, O: Clone + PartialEq> MemoryState<F, O> {
    /// No sources yet. `instance` must differ between processes (and restarts): session
    /// instances are named after it, and a client's count must never be applied to a session
    /// instance of another process.
    pub fn new(limits: EngineLimits, instance: u64) -> Self {
        MemoryState {
            slots: Vec::new(),
            free: Vec::new(),
            index: HashMap::new(),
            limits,
            over_window: 0,
            last_epoch: 0,
            rooms: HashMap::new(),
            instance,
            sessions_opened: 0,
        }
    }

    /// The engine's bounds.
    pub fn limits(&self) -> &EngineLimits {
        &self.limits
    }

    /// A connection of `attempt` takes `source`, after [`Succession::of`]: a previous owner is
    /// told it was replaced or superseded, a parked session waits for the hello; a stale
    /// attempt is refused. With `exclusive`, a source that another instance holds is refused
    /// too.
    pub fn claim(
        &mut self,
        source: &str,
        attempt: Option<&Attempt>,
        owner: O,
        exclusive: bool,
        notify: &mut impl FnMut(&O, Signal),
    ) -> Result<Claim, ClaimRefused> {
        let key = match self.index.get(source) {
            Some(&key) => key,
            None => self.insert(source),
        };
        let epoch = self.last_epoch + 1;
        let slot = self.slot_mut(key).ok_or(ClaimRefused::Occupied)?;
        let signal = match Succession::of(slot.attempt.as_ref(), attempt) {
            Succession::Stale => return Err(ClaimRefused::Stale),
            Succession::Replaces if exclusive && slot.owner.is_some() => {
                return Err(ClaimRefused::Occupied)
            }
            Succession::Replaces => Signal::Replaced,
            Succession::Supersedes => Signal::Superseded,
        };
        if let Some(previous) = slot.owner.replace(owner) {
            notify(&previous, signal);
        }
        slot.attempt = attempt.cloned();
        slot.epoch = epoch;
        slot.parked_until = None;
        let next = slot.mailbox.end();
        self.last_epoch = epoch;
        self.update_window(key);
        Ok(Claim {
            source: source.to_owned(),
            key: key as u64,
            epoch,
            next,
            attempt: attempt.cloned(),
            session: None,
        })
    }

    /// Opens the session a hello names, or a fresh one starting at `fresh_next`; `hello` is
    /// `None` for a bare client, which has no session.
    pub fn open(
        &mut self,
        claim: &Claim,
        hello: Option<&Hello>,
        fresh_next: u64,
    ) -> Result<Opened, Fenced> {
        let key = usize::try_from(claim.key).unwrap_or(usize::MAX);
        // A name for the instance, should a fresh one be opened (numbers may go unused).
        self.sessions_opened += 1;
        let new_sid = format!("{:x}.{}", self.instance, self.sessions_opened);
        let slot = self.owned(claim).ok_or(Fenced)?;
        let before = slot.session.as_ref().map(|session| session.sid.clone());
        let opened = open_slot(slot, hello, fresh_next, new_sid);
        // A session opened afresh has no rooms: the old one's membership went with it (its
        // client is told the session was lost, and joins again).
        let renewed = slot.session.as_ref().map(|session| &session.sid) != before.as_ref();
        if renewed {
            self.leave_all(key);
        }
        self.update_window(key);
        Ok(opened)
    }

    /// Consumes message `id` of the claim's source with `effect`. `waiter` is told
    /// [`Signal::Wake`] when a recipient it is blocked on drains.
    pub fn route(
        &mut self,
        claim: &Claim,
        id: Option<u64>,
        effect: &Effect<F>,
        waiter: &O,
        notify: &mut impl FnMut(&O, Signal),
    ) -> Routed {
        let own = usize::try_from(claim.key).unwrap_or(usize::MAX);
        let Some(sender) = self.owned(claim) else {
            let holder = self
                .slot_mut(own)
                .filter(|slot| slot.source == claim.source)
                .and_then(|slot| slot.attempt.as_ref());
            let holder = holder.map(|attempt| attempt.instance.as_str());
            return Routed::Fenced {
                superseded: claim.superseded_by(holder),
            };
        };
        if let (Some(id), Some(session)) = (id, &sender.session) {
            if id <= session.consumed {
                return Routed::Duplicate;
            }
        }
        match effect {
            Effect::Consume | Effect::Resolve { .. } => {}
            Effect::ToSelf { frame } => self.deliver(own, frame.clone(), notify),
            Effect::To { target, frame } if *target == claim.source => {
                self.deliver(own, frame.clone(), notify);
            }
            Effect::To { target, frame } => {
                let (window, max) = (self.limits.backlog_window, self.limits.max_backlog);
                let Some(key) = self.reachable(target) else {
                    return Routed::UnknownTarget;
                };
                let Some(slot) = self.slot_mut(key) else {
                    return Routed::UnknownTarget;
                };
                if slot.owner.is_some() && slot.mailbox.bytes > window {
                    wait_for(slot, waiter);
                    return Routed::Blocked { on: target.clone() };
                }
                if slot.mailbox.bytes + frame.len() > max {
                    return Routed::Overflow;
                }
                self.deliver(key, frame.clone(), notify);
            }
            Effect::Join { room, frame } => {
                self.join_key(own, room);
                self.deliver(own, frame.clone(), notify);
            }
            Effect::Leave { room, frame } => {
                self.leave_key(own, room);
                self.deliver(own, frame.clone(), notify);
            }
            Effect::Room { room, frame } => {
                let member = self
                    .slot_mut(own)
                    .is_some_and(|slot| slot.rooms.contains(room));
                let Some(members) = self.rooms.get(room).filter(|_| member) else {
                    return Routed::NotMember;
                };
                // Flow control as for a broadcast, over the room's members only.
                let behind = members.iter().find_map(|&key| {
                    let slot = self.slots.get(key)?.as_ref()?;
                    (slot.over_window && key != own).then(|| (key, slot.source.clone()))
                });
                if let Some((key, source)) = behind {
                    if let Some(slot) = self.slot_mut(key) {
                        wait_for(slot, waiter);
                    }
                    return Routed::Blocked { on: source };
                }
                self.broadcast_to(room, frame, Some(own), notify);
            }
            Effect::Broadcast { frame } => {
                if self.over_window > 0 {
                    let behind = self
                        .slots
                        .iter_mut()
                        .flatten()
                        .find(|slot| slot.over_window && slot.source != claim.source);
                    if let Some(slot) = behind {
                        wait_for(slot, waiter);
                        return Routed::Blocked {
                            on: slot.source.clone(),
                        };
                    }
                }
                self.broadcast(frame, Some(&claim.source), notify);
            }
        }
        if let (Some(id), Some(slot)) = (id, self.slot_mut(own)) {
            if let Some(session) = slot.session.as_mut() {
                session.consumed = session.consumed.max(id);
            }
        }
        Routed::Done
    }

    /// Appends `frame` to the claim's own mailbox (a response, an error about input without
    /// id). Ignored for a stale claim.
    pub fn append(&mut self, claim: &Claim, frame: F, notify: &mut impl FnMut(&O, Signal)) {
        if self.owned(claim).is_some() {
            self.deliver(
                usize::try_from(claim.key).unwrap_or(usize::MAX),
                frame,
                notify,
            );
        }
    }

    /// Appends up to `max` frames from position `from` of the claim's mailbox to `out`;
    /// returns how many.
    pub fn fetch(&self, claim: &Claim, from: u64, out: &mut Vec<F>, max: usize) -> usize {
        let Some(slot) = usize::try_from(claim.key)
            .ok()
            .and_then(|key| self.slots.get(key)?.as_ref())
            .filter(|slot| slot.epoch == claim.epoch)
        else {
            return 0;
        };
        let mailbox = &slot.mailbox;
        debug_assert!(from >= mailbox.first, "fetching frames already dropped");
        let skip = usize::try_from(from.saturating_sub(mailbox.first)).unwrap_or(usize::MAX);
        let before = out.len();
        out.extend(mailbox.frames.iter().skip(skip).take(max).cloned());
        out.len() - before
    }

    /// The client has every frame up to position `through`: they are dropped.
    pub fn settle(&mut self, claim: &Claim, through: u64, notify: &mut impl FnMut(&O, Signal)) {
        if let Some(slot) = self.owned(claim) {
            slot.mailbox.trim(through);
            let key = usize::try_from(claim.key).unwrap_or(usize::MAX);
            self.update_window(key);
            if let Some(slot) = self.slot_mut(key) {
                if !slot.over_window {
                    for waiter in slot.waiters.drain(..) {
                        notify(&waiter, Signal::Wake);
                    }
                }
            }
        }
    }

    /// The claim's connection ended: its session (if any) is parked until the grace period
    /// ends; a source without one is forgotten. Ignored for a stale claim.
    pub fn release(&mut self, claim: &Claim, now: Instant, notify: &mut impl FnMut(&O, Signal)) {
        let grace = self.limits.session_grace;
        let key = usize::try_from(claim.key).unwrap_or(usize::MAX);
        let Some(slot) = self.owned(claim) else {
            return;
        };
        slot.owner = None;
        let waiters = std::mem::take(&mut slot.waiters);
        let parked = slot.session.is_some();
        if parked {
            slot.parked_until = Some(now + grace);
        }
        self.update_window(key);
        if !parked {
            self.remove(key);
        }
        // Nobody waits for a source that is not connected.
        for waiter in &waiters {
            notify(waiter, Signal::Wake);
        }
    }

    /// The server's own message to `target` (never blocked: the server cannot wait).
    pub fn send(
        &mut self,
        target: &str,
        frame: F,
        notify: &mut impl FnMut(&O, Signal),
    ) -> Result<(), Refused> {
        let max = self.limits.max_backlog;
        let key = self.reachable(target).ok_or(Refused::UnknownTarget)?;
        let bytes = self.slot_mut(key).map_or(0, |slot| slot.mailbox.bytes);
        if bytes + frame.len() > max {
            return Err(Refused::Overflow);
        }
        self.deliver(key, frame, notify);
        Ok(())
    }

    /// The server's own message to every source but `exclude`; returns how many took it. A
    /// recipient whose mailbox is full loses it, and with it its session's continuity: it is
    /// told at once if connected (to reconnect), or at its hello.
    pub fn broadcast(
        &mut self,
        frame: &F,
        exclude: Option<&str>,
        notify: &mut impl FnMut(&O, Signal),
    ) -> usize {
        let limits = (self.limits.max_backlog, self.limits.backlog_window);
        let mut delivered = 0;
        let over_window = &mut self.over_window;
        for slot in self.slots.iter_mut().flatten() {
            if Some(slot.source.as_str()) == exclude || !slot.reachable() {
                continue;
            }
            delivered += usize::from(offer(slot, frame, limits, over_window, notify));
        }
        delivered
    }

    /// `frame` to every member of `room` but the slot `exclude`; returns how many took it.
    /// The frame is encoded once and shared: each member's mailbox holds the same buffer. A
    /// member whose mailbox is full loses it, as for a broadcast.
    fn broadcast_to(
        &mut self,
        room: &str,
        frame: &F,
        exclude: Option<usize>,
        notify: &mut impl FnMut(&O, Signal),
    ) -> usize {
        let limits = (self.limits.max_backlog, self.limits.backlog_window);
        let Some(members) = self.rooms.get(room) else {
            return 0;
        };
        let mut delivered = 0;
        for &key in members {
            if Some(key) == exclude {
                continue;
            }
            let Some(slot) = self.slots.get_mut(key).and_then(Option::as_mut) else {
                continue;
            };
            if slot.reachable() {
                let over_window = &mut self.over_window;
                delivered += usize::from(offer(slot, frame, limits, over_window, notify));
            }
        }
        delivered
    }

    /// The server's own message to every member of `room` but `exclude`; returns how many
    /// took it (see [`broadcast`](Self::broadcast) for a full mailbox).
    pub fn send_to_room(
        &mut self,
        room: &str,
        frame: &F,
        exclude: Option<&str>,
        notify: &mut impl FnMut(&O, Signal),
    ) -> usize {
        let exclude = exclude.and_then(|source| self.index.get(source).copied());
        self.broadcast_to(room, frame, exclude, notify)
    }

    /// Makes `source`'s session a member of `room` (the server's own decision); false when
    /// nobody with that source is connected or within its grace period.
    pub fn join(&mut self, source: &str, room: &str) -> bool {
        let Some(key) = self.reachable(source) else {
            return false;
        };
        self.join_key(key, room);
        true
    }

    /// `source`'s session is no longer a member of `room`; false when it was not one.
    pub fn leave(&mut self, source: &str, room: &str) -> bool {
        let Some(&key) = self.index.get(source) else {
            return false;
        };
        self.leave_key(key, room)
    }

    /// The members of `room` connected now, in no particular order.
    pub fn members(&self, room: &str) -> impl Iterator<Item = &str> {
        self.rooms
            .get(room)
            .into_iter()
            .flatten()
            .filter_map(|&key| self.slots.get(key)?.as_ref())
            .filter(|slot| slot.owner.is_some())
            .map(|slot| slot.source.as_str())
    }

    /// Whether `source`'s session is a member of `room`.
    pub fn is_member(&self, source: &str, room: &str) -> bool {
        self.get(source)
            .is_some_and(|slot| slot.rooms.contains(room))
    }

    /// Every room and its members connected now (presence per room), in no particular order.
    pub fn rooms(&self) -> impl Iterator<Item = (&str, impl Iterator<Item = &str>)> {
        self.rooms
            .keys()
            .map(|room| (room.as_str(), self.members(room)))
    }

    /// The periodic sweep: forgets the parked sessions whose grace period ended by `now`, and
    /// gives back the room of mailboxes that have drained since a burst (a parked session would
    /// keep it for its whole grace period, a connected client for as long as it stays). Returns how many sessions
    /// it forgot.
    pub fn expire(&mut self, now: Instant) -> usize {
        for slot in self.slots.iter_mut().flatten() {
            super::shrink_drained(&mut slot.mailbox.frames);
        }
        let expired: Vec<usize> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(key, slot)| {
                let slot = slot.as_ref()?;
                let over =
                    slot.owner.is_none() && slot.parked_until.is_some_and(|until| until <= now);
                over.then_some(key)
            })
            .collect();
        for &key in &expired {
            self.remove(key);
        }
        expired.len()
    }

    /// The sources connected now, in no particular order.
    pub fn connected(&self) -> impl Iterator<Item = &str> {
        self.slots
            .iter()
            .flatten()
            .filter(|slot| slot.owner.is_some())
            .map(|slot| slot.source.as_str())
    }

    /// Whether a connection holds `source`.
    pub fn is_connected(&self, source: &str) -> bool {
        self.get(source).is_some_and(|slot| slot.owner.is_some())
    }

    /// Sessions kept for a resume, their clients disconnected.
    pub fn parked(&self) -> usize {
        self.slots
            .iter()
            .flatten()
            .filter(|slot| slot.owner.is_none())
            .count()
    }

    /// Bytes waiting in `source`'s mailbox.
    pub fn backlog(&self, source: &str) -> usize {
        self.get(source).map_or(0, |slot| slot.mailbox.bytes)
    }

    /// Forgets everything (the server closed).
    pub fn clear(&mut self) {
        self.slots.clear();
        self.free.clear();
        self.index.clear();
        self.rooms.clear();
        self.over_window = 0;
    }

    // ---- internals ----

    fn get(&self, source: &str) -> Option<&Slot<F, O>> {
        let key = *self.index.get(source)?;
        self.slots.get(key)?.as_ref()
    }

    fn slot_mut(&mut self, key: usize) -> Option<&mut Slot<F, O>> {
        self.slots.get_mut(key)?.as_mut()
    }

    /// The claim's slot, if the claim is current.
    fn owned(&mut self, claim: &Claim) -> Option<&mut Slot<F, O>> {
        let key = usize::try_from(claim.key).ok()?;
        self.slot_mut(key).filter(|slot| slot.epoch == claim.epoch)
    }

    /// The slot of `target` if frames addressed to it are taken.
    fn reachable(&self, target: &str) -> Option<usize> {
        let key = *self.index.get(target)?;
        self.slots.get(key)?.as_ref()?.reachable().then_some(key)
    }

    fn insert(&mut self, source: &str) -> usize {
        let slot = Slot {
            source: source.to_owned(),
            epoch: 0,
            owner: None,
            attempt: None,
            session: None,
            mailbox: Mailbox {
                first: 1,
                frames: VecDeque::new(),
                bytes: 0,
            },
            parked_until: None,
            waiters: Vec::new(),
            over_window: false,
            lost: 0,
            broken: false,
            rooms: BTreeSet::new(),
        };
        let key = match self.free.pop() {
            Some(key) => {
                self.slots[key] = Some(slot);
                key
            }
            None => {
                self.slots.push(Some(slot));
                self.slots.len() - 1
            }
        };
        self.index.insert(source.to_owned(), key);
        key
    }

    fn remove(&mut self, key: usize) {
        self.leave_all(key);
        if let Some(slot) = self.slots.get_mut(key).and_then(Option::take) {
            debug_assert!(
                !slot.over_window,
                "only connected slots are over the window"
            );
            self.index.remove(&slot.source);
            self.free.push(key);
        }
    }

    fn deliver(&mut self, key: usize, frame: F, notify: &mut impl FnMut(&O, Signal)) {
        if let Some(slot) = self.slot_mut(key) {
            slot.mailbox.push(frame);
            if let Some(owner) = &slot.owner {
                notify(owner, Signal::Mail);
            }
        }
        self.update_window(key);
    }

    fn join_key(&mut self, key: usize, room: &str) {
        let Some(slot) = self.slot_mut(key) else {
            return;
        };
        if slot.rooms.insert(room.to_owned()) {
            self.rooms.entry(room.to_owned()).or_default().push(key);
        }
    }

    /// Returns whether the slot was a member. A room without members is forgotten.
    fn leave_key(&mut self, key: usize, room: &str) -> bool {
        let Some(slot) = self.slot_mut(key) else {
            return false;
        };
        if !slot.rooms.remove(room) {
            return false;
        }
        if let Some(members) = self.rooms.get_mut(room) {
            members.retain(|&member| member != key);
            if members.is_empty() {
                self.rooms.remove(room);
            }
        }
        true
    }

    fn leave_all(&mut self, key: usize) {
        let rooms = match self.slot_mut(key) {
            Some(slot) => std::mem::take(&mut slot.rooms),
            None => return,
        };
        for room in rooms {
            if let Some(members) = self.rooms.get_mut(&room) {
                members.retain(|&member| member != key);
                if members.is_empty() {
                    self.rooms.remove(&room);
                }
            }
        }
    }

    /// Keeps the slot's `over_window` flag and the count of such sources right.
    fn update_window(&mut self, key: usize) {
        let window = self.limits.backlog_window;
        let Some(slot) = self.slots.get_mut(key).and_then(Option::as_mut) else {
            return;
        };
        let over = slot.owner.is_some() && slot.mailbox.bytes > window;
        if over != slot.over_window {
            slot.over_window = over;
            if over {
                self.over_window += 1;
            } else {
                self.over_window -= 1;
            }
        }
    }
}

/// Pushes `frame` into `slot`'s mailbox (a broadcast's or a room's), or, past its hard bound
/// (`limits`: the bound and the backlog window), breaks its session; returns whether it took
/// the frame. Counts the slot in `over_window` when the frame puts it over the window.
fn offer<F: FrameText, O>(
    slot: &mut Slot<F, O>,
    frame: &F,
    (max, window): (usize, usize),
    over_window: &mut usize,
    notify: &mut impl FnMut(&O, Signal),
) -> bool {
    if slot.mailbox.bytes + frame.len() > max {
        slot.lost += 1;
        if !slot.broken {
            slot.broken = true;
            if let Some(owner) = &slot.owner {
                notify(owner, Signal::Overflowed);
            }
        }
        return false;
    }
    slot.mailbox.push(frame.clone());
    if let Some(owner) = &slot.owner {
        notify(owner, Signal::Mail);
        if !slot.over_window && slot.mailbox.bytes > window {
            slot.over_window = true;
            *over_window += 1;
        }
    }
    true
}

/// Opens a hello's session in `slot` (see [`MemoryState::open`]); `new_sid` names a fresh
/// instance.
fn open_slot<F: FrameText, O>(
    slot: &mut Slot<F, O>,
    hello: Option<&Hello>,
    fresh_next: u64,
    new_sid: String,
) -> Opened {
    if let (Some(hello), Some(session)) = (hello, &slot.session) {
        if session.token == hello.token && !slot.broken {
            if hello.sid.as_deref() == Some(session.sid.as_str()) {
                let through = session.base.saturating_add(hello.ack);
                if through + 1 >= slot.mailbox.first && through < slot.mailbox.end() {
                    slot.mailbox.trim(through);
                    return Opened {
                        resumed: true,
                        consumed: session.consumed,
                        base: session.base,
                        next: through + 1,
                        lost: None,
                        sid: Some(session.sid.clone()),
                    };
                }
            } else {
                // The client never heard of this instance (its welcome was lost): none of its
                // frames reached the client, which counts from its beginning. What the client
                // lost is the instance it knew, which is gone.
                return Opened {
                    resumed: false,
                    consumed: session.consumed,
                    base: session.base,
                    next: slot.mailbox.first.max(session.base + 1),
                    lost: None,
                    sid: Some(session.sid.clone()),
                };
            }
        }
    }
    // Not resumable: frames before `fresh_next` were the previous session's, and lost to its
    // client; frames from there on belong to this connection.
    let previous = slot.session.take();
    let kept = match (hello, &previous) {
        (Some(hello), Some(previous)) if previous.token == hello.token => previous.consumed,
        _ => 0,
    };
    let dropped = slot.mailbox.trim(fresh_next - 1);
    let lost = (previous.is_some() || slot.broken).then_some(dropped + slot.lost);
    slot.lost = 0;
    slot.broken = false;
    let base = fresh_next - 1;
    let sid = hello.map(|hello| {
        slot.session = Some(Session {
            token: hello.token.clone(),
            sid: new_sid.clone(),
            consumed: kept,
            base,
        });
        new_sid
    });
    Opened {
        resumed: false,
        consumed: kept,
        base,
        next: fresh_next,
        lost: hello.and(lost),
        sid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sweep_gives_back_the_room_of_a_drained_mailbox() {
        let mut state: MemoryState<String, u8> = MemoryState::new(EngineLimits::default(), 1);
        let mut notify = |_: &u8, _: Signal| {};
        let claim = state
            .claim("a", None, 1, false, &mut notify)
            .expect("claimed");
        state.open(&claim, None, claim.next).expect("opened");
        for n in 0..20_000 {
            let frame = format!(r#"{{"type":"n","payload":{n}}}"#);
            assert_eq!(state.broadcast(&frame, None, &mut notify), 1);
        }
        let key = claim.key as usize;
        let room = |state: &MemoryState<String, u8>| {
            let slot = state.slots[key].as_ref().expect("the source's slot");
            (slot.mailbox.frames.len(), slot.mailbox.frames.capacity())
        };
        assert!(room(&state).1 >= 20_000);
        // Read and settled, all but 10: the room stays until the sweep.
        state.settle(&claim, 19_990, &mut notify);
        assert!(room(&state).1 >= 20_000);
        assert_eq!(state.expire(Instant::from_millis(0)), 0);
        let (len, capacity) = room(&state);
        assert_eq!(len, 10);
        assert!(capacity < 256, "{capacity}");
        let mut out = Vec::new();
        assert_eq!(state.fetch(&claim, 19_991, &mut out, 100), 10);
        assert_eq!(out[0], r#"{"type":"n","payload":19990}"#);
    }
}
