//! The load generator's side of the wire: a WebSocket client codec with precomputed masked
//! frames (only the digits that change are patched and masked per message), the upgrade
//! handshake, the wsrelay hello, Socket.IO's open / connect packets and the raw peer's
//! preamble.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// How a load-generator connection talks to the server under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// WebSocket upgrade, then the wsrelay hello; acknowledges reliable frames.
    Wsrelay,
    /// WebSocket upgrade only (tokio-tungstenite and Node peers).
    Plain,
    /// No upgrade: a 4-byte connection index, then the same frame bytes (raw TCP peer).
    Raw,
    /// Socket.IO 4 over a plain WebSocket (engine.io v4, `transport=websocket`): the server's
    /// open packet `0{...}`, the client's `40`, the server's `40{...}`; events are
    /// `42["event",...]`; the server's engine.io ping `2` is answered with `3`.
    SocketIo,
}

/// What a text frame received is, for the client loops.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// An application message (a relayed or echoed frame, a Socket.IO event).
    App,
    /// A frame to ignore (wsrelay `~ack`, `~welcome`, `~pong`; other Socket.IO packets).
    Control,
    /// Socket.IO's engine.io ping: answer with [`SIO_PONG`].
    Ping,
    /// The server refused or ended the session (wsrelay `~error`, Socket.IO disconnect or
    /// connect error).
    Refused,
}

/// The engine.io pong, unmasked.
pub const SIO_PONG: &[u8] = b"3";

/// Classifies a text frame's payload.
pub fn classify(proto: Proto, data: &[u8]) -> Incoming {
    match proto {
        Proto::Wsrelay if is_error(data) => Incoming::Refused,
        Proto::Wsrelay if is_control(data) => Incoming::Control,
        Proto::SocketIo => match data {
            b"2" => Incoming::Ping,
            [b'4', b'2', ..] => Incoming::App,
            [b'4', b'1' | b'4', ..] | [b'1', ..] => Incoming::Refused,
            _ => Incoming::Control,
        },
        _ => Incoming::App,
    }
}

/// Opcodes the load generator cares about.
pub const OP_TEXT: u8 = 0x1;
/// Close frame.
pub const OP_CLOSE: u8 = 0x8;
/// Ping frame (answered with a pong).
pub const OP_PING: u8 = 0x9;

/// One frame read: its opcode and where its (unmasked) payload lies in the reader's buffer.
#[derive(Debug, Clone, Copy)]
pub struct FrameRef {
    pub op: u8,
    start: usize,
    end: usize,
}

/// Buffered frame reader over any byte stream.
pub struct Reader {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Reader {
    pub fn new(capacity: usize) -> Reader {
        Reader {
            buf: vec![0; capacity.max(256)],
            start: 0,
            end: 0,
        }
    }

    /// The payload of the frame last returned by [`next`](Self::next).
    pub fn data(&self, frame: &FrameRef) -> &[u8] {
        &self.buf[frame.start..frame.end]
    }

    /// Reads until `\r\n\r\n` (an HTTP response head); returns whether it was a 101.
    async fn read_head<R: AsyncRead + Unpin>(&mut self, r: &mut R) -> io::Result<bool> {
        loop {
            if let Some(at) = find(&self.buf[self.start..self.end], b"\r\n\r\n") {
                let head = &self.buf[self.start..self.start + at];
                let ok = head.starts_with(b"HTTP/1.1 101");
                self.start += at + 4;
                return Ok(ok);
            }
            if self.end - self.start > 16 * 1024 {
                return Err(io::Error::other("HTTP response head too long"));
            }
            self.fill(r).await?;
        }
    }

    async fn fill<R: AsyncRead + Unpin>(&mut self, r: &mut R) -> io::Result<()> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.start > 0 && self.buf.len() - self.end < self.buf.len() / 4 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            let len = self.buf.len() * 2;
            self.buf.resize(len, 0);
        }
        let n = r.read(&mut self.buf[self.end..]).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.end += n;
        Ok(())
    }

    /// The next complete frame (masked frames, as a raw echo returns them, are unmasked).
    pub async fn next<R: AsyncRead + Unpin>(&mut self, r: &mut R) -> io::Result<FrameRef> {
        loop {
            if let Some((op, data_start, data_end)) = parse(&mut self.buf[self.start..self.end]) {
                let frame = FrameRef {
                    op,
                    start: self.start + data_start,
                    end: self.start + data_end,
                };
                self.start += data_end;
                return Ok(frame);
            }
            self.fill(r).await?;
        }
    }
}

