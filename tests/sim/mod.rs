//! A deterministic simulation of wsrelay clients and the wsrelay server on a virtual clock.
//!
//! Both sides are the real state machines: every client is a [`ClientCore`], every server
//! connection a [`ServerConnection`], and sessions and mailboxes live in the real in-memory
//! engine ([`MemoryState`]), as in `wsrelay-server`. What the simulation adds is what the
//! drivers add: links with a fixed latency that can be cut (both ends see a close), stalled
//! (frames vanish silently, like a dead NAT) and restored; a server process that can go down,
//! come back, or restart and lose its sessions; and, per server connection, the drain loop
//! of `native-server/src/connection.rs` (carry out outputs, fetch mail, end the batch).
//!
//! [`Sim::step`] delivers the earliest pending frame or fires the earliest timer, advancing the
//! virtual clock to it; nothing depends on real time, so every run is reproducible.

#![allow(dead_code, missing_docs)]

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::time::Duration;

use wsrelay_core::client::{ClientCore, Event, Options, Output, TransportId};
use wsrelay_core::protocol::{Frame, RemoteError};
use wsrelay_core::server::engine::ClaimRefused;
use wsrelay_core::server::engine::{Attempt, Claim, Effect, Routed, Signal};
use wsrelay_core::server::memory::{MemoryLimits, MemoryState};
use wsrelay_core::server::{
    ConnectionSettings, DisconnectReason, HandlerSet, Output as ServerOutput, ServerConnection,
    ServerEvent,
};
use wsrelay_core::Instant;

type ConnId = u64;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Delivery {
    ClientOpened {
        client: usize,
        transport: TransportId,
        conn: ConnId,
    },
    ClientFrame {
        client: usize,
        transport: TransportId,
        text: String,
    },
    ClientClosed {
        client: usize,
        transport: TransportId,
        code: u16,
    },
    ServerFrame {
        conn: ConnId,
        text: String,
    },
    ServerClosed {
        conn: ConnId,
    },
    /// The client's WebSocket answered the server's ping (a browser does so by itself).
    ServerPong {
        conn: ConnId,
    },
}

/// A message the server consumed, in consumption order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumed {
    pub source: String,
    pub id: u64,
    /// `"to"`, `"broadcast"`, `"reply"` (answered with an error), `"consume"`, `"resolve"`.
    pub effect: &'static str,
    pub kind: String,
    pub payload: Option<String>,
    pub to: Option<String>,
    pub re: Option<u64>,
}

pub struct SimClient {
    pub source: String,
    pub core: ClientCore,
    /// Every application event, with the time it was emitted.
    pub events: Vec<(Instant, Event)>,
    /// Answer every message that has an id with its own payload (as an `on` handler would).
    pub auto_respond: bool,
    /// Stop reading: frames from the server wait on the link (a client that does not keep up).
    pub paused: bool,
    /// Application messages received so far.
    pub messages: usize,
    /// Sends and responses acknowledged so far.
    pub delivered: usize,
    held: VecDeque<Delivery>,
    /// The transport the driver has open, and the server connection behind it.
    socket: Option<(TransportId, Option<ConnId>)>,
    /// Hold the client's connection attempts back on their way to the server (a stalled
    /// link): they reach it when [`Sim::release_attempts`] says so.
    pub hold_attempts: bool,
    held_attempts: Vec<TransportId>,
}

/// The application handler types the simulated server takes; each answers with the payload.
#[derive(Debug, Clone, Default)]
pub struct EchoHandlers(pub Vec<String>);

impl HandlerSet for EchoHandlers {
    fn handles(&self, kind: &str) -> bool {
        self.0.iter().any(|k| k == kind)
    }
}

struct ServerConn {
    client: usize,
    machine: ServerConnection<String, EchoHandlers>,
    claim: Claim,
    stalled: bool,
}

