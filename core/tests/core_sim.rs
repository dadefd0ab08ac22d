//! Example tests of every behaviour of the client core, on the simulation harness
//! (`wsrelay_core::sim`).

// The simulation (the feature `sim`) is a native-only dev-dependency.
#![cfg(not(target_arch = "wasm32"))]

use std::time::Duration;

use wsrelay_core::client::{
    delay_range, ClientCore, Error, Event, Options, Outgoing, Output, ReadyState, TransportId,
};
use wsrelay_core::protocol::{JOIN, LEAVE};
use wsrelay_core::server::DisconnectReason;
use wsrelay_core::sim::Sim;
use wsrelay_core::Instant;

fn msg<'a>(kind: &'a str, payload: &'a str) -> Outgoing<'a> {
    Outgoing {
        kind,
        payload: Some(payload),
        ..Outgoing::default()
    }
}

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

fn is_open(sim: &Sim, client: usize) -> bool {
    sim.clients[client].core.ready_state() == ReadyState::Open
}

fn delivered(sim: &Sim, client: usize, id: u64) -> bool {
    sim.clients[client].saw(|e| *e == Event::Delivered { id })
}

fn failure(sim: &Sim, client: usize, id: u64) -> Option<Error> {
    sim.clients[client]
        .events
        .iter()
        .find_map(|(_, e)| match e {
            Event::Failed { id: failed, error } if *failed == id => Some(error.clone()),
            _ => None,
        })
}

fn payloads_from(sim: &Sim, client: usize, source: &str) -> Vec<String> {
    sim.clients[client]
        .received()
        .into_iter()
        .filter(|(s, _, _)| s.as_deref() == Some(source))
        .filter_map(|(_, _, p)| p)
        .collect()
}

fn two_clients() -> Sim {
    let mut sim = Sim::new();
    sim.add_client("alice", Options::default(), 1);
    sim.add_client("bob", Options::default(), 2);
    sim.run_until(100, |s| is_open(s, 0) && is_open(s, 1));
    sim
}

#[test]
fn chat_between_clients_arrives_in_order_with_the_server_set_source() {
    let mut sim = two_clients();
    let ids: Vec<u64> = (1..=3)
        .map(|n| sim.with_client(0, |c, now| c.send(now, msg("chat", &n.to_string()))))
        .collect::<Result<_, _>>()
        .expect("accepted");
    sim.run_for(ms(100));
    assert_eq!(payloads_from(&sim, 1, "alice"), ["1", "2", "3"]);
    assert!(ids.iter().all(|&id| delivered(&sim, 0, id)));
    assert!(
        payloads_from(&sim, 0, "alice").is_empty(),
        "no echo to the sender"
    );
}

#[test]
fn messages_sent_while_the_server_is_down_are_flushed_in_order_on_connect() {
    let mut sim = two_clients();
    sim.server_down();
    for n in 0..5 {
        sim.with_client(0, |c, now| c.send(now, msg("chat", &n.to_string())))
            .expect("queued");
    }
    assert_eq!(sim.clients[0].core.queued(), 5);
    sim.run_for(Duration::from_secs(3));
    assert!(sim.server.consumed.is_empty());
    sim.server_up();
    sim.run_until(1000, |s| s.clients[0].core.queued() == 0 && is_open(s, 1));
    sim.run_for(ms(100));
    assert_eq!(payloads_from(&sim, 1, "alice"), ["0", "1", "2", "3", "4"]);
}

#[test]
fn a_lost_ack_causes_a_retransmit_that_the_server_drops() {
    let mut sim = two_clients();
    for n in 0..4 {
        sim.with_client(0, |c, now| c.send(now, msg("chat", &n.to_string())))
            .expect("sent");
    }
    // The frames reach the server after one latency; its ack is then in flight: cut now.
    sim.run_for(sim.latency);
    assert_eq!(sim.server.consumed.len(), 4);
    assert_eq!(sim.clients[0].core.queued(), 4, "acks not yet received");
    sim.cut(0);
    sim.run_until(1000, |s| s.clients[0].core.queued() == 0);
    sim.run_for(ms(100));
    assert_eq!(
        sim.server.consumed.len(),
        4,
        "the welcome's ack settled them, nothing resent twice"
    );
    assert_eq!(payloads_from(&sim, 1, "alice"), ["0", "1", "2", "3"]);
    for id in 1..=4 {
        let count = sim.clients[0]
            .events
            .iter()
            .filter(|(_, e)| *e == Event::Delivered { id })
            .count();
        assert_eq!(count, 1, "exactly one outcome for {id}");
    }
}

