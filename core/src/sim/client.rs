//! The simulated clients: a [`ClientCore`] each, and the client driver's drain loop (connect,
//! transmit, close the transport, hand events to the application) over the simulation's
//! links.

use std::collections::VecDeque;

use super::{ConnId, Delivery, Link, Sim};
use crate::client::{ClientCore, Event, Output, TransportId};
use crate::server::engine::Attempt;
use crate::Instant;

/// A simulated client: its state machine and what its application saw.
pub struct SimClient {
    /// The source it connects as.
    pub source: String,
    /// Its state machine.
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
    /// Frames that wait on the link while the client is paused.
    pub(super) held: VecDeque<Delivery>,
    /// The transport the driver has open, and the server connection behind it.
    pub(super) socket: Option<(TransportId, Option<ConnId>)>,
    /// Hold the client's connection attempts back on their way to the server (a stalled
    /// link): they reach it when [`Sim::release_attempts`] says so.
    pub hold_attempts: bool,
    pub(super) held_attempts: Vec<TransportId>,
    /// The client's storage, when it persists its state (see [`Sim::add_persistent_client`]).
    pub storage: Option<Storage>,
    /// The application's handlers finish this long after a message arrives (they await
    /// something) rather than at once; a crash meanwhile kills them unfinished.
    pub handler_delay: Option<std::time::Duration>,
    /// The payloads of the messages whose handling finished, in order (across restarts).
    pub finished: Vec<Option<String>>,
}

/// What a persisting client's storage holds, as a driver keeps it.
#[derive(Debug, Clone, Default)]
pub struct Storage {
    /// The journal: every batch stored so far.
    pub journal: String,
    /// Batches stored.
    pub saves: u64,
    /// The client's options, for its restarts.
    pub(super) options: crate::client::Options,
    /// The client process is down (between [`Sim::crash`] and [`Sim::restart`]).
    pub down: bool,
}

impl SimClient {
    pub(super) fn new(source: &str, core: ClientCore) -> Self {
        SimClient {
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
            storage: None,
            handler_delay: None,
            finished: Vec::new(),
        }
    }

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

impl Sim {
    /// Carries out everything client `index`'s core asked for (the driver's drain loop).
    pub(super) fn drain(&mut self, index: usize) {
        while let Some(output) = self.clients[index].core.poll_output() {
            match output {
                Output::Connect(transport) => self.connect(index, transport),
                Output::Transmit(text) => {
                    if let Some((_, Some(conn))) = self.clients[index].socket {
                        let stalled = self.links.get(&conn).is_none_or(|link| link.stalled);
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
                Output::Save(save) => {
                    // Stored after a storage latency of its own, in order.
                    let stored = Delivery::Stored {
                        client: index,
                        mark: save.mark,
                        text: save.text,
                        rewrite: save.rewrite,
                    };
                    self.schedule(super::STORAGE_LATENCY, stored);
                }
            }
        }
        if let Some(at) = self.clients[index].core.poll_timeout() {
            self.arm(at, index);
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
        // The handler finishes now, or after its delay, and says so (as a driver does once
        // an `on` handler is done).
        let mut later = None;
        if let Event::Message(message) = &event {
            match client.handler_delay {
                None => {
                    client.finished.push(message.payload.clone());
                    if let Some(receipt) = message.receipt {
                        client.core.handled(receipt);
                    }
                }
                Some(delay) => {
                    let finished = Delivery::Handled {
                        client: index,
                        receipt: message.receipt,
                        payload: message.payload.clone(),
                    };
                    later = Some((delay, finished));
                }
            }
        }
        if let Some((delay, finished)) = later {
            self.schedule(delay, finished);
        }
        self.clients[index].events.push((self.now, event));
    }

    fn connect(&mut self, index: usize, transport: TransportId) {
        self.clients[index].socket = Some((transport, None));
        if !self.up {
            let closed = Delivery::ClientClosed {
                client: index,
                transport,
                code: 1006,
            };
            self.schedule(self.latency, closed);
            return;
        }
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
        let conn = match self
            .server
            .connect(self.now, &source, attempt.as_ref(), true)
        {
            Ok(conn) => conn,
            Err(close) => {
                let closed = Delivery::ClientClosed {
                    client: index,
                    transport,
                    code: close.code,
                };
                self.schedule(self.latency, closed);
                return None;
            }
        };
        // The server has the connection from here on (the client learns it one latency later).
        let current = self.clients[index].socket.map(|(t, _)| t) == Some(transport);
        if current {
            self.clients[index].socket = Some((transport, Some(conn)));
        }
        // An attempt its client gave up on: nothing reaches the server from it.
        let stalled = !current;
        self.links.insert(
            conn,
            Link {
                client: index,
                stalled,
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
        self.run_server();
        Some(conn)
    }
}