pub struct SimServer {
    pub up: bool,
    pub settings: ConnectionSettings,
    pub limits: MemoryLimits,
    pub handlers: EchoHandlers,
    engine: MemoryState<String, ConnId>,
    conns: BTreeMap<ConnId, ServerConn>,
    next_conn: ConnId,
    pub restarts: u32,
    /// Connection attempts refused as stale (a newer attempt of the client claimed first).
    pub stale_attempts: u64,
    /// Signals the engine raised, for connections to handle.
    signals: VecDeque<(ConnId, Signal)>,
    pub consumed: Vec<Consumed>,
    /// Every server event, with the source it concerns.
    pub events: Vec<(String, ServerEvent)>,
    /// How each connection ended.
    pub endings: Vec<(String, DisconnectReason)>,
    /// Answers to the server's own messages (responses without `to`).
    pub answers: Vec<(String, u64, Result<Option<String>, RemoteError>)>,
}

impl SimServer {
    fn new(settings: ConnectionSettings, limits: MemoryLimits) -> Self {
        SimServer {
            up: true,
            engine: MemoryState::new(limits.clone(), 1),
            settings,
            limits,
            handlers: EchoHandlers::default(),
            conns: BTreeMap::new(),
            next_conn: 1,
            restarts: 0,
            stale_attempts: 0,
            signals: VecDeque::new(),
            consumed: Vec::new(),
            events: Vec::new(),
            endings: Vec::new(),
            answers: Vec::new(),
        }
    }

    /// Connections the server has now.
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
}

pub struct Sim {
    pub now: Instant,
    pub latency: Duration,
    pub clients: Vec<SimClient>,
    pub server: SimServer,
    pending: BinaryHeap<Reverse<(Instant, u64, Delivery)>>,
    seq: u64,
    /// Every state machine's next deadline as last seen; an entry is stale when the machine's
    /// `poll_timeout` no longer says so (checked when it comes up), which keeps a step
    /// O(log n) however many clients there are.
    timers: BinaryHeap<Reverse<(Instant, Timer)>>,
    /// Server connections with input to carry out.
    dirty: BTreeSet<ConnId>,
    last_expiry: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Client(usize),
    Conn(ConnId),
}

/// The limits the simulation runs with by default: the server's, with a grace period longer
/// than any test runs, so that sessions only end when a test says so.
pub fn default_limits() -> MemoryLimits {
    MemoryLimits {
        session_grace: Duration::from_secs(100_000),
        ..MemoryLimits::default()
    }
}

impl Sim {
    pub fn new() -> Self {
        Sim::with_server(ConnectionSettings::default(), default_limits())
    }

    pub fn with_server(settings: ConnectionSettings, limits: MemoryLimits) -> Self {
        Sim {
            now: Instant::from_millis(0),
            latency: Duration::from_millis(5),
            clients: Vec::new(),
            server: SimServer::new(settings, limits),
            pending: BinaryHeap::new(),
            seq: 0,
            timers: BinaryHeap::new(),
            dirty: BTreeSet::new(),
            last_expiry: Instant::from_millis(0),
        }
    }

    /// Adds a client (it starts connecting at once unless `start_closed`).
    pub fn add_client(&mut self, source: &str, options: Options, seed: u64) -> usize {
        let core = ClientCore::new(options, seed, self.now);
        self.clients.push(SimClient {
            source: source.to_owned(),
            core,
            events: Vec::new(),
            auto_respond: false,
            paused: false,
            messages: 0,
            delivered: 0,
            held: VecDeque::new(),
            socket: None,
            hold_attempts: false,
            held_attempts: Vec::new(),
        });
        let index = self.clients.len() - 1;
        self.drain(index);
        index
    }

    fn schedule(&mut self, after: Duration, delivery: Delivery) {
        self.seq += 1;
        self.pending
            .push(Reverse((self.now + after, self.seq, delivery)));
    }

    /// Runs `f` on client `index`'s core at the current time, then carries out its outputs.
    pub fn with_client<R>(
        &mut self,
        index: usize,
        f: impl FnOnce(&mut ClientCore, Instant) -> R,
    ) -> R {
        let now = self.now;
        let result = f(&mut self.clients[index].core, now);
        self.drain(index);
        result
    }

    /// Carries out everything client `index`'s core asked for (the driver's drain loop).
    fn drain(&mut self, index: usize) {
        self.drain_outputs(index);
        if let Some(at) = self.clients[index].core.poll_timeout() {
            self.timers.push(Reverse((at, Timer::Client(index))));
        }
    }