#[test]
fn frames_lost_in_flight_are_retransmitted_once() {
    let mut sim = two_clients();
    for n in 0..3 {
        sim.with_client(0, |c, now| c.send(now, msg("chat", &n.to_string())))
            .expect("sent");
    }
    sim.cut(0); // before they arrive
    sim.run_until(1000, |s| s.clients[0].core.queued() == 0);
    sim.run_for(ms(100));
    assert_eq!(sim.server.consumed.len(), 3);
    assert_eq!(payloads_from(&sim, 1, "alice"), ["0", "1", "2"]);
}

#[test]
fn a_resumed_session_receives_what_it_missed_exactly_once() {
    let mut sim = two_clients();
    sim.with_client(0, |c, now| c.send(now, msg("chat", "\"before\"")))
        .expect("sent");
    sim.run_for(ms(2)); // bob's copy is in flight when his link is cut
    sim.cut(1);
    for n in 0..3 {
        sim.with_client(0, |c, now| c.send(now, msg("chat", &n.to_string())))
            .expect("sent");
    }
    sim.run_until(1000, |s| is_open(s, 1));
    sim.run_for(ms(100));
    assert_eq!(
        payloads_from(&sim, 1, "alice"),
        ["\"before\"", "0", "1", "2"]
    );
    assert!(sim.clients[1].saw(|e| *e == Event::Open { resumed: true }));
}

#[test]
fn a_server_restart_starts_a_fresh_session() {
    let mut sim = two_clients();
    sim.server_down();
    sim.with_client(0, |c, now| c.send(now, msg("chat", "\"while down\"")))
        .expect("queued");
    sim.server_restart();
    sim.run_until(1000, |s| s.clients[0].core.queued() == 0 && is_open(s, 1));
    sim.run_for(ms(100));
    assert!(sim.clients[0].saw(|e| *e == Event::Open { resumed: false }));
    assert_eq!(payloads_from(&sim, 1, "alice"), ["\"while down\""]);
}

#[test]
fn reconnect_delays_grow_with_jitter_and_stay_in_range() {
    let mut sim = Sim::new();
    sim.server_down();
    let options = Options::default();
    sim.add_client("alice", options.clone(), 9);
    sim.run_for(Duration::from_secs(120));
    let delays: Vec<(u32, Duration)> = sim.clients[0]
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Reconnecting { attempt, delay } => Some((*attempt, *delay)),
            _ => None,
        })
        .collect();
    assert!(delays.len() >= 12, "{delays:?}");
    for (i, (attempt, delay)) in delays.iter().enumerate() {
        assert_eq!(*attempt as usize, i + 1);
        let (lo, hi) = delay_range(&options, *attempt);
        assert!(
            lo <= *delay && *delay <= hi,
            "attempt {attempt}: {delay:?} not in {lo:?}..{hi:?}"
        );
    }
    assert!(
        delays.last().map(|d| d.1) >= Some(Duration::from_secs(7)),
        "reaches the cap"
    );
}

#[test]
fn min_uptime_resets_the_retry_count_but_a_flapping_server_does_not() {
    let mut sim = Sim::new();
    sim.add_client("alice", Options::default(), 3);
    sim.run_until(100, |s| is_open(s, 0));
    // Flapping: each connection dies within a second.
    for _ in 0..4 {
        sim.run_for(ms(500));
        sim.cut(0);
        sim.run_until(1000, |s| is_open(s, 0));
    }
    assert_eq!(sim.clients[0].core.retry_count(), 4, "backoff kept growing");
    // Stable for longer than min_uptime: the next loss starts from attempt 1 again.
    sim.run_for(Duration::from_secs(6));
    sim.cut(0);
    assert_eq!(sim.clients[0].core.retry_count(), 1);
}

