//! Measurements of a running relay: the memory of idle connections with verified identities,
//! and the accuracy of the rate limit.
//!
//! ```sh
//! # memory of N idle connections with verified identities (a session each); the relay runs
//! # with WSRELAY_AUTH_SECRET=SECRET and its pid is PID:
//! cargo run --release -p wsrelay-server --example measure -- idle 127.0.0.1:8080 PID 10000 SECRET
//! # rate-limit accuracy: a client sends SEND messages per second for SECONDS to a bystander,
//! # against a relay started with --rate-limit RATE --rate-burst BURST:
//! cargo run --release -p wsrelay-server --example measure -- rate 127.0.0.1:8080 RATE BURST SEND SECONDS
//! ```
//!
//! Clients are raw sockets with the handshake and masked frames written by hand, so that they
//! cost the measuring process little and the relay exactly what a browser would.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, EncodingKey, Header};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn masked_text(text: &str) -> Vec<u8> {
    let mut out = vec![0x81];
    match text.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n < 65536 => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&[0, 0, 0, 0]); // mask 0: the payload goes as is
    out.extend_from_slice(text.as_bytes());
    out
}

/// Opens a WebSocket to `path_and_query` and reads the 101.
async fn open(addr: SocketAddr, path_and_query: &str) -> std::io::Result<TcpStream> {
    let mut stream = TcpStream::connect(addr).await?;
    let request = format!(
        "GET {path_and_query} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\n\
         Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await?;
        head.push(byte[0]);
    }
    if !head.starts_with(b"HTTP/1.1 101") {
        return Err(std::io::Error::other(
            String::from_utf8_lossy(&head).into_owned(),
        ));
    }
    Ok(stream)
}

