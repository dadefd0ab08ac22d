//! Fuzz targets of wsrelay's input paths, each a function of raw bytes, so that the same
//! target serves the property tests of the suite (`tests/properties.rs`), the long run of
//! `cargo xtask fuzz` (`src/main.rs`) and, where a nightly toolchain exists, cargo-fuzz.
//!
//! - [`decode`]: the frame decoder (and the JSON reader under it), with the round trip
//!   decode → encode → decode as its property.
//! - [`connection`]: a server connection (`ServerConnection` over the in-memory engine, driven
//!   by the core's reference driver, `wsrelay_core::sim::Relay`), under a program the bytes
//!   spell: frames (valid ones from [`CORPUS`], mutated, or random), binary frames, time,
//!   deliveries, acknowledgements, replacement, errors, the end. Hello and resume paths
//!   included; a drain that does not settle is a livelock.
//! - [`websocket`]: the relay's WebSocket frame reader over bytes cut into pieces: it may
//!   refuse them, but never consumes more than it was given or hands over a message over its
//!   limit ([`FRAMES`] are valid client frames to mutate).
//! - [`upgrade`]: an HTTP upgrade request parsed as hyper does (`httparse`), then read by the
//!   relay's own code: the query (`source`, `v`, `token`), the `Authorization` header, the
//!   token's verification.
//!
//! Every target must return normally: a panic is a bug.

use std::time::Duration;

use wsrelay_core::protocol::{json, Frame};
use wsrelay_core::server::memory::EngineLimits;
use wsrelay_core::server::websocket::{Decoder, Inbound};
use wsrelay_core::server::{
    ConnectionSettings, HandlerSet, RateLimit, ServerConnection, TransportError,
};
use wsrelay_core::sim::{ConnId, Handlers, Relay};
use wsrelay_core::{Instant, Reply};

type Connection = ServerConnection<String, Handles>;

/// Valid frames (and near misses) the mutations start from.
pub const CORPUS: &[&str] = &[
    r#"{"type":"~hello","v":1,"session":"abcdefgh12345678","ack":0}"#,
    r#"{"type":"~hello","v":1,"session":"abcdefgh12345678","ack":3,"sid":"1.7"}"#,
    r#"{"type":"~hello","v":2,"session":"abcdefgh12345678","ack":0}"#,
    r#"{"type":"~ack","ack":2}"#,
    r#"{"type":"~ping"}"#,
    r#"{"type":"~pong"}"#,
    r#"{"type":"chat","id":1,"payload":{"message":"Hello","n":[1,2.5e3,null,true]}}"#,
    r#"{"type":"chat","id":2,"to":"peer","payload":"x"}"#,
    r#"{"type":"ask","id":3,"re":1,"to":"peer","payload":{"a":1}}"#,
    r#"{"type":"ask","id":4,"re":9,"error":{"code":"handler_error","message":"boom"}}"#,
    r#"{"type":"h","id":5,"payload":[1]}"#,
    r#"{"type":"relay:clients","id":6,"payload":{"after":"a","limit":2}}"#,
    r#"{"type":"relay:presence","id":7,"payload":{"joined":["x"]}}"#,
    r#"{"type":"~error","code":"x","message":"y","re":1}"#,
    r#"{"type":"~welcome","v":1,"session":"s","ack":0,"resumed":true,"window":10,"rate":1,"burst":2}"#,
    r#"{"type":"chat","payload":"bare \u00e9 \ud83d\ude00"}"#,
    r#"{"type":"x","id":9007199254740991,"source":"forged"}"#,
];

/// Valid client frames (masked), fragments and control frames included, to mutate.
pub const FRAMES: &[&[u8]] = &[
    // "hi", masked with 1 2 3 4.
    &[0x81, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2],
    // A text message in two fragments with a ping between them.
    &[
        0x01, 0x81, 0, 0, 0, 0, b'a', 0x89, 0x80, 0, 0, 0, 0, 0x80, 0x81, 0, 0, 0, 0, b'b',
    ],
    // A close frame with code 1000, and a pong.
    &[0x8a, 0x80, 9, 9, 9, 9, 0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8],
    &LONG_FRAME,
];

/// The 16-bit length form: a binary frame of 126 zeros, masked with a zero key.
const LONG_FRAME: [u8; 134] = {
    let mut frame = [0u8; 134];
    frame[0] = 0x82;
    frame[1] = 0xfe;
    frame[3] = 126;
    frame
};