#[test]
fn a_silent_server_is_detected_by_the_heartbeat() {
    let mut sim = two_clients();
    sim.stall(0);
    let stalled_at = sim.now;
    sim.run_until(10_000, |s| {
        s.clients[0]
            .saw(|e| matches!(e, Event::Close { reason, .. } if reason == "heartbeat timeout"))
    });
    // Within the timeout of the last frame heard, and not before a ping went unanswered.
    let detected = sim.now.saturating_duration_since(stalled_at);
    let options = Options::default();
    assert!(detected <= options.heartbeat_timeout, "{detected:?}");
    assert!(
        detected >= options.heartbeat_timeout - options.heartbeat_interval,
        "{detected:?}"
    );
    sim.run_until(1000, |s| is_open(s, 0));
    sim.with_client(0, |c, now| c.send(now, msg("chat", "\"after\"")))
        .expect("sent");
    sim.run_for(ms(100));
    assert_eq!(payloads_from(&sim, 1, "alice"), ["\"after\""]);
}

#[test]
fn a_connection_attempt_times_out() {
    let options = Options::default();
    let mut core = ClientCore::new(options.clone(), 1, Instant::from_millis(0));
    assert_eq!(core.poll_output(), Some(Output::Connect(TransportId(1))));
    core.handle_opened(Instant::from_millis(10), TransportId(1));
    assert!(
        matches!(core.poll_output(), Some(Output::Transmit(hello)) if hello.contains("~hello"))
    );
    assert_eq!(core.poll_timeout(), Some(Instant::from_millis(4000)));
    core.handle_timeout(Instant::from_millis(4000));
    let outputs: Vec<Output> = std::iter::from_fn(|| core.poll_output()).collect();
    assert!(matches!(
        &outputs[0],
        Output::CloseTransport {
            transport: TransportId(1),
            ..
        }
    ));
    assert!(outputs
        .iter()
        .any(|o| matches!(o, Output::Event(Event::Reconnecting { attempt: 1, .. }))));
    // A late event from the abandoned transport changes nothing.
    core.handle_closed(Instant::from_millis(4001), TransportId(1), 1006, "");
    assert_eq!(core.poll_output(), None);
    assert_eq!(core.ready_state(), ReadyState::Connecting);
}

#[test]
fn start_closed_waits_for_reconnect_and_queues_meanwhile() {
    let options = Options {
        start_closed: true,
        ..Options::default()
    };
    let now = Instant::from_millis(0);
    let mut core = ClientCore::new(options, 1, now);
    assert_eq!(core.poll_output(), None);
    assert_eq!(core.ready_state(), ReadyState::Closed);
    core.send(now, msg("chat", "1"))
        .expect("queued before start");
    core.reconnect(now);
    assert_eq!(core.poll_output(), Some(Output::Connect(TransportId(1))));
}

#[test]
fn stop_codes_end_reconnecting_and_fail_what_is_pending() {
    let mut sim = two_clients();
    sim.stall(0);
    let id = sim
        .with_client(0, |c, now| c.send(now, msg("chat", "\"x\"")))
        .expect("in flight");
    // The server tells the client it was replaced by another connection.
    sim.server_close(0, 4409, "replaced");
    sim.run_for(ms(100));
    let rejected = Error::Rejected {
        code: 4409,
        reason: "replaced".into(),
    };
    // It was sent and never acknowledged: it may have been delivered, and says so.
    assert_eq!(
        failure(&sim, 0, id),
        Some(Error::Unconfirmed(Box::new(rejected.clone())))
    );
    assert!(sim.clients[0].saw(|e| matches!(
        e,
        Event::Close {
            code: 4409,
            reconnecting: false,
            ..
        }
    )));
    let refused = sim.with_client(0, |c, now| c.send(now, msg("chat", "\"y\"")));
    assert_eq!(refused, Err(rejected));
    sim.run_for(Duration::from_secs(60));
    assert_eq!(
        sim.clients[0].core.ready_state(),
        ReadyState::Closed,
        "no reconnect"
    );
}

