//! A deterministic simulation of wsrelay clients and the wsrelay server on a virtual clock
//! (feature `sim`), and the server's reference driver ([`Relay`]) that the simulation, the
//! property tests and the fuzz targets share, in the manner of quinn-proto's test `Pair`.
//!
//! Both sides are the real state machines: every client is a [`ClientCore`], every server
//! connection a [`ServerConnection`](crate::server::ServerConnection) driven by [`Relay`] as
//! `wsrelay-server` drives it, over the real in-memory engine's state. What the simulation
//! adds is what the world adds: links with a fixed latency that can be cut (both ends see a
//! close), stalled (frames vanish silently, like a dead NAT) and restored; a server process
//! that can go down, come back, or restart and lose its sessions.
//!
//! [`Sim::step`] delivers the earliest pending frame or fires the earliest timer, advancing the
//! virtual clock to it; nothing depends on real time, so every run is reproducible.

mod client;
mod relay;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::time::Duration;

use crate::client::{ClientCore, Options, TransportId};
use crate::server::memory::EngineLimits;
use crate::server::{ConnectionSettings, HandlerSet};
use crate::{Instant, Reply};

pub use client::{SimClient, Storage};
pub use relay::{ConnId, Consumed, Handlers, Relay, Response, Transmit};

/// Something on its way over a link.
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
    /// A handler of the client finished (see [`SimClient::handler_delay`]).
    Handled {
        client: usize,
        receipt: Option<crate::client::Receipt>,
        payload: Option<String>,
    },
    /// A persisting client's storage finished writing a batch of its journal.
    Stored {
        client: usize,
        mark: u64,
        text: String,
        rewrite: bool,
    },
}

/// How long a persisting client's storage takes to write a batch.
const STORAGE_LATENCY: Duration = Duration::from_millis(1);

/// The wall-clock time at the simulation's `Instant` zero, in milliseconds since the Unix
/// epoch (journals keep wall-clock deadlines).
const EPOCH_MS: u64 = 1_800_000_000_000;

/// The server end of a connection's link.
struct Link {
    client: usize,
    /// Nothing written here reaches anyone any more.
    stalled: bool,
}

/// The application handlers of the simulated server: the types it handles, each answering
/// with the payload it got.
#[derive(Debug, Clone, Default)]
pub struct EchoHandlers(pub Vec<String>);

impl HandlerSet for EchoHandlers {
    fn handles(&self, kind: &str) -> bool {
        self.0.iter().any(|k| k == kind)
    }
}

impl Handlers for EchoHandlers {
    fn reply(&self, _kind: &str, _source: &str, payload: Option<String>) -> Reply {
        Reply::Payload(payload.unwrap_or_else(|| "null".into()))
    }
}

/// The limits the simulation runs with by default: the server's, with a grace period longer
/// than any test runs, so that sessions only end when a test says so.
pub fn default_limits() -> EngineLimits {
    EngineLimits {
        session_grace: Duration::from_secs(100_000),
        ..EngineLimits::default()
    }
}

/// The simulated world: clients, the server, the links between them, and the virtual clock.
pub struct Sim {
    /// The virtual clock.
    pub now: Instant,
    /// Every link's one-way latency.
    pub latency: Duration,
    /// The clients, by index.
    pub clients: Vec<SimClient>,
    /// The server, and what it recorded.
    pub server: Relay<EchoHandlers>,
    /// The server process runs (it accepts connections).
    up: bool,
    links: BTreeMap<ConnId, Link>,
    pending: BinaryHeap<Reverse<(Instant, u64, Delivery)>>,
    seq: u64,
    /// Every client's next deadline as last seen; an entry is stale when the client's
    /// `poll_timeout` no longer says so (checked when it comes up), which keeps a step
    /// O(log n) however many clients there are.
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    last_expiry: Instant,
}

impl Default for Sim {
    fn default() -> Self {
        Sim::new()
    }
}

impl Sim {
    /// A world with a server of the default settings and [`default_limits`], and no client.
    pub fn new() -> Self {
        Sim::with_server(ConnectionSettings::default(), default_limits())
    }

    /// A world whose server has these connection settings and engine limits.
    pub fn with_server(settings: ConnectionSettings, limits: EngineLimits) -> Self {
        Sim {
            now: Instant::from_millis(0),
            latency: Duration::from_millis(5),
            clients: Vec::new(),
            server: Relay::new(settings, limits, EchoHandlers::default()),
            up: true,
            links: BTreeMap::new(),
            pending: BinaryHeap::new(),
            seq: 0,
            timers: BinaryHeap::new(),
            last_expiry: Instant::from_millis(0),
        }
    }

