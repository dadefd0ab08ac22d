//! The server's reference driver ([`Relay`]) and what it records.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};

use crate::protocol::{Frame, RemoteError};
use crate::server::engine::{Attempt, Claim, ClaimRefused, Effect, Routed, Signal};
use crate::server::memory::{EngineLimits, MemoryState, Refused};
use crate::server::{
    CloseFrame, ConnectionSettings, DisconnectReason, HandlerSet, Output, ServerConnection,
    ServerEvent,
};
use crate::{Instant, Reply};

/// A connection's number: also its name as an owner in the engine, which addresses its
/// signals to it.
pub type ConnId = u64;

/// The application's handlers as the relay calls them: which message types they handle
/// ([`HandlerSet`], a copy per connection) and what each answers, at once.
pub trait Handlers: HandlerSet + Clone {
    /// The reply of the handler of `kind` to a message of `source` with `payload` (raw JSON).
    fn reply(&self, kind: &str, source: &str, payload: Option<String>) -> Reply;
}

/// What a connection writes to its client, in order, for the caller to carry over its link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transmit {
    /// A text frame.
    Frame {
        /// The frame.
        text: String,
        /// A frame from the mailbox (`Output::Deliver`): report it written with
        /// [`Relay::handle_written`] once the socket took it.
        numbered: bool,
    },
    /// A WebSocket ping; the client's WebSocket answers it by itself
    /// (`ServerConnection::handle_heard`).
    Ping,
    /// The connection ended: after the frames before it, this close frame, or nothing more
    /// (`None`: the client closed, or the transport is gone). The relay no longer has it.
    Close(Option<CloseFrame>),
}

/// A message the server consumed, in consumption order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumed {
    /// Its sender.
    pub source: String,
    /// Its id.
    pub id: u64,
    /// `"to"`, `"broadcast"`, `"room"`, `"join"`, `"leave"`, `"to_self"` (answered with an
    /// error), `"consume"`, `"resolve"`.
    pub effect: &'static str,
    /// Its type (empty when the effect carries no frame).
    pub kind: String,
    /// Its payload (raw JSON).
    pub payload: Option<String>,
    /// Its addressee, if directed.
    pub to: Option<String>,
    /// The message it answers, if a response.
    pub re: Option<u64>,
    /// The room it went to (`"room"`), or that was joined or left.
    pub room: Option<String>,
}

/// A response to one of the server's own messages: (responder, `re`, result).
pub type Response = (String, u64, Result<Option<String>, RemoteError>);

struct Conn<H> {
    machine: ServerConnection<String, H>,
    claim: Claim,
    /// Signals rung since the connection last looked (its doorbell: one bit per signal).
    rung: u8,
    /// The close decided in this drain, if any.
    closing: Option<Option<CloseFrame>>,
    released: bool,
}

