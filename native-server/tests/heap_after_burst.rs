//! What operators see: the relay binary's resident memory (VmRSS of `/proc/PID/status`) goes
//! back near its idle level after a burst of broadcasts, once the clients are gone.
//!
//! `tests/heap_bounds.rs` counts the live heap of an in-process server; this one measures the real
//! process, allocator and all: memory the program freed but the allocator keeps from the
//! system counts here, as it does on the operator's graphs. It prints the figures (run with
//! `--nocapture`); `WSRELAY_SERVER_BIN=target/release/wsrelay-server` measures the release
//! build instead of the tests' debug one.

#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wsrelay::{Incoming, WebSocketClient};

/// Clients connected during the burst: one bare sender, the rest receivers.
const CLIENTS: usize = 100;
/// Receivers that are wsrelay clients (sessions, acknowledgements, mailboxes kept for a
/// resume after they close); the others are bare WebSockets.
const NATIVE: usize = 10;
/// Broadcasts in the burst.
const BURST: usize = 50_000;
/// How long after the clients left the relay is measured again.
const SETTLE: Duration = Duration::from_secs(10);
/// How far above its level before the burst the relay may stay after it.
const MARGIN_KIB: u64 = 2 << 10;
/// The most the burst may take to reach every receiver (about 5 s on two busy cores, debug
/// build or release).
const BURST_WITHIN: Duration = Duration::from_secs(40);

/// A field of `/proc/PID/status` in KiB (`VmRSS`, `RssAnon`, `RssFile`, `VmHWM`).
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().strip_suffix("kB"))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// The relay's resident memory now, as `VmRSS (anon A + file F)`, and the VmRSS figure.
fn rss(pid: u32) -> (u64, String) {
    let total = status_kib(pid, "VmRSS");
    let anon = status_kib(pid, "RssAnon");
    let file = status_kib(pid, "RssFile");
    (
        total,
        format!("{} (anon {}, file {})", mib(total), mib(anon), mib(file)),
    )
}