    fn drain_outputs(&mut self, index: usize) {
        while let Some(output) = self.clients[index].core.poll_output() {
            match output {
                Output::Connect(transport) => self.connect(index, transport),
                Output::Transmit(text) => {
                    if let Some((_, Some(conn))) = self.clients[index].socket {
                        let stalled = self.server.conns.get(&conn).is_none_or(|c| c.stalled);
                        if !stalled {
                            self.schedule(self.latency, Delivery::ServerFrame { conn, text });
                        }
                    }
                }
                Output::CloseTransport { transport, .. } => {
                    if let Some((current, conn)) = self.clients[index].socket {
                        if current == transport {
                            self.clients[index].socket = None;
                            if let Some(conn) = conn {
                                self.schedule(self.latency, Delivery::ServerClosed { conn });
                            }
                        }
                    }
                }
                Output::Event(event) => self.on_event(index, event),
            }
        }
    }

    fn on_event(&mut self, index: usize, event: Event) {
        let client = &mut self.clients[index];
        match event {
            Event::Message(_) => client.messages += 1,
            Event::Delivered { .. } => client.delivered += 1,
            _ => {}
        }
        if let (true, Event::Message(message)) = (client.auto_respond, &event) {
            if let Some(target) = message.reply_target() {
                let payload = message.payload.clone().unwrap_or_else(|| "null".into());
                // A refused response (queue full, closed) is the application's to see; the
                // simulation records it as an event.
                if let Err(error) = client.core.respond(&target, Ok(&payload)) {
                    client.events.push((self.now, Event::Error(error)));
                }
            }
        }
        self.clients[index].events.push((self.now, event));
    }

    fn connect(&mut self, index: usize, transport: TransportId) {
        if !self.server.up {
            self.clients[index].socket = Some((transport, None));
            let closed = Delivery::ClientClosed {
                client: index,
                transport,
                code: 1006,
            };
            self.schedule(self.latency, closed);
            return;
        }
        self.clients[index].socket = Some((transport, None));
        if self.clients[index].hold_attempts {
            self.clients[index].held_attempts.push(transport);
            return;
        }
        self.upgrade(index, transport);
    }

    /// How many of client `index`'s attempts are held back now.
    pub fn held_attempts(&self, index: usize) -> usize {
        self.clients[index].held_attempts.len()
    }

    /// The attempts of client `index` held back so far reach the server now, in the order they
    /// were made, over links whose client end is gone: the client gave up on each of them
    /// (the server learns it only from its own timeouts). Returns how many the server took
    /// (claimed) rather than refused.
    pub fn release_attempts(&mut self, index: usize) -> usize {
        let held = std::mem::take(&mut self.clients[index].held_attempts);
        held.into_iter()
            .filter(|&transport| self.upgrade(index, transport).is_some())
            .count()
    }

    /// Attempt `transport` of client `index` reaches the server: the claim, then the
    /// connection (returned), or the refusal the client learns as a close.
    fn upgrade(&mut self, index: usize, transport: TransportId) -> Option<ConnId> {
        let source = self.clients[index].source.clone();
        // What the client's driver puts in the URL, read as the server reads it.
        let attempt = Attempt::parse(&self.clients[index].core.attempt(transport));
        let conn = self.server.next_conn;
        let signals = &mut self.server.signals;
        let claimed = self.server.engine.claim(
            &source,
            attempt.as_ref(),
            conn,
            false,
            &mut |owner, signal| signals.push_back((*owner, signal)),
        );
        let claim = match claimed {
            Ok(claim) => claim,
            Err(refused) => {
                let code = refused.close_frame().code;
                self.server.stale_attempts += u64::from(refused == ClaimRefused::Stale);
                let closed = Delivery::ClientClosed {
                    client: index,
                    transport,
                    code,
                };
                self.schedule(self.latency, closed);
                return None;
            }
        };
        self.server.next_conn += 1;
        // The server has the connection from here on (the client learns it one latency later).
        let current = self.clients[index].socket.map(|(t, _)| t) == Some(transport);
        if current {
            self.clients[index].socket = Some((transport, Some(conn)));
        }
        let machine = ServerConnection::new(
            source,
            claim.next,
            true,
            self.server.settings.clone(),
            self.server.handlers.clone(),
            self.now,
        );
        self.server.conns.insert(
            conn,
            ServerConn {
                client: index,
                machine,
                claim,
                // An attempt its client gave up on: nothing reaches the server from it.
                stalled: !current,
            },
        );
        if current {
            self.schedule(
                self.latency,
                Delivery::ClientOpened {
                    client: index,
                    transport,
                    conn,
                },
            );
        }
        self.dirty.insert(conn);
        self.run_server();
        Some(conn)
    }

