//! Model-based property tests of the client core: random sequences of sends (to everyone, to
//! one client, to a room), requests, joins and leaves of rooms, link faults, server outages,
//! reconnects and clock ticks, then a calm period, then the promises of
//! `PROTOCOL.md` section 11 are checked against what every party recorded.

// proptest and the simulation (the feature `sim`) are native-only dev-dependencies.
#![cfg(not(target_arch = "wasm32"))]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use proptest::prelude::*;
use wsrelay_core::client::{delay_range, Error, Event, Options, Outgoing};
use wsrelay_core::protocol::{JOIN, LEAVE};
use wsrelay_core::server::memory::EngineLimits;
use wsrelay_core::server::ConnectionSettings;
use wsrelay_core::sim::Sim;

const CLIENTS: [&str; 3] = ["alice", "bob", "carol"];
const ROOMS: [&str; 2] = ["red", "blue"];

#[derive(Debug, Clone)]
enum Op {
    /// Broadcast, to one other client, or to the other members of a room.
    Send {
        client: usize,
        to: Option<usize>,
        room: Option<usize>,
        ttl_ms: Option<u64>,
    },
    /// `relay:join` (else `relay:leave`) of a room, a request the relay answers.
    Membership {
        client: usize,
        room: usize,
        join: bool,
    },
    Request {
        client: usize,
        to: usize,
        timeout_ms: u64,
    },
    Cut {
        client: usize,
    },
    Stall {
        client: usize,
    },
    ServerDown,
    ServerUp,
    /// The server comes back as a new process that forgot every session.
    ServerRestart,
    Reconnect {
        client: usize,
    },
    Tick {
        ms: u64,
    },
}

fn op(restarts: bool) -> impl Strategy<Value = Op> {
    let client = 0..CLIENTS.len();
    let restart_weight = if restarts { 1 } else { 0 };
    prop_oneof![
        restart_weight => Just(Op::ServerRestart),
        8 => (client.clone(), proptest::option::of(0..CLIENTS.len()), proptest::option::of(1u64..5000))
            .prop_map(|(client, to, ttl_ms)| Op::Send { client, to, room: None, ttl_ms }),
        // Rooms in one arm: ten at most keep `prop_oneof!` on the union that takes the
        // restarts' weight of 0.
        7 => prop_oneof![
            4 => (client.clone(), 0..ROOMS.len(), proptest::option::of(1u64..5000))
                .prop_map(|(client, room, ttl_ms)| Op::Send { client, to: None, room: Some(room), ttl_ms }),
            3 => (client.clone(), 0..ROOMS.len(), prop_oneof![2 => Just(true), 1 => Just(false)])
                .prop_map(|(client, room, join)| Op::Membership { client, room, join }),
        ],
        2 => (client.clone(), 0..CLIENTS.len(), 1u64..20_000)
            .prop_map(|(client, to, timeout_ms)| Op::Request { client, to, timeout_ms }),
        2 => client.clone().prop_map(|client| Op::Cut { client }),
        1 => client.clone().prop_map(|client| Op::Stall { client }),
        1 => Just(Op::ServerDown),
        2 => Just(Op::ServerUp),
        1 => client.prop_map(|client| Op::Reconnect { client }),
        6 => prop_oneof![1u64..20, 20u64..2000, 2000u64..40_000].prop_map(|ms| Op::Tick { ms }),
    ]
}

fn options() -> Options {
    Options {
        max_enqueued_messages: 12,
        ..Options::default()
    }
}

/// What the application was promised for one accepted message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Send,
    Request,
}