/// Parses one frame at the start of `buf`: (opcode, payload start, payload end = frame end).
/// Unmasks a masked payload in place.
fn parse(buf: &mut [u8]) -> Option<(u8, usize, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let op = buf[0] & 0x0f;
    let masked = buf[1] & 0x80 != 0;
    let mut len = usize::from(buf[1] & 0x7f);
    let mut off = 2;
    if len == 126 {
        if buf.len() < 4 {
            return None;
        }
        len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
        off = 4;
    } else if len == 127 {
        if buf.len() < 10 {
            return None;
        }
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&buf[2..10]);
        len = usize::try_from(u64::from_be_bytes(bytes)).ok()?;
        off = 10;
    }
    let key = if masked {
        if buf.len() < off + 4 {
            return None;
        }
        let key = [buf[off], buf[off + 1], buf[off + 2], buf[off + 3]];
        off += 4;
        Some(key)
    } else {
        None
    };
    if buf.len() < off + len {
        return None;
    }
    if let Some(key) = key {
        for (i, b) in buf[off..off + len].iter_mut().enumerate() {
            *b ^= key[i & 3];
        }
    }
    Some((op, off, off + len))
}

/// Where `needle` starts in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A client frame, masked once; digits at known offsets are patched per message.
#[derive(Clone)]
pub struct Template {
    pub bytes: Vec<u8>,
    data_off: usize,
    key: [u8; 4],
}

impl Template {
    /// A masked text frame carrying `text`.
    pub fn new(text: &[u8], key: [u8; 4]) -> Template {
        let mut bytes = Vec::with_capacity(text.len() + 14);
        bytes.push(0x80 | OP_TEXT);
        let len = text.len();
        if len < 126 {
            bytes.push(0x80 | len as u8);
        } else if let Ok(short) = u16::try_from(len) {
            bytes.push(0x80 | 126);
            bytes.extend_from_slice(&short.to_be_bytes());
        } else {
            bytes.push(0x80 | 127);
            bytes.extend_from_slice(&(len as u64).to_be_bytes());
        }
        bytes.extend_from_slice(&key);
        let data_off = bytes.len();
        bytes.extend(text.iter().enumerate().map(|(i, b)| b ^ key[i & 3]));
        Template {
            bytes,
            data_off,
            key,
        }
    }

    /// Writes `value` as exactly `width` decimal digits at text offset `pos` (masked).
    pub fn set_digits(&mut self, pos: usize, width: usize, mut value: u64) {
        for i in (0..width).rev() {
            let digit = b'0' + (value % 10) as u8;
            value /= 10;
            let at = pos + i;
            self.bytes[self.data_off + at] = digit ^ self.key[at & 3];
        }
    }
}

/// A masked frame built on the fly (acks, pings: rare).
pub fn masked(op: u8, text: &[u8], key: [u8; 4]) -> Vec<u8> {
    let mut t = Template::new(text, key);
    t.bytes[0] = 0x80 | op;
    t.bytes
}

/// Width of the patched message id: ids run from 10^9 so the width never changes.
pub const ID_WIDTH: usize = 10;
/// First message id.
pub const FIRST_ID: u64 = 1_000_000_000;
/// Width of the microsecond timestamp in payloads.
pub const TS_WIDTH: usize = 12;
/// Width of the sender index in payloads.
pub const SENDER_WIDTH: usize = 4;

/// A message `{"type":T,"id":N[,"to":TO],"payload":"<ts><sender><pad>"}` with the offsets of
/// its id, timestamp and sender digits. The payload is the last field, so receivers find the
/// digits at a fixed distance from the end of whatever frame a server relays.
pub struct Message {
    pub template: Template,
    /// Where the id digits are (Socket.IO events carry no id).
    pub id_pos: Option<usize>,
    pub ts_pos: usize,
}

impl Message {
    /// `pad` characters follow the digits in the payload string.
    pub fn new(kind: &str, to: Option<&str>, sender: u64, pad: usize, key: [u8; 4]) -> Message {
        Message::addressed(kind, to.map(|to| ("to", to)), sender, pad, key)
    }

