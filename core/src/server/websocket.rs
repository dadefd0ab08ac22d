//! WebSocket frames (RFC 6455) as a server reads and writes them, sans-IO.
//!
//! The relay reads its clients' bytes with [`Decoder`]: frames are unmasked in place in the
//! caller's buffer and a text message that came in one frame (nearly all of them) is handed
//! over as a `&str` into that buffer: no copy, no allocation per frame. Only a fragmented
//! message is assembled in a buffer of the decoder's own. What it accepts and refuses is
//! tungstenite's server role (the relay's previous transport), checked frame by frame against
//! it by `native-server/tests/websocket_conformance.rs`: masks required, reserved bits and
//! opcodes refused, control frames final and at most 125 bytes, continuation in sequence, UTF-8
//! checked across fragments (and failed at the first invalid byte), close codes an endpoint
//! may not send reported as 1002, sizes limited from the header.
//!
//! Writing is [`header`]: server frames are unmasked and never fragmented, so a frame is a
//! header of 2 to 10 bytes followed by the payload as it is.

use alloc::vec::Vec;
use core::ops::Range;

/// The longest frame header: 2 bytes, 8 of extended length, 4 of mask.
pub const MAX_HEADER: usize = 14;

const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// A message or control frame read from the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Inbound<'a> {
    /// A text message (valid UTF-8), whole.
    Text(&'a str),
    /// A binary message, whole.
    Binary(&'a [u8]),
    /// A ping, with its payload (the pong must echo it).
    Ping(&'a [u8]),
    /// A pong.
    Pong(&'a [u8]),
    /// A close frame and its status code: `None` when it had none, 1002 (protocol error) when
    /// it is a code no endpoint may send (1005, 1006, 1015, below 1000, reserved ranges).
    Close(Option<u16>),
}

/// Why the client's bytes are not a WebSocket stream the server goes on reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// A frame, or a fragmented message so far, is over the size limit.
    TooLarge,
    /// A text message, or a close frame's reason, is not UTF-8.
    InvalidUtf8,
    /// A violation of RFC 6455, described.
    Protocol(&'static str),
}

impl From<FrameError> for super::TransportError {
    fn from(error: FrameError) -> Self {
        match error {
            FrameError::TooLarge => super::TransportError::TooLarge,
            FrameError::InvalidUtf8 => super::TransportError::InvalidUtf8,
            FrameError::Protocol(what) => super::TransportError::Protocol(what.into()),
        }
    }
}

/// A frame header, complete.
#[derive(Debug, Clone, Copy)]
struct Header {
    fin: bool,
    reserved: bool,
    opcode: u8,
    mask: Option<[u8; 4]>,
    /// Payload length.
    len: u64,
    /// Header length.
    size: usize,
}

/// Parses the header at the start of `buf`; `None` while incomplete.
fn parse_header(buf: &[u8]) -> Option<Header> {
    let (&first, rest) = buf.split_first()?;
    let &second = rest.first()?;
    let (len, mut size) = match second & 0x7f {
        126 => (
            u64::from(u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?)),
            4,
        ),
        127 => (u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?), 10),
        short => (u64::from(short), 2),
    };
    let mask = if second & 0x80 != 0 {
        let key = buf.get(size..size + 4)?.try_into().ok()?;
        size += 4;
        Some(key)
    } else {
        None
    };
    Some(Header {
        fin: first & 0x80 != 0,
        reserved: first & 0x70 != 0,
        opcode: first & 0x0f,
        mask,
        len,
        size,
    })
}

/// Removes a client's mask, eight bytes at a time.
fn unmask(payload: &mut [u8], key: [u8; 4]) {
    let [a, b, c, d] = key;
    let wide = u64::from_ne_bytes([a, b, c, d, a, b, c, d]);
    let mut words = payload.chunks_exact_mut(8);
    for word in &mut words {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(word);
        word.copy_from_slice(&(u64::from_ne_bytes(bytes) ^ wide).to_ne_bytes());
    }
    for (byte, key) in words.into_remainder().iter_mut().zip(key.iter().cycle()) {
        *byte ^= key;
    }
}

/// Whether a close frame may carry `code` (RFC 6455 section 7.4; tungstenite's rule).
fn sendable_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1013 | 3000..=4999)
}

/// A fragmented message being assembled.
#[derive(Debug)]
struct Partial {
    text: bool,
    bytes: Vec<u8>,
    /// How many bytes at the start are known to be UTF-8 (a text message's).
    valid: usize,
}

