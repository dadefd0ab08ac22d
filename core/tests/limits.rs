//! What a client may do, decided by the real state machines: the rate limit (a wsrelay client
//! paces itself to it; a client that does not is refused, then closed), responses only to
//! messages put to the responder, the relay's own `relay:*` types, and credentials that expire
//! while connected.

#![cfg(not(target_arch = "wasm32"))]

use std::time::Duration;

use wsrelay_core::client::{Error, Event, Options, Outgoing, ReplyTarget};
use wsrelay_core::protocol::ErrorCode;
use wsrelay_core::server::engine::{Opened, Routed};
use wsrelay_core::server::{
    CloseFrame, ConnectionSettings, DisconnectReason, HandlerSet, Output, RateLimit,
    ServerConnection, ServerEvent, CLOSE_EXPIRED,
};
use wsrelay_core::sim::{default_limits, Sim};
use wsrelay_core::Instant;

fn at(millis: u64) -> Instant {
    Instant::from_millis(millis)
}

fn chat(payload: &str) -> Outgoing<'_> {
    Outgoing {
        kind: "chat",
        payload: Some(payload),
        ..Outgoing::default()
    }
}

fn limited(per_second: u32, burst: u32) -> ConnectionSettings {
    ConnectionSettings {
        rate_limit: Some(RateLimit { per_second, burst }),
        ..ConnectionSettings::default()
    }
}

fn rate_limited_events(sim: &Sim) -> usize {
    sim.server
        .events
        .iter()
        .filter(|(_, e)| matches!(e, ServerEvent::RateLimited { .. }))
        .count()
}

#[test]
fn a_wsrelay_client_paces_itself_to_the_announced_rate() {
    let mut sim = Sim::with_server(limited(20, 10), default_limits());
    sim.add_client("alice", Options::default(), 1);
    sim.add_client("bob", Options::default(), 2);
    sim.run_for(Duration::from_millis(100));
    let start = sim.now;
    for n in 0..200 {
        sim.with_client(0, |c, now| c.send(now, chat(&n.to_string())))
            .expect("queued");
    }
    sim.run_until(100_000, |s| s.clients[0].delivered == 200);
    let took = sim.now.saturating_duration_since(start);
    sim.run_for(Duration::from_millis(100));
    // Half the burst at once, then 20 per second: (200 - 5) / 20 = 9.75 s.
    assert!(
        took >= Duration::from_millis(9_700) && took <= Duration::from_millis(10_500),
        "{took:?}"
    );
    assert_eq!(rate_limited_events(&sim), 0, "nothing was refused");
    let got: Vec<u64> = sim.clients[1]
        .received()
        .into_iter()
        .filter_map(|(_, _, payload)| payload?.parse().ok())
        .collect();
    assert_eq!(got, (0..200).collect::<Vec<_>>(), "all of them, in order");
}

#[test]
fn without_a_limit_nothing_is_paced() {
    let mut sim = Sim::new();
    sim.add_client("alice", Options::default(), 1);
    sim.run_for(Duration::from_millis(100));
    let start = sim.now;
    for n in 0..200 {
        sim.with_client(0, |c, now| c.send(now, chat(&n.to_string())))
            .expect("queued");
    }
    sim.run_until(100_000, |s| s.clients[0].delivered == 200);
    assert!(sim.now.saturating_duration_since(start) < Duration::from_millis(100));
}

/// The application's handler set of a server connection under test.
struct Handles(&'static [&'static str]);

impl HandlerSet for Handles {
    fn handles(&self, kind: &str) -> bool {
        self.0.contains(&kind)
    }
}

type Conn = ServerConnection<String, Handles>;

/// A connection of `alice` with an open session (its welcome drained).
fn session(settings: ConnectionSettings, handlers: &'static [&'static str]) -> (Conn, String) {
    let mut conn = ServerConnection::new(
        "alice".to_owned(),
        1,
        true,
        settings,
        Handles(handlers),
        at(0),
    );
    conn.handle_text(
        at(0),
        r#"{"type":"~hello","v":1,"session":"alice-session","ack":0}"#,
    );
    assert!(matches!(conn.poll_output(), Some(Output::Open { .. })));
    conn.handle_opened(Opened {
        resumed: false,
        consumed: 0,
        base: 0,
        next: 1,
        lost: None,
        sid: Some("s.1".into()),
    });
    let welcome = match conn.poll_output() {
        Some(Output::Transmit(welcome)) => welcome,
        other => panic!("expected the welcome, got {other:?}"),
    };
    while let Some(output) = conn.poll_output() {
        answer(&mut conn, at(0), &output);
    }
    (conn, welcome)
}

/// Feeds `text` at `now` and carries out the outputs as an engine would (every route done).
fn feed(conn: &mut Conn, now: Instant, text: &str) -> Vec<Output<String>> {
    conn.handle_text(now, text);
    let mut outputs = Vec::new();
    while let Some(output) = conn.poll_output() {
        answer(conn, now, &output);
        outputs.push(output);
    }
    outputs
}

