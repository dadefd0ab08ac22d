use super::*;

fn at(millis: u64) -> Instant {
    Instant::from_millis(millis)
}

fn drain(core: &mut ClientCore) -> Vec<Output> {
    core::iter::from_fn(|| core.poll_output()).collect()
}

fn events(core: &mut ClientCore) -> Vec<Event> {
    drain(core)
        .into_iter()
        .filter_map(|output| match output {
            Output::Event(event) => Some(event),
            _ => None,
        })
        .collect()
}

/// The welcome of `core`'s session, with the server's count `ack`.
fn welcome(core: &ClientCore, ack: u64, resumed: bool) -> String {
    Frame::Welcome(Welcome {
        version: VERSION,
        session: core.session().to_owned().into(),
        ack,
        resumed,
        lost: None,
        window: None,
        sid: None,
        rate: None,
        burst: None,
    })
    .encode()
}

/// A core opened on transport 1 at `at(10)` whose welcome came at `at(25)`.
fn open_core() -> ClientCore {
    let mut core = ClientCore::new(Options::default(), 1, at(0));
    core.handle_opened(at(10), TransportId(1));
    let welcome = welcome(&core, 0, false);
    core.handle_frame(at(25), TransportId(1), &welcome);
    drain(&mut core);
    core
}

fn transmitted(outputs: &[Output]) -> Vec<&str> {
    outputs
        .iter()
        .filter_map(|output| match output {
            Output::Transmit(text) => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

#[test]
fn handler_answers_go_back_or_are_reported() {
    let mut core = open_core();
    let target = ReplyTarget {
        kind: "get-time".into(),
        re: 4,
        source: Some("bob".into()),
    };
    core.answer("get-time", Some(&target), Reply::Payload("42".into()));
    let outputs = drain(&mut core);
    assert_eq!(
        transmitted(&outputs),
        [r#"{"type":"get-time","id":1,"re":4,"to":"bob","payload":42}"#]
    );

    core.answer(
        "get-time",
        Some(&target),
        Reply::error("handler_error", "boom"),
    );
    let outputs = drain(&mut core);
    assert_eq!(transmitted(&outputs).len(), 1, "the failure is answered");
    assert!(outputs.iter().any(|output| matches!(output,
        Output::Event(Event::Error(Error::Handler { kind, error }))
            if kind == "get-time" && error.message == "boom")));

    core.answer("get-time", Some(&target), Reply::None);
    assert_eq!(drain(&mut core), [], "nothing to say, nothing sent");

    // A message without an id cannot be answered: the value is reported, never dropped.
    core.answer("announcement", None, Reply::Payload("1".into()));
    assert_eq!(
        events(&mut core),
        [Event::Error(Error::Unanswerable {
            kind: "announcement".into()
        })]
    );
    core.answer("announcement", None, Reply::None);
    assert_eq!(drain(&mut core), []);

    // An answer the client can no longer send says why.
    core.close(at(30), 1000, "");
    drain(&mut core);
    core.answer("get-time", Some(&target), Reply::Payload("1".into()));
    assert_eq!(events(&mut core), [Event::Error(Error::Closed)]);
}

#[test]
fn a_request_nobody_handles_is_answered_no_handler_at_once() {
    let mut core = open_core();
    core.set_handled("get-time", true);
    let request = |kind: &str, id: u64| {
        format!(r#"{{"type":"{kind}","id":{id},"request":true,"to":"me","source":"alice"}}"#)
    };
    // Handled: the handler's answer is the driver's to give.
    core.handle_frame(at(30), TransportId(1), &request("get-time", 1));
    assert_eq!(transmitted(&drain(&mut core)), Vec::<&str>::new());
    // Not handled: answered at once, and still reported as a message.
    core.handle_frame(at(31), TransportId(1), &request("get-date", 2));
    let outputs = drain(&mut core);
    assert_eq!(
        transmitted(&outputs),
        [
            r#"{"type":"get-date","id":1,"re":2,"to":"alice","error":{"code":"no_handler","message":"no handler for \"get-date\""}}"#
        ]
    );
    assert!(outputs.iter().any(|output| matches!(output,
        Output::Event(Event::Message(message)) if message.kind == "get-date")));
    // A plain message (no request flag) is never answered for the application, nor a request
    // to everyone (another client may handle it).
    let plain = r#"{"type":"get-date","id":3,"to":"me","source":"alice"}"#;
    core.handle_frame(at(32), TransportId(1), plain);
    let to_all = r#"{"type":"get-date","id":5,"request":true,"source":"alice"}"#;
    core.handle_frame(at(32), TransportId(1), to_all);
    assert_eq!(transmitted(&drain(&mut core)), Vec::<&str>::new());
    // The server asks one client at a time: its requests are refused too.
    let from_server = r#"{"type":"get-date","id":6,"request":true}"#;
    core.handle_frame(at(32), TransportId(1), from_server);
    assert!(transmitted(&drain(&mut core))[0].contains("no_handler"));
    // A handler removed: requests of its type are refused from then on.
    core.set_handled("get-time", false);
    core.handle_frame(at(33), TransportId(1), &request("get-time", 4));
    let answered = drain(&mut core);
    assert!(
        transmitted(&answered)[0].contains("no_handler"),
        "{answered:?}"
    );
}

#[test]
fn stats_count_round_trips_reconnects_and_outcomes() {
    let mut core = open_core();
    let stats = core.stats();
    assert_eq!(
        stats.rtt,
        Some(Duration::from_millis(15)),
        "hello to welcome"
    );
    assert_eq!(stats.reconnects, 0);

    let chat = Outgoing {
        kind: "chat",
        payload: Some("1"),
        ..Outgoing::default()
    };
    core.send(at(30), chat).expect("queued");
    core.send(at(30), chat).expect("queued");
    drain(&mut core);
    let stats = core.stats();
    assert_eq!((stats.queued_messages, stats.retransmitted), (2, 0));
    assert!(stats.queued_bytes > 20);

    // The heartbeat's ping and pong are the next sample.
    let ping_at = core.poll_timeout().expect("the next ping");
    core.handle_timeout(ping_at);
    assert_eq!(transmitted(&drain(&mut core)), [r#"{"type":"~ping"}"#]);
    core.handle_frame(
        ping_at + Duration::from_millis(7),
        TransportId(1),
        r#"{"type":"~pong"}"#,
    );
    core.handle_frame(
        ping_at + Duration::from_millis(8),
        TransportId(1),
        r#"{"type":"~ack","ack":1}"#,
    );
    drain(&mut core);
    let stats = core.stats();
    assert_eq!(stats.rtt, Some(Duration::from_millis(7)));
    assert_eq!(
        stats.smoothed_rtt,
        Some(Duration::from_millis(14)),
        "(15*7+7)/8"
    );
    assert_eq!((stats.acknowledged, stats.queued_messages), (1, 1));

    // Lost and back: the unacknowledged message is sent again.
    let now = ping_at + Duration::from_millis(10);
    core.handle_closed(now, TransportId(1), 1001, "going away");
    let retry = core.poll_timeout().expect("a reconnect");
    core.handle_timeout(retry);
    core.handle_opened(retry, TransportId(2));
    let welcome = welcome(&core, 1, true);
    core.handle_frame(retry, TransportId(2), &welcome);
    drain(&mut core);
    let stats = core.stats();
    assert_eq!((stats.reconnects, stats.retransmitted), (1, 1));

    core.close(retry, 1000, "");
    core.handle_timeout(retry + Duration::from_secs(5));
    drain(&mut core);
    assert_eq!(
        core.stats().failed,
        1,
        "the unacknowledged one failed as closed"
    );
}

#[test]
fn only_the_addressee_of_a_request_settles_it() {
    let mut core = open_core();
    let ask = Outgoing {
        kind: "get-time",
        to: Some("bob"),
        ..Outgoing::default()
    };
    let id = core.request(at(30), ask, None).expect("sent");
    drain(&mut core);
    let answer = |source: &str| {
        let mut text = String::from(r#"{"type":"get-time","id":9,"re":"#);
        text.push_str(&id.to_string());
        text.push_str(r#","source":""#);
        text.push_str(source);
        text.push_str(r#"","payload":1}"#);
        text
    };
    core.handle_frame(at(40), TransportId(1), &answer("mallory"));
    let refused = events(&mut core);
    assert!(
        matches!(&refused[..], [Event::Error(Error::Protocol(m))] if m.contains("another client")),
        "{refused:?}"
    );
    assert_eq!(core.pending_requests(), 1);
    core.handle_frame(at(41), TransportId(1), &answer("bob"));
    assert!(events(&mut core)
        .iter()
        .any(|e| matches!(e, Event::Reply { request, .. } if request == &id)));
    assert_eq!(core.pending_requests(), 0);
}

/// A relayed chat message whose frame is `size` bytes long.
fn chat_frame(size: usize) -> String {
    let head = r#"{"type":"chat","id":1,"source":"bob","payload":""#;
    let tail = r#""}"#;
    let mut text = String::from(head);
    text.extend(core::iter::repeat_n('x', size - head.len() - tail.len()));
    text.push_str(tail);
    assert_eq!(text.len(), size);
    text
}

fn ack_frame(count: u64) -> String {
    Frame::Ack { ack: count }.encode()
}

#[test]
fn received_frames_are_acknowledged_after_the_delay() {
    let mut core = open_core();
    let delay = Options::default().ack_delay;
    assert_eq!(delay, Duration::from_millis(1000));
    core.handle_frame(at(100), TransportId(1), &chat_frame(60));
    assert_eq!(transmitted(&drain(&mut core)), [] as [&str; 0]);
    assert_eq!(core.poll_timeout(), Some(at(100) + delay));
    // A second frame within the delay rides on the first one's acknowledgement.
    core.handle_frame(at(150), TransportId(1), &chat_frame(60));
    assert_eq!(core.poll_timeout(), Some(at(100) + delay));
    core.handle_timeout(at(1099));
    assert_eq!(transmitted(&drain(&mut core)), [] as [&str; 0]);
    core.handle_timeout(at(100) + delay);
    assert_eq!(transmitted(&drain(&mut core)), [ack_frame(2)]);
    assert!(
        core.poll_timeout() > Some(at(100) + delay),
        "nothing more due"
    );
    // Control frames are not counted: nothing to acknowledge.
    core.handle_frame(at(1200), TransportId(1), r#"{"type":"~pong"}"#);
    assert_eq!(
        core.poll_timeout(),
        Some(at(25) + core.options.heartbeat_interval)
    );
    core.handle_frame(at(1300), TransportId(1), &chat_frame(60));
    core.handle_timeout(at(1300) + delay);
    assert_eq!(transmitted(&drain(&mut core)), [ack_frame(3)]);
}

#[test]
fn ack_every_frames_are_acknowledged_at_once() {
    let mut core = open_core();
    let every = core.options.ack_every;
    for n in 1..every {
        core.handle_frame(at(30), TransportId(1), &chat_frame(60));
        assert_eq!(transmitted(&drain(&mut core)), [] as [&str; 0], "frame {n}");
    }
    core.handle_frame(at(31), TransportId(1), &chat_frame(60));
    assert_eq!(transmitted(&drain(&mut core)), [ack_frame(every)]);
    assert!(
        core.poll_timeout() > Some(at(31) + core.options.ack_delay),
        "no acknowledgement left due"
    );
    // The count starts again from the acknowledgement.
    for _ in 1..every {
        core.handle_frame(at(32), TransportId(1), &chat_frame(60));
    }
    assert_eq!(transmitted(&drain(&mut core)), [] as [&str; 0]);
    core.handle_frame(at(33), TransportId(1), &chat_frame(60));
    assert_eq!(transmitted(&drain(&mut core)), [ack_frame(2 * every)]);
}

#[test]
fn ack_bytes_of_frames_are_acknowledged_at_once() {
    let mut core = open_core();
    assert_eq!(core.options.ack_bytes, 64 << 10);
    // 10 000-byte frames: the seventh makes 70 000 bytes, past 65 536.
    for n in 1..7 {
        core.handle_frame(at(30), TransportId(1), &chat_frame(10_000));
        assert_eq!(transmitted(&drain(&mut core)), [] as [&str; 0], "frame {n}");
    }
    core.handle_frame(at(31), TransportId(1), &chat_frame(10_000));
    assert_eq!(transmitted(&drain(&mut core)), [ack_frame(7)]);
    // The bytes count again from the acknowledgement: one exactly at the threshold.
    core.handle_frame(at(32), TransportId(1), &chat_frame(40_000));
    assert_eq!(transmitted(&drain(&mut core)), [] as [&str; 0]);
    core.handle_frame(at(33), TransportId(1), &chat_frame(25_536));
    assert_eq!(transmitted(&drain(&mut core)), [ack_frame(9)]);
    // An error report is a reliable frame too, counted in frames and bytes.
    core.options.ack_bytes = 50;
    core.handle_frame(
        at(34),
        TransportId(1),
        r#"{"type":"~error","code":"unknown_target","message":"no client with source \"bob\" here","re":77}"#,
    );
    assert_eq!(transmitted(&drain(&mut core)), [ack_frame(10)]);
    // 0: every reliable frame at once.
    core.options.ack_bytes = 0;
    core.handle_frame(at(35), TransportId(1), &chat_frame(60));
    assert_eq!(transmitted(&drain(&mut core)), [ack_frame(11)]);
}

#[test]
fn a_graceful_close_acknowledges_what_was_received_first() {
    let mut core = open_core();
    core.handle_frame(at(30), TransportId(1), &chat_frame(60));
    drain(&mut core);
    core.close(at(40), 1000, "bye");
    let outputs = drain(&mut core);
    assert_eq!(transmitted(&outputs), [ack_frame(1)]);
    let ack_at = outputs
        .iter()
        .position(|o| matches!(o, Output::Transmit(_)));
    let close_at = outputs
        .iter()
        .position(|o| matches!(o, Output::CloseTransport { code: 1000, .. }));
    assert!(
        ack_at < close_at,
        "the ack goes before the close: {outputs:?}"
    );
    assert_eq!(core.poll_timeout(), None, "nothing left due");

    // Closing with messages in flight: frames received meanwhile are acknowledged
    // before the close too, even when the server's ack comes before the delay is up.
    let mut core = open_core();
    let chat = Outgoing {
        kind: "chat",
        payload: Some("1"),
        ..Outgoing::default()
    };
    core.send(at(30), chat).expect("sent");
    drain(&mut core);
    core.close(at(31), 1000, "");
    core.handle_frame(at(32), TransportId(1), &chat_frame(60));
    assert_eq!(transmitted(&drain(&mut core)), [] as [&str; 0]);
    core.handle_frame(at(40), TransportId(1), &ack_frame(1));
    let outputs = drain(&mut core);
    assert_eq!(transmitted(&outputs), [ack_frame(1)]);
    assert!(outputs
        .iter()
        .any(|o| matches!(o, Output::CloseTransport { code: 1000, .. })));
}

#[test]
fn the_hello_acknowledges_what_was_received() {
    let mut core = open_core();
    for _ in 0..5 {
        core.handle_frame(at(30), TransportId(1), &chat_frame(10_000));
    }
    drain(&mut core);
    core.handle_closed(at(40), TransportId(1), 1001, "going away");
    // The acknowledgement's timer may still fire first, to no effect.
    let retry = loop {
        let due = core.poll_timeout().expect("a reconnect");
        core.handle_timeout(due);
        if drain(&mut core).contains(&Output::Connect(TransportId(2))) {
            break due;
        }
    };
    core.handle_opened(retry, TransportId(2));
    let outputs = drain(&mut core);
    assert!(
        transmitted(&outputs)[0].contains(r#""ack":5"#),
        "{outputs:?}"
    );
    let welcome = welcome(&core, 0, true);
    core.handle_frame(retry, TransportId(2), &welcome);
    drain(&mut core);
    // The five frames were acknowledged by the hello: the count and the bytes start
    // again (two more 10 000-byte frames would otherwise pass 64 KiB).
    for _ in 0..2 {
        core.handle_frame(retry, TransportId(2), &chat_frame(10_000));
    }
    assert_eq!(transmitted(&drain(&mut core)), [] as [&str; 0]);
    let due = core.poll_timeout().expect("the acknowledgement");
    core.handle_timeout(due);
    assert_eq!(transmitted(&drain(&mut core)), [ack_frame(7)]);
}

#[test]
fn binary_frames_are_reported() {
    let mut core = open_core();
    core.handle_binary(at(30), TransportId(1));
    assert_eq!(
        events(&mut core),
        [Event::Error(Error::Protocol(
            "binary frame from the server".into()
        ))]
    );
    core.handle_binary(at(30), TransportId(9));
    assert_eq!(
        drain(&mut core),
        [],
        "a replaced transport's frames are ignored"
    );
}

#[test]
fn an_upgrade_refused_with_a_status_is_the_close_code_a_browser_would_get() {
    for (status, code, stops) in [(401, 4401, true), (403, 4403, true), (409, 4409, true)] {
        let mut core = ClientCore::new(Options::default(), 1, at(0));
        drain(&mut core);
        core.handle_refused(at(10), TransportId(1), status, "refused");
        let closes: Vec<Event> = events(&mut core)
            .into_iter()
            .filter(|e| matches!(e, Event::Close { .. }))
            .collect();
        assert_eq!(
            closes,
            [Event::Close {
                code,
                reason: "refused".into(),
                reconnecting: !stops,
            }],
            "{status}"
        );
    }
    // Any other status is a failed attempt: reported, and tried again.
    let mut core = ClientCore::new(Options::default(), 1, at(0));
    drain(&mut core);
    core.handle_refused(at(10), TransportId(1), 503, "busy");
    let seen = events(&mut core);
    assert!(seen.contains(&Event::Error(Error::Transport(
        "upgrade refused: HTTP 503: busy".into()
    ))));
    assert!(seen.iter().any(|e| matches!(
        e,
        Event::Close {
            reconnecting: true,
            ..
        }
    )));
}

/// A frame of `room`'s log (`None`: the log of everyone) at `pos`, from bob, carrying `n`.
fn logged(room: Option<&str>, pos: u64, n: u64) -> String {
    let room = room.map_or(String::new(), |room| format!(r#","room":"{room}""#));
    format!(r#"{{"pos":{pos},"type":"n","id":{n},"source":"bob"{room},"payload":{n}}}"#)
}

/// The payloads of the messages among `events`.
fn payloads(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|event| match event {
            Event::Message(message) => message.payload.clone(),
            _ => None,
        })
        .collect()
}

#[test]
fn log_frames_are_taken_once_per_room_and_acknowledged_per_room() {
    let mut core = open_core();
    for (at_ms, frame) in [
        (100, logged(Some("a"), 7, 1)),
        (101, logged(Some("b"), 3, 2)),
        (102, logged(None, 50, 3)),
        // Replayed by a relay that took the session over from an older cursor: dropped.
        (103, logged(Some("a"), 7, 1)),
        (104, logged(Some("a"), 6, 0)),
        (105, logged(Some("a"), 8, 4)),
    ] {
        core.handle_frame(at(at_ms), TransportId(1), &frame);
    }
    let outputs = drain(&mut core);
    let events: Vec<Event> = outputs
        .iter()
        .filter_map(|output| match output {
            Output::Event(event) => Some(event.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(payloads(&events), ["1", "2", "3", "4"]);
    assert!(
        transmitted(&outputs).is_empty(),
        "acknowledged after the delay"
    );
    // Not counted in the session's numbering: the session's count stays 0.
    core.handle_timeout(at(100) + core.options.ack_delay);
    let acks = transmitted(&drain(&mut core))
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>();
    assert_eq!(
        acks,
        [
            r#"{"type":"~ack","pos":8,"room":"a"}"#,
            r#"{"type":"~ack","pos":3,"room":"b"}"#,
            r#"{"type":"~ack","pos":50}"#,
        ]
    );
    // A session frame after them is the session's first.
    core.handle_frame(at(2000), TransportId(1), &chat_frame(60));
    core.handle_timeout(at(2000) + core.options.ack_delay);
    assert_eq!(transmitted(&drain(&mut core)), [ack_frame(1)]);
}

/// `transport` drops at `at(closed)`; the core reconnects a minute later and is welcomed
/// (`resumed`, or a fresh session) 20 ms after that. Returns the new transport.
fn reconnected(
    core: &mut ClientCore,
    transport: TransportId,
    closed: u64,
    resumed: bool,
) -> TransportId {
    core.handle_closed(at(closed), transport, 1006, "gone");
    let later = closed + 60_000;
    core.handle_timeout(at(later));
    let transport = drain(core)
        .into_iter()
        .find_map(|output| match output {
            Output::Connect(transport) => Some(transport),
            _ => None,
        })
        .expect("reconnects");
    core.handle_opened(at(later + 10), transport);
    let welcome = welcome(core, 0, resumed);
    core.handle_frame(at(later + 20), transport, &welcome);
    transport
}

#[test]
fn a_resumed_session_tells_its_places_again_and_a_fresh_one_forgets_them() {
    let mut core = open_core();
    core.handle_frame(at(100), TransportId(1), &logged(Some("a"), 7, 1));
    core.handle_timeout(at(100) + core.options.ack_delay);
    drain(&mut core);
    // The connection drops; the session resumes on another relay, which has the place older.
    let transport = reconnected(&mut core, TransportId(1), 1200, true);
    core.handle_timeout(at(61_220));
    assert!(transmitted(&drain(&mut core)).contains(&r#"{"type":"~ack","pos":7,"room":"a"}"#));
    core.handle_frame(at(61_230), transport, &logged(Some("a"), 7, 1));
    assert!(payloads(&events(&mut core)).is_empty(), "a frame it has");
    // A fresh session: the rooms went with the old one, positions are new.
    let transport = reconnected(&mut core, transport, 61_000, false);
    drain(&mut core);
    core.handle_frame(at(121_030), transport, &logged(Some("a"), 5, 9));
    assert_eq!(payloads(&events(&mut core)), ["9"]);
}

#[test]
fn a_gap_in_a_rooms_log_is_told_as_the_client_counts_it() {
    let mut core = open_core();
    core.handle_frame(at(100), TransportId(1), &logged(Some("a"), 10, 1));
    drain(&mut core);
    let lost = |core: &mut ClientCore, frame: &str| {
        core.handle_frame(at(200), TransportId(1), frame);
        events(core).into_iter().find_map(|event| match event {
            Event::Error(Error::Remote(error)) if error.code == "lost" => Some(error.message),
            _ => None,
        })
    };
    // The server counted from a stored place older than what the client has: the client's
    // count is the true one.
    assert_eq!(
        lost(
            &mut core,
            r#"{"type":"~lost","pos":15,"room":"a","lost":9}"#
        )
        .as_deref(),
        Some("messages of room \"a\" were lost to you: 4 (past the log's retention)")
    );
    // Nothing it did not have: nothing to tell.
    assert_eq!(
        lost(
            &mut core,
            r#"{"type":"~lost","pos":11,"room":"a","lost":3}"#
        ),
        None
    );
    // A room it has no place in: the server's count; a log begun again: unknown.
    assert_eq!(
        lost(&mut core, r#"{"type":"~lost","pos":7,"lost":3}"#).as_deref(),
        Some("messages of broadcasts were lost to you: 3 (past the log's retention)")
    );
    assert_eq!(
        lost(
            &mut core,
            r#"{"type":"~lost","pos":99,"room":"a","resumed":false}"#
        )
        .as_deref(),
        Some("messages of room \"a\" were lost to you (past the log's retention)")
    );
}