/// The CPU time the relay has used so far, in seconds (`utime + stime` of `/proc/PID/stat`,
/// in the kernel's USER_HZ ticks: 100 a second).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // After the command name, which is in parentheses: state, then utime is the 12th field.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// One masked frame (mask 0: the payload goes as is) of `opcode`.
fn frame_into(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    out.push(0x80 | opcode);
    match payload.len() {
        len @ 0..=125 => out.push(0x80 | len as u8),
        len @ 126..=0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(payload);
}

/// Reads the relay's frames (unmasked) until `BURST` broadcasts arrived, counting them in
/// `count`, or until `stop`; returns the stream. Only headers are parsed: the test's own CPU
/// is the relay's too.
async fn receive(
    mut stream: TcpStream,
    count: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) -> TcpStream {
    let mut buffer = Vec::with_capacity(64 << 10);
    let mut seen = 0;
    while seen < BURST && !stop.load(Ordering::Relaxed) {
        let read = tokio::time::timeout(Duration::from_millis(200), stream.read_buf(&mut buffer));
        match read.await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(_)) => {}
            Err(_) => continue,
        }
        let mut at = 0;
        loop {
            let rest = &buffer[at..];
            if rest.len() < 2 {
                break;
            }
            let (len, header) = match rest[1] & 0x7f {
                126 if rest.len() >= 4 => (u16::from_be_bytes([rest[2], rest[3]]) as usize, 4),
                127 if rest.len() >= 10 => (
                    u64::from_be_bytes(rest[2..10].try_into().unwrap()) as usize,
                    10,
                ),
                126 | 127 => break,
                len => (len as usize, 2),
            };
            if rest.len() < header + len {
                break;
            }
            if rest[0] & 0x0f == 1 && rest[header..header + len].starts_with(br#"{"type":"n","#) {
                seen += 1;
            }
            at += header + len;
        }
        buffer.drain(..at);
        count.store(seen, Ordering::Relaxed);
    }
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_gives_memory_back_after_a_burst() {
    let started = Instant::now();
    let (mut relay, addr) = common::spawn_relay(&["--port", "0"], Duration::from_secs(20)).await;
    let pid = relay.id().unwrap();
    let (_, idle_text) = rss(pid);

    // The receivers: bare ones read by `receive`, wsrelay ones count in a handler.
    let stop = Arc::new(AtomicBool::new(false));
    let mut counts = Vec::new();
    let mut readers = Vec::new();
    for n in 0..CLIENTS - 1 - NATIVE {
        let count = Arc::new(AtomicUsize::new(0));
        let stream = common::raw_client(addr, &format!("bare-{n}")).await;
        readers.push(tokio::spawn(receive(
            stream,
            Arc::clone(&count),
            Arc::clone(&stop),
        )));
        counts.push(count);
    }
    let mut natives = Vec::new();
    for n in 0..NATIVE {
        let count = Arc::new(AtomicUsize::new(0));
        let client = WebSocketClient::new(format!("ws://{addr}"), format!("native-{n}")).unwrap();
        let counted = Arc::clone(&count);
        client.on("n", move |_: Incoming<serde::de::IgnoredAny>| {
            counted.fetch_add(1, Ordering::Relaxed);
            async {}
        });
        natives.push(client);
        counts.push(count);
    }
    for client in &natives {
        // Open: its session exists before the burst.
        let deadline = Instant::now() + Duration::from_secs(10);
        while client.ready_state() != wsrelay::client::ReadyState::Open {
            assert!(
                Instant::now() < deadline,
                "a wsrelay client did not connect"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let mut sender = common::raw_client(addr, "sender").await;
    // The joins' presence announcements settle.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (before, before_text) = rss(pid);

    // The peak, sampled while the burst goes.
    let peak = Arc::new(AtomicUsize::new(0));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (Arc::clone(&peak), Arc::clone(&sampling));
        tokio::spawn(async move {
            while sampling.load(Ordering::Relaxed) {
                peak.fetch_max(status_kib(pid, "VmRSS") as usize, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let burst_started = Instant::now();
    let cpu_before = cpu_seconds(pid);
    let mut batch = Vec::new();
    for n in 0..BURST {
        frame_into(
            &mut batch,
            1,
            format!(r#"{{"type":"n","payload":{n}}}"#).as_bytes(),
        );
        if batch.len() >= 32 << 10 {
            sender.write_all(&batch).await.unwrap();
            batch.clear();
        }
    }
    sender.write_all(&batch).await.unwrap();
    loop {
        let least = counts
            .iter()
            .map(|count| count.load(Ordering::Relaxed))
            .min()
            .unwrap();
        if least >= BURST {
            break;
        }
        assert!(
            burst_started.elapsed() < BURST_WITHIN,
            "the burst did not reach every receiver in time (the slowest has {least})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let burst_took = burst_started.elapsed();
    let burst_cpu = cpu_seconds(pid) - cpu_before;
    sampling.store(false, Ordering::Relaxed);
    sampler.await.unwrap();
    let peak = peak.load(Ordering::Relaxed) as u64;

    // Every client leaves: the wsrelay ones gracefully (their sessions stay parked for the
    // grace period), the bare ones with a close frame.
    for client in &natives {
        client.close().await;
    }
    drop(natives);
    stop.store(true, Ordering::Relaxed);
    let mut close = Vec::new();
    frame_into(&mut close, 8, &1000u16.to_be_bytes());
    sender.write_all(&close).await.unwrap();
    drop(sender);
    for reader in readers {
        let mut stream = reader.await.unwrap();
        let _ = stream.write_all(&close).await;
    }
    tokio::time::sleep(SETTLE).await;
    let (after, after_text) = rss(pid);

    println!("relay RSS when started:      {idle_text}");
    println!("relay RSS before the burst:  {before_text}");
    println!("relay RSS peak during it:    {}", mib(peak));
    println!(
        "relay RSS {} s after it:     {after_text}",
        SETTLE.as_secs()
    );
    println!(
        "burst of {BURST} broadcasts to {} receivers: {:.2} s, {burst_cpu:.2} s of the relay's CPU; \
         whole test {:.1} s",
        CLIENTS - 1,
        burst_took.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    relay.kill().await.unwrap();
    assert!(
        after <= before + MARGIN_KIB,
        "the relay kept {} after the burst (before {}, after {})",
        mib(after - before),
        mib(before),
        mib(after)
    );
}
