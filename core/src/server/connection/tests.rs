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