#[test]
fn a_stop_fails_what_was_never_sent_as_rejected_and_what_was_sent_as_unconfirmed() {
    // Queued while connecting, then the upgrade is refused: never sent, so `rejected` itself.
    let at = Instant::from_millis(0);
    let mut core = ClientCore::new(Options::default(), 1, at);
    let _ = std::iter::from_fn(|| core.poll_output()).count();
    let queued = core.send(at, msg("chat", "\"queued\"")).expect("queued");
    core.handle_refused(at, TransportId(1), 401, "invalid token");
    let failed = std::iter::from_fn(|| core.poll_output()).find_map(|output| match output {
        Output::Event(Event::Failed { id, error }) if id == queued => Some(error),
        _ => None,
    });
    let rejected = Error::Rejected {
        code: 4401,
        reason: "invalid token".into(),
    };
    assert_eq!(failed, Some(rejected));
    // Sent over a link that then went silent, and the client is stopped: `unconfirmed`.
    let mut sim = two_clients();
    sim.stall(0);
    let sent = sim
        .with_client(0, |c, now| c.send(now, msg("chat", "\"sent\"")))
        .expect("in flight");
    sim.server_close(0, 4409, "replaced");
    sim.run_for(ms(100));
    assert_eq!(
        failure(&sim, 0, sent).map(|e| e.code().to_owned()),
        Some("unconfirmed".to_owned())
    );
    // Queued while disconnected, then closed by the application: never sent, `closed`.
    let mut sim = two_clients();
    sim.server_down();
    sim.cut(0);
    let queued = sim
        .with_client(0, |c, now| c.send(now, msg("chat", "\"queued\"")))
        .expect("queued");
    sim.with_client(0, |c, now| c.close(now, 1000, "bye"));
    assert_eq!(failure(&sim, 0, queued), Some(Error::Closed));
}

/// Holds client 0's next connection attempt back, and runs until the client gave up on it
/// (its connection timeout).
fn hold_an_attempt_until_given_up(sim: &mut Sim) {
    sim.clients[0].hold_attempts = true;
    sim.cut(0);
    sim.run_until(10_000, |s| s.held_attempts(0) == 1);
    sim.run_until(10_000, |s| {
        s.clients[0]
            .saw(|e| matches!(e, Event::Close { reason, .. } if reason == "connection timeout"))
    });
    sim.clients[0].hold_attempts = false;
}

fn stopped(sim: &Sim, client: usize) -> bool {
    sim.clients[client].saw(|e| {
        matches!(
            e,
            Event::Close {
                reconnecting: false,
                ..
            }
        )
    })
}

#[test]
fn a_stale_attempt_arriving_after_the_live_one_is_refused_and_changes_nothing() {
    let mut sim = two_clients();
    hold_an_attempt_until_given_up(&mut sim);
    sim.run_until(10_000, |s| is_open(s, 0));
    // The live connection has received and acknowledged something.
    let id = sim
        .with_client(1, |c, now| c.send(now, msg("chat", "\"before\"")))
        .expect("sent");
    sim.run_for(Duration::from_secs(1));
    assert!(delivered(&sim, 1, id));
    // The attempt the client gave up on reaches the server only now.
    assert_eq!(sim.release_attempts(0), 0, "refused");
    assert_eq!(sim.server.stale_attempts, 1);
    sim.run_for(Duration::from_secs(5));
    assert!(is_open(&sim, 0), "the live connection goes on");
    assert!(!stopped(&sim, 0));
    assert!(
        !sim.server
            .endings
            .iter()
            .any(|(source, reason)| source == "alice"
                && matches!(
                    reason,
                    DisconnectReason::Replaced | DisconnectReason::Superseded
                )),
        "{:?}",
        sim.server.endings
    );
    let id = sim
        .with_client(1, |c, now| c.send(now, msg("chat", "\"after\"")))
        .expect("sent");
    sim.run_for(Duration::from_secs(1));
    assert!(delivered(&sim, 1, id));
    assert_eq!(payloads_from(&sim, 0, "bob"), ["\"before\"", "\"after\""]);
    assert!(
        !sim.clients[0].saw(|e| matches!(e, Event::SessionLost { .. })),
        "the session was never touched by the stale attempt"
    );
}