    /// [`new`](Self::new) with `field` (`to` or `room`) set to its value.
    fn addressed(
        kind: &str,
        field: Option<(&str, &str)>,
        sender: u64,
        pad: usize,
        key: [u8; 4],
    ) -> Message {
        let mut text = format!("{{\"type\":\"{kind}\",\"id\":");
        let id_pos = text.len();
        text.push_str(&"0".repeat(ID_WIDTH));
        if let Some((name, value)) = field {
            text.push_str(&format!(",\"{name}\":\"{value}\""));
        }
        text.push_str(",\"payload\":\"");
        let ts_pos = text.len();
        text.push_str(&"0".repeat(TS_WIDTH));
        text.push_str(&format!(
            "{:0width$}",
            sender % 10_000,
            width = SENDER_WIDTH
        ));
        text.push_str(&"x".repeat(pad));
        text.push_str("\"}");
        Message {
            template: Template::new(text.as_bytes(), key),
            id_pos: Some(id_pos),
            ts_pos,
        }
    }

    /// The same message as a Socket.IO event: `42["KIND",["TO",]"<ts><sender><pad>"]` (the
    /// payload string is the same bytes as in [`new`](Self::new)).
    pub fn socketio(
        kind: &str,
        to: Option<&str>,
        sender: u64,
        pad: usize,
        key: [u8; 4],
    ) -> Message {
        let mut text = format!("42[\"{kind}\",");
        if let Some(to) = to {
            text.push_str(&format!("\"{to}\","));
        }
        text.push('"');
        let ts_pos = text.len();
        text.push_str(&"0".repeat(TS_WIDTH));
        text.push_str(&format!(
            "{:0width$}",
            sender % 10_000,
            width = SENDER_WIDTH
        ));
        text.push_str(&"x".repeat(pad));
        text.push_str("\"]");
        Message {
            template: Template::new(text.as_bytes(), key),
            id_pos: None,
            ts_pos,
        }
    }

    /// The original design's chat message, `{"message":"<ts><sender><pad>"}` as its payload:
    /// `{"type":"KIND","id":N,"payload":{...}}`, or the Socket.IO event `42["KIND",{...}]`.
    /// A chat handler broadcasts `{"sender", "message", "timestamp"}`: [`chat_stamp`] reads
    /// the digits there, wherever the server puts the fields.
    pub fn chat(proto: Proto, kind: &str, sender: u64, pad: usize, key: [u8; 4]) -> Message {
        let (mut text, id_pos) = match proto {
            Proto::SocketIo => (format!("42[\"{kind}\","), None),
            _ => {
                let text = format!("{{\"type\":\"{kind}\",\"id\":");
                let id_pos = text.len();
                (text + &"0".repeat(ID_WIDTH) + ",\"payload\":", Some(id_pos))
            }
        };
        text.push_str(CHAT_MESSAGE);
        let ts_pos = text.len();
        text.push_str(&"0".repeat(TS_WIDTH));
        text.push_str(&format!(
            "{:0width$}",
            sender % 10_000,
            width = SENDER_WIDTH
        ));
        text.push_str(&"x".repeat(pad));
        text.push_str(if proto == Proto::SocketIo {
            "\"}]"
        } else {
            "\"}}"
        });
        Message {
            template: Template::new(text.as_bytes(), key),
            id_pos,
            ts_pos,
        }
    }

    /// The message in the wire format of `proto`.
    pub fn of(
        proto: Proto,
        kind: &str,
        to: Option<&str>,
        sender: u64,
        pad: usize,
        key: [u8; 4],
    ) -> Message {
        match proto {
            Proto::SocketIo => Message::socketio(kind, to, sender, pad, key),
            _ => Message::new(kind, to, sender, pad, key),
        }
    }

    /// A message to the other members of `room`: `{"type":T,"id":N,"room":R,"payload":...}`,
    /// or the Socket.IO event `42["T","R","..."]`, which the Socket.IO peer's `rm` handler
    /// emits to the room (`socket.to(R)`).
    pub fn to_room(
        proto: Proto,
        kind: &str,
        room: &str,
        sender: u64,
        pad: usize,
        key: [u8; 4],
    ) -> Message {
        match proto {
            Proto::SocketIo => Message::socketio(kind, Some(room), sender, pad, key),
            _ => Message::addressed(kind, Some(("room", room)), sender, pad, key),
        }
    }