/// Runs `ops` and checks the promises of PROTOCOL.md section 11. A server restart or an
/// expired grace period loses a session: its client is then told, what it had in flight fails
/// with `session_lost`, and nothing is ever delivered twice or out of order.
fn run(ops: &[Op], seed: u64) -> Result<(), TestCaseError> {
    // Sessions expire 30 s after their client left, well within what the operations reach.
    let mut sim = Sim::with_server(
        ConnectionSettings::default(),
        EngineLimits {
            session_grace: Duration::from_secs(30),
            ..EngineLimits::default()
        },
    );
    for (i, name) in CLIENTS.iter().enumerate() {
        sim.add_client(name, options(), seed.wrapping_add(i as u64));
        sim.clients[i].auto_respond = true;
    }
    sim.run_until(1000, |s| {
        s.clients.iter().all(|c| c.core.ready_state() as u8 == 1)
    });

    let mut accepted: Vec<BTreeMap<u64, Kind>> = vec![BTreeMap::new(); CLIENTS.len()];
    let mut payload_counter = 0u64;
    for op in ops {
        match *op {
            Op::Send {
                client,
                to,
                room,
                ttl_ms,
            } => {
                payload_counter += 1;
                let payload = payload_counter.to_string();
                let message = Outgoing {
                    kind: "chat",
                    payload: Some(&payload),
                    to: to.map(|t| CLIENTS[t]),
                    room: room.map(|r| ROOMS[r]),
                    ttl: ttl_ms.map(Duration::from_millis),
                };
                match sim.with_client(client, |c, now| c.send(now, message)) {
                    Ok(id) => {
                        accepted[client].insert(id, Kind::Send);
                    }
                    Err(Error::QueueFull { .. }) => {}
                    Err(other) => prop_assert!(false, "send refused: {other}"),
                }
            }
            Op::Request {
                client,
                to,
                timeout_ms,
            } => {
                let message = Outgoing {
                    kind: "ask",
                    payload: Some("1"),
                    to: Some(CLIENTS[to]),
                    room: None,
                    ttl: None,
                };
                let timeout = Some(Duration::from_millis(timeout_ms));
                match sim.with_client(client, |c, now| c.request(now, message, timeout)) {
                    Ok(id) => {
                        accepted[client].insert(id, Kind::Request);
                    }
                    Err(Error::QueueFull { .. }) => {}
                    Err(other) => prop_assert!(false, "request refused: {other}"),
                }
            }
            Op::Membership { client, room, join } => {
                let payload = format!(r#"{{"room":"{}"}}"#, ROOMS[room]);
                let message = Outgoing {
                    kind: if join { JOIN } else { LEAVE },
                    payload: Some(&payload),
                    ..Outgoing::default()
                };
                match sim.with_client(client, |c, now| c.request(now, message, None)) {
                    Ok(id) => {
                        accepted[client].insert(id, Kind::Request);
                    }
                    Err(Error::QueueFull { .. }) => {}
                    Err(other) => prop_assert!(false, "membership refused: {other}"),
                }
            }
            Op::Cut { client } => sim.cut(client),
            Op::Stall { client } => sim.stall(client),
            Op::ServerDown => sim.server_down(),
            Op::ServerUp => sim.server_up(),
            Op::ServerRestart => {
                sim.server_down();
                sim.server_restart();
            }
            Op::Reconnect { client } => sim.with_client(client, |c, now| c.reconnect(now)),
            Op::Tick { ms } => sim.run_for(Duration::from_millis(ms)),
        }
        for client in &sim.clients {
            prop_assert!(client.core.queued() <= options().max_enqueued_messages);
        }
    }
    // Calm: the server is up and stays up long enough for every backoff, heartbeat and timeout.
    sim.server_up();
    sim.run_for(Duration::from_secs(120));

    for (index, client) in sim.clients.iter().enumerate() {
        // Every accepted message has exactly one outcome.
        let mut outcomes: HashMap<u64, Vec<&Event>> = HashMap::new();
        for (_, event) in &client.events {
            let id = match event {
                Event::Delivered { id } | Event::Failed { id, .. } => *id,
                Event::Reply { request, .. } => *request,
                _ => continue,
            };
            outcomes.entry(id).or_default().push(event);
        }
        for (&id, &kind) in &accepted[index] {
            let got = outcomes.get(&id).map(Vec::as_slice).unwrap_or_default();
            prop_assert_eq!(
                got.len(),
                1,
                "client {} message {} ({:?}): {:?}",
                index,
                id,
                kind,
                got
            );
            if kind == Kind::Request {
                prop_assert!(
                    !matches!(got[0], Event::Delivered { .. }),
                    "a request settles by its reply"
                );
            }
        }
        // Nothing is left waiting once the link is calm.
        prop_assert_eq!(
            client.core.queued(),
            0,
            "client {} still has queued messages",
            index
        );
        prop_assert_eq!(client.core.pending_requests(), 0);

        // Every reconnect delay lies in its attempt's range, itself within [min, max].
        let o = options();
        for (_, event) in &client.events {
            if let Event::Reconnecting { attempt, delay } = event {
                let (lo, hi) = delay_range(&o, *attempt);
                prop_assert!(o.min_reconnection_delay <= lo && hi <= o.max_reconnection_delay);
                prop_assert!(lo <= *delay && *delay <= hi, "attempt {attempt}: {delay:?}");
            }
        }
        for attempt in 1..30 {
            prop_assert!(
                delay_range(&o, attempt).1 <= delay_range(&o, attempt + 1).1,
                "grows until the cap"
            );
        }
    }

    // The server consumed each sender's messages once, in order (a lost session's messages
    // in flight fail with `session_lost` rather than being sent again: never twice).
    let mut consumed: Vec<Vec<u64>> = vec![Vec::new(); CLIENTS.len()];
    for message in &sim.server.consumed {
        let index = CLIENTS
            .iter()
            .position(|c| *c == message.source)
            .expect("known source");
        consumed[index].push(message.id);
    }
    for (index, ids) in consumed.iter().enumerate() {
        let increasing = ids.windows(2).all(|w| w[0] < w[1]);
        prop_assert!(increasing, "client {index}: consumed {ids:?}");
        for (_, event) in &sim.clients[index].events {
            match event {
                Event::Delivered { id } => {
                    prop_assert!(ids.contains(id), "delivered {id} was never consumed")
                }
                Event::Failed {
                    id,
                    error: Error::Expired,
                } => prop_assert!(!ids.contains(id), "expired {id} was consumed"),
                _ => {}
            }
        }
    }

    // Who was a member of which room when each room message was consumed, replaying the
    // joins and leaves in the order the server consumed them (a session that was lost left
    // its rooms too, but its client was told, and only subsets are checked for it).
    let mut members: HashMap<&str, HashSet<&str>> = HashMap::new();
    let mut room_recipients: HashMap<(&str, u64), HashSet<&str>> = HashMap::new();
    for message in &sim.server.consumed {
        let Some(room) = message.room.as_deref() else {
            continue;
        };
        let room_members = members.entry(room).or_default();
        match message.effect {
            "join" => {
                room_members.insert(&message.source);
            }
            "leave" => {
                room_members.remove(message.source.as_str());
            }
            "room" => {
                let mut recipients = room_members.clone();
                recipients.remove(message.source.as_str());
                room_recipients.insert((&message.source, message.id), recipients);
            }
            _ => {}
        }
    }

    // Every receiver got each sender's relayed messages at most once and in order, and all of
    // them unless it was told its session was lost (grace period over, server restarted):
    // a room's messages reached its members, nobody else.
    for (receiver, client) in sim.clients.iter().enumerate() {
        let told = client.saw(|e| matches!(e, Event::SessionLost { .. }));
        for (sender, name) in CLIENTS.iter().enumerate() {
            let got: Vec<u64> = client
                .received()
                .into_iter()
                .filter(|(source, _, _)| source.as_deref() == Some(*name))
                .filter_map(|(_, id, _)| id)
                .collect();
            let expected: Vec<u64> = sim
                .server
                .consumed
                .iter()
                .filter(|m| m.source == *name && m.re.is_none())
                .filter(|m| match (m.effect, m.to.as_deref()) {
                    ("broadcast", _) => sender != receiver,
                    ("to", Some(to)) => to == CLIENTS[receiver],
                    ("room", _) => room_recipients
                        .get(&(m.source.as_str(), m.id))
                        .is_some_and(|recipients| recipients.contains(CLIENTS[receiver])),
                    _ => false,
                })
                .map(|m| m.id)
                .collect();
            let (to, from) = (CLIENTS[receiver], name);
            prop_assert!(
                got.windows(2).all(|w| w[0] < w[1]),
                "{to} got {from}'s messages twice or out of order: {got:?}"
            );
            prop_assert!(
                got.iter().all(|id| expected.contains(id)),
                "{to} got from {from} what was not sent to it: {got:?} / {expected:?}"
            );
            if !told {
                prop_assert_eq!(&got, &expected, "{} received from {}", to, from);
            }
        }
    }
    Ok(())
}

proptest! {
    // 1000 cases each in the suite; PROPTEST_CASES=N runs N for a deeper search.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").map_or(1000, |_| ProptestConfig::default().cases),
        ..ProptestConfig::default()
    })]

    #[test]
    fn nothing_lost_nothing_twice_order_kept(ops in proptest::collection::vec(op(false), 1..60), seed in any::<u64>()) {
        run(&ops, seed)?;
    }

    #[test]
    fn across_server_restarts_nothing_is_lost_untold(ops in proptest::collection::vec(op(true), 1..60), seed in any::<u64>()) {
        run(&ops, seed)?;
    }
}
