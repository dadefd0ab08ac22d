//! The relay binary as an operator runs it on the internet: the line announcing its address,
//! static files and upgrades on the same port, verified identities (tokens in the query or a
//! header, expiring while connected), TLS for a Node client trusting a CA made at run time,
//! origins, JSON logs that parse line by line and never show a token, options from
//! `WSRELAY_*` variables, the open-file limit, connections that never upgrade, oversized
//! frames, presence on by default, a plain Node.js `ws` client chatting through it, the HTTP
//! endpoints (health, readiness and metrics, which the library serves too), and a prompt
//! shutdown on SIGTERM.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{config, get, metric, Client, WAIT};
use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use wsrelay_server::{Incoming, WebSocketServer};

const SECRET: &str = "operating test secret, 32+ bytes long";

/// The relay binary on a free port, its stderr lines collected; killed when dropped.
struct Relay {
    child: Child,
    addr: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
    /// The one line it wrote to stdout, announcing its address.
    stdout: String,
}

impl Relay {
    async fn start(args: &[&str], env: &[(&str, &str)]) -> Relay {
        Relay::start_with(
            Command::new(env!("CARGO_BIN_EXE_wsrelay-server")),
            args,
            env,
        )
        .await
    }

    /// Through `sh -c 'ulimit -n LIMIT; exec relay ...'`.
    async fn start_limited(limit: u32, args: &[&str]) -> Relay {
        let mut command = Command::new("sh");
        command.args([
            "-c",
            &format!("ulimit -n {limit}; exec \"$0\" \"$@\""),
            env!("CARGO_BIN_EXE_wsrelay-server"),
        ]);
        Relay::start_with(command, args, &[]).await
    }

    async fn start_with(mut command: Command, args: &[&str], env: &[(&str, &str)]) -> Relay {
        command
            .args(["--port", "0"])
            .args(args)
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("start wsrelay-server");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("piped stderr");
        let sink = Arc::clone(&logs);
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .expect("announced in time")
            .expect("stdout readable")
            .unwrap_or_else(|| panic!("exited: {:?}", logs.lock().unwrap()));
        // `listening on URL`, or in JSON mode `{"listening":"URL"}`.
        let url = match serde_json::from_str::<Value>(&line) {
            Ok(entry) => entry["listening"].as_str().unwrap_or_default().to_owned(),
            Err(_) => line
                .strip_prefix("listening on ")
                .unwrap_or_default()
                .to_owned(),
        };
        let addr = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"))
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .expect("HOST:PORT");
        Relay {
            child,
            addr,
            logs,
            stdout: line,
        }
    }

    fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// The log lines once one contains `needle` (stderr is read by a task of its own, which
    /// may lag behind the relay), or as they are after a few seconds.
    async fn logs_with(&self, needle: &str) -> Vec<String> {
        let deadline = Instant::now() + WAIT;
        while !self.logs().iter().any(|line| line.contains(needle)) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.logs()
    }

    /// SIGTERM; how long the process took to exit, and whether it exited successfully.
    async fn terminate(mut self) -> (Duration, bool) {
        let pid = self.child.id().expect("running").to_string();
        let started = Instant::now();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .unwrap();
        assert!(status.success());
        let exit = tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .expect("exit in time")
            .unwrap();
        (started.elapsed(), exit.success())
    }
}