    /// Patches the id (when the format has one) and the timestamp; returns the frame bytes.
    pub fn stamp(&mut self, id: u64, ts_us: u64) -> &[u8] {
        if let Some(id_pos) = self.id_pos {
            self.template.set_digits(id_pos, ID_WIDTH, id);
        }
        self.template.set_digits(self.ts_pos, TS_WIDTH, ts_us);
        &self.template.bytes
    }
}

/// Reads the timestamp and sender digits of a relayed message (payload is the last field and
/// `pad` characters follow the digits).
pub fn read_stamp(data: &[u8], pad: usize) -> Option<(u64, u64)> {
    let tail = pad + 2; // `"}`
    let end = data.len().checked_sub(tail)?;
    let start = end.checked_sub(TS_WIDTH + SENDER_WIDTH)?;
    digits_at(data, start)
}

/// [`read_stamp`] for `proto`: a Socket.IO event `42["KIND","<ts><sender>..."...]` carries
/// the digits right after its first `","` (the server may append an offset after them).
pub fn stamp_of(proto: Proto, data: &[u8], pad: usize) -> Option<(u64, u64)> {
    match proto {
        Proto::SocketIo => digits_at(data, find(data, b"\",\"")? + 3),
        _ => read_stamp(data, pad),
    }
}

/// Where a chat message's text starts, in what clients send and in what a chat handler
/// broadcasts.
const CHAT_MESSAGE: &str = "{\"message\":\"";

/// The timestamp and sender digits of a chat message as a chat handler broadcast it (an
/// object with a `"message"` field, in any of the servers' framings).
pub fn chat_stamp(data: &[u8]) -> Option<(u64, u64)> {
    const FIELD: &[u8] = b"\"message\":\"";
    digits_at(data, find(data, FIELD)? + FIELD.len())
}

fn digits_at(data: &[u8], start: usize) -> Option<(u64, u64)> {
    let digits = data.get(start..start + TS_WIDTH + SENDER_WIDTH)?;
    let mut ts = 0u64;
    for &d in &digits[..TS_WIDTH] {
        if !d.is_ascii_digit() {
            return None;
        }
        ts = ts * 10 + u64::from(d - b'0');
    }
    let mut sender = 0u64;
    for &d in &digits[TS_WIDTH..] {
        if !d.is_ascii_digit() {
            return None;
        }
        sender = sender * 10 + u64::from(d - b'0');
    }
    Some((ts, sender))
}

/// Whether a text payload is a wsrelay control frame (`~welcome`, `~ack`, `~pong`).
pub fn is_control(data: &[u8]) -> bool {
    data.starts_with(b"{\"type\":\"~") && !data.starts_with(b"{\"type\":\"~error\"")
}

/// Whether a text payload is a wsrelay `~error`.
pub fn is_error(data: &[u8]) -> bool {
    data.starts_with(b"{\"type\":\"~error\"")
}

/// A per-connection mask key (deterministic: the benchmark needs no secrecy).
pub fn mask_key(index: usize) -> [u8; 4] {
    let x = (index as u32)
        .wrapping_mul(2_654_435_761)
        .wrapping_add(0x9e37_79b9);
    let k = x.to_le_bytes();
    // Avoid the all-zero key, which would make masking a no-op.
    [k[0] | 1, k[1], k[2], k[3]]
}

/// The source address for connection `index`: 127.0.0.1 up to `spread` addresses of 127/8, so
/// that 10 000+ connections never run short of ephemeral ports.
pub fn source_ip(index: usize, spread: usize) -> IpAddr {
    let n = (index % spread.max(1)) as u8;
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + n))
}

/// A connected, upgraded (or preambled) load-generator connection.
pub struct Conn {
    pub stream: TcpStream,
    pub reader: Reader,
    pub key: [u8; 4],
    pub index: usize,
    pub proto: Proto,
    /// What the `~ack`s report: reliable wsrelay frames and room logs' positions received.
    pub acks: Acks,
}

/// Everything [`connect`] needs.
pub struct ConnectSpec<'a> {
    pub addr: SocketAddr,
    pub proto: Proto,
    pub source: &'a str,
    pub index: usize,
    /// Spread connections over this many 127.0.0.x source addresses (1: let the kernel pick).
    pub spread: usize,
    pub read_capacity: usize,
}