    /// Whether a timer entry still stands.
    fn current(&self, at: Instant, timer: Timer) -> bool {
        let deadline = match timer {
            Timer::Client(index) => self.clients[index].core.poll_timeout(),
            Timer::Conn(conn) => self
                .server
                .conns
                .get(&conn)
                .and_then(|c| c.machine.poll_timeout()),
        };
        deadline == Some(at)
    }

    /// The earliest moment something happens: a delivery or a timer.
    fn next_time(&mut self) -> Option<Instant> {
        while let Some(&Reverse((at, timer))) = self.timers.peek() {
            if self.current(at, timer) {
                break;
            }
            self.timers.pop();
        }
        let delivery = self.pending.peek().map(|Reverse((at, _, _))| *at);
        let timer = self.timers.peek().map(|Reverse((at, _))| *at);
        [delivery, timer].into_iter().flatten().min()
    }

    /// Advances to the next event and handles it. Returns false when nothing is left to happen.
    pub fn step(&mut self) -> bool {
        let Some(at) = self.next_time() else {
            return false;
        };
        self.now = self.now.max(at);
        let now = self.now;
        if now.saturating_duration_since(self.last_expiry) >= Duration::from_secs(1) {
            self.last_expiry = now;
            self.server.engine.expire(now);
        }
        if let Some(Reverse((due, _, _))) = self.pending.peek() {
            if *due <= now {
                let Some(Reverse((_, _, delivery))) = self.pending.pop() else {
                    return false;
                };
                self.deliver(delivery);
                return true;
            }
        }
        while let Some(&Reverse((at, timer))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            if !self.current(at, timer) {
                continue;
            }
            match timer {
                Timer::Client(index) => {
                    self.clients[index].core.handle_timeout(now);
                    self.drain(index);
                }
                Timer::Conn(conn) => {
                    if let Some(c) = self.server.conns.get_mut(&conn) {
                        c.machine.handle_timeout(now);
                        self.dirty.insert(conn);
                    }
                }
            }
        }
        self.run_server();
        true
    }

    /// Steps until `duration` of virtual time has passed, or nothing is left to happen.
    pub fn run_for(&mut self, duration: Duration) {
        let end = self.now + duration;
        while self.next_time().is_some_and(|t| t <= end) {
            self.step();
        }
        self.now = self.now.max(end);
    }

    /// Steps until `done` holds; panics after `max_steps` (a livelock guard).
    pub fn run_until(&mut self, max_steps: usize, mut done: impl FnMut(&Sim) -> bool) {
        for _ in 0..max_steps {
            if done(self) {
                return;
            }
            if !self.step() {
                break;
            }
        }
        assert!(
            done(self),
            "condition not reached within {max_steps} steps at {:?}",
            self.now
        );
    }

    fn deliver(&mut self, delivery: Delivery) {
        let now = self.now;
        match delivery {
            Delivery::ClientOpened {
                client,
                transport,
                conn,
            } => {
                let current = self.clients[client].socket;
                if current == Some((transport, Some(conn))) && self.server.conns.contains_key(&conn)
                {
                    self.clients[client].core.handle_opened(now, transport);
                    self.drain(client);
                } else if let Some(c) = self.server.conns.get_mut(&conn) {
                    // The client gave up on this attempt before it opened.
                    c.machine.handle_closed(None);
                    self.dirty.insert(conn);
                    self.run_server();
                }
            }
            Delivery::ClientFrame {
                client,
                transport,
                text,
            } => {
                if self.clients[client].paused {
                    self.clients[client].held.push_back(Delivery::ClientFrame {
                        client,
                        transport,
                        text,
                    });
                    return;
                }
                self.clients[client]
                    .core
                    .handle_frame(now, transport, &text);
                self.drain(client);
            }
            Delivery::ClientClosed {
                client,
                transport,
                code,
            } => {
                if self.clients[client].socket.map(|(t, _)| t) == Some(transport) {
                    self.clients[client].socket = None;
                }
                self.clients[client]
                    .core
                    .handle_closed(now, transport, code, "");
                self.drain(client);
            }
            Delivery::ServerFrame { conn, text } => {
                if let Some(c) = self.server.conns.get_mut(&conn) {
                    c.machine.handle_text(now, &text);
                    self.dirty.insert(conn);
                    self.run_server();
                }
            }
            Delivery::ServerClosed { conn } => {
                if let Some(c) = self.server.conns.get_mut(&conn) {
                    c.machine.handle_closed(None);
                    self.dirty.insert(conn);
                    self.run_server();
                }
            }
            Delivery::ServerPong { conn } => {
                if let Some(c) = self.server.conns.get_mut(&conn) {
                    c.machine.handle_heard();
                }
            }
        }
    }