/// What the next frames in a buffer amount to, as positions in it.
enum Found {
    /// More bytes are needed; the frames before this position were consumed (continuation
    /// frames of a message not complete yet).
    Need(usize),
    /// A message or control frame whose payload is at `payload`, the frames through `end`
    /// consumed.
    Frame { payload: Range<usize>, end: usize },
    /// The fragmented message is complete, the frames through `end` consumed.
    Assembled { end: usize },
}

/// Reads a client's frames (see the module's documentation).
#[derive(Debug)]
pub struct Decoder {
    /// Largest frame and largest message, in bytes.
    limit: usize,
    partial: Option<Partial>,
    /// The assembled message was handed over: the next call starts a new one.
    assembled: bool,
    /// The opcode of the frame [`Found::Frame`] points at.
    opcode: u8,
    /// A close frame or an error ended the stream: anything after it is discarded.
    ended: bool,
}

impl Decoder {
    /// A decoder refusing frames and messages over `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Decoder {
            limit,
            partial: None,
            assembled: false,
            opcode: 0,
            ended: false,
        }
    }

    /// What `buf` lacks before [`decode`](Self::decode) has something to say about it:
    /// `None` when it has now (a whole frame, or a header it refuses before the payload),
    /// else the length of the frame that starts `buf` (header and payload), 0 while its header
    /// is incomplete: how much a reader should make room for.
    pub fn wanted(&self, buf: &[u8]) -> Option<usize> {
        let header = match parse_header(buf) {
            Some(header) if !self.ended => header,
            _ => return Some(0),
        };
        if !matches!(
            header.opcode,
            CONTINUATION | TEXT | BINARY | CLOSE | PING | PONG
        ) {
            return None;
        }
        match usize::try_from(header.len) {
            Ok(len) if len <= self.limit => {
                Some(header.size + len).filter(|total| *total > buf.len())
            }
            _ => None, // refused from the header
        }
    }

    /// Decodes from `buf`, the client's bytes not consumed yet: how many bytes were consumed,
    /// and the message or control frame they completed. `(n, None)`: more bytes are needed
    /// (the first `n` were consumed all the same). Payloads are unmasked in place; the
    /// message borrows `buf` or, when it came in fragments, the decoder.
    ///
    /// A close frame or an error ends the stream: later calls consume everything and return
    /// nothing.
    pub fn decode<'a>(
        &'a mut self,
        buf: &'a mut [u8],
    ) -> Result<(usize, Option<Inbound<'a>>), FrameError> {
        if core::mem::take(&mut self.assembled) {
            self.partial = None;
        }
        if self.ended {
            // After the close frame or an error, the stream is over: what follows is
            // discarded, unread.
            return Ok((buf.len(), None));
        }
        let found = self.find(buf);
        self.ended = found.is_err();
        let (payload, end) = match found? {
            Found::Need(consumed) => return Ok((consumed, None)),
            Found::Assembled { end } => {
                let Some(partial) = &self.partial else {
                    return Ok((end, None));
                };
                // Checked fragment by fragment already: this cannot fail.
                let message = if partial.text {
                    Inbound::Text(
                        core::str::from_utf8(&partial.bytes)
                            .map_err(|_| FrameError::InvalidUtf8)?,
                    )
                } else {
                    Inbound::Binary(&partial.bytes)
                };
                return Ok((end, Some(message)));
            }
            Found::Frame { payload, end } => (payload, end),
        };
        let opcode = self.opcode;
        let payload = buf.get(payload).unwrap_or_default();
        let message = match opcode {
            TEXT => core::str::from_utf8(payload)
                .map(Inbound::Text)
                .map_err(|_| FrameError::InvalidUtf8),
            BINARY => Ok(Inbound::Binary(payload)),
            PING => Ok(Inbound::Ping(payload)),
            PONG => Ok(Inbound::Pong(payload)),
            _ => close_code(payload).map(Inbound::Close),
        };
        self.ended = message.is_err() || opcode == CLOSE;
        Ok((end, Some(message?)))
    }

    /// Walks the frames in `buf` to the next message or control frame.
    fn find(&mut self, buf: &mut [u8]) -> Result<Found, FrameError> {
        let mut at = 0;
        loop {
            let rest = buf.get_mut(at..).unwrap_or_default();
            let Some(header) = parse_header(rest) else {
                return Ok(Found::Need(at));
            };
            // In tungstenite's order: the opcode and the size are judged from the header,
            // everything else once the whole frame is there.
            if !matches!(
                header.opcode,
                CONTINUATION | TEXT | BINARY | CLOSE | PING | PONG
            ) {
                return Err(FrameError::Protocol("unknown opcode"));
            }
            let len = usize::try_from(header.len)
                .ok()
                .filter(|len| *len <= self.limit)
                .ok_or(FrameError::TooLarge)?;
            let Some(frame) = rest.get_mut(..header.size + len) else {
                return Ok(Found::Need(at));
            };
            let payload = frame.get_mut(header.size..).unwrap_or_default();
            match header.mask {
                Some(key) => unmask(payload, key),
                None => return Err(FrameError::Protocol("unmasked frame from the client")),
            }
            if header.reserved {
                return Err(FrameError::Protocol("reserved bits set"));
            }
            let start = at + header.size;
            at = start + len;
            if header.opcode >= CLOSE {
                if !header.fin {
                    return Err(FrameError::Protocol("fragmented control frame"));
                }
                if len > 125 {
                    return Err(FrameError::Protocol("control frame over 125 bytes"));
                }
                self.opcode = header.opcode;
                return Ok(Found::Frame {
                    payload: start..at,
                    end: at,
                });
            }
            match (header.opcode, &mut self.partial) {
                (CONTINUATION, None) => {
                    return Err(FrameError::Protocol("continuation frame without a message"))
                }
                (CONTINUATION, Some(partial)) => {
                    if partial.bytes.len() + len > self.limit {
                        return Err(FrameError::TooLarge);
                    }
                    partial.bytes.extend_from_slice(payload);
                    partial.check(header.fin)?;
                    if header.fin {
                        self.assembled = true;
                        return Ok(Found::Assembled { end: at });
                    }
                }
                (_, Some(_)) => {
                    return Err(FrameError::Protocol(
                        "new message before the last one's final fragment",
                    ))
                }
                (opcode, None) if header.fin => {
                    self.opcode = opcode;
                    return Ok(Found::Frame {
                        payload: start..at,
                        end: at,
                    });
                }
                (opcode, None) => {
                    let mut partial = Partial {
                        text: opcode == TEXT,
                        bytes: payload.to_vec(),
                        valid: 0,
                    };
                    partial.check(false)?;
                    self.partial = Some(partial);
                }
            }
        }
    }
}