    /// Adds a client (it starts connecting at once unless `start_closed`).
    pub fn add_client(&mut self, source: &str, options: Options, seed: u64) -> usize {
        let core = ClientCore::new(options, seed, self.now);
        self.clients.push(SimClient::new(source, core));
        let index = self.clients.len() - 1;
        self.drain(index);
        index
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

    fn schedule(&mut self, after: Duration, delivery: Delivery) {
        self.seq += 1;
        self.pending
            .push(Reverse((self.now + after, self.seq, delivery)));
    }

    fn arm(&mut self, at: Instant, index: usize) {
        self.timers.push(Reverse((at, index)));
    }

    /// The earliest moment something happens: a delivery or a timer.
    fn next_time(&mut self) -> Option<Instant> {
        while let Some(&Reverse((at, index))) = self.timers.peek() {
            if self.clients[index].core.poll_timeout() == Some(at) {
                break;
            }
            self.timers.pop();
        }
        let delivery = self.pending.peek().map(|Reverse((at, _, _))| *at);
        let timer = self.timers.peek().map(|Reverse((at, _))| *at);
        let server = self.server.next_timeout();
        [delivery, timer, server].into_iter().flatten().min()
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
            self.server.expire(now);
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
        while let Some(&Reverse((at, index))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            if self.clients[index].core.poll_timeout() == Some(at) {
                self.clients[index].core.handle_timeout(now);
                self.drain(index);
            }
        }
        self.server.handle_timeouts(now);
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
                if current == Some((transport, Some(conn)))
                    && self.server.connection(conn).is_some()
                {
                    self.clients[client].core.handle_opened(now, transport);
                    self.drain(client);
                } else if let Some(machine) = self.server.input(conn) {
                    // The client gave up on this attempt before it opened.
                    machine.handle_closed(None);
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
                if let Some(machine) = self.server.input(conn) {
                    machine.handle_text(now, &text);
                    self.run_server();
                }
            }
            Delivery::ServerClosed { conn } => {
                if let Some(machine) = self.server.input(conn) {
                    machine.handle_closed(None);
                    self.run_server();
                }
            }
            Delivery::ServerPong { conn } => {
                if let Some(machine) = self.server.input(conn) {
                    machine.handle_heard();
                    self.run_server();
                }
            }
            Delivery::Handled {
                client,
                receipt,
                payload,
            } => {
                self.clients[client].finished.push(payload);
                if let Some(receipt) = receipt {
                    self.clients[client].core.handled(receipt);
                }
                self.drain(client);
            }
            Delivery::Stored {
                client,
                mark,
                text,
                rewrite,
            } => {
                let Some(storage) = &mut self.clients[client].storage else {
                    return;
                };
                if rewrite {
                    storage.journal = text;
                } else {
                    storage.journal.push_str(&text);
                }
                storage.saves += 1;
                self.clients[client].core.handle_saved(now, mark);
                self.drain(client);
            }
        }
    }

    // ---- persisting clients ----

    /// Adds a client that keeps its state in a journal (a fresh one), as
    /// [`add_client`](Self::add_client) adds one that does not.
    pub fn add_persistent_client(&mut self, source: &str, options: Options, seed: u64) -> usize {
        let core = ClientCore::restore(options.clone(), seed, self.now, self.wall_ms(), "")
            .unwrap_or_else(|error| unreachable!("an empty journal: {error}"));
        let mut client = SimClient::new(source, core);
        client.storage = Some(Storage {
            options,
            ..Storage::default()
        });
        self.clients.push(client);
        let index = self.clients.len() - 1;
        self.drain(index);
        index
    }

    fn wall_ms(&self) -> u64 {
        EPOCH_MS + self.now.as_millis()
    }

    /// Client `index`'s process dies (SIGKILL): its writes in progress are lost, except that
    /// with `torn` the first of them reached the storage halfway; its connection closes (the
    /// kernel closes the socket); whatever was on its way to it is lost.
    pub fn crash(&mut self, index: usize, torn: bool) {
        let Some(storage) = self.clients[index].storage.as_mut() else {
            panic!("client {index} does not persist");
        };
        storage.down = true;
        let options = storage.options.clone();
        // The earliest of the writes in progress, the one a torn write would be.
        let first_write = self
            .pending
            .iter()
            .filter_map(|Reverse((at, seq, delivery))| match delivery {
                Delivery::Stored { client, text, .. } if *client == index => {
                    Some(((*at, *seq), text))
                }
                _ => None,
            })
            .min_by_key(|(order, _)| *order)
            .map(|(_, text)| text.get(..text.len() / 2).unwrap_or_default().to_owned());
        self.pending
            .retain(|Reverse((_, _, delivery))| match delivery {
                Delivery::ClientOpened { client, .. }
                | Delivery::ClientFrame { client, .. }
                | Delivery::ClientClosed { client, .. }
                | Delivery::Handled { client, .. }
                | Delivery::Stored { client, .. } => *client != index,
                _ => true,
            });
        if let (true, Some(text), Some(storage)) =
            (torn, first_write, self.clients[index].storage.as_mut())
        {
            storage.journal.push_str(&text);
        }
        // A dead process does nothing: a core that never starts stands in until the restart.
        let dead = Options {
            start_closed: true,
            ..options
        };
        self.clients[index].core = ClientCore::new(dead, 0, self.now);
        if let Some((_, Some(conn))) = self.clients[index].socket.take() {
            self.schedule(self.latency, Delivery::ServerClosed { conn });
        }
        self.clients[index].held.clear();
        self.clients[index].held_attempts.clear();
    }

