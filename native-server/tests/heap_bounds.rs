//! What connections cost in memory after large frames, and what a client that never reads its
//! answers costs, measured with a counting allocator: this test binary's live heap, server and
//! raw clients together (the clients build each frame, write it and drop it, so what stays is
//! the server's).

#![allow(clippy::unwrap_used)]

mod common;

use std::alloc::System;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use stats_alloc::{StatsAlloc, INSTRUMENTED_SYSTEM};
use tokio::io::AsyncWriteExt;
use wsrelay_server::{Incoming, ServerConfig, WebSocketServer};

/// The system allocator, counting what is allocated and freed.
#[global_allocator]
static ALLOCATOR: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// The tests of this file measure the one heap of the process: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Bytes allocated now.
fn live() -> usize {
    // A reallocation counts its growth as allocated, its shrinking as deallocated.
    let stats = ALLOCATOR.stats();
    stats
        .bytes_allocated
        .saturating_sub(stats.bytes_deallocated)
}

/// One masked text frame (mask 0: the payload goes as is).
fn frame(text: &str) -> Vec<u8> {
    let mut out = vec![0x81, 0x80 | 127];
    out.extend_from_slice(&(text.len() as u64).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(text.as_bytes());
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_do_not_keep_the_buffer_of_their_largest_frame() {
    let _serial = SERIAL.lock().await;
    let consumed = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&consumed);
    let server = WebSocketServer::builder(ServerConfig::default())
        .on("sink", move |_: Incoming<serde_json::Value>| {
            count.fetch_add(1, Ordering::SeqCst);
            async {}
        })
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = server.local_addr();
    let mut clients = Vec::new();
    for n in 0..20 {
        clients.push(common::raw_client(addr, &format!("big-{n}")).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = live();
    // 20 clients send one frame of 900 KiB each (under the 1 MiB limit), then stay, idle.
    for client in &mut clients {
        let text = format!(r#"{{"type":"sink","payload":"{}"}}"#, "a".repeat(900 << 10));
        client.write_all(&frame(&text)).await.unwrap();
    }
    while consumed.load(Ordering::SeqCst) < 20 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A small frame each: the read after a large one is when its buffer can go.
    for client in &mut clients {
        client
            .write_all(&frame(r#"{"type":"sink","payload":1}"#))
            .await
            .unwrap();
    }
    while consumed.load(Ordering::SeqCst) < 40 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = live();
    let grown = after.saturating_sub(before);
    println!("live heap: {before} B before, {after} B after (+{grown} B)");
    // Keeping each connection's largest buffer would be 20 x 900 KiB = 18 MiB.
    drop(clients);
    tokio::time::sleep(Duration::from_millis(500)).await;
    println!("after the clients left: {} B", live());
    assert!(
        grown < 2 << 20,
        "connections kept {grown} B after their large frames"
    );
    server.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_asks_for_the_list_and_never_reads_costs_a_bounded_amount() {
    let _serial = SERIAL.lock().await;
    let server = WebSocketServer::bind(
        "127.0.0.1:0",
        ServerConfig {
            presence: true,
            ..ServerConfig::default()
        },
    )
    .await
    .unwrap();
    let addr = server.local_addr();
    // 1000 sources online, with long names: a full list is about 100 KB.
    let mut crowd = Vec::new();
    for n in 0..1000 {
        crowd.push(common::raw_client(addr, &format!("{n:04}-{}", "x".repeat(90))).await);
    }
    while server.clients().await.unwrap().len() < 1000 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The presence announcements of the crowd settle before the measure.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut asker = common::raw_client(addr, "asker").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = live();
    // 250 requests, and never a byte read: the answers can only pile up in the relay.
    for id in 1..=250 {
        let request = format!(r#"{{"type":"relay:clients","id":{id}}}"#);
        asker.write_all(&frame(&request)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let grown = live().saturating_sub(before);
    println!("250 unread relay:clients answers with 1000 sources online: +{grown} B");
    // The answers wait by bytes: about the flow-control window (1 MiB) plus what the socket
    // and its write buffer hold, not 250 lists of 100 KB (25 MB).
    assert!(
        grown < 6 << 20,
        "the relay holds {grown} B for one non-reader"
    );
    drop(asker);
    drop(crowd);
    server.close().await;
}