/// Answers what asks the engine: routes are done, the mailbox is empty.
fn answer(conn: &mut Conn, now: Instant, output: &Output<String>) {
    match output {
        Output::Route { .. } => conn.handle_routed(now, Routed::Done),
        Output::Fetch { .. } => conn.handle_fetched(now, []),
        _ => {}
    }
}

fn errors(outputs: &[Output<String>]) -> Vec<String> {
    outputs
        .iter()
        .filter_map(|output| match output {
            Output::Append(frame) | Output::Transmit(frame) if frame.contains("~error") => {
                Some(frame.clone())
            }
            Output::Route {
                effect: wsrelay_core::server::engine::Effect::ToSelf { frame },
                ..
            } => Some(frame.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn the_welcome_announces_the_limit() {
    let (_, welcome) = session(limited(50, 100), &[]);
    assert!(welcome.contains(r#""rate":50,"burst":100"#), "{welcome}");
    let (_, welcome) = session(ConnectionSettings::default(), &[]);
    assert!(!welcome.contains("rate"), "{welcome}");
}

#[test]
fn over_the_limit_messages_are_refused_by_id_and_a_flood_is_closed() {
    let (mut conn, _) = session(limited(10, 5), &[]);
    let mut refused = Vec::new();
    let mut routed = 0;
    let mut closed = None;
    for id in 1..=20u64 {
        let frame = format!(r#"{{"type":"chat","id":{id},"payload":{id}}}"#);
        for output in feed(&mut conn, at(0), &frame) {
            match output {
                Output::Route { .. } => routed += 1,
                Output::Append(frame) if frame.contains("rate_limited") => refused.push(frame),
                Output::Close(close) => closed = close,
                _ => {}
            }
        }
    }
    assert_eq!(routed, 5, "the burst goes through");
    assert_eq!(refused.len(), 5, "then each message is refused, by id");
    assert!(refused[0].contains(r#""re":6"#), "{}", refused[0]);
    assert_eq!(
        closed,
        Some(CloseFrame {
            code: 1008,
            reason: "rate limit exceeded"
        }),
        "more than a burst of refusals: flooding"
    );
    assert_eq!(conn.ending(), Some(&DisconnectReason::Flooding));
}

#[test]
fn refused_messages_are_not_consumed_and_can_be_sent_again() {
    let (mut conn, _) = session(limited(10, 1), &[]);
    assert!(feed(&mut conn, at(0), r#"{"type":"chat","id":1}"#)
        .iter()
        .any(|o| matches!(o, Output::Route { id: Some(1), .. })));
    let refused = feed(&mut conn, at(10), r#"{"type":"chat","id":2}"#);
    assert_eq!(errors(&refused).len(), 1);
    // The ack does not cover the refused id...
    conn.flush();
    let acks: Vec<_> = std::iter::from_fn(|| conn.poll_output()).collect();
    assert!(
        acks.iter()
            .all(|o| !matches!(o, Output::Transmit(t) if t.contains(r#""ack":2"#))),
        "{acks:?}"
    );
    // ...and the same id is consumed when it comes back in time.
    let again = feed(&mut conn, at(200), r#"{"type":"chat","id":2}"#);
    assert!(
        again
            .iter()
            .any(|o| matches!(o, Output::Route { id: Some(2), .. })),
        "{again:?}"
    );
}

#[test]
fn acknowledgements_are_never_limited_and_pings_over_the_limit_are_dropped() {
    let (mut conn, _) = session(limited(1, 1), &[]);
    assert!(feed(&mut conn, at(0), r#"{"type":"~ping"}"#)
        .iter()
        .any(|o| matches!(o, Output::Transmit(t) if t.contains("~pong"))));
    let over = feed(&mut conn, at(1), r#"{"type":"~ping"}"#);
    assert_eq!(
        over,
        [Output::Event(ServerEvent::RateLimited { re: None })],
        "no pong over the limit"
    );
    for _ in 0..100 {
        feed(&mut conn, at(2), r#"{"type":"~ack","ack":0}"#);
    }
    assert_eq!(conn.ending(), None, "acks cost nothing");
}

#[test]
fn expired_credentials_close_with_a_code_that_reconnects() {
    let (mut conn, _) = session(ConnectionSettings::default(), &[]);
    conn.set_expiry(at(5_000));
    assert!(conn.poll_timeout().is_some_and(|t| t <= at(5_000)));
    conn.handle_timeout(at(4_999));
    assert_eq!(conn.ending(), None);
    conn.handle_timeout(at(5_000));
    let mut close = None;
    while let Some(output) = conn.poll_output() {
        answer(&mut conn, at(5_000), &output);
        if let Output::Close(frame) = output {
            close = frame;
        }
    }
    assert_eq!(
        close.map(|c| c.code),
        Some(CLOSE_EXPIRED),
        "closed with the expiry code"
    );
    assert!(
        !Options::default().stop_codes.contains(&CLOSE_EXPIRED),
        "the client comes back with fresh credentials"
    );
}

#[test]
fn clients_may_not_speak_for_the_relay() {
    let (mut conn, _) = session(ConnectionSettings::default(), &["relay:clients"]);
    let forged = feed(
        &mut conn,
        at(0),
        r#"{"type":"relay:presence","id":1,"payload":{"joined":["mallory"]}}"#,
    );
    let errors = errors(&forged);
    assert!(
        errors[0].contains(ErrorCode::ReservedType.as_str()),
        "{forged:?}"
    );
    assert!(
        forged.iter().all(|o| !matches!(
            o,
            Output::Route {
                effect: wsrelay_core::server::engine::Effect::Broadcast { .. },
                ..
            }
        )),
        "not relayed"
    );
    let directed = feed(
        &mut conn,
        at(0),
        r#"{"type":"relay:clients","id":2,"to":"bob"}"#,
    );
    assert_eq!(
        self::errors(&directed).len(),
        1,
        "not to another client either"
    );
    let asked = feed(&mut conn, at(0), r#"{"type":"relay:clients","id":3}"#);
    assert!(
        asked
            .iter()
            .any(|o| matches!(o, Output::Call { kind, .. } if kind == "relay:clients")),
        "the relay's own request still reaches the relay: {asked:?}"
    );
}

#[test]
fn a_response_must_answer_a_message_relayed_to_the_responder() {
    let (mut conn, _) = session(ConnectionSettings::default(), &[]);
    let forged = feed(
        &mut conn,
        at(0),
        r#"{"type":"ask","id":1,"re":5,"to":"bob"}"#,
    );
    let errors = errors(&forged);
    assert!(
        errors.len() == 1 && errors[0].contains("unexpected_response"),
        "{forged:?}"
    );
    conn.handle_fetched(
        at(1),
        [r#"{"type":"ask","id":5,"source":"bob","payload":{"q":1}}"#.to_owned()],
    );
    let answer = feed(
        &mut conn,
        at(2),
        r#"{"type":"ask","id":2,"re":5,"to":"bob"}"#,
    );
    assert!(
        answer.iter().any(|o| matches!(
            o,
            Output::Route {
                effect: wsrelay_core::server::engine::Effect::To { target, .. },
                ..
            } if target == "bob"
        )),
        "{answer:?}"
    );
    let wrong = feed(
        &mut conn,
        at(3),
        r#"{"type":"ask","id":3,"re":5,"to":"carol"}"#,
    );
    assert_eq!(self::errors(&wrong).len(), 1, "same id, another sender");
}

#[test]
fn only_the_addressee_settles_a_request_end_to_end() {
    let mut sim = Sim::new();
    sim.add_client("alice", Options::default(), 1);
    sim.add_client("bob", Options::default(), 2);
    sim.add_client("mallory", Options::default(), 3);
    // Bob's application handles the request (his handler answers below).
    sim.clients[1].core.set_handled("get-secret", true);
    sim.run_for(Duration::from_millis(100));
    let ask = Outgoing {
        to: Some("bob"),
        ..Outgoing {
            kind: "get-secret",
            payload: Some("null"),
            ..Outgoing::default()
        }
    };
    let id = sim
        .with_client(0, |c, now| c.request(now, ask, None))
        .expect("sent");
    // Mallory guesses the id and answers in bob's stead.
    let forged = ReplyTarget {
        kind: "get-secret".into(),
        re: id,
        source: Some("alice".into()),
    };
    let answer = sim
        .with_client(2, |c, _| c.respond(&forged, Ok("\"forged\"")))
        .expect("queued");
    sim.run_for(Duration::from_millis(100));
    assert!(
        sim.clients[2].saw(
            |e| matches!(e, Event::Failed { id, error: Error::Remote(r) }
            if *id == answer && r.code == "unexpected_response")
        ),
        "mallory is told"
    );
    assert_eq!(
        sim.clients[0].core.pending_requests(),
        1,
        "still waiting for bob"
    );
    // Bob has the request; his handler answers it now.
    let target = ReplyTarget {
        kind: "get-secret".into(),
        re: id,
        source: Some("alice".into()),
    };
    sim.with_client(1, |c, _| c.respond(&target, Ok("\"bob's\"")))
        .expect("queued");
    sim.run_for(Duration::from_millis(100));
    let reply = sim.clients[0].events.iter().find_map(|(_, e)| match e {
        Event::Reply {
            request, result, ..
        } if *request == id => Some(result.clone()),
        _ => None,
    });
    assert_eq!(reply, Some(Ok(Some("\"bob's\"".into()))));
}