/// Connects, upgrades and (wsrelay) says hello and waits for the welcome, within `limit`.
pub async fn connect(spec: &ConnectSpec<'_>, limit: Duration) -> io::Result<Conn> {
    match tokio::time::timeout(limit, connect_inner(spec)).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("connection {} not ready within {limit:?}", spec.index),
        )),
    }
}

async fn connect_inner(spec: &ConnectSpec<'_>) -> io::Result<Conn> {
    let stream = if spec.spread > 1 {
        let socket = TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.bind(SocketAddr::new(source_ip(spec.index, spec.spread), 0))?;
        socket.connect(spec.addr).await?
    } else {
        TcpStream::connect(spec.addr).await?
    };
    stream.set_nodelay(true)?;
    let key = mask_key(spec.index);
    let mut conn = Conn {
        stream,
        reader: Reader::new(spec.read_capacity),
        key,
        index: spec.index,
        proto: spec.proto,
        acks: Acks::default(),
    };
    match spec.proto {
        Proto::Raw => {
            let index = u32::try_from(spec.index).unwrap_or(u32::MAX);
            conn.stream.write_all(&index.to_le_bytes()).await?;
        }
        Proto::Plain | Proto::Wsrelay | Proto::SocketIo => {
            let path = match spec.proto {
                // What a wsrelay client asks for (PROTOCOL.md section 1).
                Proto::Wsrelay => format!("/?source={}&v=1", spec.source),
                Proto::SocketIo => format!(
                    "/socket.io/?EIO=4&transport=websocket&source={}",
                    spec.source
                ),
                _ => format!("/?source={}", spec.source),
            };
            let request = format!(
                "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
                spec.addr
            );
            conn.stream.write_all(request.as_bytes()).await?;
            if !conn.reader.read_head(&mut conn.stream).await? {
                return Err(io::Error::other("upgrade refused"));
            }
        }
    }
    if spec.proto == Proto::Wsrelay {
        let hello = format!(
            "{{\"type\":\"~hello\",\"v\":1,\"session\":\"bench-session-{:08}\",\"ack\":0}}",
            spec.index
        );
        conn.stream
            .write_all(&masked(OP_TEXT, hello.as_bytes(), key))
            .await?;
        loop {
            let frame = conn.reader.next(&mut conn.stream).await?;
            if frame.op == OP_TEXT
                && conn
                    .reader
                    .data(&frame)
                    .starts_with(b"{\"type\":\"~welcome\"")
            {
                break;
            }
        }
    }
    if spec.proto == Proto::SocketIo {
        // engine.io open `0{...}`, then the Socket.IO connect to the main namespace.
        loop {
            let frame = conn.next().await?;
            let data = conn.reader.data(&frame);
            if frame.op != OP_TEXT {
                continue;
            }
            if data.starts_with(b"0{") {
                conn.stream.write_all(&masked(OP_TEXT, b"40", key)).await?;
            } else if data.starts_with(b"40") {
                break;
            } else if classify(Proto::SocketIo, data) == Incoming::Refused {
                return Err(io::Error::other(format!(
                    "Socket.IO refused the connection: {}",
                    String::from_utf8_lossy(data)
                )));
            }
        }
    }
    Ok(conn)
}

impl Conn {
    /// The next frame; answers pings; a close frame or an `~error` is an error.
    pub async fn next(&mut self) -> io::Result<FrameRef> {
        next_frame(&mut self.reader, &mut self.stream, self.key).await
    }
}

/// Reads the next frame from `r`, answering pings on `r` (a stream that is also the writer).
pub async fn next_frame<S: AsyncRead + AsyncWrite + Unpin>(
    reader: &mut Reader,
    stream: &mut S,
    key: [u8; 4],
) -> io::Result<FrameRef> {
    loop {
        let frame = reader.next(stream).await?;
        match frame.op {
            OP_PING => {
                let pong = masked(0xA, reader.data(&frame), key);
                stream.write_all(&pong).await?;
            }
            OP_CLOSE => return Err(closed(reader.data(&frame))),
            _ => {
                let data = reader.data(&frame);
                if is_error(data) {
                    return Err(io::Error::other(format!(
                        "server error: {}",
                        String::from_utf8_lossy(data)
                    )));
                }
                return Ok(frame);
            }
        }
    }
}

