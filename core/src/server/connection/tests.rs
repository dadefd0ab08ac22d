use super::*;
use std::time::Duration;

struct NoHandlers;

impl HandlerSet for NoHandlers {
    fn handles(&self, _kind: &str) -> bool {
        false
    }
}

fn outputs(machine: &mut ServerConnection<String, NoHandlers>) -> Vec<Output<String>> {
    std::iter::from_fn(|| machine.poll_output()).collect()
}

/// A connection with a fresh session, at position 1.
fn opened(settings: ConnectionSettings, now: Instant) -> ServerConnection<String, NoHandlers> {
    let mut machine = ServerConnection::new("a".into(), 1, true, settings, NoHandlers, now);
    machine.handle_text(
        now,
        r#"{"type":"~hello","v":1,"session":"session-1","ack":0}"#,
    );
    let opening = outputs(&mut machine);
    assert!(
        opening.iter().any(|o| matches!(o, Output::Open { .. })),
        "{opening:?}"
    );
    machine.handle_opened(Opened {
        resumed: false,
        consumed: 0,
        base: 0,
        next: 1,
        lost: None,
        sid: Some("i".into()),
    });
    machine
}

#[test]
fn acknowledgements_read_together_settle_once() {
    let now = Instant::from_millis(0);
    let settings = ConnectionSettings::default();
    let mut machine = opened(settings, now);
    for n in 0..3 {
        machine.handle_fetched(now, [format!(r#"{{"type":"n","payload":{n}}}"#)]);
    }
    outputs(&mut machine);
    machine.handle_text(now, r#"{"type":"~ack","ack":1}"#);
    machine.handle_text(now, r#"{"type":"~ack","ack":3}"#);
    assert_eq!(settles(&mut machine), [3]);
    assert_eq!(machine.backlog_bytes(), 0);
}

fn settles(machine: &mut ServerConnection<String, NoHandlers>) -> Vec<u64> {
    outputs(machine)
        .into_iter()
        .filter_map(|output| match output {
            Output::Settle { through } => Some(through),
            _ => None,
        })
        .collect()
}

#[test]
fn deferred_settles_come_after_the_delay_or_past_the_bytes() {
    let now = Instant::from_millis(0);
    let settings = ConnectionSettings {
        settle_delay: Duration::from_millis(250),
        settle_bytes: 100,
        ..ConnectionSettings::default()
    };
    let mut machine = opened(settings, now);
    for n in 0..4 {
        machine.handle_fetched(now, [format!("{{\"type\":\"n\",\"payload\":\"{n:>30}\"}}")]);
    }
    outputs(&mut machine);
    machine.handle_text(now, r#"{"type":"~ack","ack":1}"#);
    assert_eq!(settles(&mut machine), [0u64; 0], "owed, not settled yet");
    assert_eq!(machine.poll_timeout(), Some(Instant::from_millis(250)));
    let later = Instant::from_millis(250);
    machine.handle_timeout(later);
    assert_eq!(settles(&mut machine), [1]);
    // Past the bytes (each frame is about 50): at once.
    machine.handle_text(later, r#"{"type":"~ack","ack":2}"#);
    assert_eq!(settles(&mut machine), [0u64; 0]);
    machine.handle_text(later, r#"{"type":"~ack","ack":4}"#);
    assert_eq!(settles(&mut machine), [4]);
    assert!(machine.poll_timeout() > Some(Instant::from_millis(250)));
}

#[test]
fn a_quiet_connection_gives_back_the_room_of_its_burst_at_the_liveness_check() {
    let now = Instant::from_millis(0);
    let settings = ConnectionSettings::default();
    let ping_interval = settings.ping_interval;
    let mut machine = opened(settings, now);
    for n in 0..20_000 {
        machine.handle_fetched(now, [format!(r#"{{"type":"n","payload":{n}}}"#)]);
    }
    outputs(&mut machine);
    machine.handle_text(now, r#"{"type":"~ack","ack":20000}"#);
    assert_eq!(settles(&mut machine), [20_000]);
    // Not while the traffic may go on...
    assert!(machine.in_flight.capacity() >= 20_000);
    // ...but at the next check of the client's liveness.
    machine.handle_timeout(now + ping_interval);
    assert!(
        machine.in_flight.capacity() < 256,
        "{}",
        machine.in_flight.capacity()
    );
    assert_eq!(machine.backlog_bytes(), 0);
}

#[test]
fn room_logs_are_delivered_and_settled_per_room() {
    let now = Instant::from_millis(0);
    let mut machine = opened(ConnectionSettings::default(), now);
    outputs(&mut machine);
    machine.handle_fetched(now, Vec::<String>::new());
    let opening = outputs(&mut machine);
    assert!(
        opening
            .iter()
            .any(|o| matches!(o, Output::FetchLogs { .. })),
        "a session opened reads its rooms' logs: {opening:?}"
    );
    let frame = |pos: u64| format!(r#"{{"pos":{pos},"type":"n","room":"r","payload":0}}"#);
    machine.handle_logs_fetched(
        now,
        vec![
            LogBatch {
                room: "r".into(),
                lost: Some(crate::server::engine::Gap {
                    first: 10,
                    count: Some(4),
                }),
                frames: vec![(10, frame(10)), (11, frame(11))],
            },
            LogBatch {
                room: String::new(),
                lost: None,
                frames: vec![(3, frame(3))],
            },
        ],
    );
    let delivered = outputs(&mut machine);
    let lost = delivered.iter().find_map(|o| match o {
        Output::Transmit(text) if text.contains("~lost") => Some(text.clone()),
        _ => None,
    });
    assert_eq!(
        lost.as_deref(),
        Some(r#"{"type":"~lost","pos":10,"room":"r","lost":4}"#),
        "{delivered:?}"
    );
    let logged = delivered
        .iter()
        .filter(|o| matches!(o, Output::DeliverLogged(_)))
        .count();
    assert_eq!(logged, 3);
    let in_flight = machine.backlog_bytes();
    assert_eq!(in_flight, frame(10).len() * 2 + frame(3).len());
    // Per room: an acknowledgement of one room frees that room's frames only.
    machine.handle_text(now, r#"{"type":"~ack","pos":10,"room":"r"}"#);
    machine.handle_text(now, r#"{"type":"~ack","pos":99,"room":"elsewhere"}"#);
    assert_eq!(machine.backlog_bytes(), in_flight - frame(10).len());
    let settled: Vec<_> = outputs(&mut machine)
        .into_iter()
        .filter_map(|o| match o {
            Output::SettleLog { room, through } => Some((room, through)),
            Output::Settle { .. } => panic!("the session's own frames were not acknowledged"),
            _ => None,
        })
        .collect();
    assert_eq!(settled, [("r".to_owned(), 10)]);
    machine.handle_text(now, r#"{"type":"~ack","pos":3}"#);
    machine.handle_text(now, r#"{"type":"~ack","pos":11,"room":"r"}"#);
    assert_eq!(machine.backlog_bytes(), 0);
}

#[test]
fn a_client_message_with_a_position_is_refused() {
    let now = Instant::from_millis(0);
    let mut machine = opened(ConnectionSettings::default(), now);
    outputs(&mut machine);
    machine.handle_text(now, r#"{"pos":5,"type":"chat","id":1,"payload":1}"#);
    let out = outputs(&mut machine);
    assert!(
        out.iter().any(|o| matches!(o, Output::Route { effect: Effect::ToSelf { frame }, .. } if frame.contains("invalid_frame"))),
        "{out:?}"
    );
}

#[test]
fn a_member_may_answer_a_rooms_message() {
    let now = Instant::from_millis(0);
    let mut machine = opened(ConnectionSettings::default(), now);
    outputs(&mut machine);
    machine.handle_fetched(now, Vec::<String>::new());
    outputs(&mut machine);
    let frame = r#"{"pos":12,"type":"ask","id":4,"source":"bob","room":"r","payload":0}"#;
    machine.handle_logs_fetched(
        now,
        vec![LogBatch {
            room: "r".into(),
            lost: None,
            frames: vec![(12, frame.to_owned())],
        }],
    );
    outputs(&mut machine);
    machine.handle_text(
        now,
        r#"{"type":"ask","id":1,"re":4,"to":"bob","payload":"yes"}"#,
    );
    let out = outputs(&mut machine);
    assert!(
        out.iter().any(|o| matches!(o, Output::Route { effect: Effect::To { target, .. }, .. } if target == "bob")),
        "the answer goes to bob: {out:?}"
    );
}