    // ---- faults ----

    /// Cuts client `index`'s link: in-flight frames are lost, both ends see it close (1006).
    pub fn cut(&mut self, index: usize) {
        if let Some((transport, conn)) = self.clients[index].socket.take() {
            if let Some(conn) = conn {
                self.drop_link(conn);
            }
            self.forget_client_frames(index, transport);
            let now = self.now;
            self.clients[index]
                .core
                .handle_closed(now, transport, 1006, "link cut");
            self.drain(index);
        }
    }

    /// The server closes client `index`'s connection with `code` and `reason` (as a server
    /// would that replaced it, for example); frames in flight are lost.
    pub fn server_close(&mut self, index: usize, code: u16, reason: &str) {
        if let Some((transport, conn)) = self.clients[index].socket.take() {
            if let Some(conn) = conn {
                self.drop_link(conn);
            }
            self.forget_client_frames(index, transport);
            let now = self.now;
            self.clients[index]
                .core
                .handle_closed(now, transport, code, reason);
            self.drain(index);
        }
    }

    fn forget_client_frames(&mut self, index: usize, transport: TransportId) {
        self.pending.retain(|Reverse((_, _, d))| !matches!(d, Delivery::ClientFrame { client, transport: t, .. } | Delivery::ClientOpened { client, transport: t, .. } if *client == index && *t == transport));
        self.clients[index].held.retain(
            |d| !matches!(d, Delivery::ClientFrame { transport: t, .. } if *t == transport),
        );
    }

    /// The server side of a link goes away: the connection sees the stream end, and what it
    /// had in flight to the client is lost.
    fn drop_link(&mut self, conn: ConnId) {
        self.pending.retain(
            |Reverse((_, _, d))| !matches!(d, Delivery::ServerFrame { conn: c, .. } | Delivery::ServerClosed { conn: c } | Delivery::ServerPong { conn: c } if *c == conn),
        );
        if let Some(c) = self.server.conns.get_mut(&conn) {
            c.stalled = true; // nothing it writes reaches anyone any more
            c.machine.handle_closed(None);
            self.dirty.insert(conn);
        }
        self.run_server();
    }

    /// Stalls client `index`'s link: from now on frames vanish in both directions and nobody
    /// is told (a silent server, a dead NAT mapping).
    pub fn stall(&mut self, index: usize) {
        if let Some((transport, Some(conn))) = self.clients[index].socket {
            if let Some(c) = self.server.conns.get_mut(&conn) {
                c.stalled = true;
            }
            self.pending.retain(|Reverse((_, _, d))| match d {
                Delivery::ClientFrame {
                    client,
                    transport: t,
                    ..
                } => !(*client == index && *t == transport),
                Delivery::ServerFrame { conn: c, .. } | Delivery::ServerPong { conn: c } => {
                    *c != conn
                }
                _ => true,
            });
        }
    }

    /// Client `index` stops reading what the server sends (frames wait on the link).
    pub fn pause(&mut self, index: usize) {
        self.clients[index].paused = true;
    }

    /// Client `index` reads again, everything that waited first.
    pub fn resume(&mut self, index: usize) {
        self.clients[index].paused = false;
        let held: Vec<Delivery> = self.clients[index].held.drain(..).collect();
        for delivery in held {
            self.deliver(delivery);
        }
    }