/// The relay's WebSocket frame reader over `data` after its first byte, which picks the size
/// of the pieces the bytes arrive in and the reader's limit. A refusal ends the case; a panic,
/// consuming more than was given or a message over the limit is a bug.
pub fn websocket(data: &[u8]) {
    let Some((&first, data)) = data.split_first() else {
        return;
    };
    let piece = usize::from(first & 0x1f) + 1;
    let limit = [16usize, 125, 126, 1000, 65_536][usize::from(first >> 5) % 5];
    let mut decoder = Decoder::new(limit);
    let mut input = Vec::new();
    for chunk in data.chunks(piece) {
        input.extend_from_slice(chunk);
        loop {
            let available = input.len();
            let (used, size) = match decoder.decode(&mut input) {
                Ok((used, message)) => (
                    used,
                    message.map(|message| match message {
                        Inbound::Text(text) => text.len(),
                        Inbound::Binary(bytes) | Inbound::Ping(bytes) | Inbound::Pong(bytes) => {
                            bytes.len()
                        }
                        Inbound::Close(_) => 0,
                    }),
                ),
                Err(_) => return,
            };
            assert!(used <= available, "consumed {used} of {available} bytes");
            input.drain(..used);
            match size {
                Some(size) => assert!(size <= limit, "a message of {size} bytes, limit {limit}"),
                None => break,
            }
        }
    }
}

/// Decodes `data` as a frame; a frame that decodes must survive encode → decode unchanged.
pub fn decode(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = json::validate(&text);
    if let Ok(frame) = Frame::decode(&text) {
        let encoded = frame.encode();
        match Frame::decode(&encoded) {
            Ok(again) => assert_eq!(again, frame, "round trip of {text:?} via {encoded:?}"),
            Err(error) => panic!("{encoded:?}, encoded from {text:?}, does not decode: {error}"),
        }
    }
}

/// Reads the bytes of a fuzz input, yielding zeros once they run out.
struct Bytes<'a> {
    data: &'a [u8],
}