/// An error describing a close frame.
pub fn closed(data: &[u8]) -> io::Error {
    let code = if data.len() >= 2 {
        u16::from_be_bytes([data[0], data[1]])
    } else {
        0
    };
    let reason = String::from_utf8_lossy(data.get(2..).unwrap_or_default()).into_owned();
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        format!("closed by the server: {code} {reason}"),
    )
}

/// The `~ack` frame due after `reliable` frames (every 32: more often than the client core,
/// which waits for 128 frames or its delay).
pub fn ack_due(reliable: u64, key: [u8; 4]) -> Option<Vec<u8>> {
    reliable.is_multiple_of(32).then(|| {
        let text = format!("{{\"type\":\"~ack\",\"ack\":{reliable}}}");
        masked(OP_TEXT, text.as_bytes(), key)
    })
}

/// What a wsrelay client acknowledges: the reliable frames of its session (counted), and per
/// room's log (`PROTOCOL.md` section 14.1: frames that begin with `{"pos":`) the last
/// position received. Acknowledged every 32 frames of either kind.
#[derive(Debug, Default)]
pub struct Acks {
    reliable: u64,
    logged: u64,
    /// Per room (`""`: the log of everyone), the last position and whether it is acknowledged.
    logs: Vec<(Vec<u8>, u64, bool)>,
}

impl Acks {
    /// Counts an application frame; returns the acknowledgements due, as masked frames.
    pub fn count(&mut self, data: &[u8], key: [u8; 4]) -> Option<Vec<u8>> {
        let Some((pos, room)) = log_position(data) else {
            self.reliable += 1;
            return ack_due(self.reliable, key);
        };
        match self.logs.iter_mut().find(|(r, ..)| r.as_slice() == room) {
            Some(log) => {
                log.1 = log.1.max(pos);
                log.2 = false;
            }
            None => self.logs.push((room.to_vec(), pos, false)),
        }
        self.logged += 1;
        if !self.logged.is_multiple_of(32) {
            return None;
        }
        let mut out = Vec::new();
        for (room, pos, acked) in self.logs.iter_mut().filter(|log| !log.2) {
            *acked = true;
            let text = if room.is_empty() {
                format!("{{\"type\":\"~ack\",\"pos\":{pos}}}")
            } else {
                let room = String::from_utf8_lossy(room);
                format!("{{\"type\":\"~ack\",\"pos\":{pos},\"room\":\"{room}\"}}")
            };
            out.extend(masked(OP_TEXT, text.as_bytes(), key));
        }
        Some(out)
    }
}

/// A room log's frame: its position and room (empty: the log of everyone). The relay writes
/// the position first; room names here are plain (`r12`), never escaped.
fn log_position(data: &[u8]) -> Option<(u64, &[u8])> {
    let rest = data.strip_prefix(b"{\"pos\":")?;
    let digits = rest.iter().take_while(|d| d.is_ascii_digit()).count();
    let pos = std::str::from_utf8(rest.get(..digits)?)
        .ok()?
        .parse()
        .ok()?;
    const ROOM: &[u8] = b"\"room\":\"";
    let room = match find(data, ROOM) {
        Some(at) => {
            let name = data.get(at + ROOM.len()..)?;
            let end = name.iter().position(|&b| b == b'"')?;
            name.get(..end)?
        }
        None => &[],
    };
    Some((pos, room))
}

/// The frame with which a client joins `room`: the relay's `relay:join` request (id 1: the
/// client's messages come after it, from [`FIRST_ID`]), or the Socket.IO peer's `join` event.
pub fn join_frame(proto: Proto, room: &str, key: [u8; 4]) -> Vec<u8> {
    let text = match proto {
        Proto::SocketIo => format!("42[\"join\",\"{room}\"]"),
        _ => format!(
            "{{\"type\":\"relay:join\",\"id\":1,\"request\":true,\"payload\":{{\"room\":\"{room}\"}}}}"
        ),
    };
    masked(OP_TEXT, text.as_bytes(), key)
}