    /// The server process stops: every connection is cut; sessions survive only if it comes
    /// back with [`Sim::server_up`] rather than [`Sim::server_restart`].
    pub fn server_down(&mut self) {
        self.server.up = false;
        for index in 0..self.clients.len() {
            self.cut(index);
        }
        // Connections a client already abandoned die too, with whatever they had in flight.
        let remaining: Vec<ConnId> = self.server.conns.keys().copied().collect();
        for conn in remaining {
            self.drop_link(conn);
        }
    }

    /// The server accepts connections again, with its sessions intact.
    pub fn server_up(&mut self) {
        self.server.up = true;
    }

    /// The server comes back as a new process: every session is forgotten.
    pub fn server_restart(&mut self) {
        // A new process names its session instances apart from the old one's.
        self.server.restarts += 1;
        let instance = 1 + u64::from(self.server.restarts);
        self.server.engine = MemoryState::new(self.server.limits.clone(), instance);
        self.server.signals.clear();
        self.server.up = true;
    }

    // ---- the server's drivers ----

    /// Runs the drain loop of every server connection that has input, until nothing is left
    /// to do (what the connection tasks of `native-server` do after each wake-up).
    fn run_server(&mut self) {
        loop {
            while let Some((conn, signal)) = self.server.signals.pop_front() {
                let now = self.now;
                if let Some(c) = self.server.conns.get_mut(&conn) {
                    c.machine.handle_signal(now, signal);
                    self.dirty.insert(conn);
                }
            }
            let Some(conn) = self.dirty.pop_first() else {
                return;
            };
            self.drive(conn);
            if let Some(at) = self
                .server
                .conns
                .get(&conn)
                .and_then(|c| c.machine.poll_timeout())
            {
                self.timers.push(Reverse((at, Timer::Conn(conn))));
            }
        }
    }

    /// One connection's drain loop; returns whether it did anything.
    fn drive(&mut self, conn: ConnId) -> bool {
        let mut progressed = false;
        loop {
            let Some(c) = self.server.conns.get_mut(&conn) else {
                return progressed;
            };
            if let Some(output) = c.machine.poll_output() {
                progressed = true;
                self.carry_out(conn, output);
                continue;
            }
            c.machine.flush();
            if let Some(output) = c.machine.poll_output() {
                progressed = true;
                self.carry_out(conn, output);
                continue;
            }
            return progressed;
        }
    }

    fn carry_out(&mut self, conn: ConnId, output: ServerOutput<String>) {
        match output {
            ServerOutput::Transmit(text) => self.send_to_client(conn, text, false),
            ServerOutput::Deliver(text) => self.send_to_client(conn, text, true),
            ServerOutput::Ping => {
                if self.server.conns.get(&conn).is_some_and(|c| !c.stalled) {
                    let after = self.latency * 2;
                    self.schedule(after, Delivery::ServerPong { conn });
                }
            }
            ServerOutput::Close(close) => self.close(conn, close.map(|c| c.code)),
            other => self.server_effect(conn, other),
        }
    }

    /// Carries out an output that concerns the engine only.
    fn server_effect(&mut self, conn: ConnId, output: ServerOutput<String>) {
        let now = self.now;
        let SimServer {
            engine,
            conns,
            signals,
            consumed: record,
            events,
            answers,
            ..
        } = &mut self.server;
        let Some(c) = conns.get_mut(&conn) else {
            return;
        };
        let mut notify = |owner: &ConnId, signal: Signal| signals.push_back((*owner, signal));
        let source = c.claim.source.clone();
        match output {
            ServerOutput::Open { hello, fresh_next } => {
                match engine.open(&c.claim, hello.as_ref(), fresh_next) {
                    Ok(opened) => c.machine.handle_opened(opened),
                    Err(_) => c.machine.handle_engine_down("claimed again".into()),
                }
            }
            ServerOutput::Fetch { from, max } => {
                let mut frames = Vec::new();
                engine.fetch(&c.claim, from, &mut frames, max);
                c.machine.handle_fetched(now, frames);
            }
            ServerOutput::Route { id, effect } => {
                let routed = engine.route(&c.claim, id, &effect, &conn, &mut notify);
                if routed == Routed::Done {
                    if let Some(id) = id {
                        record.push(consumed(&source, id, &effect));
                    }
                    if let Effect::Resolve { re, result, .. } = &effect {
                        answers.push((source.clone(), *re, result.clone()));
                    }
                }
                c.machine.handle_routed(now, routed);
            }
            ServerOutput::Append(frame) => engine.append(&c.claim, frame, &mut notify),
            ServerOutput::Late(frame) => {
                let _ = engine.send(&source, frame, &mut notify);
            }
            ServerOutput::Call { payload, .. } => {
                // The echo handler answers at once with the payload it got.
                c.machine.handle_reply(wsrelay_core::Reply::Payload(
                    payload.unwrap_or_else(|| "null".into()),
                ));
            }
            ServerOutput::Settle { through } => engine.settle(&c.claim, through, &mut notify),
            ServerOutput::Release => engine.release(&c.claim, now, &mut notify),
            ServerOutput::Event(event) => events.push((source, event)),
            ServerOutput::Transmit(_)
            | ServerOutput::Deliver(_)
            | ServerOutput::Ping
            | ServerOutput::Close(_) => {}
        }
    }