/// The server's reference driver: what `wsrelay-server`'s connection task does
/// (`native-server/src/connection.rs`), synchronously, over the in-memory engine's state.
///
/// A [`Relay`] owns the engine ([`MemoryState`]) and every connection's [`ServerConnection`]
/// with its claim. Its caller feeds a connection's input ([`Relay::input`], [`Relay::connect`],
/// [`Relay::handle_timeouts`]) and then calls [`Relay::run`], the one drain loop: each
/// connection that has something to do handles the signals its doorbell rang (in
/// [`Signal::ALL`]'s order), carries out its outputs against the engine, ends the batch
/// ([`ServerConnection::flush`]) and carries out what that asks. What a connection writes to
/// its client comes out of [`Relay::poll_transmit`], for the caller to carry over a link as it
/// wishes (the simulation's links with latency, or nowhere at all for the fuzz target).
/// Handlers answer at once, through [`Handlers::reply`].
///
/// The relay records what tests check: the messages consumed, the server's events, how each
/// connection ended, and the answers to the server's own requests.
pub struct Relay<H> {
    /// What each new connection is created with.
    pub settings: ConnectionSettings,
    /// The engine's limits (a restart keeps them).
    pub limits: EngineLimits,
    /// The application's handlers (each connection gets a copy).
    pub handlers: H,
    /// Claims refuse a source that another client instance holds (`on_duplicate: reject`).
    pub exclusive: bool,
    /// Most outputs one [`run`](Self::run) may carry out: past it, the drain is a livelock
    /// and the relay panics.
    pub max_steps: usize,
    /// How many times the process restarted ([`restart`](Self::restart)).
    pub restarts: u32,
    /// Connection attempts refused as stale (a newer attempt of the client claimed first).
    pub stale_attempts: u64,
    /// Every message consumed, in order.
    pub consumed: Vec<Consumed>,
    /// Every server event, with the source it concerns.
    pub events: Vec<(String, ServerEvent)>,
    /// How each connection ended, with its source.
    pub endings: Vec<(String, DisconnectReason)>,
    /// Answers to the server's own messages (responses without `to`).
    pub responses: Vec<Response>,
    engine: MemoryState<String, ConnId>,
    conns: BTreeMap<ConnId, Conn<H>>,
    next_conn: ConnId,
    /// Signals the engine raised, not yet rung at their connection's doorbell.
    signals: VecDeque<(ConnId, Signal)>,
    /// Connections with something to do.
    dirty: BTreeSet<ConnId>,
    /// Every connection's deadline as last seen; an entry is stale when the connection's
    /// `poll_timeout` no longer says so.
    timers: BinaryHeap<Reverse<(Instant, ConnId)>>,
    outbox: VecDeque<(ConnId, Transmit)>,
}

/// The bit of `signal` in a doorbell.
fn bit(signal: Signal) -> u8 {
    Signal::ALL
        .iter()
        .position(|s| *s == signal)
        .map_or(0, |index| 1 << index)
}

impl<H: Handlers> Relay<H> {
    /// A relay with no connection, its engine empty (session instances named `1.n`).
    pub fn new(settings: ConnectionSettings, limits: EngineLimits, handlers: H) -> Self {
        Relay {
            engine: MemoryState::new(limits.clone(), 1),
            settings,
            limits,
            handlers,
            exclusive: false,
            max_steps: 10_000_000,
            restarts: 0,
            stale_attempts: 0,
            consumed: Vec::new(),
            events: Vec::new(),
            endings: Vec::new(),
            responses: Vec::new(),
            conns: BTreeMap::new(),
            next_conn: 1,
            signals: VecDeque::new(),
            dirty: BTreeSet::new(),
            timers: BinaryHeap::new(),
            outbox: VecDeque::new(),
        }
    }

    /// The same relay with its engine naming its session instances after `instance`.
    pub fn with_instance(mut self, instance: u64) -> Self {
        self.engine = MemoryState::new(self.limits.clone(), instance);
        self
    }

    // ---- connections ----

    /// A client's upgrade of `source` (by connection attempt `attempt`, as its URL names it;
    /// `announced`: the URL says it speaks the protocol) reaches the server: the claim, then a
    /// new connection (to [`run`](Self::run)), or the refusal's close frame, which is all the
    /// client gets.
    pub fn connect(
        &mut self,
        now: Instant,
        source: &str,
        attempt: Option<&Attempt>,
        announced: bool,
    ) -> Result<ConnId, CloseFrame> {
        let id = self.next_conn;
        let signals = &mut self.signals;
        let claimed =
            self.engine
                .claim(source, attempt, id, self.exclusive, &mut |owner, signal| {
                    signals.push_back((*owner, signal))
                });
        let claim = match claimed {
            Ok(claim) => claim,
            Err(refused) => {
                self.stale_attempts += u64::from(refused == ClaimRefused::Stale);
                return Err(refused.close_frame());
            }
        };
        self.next_conn += 1;
        let machine = ServerConnection::new(
            source.to_owned(),
            claim.next,
            announced,
            self.settings.clone(),
            self.handlers.clone(),
            now,
        );
        self.conns.insert(
            id,
            Conn {
                machine,
                claim,
                rung: 0,
                closing: None,
                released: false,
            },
        );
        self.dirty.insert(id);
        Ok(id)
    }