#[test]
fn a_stale_attempt_arriving_before_the_live_one_is_superseded_by_it() {
    let mut sim = two_clients();
    hold_an_attempt_until_given_up(&mut sim);
    // It reaches the server while the client waits to try again: the server takes it (it
    // cannot know yet), over a link whose client end is gone.
    assert_eq!(sim.release_attempts(0), 1, "claimed");
    sim.run_until(10_000, |s| is_open(s, 0));
    sim.run_for(Duration::from_secs(1));
    assert!(sim
        .server
        .endings
        .iter()
        .any(|(source, reason)| source == "alice" && *reason == DisconnectReason::Superseded));
    assert!(!stopped(&sim, 0));
    let id = sim
        .with_client(1, |c, now| c.send(now, msg("chat", "\"hi\"")))
        .expect("sent");
    sim.run_for(Duration::from_secs(1));
    assert!(delivered(&sim, 1, id));
    assert_eq!(payloads_from(&sim, 0, "bob"), ["\"hi\""]);
    assert!(!sim.clients[0].saw(|e| matches!(e, Event::SessionLost { .. })));
}

#[test]
fn another_instance_of_the_same_source_still_replaces_and_stops_the_first() {
    let mut sim = two_clients();
    // A second client object (another tab, another device) with alice's source.
    let second = sim.add_client("alice", Options::default(), 99);
    sim.run_until(10_000, |s| is_open(s, second) && stopped(s, 0));
    assert!(sim.clients[0].saw(|e| matches!(e, Event::Close { code: 4409, .. })));
    assert!(sim
        .server
        .endings
        .iter()
        .any(|(source, reason)| source == "alice" && *reason == DisconnectReason::Replaced));
    sim.run_for(Duration::from_secs(10));
    assert!(is_open(&sim, second), "no replacement ping-pong");
}

#[test]
fn max_retries_gives_up_with_a_clear_error() {
    let mut sim = Sim::new();
    sim.server_down();
    let options = Options {
        max_retries: Some(3),
        ..Options::default()
    };
    sim.add_client("alice", options, 1);
    let id = sim
        .with_client(0, |c, now| c.send(now, msg("chat", "\"x\"")))
        .expect("queued");
    sim.run_for(Duration::from_secs(60));
    assert_eq!(
        failure(&sim, 0, id),
        Some(Error::RetriesExhausted { attempts: 3 })
    );
    assert_eq!(sim.clients[0].core.ready_state(), ReadyState::Closed);
}

#[test]
fn queue_bounds_refuse_with_clear_errors() {
    let mut sim = Sim::new();
    sim.server_down();
    let options = Options {
        max_enqueued_messages: 3,
        max_enqueued_bytes: 200,
        ..Options::default()
    };
    sim.add_client("alice", options, 1);
    for _ in 0..3 {
        sim.with_client(0, |c, now| c.send(now, msg("chat", "1")))
            .expect("room");
    }
    let full = sim.with_client(0, |c, now| c.send(now, msg("chat", "1")));
    assert_eq!(full, Err(Error::QueueFull { limit: 3 }));

    let options = Options {
        max_enqueued_bytes: 200,
        ..Options::default()
    };
    let mut core = ClientCore::new(options, 1, Instant::from_millis(0));
    let big = format!("\"{}\"", "x".repeat(120));
    core.send(Instant::from_millis(0), msg("chat", &big))
        .expect("fits");
    let over = core.send(Instant::from_millis(0), msg("chat", &big));
    assert_eq!(over, Err(Error::QueueBytesFull { limit: 200 }));
    let huge = format!("\"{}\"", "x".repeat(2 << 20));
    let too_large = core.send(Instant::from_millis(0), msg("chat", &huge));
    assert!(matches!(too_large, Err(Error::TooLarge { limit, .. }) if limit == 1 << 20));
    assert_eq!(core.queued(), 1, "refused messages take no room");
}

#[test]
fn bad_input_is_refused_not_sent() {
    let mut core = ClientCore::new(Options::default(), 1, Instant::from_millis(0));
    let now = Instant::from_millis(0);
    assert_eq!(core.send(now, msg("", "1")), Err(Error::InvalidType));
    assert_eq!(core.send(now, msg("~ack", "1")), Err(Error::InvalidType));
    assert_eq!(
        core.send(now, msg("chat", "{oops")),
        Err(Error::InvalidPayload)
    );
    assert_eq!(core.queued(), 0);
}

