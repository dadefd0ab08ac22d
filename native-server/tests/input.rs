//! What a client sends and what the server makes of it, on the real server over loopback:
//! invalid JSON and invalid frames answered with an error that harms nobody, binary frames,
//! invalid UTF-8 failing only that connection, oversized messages refused with `too_large` and
//! 1009 (a close, not a reset), an unsupported protocol version, messages far larger than the
//! read buffer arriving whole, identities (`source`) that must be text, and the WebSocket
//! layer's pings, fragments and close frames (RFC 6455). The frame codec's differential test
//! against tungstenite is `websocket_conformance.rs`.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{config, start, upgrade_status, Client, WAIT};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use wsrelay_server::{Incoming, ServerConfig};

#[tokio::test]
async fn invalid_input_is_answered_and_harms_nobody() {
    let server = start(config()).await;
    let addr = server.local_addr();
    let mut alice = Client::bare(addr, "alice").await;
    let mut bob = Client::bare(addr, "bob").await;

    let deep = format!(
        r#"{{"type":"x","payload":{}{}}}"#,
        "[".repeat(100),
        "]".repeat(100)
    );
    let cases = [
        ("not json", "invalid_json"),
        ("[1,2]", "invalid_frame"),
        (r#"{"payload":1}"#, "invalid_frame"),
        (r#"{"type":5}"#, "invalid_frame"),
        (r#"{"type":"a","type":"b"}"#, "invalid_frame"),
        (deep.as_str(), "invalid_json"),
        (r#"{"type":"\ud800"}"#, "invalid_frame"),
        (r#"{"type":"a","payload":tru}"#, "invalid_json"),
        (r#"{"type":"~nope"}"#, "reserved_type"),
    ];
    for (text, code) in cases {
        alice.send(text).await;
        let error = alice.recv().await;
        assert_eq!(error["type"], "~error", "{text}");
        assert_eq!(error["code"], code, "{text}: {error}");
    }
    alice
        .ws
        .send(tokio_tungstenite::tungstenite::Message::binary(vec![
            0xff, 0, 1,
        ]))
        .await
        .unwrap();
    assert_eq!(alice.recv().await["code"], "binary_frame");
    // An invalid frame that has an id is named by it.
    alice.send(r#"{"type":"~bad","id":12}"#).await;
    assert_eq!(alice.recv().await["re"], 12);

    // The connection carries on, and bob saw none of it.
    alice
        .send(r#"{"type":"chat","payload":"still here"}"#)
        .await;
    assert_eq!(bob.recv().await["payload"], "still here");
    assert_eq!(server.stats().invalid_frames, cases.len() as u64 + 2);
}

#[tokio::test]
async fn invalid_utf8_fails_only_that_connection() {
    let server = start(config()).await;
    let addr = server.local_addr();
    let mut alice = Client::bare(addr, "alice").await;
    let mut bob = Client::bare(addr, "bob").await;
    alice.send_invalid_utf8().await;
    // RFC 6455 section 8.1: invalid UTF-8 in a text frame fails the connection (1007),
    // after an error frame saying why.
    let (code, texts) = alice.closed().await;
    assert_eq!(code, Some(1007));
    assert_eq!(texts[0]["code"], "invalid_json");
    server.broadcast("still", &1, None).await.unwrap();
    assert_eq!(bob.recv().await["type"], "still");
}

#[tokio::test]
async fn oversize_messages() {
    let server = start(ServerConfig {
        max_message_size: 1024,
        ..config()
    })
    .await;
    let addr = server.local_addr();
    let mut alice = Client::bare(addr, "alice").await;
    let mut bob = Client::bare(addr, "bob").await;
    alice.send(r#"{"type":"chat","payload":"small"}"#).await;
    assert_eq!(bob.recv().await["payload"], "small");

    // Over the limit: refused from the header, told why, closed with 1009.
    for size in [1500, 5000] {
        let mut alice = Client::bare(addr, "alice").await;
        let big = format!(r#"{{"type":"x","payload":"{}"}}"#, "a".repeat(size));
        alice.send(&big).await;
        let (code, last_words) = alice.closed().await;
        assert_eq!(code, Some(1009));
        assert_eq!(
            last_words.last().map(|e| &e["code"]),
            Some(&"too_large".into())
        );
    }
    server.broadcast("still", &1, None).await.unwrap();
    assert_eq!(bob.recv().await["type"], "still");
}

#[tokio::test]
async fn an_unsupported_version_is_refused_with_1002() {
    let server = start(config()).await;
    let mut client = Client::open(server.local_addr(), "/?source=alice").await;
    client
        .send(r#"{"type":"~hello","v":2,"session":"abcdefgh","ack":0}"#)
        .await;
    let (code, texts) = client.closed().await;
    assert_eq!(code, Some(1002));
    assert_eq!(texts[0]["code"], "unsupported_version");
}

#[tokio::test]
async fn messages_much_larger_than_the_read_buffer_arrive_whole() {
    // The default read buffer is 1 KiB: a frame of 900 KiB (under the 1 MiB limit) takes
    // hundreds of reads and must come out in one piece, through a handler and relayed.
    let server = start(config()).await;
    server.on(
        "echo",
        |msg: Incoming<String>| async move { Some(msg.payload) },
    );
    let addr = server.local_addr();
    let (mut alice, _) = Client::session(addr, "alice", "alice-session-1", 0).await;
    let mut bob = Client::bare(addr, "bob").await;
    let big: String = (0..900 * 1024)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    alice
        .send(&format!(r#"{{"type":"echo","id":1,"payload":"{big}"}}"#))
        .await;
    let echoed = alice.recv_app().await;
    assert_eq!(echoed["re"], 1);
    assert_eq!(echoed["payload"].as_str(), Some(big.as_str()));
    alice
        .send(&format!(
            r#"{{"type":"big","id":2,"to":"bob","payload":"{big}"}}"#
        ))
        .await;
    let relayed = bob.recv().await;
    assert_eq!(relayed["source"], "alice");
    assert_eq!(relayed["payload"].as_str(), Some(big.as_str()));
}

#[tokio::test]
async fn an_oversized_frame_is_refused_with_1009_and_too_large_not_a_reset() {
    let server = start(config()).await; // 1 MiB limit
    let addr = server.local_addr();
    let mut bob = Client::bare(addr, "bob").await;
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/?source=big"))
        .await
        .unwrap();
    // 20 MiB: far more than the socket buffers hold while the server stops reading.
    let huge = format!(r#"{{"type":"x","payload":"{}"}}"#, "a".repeat(20 << 20));
    // The write may fail once the server closed: what matters is what the client reads.
    let (mut sink, mut stream) = ws.split();
    let writer = tokio::spawn(async move {
        let _ = sink.send(Message::text(huge)).await;
        sink
    });
    // Read only once the server had time to answer: what a reset would destroy is gone then.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut words = None;
    let code = loop {
        match tokio::time::timeout(WAIT, stream.next())
            .await
            .expect("in time")
        {
            Some(Ok(Message::Text(text))) => {
                words = Some(serde_json::from_str::<Value>(&text).unwrap())
            }
            Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            Some(Err(error)) => panic!("the connection was reset instead of closed: {error}"),
            None => panic!("the connection ended without a close frame"),
        }
    };
    assert_eq!(code, Some(1009));
    assert_eq!(words.map(|w| w["code"].clone()), Some(json!("too_large")));
    drop(writer);
    server.broadcast("still", &1, None).await.unwrap();
    assert_eq!(bob.recv().await["type"], "still");
}

#[tokio::test]
async fn identities_are_text_and_strictly_decoded() {
    let server = start(config()).await;
    let addr = server.local_addr();
    for bad in ["%FF", "%FE", "a%00b", "%07bell", "%C2%85", "%zz", "%F", ""] {
        assert_eq!(
            upgrade_status(addr, &format!("/?source={bad}"), &[]).await,
            400,
            "source={bad}"
        );
    }
    assert_eq!(
        upgrade_status(addr, "/?source=%C3%A9t%C3%A9", &[]).await,
        101
    );
}

/// The WebSocket layer as a client sees it on the wire: a ping answered with its payload, a
/// message in fragments with a ping between them read whole, the client's close frame
/// echoed; and a frame that breaks RFC 6455 (reserved bits) closed with 1002, the other
/// clients untouched.
#[tokio::test]
async fn pings_fragments_and_close_frames_follow_rfc_6455() {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;

    let server = start(config()).await;
    let addr = server.local_addr();
    let mut bob = Client::bare(addr, "bob").await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/?source=alice"))
        .await
        .unwrap();
    ws.send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .unwrap();
    let text = r#"{"type":"chat","to":"bob","payload":"grüße in pieces"}"#.as_bytes();
    // Cut inside "ü", whose two bytes then arrive in different fragments.
    let cut = text.iter().position(|&b| b == 0xc3).unwrap() + 1;
    let (first, rest) = text.split_at(cut);
    let (middle, last) = rest.split_at(3);
    for (opcode, piece, fin) in [
        (OpCode::Data(Data::Text), first, false),
        (OpCode::Data(Data::Continue), middle, false),
        (OpCode::Data(Data::Continue), last, true),
    ] {
        ws.send(Message::Frame(Frame::message(piece.to_vec(), opcode, fin)))
            .await
            .unwrap();
        if !fin {
            ws.send(Message::Ping(b"between".to_vec().into()))
                .await
                .unwrap();
        }
    }
    let mut pongs = Vec::new();
    while pongs.len() < 3 {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("in time")
        {
            Some(Ok(Message::Pong(payload))) => pongs.push(payload.to_vec()),
            Some(Ok(_)) => {}
            other => panic!("expected pongs, read {other:?}"),
        }
    }
    assert_eq!(pongs[0], b"are you there");
    assert_eq!(pongs[1], b"between");
    let chat = bob.recv().await;
    assert_eq!(
        (chat["source"].clone(), chat["payload"].clone()),
        (json!("alice"), json!("grüße in pieces"))
    );
    ws.send(Message::Close(Some(CloseFrame {
        code: 4000.into(),
        reason: "done".into(),
    })))
    .await
    .unwrap();
    let echo = loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("in time")
        {
            Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            other => panic!("expected the close frame's echo, read {other:?}"),
        }
    };
    assert_eq!(echo, Some(4000));

    // Reserved bits set: a protocol error, closed with 1002.
    let mut raw = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /?source=carol HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    raw.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        raw.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    raw.write_all(&[0xc1, 0x80, 1, 2, 3, 4]).await.unwrap();
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(WAIT, raw.read_to_end(&mut reply)).await;
    let close = reply.windows(2).position(|w| w[0] == 0x88);
    let code = close.and_then(|at| reply.get(at + 2..at + 4));
    assert_eq!(code, Some(&1002u16.to_be_bytes()[..]), "read {reply:?}");
    server.broadcast("still", &1, None).await.unwrap();
    assert_eq!(bob.recv().await["type"], "still");
}