    /// `source` is claimed by a connection nobody drives (its signals go nowhere): another
    /// process's connection taking the source over, or an idle peer. With `open`, a bare
    /// client is set up there, so that what is sent to `source` is kept. Returns the claim's
    /// owner.
    pub fn claim_idle(&mut self, source: &str, open: bool) -> Result<ConnId, ClaimRefused> {
        let id = self.next_conn;
        let signals = &mut self.signals;
        let claim = self
            .engine
            .claim(source, None, id, false, &mut |owner, signal| {
                signals.push_back((*owner, signal))
            })?;
        self.next_conn += 1;
        if open {
            // Fenced only if claimed again in between, which cannot be.
            let _ = self.engine.open(&claim, None, claim.next);
        }
        Ok(id)
    }

    /// Connection `conn`'s state machine, to feed it an input (a frame, the transport's end,
    /// a timeout...); the connection carries it out at the next [`run`](Self::run). `None`
    /// once it has ended.
    pub fn input(&mut self, conn: ConnId) -> Option<&mut ServerConnection<String, H>> {
        let c = self.conns.get_mut(&conn)?;
        self.dirty.insert(conn);
        Some(&mut c.machine)
    }

    /// Connection `conn`'s state machine, while it lives.
    pub fn connection(&self, conn: ConnId) -> Option<&ServerConnection<String, H>> {
        self.conns.get(&conn).map(|c| &c.machine)
    }

    /// The socket of `conn` took `count` more frames of [`Transmit::Frame`] with `numbered`.
    pub fn handle_written(&mut self, conn: ConnId, count: usize) {
        if let Some(machine) = self.input(conn) {
            machine.handle_written(count);
        }
    }

    /// The earliest deadline of any connection.
    pub fn next_timeout(&mut self) -> Option<Instant> {
        while let Some(&Reverse((at, conn))) = self.timers.peek() {
            if self.deadline(conn) == Some(at) {
                return Some(at);
            }
            self.timers.pop();
        }
        None
    }

    /// Every connection whose deadline has come by `now` handles its timeout (carried out at
    /// the next [`run`](Self::run)).
    pub fn handle_timeouts(&mut self, now: Instant) {
        while let Some(&Reverse((at, conn))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            if self.deadline(conn) == Some(at) {
                if let Some(machine) = self.input(conn) {
                    machine.handle_timeout(now);
                }
            }
        }
    }

    fn deadline(&self, conn: ConnId) -> Option<Instant> {
        self.conns.get(&conn).and_then(|c| c.machine.poll_timeout())
    }

    /// What a connection wrote to its client, in order.
    pub fn poll_transmit(&mut self) -> Option<(ConnId, Transmit)> {
        self.outbox.pop_front()
    }

    // ---- the engine ----

    /// The server's own message to `target` (`send_to`).
    pub fn send(&mut self, target: &str, frame: String) -> Result<(), Refused> {
        let signals = &mut self.signals;
        self.engine.send(target, frame, &mut |owner, signal| {
            signals.push_back((*owner, signal))
        })
    }

    /// The server's own message to every source but `exclude`; returns how many took it.
    pub fn broadcast(&mut self, frame: String, exclude: Option<&str>) -> usize {
        let signals = &mut self.signals;
        self.engine
            .broadcast(&frame, exclude, &mut |owner, signal| {
                signals.push_back((*owner, signal))
            })
    }

    /// The engine's periodic sweep (sessions past their grace period); returns how many
    /// sessions it forgot.
    pub fn expire(&mut self, now: Instant) -> usize {
        self.engine.expire(now)
    }

