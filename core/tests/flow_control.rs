//! Flow control instead of disconnection, on the simulation of the real client and server
//! state machines: bursts, slow readers, connection floods and reconnect storms leave
//! well-behaved clients connected with nothing lost, and memory bounded.

// proptest and the simulation are native-only.
#![cfg(not(target_arch = "wasm32"))]

use std::time::Duration;

use wsrelay_core::client::{Event, Options, Outgoing, ReadyState};
use wsrelay_core::server::memory::EngineLimits;
use wsrelay_core::server::{ConnectionSettings, DisconnectReason, ServerEvent};
use wsrelay_core::sim::{default_limits, Sim};

fn broadcast(payload: &str) -> Outgoing<'_> {
    Outgoing {
        kind: "chat",
        payload: Some(payload),
        ..Outgoing::default()
    }
}

fn is_open(sim: &Sim, client: usize) -> bool {
    sim.clients[client].core.ready_state() == ReadyState::Open
}

/// Payloads `client` received from `source`, as numbers, in arrival order.
fn numbers_from(sim: &Sim, client: usize, source: &str) -> Vec<u64> {
    sim.clients[client]
        .received()
        .into_iter()
        .filter(|(s, _, _)| s.as_deref() == Some(source))
        .filter_map(|(_, _, payload)| payload?.parse().ok())
        .collect()
}

/// How many times `client`'s connection closed.
fn closes(sim: &Sim, client: usize) -> usize {
    sim.clients[client]
        .events
        .iter()
        .filter(|(_, e)| matches!(e, Event::Close { .. }))
        .count()
}

fn delivered(sim: &Sim, client: usize) -> usize {
    sim.clients[client].delivered
}

fn blocked(sim: &Sim) -> usize {
    sim.server
        .events
        .iter()
        .filter(|(_, e)| matches!(e, ServerEvent::Blocked { .. }))
        .count()
}

/// Small windows, so that a few thousand small messages exercise flow control.
fn tight() -> (ConnectionSettings, EngineLimits) {
    let settings = ConnectionSettings {
        send_window: 4 * 1024,
        backlog_window: 16 * 1024,
        slow_consumer_timeout: Duration::from_secs(2),
        stash_limit: 4 * 1024 + 64 * 1024,
        ..ConnectionSettings::default()
    };
    let limits = EngineLimits {
        backlog_window: 16 * 1024,
        max_backlog: 4 << 20,
        ..default_limits()
    };
    (settings, limits)
}

fn connected(names: &[&str], settings: ConnectionSettings, limits: EngineLimits) -> Sim {
    let mut sim = Sim::with_server(settings, limits);
    for (seed, name) in names.iter().enumerate() {
        sim.add_client(name, Options::default(), seed as u64 + 1);
    }
    sim.run_until(100_000, |s| (0..names.len()).all(|c| is_open(s, c)));
    sim
}

#[test]
fn a_burst_of_10000_small_broadcasts_reaches_everyone_once_in_order() {
    let (settings, limits) = tight();
    let window = limits.backlog_window;
    let mut sim = connected(&["alice", "bob", "carol", "dave"], settings, limits);
    for n in 0..10_000u64 {
        sim.with_client(0, |c, now| c.send(now, broadcast(&n.to_string())))
            .expect("queued");
    }
    let mut largest = 0;
    sim.run_until(2_000_000, |s| {
        largest = largest.max(s.server.largest_backlog());
        delivered(s, 0) == 10_000 && (1..4).all(|c| s.clients[c].messages == 10_000)
    });
    let expected: Vec<u64> = (0..10_000).collect();
    for client in 1..4 {
        assert_eq!(numbers_from(&sim, client, "alice"), expected);
    }
    for client in 0..4 {
        assert_eq!(closes(&sim, client), 0, "client {client} was disconnected");
    }
    // The sender's window (4 KiB in flight) paced it: no recipient fell behind.
    assert!(
        largest <= window + 4096,
        "backlog stayed near the window: {largest} bytes"
    );
}

#[test]
fn a_reader_that_stops_slows_its_senders_then_is_cut_off_while_a_bystander_loses_nothing() {
    let (settings, limits) = tight();
    let max_backlog = limits.max_backlog;
    let mut sim = connected(&["sender", "bystander", "slow"], settings, limits);
    sim.pause(2);
    for n in 0..3000u64 {
        sim.with_client(0, |c, now| c.send(now, broadcast(&n.to_string())))
            .expect("queued");
    }
    sim.run_until(2_000_000, |s| {
        assert!(s.server.backlog("slow") <= max_backlog, "bounded");
        delivered(s, 0) == 3000 && s.clients[1].messages == 3000
    });
    let expected: Vec<u64> = (0..3000).collect();
    assert_eq!(numbers_from(&sim, 1, "sender"), expected);
    assert_eq!(closes(&sim, 1), 0, "the bystander stays connected");
    assert_eq!(closes(&sim, 0), 0, "the sender stays connected");
    assert!(blocked(&sim) > 0, "the sender waited for the slow reader");
    assert!(
        sim.server
            .endings
            .iter()
            .any(|(source, reason)| source == "slow" && *reason == DisconnectReason::SlowConsumer),
        "the slow reader was cut off: {:?}",
        sim.server.endings
    );
    // 1013 is not a stop code: once it reads again, it resumes and misses nothing.
    sim.resume(2);
    sim.run_until(2_000_000, |s| {
        is_open(s, 2) && s.clients[2].messages >= 3000
    });
    sim.run_for(Duration::from_secs(1));
    assert_eq!(numbers_from(&sim, 2, "sender"), expected);
    assert!(!sim.clients[2].saw(|e| matches!(e, Event::SessionLost { .. })));
}