#[cfg(test)]
mod tests {
    #[test]
    fn log_frames_are_acknowledged_per_room_every_32() {
        let mut acks = super::Acks::default();
        let key = [0; 4];
        let mut due = Vec::new();
        for n in 1..=64u64 {
            let frame = match n % 2 {
                0 => format!(r#"{{"pos":{n},"type":"rm","room":"r3","payload":"x"}}"#),
                _ => format!(r#"{{"pos":{n},"type":"bc","payload":"x"}}"#),
            };
            if let Some(frames) = acks.count(frame.as_bytes(), key) {
                due.push(frames);
            }
        }
        assert_eq!(due.len(), 2);
        let text = String::from_utf8_lossy(&due[1]);
        assert!(text.contains(r#"{"type":"~ack","pos":63}"#), "{text}");
        assert!(
            text.contains(r#"{"type":"~ack","pos":64,"room":"r3"}"#),
            "{text}"
        );
        // A session frame is counted apart.
        assert!(acks.count(br#"{"type":"n","payload":1}"#, key).is_none());
    }

    use super::*;

    #[test]
    fn template_round_trips_through_the_parser() {
        let mut message = Message::new("bc", Some("c7"), 3, 2, mask_key(5));
        let mut bytes = message.stamp(FIRST_ID + 42, 123_456).to_vec();
        let (op, start, end) = parse(&mut bytes).expect("complete frame");
        assert_eq!(op, OP_TEXT);
        let text = std::str::from_utf8(&bytes[start..end]).expect("utf8");
        assert_eq!(
            text,
            "{\"type\":\"bc\",\"id\":1000000042,\"to\":\"c7\",\"payload\":\"0000001234560003xx\"}"
        );
        assert_eq!(read_stamp(text.as_bytes(), 2), Some((123_456, 3)));
    }

    #[test]
    fn socketio_events_carry_the_same_payload() {
        let mut message = Message::of(Proto::SocketIo, "dm", Some("c7"), 3, 2, mask_key(5));
        let mut bytes = message.stamp(FIRST_ID + 42, 123_456).to_vec();
        let (_, start, end) = parse(&mut bytes).expect("complete frame");
        let text = std::str::from_utf8(&bytes[start..end]).expect("utf8");
        assert_eq!(text, "42[\"dm\",\"c7\",\"0000001234560003xx\"]");
        // Relayed by the server without `to`, with a recovery offset appended.
        let relayed = b"42[\"dm\",\"0000001234560003xx\",\"1795705766573-1\"]";
        assert_eq!(stamp_of(Proto::SocketIo, relayed, 2), Some((123_456, 3)));
        assert_eq!(classify(Proto::SocketIo, relayed), Incoming::App);
        assert_eq!(classify(Proto::SocketIo, b"2"), Incoming::Ping);
        assert_eq!(classify(Proto::SocketIo, b"41"), Incoming::Refused);
        assert_eq!(
            classify(Proto::SocketIo, b"40{\"sid\":\"x\"}"),
            Incoming::Control
        );
    }

    #[test]
    fn chat_messages_and_their_broadcasts() {
        for (proto, sent) in [
            (
                Proto::Wsrelay,
                "{\"type\":\"bc\",\"id\":1000000042,\"payload\":{\"message\":\"0000001234560003xx\"}}",
            ),
            (
                Proto::SocketIo,
                "42[\"bc\",{\"message\":\"0000001234560003xx\"}]",
            ),
        ] {
            let mut message = Message::chat(proto, "bc", 3, 2, mask_key(5));
            let mut bytes = message.stamp(FIRST_ID + 42, 123_456).to_vec();
            let (_, start, end) = parse(&mut bytes).expect("complete frame");
            assert_eq!(std::str::from_utf8(&bytes[start..end]), Ok(sent));
        }
        let broadcast = b"{\"type\":\"bc\",\"id\":7,\"payload\":{\"sender\":\"c3\",\"message\":\"0000001234560003xx\",\"timestamp\":1}}";
        assert_eq!(chat_stamp(broadcast), Some((123_456, 3)));
        let event =
            b"42[\"bc\",{\"sender\":\"c3\",\"message\":\"0000001234560003xx\",\"timestamp\":1}]";
        assert_eq!(chat_stamp(event), Some((123_456, 3)));
    }

    #[test]
    fn long_frames_use_extended_lengths() {
        let text = vec![b'a'; 1000];
        let mut bytes = Template::new(&text, mask_key(1)).bytes;
        let (_, start, end) = parse(&mut bytes).expect("complete frame");
        assert_eq!(&bytes[start..end], &text[..]);
        assert!(parse(&mut bytes[..500]).is_none());
    }
}