#[test]
fn time_to_live_expires_messages_that_could_not_be_sent() {
    let mut sim = Sim::new();
    sim.server_down();
    sim.add_client("alice", Options::default(), 1);
    let short = Outgoing {
        ttl: Some(Duration::from_secs(2)),
        ..msg("chat", "\"stale\"")
    };
    let id = sim
        .with_client(0, |c, now| c.send(now, short))
        .expect("queued");
    let kept = sim
        .with_client(0, |c, now| c.send(now, msg("chat", "\"kept\"")))
        .expect("queued");
    sim.run_for(Duration::from_secs(3));
    assert_eq!(failure(&sim, 0, id), Some(Error::Expired));
    sim.server_up();
    sim.run_until(1000, |s| s.clients[0].core.queued() == 0);
    assert!(delivered(&sim, 0, kept));
    assert!(sim
        .server
        .consumed
        .iter()
        .all(|m| m.payload.as_deref() != Some("\"stale\"")));
}

#[test]
fn requests_get_the_peers_handler_result() {
    let mut sim = two_clients();
    // Bob's application has a handler for "echo", which answers with the payload.
    sim.clients[1].core.set_handled("echo", true);
    sim.clients[1].auto_respond = true;
    let ask = Outgoing {
        to: Some("bob"),
        ..msg("echo", "{\"n\":42}")
    };
    let id = sim
        .with_client(0, |c, now| c.request(now, ask, None))
        .expect("sent");
    sim.run_for(ms(100));
    let reply = sim.clients[0].events.iter().find_map(|(_, e)| match e {
        Event::Reply {
            request,
            source,
            result,
        } if *request == id => Some((source.clone(), result.clone())),
        _ => None,
    });
    assert_eq!(
        reply,
        Some((Some("bob".into()), Ok(Some("{\"n\":42}".into()))))
    );
    assert_eq!(sim.clients[0].core.pending_requests(), 0);
    assert!(!delivered(&sim, 0, id), "a request's outcome is its reply");
}

#[test]
fn a_request_the_peer_has_no_handler_for_fails_at_once_with_no_handler() {
    let mut sim = two_clients();
    let ask = Outgoing {
        to: Some("bob"),
        ..msg("unheard-of", "1")
    };
    let id = sim
        .with_client(0, |c, now| {
            c.request(now, ask, Some(Duration::from_secs(30)))
        })
        .expect("sent");
    sim.run_for(ms(100));
    let reply = sim.clients[0].events.iter().find_map(|(_, e)| match e {
        Event::Reply {
            request, result, ..
        } if *request == id => Some(result.clone()),
        _ => None,
    });
    let code = reply
        .and_then(|result| result.err())
        .map(|error| error.code);
    assert_eq!(
        code.as_deref(),
        Some("no_handler"),
        "within 100 ms, not 30 s"
    );
}

#[test]
fn responses_are_never_dispatched_as_messages() {
    let mut sim = two_clients();
    sim.clients[0].auto_respond = true;
    sim.clients[1].auto_respond = true;
    sim.with_client(0, |c, now| c.send(now, msg("chat-message", "\"hi\"")))
        .expect("sent");
    sim.run_for(Duration::from_secs(1));
    // Bob got one message and answered it; Alice got the answer as a response, not a message,
    // so neither auto-responder loops.
    assert_eq!(sim.clients[1].received().len(), 1);
    assert!(sim.clients[0].received().is_empty());
    assert!(sim.clients[0].saw(
        |e| matches!(e, Event::Response(r) if r.re == 1 && r.source.as_deref() == Some("bob"))
    ));
    assert_eq!(sim.server.consumed.len(), 2);
}