#[test]
fn a_flood_of_3000_connections_leaves_a_conversation_undisturbed() {
    let mut sim = connected(
        &["alice", "bob"],
        ConnectionSettings::default(),
        default_limits(),
    );
    for n in 0..3000u64 {
        sim.add_client(&format!("flood-{n}"), Options::default(), 100 + n);
        if n % 30 == 0 {
            let payload = (n / 30).to_string();
            sim.with_client(0, |c, now| c.send(now, broadcast(&payload)))
                .expect("sent");
            sim.step();
        }
    }
    sim.run_until(1_000_000, |s| (0..s.clients.len()).all(|c| is_open(s, c)));
    sim.run_for(Duration::from_secs(1));
    assert_eq!(
        numbers_from(&sim, 1, "alice"),
        (0..100).collect::<Vec<u64>>()
    );
    assert_eq!(delivered(&sim, 0), 100);
    for client in 0..sim.clients.len() {
        assert_eq!(closes(&sim, client), 0, "client {client} was disconnected");
    }
    assert_eq!(sim.server.connections(), 3002);
}

#[test]
fn a_reconnect_storm_of_1000_session_clients_resumes_every_session() {
    let names: Vec<String> = (0..1000).map(|n| format!("client-{n}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut sim = connected(&refs, ConnectionSettings::default(), default_limits());
    // Everybody gets a frame before the outage, and one while they are away.
    sim.with_client(0, |c, now| c.send(now, broadcast("1")))
        .expect("sent");
    sim.run_for(Duration::from_millis(100));
    sim.server_down();
    sim.server_up();
    sim.run_for(Duration::from_millis(10));
    sim.with_client(0, |c, now| c.send(now, broadcast("2")))
        .expect("queued");
    sim.run_until(1_000_000, |s| {
        (0..s.clients.len()).all(|c| is_open(s, c)) && delivered(s, 0) == 2
    });
    sim.run_for(Duration::from_secs(1));
    for client in 1..1000 {
        assert_eq!(
            numbers_from(&sim, client, "client-0"),
            [1, 2],
            "client {client}"
        );
        assert!(
            sim.clients[client].saw(|e| *e == Event::Open { resumed: true }),
            "client {client} resumed"
        );
    }
    // After a restart the sessions are gone, and every client is told so.
    sim.server_down();
    sim.server_restart();
    sim.run_until(1_000_000, |s| (0..s.clients.len()).all(|c| is_open(s, c)));
    for client in 0..1000 {
        assert!(
            sim.clients[client].saw(|e| matches!(e, Event::SessionLost { .. })),
            "client {client} was told its session was lost"
        );
    }
}

/// Large frames to a client at the default windows: the client's acknowledgement by bytes
/// (`ack_bytes`) keeps its backlog far under the server's window, so its sender never waits
/// for the lazy acknowledgement (`ack_delay`). Without it, 128 frames of 60 KiB (`ack_every`)
/// would be 7.5 MiB, and the sender would wait on every acknowledgement delay.
#[test]
fn large_frames_never_wait_for_a_lazy_acknowledgement() {
    let payload = format!("\"{}\"", "x".repeat(60 << 10));
    let run = |receiver: Options| {
        let mut sim = Sim::new();
        sim.add_client("sender", Options::default(), 1);
        sim.add_client("receiver", receiver, 2);
        sim.run_until(100_000, |s| is_open(s, 0) && is_open(s, 1));
        let start = sim.now;
        for _ in 0..100 {
            sim.with_client(0, |c, now| c.send(now, broadcast(&payload)))
                .expect("queued");
        }
        let mut largest = 0;
        sim.run_until(1_000_000, |s| {
            largest = largest.max(s.server.largest_backlog());
            delivered(s, 0) == 100 && s.clients[1].messages == 100
        });
        (
            blocked(&sim),
            largest,
            sim.now.saturating_duration_since(start),
        )
    };
    let (waits, largest, took) = run(Options::default());
    assert_eq!(waits, 0, "the sender never waited for the receiver");
    assert!(largest < 512 << 10, "backlog at most {largest} bytes");
    // The sender's window (256 KiB, four frames) per round trip of 10 ms.
    assert!(took < Duration::from_millis(400), "took {took:?}");

    let lazy = Options {
        ack_bytes: usize::MAX,
        ..Options::default()
    };
    let (waits, _, slow) = run(lazy);
    assert!(waits > 0, "without it, the sender waits");
    assert!(
        slow > took * 2,
        "and takes longer: {slow:?} against {took:?}"
    );
}
