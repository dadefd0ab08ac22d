//! A deterministic simulation of wsrelay clients and a relay server on a virtual clock.
//!
//! Every client is a real [`ClientCore`]; the server keeps a real [`ServerSession`] per client
//! session and relays like `wsrelay-server` does (a message with `to` goes to that source, any
//! other to every other source, responses go back to `to`). Links are in-memory with a fixed
//! latency and can be cut (both ends see a close), stalled (frames vanish silently, like a dead
//! NAT) and restored; the server can go down, come back, or restart and lose its sessions.
//!
//! [`Sim::step`] delivers the earliest pending frame or fires the earliest timer, advancing the
//! virtual clock to it; nothing depends on real time, so every run is reproducible.

#![allow(dead_code, missing_docs)]

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::time::Duration;

use wsrelay_core::client::{ClientCore, Event, Options, Output, TransportId};
use wsrelay_core::protocol::{ErrorCode, ErrorReport, Frame, Message, RemoteError};
use wsrelay_core::server::{Delivery as Dedupe, ServerSession};
use wsrelay_core::Instant;

/// How many unacknowledged frames the simulated server keeps per session.
pub const SERVER_WINDOW: usize = 100_000;

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
}

/// A message the server consumed (handled and relayed), in consumption order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumed {
    pub source: String,
    pub id: u64,
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
    /// The transport the driver has open, and the server connection behind it.
    socket: Option<(TransportId, Option<ConnId>)>,
}

struct ServerConn {
    client: usize,
    source: String,
    session: Option<String>,
    stalled: bool,
}

#[derive(Default)]
pub struct SimServer {
    pub up: bool,
    conns: BTreeMap<ConnId, ServerConn>,
    sessions: HashMap<String, ServerSession<String>>,
    /// source -> session token of that source's session.
    session_of: BTreeMap<String, String>,
    next_conn: ConnId,
    pub consumed: Vec<Consumed>,
}

pub struct Sim {
    pub now: Instant,
    pub latency: Duration,
    pub clients: Vec<SimClient>,
    pub server: SimServer,
    pending: BinaryHeap<Reverse<(Instant, u64, Delivery)>>,
    seq: u64,
}