    /// The process comes back as a new one: the engine forgets every session and names its
    /// new ones apart from the old process's.
    pub fn restart(&mut self) {
        self.restarts += 1;
        let instance = 1 + u64::from(self.restarts);
        self.engine = MemoryState::new(self.limits.clone(), instance);
        self.signals.clear();
    }

    /// The engine's state.
    pub fn engine(&self) -> &MemoryState<String, ConnId> {
        &self.engine
    }

    /// Connections the relay has now.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Sessions parked for a resume.
    pub fn parked(&self) -> usize {
        self.engine.parked()
    }

    /// Bytes waiting in `source`'s mailbox.
    pub fn backlog(&self, source: &str) -> usize {
        self.engine.backlog(source)
    }

    /// The largest backlog any connection holds, in bytes.
    pub fn largest_backlog(&self) -> usize {
        self.conns
            .values()
            .map(|c| c.machine.backlog_bytes())
            .max()
            .unwrap_or(0)
    }

    /// Whether `source` has a live connection.
    pub fn is_connected(&self, source: &str) -> bool {
        self.engine.is_connected(source)
    }

    // ---- the drain loop ----

    /// Drives every connection that has something to do until none has: the signals rung at
    /// its doorbell, then its outputs carried out, the batch ended, and what that asks carried
    /// out (what the connection task of `wsrelay-server` does after each wake-up). Panics past
    /// [`max_steps`](Self::max_steps) outputs: a livelock.
    pub fn run(&mut self, now: Instant) {
        let mut steps = 0;
        loop {
            while let Some((owner, signal)) = self.signals.pop_front() {
                if let Some(c) = self.conns.get_mut(&owner) {
                    c.rung |= bit(signal);
                    self.dirty.insert(owner);
                }
            }
            let Some(conn) = self.dirty.pop_first() else {
                return;
            };
            self.drive(conn, now, &mut steps);
        }
    }