#[test]
fn a_request_timeout_counts_time_spent_in_the_queue() {
    let mut sim = Sim::new();
    sim.server_down();
    sim.add_client("alice", Options::default(), 1);
    let ask = Outgoing {
        to: Some("bob"),
        ..msg("echo", "1")
    };
    let id = sim
        .with_client(0, |c, now| {
            c.request(now, ask, Some(Duration::from_secs(2)))
        })
        .expect("queued");
    let start = sim.now;
    sim.run_until(10_000, |s| failure(s, 0, id).is_some());
    assert_eq!(failure(&sim, 0, id), Some(Error::Timeout));
    assert_eq!(
        sim.now.saturating_duration_since(start),
        Duration::from_secs(2)
    );
    assert_eq!(
        sim.clients[0].core.queued(),
        0,
        "an abandoned request is not sent later"
    );
}

#[test]
fn an_unknown_target_fails_the_send_with_the_servers_reason() {
    let mut sim = two_clients();
    let to_nobody = Outgoing {
        to: Some("nobody"),
        ..msg("chat", "1")
    };
    let id = sim
        .with_client(0, |c, now| c.send(now, to_nobody))
        .expect("sent");
    sim.run_for(ms(100));
    match failure(&sim, 0, id) {
        Some(Error::Remote(error)) => assert_eq!(error.code, "unknown_target"),
        other => panic!("expected unknown_target, got {other:?}"),
    }
    assert!(!delivered(&sim, 0, id));
}

#[test]
fn close_waits_for_acks_then_closes_for_good() {
    let mut sim = two_clients();
    let ids: Vec<u64> = (0..3)
        .map(|n| sim.with_client(0, |c, now| c.send(now, msg("chat", &n.to_string()))))
        .collect::<Result<_, _>>()
        .expect("sent");
    sim.with_client(0, |c, now| c.close(now, 1000, "bye"));
    assert_eq!(sim.clients[0].core.ready_state(), ReadyState::Closing);
    assert_eq!(
        sim.with_client(0, |c, now| c.send(now, msg("chat", "late"))),
        Err(Error::Closed)
    );
    sim.run_for(Duration::from_secs(1));
    assert!(ids.iter().all(|&id| delivered(&sim, 0, id)));
    assert!(sim.clients[0].saw(|e| matches!(
        e,
        Event::Close {
            code: 1000,
            reconnecting: false,
            ..
        }
    )));
    assert_eq!(sim.clients[0].core.ready_state(), ReadyState::Closed);
    sim.run_for(Duration::from_secs(30));
    assert_eq!(sim.clients[0].core.ready_state(), ReadyState::Closed);
}

#[test]
fn close_while_disconnected_fails_pending_messages_and_requests() {
    let mut sim = Sim::new();
    sim.server_down();
    sim.add_client("alice", Options::default(), 1);
    let sent = sim
        .with_client(0, |c, now| c.send(now, msg("chat", "1")))
        .expect("queued");
    let asked = sim
        .with_client(0, |c, now| c.request(now, msg("q", "1"), None))
        .expect("queued");
    sim.with_client(0, |c, now| c.close(now, 1000, "bye"));
    assert_eq!(failure(&sim, 0, sent), Some(Error::Closed));
    assert_eq!(failure(&sim, 0, asked), Some(Error::Closed));
    assert_eq!(sim.clients[0].core.queued(), 0);
}

#[test]
fn explicit_reconnect_replaces_the_connection_and_resumes() {
    let mut sim = two_clients();
    sim.with_client(0, |c, now| c.reconnect(now));
    sim.run_until(100, |s| is_open(s, 0));
    assert!(sim.clients[0].saw(|e| *e == Event::Open { resumed: true }));
    assert!(sim.clients[0].saw(|e| matches!(
        e,
        Event::Close {
            code: 4000,
            reconnecting: true,
            ..
        }
    )));
    assert_eq!(sim.clients[0].core.retry_count(), 0);
}

#[test]
fn a_timed_out_request_gets_no_second_outcome() {
    let mut sim = two_clients();
    let ask = Outgoing {
        to: Some("nobody"),
        ..msg("q", "1")
    };
    let timeout = Some(ms(1));
    let id = sim
        .with_client(0, |c, now| c.request(now, ask, timeout))
        .expect("sent");
    sim.run_for(ms(100));
    let outcomes = sim.clients[0]
        .events
        .iter()
        .filter(|(_, e)| matches!(e, Event::Failed { id: failed, .. } if *failed == id))
        .count();
    assert_eq!(outcomes, 1);
    assert_eq!(failure(&sim, 0, id), Some(Error::Timeout));
    assert!(sim.clients[0]
        .saw(|e| matches!(e, Event::Error(Error::Remote(r)) if r.code == "unknown_target")));
}

