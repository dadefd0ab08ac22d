//! The relay's WebSocket frame codec (`wsrelay_core::server::websocket`) against tungstenite,
//! the RFC 6455 implementation it replaced: the same client bytes, cut into the same random
//! pieces, must give the same messages and end the same way (at the end of the input, or with
//! the same kind of error at the same point). The Autobahn suite cannot run here (its PyPI
//! release is Python 2 code), so this differential test stands in for it, on generated
//! streams: fragmentation, control frames interleaved, close codes, UTF-8 split across
//! fragments and invalid, masks and their absence, lengths at 125/126/65535/65536, reserved
//! bits and opcodes, sizes over the limit, bits flipped anywhere.

use std::io::{self, Read, Write};

use proptest::prelude::*;
use tungstenite::protocol::{Role, WebSocket, WebSocketConfig};
use tungstenite::{Error, Message};
use wsrelay_core::server::websocket::{
    close_payload, header, Decoder, FrameError, Inbound, Opcode,
};

/// What a reader made of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<u16>),
    /// The input ended with no error.
    End,
    TooLarge,
    InvalidUtf8,
    Protocol,
}

/// Client bytes handed over in the given pieces, one per read, then the end of the stream.
struct Pieces {
    pieces: std::vec::IntoIter<Vec<u8>>,
}

impl Read for Pieces {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // A piece larger than the reader's buffer is handed over in turns.
        match self.pieces.next() {
            Some(piece) if piece.len() > buf.len() => {
                let (now, later) = piece.split_at(buf.len());
                buf.copy_from_slice(now);
                let rest: Vec<Vec<u8>> = std::iter::once(later.to_vec())
                    .chain(self.pieces.by_ref())
                    .collect();
                self.pieces = rest.into_iter();
                Ok(buf.len())
            }
            Some(piece) => {
                buf[..piece.len()].copy_from_slice(&piece);
                Ok(piece.len())
            }
            None => Ok(0),
        }
    }
}