    /// Client `index`'s process starts again from its storage (with `seed` for its jitter).
    /// Returns the journal's error when it cannot be read.
    pub fn restart(&mut self, index: usize, seed: u64) -> Result<(), crate::client::JournalError> {
        let wall_ms = self.wall_ms();
        let Some(storage) = self.clients[index].storage.as_mut() else {
            panic!("client {index} does not persist");
        };
        let core = ClientCore::restore(
            storage.options.clone(),
            seed,
            self.now,
            wall_ms,
            &storage.journal,
        )?;
        storage.down = false;
        self.clients[index].core = core;
        self.drain(index);
        Ok(())
    }

    // ---- faults ----

    /// Cuts client `index`'s link: in-flight frames are lost, both ends see it close (1006).
    pub fn cut(&mut self, index: usize) {
        self.server_close(index, 1006, "link cut");
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
        if let Some(link) = self.links.get_mut(&conn) {
            link.stalled = true;
        }
        if let Some(machine) = self.server.input(conn) {
            machine.handle_closed(None);
        }
        self.run_server();
    }

    /// Stalls client `index`'s link: from now on frames vanish in both directions and nobody
    /// is told (a silent server, a dead NAT mapping).
    pub fn stall(&mut self, index: usize) {
        if let Some((transport, Some(conn))) = self.clients[index].socket {
            if let Some(link) = self.links.get_mut(&conn) {
                link.stalled = true;
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
        self.up = false;
        for index in 0..self.clients.len() {
            self.cut(index);
        }
        // Connections a client already abandoned die too, with whatever they had in flight.
        let remaining: Vec<ConnId> = self.links.keys().copied().collect();
        for conn in remaining {
            self.drop_link(conn);
        }
    }

    /// The server accepts connections again, with its sessions intact.
    pub fn server_up(&mut self) {
        self.up = true;
    }

    /// The server comes back as a new process: every session is forgotten.
    pub fn server_restart(&mut self) {
        self.server.restart();
        self.up = true;
    }

    /// Whether the server process runs.
    pub fn is_up(&self) -> bool {
        self.up
    }

    // ---- the server's links ----

    /// Runs the server's drain loop, then carries what its connections wrote over their
    /// links, until nothing is left to do. The socket takes every frame at once, so a frame
    /// from the mailbox is reported written as soon as it is carried.
    fn run_server(&mut self) {
        loop {
            self.server.run(self.now);
            let mut written = false;
            while let Some((conn, transmit)) = self.server.poll_transmit() {
                written |= self.carry(conn, transmit);
            }
            if !written {
                return;
            }
        }
    }

    /// Carries what connection `conn` wrote to its client's end of the link (lost if the
    /// link is stalled or the client has moved on). Returns whether it reported a write.
    fn carry(&mut self, conn: ConnId, transmit: Transmit) -> bool {
        let Some(link) = self.links.get(&conn) else {
            return false;
        };
        let client = link.client;
        let reaches = !link.stalled;
        let socket = self.clients[client].socket;
        let transport = match socket {
            Some((transport, Some(current))) if current == conn && reaches => Some(transport),
            _ => None,
        };
        match transmit {
            Transmit::Frame { text, numbered } => {
                if let Some(transport) = transport {
                    self.schedule(
                        self.latency,
                        Delivery::ClientFrame {
                            client,
                            transport,
                            text,
                        },
                    );
                }
                if numbered {
                    self.server.handle_written(conn, 1);
                }
                numbered
            }
            Transmit::Ping => {
                if reaches {
                    let after = self.latency * 2;
                    self.schedule(after, Delivery::ServerPong { conn });
                }
                false
            }
            Transmit::Close(close) => {
                self.links.remove(&conn);
                if let (Some(transport), Some(close)) = (transport, close) {
                    let code = close.code;
                    self.schedule(
                        self.latency,
                        Delivery::ClientClosed {
                            client,
                            transport,
                            code,
                        },
                    );
                }
                false
            }
        }
    }
}