impl Partial {
    /// Checks the UTF-8 of a text message received so far: an invalid byte fails it at once, a
    /// character cut at the end of a fragment only if it was the last.
    fn check(&mut self, last: bool) -> Result<(), FrameError> {
        if !self.text {
            return Ok(());
        }
        let unchecked = self.bytes.get(self.valid..).unwrap_or_default();
        match core::str::from_utf8(unchecked) {
            Ok(_) => self.valid = self.bytes.len(),
            Err(error) if error.error_len().is_none() && !last => self.valid += error.valid_up_to(),
            Err(_) => return Err(FrameError::InvalidUtf8),
        }
        Ok(())
    }
}

/// A close frame's status code (see [`Inbound::Close`]).
fn close_code(payload: &[u8]) -> Result<Option<u16>, FrameError> {
    match payload {
        [] => Ok(None),
        [_] => Err(FrameError::Protocol("close frame of one byte")),
        [high, low, reason @ ..] => {
            core::str::from_utf8(reason).map_err(|_| FrameError::InvalidUtf8)?;
            let code = u16::from_be_bytes([*high, *low]);
            Ok(Some(if sendable_close_code(code) {
                code
            } else {
                1002
            }))
        }
    }
}

/// The kind of a frame the server writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    /// A text message.
    Text,
    /// A close frame.
    Close,
    /// A ping.
    Ping,
    /// A pong.
    Pong,
}