impl Sim {
    pub fn new() -> Self {
        Sim {
            now: Instant::from_millis(0),
            latency: Duration::from_millis(5),
            clients: Vec::new(),
            server: SimServer {
                up: true,
                next_conn: 1,
                ..SimServer::default()
            },
            pending: BinaryHeap::new(),
            seq: 0,
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
            socket: None,
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
        self.clients[index].socket = Some((transport, None));
        if self.server.up {
            let conn = self.server.next_conn;
            self.server.next_conn += 1;
            let source = self.clients[index].source.clone();
            self.server.conns.insert(
                conn,
                ServerConn {
                    client: index,
                    source,
                    session: None,
                    stalled: false,
                },
            );
            self.schedule(
                self.latency,
                Delivery::ClientOpened {
                    client: index,
                    transport,
                    conn,
                },
            );
        } else {
            let closed = Delivery::ClientClosed {
                client: index,
                transport,
                code: 1006,
            };
            self.schedule(self.latency, closed);
        }
    }

    /// The earliest moment something happens: a delivery or a client timer.
    fn next_time(&self) -> Option<Instant> {
        let delivery = self.pending.peek().map(|Reverse((at, _, _))| *at);
        let timer = self
            .clients
            .iter()
            .filter_map(|c| c.core.poll_timeout())
            .min();
        [delivery, timer].into_iter().flatten().min()
    }

    /// Advances to the next event and handles it. Returns false when nothing is left to happen.
    pub fn step(&mut self) -> bool {
        let Some(at) = self.next_time() else {
            return false;
        };
        self.now = self.now.max(at);
        if let Some(Reverse((due, _, _))) = self.pending.peek() {
            if *due <= self.now {
                let Some(Reverse((_, _, delivery))) = self.pending.pop() else {
                    return false;
                };
                self.deliver(delivery);
                return true;
            }
        }
        for index in 0..self.clients.len() {
            if self.clients[index]
                .core
                .poll_timeout()
                .is_some_and(|t| t <= self.now)
            {
                let now = self.now;
                self.clients[index].core.handle_timeout(now);
                self.drain(index);
            }
        }
        true
    }

    /// Steps until `until` (virtual time), or until nothing is left to happen.
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
                let current = self.clients[client].socket.map(|(t, _)| t);
                if current == Some(transport) && self.server.conns.contains_key(&conn) {
                    self.clients[client].socket = Some((transport, Some(conn)));
                    self.clients[client].core.handle_opened(now, transport);
                    self.drain(client);
                } else {
                    self.server.conns.remove(&conn);
                }
            }
            Delivery::ClientFrame {
                client,
                transport,
                text,
            } => {
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
            Delivery::ServerFrame { conn, text } => self.server_frame(conn, &text),
            Delivery::ServerClosed { conn } => {
                self.server.conns.remove(&conn);
            }
        }
    }

    // ---- faults ----

    /// Cuts client `index`'s link: in-flight frames are lost, both ends see it close (1006).
    pub fn cut(&mut self, index: usize) {
        self.server_close(index, 1006, "link cut");
    }

    /// The server closes client `index`'s connection with `code` and `reason`; frames in
    /// flight are lost.
    pub fn server_close(&mut self, index: usize, code: u16, reason: &str) {
        if let Some((transport, conn)) = self.clients[index].socket.take() {
            if let Some(conn) = conn {
                self.drop_conn(conn);
            }
            self.pending.retain(|Reverse((_, _, d))| !matches!(d, Delivery::ClientFrame { client, transport: t, .. } | Delivery::ClientOpened { client, transport: t, .. } if *client == index && *t == transport));
            let now = self.now;
            self.clients[index]
                .core
                .handle_closed(now, transport, code, reason);
            self.drain(index);
        }
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
                Delivery::ServerFrame { conn: c, .. } => *c != conn,
                _ => true,
            });
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
            self.drop_conn(conn);
        }
    }

    /// The server accepts connections again, with its sessions intact.
    pub fn server_up(&mut self) {
        self.server.up = true;
    }

    /// The server comes back as a new process: every session is forgotten.
    pub fn server_restart(&mut self) {
        self.server.sessions.clear();
        self.server.session_of.clear();
        self.server.up = true;
    }

    fn drop_conn(&mut self, conn: ConnId) {
        self.server.conns.remove(&conn);
        self.pending.retain(
            |Reverse((_, _, d))| !matches!(d, Delivery::ServerFrame { conn: c, .. } if *c == conn),
        );
    }

    // ---- the server ----

    fn transmit(&mut self, conn: ConnId, text: String) {
        let Some(c) = self.server.conns.get(&conn) else {
            return;
        };
        if c.stalled {
            return;
        }
        let Some((transport, _)) = self.clients[c.client].socket else {
            return;
        };
        let client = c.client;
        self.schedule(
            self.latency,
            Delivery::ClientFrame {
                client,
                transport,
                text,
            },
        );
    }

    fn conn_of(&self, source: &str) -> Option<ConnId> {
        self.server
            .conns
            .iter()
            .find(|(_, c)| c.source == source && c.session.is_some())
            .map(|(id, _)| *id)
    }

    /// Sends a reliable frame to `source`'s session: recorded for retransmission, and written
    /// now if the source is connected.
    fn deliver_reliable(&mut self, source: &str, text: String) -> bool {
        let Some(token) = self.server.session_of.get(source).cloned() else {
            return false;
        };
        let Some(session) = self.server.sessions.get_mut(&token) else {
            return false;
        };
        session
            .record_written(text.clone())
            .expect("the simulated server's window is large");
        if let Some(conn) = self.conn_of(source) {
            self.transmit(conn, text);
        }
        true
    }

    fn server_frame(&mut self, conn: ConnId, text: &str) {
        let Some(c) = self.server.conns.get(&conn) else {
            return;
        };
        let source = c.source.clone();
        let token = c.session.clone();
        let frame = match Frame::decode(text) {
            Ok(frame) => frame,
            Err(error) => panic!("the client sent an invalid frame {text:?}: {error}"),
        };
        match frame {
            Frame::Hello { session, ack, .. } => {
                let session = session.into_owned();
                let known = self
                    .server
                    .sessions
                    .get_mut(&session)
                    .and_then(|s| s.resume(ack).map(|f| f.cloned().collect::<Vec<_>>()));
                let (resumed, retransmit) = match known {
                    Some(frames) => (true, frames),
                    None => {
                        self.server
                            .sessions
                            .insert(session.clone(), ServerSession::new(&session, SERVER_WINDOW));
                        (false, Vec::new())
                    }
                };
                // One connection per source: a new one replaces the old.
                let old: Vec<ConnId> = self
                    .server
                    .conns
                    .iter()
                    .filter(|(id, c)| **id != conn && c.source == source)
                    .map(|(id, _)| *id)
                    .collect();
                for old in old {
                    self.drop_conn(old);
                }
                self.server
                    .session_of
                    .insert(source.clone(), session.clone());
                if let Some(c) = self.server.conns.get_mut(&conn) {
                    c.session = Some(session.clone());
                }
                let welcome = self.server.sessions[&session].welcome(resumed).encode();
                self.transmit(conn, welcome);
                for frame in retransmit {
                    self.transmit(conn, frame);
                }
            }
            Frame::Message(message) => {
                let token = token.expect("the client sent a message before its hello");
                let id = message.id.expect("wsrelay clients number their messages");
                let session = self
                    .server
                    .sessions
                    .get_mut(&token)
                    .expect("session of a live connection");
                if session.deliver(id) == Dedupe::New {
                    self.consume(&source, message);
                }
                if let Some(ack) = self
                    .server
                    .sessions
                    .get_mut(&token)
                    .and_then(|s| s.poll_ack())
                {
                    self.transmit(conn, ack.encode());
                }
            }
            Frame::Ack { ack } => {
                if let Some(session) = token.and_then(|t| self.server.sessions.get_mut(&t)) {
                    session.handle_ack(ack);
                }
            }
            Frame::Ping => self.transmit(conn, Frame::Pong.encode()),
            other => panic!("unexpected frame from a client: {other:?}"),
        }
    }

    /// Handles a new message from `source` as the relay does.
    fn consume(&mut self, source: &str, message: Message<'_>) {
        self.server.consumed.push(Consumed {
            source: source.to_owned(),
            id: message.id.unwrap_or(0),
            kind: message.kind.to_string(),
            payload: message.payload.map(str::to_owned),
            to: message.to.as_deref().map(str::to_owned),
            re: message.re,
        });
        let relayed = Message {
            source: Some(source.into()),
            ..message.clone()
        }
        .encode();
        match message.to.as_deref() {
            Some(to) => {
                if !self.deliver_reliable(to, relayed) {
                    let report = ErrorReport {
                        error: RemoteError {
                            code: ErrorCode::UnknownTarget.as_str().into(),
                            message: format!("no client with source {to:?}"),
                        },
                        re: message.id,
                    };
                    self.deliver_reliable(source, Frame::Error(report).encode());
                }
            }
            None => {
                let others: Vec<String> = self
                    .server
                    .session_of
                    .keys()
                    .filter(|s| *s != source)
                    .cloned()
                    .collect();
                for other in others {
                    self.deliver_reliable(&other, relayed.clone());
                }
            }
        }
    }
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