/// Reads one server frame (unmasked) and returns its payload.
async fn read_frame(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = [0u8; 2];
    stream.read_exact(&mut head).await?;
    let len = match head[1] & 0x7f {
        126 => {
            let mut n = [0u8; 2];
            stream.read_exact(&mut n).await?;
            u64::from(u16::from_be_bytes(n))
        }
        127 => {
            let mut n = [0u8; 8];
            stream.read_exact(&mut n).await?;
            u64::from_be_bytes(n)
        }
        n => u64::from(n),
    };
    let mut payload = vec![0u8; usize::try_from(len).unwrap_or(0)];
    stream.read_exact(&mut payload).await?;
    Ok(payload)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

/// Reads a session's frames and acknowledges the reliable ones (every 32, or after a quiet
/// second), until the connection ends.
async fn listen(mut stream: TcpStream) {
    let (mut received, mut acked) = (0u64, 0u64);
    loop {
        match tokio::time::timeout(Duration::from_secs(1), read_frame(&mut stream)).await {
            Ok(Ok(frame)) => {
                let control = [
                    &b"{\"type\":\"~ack\""[..],
                    b"{\"type\":\"~pong\"",
                    b"{\"type\":\"~welcome\"",
                ]
                .iter()
                .any(|prefix| frame.starts_with(prefix));
                if !control && !frame.is_empty() {
                    received += 1;
                }
                if received - acked < 32 {
                    continue;
                }
            }
            Ok(Err(_)) => return,
            Err(_) if received == acked => continue,
            Err(_) => {}
        }
        let ack = format!(r#"{{"type":"~ack","ack":{received}}}"#);
        if stream.write_all(&masked_text(&ack)).await.is_err() {
            return;
        }
        acked = received;
    }
}

async fn idle(addr: SocketAddr, pid: u32, count: usize, secret: &str) -> Result<(), String> {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs()
        + 3600;
    let before = rss_kib(pid);
    let mut held = Vec::with_capacity(count);
    let started = Instant::now();
    for n in 0..count {
        let source = format!("idle-{n:05}");
        let claims = serde_json::json!({ "sub": source, "exp": exp });
        let token = encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .map_err(|e| e.to_string())?;
        let mut stream = open(addr, &format!("/?source={source}&token={token}&v=1"))
            .await
            .map_err(|e| format!("connection {n}: {e}"))?;
        let hello = format!(r#"{{"type":"~hello","v":1,"session":"idle-session-{n:08}","ack":0}}"#);
        stream
            .write_all(&masked_text(&hello))
            .await
            .map_err(|e| e.to_string())?;
        let welcome = read_frame(&mut stream).await.map_err(|e| e.to_string())?;
        if !welcome.starts_with(b"{\"type\":\"~welcome\"") {
            return Err(format!("no welcome: {}", String::from_utf8_lossy(&welcome)));
        }
        // Like a wsrelay client: read what comes (the relay's presence announcements) and
        // acknowledge it, at most a second later.
        held.push(tokio::spawn(listen(stream)));
    }
    // Let the presence announcements and their acknowledgements settle.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let after = rss_kib(pid);
    let per = (after.saturating_sub(before)) as f64 / count as f64;
    println!(
        "{count} idle authenticated connections (token, session) in {:.1} s: relay RSS {before} KiB -> {after} KiB, {per:.1} KiB per connection",
        started.elapsed().as_secs_f64()
    );
    for task in held {
        task.abort();
    }
    Ok(())
}

async fn rate(
    addr: SocketAddr,
    limit: u64,
    burst: u64,
    send: u64,
    seconds: u64,
) -> Result<(), String> {
    let mut bystander = open(addr, "/?source=bystander")
        .await
        .map_err(|e| e.to_string())?;
    let mut sender = open(addr, "/?source=sender&v=1")
        .await
        .map_err(|e| e.to_string())?;
    // A session of its own for every run: a resumed one would drop the ids as retransmits.
    let hello = format!(
        r#"{{"type":"~hello","v":1,"session":"rate-{}-{}","ack":0}}"#,
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |t| t.as_millis())
    );
    sender
        .write_all(&masked_text(&hello))
        .await
        .map_err(|e| e.to_string())?;
    let _welcome = read_frame(&mut sender).await.map_err(|e| e.to_string())?;
    // Count what reaches the bystander.
    let counter = tokio::spawn(async move {
        let mut got = 0u64;
        while let Ok(Ok(frame)) =
            tokio::time::timeout(Duration::from_secs(2), read_frame(&mut bystander)).await
        {
            if frame.windows(8).any(|w| w == b"\"flood\",") {
                got += 1;
            }
        }
        got
    });
    let (mut reader, mut writer) = sender.into_split();
    // Drain the sender's acks and refusals.
    let drain = tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while matches!(reader.read(&mut buf).await, Ok(n) if n > 0) {}
    });
    let period = Duration::from_secs_f64(1.0 / send as f64);
    let started = tokio::time::Instant::now();
    let total = send * seconds;
    for id in 1..=total {
        tokio::time::sleep_until(started + period * u32::try_from(id).unwrap_or(u32::MAX)).await;
        let frame = format!(r#"{{"type":"flood","id":{id},"to":"bystander","payload":{id}}}"#);
        if writer.write_all(&masked_text(&frame)).await.is_err() {
            println!("the relay closed the sender after {id} messages");
            break;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let got = counter.await.map_err(|e| e.to_string())?;
    drain.abort();
    let expected = burst as f64 + limit as f64 * elapsed;
    println!(
        "rate limit {limit}/s, burst {burst}: sent {total} at {send}/s over {elapsed:.2} s, \
         {got} passed; expected burst + rate x time = {expected:.0} ({:+.2}%)",
        (got as f64 - expected) / expected * 100.0
    );
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    let number = |i: usize| arg(i).parse::<u64>().unwrap_or(0);
    let Ok(addr) = arg(1).parse::<SocketAddr>() else {
        eprintln!(
            "usage: measure idle ADDR PID N SECRET | measure rate ADDR RATE BURST SEND SECONDS"
        );
        return ExitCode::from(2);
    };
    let result = match arg(0).as_str() {
        "idle" => idle(addr, number(2) as u32, number(3) as usize, &arg(4)).await,
        "rate" => rate(addr, number(2), number(3), number(4), number(5)).await,
        _ => Err("unknown measurement".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("measure: {error}");
            ExitCode::FAILURE
        }
    }
}