#[test]
fn decode_error_has_a_stable_code() {
    // Drivers with typed payloads report a response that does not deserialize as `decode`.
    let error = Error::Decode("response payload: invalid type".into());
    assert_eq!(error.code(), "decode");
    assert!(error.to_string().contains("response payload"));
}

/// `relay:join` or `relay:leave` of `room` by client `index`: the request's id.
fn membership(sim: &mut Sim, index: usize, kind: &str, room: &str) -> u64 {
    let payload = format!(r#"{{"room":"{room}"}}"#);
    let message = Outgoing {
        kind,
        payload: Some(&payload),
        ..Outgoing::default()
    };
    sim.with_client(index, |c, now| c.request(now, message, None))
        .expect("accepted")
}

fn answered(sim: &Sim, client: usize, id: u64) -> bool {
    sim.clients[client]
        .saw(|e| matches!(e, Event::Reply { request, result: Ok(_), .. } if *request == id))
}

#[test]
fn a_room_reaches_its_members_and_its_membership_lives_with_the_session() {
    let mut sim = two_clients();
    sim.add_client("carol", Options::default(), 3);
    sim.run_until(100, |s| is_open(s, 2));
    let joins = [
        membership(&mut sim, 0, JOIN, "red"),
        membership(&mut sim, 1, JOIN, "red"),
    ];
    sim.run_for(ms(100));
    assert!(answered(&sim, 0, joins[0]) && answered(&sim, 1, joins[1]));
    let to_red = Outgoing {
        room: Some("red"),
        ..msg("chat", "1")
    };
    let sent = sim
        .with_client(0, |c, now| c.send(now, to_red))
        .expect("accepted");
    sim.run_for(ms(100));
    assert!(delivered(&sim, 0, sent));
    assert_eq!(payloads_from(&sim, 1, "alice"), ["1"]);
    assert!(
        payloads_from(&sim, 2, "alice").is_empty(),
        "carol is not in red"
    );
    let rooms: Vec<Option<String>> = sim.clients[1]
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Message(m) => Some(m.room.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        rooms,
        [Some("red".to_owned())],
        "the room is in the metadata"
    );

    // Carol, no member, is refused; her send fails with the server's code.
    let refused = sim
        .with_client(2, |c, now| {
            c.send(
                now,
                Outgoing {
                    room: Some("red"),
                    ..msg("chat", "2")
                },
            )
        })
        .expect("accepted");
    sim.run_for(ms(100));
    match failure(&sim, 2, refused) {
        Some(Error::Remote(error)) => assert_eq!(error.code, "not_member"),
        other => panic!("expected not_member, got {other:?}"),
    }

    // Bob's link drops and comes back: his session resumes, a member still.
    sim.cut(1);
    sim.run_until(1000, |s| is_open(s, 1));
    sim.with_client(0, |c, now| {
        c.send(
            now,
            Outgoing {
                room: Some("red"),
                ..msg("chat", "3")
            },
        )
    })
    .expect("accepted");
    sim.run_for(ms(200));
    assert_eq!(payloads_from(&sim, 1, "alice"), ["1", "3"]);

    // The server restarts: sessions are lost, and rooms with them.
    sim.server_down();
    sim.server_restart();
    sim.run_until(2000, |s| is_open(s, 0) && is_open(s, 1));
    let lost = sim
        .with_client(0, |c, now| {
            c.send(
                now,
                Outgoing {
                    room: Some("red"),
                    ..msg("chat", "4")
                },
            )
        })
        .expect("accepted");
    sim.run_for(ms(200));
    assert!(
        matches!(failure(&sim, 0, lost), Some(Error::Remote(error)) if error.code == "not_member")
    );
    assert_eq!(payloads_from(&sim, 1, "alice"), ["1", "3"]);
    let leave = membership(&mut sim, 1, LEAVE, "red");
    sim.run_for(ms(100));
    assert!(
        answered(&sim, 1, leave),
        "leaving a room one is not in succeeds"
    );
}