/// The header of a server frame (final, unmasked) of `opcode` with a payload of `len` bytes:
/// the bytes, of which the first `.1` are the header.
pub fn header(opcode: Opcode, len: usize) -> ([u8; 10], usize) {
    let first = 0x80
        | match opcode {
            Opcode::Text => TEXT,
            Opcode::Close => CLOSE,
            Opcode::Ping => PING,
            Opcode::Pong => PONG,
        };
    let mut bytes = [0u8; 10];
    bytes[0] = first;
    let size = match len {
        0..=125 => {
            bytes[1] = len as u8;
            2
        }
        126..=0xffff => {
            bytes[1] = 126;
            bytes[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            4
        }
        _ => {
            bytes[1] = 127;
            bytes[2..10].copy_from_slice(&(len as u64).to_be_bytes());
            10
        }
    };
    (bytes, size)
}

/// The payload of a close frame: `code` and as much of `reason` as fits in 123 bytes, cut at
/// a character boundary.
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = Vec::with_capacity(2 + end);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(reason.get(..end).unwrap_or_default().as_bytes());
    payload
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    /// A masked client frame.
    fn client_frame(first: u8, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
        let mut frame = vec![first];
        match payload.len() {
            len @ 0..=125 => frame.push(0x80 | len as u8),
            len @ 126..=0xffff => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(len as u16).to_be_bytes());
            }
            len => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&key);
        frame.extend(payload.iter().zip(key.iter().cycle()).map(|(b, k)| b ^ k));
        frame
    }

    #[test]
    fn a_text_frame_is_unmasked_in_place_and_borrowed() {
        let mut buf = client_frame(0x81, b"hello, relay", [1, 2, 3, 4]);
        let total = buf.len();
        let mut decoder = Decoder::new(1024);
        let (used, message) = decoder.decode(&mut buf).expect("valid frame");
        assert_eq!(
            (used, message),
            (total, Some(Inbound::Text("hello, relay")))
        );
    }

    #[test]
    fn a_partial_frame_waits_for_more() {
        let frame = client_frame(0x81, &[b'x'; 300], [9, 8, 7, 6]);
        let mut decoder = Decoder::new(1024);
        for cut in [0, 1, 3, 7, 8, 299] {
            let mut part = frame[..cut].to_vec();
            assert_eq!(decoder.decode(&mut part), Ok((0, None)), "cut at {cut}");
        }
        assert_eq!(decoder.wanted(&frame[..3]), Some(0));
        assert_eq!(decoder.wanted(&frame[..8]), Some(frame.len()));
        assert_eq!(decoder.wanted(&frame), None);
        assert_eq!(
            Decoder::new(100).wanted(&frame[..8]),
            None,
            "over the limit"
        );
    }

    #[test]
    fn fragments_are_assembled_with_utf8_split_across_them() {
        let text = "grüße, 😀";
        let bytes = text.as_bytes();
        let mut buf = client_frame(0x01, &bytes[..3], [1, 1, 1, 1]);
        buf.extend(client_frame(0x89, b"ping", [2, 2, 2, 2]));
        buf.extend(client_frame(0x00, &bytes[3..11], [3, 3, 3, 3]));
        buf.extend(client_frame(0x80, &bytes[11..], [4, 4, 4, 4]));
        let mut decoder = Decoder::new(1024);
        let (used, ping) = decoder.decode(&mut buf).expect("valid");
        assert_eq!(ping, Some(Inbound::Ping(b"ping")));
        let (rest, message) = decoder.decode(&mut buf[used..]).expect("valid");
        assert_eq!(message, Some(Inbound::Text(text)));
        assert_eq!(used + rest, buf.len());
    }

    #[test]
    fn invalid_utf8_fails_at_the_fragment_that_holds_it() {
        let mut buf = client_frame(0x01, b"ok", [0; 4]);
        buf.extend(client_frame(0x00, &[0xff], [0; 4]));
        assert_eq!(
            Decoder::new(64).decode(&mut buf),
            Err(FrameError::InvalidUtf8)
        );
    }

    #[test]
    fn sizes_are_refused_from_the_header() {
        let header_only = client_frame(0x81, &[0; 200], [0; 4]);
        let mut buf = header_only[..8].to_vec();
        assert_eq!(
            Decoder::new(100).decode(&mut buf),
            Err(FrameError::TooLarge)
        );
    }

    #[test]
    fn protocol_violations_are_named() {
        let cases: [(Vec<u8>, &str); 4] = [
            (vec![0x81, 0x00], "unmasked frame from the client"),
            (client_frame(0xc1, b"", [0; 4]), "reserved bits set"),
            (client_frame(0x09, b"", [0; 4]), "fragmented control frame"),
            (
                client_frame(0x80, b"", [0; 4]),
                "continuation frame without a message",
            ),
        ];
        for (mut buf, what) in cases {
            assert_eq!(
                Decoder::new(64).decode(&mut buf),
                Err(FrameError::Protocol(what))
            );
        }
    }

    #[test]
    fn close_codes_no_endpoint_may_send_read_as_protocol_errors() {
        for (code, read) in [(1000, 1000), (1005, 1002), (4000, 4000), (999, 1002)] {
            let payload = close_payload(code, "bye");
            let mut buf = client_frame(0x88, &payload, [5; 4]);
            let mut decoder = Decoder::new(64);
            let (_, message) = decoder.decode(&mut buf).expect("valid");
            assert_eq!(message, Some(Inbound::Close(Some(read))));
        }
    }

    #[test]
    fn headers_use_the_shortest_length_form() {
        for (len, size) in [(0, 2), (125, 2), (126, 4), (65535, 4), (65536, 10)] {
            let (bytes, used) = header(Opcode::Text, len);
            assert_eq!(used, size);
            assert_eq!(bytes[0], 0x81);
        }
        let long = "é".repeat(100);
        assert_eq!(close_payload(1000, &long).len(), 2 + 122);
    }
}
