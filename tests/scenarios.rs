//! The shared behaviour scenarios (`tests/scenarios/scenarios.json`, whose README says what each
//! step means) run by the native client, against the relay of the test bed of `cargo xtask test`
//! (`WSRELAY_TESTBED`). The JavaScript runner (`tests/scenarios/runner.mjs`) runs the same file
//! on Node 20, Node 22 and in headless Chromium.
//!
//! Not part of a plain `cargo test` (`test = false` in Cargo.toml): it needs the test bed.
//! `cargo xtask test` runs it with `cargo test -p wsrelay --test scenarios -- --test-threads=1`
//! (one at a time: scenarios stop and restart the one relay).

#![cfg(not(target_arch = "wasm32"))]

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use serde_json::{json, Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use wsrelay::client::{OptionValue, Options};
use wsrelay::{Error, Event, Incoming, Reply, SendOptions, WebSocketClient};

const PATIENCE: Duration = Duration::from_secs(5);
const FAST: [(&str, f64); 3] = [
    ("minReconnectionDelay", 100.0),
    ("maxReconnectionDelay", 300.0),
    ("connectionTimeout", 2000.0),
];

fn testbed() -> String {
    std::env::var("WSRELAY_TESTBED")
        .expect("WSRELAY_TESTBED is not set: run the scenarios with `cargo xtask test`")
}

/// Calls the test bed's control API (HTTP/1.1 on loopback) and returns the body.
async fn control(method: &str, path: &str) -> String {
    let base = testbed();
    let host = base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(host).await.expect("test bed reachable");
    let request =
        format!("{method} {path} HTTP/1.1\r\nhost: {host}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("request sent");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("response read");
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default()
}

/// The options of a step (fast reconnects, then the step's own), through the core's table.
fn options(extra: Option<&Value>) -> Result<Options, Error> {
    let mut options = Options::default();
    for (name, value) in FAST {
        options.set(name, OptionValue::Number(value))?;
    }
    if let Some(Value::Object(extra)) = extra {
        for (name, value) in extra {
            // Read as the JavaScript driver reads its options object: a string or an object is
            // not a number.
            let numbers: Vec<f64>;
            let value = match value {
                Value::Bool(flag) => OptionValue::Bool(*flag),
                Value::Array(list) => {
                    numbers = list
                        .iter()
                        .map(|n| n.as_f64().unwrap_or(f64::NAN))
                        .collect();
                    OptionValue::Numbers(&numbers)
                }
                other => OptionValue::Number(other.as_f64().unwrap_or(f64::NAN)),
            };
            options.set(name, value)?;
        }
    }
    Ok(options)
}

/// The details of an event, in the scenarios' terms (the JavaScript client's event details).
fn describe(event: &Event) -> Option<(&'static str, Value)> {
    Some(match event {
        Event::Open { resumed } => ("open", json!({ "resumed": resumed })),
        Event::Close {
            code,
            reason,
            reconnecting,
        } => (
            "close",
            json!({ "code": code, "reason": reason, "reconnecting": reconnecting }),
        ),
        Event::Reconnecting { attempt, delay } => (
            "reconnecting",
            json!({ "attempt": attempt, "delay": delay.as_millis() as u64 }),
        ),
        Event::Error(error) | Event::Failed { error, .. } => ("error", error_detail(error)),
        Event::Response(response) => {
            let payload = match &response.result {
                Ok(payload) => payload
                    .as_deref()
                    .and_then(|text| serde_json::from_str(text).ok())
                    .unwrap_or(Value::Null),
                Err(_) => Value::Null,
            };
            (
                "response",
                json!({ "type": response.kind, "re": response.re, "source": response.source, "payload": payload }),
            )
        }
        _ => return None,
    })
}

fn error_detail(error: &Error) -> Value {
    let mut detail = json!({ "code": error.code(), "message": message(error) });
    match error {
        Error::Rejected { code, .. } => detail["closeCode"] = json!(code),
        Error::Handler { kind, .. } | Error::Unanswerable { kind } => detail["type"] = json!(kind),
        _ => {}
    }
    detail
}

/// A remote error's own message (as the JavaScript error's `message`), else the description.
fn message(error: &Error) -> String {
    match error {
        Error::Remote(remote) => remote.message.clone(),
        other => other.to_string(),
    }
}

/// Every field of `expected` is in `actual`, equal.
fn includes(actual: &Value, expected: Option<&Value>) -> bool {
    match expected {
        Some(Value::Object(fields)) => fields
            .iter()
            .all(|(key, value)| actual.get(key) == Some(value)),
        _ => true,
    }
}

/// What a handler received: payload, source and room of each message, in order.
type Log = Arc<Mutex<Vec<(Value, Option<String>, Option<String>)>>>;

struct Client {
    client: WebSocketClient,
    events: Arc<Mutex<Vec<(&'static str, Value)>>>,
    cursor: usize,
    logs: HashMap<String, Log>,
}

type Outcome = Result<Value, Error>;

/// One scenario's clients, bare sockets and pending sends.
struct Run {
    suffix: u64,
    url: String,
    clients: HashMap<String, Client>,
    bares: HashMap<
        String,
        tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>,
    >,
    pending: HashMap<String, JoinHandle<Result<(), Error>>>,
}

fn str_field<'a>(step: &'a Value, key: &str) -> &'a str {
    step[key].as_str().unwrap_or_default()
}

impl Run {
    fn source(&self, name: &str) -> String {
        format!("{name}-{}", self.suffix)
    }

    fn client(&mut self, step: &Value) -> &mut Client {
        let name = str_field(step, "client");
        self.clients
            .get_mut(name)
            .unwrap_or_else(|| panic!("{step}: no client {name}"))
    }

    /// Rooms are named like clients: the scenario's name plus the run's suffix.
    fn room(&self, name: &str) -> String {
        self.source(name)
    }

    fn send_options(&self, step: &Value) -> SendOptions {
        SendOptions {
            to: step["to"].as_str().map(|to| self.source(to)),
            room: step["room"].as_str().map(|room| self.room(room)),
            timeout: step["timeout"].as_u64().map(Duration::from_millis),
            ..SendOptions::default()
        }
    }

    fn create(&mut self, step: &Value) {
        let name = str_field(step, "client");
        let source = self.source(step["sameSourceAs"].as_str().unwrap_or(name));
        let options = options(step.get("options")).unwrap_or_else(|e| panic!("{step}: {e}"));
        let builder = WebSocketClient::builder(&self.url, source).options(options);
        let mut receiver = builder.subscribe();
        let client = builder.build().unwrap_or_else(|e| panic!("{step}: {e}"));
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&events);
        tokio::spawn(async move {
            while let Ok(event) = receiver.recv().await {
                if let Some(described) = describe(&event) {
                    sink.lock().expect("events lock").push(described);
                }
            }
        });
        let entry = Client {
            client,
            events,
            cursor: 0,
            logs: HashMap::new(),
        };
        self.clients.insert(name.to_owned(), entry);
    }

    async fn wait_event(&mut self, step: &Value, name: &str, detail: Option<&Value>) {
        let client = self.client(step);
        let deadline = Instant::now() + PATIENCE;
        loop {
            let found = {
                let events = client.events.lock().expect("events lock");
                events
                    .iter()
                    .enumerate()
                    .skip(client.cursor)
                    .find(|(_, (event, d))| *event == name && includes(d, detail))
                    .map(|(index, _)| index)
            };
            if let Some(index) = found {
                client.cursor = index + 1;
                return;
            }
            if Instant::now() > deadline {
                let events = client.events.lock().expect("events lock").clone();
                panic!("{step}: no {name} {detail:?}; events: {events:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn check(&self, step: &Value, outcome: Outcome) {
        let expect = &step["expect"];
        match (outcome, expect.get("error").and_then(Value::as_str)) {
            (Ok(value), Some(code)) => panic!("{step}: succeeded with {value}, expected {code}"),
            (Err(error), Some(code)) => {
                assert_eq!(error.code(), code, "{step}: {error}");
                if let Some(text) = expect["message"].as_str() {
                    assert_eq!(message(&error), text, "{step}");
                }
            }
            (Err(error), None) => panic!("{step}: failed with {}: {error}", error.code()),
            (Ok(value), None) => {
                if let Some(expected) = expect.get("value") {
                    assert_eq!(&value, expected, "{step}");
                }
                if let Some(names) = expect["sources"].as_array() {
                    for name in names {
                        let source = self.source(name.as_str().unwrap_or_default());
                        let listed = value
                            .as_array()
                            .is_some_and(|list| list.contains(&json!(source)));
                        assert!(listed, "{step}: {value} lacks {source}");
                    }
                }
            }
        }
    }

    async fn step(&mut self, step: &Value) {
        match str_field(step, "do") {
            "connect" => {
                self.create(step);
                self.wait_event(step, "open", None).await;
            }
            "create" => self.create(step),
            "construct" => {
                let url = step["url"].as_str().unwrap_or(&self.url).to_owned();
                let source = match step["source"].as_str() {
                    Some(source) => source.to_owned(),
                    None => self.source("construct"),
                };
                let built = options(step.get("options")).and_then(|options| {
                    WebSocketClient::builder(url, source)
                        .options(options)
                        .build()
                });
                match built {
                    Ok(_) => panic!("{step}: constructed"),
                    Err(error) => assert_eq!(
                        error.code(),
                        str_field(&step["expect"], "error"),
                        "{step}: {error}"
                    ),
                }
            }
            "on" => {
                let log: Log = Arc::default();
                let client = self.client(step);
                let kind = str_field(step, "type");
                client.logs.insert(kind.to_owned(), Arc::clone(&log));
                let behaviour = step["handler"].clone();
                client.client.on(kind, move |m: Incoming<Value>| {
                    // Recorded in the synchronous part: handlers are called in arrival order.
                    log.lock().expect("log lock").push((
                        m.payload.clone(),
                        m.source.clone(),
                        m.room.clone(),
                    ));
                    let reply: Pin<Box<dyn Future<Output = Result<Reply, String>> + Send>> =
                        match behaviour.as_str() {
                            Some("record") => Box::pin(async { Ok(Reply::None) }),
                            Some("echo") => {
                                let payload = m.payload;
                                Box::pin(async move { Ok(Reply::json(&payload)) })
                            }
                            Some("fail") => Box::pin(async { Err("boom".to_owned()) }),
                            Some("hang") => Box::pin(std::future::pending()),
                            _ => {
                                let value = behaviour["reply"].clone();
                                Box::pin(async move { Ok(Reply::json(&value)) })
                            }
                        };
                    reply
                });
            }
            "send" => {
                let options = self.send_options(step);
                let client = &self.client(step).client;
                let send =
                    client.send_with(str_field(step, "type"), step["payload"].clone(), options);
                match step["as"].as_str() {
                    Some(name) => {
                        let handle = tokio::spawn(send);
                        self.pending.insert(name.to_owned(), handle);
                    }
                    None => self.check(step, send.await.map(|()| Value::Null)),
                }
            }
            "await" => {
                let handle = self
                    .pending
                    .remove(str_field(step, "promise"))
                    .unwrap_or_else(|| panic!("{step}: no such send"));
                let outcome = handle.await.expect("send task");
                self.check(step, outcome.map(|()| Value::Null));
            }
            "request" => {
                let mut options = self.send_options(step);
                // A request's `room` is its payload's (`roomPayload`), never its address.
                options.room = None;
                let payload = match step["roomPayload"].as_str() {
                    Some(name) => json!({ "room": self.room(name) }),
                    None => step["payload"].clone(),
                };
                let client = &self.client(step).client;
                let started = Instant::now();
                let outcome = client
                    .request_with::<Value>(str_field(step, "type"), payload, options)
                    .await;
                let elapsed = started.elapsed().as_millis() as u64;
                self.check(step, outcome);
                if let Some([low, high]) = step["elapsed"].as_array().map(Vec::as_slice) {
                    let (low, high) = (low.as_u64().unwrap_or(0), high.as_u64().unwrap_or(0));
                    assert!((low..=high).contains(&elapsed), "{step}: took {elapsed} ms");
                }
            }
            "received" => {
                let from = step["from"].as_str().map(|name| self.source(name));
                let expected = step["payloads"].as_array().cloned().unwrap_or_default();
                let log = self
                    .client(step)
                    .logs
                    .get(str_field(step, "type"))
                    .cloned()
                    .unwrap_or_else(|| panic!("{step}: no handler"));
                let deadline = Instant::now() + PATIENCE;
                while log.lock().expect("log lock").len() < expected.len()
                    && Instant::now() < deadline
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                tokio::time::sleep(Duration::from_millis(50)).await; // nothing more arrives
                let log = log.lock().expect("log lock").clone();
                let payloads: Vec<Value> =
                    log.iter().map(|(payload, ..)| payload.clone()).collect();
                assert_eq!(payloads, expected, "{step}");
                if let Some(from) = from {
                    assert!(
                        log.iter()
                            .all(|(_, source, _)| source.as_deref() == Some(&from)),
                        "{step}: {log:?}"
                    );
                }
                if let Some(room) = step["room"].as_str().map(|name| self.room(name)) {
                    assert!(
                        log.iter().all(|(.., at)| at.as_deref() == Some(&room)),
                        "{step}: {log:?}"
                    );
                }
            }
            "join" | "leave" => {
                let room = self.room(str_field(step, "room"));
                let client = &self.client(step).client;
                // Called now (queued in call order, before the steps after it), awaited below
                // or later.
                let change: Pin<Box<dyn Future<Output = Result<(), Error>> + Send>> =
                    if str_field(step, "do") == "join" {
                        Box::pin(client.join(&room))
                    } else {
                        Box::pin(client.leave(&room))
                    };
                match step["as"].as_str() {
                    Some(name) => {
                        let handle = tokio::spawn(change);
                        self.pending.insert(name.to_owned(), handle);
                    }
                    None => self.check(step, change.await.map(|()| Value::Null)),
                }
            }
            "reconnect" => self.client(step).client.reconnect(),
            "event" => {
                let name = str_field(step, "event").to_owned();
                self.wait_event(step, &name, step.get("detail")).await;
            }
            "state" => {
                let client = &self.client(step).client;
                if let Some(state) = step["readyState"].as_u64() {
                    assert_eq!(client.ready_state() as u64, state, "{step}");
                }
                if let Some(queued) = step["queued"].as_u64() {
                    assert_eq!(client.queued() as u64, queued, "{step}");
                }
            }
            "stats" => {
                let stats = self.client(step).client.stats();
                let mut values = Map::new();
                let times = [("rtt", stats.rtt), ("smoothedRtt", stats.smoothed_rtt)];
                for (name, time) in times {
                    if let Some(time) = time {
                        values.insert(name.into(), json!(time.as_millis() as u64));
                    }
                }
                let counts = [
                    ("reconnects", stats.reconnects),
                    ("retransmitted", stats.retransmitted),
                    ("queuedMessages", stats.queued_messages as u64),
                    ("queuedBytes", stats.queued_bytes as u64),
                    ("acknowledged", stats.acknowledged),
                    ("failed", stats.failed),
                ];
                for (name, count) in counts {
                    values.insert(name.into(), json!(count));
                }
                let values = Value::Object(values);
                for (key, least) in step["atLeast"].as_object().into_iter().flatten() {
                    let ok = values[key].as_u64() >= least.as_u64();
                    assert!(ok, "{step}: {values}");
                }
                for (key, value) in step["equal"].as_object().into_iter().flatten() {
                    assert_eq!(&values[key], value, "{step}: {values}");
                }
                for key in step["present"].as_array().into_iter().flatten() {
                    let key = key.as_str().unwrap_or_default();
                    assert!(values[key].is_u64(), "{step}: {values}");
                }
            }
            "close" => {
                let code = step["code"].as_u64().and_then(|c| u16::try_from(c).ok());
                let reason = str_field(step, "reason").to_owned();
                let client = self.client(step).client.clone();
                tokio::time::timeout(
                    PATIENCE * 2,
                    client.close_with(code.unwrap_or(1000), &reason),
                )
                .await
                .unwrap_or_else(|_| panic!("{step}: not closed"));
            }
            "relay" => {
                let body = control("POST", &format!("/{}", str_field(step, "action"))).await;
                assert_eq!(body, "ok", "{step}");
            }
            "bare" => {
                let name = str_field(step, "client");
                let url = format!("{}/?source={}", self.url, self.source(name));
                let (socket, _) = tokio_tungstenite::connect_async(url)
                    .await
                    .unwrap_or_else(|e| panic!("{step}: {e}"));
                self.bares.insert(name.to_owned(), socket);
            }
            "bareSend" => {
                let socket = self
                    .bares
                    .get_mut(str_field(step, "client"))
                    .expect("bare client");
                let frame = step["frame"].to_string();
                socket.send(Message::text(frame)).await.expect("bare send");
            }
            "bareClose" => {
                if let Some(mut socket) = self.bares.remove(str_field(step, "client")) {
                    let _ = socket.close(None).await;
                }
            }
            "sleep" => {
                let ms = step["ms"].as_u64().unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            other => panic!("{step}: unknown step {other}"),
        }
    }
}

fn scenarios() -> Vec<Value> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/scenarios/scenarios.json"
    );
    let text = std::fs::read_to_string(path).expect("scenarios.json readable");
    let file: Value = serde_json::from_str(&text).expect("scenarios.json is JSON");
    file["scenarios"]
        .as_array()
        .cloned()
        .expect("a scenarios list")
}

async fn run(index: usize) {
    let scenario = scenarios().swap_remove(index);
    let mut run = Run {
        suffix: rand_suffix(),
        url: control("GET", "/url").await,
        clients: HashMap::new(),
        bares: HashMap::new(),
        pending: HashMap::new(),
    };
    for step in scenario["steps"].as_array().into_iter().flatten() {
        run.step(step).await;
    }
    for (_, client) in run.clients.drain() {
        let _ = tokio::time::timeout(PATIENCE, client.client.close()).await;
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(0u8) % 1_000_000_000
}

/// One test per scenario, named after it; `every_scenario_has_a_test` keeps the list whole.
macro_rules! scenarios {
    ($($index:literal => $name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                run($index).await;
            }
        )*

        #[test]
        fn every_scenario_has_a_test() {
            let names = scenarios();
            let tests = [$(stringify!($name)),*];
            assert_eq!(names.len(), tests.len(), "a scenario without a test here");
        }
    };
}

scenarios! {
    0 => send,
    1 => queue,
    2 => reconnect,
    3 => request,
    4 => timeout,
    5 => close_codes,
    6 => handler_answer,
    7 => handler_failure,
    8 => bad_option,
    9 => stats,
    10 => rooms,
    11 => rooms_resume,
    12 => rooms_session_lost,
    13 => rooms_while_disconnected,
}