impl Bytes<'_> {
    fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&first, rest)) => {
                self.data = rest;
                first
            }
            None => 0,
        }
    }

    fn take(&mut self, n: usize) -> &[u8] {
        let (taken, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        taken
    }

    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// A frame of the corpus, mutated as the bytes say.
fn mutated(bytes: &mut Bytes<'_>) -> String {
    let base = CORPUS[usize::from(bytes.byte()) % CORPUS.len()];
    let mut text = base.as_bytes().to_vec();
    for _ in 0..bytes.byte() % 4 {
        let at = usize::from(bytes.byte()) % (text.len() + 1);
        match bytes.byte() % 5 {
            0 if at < text.len() => text[at] = bytes.byte(),
            1 => text.insert(at, bytes.byte()),
            2 if at < text.len() => {
                text.remove(at);
            }
            3 => {
                let piece = text.get(at..).unwrap_or_default().to_vec();
                text.extend_from_slice(&piece[..piece.len().min(64)]);
            }
            _ => text.truncate(at),
        }
    }
    String::from_utf8_lossy(&text).into_owned()
}

/// The application's handlers: `h` and `relay:clients` are handled; a handler answers with
/// the payload it got, nothing to `[1]`, and an error to a message without payload.
#[derive(Clone)]
struct Handles;

impl HandlerSet for Handles {
    fn handles(&self, kind: &str) -> bool {
        kind == "h" || kind == "relay:clients"
    }
}

impl Handlers for Handles {
    fn reply(&self, _kind: &str, _source: &str, payload: Option<String>) -> Reply {
        match payload.as_deref() {
            Some("[1]") => Reply::None,
            Some(payload) => Reply::Payload(payload.to_owned()),
            None => Reply::error("handler_error", "no payload"),
        }
    }
}

/// Most outputs one input may cause before it counts as a livelock.
const MAX_STEPS: usize = 100_000;

/// One server connection of source `fuzz` (and a peer, so that messages have somewhere to go)
/// over the in-memory engine, driven by the program `data` spells through the server's
/// reference driver ([`Relay`]), whose drain loop panics on a livelock.
pub fn connection(data: &[u8]) {
    let mut bytes = Bytes { data };
    let settings = ConnectionSettings {
        max_message_size: 512,
        send_window: 1024,
        backlog_window: 2048,
        stash_limit: 4096,
        max_pending_calls: 4,
        answerable: 8,
        rate_limit: (bytes.byte() % 2 == 0).then_some(RateLimit {
            per_second: 20,
            burst: 5,
        }),
        ..ConnectionSettings::default()
    };
    let limits = EngineLimits {
        backlog_window: 2048,
        max_backlog: 8192,
        session_grace: Duration::from_secs(60),
    };
    let mut relay = Relay::new(settings, limits, Handles).with_instance(7);
    relay.max_steps = MAX_STEPS;
    let mut now = Instant::from_millis(0);
    // Claims that are not exclusive always succeed.
    if relay.claim_idle("peer", true).is_err() {
        return;
    }
    let announced = bytes.byte() % 2 == 0;
    let Ok(conn) = relay.connect(now, "fuzz", None, announced) else {
        return;
    };
    while !bytes.is_empty() && relay.connection(conn).is_some() {
        match bytes.byte() % 12 {
            0..=2 => {
                let text = mutated(&mut bytes);
                input(&mut relay, conn, |c| c.handle_text(now, &text));
            }
            3 => {
                let len = usize::from(bytes.byte()) * 3;
                let text = String::from_utf8_lossy(bytes.take(len)).into_owned();
                input(&mut relay, conn, |c| c.handle_text(now, &text));
            }
            4 => input(&mut relay, conn, |c| c.handle_binary(now)),
            5 => {
                now = now + Duration::from_millis(u64::from(bytes.byte()) * 37);
                input(&mut relay, conn, |c| c.handle_timeout(now));
            }
            6 => {
                let _ = relay.send("fuzz", mutated(&mut bytes));
            }
            7 => relay.handle_written(conn, usize::from(bytes.byte() % 8)),
            8 => input(&mut relay, conn, |c| c.handle_heard()),
            9 => {
                let how = bytes.byte() % 4;
                input(&mut relay, conn, |c| match how {
                    0 => c.handle_closed(Some(1000)),
                    1 => c.handle_transport_error(TransportError::TooLarge),
                    2 => c.handle_transport_error(TransportError::InvalidUtf8),
                    _ => c.handle_shutdown(1001),
                });
            }
            10 => {
                // Another connection claims the source: this one is replaced, and the engine
                // fences off what it still tries.
                let _ = relay.claim_idle("fuzz", false);
            }
            _ => {
                let _ = relay.broadcast(mutated(&mut bytes), Some("peer"));
            }
        }
        // Blocked routes wait for their retry timer, which the program advances.
        relay.run(now);
        // What the connection writes goes nowhere.
        while relay.poll_transmit().is_some() {}
        if let Some(c) = relay.connection(conn) {
            assert!(
                c.poll_timeout().is_some(),
                "a live connection always has a deadline (the liveness check)"
            );
        }
    }
    // The transport ends under a connection still live: it releases the source.
    input(&mut relay, conn, |c| c.handle_closed(None));
    relay.run(now);
}

/// Feeds connection `conn` of `relay` an input, if it still lives.
fn input(relay: &mut Relay<Handles>, conn: ConnId, f: impl FnOnce(&mut Connection)) {
    if let Some(c) = relay.input(conn) {
        f(c);
    }
}

/// The requests the upgrade target starts from.
pub const REQUESTS: &[&str] = &[
    "GET /?source=alice&v=1 HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    "GET /ws?token=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIiwiZXhwIjo5OTk5OTk5OTk5fQ.c2ln&source=a%20b HTTP/1.1\r\nHost: h\r\nOrigin: https://app.example\r\n\r\n",
    "GET /?source=%FF%FE%00&v HTTP/1.1\r\nAuthorization: Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIn0.\r\n\r\n",
];

/// Parses `data` as a request head as hyper would, then reads it as the relay's upgrade does.
pub fn upgrade(data: &[u8]) {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    let Ok(httparse::Status::Complete(_)) = request.parse(data) else {
        return;
    };
    let target = request.path.unwrap_or("/");
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query.to_owned())),
        None => (target, None),
    };
    let mut map = http::HeaderMap::new();
    for header in request.headers.iter() {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(header.name.as_bytes()),
            http::HeaderValue::from_bytes(header.value),
        ) {
            map.append(name, value);
        }
    }
    let upgrade = wsrelay_server::UpgradeRequest {
        path: path.to_owned(),
        query,
        headers: map,
        remote_addr: None,
        secure: false,
    };
    for name in ["source", "v", "token"] {
        let _ = upgrade.query_param(name);
    }
    let _ = upgrade.bearer_token();
    let _ = upgrade.origin();
    if let Ok(identity) = wsrelay_server::source_from_query(&upgrade) {
        assert!(
            wsrelay_core::protocol::source_problem(&identity.source).is_none(),
            "an accepted source is acceptable: {:?}",
            identity.source
        );
    }
    let auth = wsrelay_server::JwtAuth::hs256(b"the fuzz target's secret, 32+ bytes");
    if let Ok(identity) = auth.verify(&upgrade) {
        panic!("a token nobody signed was accepted: {identity:?}");
    }
}