    fn drive(&mut self, conn: ConnId, now: Instant, steps: &mut usize) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let rung = std::mem::take(&mut c.rung);
        for signal in Signal::ALL {
            if rung & bit(signal) != 0 {
                c.machine.handle_signal(now, signal);
            }
        }
        self.drain(conn, now, steps);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.machine.flush();
        }
        self.drain(conn, now, steps);
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if let Some(close) = c.closing.take() {
            // What the connection task does after its loop: the source released if the state
            // machine did not, then the farewell.
            if !c.released {
                let signals = &mut self.signals;
                self.engine.release(&c.claim, now, &mut |owner, signal| {
                    signals.push_back((*owner, signal))
                });
            }
            self.conns.remove(&conn);
            self.outbox.push_back((conn, Transmit::Close(close)));
        } else if let Some(at) = c.machine.poll_timeout() {
            self.timers.push(Reverse((at, conn)));
        }
    }

    /// Carries out `conn`'s outputs until it has none.
    fn drain(&mut self, conn: ConnId, now: Instant, steps: &mut usize) {
        while let Some(output) = self
            .conns
            .get_mut(&conn)
            .and_then(|c| c.machine.poll_output())
        {
            *steps += 1;
            assert!(
                *steps <= self.max_steps,
                "the drain did not settle in {} steps: a livelock",
                self.max_steps
            );
            self.apply(conn, now, output);
        }
    }

    /// Carries out one output of `conn` (`Conn::apply` of the connection task).
    fn apply(&mut self, conn: ConnId, now: Instant, output: Output<String>) {
        let Relay {
            engine,
            conns,
            signals,
            handlers,
            outbox,
            consumed,
            events,
            endings,
            responses,
            ..
        } = self;
        let Some(c) = conns.get_mut(&conn) else {
            return;
        };
        let mut notify = |owner: &ConnId, signal: Signal| signals.push_back((*owner, signal));
        match output {
            Output::Transmit(text) => {
                let numbered = false;
                outbox.push_back((conn, Transmit::Frame { text, numbered }));
            }
            Output::Deliver(text) => {
                let numbered = true;
                outbox.push_back((conn, Transmit::Frame { text, numbered }));
            }
            Output::DeliverLogged(text) => {
                let numbered = false;
                outbox.push_back((conn, Transmit::Frame { text, numbered }));
            }
            Output::Ping => outbox.push_back((conn, Transmit::Ping)),
            Output::Open { hello, fresh_next } => {
                match engine.open(&c.claim, hello.as_ref(), fresh_next) {
                    Ok(opened) => {
                        c.claim.session = hello.map(|hello| hello.token);
                        c.machine.handle_opened(opened);
                    }
                    Err(_) => c
                        .machine
                        .handle_engine_down("the source was claimed again".into()),
                }
            }
            Output::Fetch { from, max } => {
                let mut frames = Vec::new();
                engine.fetch(&c.claim, from, &mut frames, max);
                c.machine.handle_fetched(now, frames);
            }
            Output::Route { id, effect } => {
                let routed = engine.route(&c.claim, id, &effect, &conn, &mut notify);
                if routed == Routed::Done {
                    let source = &c.claim.source;
                    if let Some(id) = id {
                        consumed.push(record(source, id, &effect));
                    }
                    if let Effect::Resolve { re, result, .. } = &effect {
                        responses.push((source.clone(), *re, result.clone()));
                    }
                }
                c.machine.handle_routed(now, routed);
            }
            Output::Append(frame) => engine.append(&c.claim, frame, &mut notify),
            Output::Late(frame) => {
                // The session may have moved to a new connection: address the source.
                let _ = engine.send(&c.claim.source, frame, &mut notify);
            }
            Output::Call {
                kind,
                source,
                payload,
            } => {
                let reply = handlers.reply(&kind, &source, payload);
                c.machine.handle_reply(reply);
            }
            Output::Settle { through } => engine.settle(&c.claim, through, &mut notify),
            // The memory engine keeps a room's messages in its members' mailboxes: no logs.
            Output::FetchLogs { .. } => c.machine.handle_logs_fetched(now, Vec::new()),
            Output::SettleLog { .. } => {}
            Output::Release => {
                engine.release(&c.claim, now, &mut notify);
                c.released = true;
            }
            Output::Close(close) => {
                if let Some(reason) = c.machine.ending() {
                    endings.push((c.claim.source.clone(), reason.clone()));
                }
                c.closing = Some(close);
            }
            Output::Event(event) => events.push((c.claim.source.clone(), event)),
        }
    }
}

/// What the server consumed, as the model tests check it.
fn record(source: &str, id: u64, effect: &Effect<String>) -> Consumed {
    let (name, frame) = match effect {
        Effect::To { frame, .. } => ("to", Some(frame)),
        Effect::Broadcast { frame } => ("broadcast", Some(frame)),
        Effect::Room { frame, .. } => ("room", Some(frame)),
        Effect::Join { frame, .. } => ("join", Some(frame)),
        Effect::Leave { frame, .. } => ("leave", Some(frame)),
        Effect::ToSelf { frame } => ("to_self", Some(frame)),
        Effect::Consume => ("consume", None),
        Effect::Resolve { .. } => ("resolve", None),
    };
    let mut record = Consumed {
        source: source.to_owned(),
        id,
        effect: name,
        kind: String::new(),
        payload: None,
        to: None,
        re: None,
        room: None,
    };
    if let Some(Ok(Frame::Message(message))) = frame.map(|f| Frame::decode(f)) {
        record.room = message.room.map(|room| room.into_owned());
        record.kind = message.kind.into_owned();
        record.payload = message.payload.map(str::to_owned);
        record.to = message.to.map(|to| to.into_owned());
        record.re = message.re;
    }
    record
}