fn token(sub: &str, ttl: i64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    encode(
        &Header::default(),
        &json!({ "sub": sub, "exp": now.saturating_add_signed(ttl) }),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// An upgrade to `path_and_query` with extra headers: its status (101 when it opened) and the
/// socket when it did.
async fn upgrade(
    addr: SocketAddr,
    path_and_query: &str,
    headers: &[(&str, String)],
) -> (u16, Option<common::Client>) {
    let mut request = format!("ws://{addr}{path_and_query}")
        .into_client_request()
        .unwrap();
    for (name, value) in headers {
        let name: tokio_tungstenite::tungstenite::http::HeaderName = name.parse().unwrap();
        request.headers_mut().insert(name, value.parse().unwrap());
    }
    common::upgrade_outcome(request).await
}

/// `node SCRIPT ARGS` in tests/node (npm `ws`, installed when missing): stdout and success.
async fn node(script: &str, args: &[&str]) -> (String, bool) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node");
    if !dir.join("node_modules/ws").is_dir() {
        let status = std::process::Command::new("npm")
            .args(["install", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status()
            .expect("npm is installed");
        assert!(status.success(), "npm install in {}", dir.display());
    }
    let run = Command::new("node")
        .arg(script)
        .args(args)
        .current_dir(&dir)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("node finished in time")
        .expect("node is installed");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    (format!("{stdout}{stderr}"), output.status.success())
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn www_dir() -> PathBuf {
    let dir = temp_dir("files");
    std::fs::write(dir.join("index.html"), "<h1>hello wsrelay</h1>\n").unwrap();
    std::fs::write(dir.join("app.js"), "console.log('demo');\n").unwrap();
    dir
}

#[tokio::test]
async fn tokens_from_the_query_or_a_header_are_verified() {
    let relay = Relay::start(&[], &[("WSRELAY_AUTH_SECRET", SECRET)]).await;
    let addr = relay.addr;
    let valid = token("alice", 60);
    let forged = encode(
        &Header::default(),
        &json!({ "sub": "alice", "exp": 4_102_444_800u64 }),
        &EncodingKey::from_secret(b"not the relay's secret at all!!!"),
    )
    .unwrap();
    for (what, path, headers, status) in [
        ("query", format!("/?token={valid}"), vec![], 101),
        (
            "header",
            "/".to_owned(),
            vec![("authorization", format!("Bearer {valid}"))],
            101,
        ),
        (
            "same source",
            format!("/?source=alice&token={valid}"),
            vec![],
            101,
        ),
        (
            "another source",
            format!("/?source=bob&token={valid}"),
            vec![],
            4403,
        ),
        (
            "expired",
            format!("/?token={}", token("alice", -5)),
            vec![],
            4401,
        ),
        ("forged", format!("/?token={forged}"), vec![], 4401),
        ("missing", "/?source=alice".to_owned(), vec![], 4401),
        ("garbage", "/?token=a.b.c".to_owned(), vec![], 4401),
    ] {
        assert_eq!(upgrade(addr, &path, &headers).await.0, status, "{what}");
    }
    let logs = relay.logs().join("\n");
    assert!(!logs.contains("not verified"), "{logs}");
    assert!(
        !logs.contains(&valid) && !logs.contains(&forged),
        "a token was logged"
    );
}

#[tokio::test]
async fn a_token_that_expires_while_connected_closes_with_4001() {
    let dir = temp_dir("secret");
    let file = dir.join("secret");
    std::fs::write(&file, format!("{SECRET}\n")).unwrap();
    let relay = Relay::start(&["--auth-secret-file", file.to_str().unwrap()], &[]).await;
    let (status, client) =
        upgrade(relay.addr, &format!("/?token={}", token("alice", 2)), &[]).await;
    assert_eq!(status, 101);
    let mut client = client.unwrap();
    client.send(r#"{"type":"~ping"}"#).await;
    assert_eq!(client.recv().await["type"], "~pong");
    let started = Instant::now();
    let (code, _) = tokio::time::timeout(Duration::from_secs(5), client.closed())
        .await
        .unwrap();
    assert_eq!(code, Some(4001));
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[tokio::test]
async fn json_logs_parse_line_by_line_say_who_came_and_went_and_never_show_a_token() {
    let relay = Relay::start(
        &["--log-format", "json", "--log-level", "trace"],
        &[("WSRELAY_AUTH_SECRET", SECRET)],
    )
    .await;
    // stdout too: in a container both streams are one log.
    let announced: Value = serde_json::from_str(&relay.stdout)
        .unwrap_or_else(|e| panic!("{e}: stdout {:?}", relay.stdout));
    assert!(announced["listening"].is_string(), "{announced}");
    let secret_token = token("alice", 60);
    let (status, client) = upgrade(relay.addr, &format!("/?token={secret_token}"), &[]).await;
    assert_eq!(status, 101);
    let mut client = client.unwrap();
    client.send(r#"{"type":"~ping"}"#).await;
    assert_eq!(client.recv().await["type"], "~pong");
    let normal = tokio_tungstenite::tungstenite::protocol::CloseFrame {
        code: tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Normal,
        reason: "bye".into(),
    };
    client.ws.close(Some(normal)).await.unwrap();
    let _ = client.closed().await;
    assert_eq!(
        upgrade(relay.addr, "/?token=forged.token.x", &[]).await.0,
        4401
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, clean) = relay_terminate_keep_logs(relay).await;
    assert!(clean.0);
    let logs = clean.1;
    assert!(logs.len() > 3, "{logs:?}");
    let mut connected = None;
    let mut disconnected = None;
    for line in &logs {
        assert!(
            !line.contains('\u{1b}'),
            "ANSI escapes in a log file: {line}"
        );
        assert!(!line.contains(&secret_token), "a token was logged: {line}");
        let entry: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            entry["timestamp"].is_string() && entry["level"].is_string(),
            "{line}"
        );
        match entry["fields"]["message"].as_str() {
            Some("connected") => connected = Some(entry.clone()),
            Some("disconnected") => disconnected = Some(entry.clone()),
            _ => {}
        }
    }
    let connected = connected.expect("a connect line");
    assert_eq!(connected["level"], "INFO");
    assert_eq!(connected["fields"]["source"], "alice");
    assert!(connected["fields"]["addr"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    let disconnected = disconnected.expect("a disconnect line");
    assert_eq!(disconnected["level"], "INFO");
    assert_eq!(disconnected["fields"]["code"], 1000, "{disconnected}");
    // Plain words, not Rust's debug text (`Closed(Some(1000))`).
    assert_eq!(
        disconnected["fields"]["reason"], "closed by the client (1000)",
        "{disconnected}"
    );
}

#[tokio::test]
async fn a_fatal_start_up_error_is_said_once_and_as_json_in_json_mode() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_wsrelay-server"))
        .args([
            "--port",
            "0",
            "--log-format",
            "json",
            "--www",
            "/no/such/dir",
        ])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stdout.lines().chain(stderr.lines()).collect();
    for line in &lines {
        let entry: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(entry["level"].is_string(), "{line}");
    }
    let said = lines
        .iter()
        .filter(|line| line.contains("is not a directory"))
        .count();
    assert_eq!(said, 1, "{lines:?}");
}

async fn relay_terminate_keep_logs(relay: Relay) -> (Duration, (bool, Vec<String>)) {
    let logs = Arc::clone(&relay.logs);
    let (took, ok) = relay.terminate().await;
    // The reader of stderr ends at the end of the stream; "closed" is the relay's last line.
    let deadline = Instant::now() + WAIT;
    while !logs
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("\"closed\""))
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lines = logs.lock().unwrap().clone();
    (took, (ok, lines))
}

#[tokio::test]
async fn without_a_secret_it_says_once_that_identities_are_not_verified() {
    let relay = Relay::start(&["--log-format", "json"], &[]).await;
    let mut alice = common::Client::bare(relay.addr, "alice").await;
    alice.send(r#"{"type":"~ping"}"#).await;
    let warnings = relay
        .logs_with("identities are not verified")
        .await
        .iter()
        .filter(|line| line.contains("identities are not verified"))
        .count();
    assert_eq!(warnings, 1);
}

#[tokio::test]
async fn options_come_from_wsrelay_variables_and_help_names_them() {
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_wsrelay-server"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "port",
        "host",
        "www",
        "max-connections",
        "max-connections-per-ip",
        "rate-limit",
        "auth-secret",
        "auth-secret-file",
        "on-duplicate",
        "allowed-origin",
        "tls-cert",
        "tls-key",
        "log-format",
        "log-level",
        "handshake-timeout",
    ] {
        let variable = format!("WSRELAY_{}", flag.to_uppercase().replace('-', "_"));
        assert!(help.contains(&format!("--{flag}")), "--{flag} in --help");
        assert!(help.contains(&variable), "{variable} in --help");
    }
    assert!(!help.contains(SECRET));
    let relay = Relay::start(
        &[],
        &[
            ("WSRELAY_MAX_CONNECTIONS", "1"),
            ("WSRELAY_ON_DUPLICATE", "reject"),
        ],
    )
    .await;
    let (status, first) = upgrade(relay.addr, "/?source=a", &[]).await;
    assert_eq!(status, 101);
    // The source is claimed once the connection runs (after the 101): a pong says it does.
    let mut first = first.unwrap();
    first.send(r#"{"type":"~ping"}"#).await;
    assert_eq!(first.recv().await["type"], "~pong");
    assert_eq!(
        upgrade(relay.addr, "/?source=a", &[]).await.0,
        409,
        "reject"
    );
    assert_eq!(
        upgrade(relay.addr, "/?source=b", &[]).await.0,
        503,
        "one at most"
    );
}

#[tokio::test]
async fn refuses_to_start_without_the_open_files_its_limits_need() {
    let output = std::process::Command::new("sh")
        .args([
            "-c",
            "ulimit -n 256; exec \"$0\" --port 0 --max-connections 5000",
            env!("CARGO_BIN_EXE_wsrelay-server"),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("open files"), "{stderr}");
}

#[tokio::test]
async fn bounds_left_to_their_defaults_are_sized_to_the_open_file_limit() {
    // A common container limit: the defaults (10000 + 1024) do not fit; the relay starts,
    // says what it chose, and serves.
    for args in [&[][..], &["--max-connections", "200"][..]] {
        let relay = Relay::start_limited(1024, args).await;
        let logs = relay.logs_with("open-file limit").await;
        assert!(
            logs.iter().any(|line| line.contains("open-file limit")),
            "{args:?}: a warning: {logs:?}"
        );
        let mut alice = common::Client::bare(relay.addr, "alice").await;
        alice.send(r#"{"type":"~ping"}"#).await;
        assert_eq!(alice.recv().await["type"], "~pong");
    }
}

#[tokio::test]
async fn the_soft_open_file_limit_is_raised_to_what_the_bounds_need() {
    // Under a hard limit that allows it, the soft limit is raised to what is needed.
    let relay = Relay::start_limited(20_000, &["--max-connections", "2000"]).await;
    let pid = relay.child.id().unwrap();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let soft: u64 = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .and_then(|line| line.split_whitespace().nth(3))
        .and_then(|soft| soft.parse().ok())
        .unwrap();
    assert!(soft >= 2000 + 1024, "{limits}");
}

#[tokio::test]
async fn idle_connections_cannot_starve_a_real_client() {
    // 200 descriptors; 300 connections that never send a byte.
    let relay = Relay::start_limited(
        200,
        &[
            "--max-connections",
            "64",
            "--max-pending-connections",
            "64",
            "--handshake-timeout",
            "1",
        ],
    )
    .await;
    let addr = relay.addr;
    let mut idle = Vec::new();
    for _ in 0..300 {
        if let Ok(Ok(stream)) =
            tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await
        {
            idle.push(stream);
        }
    }
    let started = Instant::now();
    let mut alice =
        tokio::time::timeout(Duration::from_secs(15), common::Client::bare(addr, "alice"))
            .await
            .expect("a real client is served");
    alice.send(r#"{"type":"~ping"}"#).await;
    assert_eq!(alice.recv().await["type"], "~pong");
    println!(
        "served after {:?} behind 300 idle connections",
        started.elapsed()
    );
    let logs = relay.logs().join("\n");
    assert!(
        !logs.contains("accept failed"),
        "out of descriptors: {logs}"
    );
}

#[tokio::test]
async fn an_oversized_frame_from_node_gets_too_large_and_1009() {
    let relay = Relay::start(&[], &[]).await;
    let base = format!("ws://{}", relay.addr);
    let (out, ok) = node("oversized.mjs", &[&base, "20000000"]).await;
    assert!(ok, "{out}");
    assert!(
        out.contains("error too_large") && out.contains("close 1009"),
        "{out}"
    );
}

#[tokio::test]
async fn tls_for_a_node_client_trusting_the_ca() {
    let certs = common::certs::test_certificates().unwrap();
    let dir = temp_dir("tls");
    for (name, pem) in [
        ("ca.pem", &certs.ca_pem),
        ("cert.pem", &certs.cert_pem),
        ("key.pem", &certs.key_pem),
    ] {
        std::fs::write(dir.join(name), pem).unwrap();
    }
    let relay = Relay::start(
        &[
            "--tls-cert",
            dir.join("cert.pem").to_str().unwrap(),
            "--tls-key",
            dir.join("key.pem").to_str().unwrap(),
        ],
        &[],
    )
    .await;
    let base = format!("wss://localhost:{}", relay.addr.port());
    let (out, ok) = node("tls.mjs", &[&base, dir.join("ca.pem").to_str().unwrap()]).await;
    assert!(ok && out.contains("node tls ok"), "{out}");
    // Plain HTTP on the TLS port is not served.
    let mut plain = TcpStream::connect(relay.addr).await.unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, plain.read_to_end(&mut answer)).await;
    assert!(!String::from_utf8_lossy(&answer).contains("200 OK"));
}

#[tokio::test]
async fn serves_files_and_upgrades_on_any_path_then_stops_on_sigterm() {
    let dir = www_dir();
    let relay = Relay::start(&["--www", dir.to_str().unwrap()], &[]).await;
    let addr = relay.addr;

    assert_eq!(
        common::http_get(addr, "/").await,
        (200, "<h1>hello wsrelay</h1>\n".to_owned())
    );
    assert_eq!(
        common::http_get(addr, "/app.js").await,
        (200, "console.log('demo');\n".to_owned())
    );
    assert_eq!(common::http_get(addr, "/missing.js").await.0, 404);

    let mut alice = Client::bare(addr, "alice").await; // path `/`
    let mut bob = Client::open(addr, "/ws?source=bob").await;
    bob.send(r#"{"type":"~ping"}"#).await;
    assert_eq!(bob.recv().await["type"], "~pong");
    alice
        .send(r#"{"type":"chat-message","payload":{"message":"Hello"}}"#)
        .await;
    assert_eq!(
        bob.recv().await,
        json!({"type": "chat-message", "source": "alice", "payload": {"message": "Hello"}})
    );

    let stopping = tokio::spawn(relay.terminate());
    assert_eq!(
        alice.closed().await.0,
        Some(1001),
        "clients are told the server goes away"
    );
    assert!(stopping.await.unwrap().1, "clean exit on SIGTERM");
}

#[tokio::test]
async fn without_www_plain_http_is_told_to_upgrade() {
    let relay = Relay::start(&[], &[]).await;
    assert_eq!(common::http_get(relay.addr, "/").await.0, 426);
}

#[tokio::test]
async fn with_www_only_the_relays_own_origin_may_connect() {
    let www = temp_dir("www");
    std::fs::write(www.join("index.html"), "<h1>demo</h1>").unwrap();
    let relay = Relay::start(&["--www", www.to_str().unwrap()], &[]).await;
    let addr = relay.addr;
    let own = ("origin", format!("http://{addr}"));
    let foreign = ("origin", "https://evil.example".to_owned());
    assert_eq!(upgrade(addr, "/?source=a", &[own]).await.0, 101);
    assert_eq!(
        upgrade(addr, "/?source=b", std::slice::from_ref(&foreign))
            .await
            .0,
        4403
    );
    let logs = relay
        .logs_with("other origins are refused")
        .await
        .join("\n");
    assert!(logs.contains("other origins are refused"), "{logs}");
    let listed = Relay::start(
        &[
            "--www",
            www.to_str().unwrap(),
            "--allowed-origin",
            "https://evil.example",
        ],
        &[],
    )
    .await;
    assert_eq!(upgrade(listed.addr, "/?source=c", &[foreign]).await.0, 101);
    let own = ("origin", format!("http://{}", listed.addr));
    assert_eq!(
        upgrade(listed.addr, "/?source=d", &[own]).await.0,
        4403,
        "the list only"
    );
}

#[tokio::test]
async fn what_a_client_sends_is_echoed_and_logged_cut_short() {
    let relay = Relay::start(
        &[
            "--log-format",
            "json",
            "--allowed-origin",
            "https://app.example",
        ],
        &[],
    )
    .await;
    let addr = relay.addr;
    // A 20 KB Origin header: refused, and neither the answer nor the log line carries it.
    let origin = format!("https://{}.example", "o".repeat(20_000));
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /?source=a HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Origin: {origin}\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    // Accepted and closed at once with 4403 and the reason (a browser reads that).
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.starts_with("HTTP/1.1 101"),
        "{}",
        &text[..100.min(text.len())]
    );
    // The first frame after the head: 0x88 (a close), its length, the code.
    let close = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .and_then(|head| answer.get(head + 4..head + 8))
        .filter(|frame| frame[0] == 0x88)
        .map(|frame| u16::from_be_bytes([frame[2], frame[3]]));
    assert_eq!(close, Some(4403), "{text}");
    assert!(
        answer.len() < 1000,
        "the answer echoes {} bytes",
        answer.len()
    );
    // An unknown target of 500 KB: the error names it in 64 characters.
    let (mut alice, _) = common::Client::session(addr, "alice", "alice-session-1", 0).await;
    let to = "t".repeat(500_000);
    alice
        .send(&format!(r#"{{"type":"x","id":1,"to":"{to}","payload":1}}"#))
        .await;
    let error = alice.recv_app().await;
    assert_eq!(error["code"], "unknown_target");
    assert!(
        error.to_string().len() < 300,
        "{} bytes",
        error.to_string().len()
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let longest = relay.logs().iter().map(String::len).max().unwrap_or(0);
    assert!(longest < 1000, "a log line of {longest} bytes");
}

#[tokio::test]
async fn invalid_input_is_logged_at_debug_and_rate_limited() {
    let relay = Relay::start(
        &[
            "--log-format",
            "json",
            "--log-level",
            "debug",
            "--rate-limit",
            "0",
        ],
        &[],
    )
    .await;
    let mut flood = common::Client::bare(relay.addr, "flood").await;
    for _ in 0..300 {
        flood.send("not json").await;
    }
    for _ in 0..300 {
        assert_eq!(flood.recv().await["code"], "invalid_json");
    }
    let invalid_input = |relay: &Relay| -> Vec<Value> {
        relay
            .logs()
            .iter()
            .filter_map(|line| serde_json::from_str(line).ok())
            .filter(|entry: &Value| entry["fields"]["message"] == "invalid input")
            .collect()
    };
    // The relay's stderr is read by a task of its own: give it time to catch up.
    let deadline = Instant::now() + WAIT;
    while invalid_input(&relay).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let lines = invalid_input(&relay);
    assert!(
        !lines.is_empty() && lines.len() <= 25,
        "{} lines",
        lines.len()
    );
    assert!(lines.iter().all(|entry| entry["level"] == "DEBUG"));
    let (mut sink, _stream) = flood.ws.split();
    let _ = sink.send(Message::Close(None)).await;
}

#[tokio::test]
async fn announces_joins_and_leaves_and_lists_who_is_online() {
    let relay = Relay::start(&[], &[]).await;
    let (mut alice, _) = Client::session(relay.addr, "alice", "alice-session-1", 0).await;
    let mut bob = Client::bare(relay.addr, "bob").await;
    // Changes are coalesced per 100 ms: bob's arrival may come with alice's, or after it.
    let joined = alice.recv_app().await;
    assert_eq!(joined["type"], "relay:presence");
    assert!(joined.get("source").is_none(), "sent by the server itself");
    let mut arrivals = joined["payload"]["joined"].as_array().unwrap().clone();
    if !arrivals.contains(&json!("bob")) {
        assert_eq!(arrivals, [json!("alice")]);
        arrivals = alice.recv_app().await["payload"]["joined"]
            .as_array()
            .unwrap()
            .clone();
    }
    assert_eq!(arrivals.last(), Some(&json!("bob")));

    alice.send(r#"{"type":"relay:clients","id":1}"#).await;
    let list = alice.recv_app().await;
    assert_eq!(list["re"], 1, "{list}");
    assert_eq!(list["payload"], json!(["alice", "bob"]));

    bob.ws.close(None).await.unwrap();
    let left = alice.recv_app().await;
    assert_eq!(left["payload"], json!({"joined": [], "left": ["bob"]}));
    assert!(relay.terminate().await.1);
}

#[tokio::test]
async fn a_node_ws_client_chats_through_the_relay() {
    let relay = Relay::start(&[], &[]).await;
    let url = format!("ws://{}", relay.addr);
    let (output, ok) = node("chat.mjs", &[&url]).await;
    assert!(ok, "node failed: {output}");
    assert!(output.contains("node chat ok"), "{output}");
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let server = WebSocketServer::builder(config())
        .on("add", |m: Incoming<(i64, i64)>| async move {
            Some(m.payload.0 + m.payload.1)
        })
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = server.local_addr();
    assert_eq!(get(addr, "/healthz").await.0, 200);
    assert_eq!(get(addr, "/readyz").await.0, 200);
    let (mut alice, _) = Client::session(addr, "alice", "alice-session-1", 0).await;
    alice.send(r#"{"type":"add","id":1,"payload":[2,3]}"#).await;
    assert_eq!(alice.recv_app().await["payload"], 5);
    alice.send("not json").await;
    assert_eq!(alice.recv_app().await["code"], "invalid_json");
    let (status, head, text) = get(addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(head.contains("openmetrics-text"), "{head}");
    for (name, at_least) in [
        ("wsrelay_connections ", 1.0),
        ("wsrelay_connections_opened_total", 1.0),
        ("wsrelay_sessions_active", 1.0),
        ("wsrelay_sessions_opened_total", 1.0),
        ("wsrelay_messages_received_total", 1.0),
        ("wsrelay_messages_sent_total", 2.0),
        ("wsrelay_received_bytes_total", 20.0),
        ("wsrelay_sent_bytes_total", 20.0),
        ("wsrelay_acks_sent_total", 1.0),
        ("wsrelay_errors_total{code=\"invalid_json\"}", 1.0),
        ("wsrelay_invalid_frames_total", 1.0),
        ("wsrelay_handler_duration_seconds_count", 1.0),
    ] {
        assert!(metric(&text, name) >= at_least, "{name} in\n{text}");
    }
    drop(alice);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let text = get(addr, "/metrics").await.2;
    assert!(
        metric(&text, "wsrelay_connections_closed_total") >= 1.0,
        "{text}"
    );
    // The statistics of the API are the same counters.
    let stats = server.stats();
    let closed = "wsrelay_disconnects_total{reason=\"closed\"}";
    assert_eq!(metric(&text, closed), 1.0, "{text}");
    let invalid = metric(&text, "wsrelay_invalid_frames_total");
    assert_eq!(invalid, stats.invalid_frames as f64, "{text}");
    let opened = metric(&text, "wsrelay_connections_opened_total");
    assert_eq!(opened, stats.accepted as f64, "{text}");
}

#[tokio::test]
async fn endpoints_and_a_prompt_shutdown() {
    let relay = Relay::start(&[], &[]).await;
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(common::http_get(relay.addr, path).await.0, 200, "{path}");
    }
    let (took, ok) = relay.terminate().await;
    assert!(ok && took < Duration::from_secs(2), "exit took {took:?}");
}

#[tokio::test]
async fn a_sigterm_right_after_the_listening_line_is_a_graceful_shutdown() {
    // A supervisor may stop the relay as soon as it said where it listens: the signal must
    // be listened for by then (it was not, and SIGTERM's default action killed the process
    // in most of these runs).
    for run in 0..10 {
        let relay = Relay::start(&[], &[]).await;
        let (_, ok) = relay.terminate().await;
        assert!(ok, "run {run}: killed rather than shut down");
    }
}
