//! The servers under test, each run as its own process on a single-threaded tokio runtime
//! (`wsrelay-bench serve KIND`): wsrelay-server itself and the Rust peers (raw TCP, minimal
//! tokio-tungstenite echo server and hub). Each prints `listening on http://HOST:PORT` once
//! bound and exits when its stdin closes, so that a dying harness leaves nothing behind.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use wsrelay_server::{Incoming, ServerConfig, WebSocketServer};

/// `serve KIND [--ping-ms N] [--read-buf N] [--mode broadcast|pairs] [--redis URL]
/// [--node-id NAME] [--workers N]` (the last three: wsrelay only; `--workers` above 1 runs it
/// on a multi-thread runtime).
pub fn serve(args: &[String]) -> Result<(), String> {
    let kind = args.first().ok_or("serve: which server?")?.clone();
    let mut ping_ms: Option<u64> = None;
    let mut read_buf: Option<usize> = None;
    let mut pairs = false;
    let mut cluster = Cluster::default();
    let mut workers = 1;
    let mut rest = args[1..].iter();
    while let Some(flag) = rest.next() {
        let value = rest.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--ping-ms" => ping_ms = Some(value.parse().map_err(|e| format!("{flag}: {e}"))?),
            "--read-buf" => read_buf = Some(value.parse().map_err(|e| format!("{flag}: {e}"))?),
            "--mode" => pairs = value == "pairs",
            "--redis" => cluster.redis = Some(value.clone()),
            "--node-id" => cluster.node_id = Some(value.clone()),
            "--workers" => workers = value.parse().map_err(|e| format!("{flag}: {e}"))?,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    // Exit when the harness goes away (its end of our stdin closes).
    std::thread::spawn(|| {
        let mut sink = [0u8; 64];
        while let Ok(n) = io::stdin().read(&mut sink) {
            if n == 0 {
                break;
            }
        }
        std::process::exit(0);
    });
    if kind == "wsrelay" && workers > 1 {
        return tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
            .map_err(|e| format!("runtime: {e}"))?
            .block_on(wsrelay(ping_ms, read_buf, cluster));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        match kind.as_str() {
            "wsrelay" => wsrelay(ping_ms, read_buf, cluster).await,
            "raw-echo" => raw_echo().await,
            "raw-hub" => raw_hub(pairs).await,
            "tt-echo" => tt_echo(read_buf).await,
            "tt-hub" => tt_hub(read_buf).await,
            other => Err(format!("unknown server {other}")),
        }
    })
}

fn announce(addr: SocketAddr) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "listening on http://{addr}");
    let _ = out.flush();
}

async fn bind() -> Result<TcpListener, String> {
    TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("bind: {e}"))
}

/// The Redis engine's settings of a wsrelay relay (none: sessions in memory).
#[derive(Debug, Default)]
struct Cluster {
    redis: Option<String>,
    node_id: Option<String>,
}

/// wsrelay-server with its defaults, an `echo` handler answering with the payload and a `sink`
/// handler answering nothing; every other type is relayed. Only the connection limit is raised
/// (the idle scenarios open 10 000 connections), and the cluster rows name a Redis.
async fn wsrelay(
    ping_ms: Option<u64>,
    read_buf: Option<usize>,
    cluster: Cluster,
) -> Result<(), String> {
    let mut config = ServerConfig {
        max_connections: 50_000,
        redis: cluster.redis,
        node_id: cluster.node_id,
        ..ServerConfig::default()
    };
    if let Some(ms) = ping_ms {
        config.ping_interval = Duration::from_millis(ms);
    }
    if let Some(size) = read_buf {
        config.read_buffer_size = size;
    }
    let server = WebSocketServer::builder(config)
        .on("echo", |message: Incoming<String>| async move {
            Some(message.payload)
        })
        .on("sink", |_: Incoming<serde::de::IgnoredAny>| async {})
        .bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("bind: {e}"))?;
    announce(server.local_addr());
    std::future::pending::<()>().await;
    Ok(())
}