impl Write for Pieces {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn tungstenite_reads(pieces: Vec<Vec<u8>>, limit: usize) -> Vec<Event> {
    let config = WebSocketConfig::default()
        .max_message_size(Some(limit))
        .max_frame_size(Some(limit));
    let stream = Pieces {
        pieces: pieces.into_iter(),
    };
    let mut socket = WebSocket::from_raw_socket(stream, Role::Server, Some(config));
    let mut events = Vec::new();
    loop {
        let event = match socket.read() {
            Ok(Message::Text(text)) => Event::Text(text.as_str().to_owned()),
            Ok(Message::Binary(bytes)) => Event::Binary(bytes.to_vec()),
            Ok(Message::Ping(bytes)) => Event::Ping(bytes.to_vec()),
            Ok(Message::Pong(bytes)) => Event::Pong(bytes.to_vec()),
            Ok(Message::Close(close)) => Event::Close(close.map(|close| u16::from(close.code))),
            Ok(Message::Frame(_)) => unreachable!("tungstenite reads no raw frames"),
            Err(Error::ConnectionClosed | Error::AlreadyClosed) => Event::End,
            Err(Error::Protocol(
                tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
            )) => Event::End,
            Err(Error::Capacity(_)) => Event::TooLarge,
            Err(Error::Utf8(_)) => Event::InvalidUtf8,
            Err(Error::Protocol(_)) => Event::Protocol,
            Err(other) => panic!("unexpected error from tungstenite: {other}"),
        };
        let last = !matches!(
            event,
            Event::Text(_) | Event::Binary(_) | Event::Ping(_) | Event::Pong(_) | Event::Close(_)
        );
        events.push(event);
        if last {
            return events;
        }
    }
}

/// The relay's reader, used as its socket uses it: bytes appended as they arrive, messages
/// decoded from the front, consumed bytes dropped.
fn wsrelay_reads(pieces: Vec<Vec<u8>>, limit: usize) -> Vec<Event> {
    let mut decoder = Decoder::new(limit);
    let mut input = Vec::new();
    let mut events = Vec::new();
    for piece in pieces {
        input.extend_from_slice(&piece);
        loop {
            let (used, event) = match decoder.decode(&mut input) {
                Ok((used, message)) => (used, message.map(owned)),
                Err(error) => {
                    events.push(match error {
                        FrameError::TooLarge => Event::TooLarge,
                        FrameError::InvalidUtf8 => Event::InvalidUtf8,
                        FrameError::Protocol(_) => Event::Protocol,
                    });
                    return events;
                }
            };
            input.drain(..used);
            match event {
                Some(event) => events.push(event),
                None => break,
            }
        }
    }
    events.push(Event::End);
    events
}

fn owned(message: Inbound<'_>) -> Event {
    match message {
        Inbound::Text(text) => Event::Text(text.to_owned()),
        Inbound::Binary(bytes) => Event::Binary(bytes.to_vec()),
        Inbound::Ping(bytes) => Event::Ping(bytes.to_vec()),
        Inbound::Pong(bytes) => Event::Pong(bytes.to_vec()),
        Inbound::Close(code) => Event::Close(code),
    }
}

/// One frame as a client could send it, well formed or not.
#[derive(Debug, Clone)]
struct FrameSpec {
    fin: bool,
    reserved: u8,
    opcode: u8,
    mask: Option<[u8; 4]>,
    payload: Vec<u8>,
}

impl FrameSpec {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(u8::from(self.fin) << 7 | (self.reserved & 7) << 4 | (self.opcode & 0x0f));
        let masked = if self.mask.is_some() { 0x80 } else { 0 };
        match self.payload.len() {
            len @ 0..=125 => out.push(masked | len as u8),
            len @ 126..=0xffff => {
                out.push(masked | 126);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            len => {
                out.push(masked | 127);
                out.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        match self.mask {
            Some(key) => {
                out.extend_from_slice(&key);
                out.extend(
                    self.payload
                        .iter()
                        .zip(key.iter().cycle())
                        .map(|(b, k)| b ^ k),
                );
            }
            None => out.extend_from_slice(&self.payload),
        }
    }
}

fn masked(opcode: u8, fin: bool, payload: Vec<u8>, key: [u8; 4]) -> FrameSpec {
    FrameSpec {
        fin,
        reserved: 0,
        opcode,
        mask: Some(key),
        payload,
    }
}

/// Text with multi-byte characters, so that cuts fall inside them.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z ]{0,40}",
        "[a-zé€😀\u{7ff}\u{800}\u{10000}]{0,30}",
        Just(String::new()),
    ]
}

/// Payload lengths at the encoding's boundaries, with a recognisable pattern.
fn boundary_payload() -> impl Strategy<Value = Vec<u8>> {
    prop::sample::select(vec![125usize, 126, 127, 65535, 65536, 65537])
        .prop_map(|len| (0..len).map(|i| b'a' + (i % 26) as u8).collect())
}

/// A message or control frame, as the frames a client sends for it.
fn unit() -> impl Strategy<Value = Vec<FrameSpec>> {
    let key = any::<[u8; 4]>();
    prop_oneof![
        // A text message in one frame or cut into fragments at any byte.
        4 => (text(), prop::collection::vec(any::<prop::sample::Index>(), 0..4), key)
            .prop_map(|(text, cuts, key)| fragments(0x1, text.into_bytes(), &cuts, key)),
        1 => (prop::collection::vec(any::<u8>(), 0..60), prop::collection::vec(any::<prop::sample::Index>(), 0..3), key)
            .prop_map(|(bytes, cuts, key)| fragments(0x2, bytes, &cuts, key)),
        1 => (boundary_payload(), key).prop_map(|(bytes, key)| vec![masked(0x1, true, bytes, key)]),
        // Messages around the limits (100 and 1000 bytes), whole or in fragments.
        1 => (prop::sample::select(vec![99usize, 100, 101, 999, 1000, 1001]), prop::collection::vec(any::<prop::sample::Index>(), 0..3), key)
            .prop_map(|(len, cuts, key)| fragments(0x1, vec![b'x'; len], &cuts, key)),
        // Bytes that are not UTF-8 in a text message.
        1 => (prop::collection::vec(any::<u8>(), 1..12), key)
            .prop_map(|(bytes, key)| vec![masked(0x1, true, bytes, key)]),
        2 => (prop::collection::vec(any::<u8>(), 0..20), prop::bool::ANY, key)
            .prop_map(|(bytes, ping, key)| vec![masked(if ping { 0x9 } else { 0xA }, true, bytes, key)]),
        1 => (any::<u16>(), "[a-z]{0,10}", key)
            .prop_map(|(code, reason, key)| vec![masked(0x8, true, close_payload(code, &reason), key)]),
        1 => (prop::sample::select(vec![0u16, 999, 1000, 1001, 1003, 1004, 1005, 1006, 1007, 1012, 1013, 1014, 1015, 1016, 2999, 3000, 4999, 5000, 65535]), key)
            .prop_map(|(code, key)| vec![masked(0x8, true, close_payload(code, ""), key)]),
        // Close frames of one byte or with a reason that is not UTF-8.
        1 => (prop::collection::vec(any::<u8>(), 0..2), key)
            .prop_map(|(mut tail, key)| {
                if tail.len() == 1 { tail.clear(); tail.push(3); } else { tail = vec![3, 232, 0xff]; }
                vec![masked(0x8, true, tail, key)]
            }),
        // Anything at all: opcode, reserved bits, fin, mask or not, payload (control frames
        // over 125 bytes included).
        1 => (any::<u8>(), any::<bool>(), any::<Option<[u8; 4]>>(), prop::collection::vec(any::<u8>(), 0..140))
            .prop_map(|(bits, fin, mask, payload)| vec![FrameSpec {
                fin, reserved: bits >> 4 & 7, opcode: bits & 0x0f, mask, payload,
            }]),
    ]
}

/// `bytes` as a message of `opcode`, cut at `cuts` (empty fragments included), a ping between
/// the fragments.
fn fragments(
    opcode: u8,
    bytes: Vec<u8>,
    cuts: &[prop::sample::Index],
    key: [u8; 4],
) -> Vec<FrameSpec> {
    let mut at: Vec<usize> = cuts.iter().map(|cut| cut.index(bytes.len() + 1)).collect();
    at.sort_unstable();
    at.push(bytes.len());
    let mut frames = Vec::new();
    let mut start = 0;
    for (n, end) in at.iter().enumerate() {
        if n > 0 {
            frames.push(masked(0x9, true, b"between".to_vec(), key));
        }
        let kind = if n == 0 { opcode } else { 0x0 };
        let last = n + 1 == at.len();
        frames.push(masked(kind, last, bytes[start..*end].to_vec(), key));
        start = *end;
    }
    frames
}

/// A stream: units, with perhaps reserved bits set on a frame and a bit flipped somewhere, cut
/// into pieces.
fn stream() -> impl Strategy<Value = (Vec<Vec<u8>>, usize)> {
    (
        prop::collection::vec(unit(), 1..8),
        prop::option::weighted(0.1, (any::<prop::sample::Index>(), 1u8..8)),
        prop::option::weighted(0.2, (any::<prop::sample::Index>(), 0u8..8)),
        prop::collection::vec(any::<prop::sample::Index>(), 0..6),
        prop::sample::select(vec![100usize, 1000, 70_000]),
    )
        .prop_map(|(units, reserved, flip, cuts, limit)| {
            let mut frames: Vec<FrameSpec> = units.into_iter().flatten().collect();
            if let Some((at, bits)) = reserved {
                let at = at.index(frames.len());
                frames[at].reserved = bits;
            }
            let mut bytes = Vec::new();
            for frame in &frames {
                frame.encode(&mut bytes);
            }
            if let Some((at, bit)) = flip {
                if !bytes.is_empty() {
                    let at = at.index(bytes.len());
                    bytes[at] ^= 1 << bit;
                }
            }
            let mut at: Vec<usize> = cuts.iter().map(|cut| cut.index(bytes.len() + 1)).collect();
            at.sort_unstable();
            let mut pieces = Vec::new();
            let mut start = 0;
            for cut in at.into_iter().chain(std::iter::once(bytes.len())) {
                pieces.push(bytes[start..cut].to_vec());
                start = cut;
            }
            (
                pieces
                    .into_iter()
                    .filter(|piece| !piece.is_empty())
                    .collect(),
                limit,
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn reads_what_tungstenite_reads((pieces, limit) in stream()) {
        let expected = tungstenite_reads(pieces.clone(), limit);
        let read = wsrelay_reads(pieces, limit);
        prop_assert_eq!(read, expected);
    }
}

/// The frames the relay writes, read by tungstenite as a client: every length form.
#[test]
fn tungstenite_reads_what_the_relay_writes() {
    let lengths = [0usize, 1, 125, 126, 127, 65535, 65536, 65537, 200_000];
    let mut bytes = Vec::new();
    let mut sent = Vec::new();
    for len in lengths {
        let text: String = (0..len)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        let (head, size) = header(Opcode::Text, text.len());
        bytes.extend_from_slice(&head[..size]);
        bytes.extend_from_slice(text.as_bytes());
        sent.push(text);
    }
    let (head, size) = header(Opcode::Ping, 3);
    bytes.extend_from_slice(&head[..size]);
    bytes.extend_from_slice(b"abc");
    let close = close_payload(4000, "going away");
    let (head, size) = header(Opcode::Close, close.len());
    bytes.extend_from_slice(&head[..size]);
    bytes.extend_from_slice(&close);

    let stream = Pieces {
        pieces: vec![bytes].into_iter(),
    };
    let config = WebSocketConfig::default()
        .max_message_size(None)
        .max_frame_size(None);
    let mut client = WebSocket::from_raw_socket(stream, Role::Client, Some(config));
    for text in sent {
        match client.read() {
            Ok(Message::Text(read)) => assert_eq!(read.as_str(), text),
            other => panic!("expected a text of {} bytes, read {other:?}", text.len()),
        }
    }
    assert!(matches!(client.read(), Ok(Message::Ping(ping)) if ping.as_ref() == b"abc"));
    match client.read() {
        Ok(Message::Close(Some(close))) => {
            assert_eq!(u16::from(close.code), 4000);
            assert_eq!(close.reason.as_str(), "going away");
        }
        other => panic!("expected the close frame, read {other:?}"),
    }
}