    /// The connection ends: what it wrote goes out before the close frame (`code`, when the
    /// link is still there to carry one).
    fn close(&mut self, conn: ConnId, code: Option<u16>) {
        let Some(mut c) = self.server.conns.remove(&conn) else {
            return;
        };
        let source = c.claim.source.clone();
        let mut last = Vec::new();
        while let Some(output) = c.machine.poll_output() {
            match output {
                ServerOutput::Transmit(text) | ServerOutput::Deliver(text) => last.push(text),
                ServerOutput::Event(event) => self.server.events.push((source.clone(), event)),
                _ => {}
            }
        }
        if let Some(reason) = c.machine.ending() {
            self.server.endings.push((source, reason.clone()));
        }
        let Some((transport, Some(current))) = self.clients[c.client].socket else {
            return;
        };
        if c.stalled || current != conn {
            return;
        }
        let client = c.client;
        for text in last {
            self.schedule(
                self.latency,
                Delivery::ClientFrame {
                    client,
                    transport,
                    text,
                },
            );
        }
        if let Some(code) = code {
            self.schedule(
                self.latency,
                Delivery::ClientClosed {
                    client,
                    transport,
                    code,
                },
            );
        }
    }

    /// Sends a server frame over connection `conn`'s link (lost if the link is stalled or the
    /// client has moved on). A bare client's frame counts as written at once.
    fn send_to_client(&mut self, conn: ConnId, text: String, numbered: bool) {
        let Some(c) = self.server.conns.get_mut(&conn) else {
            return;
        };
        if numbered {
            c.machine.handle_written(1);
        }
        if c.stalled {
            return;
        }
        let client = c.client;
        let Some((transport, Some(current))) = self.clients[client].socket else {
            return;
        };
        if current != conn {
            return;
        }
        self.schedule(
            self.latency,
            Delivery::ClientFrame {
                client,
                transport,
                text,
            },
        );
    }
}

/// What the server consumed, as the model tests check it.
fn consumed(source: &str, id: u64, effect: &Effect<String>) -> Consumed {
    let (name, frame) = match effect {
        Effect::To { frame, .. } => ("to", Some(frame)),
        Effect::Broadcast { frame } => ("broadcast", Some(frame)),
        Effect::Reply { frame } => ("reply", Some(frame)),
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
    };
    if let Some(Ok(Frame::Message(message))) = frame.map(|f| Frame::decode(f)) {
        record.kind = message.kind.into_owned();
        record.payload = message.payload.map(str::to_owned);
        record.to = message.to.map(|to| to.into_owned());
        record.re = message.re;
    }
    record
}

impl Default for Sim {
    fn default() -> Self {
        Sim::new()
    }
}

impl SimClient {
    /// Application messages this client received: (source, id, payload), in arrival order.
    pub fn received(&self) -> Vec<(Option<String>, Option<u64>, Option<String>)> {
        self.events
            .iter()
            .filter_map(|(_, e)| match e {
                Event::Message(m) => Some((m.source.clone(), m.id, m.payload.clone())),
                _ => None,
            })
            .collect()
    }

    /// Whether an event matching `f` was emitted.
    pub fn saw(&self, f: impl Fn(&Event) -> bool) -> bool {
        self.events.iter().any(|(_, e)| f(e))
    }
}