/// Reads the raw peer's 4-byte preamble (the connection's index).
async fn preamble(stream: &mut TcpStream) -> io::Result<u32> {
    let mut index = [0u8; 4];
    stream.read_exact(&mut index).await?;
    Ok(u32::from_le_bytes(index))
}

/// R, echo: every byte read is written back (one read, one write).
async fn raw_echo() -> Result<(), String> {
    let listener = bind().await?;
    announce(listener.local_addr().map_err(|e| e.to_string())?);
    loop {
        let (mut stream, _) = listener.accept().await.map_err(|e| e.to_string())?;
        tokio::task::spawn_local(async move {
            let _ = stream.set_nodelay(true);
            if preamble(&mut stream).await.is_err() {
                return;
            }
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if stream.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
}

/// A raw hub connection's outbound bytes, written by its own task (one write per wake-up).
#[derive(Default)]
struct RawOut {
    pending: RefCell<Vec<u8>>,
    ready: Notify,
}

/// The length of the complete frames at the start of `buf`.
fn complete_frames(buf: &[u8]) -> usize {
    let mut at = 0;
    loop {
        let rest = &buf[at..];
        if rest.len() < 2 {
            return at;
        }
        let mut len = usize::from(rest[1] & 0x7f);
        let mut off = 2;
        if len == 126 {
            if rest.len() < 4 {
                return at;
            }
            len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
            off = 4;
        } else if len == 127 {
            if rest.len() < 10 {
                return at;
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&rest[2..10]);
            len = usize::try_from(u64::from_be_bytes(b)).unwrap_or(usize::MAX / 2);
            off = 10;
        }
        if rest[1] & 0x80 != 0 {
            off += 4;
        }
        if rest.len() < off + len {
            return at;
        }
        at += off + len;
    }
}

/// R, fan-out: complete frames are copied verbatim to every other connection (broadcast) or
/// to the partner connection, index ^ 1 (pairs). No WebSocket processing at all: the ceiling.
async fn raw_hub(pairs: bool) -> Result<(), String> {
    let listener = bind().await?;
    announce(listener.local_addr().map_err(|e| e.to_string())?);
    let registry: Rc<RefCell<HashMap<u32, Rc<RawOut>>>> = Rc::default();
    loop {
        let (mut stream, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let registry = Rc::clone(&registry);
        tokio::task::spawn_local(async move {
            let _ = stream.set_nodelay(true);
            let Ok(index) = preamble(&mut stream).await else {
                return;
            };
            let out = Rc::new(RawOut::default());
            registry.borrow_mut().insert(index, Rc::clone(&out));
            let (mut read, mut write) = stream.into_split();
            let writer = tokio::task::spawn_local({
                let out = Rc::clone(&out);
                async move {
                    loop {
                        out.ready.notified().await;
                        let data = std::mem::take(&mut *out.pending.borrow_mut());
                        if !data.is_empty() && write.write_all(&data).await.is_err() {
                            return;
                        }
                    }
                }
            });
            let mut buf = vec![0u8; 64 * 1024];
            let mut have = 0;
            loop {
                match read.read(&mut buf[have..]).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => have += n,
                }
                let done = complete_frames(&buf[..have]);
                if done > 0 {
                    let frames = &buf[..done];
                    let registry = registry.borrow();
                    if pairs {
                        if let Some(peer) = registry.get(&(index ^ 1)) {
                            peer.pending.borrow_mut().extend_from_slice(frames);
                            peer.ready.notify_one();
                        }
                    } else {
                        for (other, peer) in registry.iter() {
                            if *other != index {
                                peer.pending.borrow_mut().extend_from_slice(frames);
                                peer.ready.notify_one();
                            }
                        }
                    }
                    buf.copy_within(done..have, 0);
                    have -= done;
                }
                if have == buf.len() {
                    let len = buf.len() * 2;
                    buf.resize(len, 0);
                }
            }
            registry.borrow_mut().remove(&index);
            writer.abort();
        });
    }
}

fn tt_config(read_buf: Option<usize>) -> WebSocketConfig {
    let config = WebSocketConfig::default();
    match read_buf {
        Some(size) => config.read_buffer_size(size),
        None => config,
    }
}

/// T, echo: the minimal tokio-tungstenite echo loop (`send` = feed + flush per message).
async fn tt_echo(read_buf: Option<usize>) -> Result<(), String> {
    let listener = bind().await?;
    announce(listener.local_addr().map_err(|e| e.to_string())?);
    let config = tt_config(read_buf);
    loop {
        let (stream, _) = listener.accept().await.map_err(|e| e.to_string())?;
        tokio::task::spawn_local(async move {
            let _ = stream.set_nodelay(true);
            let Ok(mut ws) =
                tokio_tungstenite::accept_async_with_config(stream, Some(config)).await
            else {
                return;
            };
            while let Some(Ok(message)) = ws.next().await {
                if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err() {
                    return;
                }
            }
        });
    }
}

type Registry = Arc<Mutex<HashMap<String, mpsc::UnboundedSender<Message>>>>;

/// The `"to":"X"` target of a frame, if any.
fn target(text: &str) -> Option<&str> {
    let start = text.find("\"to\":\"")? + 6;
    let len = text[start..].find('"')?;
    Some(&text[start..start + len])
}

/// T, hub: a queue per connection; the writer feeds every queued frame, then flushes once.
/// A frame naming `to` goes to that source only, any other to every other connection.
async fn tt_hub(read_buf: Option<usize>) -> Result<(), String> {
    let listener = bind().await?;
    announce(listener.local_addr().map_err(|e| e.to_string())?);
    let config = tt_config(read_buf);
    let registry: Registry = Arc::default();
    loop {
        let (stream, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let registry = Arc::clone(&registry);
        tokio::task::spawn_local(async move {
            let _ = stream.set_nodelay(true);
            let mut source = String::new();
            // The error type is tungstenite's (an HTTP response); this callback never fails.
            #[allow(clippy::result_large_err)]
            let callback = |request: &Request, response: Response| {
                source = request
                    .uri()
                    .query()
                    .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("source=")))
                    .unwrap_or_default()
                    .to_owned();
                Ok(response)
            };
            let Ok(ws) =
                tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config))
                    .await
            else {
                return;
            };
            let (mut sink, mut stream) = ws.split();
            let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
            registry
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(source.clone(), tx);
            let writer = tokio::task::spawn_local(async move {
                while let Some(message) = rx.recv().await {
                    if sink.feed(message).await.is_err() {
                        return;
                    }
                    while let Ok(message) = rx.try_recv() {
                        if sink.feed(message).await.is_err() {
                            return;
                        }
                    }
                    if sink.flush().await.is_err() {
                        return;
                    }
                }
            });
            while let Some(Ok(message)) = stream.next().await {
                let Message::Text(text) = &message else {
                    continue;
                };
                let clients = registry.lock().unwrap_or_else(PoisonError::into_inner);
                match target(text.as_str()) {
                    Some(to) => {
                        if let Some(tx) = clients.get(to) {
                            let _ = tx.send(message.clone());
                        }
                    }
                    None => {
                        for (other, tx) in clients.iter() {
                            if *other != source {
                                let _ = tx.send(message.clone());
                            }
                        }
                    }
                }
            }
            registry
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&source);
            writer.abort();
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_targets_and_frame_boundaries() {
        assert_eq!(
            target(r#"{"type":"dm","id":1,"to":"c7","payload":"x"}"#),
            Some("c7")
        );
        assert_eq!(target(r#"{"type":"bc","payload":"x"}"#), None);
        let a = crate::wire::Template::new(b"hello", [1, 2, 3, 4]).bytes;
        let mut both = a.clone();
        both.extend_from_slice(&a);
        assert_eq!(complete_frames(&both), both.len());
        assert_eq!(complete_frames(&both[..both.len() - 1]), a.len());
    }
}
