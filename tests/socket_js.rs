//! The web driver's two ways into the core make the same decisions: a frame read by
//! `src/web/socket.js` (the runtime's `JSON.parse`, the fields crossing into wasm) against the
//! same frame's text read by the core's own decoder.
//!
//! The real `socket.js` runs in Node (the Node of `cargo xtask test`) over a corpus of frames:
//! hand-picked ones, and thousands drawn at random from valid and invalid values of every
//! field. For each frame it says which way it went. Then, for every frame it read itself:
//! - the core's decoder reads the same frame from the text (nothing JavaScript accepts is
//!   refused by the core), with the same payload value;
//! - two cores, one given the texts and one given what `socket.js` read, make the same outputs,
//!   frame after frame (transmissions, events, outcomes), payloads aside: those stay in
//!   JavaScript on the fields path.
//!
//! What `JSON.parse` cannot see (a duplicate key, an integer written `1.0`) is not drawn: there
//! the fields path reads what `JSON.parse` read (PROTOCOL.md, section 2).

#![cfg(not(target_arch = "wasm32"))]

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use wsrelay_core::client::{ClientCore, Event, Options, Output, TransportId};
use wsrelay_core::protocol::{Frame, Message, Welcome, VERSION};
use wsrelay_core::{Instant, Reply};

/// How a frame went through `socket.js`.
#[derive(Debug)]
enum Read {
    /// As fields: a message.
    Message {
        fields: Vec<Value>,
        payload: Option<Value>,
        /// The frame's room, which stays in JavaScript with the payload.
        room: Option<String>,
    },
    /// As fields: an acknowledgement.
    Ack(u64),
    /// As its text, to the core's decoder.
    Text,
}

/// Runs `socket.js` over `frames` in Node.
fn read_in_javascript(frames: &[String]) -> Vec<Read> {
    let module = concat!(env!("CARGO_MANIFEST_DIR"), "/src/web/socket.js");
    let script = format!(
        r#"
import {{ watch }} from {module:?};
import {{ createInterface }} from 'node:readline';
const socket = {{}};
let read;
watch(
  socket,
  (...fields) => {{
    // The types the frame closure declares (drain.rs, `OnFrame`), as wasm-bindgen's debug
    // glue checks them: a missing or mistyped argument throws there.
    const types = ['string', 'number', 'number', 'string?', 'string?', 'boolean', 'number'];
    const typed = fields.length === 8 && types.every((type, i) =>
      type.endsWith('?')
        ? fields[i] === undefined || typeof fields[i] === type.slice(0, -1)
        : typeof fields[i] === type);
    if (!typed) {{
      read = {{ mistyped: fields.map((f) => typeof f) }};
      return;
    }}
    if (fields[0] === '~ack') {{
      read = {{ ack: fields[1] }};
      return;
    }}
    const frame = fields.pop();
    read = {{ message: fields, payload: frame.payload, has: 'payload' in frame, room: frame.room }};
  }},
  () => {{ read = {{ text: true }}; }},
);
for await (const line of createInterface({{ input: process.stdin }})) {{
  read = undefined;
  socket.onmessage({{ data: JSON.parse(line) }});
  process.stdout.write(JSON.stringify(read ?? {{ none: true }}) + '\n');
}}
"#
    );
    let mut node = Command::new("node")
        .args(["--input-type=module", "-e", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("node on PATH (cargo xtask test installs it)");
    let mut input = String::new();
    for frame in frames {
        // Each frame as a JSON string on its own line: any text crosses intact.
        input.push_str(&serde_json::to_string(frame).expect("a string"));
        input.push('\n');
    }
    let mut stdin = node.stdin.take().expect("piped");
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let output = node.wait_with_output().expect("node runs");
    writer.join().expect("writer").expect("stdin written");
    assert!(output.status.success(), "node failed: {output:?}");
    let text = String::from_utf8(output.stdout).expect("utf-8");
    let reads: Vec<Read> = text
        .lines()
        .map(|line| {
            let value: Value = serde_json::from_str(line).expect("one JSON line per frame");
            if let Some(fields) = value.get("message") {
                let fields = fields.as_array().expect("fields").clone();
                let payload = value["has"]
                    .as_bool()
                    .unwrap_or(false)
                    .then(|| value["payload"].clone());
                let room = value["room"].as_str().map(str::to_owned);
                Read::Message {
                    fields,
                    payload,
                    room,
                }
            } else if let Some(ack) = value.get("ack") {
                Read::Ack(ack.as_u64().expect("a counter"))
            } else {
                assert_eq!(value, json!({ "text": true }), "every frame goes one way");
                Read::Text
            }
        })
        .collect();
    assert_eq!(reads.len(), frames.len());
    reads
}

/// The frame the web driver builds from what `socket.js` read (`drain.rs`, `open`).
fn fields_frame(read: &Read) -> Option<Frame<'static>> {
    match read {
        Read::Ack(ack) => Some(Frame::Ack { ack: *ack }),
        Read::Message { fields, .. } => {
            let number = |value: &Value| value.as_f64().filter(|n| *n >= 1.0).map(|n| n as u64);
            let string = |value: &Value| value.as_str().map(|s| s.to_owned().into());
            Some(Frame::Message(Message {
                kind: fields[0].as_str().expect("a type").to_owned().into(),
                id: number(&fields[1]),
                re: number(&fields[2]),
                to: string(&fields[3]),
                source: string(&fields[4]),
                room: None,
                payload: None,
                error: None,
                request: fields[5].as_bool().expect("a flag"),
            }))
        }
        Read::Text => None,
    }
}

fn at(millis: u64) -> Instant {
    Instant::from_millis(millis)
}

/// An open core (same seed, same clock: two of them are the same core), with two requests in
/// flight (ids 1, 2) and a send (id 3), so that responses and acknowledgements have something
/// to settle.
fn open_core() -> ClientCore {
    let mut core = ClientCore::new(Options::default(), 7, at(0));
    while core.poll_output().is_some() {}
    core.handle_opened(at(1), TransportId(1));
    let welcome = Frame::Welcome(Welcome {
        version: VERSION,
        session: core.session().to_owned().into(),
        ack: 0,
        resumed: false,
        lost: None,
        window: None,
        sid: None,
        rate: None,
        burst: None,
    });
    core.handle_frame(at(2), TransportId(1), &welcome.encode());
    let message = |kind| wsrelay_core::client::Outgoing {
        kind,
        payload: Some("1"),
        to: None,
        room: None,
        ttl: None,
    };
    core.request(at(3), message("ask"), Some(Duration::from_secs(60)))
        .expect("queued");
    core.request(at(3), message("ask"), Some(Duration::from_secs(60)))
        .expect("queued");
    core.send(at(3), message("tell")).expect("queued");
    core.set_handled("handled", true);
    while core.poll_output().is_some() {}
    core
}

/// `outputs` with the payloads the fields path leaves in JavaScript taken out.
fn without_payloads(outputs: Vec<Output>) -> Vec<Output> {
    outputs
        .into_iter()
        .map(|output| match output {
            Output::Event(Event::Message(mut message)) => {
                // The room stays in JavaScript with the payload (the handler reads it there).
                message.payload = None;
                message.room = None;
                Output::Event(Event::Message(message))
            }
            Output::Event(Event::Reply {
                request,
                source,
                result,
            }) => Output::Event(Event::Reply {
                request,
                source,
                result: result.map(|_| None),
            }),
            Output::Event(Event::Response(mut response)) => {
                response.result = response.result.map(|_| None);
                Output::Event(Event::Response(response))
            }
            other => other,
        })
        .collect()
}

/// `value` with every number as a float: `1.5e3` read by serde is 1500.0, by JavaScript 1500.
fn numbers_as_f64(value: Value) -> Value {
    match value {
        Value::Number(n) => json!(n.as_f64()),
        Value::Array(items) => Value::Array(items.into_iter().map(numbers_as_f64).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(key, value)| (key, numbers_as_f64(value)))
                .collect(),
        ),
        other => other,
    }
}

