//! What the server's tests share: a plain tokio-tungstenite client (not the wsrelay client) to
//! pin the wire behaviour, plain HTTP requests, the relay binary as a process; and, below,
//! certificates, the chaos proxy and the cluster's processes.

#![allow(dead_code, clippy::unwrap_used)]

pub mod certs;
pub mod chaos;
pub mod cluster;

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use wsrelay_server::{DisconnectReason, ServerBuilder, ServerConfig, WebSocketServer};

/// Upper bound for any single wait: a test that hangs fails instead.
pub const WAIT: Duration = Duration::from_secs(5);

/// Settings for tests: short close waits so endings are quick.
pub fn config() -> ServerConfig {
    ServerConfig {
        close_timeout: Duration::from_millis(300),
        shutdown_timeout: Duration::from_secs(2),
        ..ServerConfig::default()
    }
}

/// Disconnections, as reported by the server's hook.
pub type Disconnects = mpsc::UnboundedReceiver<(String, DisconnectReason)>;

/// Adds a disconnect hook that reports to the returned channel.
pub fn watch_disconnects(builder: ServerBuilder) -> (ServerBuilder, Disconnects) {
    let (tx, rx) = mpsc::unbounded_channel();
    let builder = builder.on_disconnect(move |info, reason| {
        let _ = tx.send((info.source.clone(), reason.clone()));
    });
    (builder, rx)
}

/// Waits for the disconnection of `source`, returning its reason.
pub async fn disconnected(events: &mut Disconnects, source: &str) -> DisconnectReason {
    loop {
        let event = tokio::time::timeout(WAIT, events.recv()).await;
        let (who, reason) = event
            .expect("no disconnect in time")
            .expect("hook channel open");
        if who == source {
            return reason;
        }
    }
}

/// Proves nothing else was queued for `client`: the marker sent now is the next frame.
pub async fn nothing_before_marker(server: &WebSocketServer, client: &mut Client, source: &str) {
    server
        .send_to(source, "marker", &serde_json::json!(null))
        .await
        .unwrap();
    let next = client.recv_app().await;
    assert_eq!(next["type"], "marker", "unexpected frame {next}");
}

pub async fn start(config: ServerConfig) -> WebSocketServer {
    WebSocketServer::bind("127.0.0.1:0", config)
        .await
        .expect("bind port 0")
}

pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Client {
    /// Opens a WebSocket to `path_and_query` (e.g. `/?source=a`).
    pub async fn open(addr: SocketAddr, path_and_query: &str) -> Client {
        let url = format!("ws://{addr}{path_and_query}");
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("connect");
        Client { ws }
    }

    /// A bare client, registered: it sent `~ping` and got `~pong` back.
    pub async fn bare(addr: SocketAddr, source: &str) -> Client {
        let mut client = Client::open(addr, &format!("/?source={source}")).await;
        client.send(r#"{"type":"~ping"}"#).await;
        assert_eq!(client.recv().await["type"], "~pong");
        client
    }

    /// A wsrelay client opening its first session: sends a hello and returns the welcome.
    pub async fn session(addr: SocketAddr, source: &str, token: &str, ack: u64) -> (Client, Value) {
        Client::resume(addr, source, token, ack, None).await
    }

    /// A wsrelay client coming back: its hello names the session instance (`sid`) of the last
    /// welcome it got.
    pub async fn resume(
        addr: SocketAddr,
        source: &str,
        token: &str,
        ack: u64,
        sid: Option<&Value>,
    ) -> (Client, Value) {
        let mut client = Client::open(addr, &format!("/?source={source}&v=1")).await;
        let sid = sid.map_or(String::new(), |sid| format!(r#","sid":{sid}"#));
        client
            .send(&format!(
                r#"{{"type":"~hello","v":1,"session":"{token}","ack":{ack}{sid}}}"#
            ))
            .await;
        let welcome = client.recv().await;
        assert_eq!(welcome["type"], "~welcome", "{welcome}");
        (client, welcome)
    }

    pub async fn send(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.expect("send");
    }

    /// Sends a text frame whose payload is not UTF-8 (a raw frame: the API won't build one).
    pub async fn send_invalid_utf8(&mut self) {
        let frame = Frame::message(vec![b'{', 0xff, 0xfe, b'}'], OpCode::Data(Data::Text), true);
        self.ws.send(Message::Frame(frame)).await.expect("send");
    }

    /// The next text frame as JSON (WebSocket pings and pongs skipped).
    pub async fn recv(&mut self) -> Value {
        loop {
            let next = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("no frame in time");
            match next {
                Some(Ok(Message::Text(text))) => {
                    return serde_json::from_str(&text).expect("server frames are JSON")
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// The next frame that is not an `~ack`.
    pub async fn recv_app(&mut self) -> Value {
        loop {
            let frame = self.recv().await;
            if frame["type"] != "~ack" {
                return frame;
            }
        }
    }

    /// Reads `~ack` frames until one acknowledges `n`.
    pub async fn acked(&mut self, n: u64) {
        loop {
            let frame = self.recv().await;
            assert_eq!(frame["type"], "~ack", "expected an ack, got {frame}");
            if frame["ack"] == n {
                return;
            }
        }
    }

    /// Reads until the connection ends; returns the close code, if the server sent one.
    /// Text frames still in flight are returned too.
    pub async fn closed(&mut self) -> (Option<u16>, Vec<Value>) {
        let mut texts = Vec::new();
        loop {
            let next = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("no close in time");
            match next {
                Some(Ok(Message::Close(frame))) => {
                    // Polling on sends the close reply and sees the end of the stream.
                    let _ = tokio::time::timeout(WAIT, self.ws.next()).await;
                    return (frame.map(|f| f.code.into()), texts);
                }
                Some(Ok(Message::Text(text))) => {
                    texts.push(serde_json::from_str(&text).expect("JSON"))
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return (None, texts),
            }
        }
    }
}

/// A plain HTTP/1.1 request on the relay: the status (0 when none), the head and the body.
pub async fn http(addr: SocketAddr, request: &str) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut response))
        .await
        .unwrap()
        .unwrap();
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_owned(), body.to_owned())
}

/// A plain HTTP/1.1 `GET path` on the relay: the status (0 when none), the head and the body.
pub async fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    http(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    )
    .await
}

/// A plain HTTP/1.1 `GET path` on the relay: the status (0 when none) and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let (status, _, body) = get(addr, path).await;
    (status, body)
}

/// The value of the first sample of `name` in a metrics text.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|line| line.starts_with(name) && !line.starts_with('#'))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

/// The relay binary the tests start: cargo's build of it for the tests, or the one
/// `WSRELAY_SERVER_BIN` names (to measure another build, e.g. `target/release/wsrelay-server`).
pub fn relay_program() -> std::ffi::OsString {
    std::env::var_os("WSRELAY_SERVER_BIN")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_wsrelay-server").into())
}

/// Starts the relay binary with `args` (its stderr goes to the test's; `RUST_LOG`, else
/// `warn`) and waits up to `within` for the line announcing its address.
pub async fn spawn_relay(args: &[&str], within: Duration) -> (tokio::process::Child, SocketAddr) {
    spawn_relay_with(args, within, std::process::Stdio::inherit(), "warn").await
}

/// Starts the relay binary with `args`, its stderr (the log) to `stderr` at `level` (a
/// `RUST_LOG` filter; the environment's `RUST_LOG` wins), and waits up to `within` for the
/// line announcing its address.
pub async fn spawn_relay_with(
    args: &[&str],
    within: Duration,
    stderr: std::process::Stdio,
    level: &str,
) -> (tokio::process::Child, SocketAddr) {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut child = tokio::process::Command::new(relay_program())
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(stderr)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| level.into()),
        )
        .kill_on_drop(true)
        .spawn()
        .expect("start wsrelay-server");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(within, lines.next_line())
        .await
        .expect("announced in time")
        .expect("stdout readable")
        .expect("one line");
    let addr = line
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .expect("HOST:PORT");
    (child, addr)
}

/// How the relay answers a WebSocket upgrade `request`: the HTTP status when it refuses it;
/// for one it accepts (101), the close code when it closes the connection at once (a refusal a
/// browser can read: 4401, 4403), else 101 and the open connection.
pub async fn upgrade_outcome(
    request: tokio_tungstenite::tungstenite::handshake::client::Request,
) -> (u16, Option<Client>) {
    match tokio_tungstenite::connect_async(request).await {
        Ok((mut ws, _)) => {
            // An accepted connection says nothing first; a refusal closes at once.
            match tokio::time::timeout(Duration::from_millis(300), ws.next()).await {
                Ok(Some(Ok(Message::Close(Some(frame))))) => (frame.code.into(), None),
                Ok(other) => panic!("unexpected first frame {other:?}"),
                Err(_) => (101, Some(Client { ws })),
            }
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            (response.status().as_u16(), None)
        }
        Err(other) => panic!("unexpected error {other}"),
    }
}

/// The HTTP status of an upgrade attempt to `path_and_query` (101 when it opened; a refusal's
/// close code when it was accepted and closed at once), with extra request headers.
pub async fn upgrade_status(
    addr: SocketAddr,
    path_and_query: &str,
    headers: &[(&str, &str)],
) -> u16 {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::http::HeaderName;
    let mut request = format!("ws://{addr}{path_and_query}")
        .into_client_request()
        .unwrap();
    for (name, value) in headers {
        let name: HeaderName = name.parse().unwrap();
        request.headers_mut().insert(name, value.parse().unwrap());
    }
    upgrade_outcome(request).await.0
}

/// A raw WebSocket client, the handshake written by hand (no `v`: the relay takes it for a
/// bare client): nothing of the client stays allocated between frames (the memory tests count
/// the heap), and its frames are the test's own.
pub async fn raw_client(addr: SocketAddr, source: &str) -> TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /?source={source} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\n\
         Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    stream
}