fn drain(core: &mut ClientCore) -> Vec<Output> {
    std::iter::from_fn(|| core.poll_output()).collect()
}

/// Hand-picked frames: what the relay sends, and what it never should.
fn chosen() -> Vec<String> {
    [
        r#"{"type":"chat","id":5,"source":"alice","payload":{"text":"hi"}}"#,
        r#"{"type":"chat","id":6,"source":"alice"}"#,
        r#"{"type":"chat","source":"bob","payload":[1,2,{"a":null}]}"#,
        r#"{"type":"handled","id":7,"source":"carol","to":"me","request":true,"payload":1}"#,
        r#"{"type":"unhandled","id":8,"source":"carol","to":"me","request":true}"#,
        r#"{"type":"unhandled","id":9,"request":true,"payload":"from the server"}"#,
        r#"{"type":"ask","re":1,"source":"dave","payload":{"answer":42}}"#,
        r#"{"type":"ask","re":2,"payload":null}"#,
        r#"{"type":"ask","re":99,"payload":"nobody asked"}"#,
        r#"{"type":"ask","re":1,"error":{"code":"handler_error","message":"no"}}"#,
        r#"{"type":"~ack","ack":3}"#,
        r#"{"type":"~ack","ack":3,"id":"x"}"#,
        r#"{"type":"~ack"}"#,
        r#"{"type":"~ping"}"#,
        r#"{"type":"~pong"}"#,
        r#"{"type":"~error","code":"too_large","message":"big","re":3}"#,
        r#"{"type":"~nope"}"#,
        r#"{"type":"","id":10}"#,
        r#"{"type":"émoji ✓","id":11,"source":"ünï","payload":"ü"}"#,
        r#"{"type":"chat","id":0}"#,
        r#"{"type":"chat","id":-3}"#,
        r#"{"type":"chat","id":9007199254740992}"#,
        r#"{"type":"chat","to":5}"#,
        r#"{"type":"chat","source":null}"#,
        r#"{"type":"chat","id":17,"source":"erin","room":"lobby","payload":"hi all"}"#,
        r#"{"type":"chat","id":18,"source":"erin","room":7}"#,
        r#"{"type":"chat","request":"yes","id":12}"#,
        r#"{"type":"chat","v":1}"#,
        r#"{"type":"chat","ack":-1}"#,
        r#"{"type":"chat","ack":4,"id":13}"#,
        r#"{"type":7}"#,
        r#"{"id":14}"#,
        r#"[1,2]"#,
        r#"not json"#,
        r#"{"type":"chat""#,
        r#" {"type":"chat","id":15}"#,
        r#"{"type":"chat","id":16,"payload":{"nested":{"deep":[true,false,null,1.5e3]}}}"#,
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

/// `count` frames drawn from valid and invalid values of each field (a fixed seed: the same
/// corpus every run).
fn drawn(count: usize) -> Vec<String> {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    let kinds = [
        json!("chat"),
        json!("handled"),
        json!("unhandled"),
        json!("ask"),
        json!("~ack"),
        json!("~ping"),
        json!(""),
        json!(3),
    ];
    let ids = [
        json!(1),
        json!(2),
        json!(3),
        json!(17),
        json!(0),
        json!(-1),
        json!("4"),
        json!(null),
        json!(9007199254740991_u64),
    ];
    let strings = [
        json!("alice"),
        json!("me"),
        json!(""),
        json!(1),
        json!(null),
    ];
    let payloads = [
        json!(null),
        json!(0),
        json!("x"),
        json!([1, "two"]),
        json!({"k": {"v": [null]}}),
    ];
    let flags = [json!(true), json!(false), json!(1), json!("true")];
    let errors = [
        json!({"code": "handler_error", "message": "m"}),
        json!({"code": 1}),
        json!("e"),
    ];
    (0..count)
        .map(|_| {
            let mut frame = serde_json::Map::new();
            if next(10) > 0 {
                frame.insert("type".into(), kinds[next(kinds.len())].clone());
            }
            for (key, values, odds) in [
                ("id", &ids[..], 2),
                ("re", &ids[..], 4),
                ("ack", &ids[..], 4),
                ("to", &strings[..], 4),
                ("source", &strings[..], 2),
                ("room", &strings[..], 4),
                ("payload", &payloads[..], 2),
                ("request", &flags[..], 4),
                ("error", &errors[..], 10),
                ("v", &ids[..], 20),
                ("session", &strings[..], 20),
            ] {
                if next(odds) == 0 {
                    frame.insert(key.into(), values[next(values.len())].clone());
                }
            }
            Value::Object(frame).to_string()
        })
        .collect()
}

#[test]
fn the_fields_path_decides_as_the_text_path_does() {
    let mut frames = chosen();
    frames.extend(drawn(3000));
    let reads = read_in_javascript(&frames);
    let mut by_text = open_core();
    let mut by_fields = open_core();
    let (mut fields_path, mut text_path) = (0, 0);
    for (index, (text, read)) in frames.iter().zip(&reads).enumerate() {
        let now = at(10 + index as u64);
        by_text.handle_frame(now, TransportId(1), text);
        match fields_frame(read) {
            Some(frame) => {
                fields_path += 1;
                // Nothing JavaScript reads is refused or read otherwise by the core's decoder.
                let mut decoded = Frame::decode(text)
                    .unwrap_or_else(|error| panic!("{text}: the core refuses it: {error}"));
                if let Frame::Message(message) = &mut decoded {
                    let payload = message.payload.take().map(|raw| {
                        serde_json::from_str::<Value>(raw).expect("a validated payload")
                    });
                    let room = message.room.take().map(|room| room.into_owned());
                    if let Read::Message {
                        payload: js,
                        room: js_room,
                        ..
                    } = read
                    {
                        let js = js.clone().map(numbers_as_f64);
                        assert_eq!(payload.map(numbers_as_f64), js, "{text}: the payload");
                        assert_eq!(&room, js_room, "{text}: the room");
                    }
                }
                assert_eq!(decoded, frame, "{text}: the fields");
                // JavaScript counts UTF-16 units; the decisions compared here take bytes.
                by_fields.handle_decoded(now, TransportId(1), frame, text.len());
            }
            None => {
                text_path += 1;
                by_fields.handle_frame(now, TransportId(1), text);
            }
        }
        assert_eq!(
            without_payloads(drain(&mut by_text)),
            without_payloads(drain(&mut by_fields)),
            "{text}: the decisions"
        );
    }
    // Both ways were taken, and the frequent frames took the fields path.
    assert!(
        fields_path > 500 && text_path > 500,
        "{fields_path} by fields, {text_path} by text"
    );
    for text in &frames[..3] {
        let read = &reads[frames.iter().position(|f| f == text).expect("there")];
        assert!(matches!(read, Read::Message { .. }), "{text} went {read:?}");
    }
    // Handlers' answers still go back the same way.
    for core in [&mut by_text, &mut by_fields] {
        let target = wsrelay_core::client::ReplyTarget {
            kind: "handled".into(),
            re: 7,
            source: Some("carol".into()),
        };
        core.answer("handled", Some(&target), Reply::Payload("true".into()));
    }
    assert_eq!(drain(&mut by_text), drain(&mut by_fields));
}
