//! Wire protocol v1 (see `PROTOCOL.md`): frame types and their JSON codec.
//!
//! One codec serves every party: the client core (native and wasm) and the server. Decoding
//! borrows from the received text and keeps `payload` as a validated raw slice, so relaying a
//! message never re-encodes its payload.

pub mod json;

use alloc::borrow::Cow;
use alloc::string::String;
use core::fmt;

use json::{JsonError, RawValue};

/// The protocol version this crate speaks, sent in `~hello` and `~welcome`.
pub const VERSION: u64 = 1;

/// Application message types may not start with this; control frames do.
pub const RESERVED_PREFIX: char = '~';

/// Message types starting with this are the relay's own (`relay:presence`, `relay:clients`):
/// a client may send one only to the relay itself (a request its handler answers), never to
/// other clients.
pub const RELAY_PREFIX: &str = "relay:";

/// Request type with which a client joins a room (payload `{"room": NAME}`), answered once
/// the server has it (`PROTOCOL.md` section 14).
pub const JOIN: &str = "relay:join";

/// Request type with which a client leaves a room (payload `{"room": NAME}`).
pub const LEAVE: &str = "relay:leave";

/// Longest room name, in bytes (`PROTOCOL.md` section 14).
pub const MAX_ROOM_LEN: usize = 128;

/// Why a room name is not acceptable, or `None` when it is: the rules of a `source` (1 to
/// 128 bytes of UTF-8 without control characters).
pub fn room_problem(room: &str) -> Option<&'static str> {
    if room.is_empty() || room.len() > MAX_ROOM_LEN {
        return Some("a room name must be 1 to 128 bytes");
    }
    if room.chars().any(char::is_control) {
        return Some("a room name must not contain control characters");
    }
    None
}

/// Close code (PROTOCOL.md section 9): authentication failed (a missing, invalid or expired
/// token). A stop code. Sent right after the upgrade instead of an HTTP 401, which a browser's
/// WebSocket cannot see.
pub const CLOSE_UNAUTHORIZED: u16 = 4401;

/// Close code (PROTOCOL.md section 9): forbidden (an `Origin` that is not allowed, a token for
/// another `source`). A stop code, sent instead of an HTTP 403 as [`CLOSE_UNAUTHORIZED`] is.
pub const CLOSE_FORBIDDEN: u16 = 4403;

/// Close code (PROTOCOL.md section 9): another client instance claimed this `source`. A stop
/// code: two instances of one source would otherwise take the source from each other forever.
pub const CLOSE_REPLACED: u16 = 4409;

/// Close code (PROTOCOL.md section 9): a newer connection attempt of the same client instance
/// holds the `source`. Sent on a connection its client has given up on already (superseded),
/// or on an attempt that reached the server after a newer one (stale); not a stop code, so a
/// client that sees it anyway just connects again, with a newer attempt.
pub const CLOSE_SUPERSEDED: u16 = 4410;

/// Longest `source`, in bytes (`PROTOCOL.md` section 1).
pub const MAX_SOURCE_LEN: usize = 128;

/// Why a `source` (a client's identity) is not acceptable, or `None` when it is: 1 to 128
/// bytes of UTF-8 without control characters (no NUL, no C0 or C1 controls, no DEL), so that
/// an identity prints and logs as what it is (`PROTOCOL.md` section 1).
pub fn source_problem(source: &str) -> Option<&'static str> {
    if source.is_empty() || source.len() > MAX_SOURCE_LEN {
        return Some("source must be 1 to 128 bytes");
    }
    if source.chars().any(char::is_control) {
        return Some("source must not contain control characters");
    }
    None
}

/// A frame of protocol v1, decoded from (and borrowing) its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<'a> {
    /// An application message or a response (`re` set).
    Message(Message<'a>),
    /// Client -> server, first frame: version, session token, reliable server frames received.
    Hello {
        /// Protocol version the client speaks.
        version: u64,
        /// The client's session token.
        session: Cow<'a, str>,
        /// Reliable server frames received in this session.
        ack: u64,
        /// The `sid` of the last welcome received, if any: which instance of the session the
        /// `ack` counts in.
        sid: Option<Cow<'a, str>>,
    },
    /// Server -> client answer to the hello.
    Welcome(Welcome<'a>),
    /// Cumulative acknowledgement (see `PROTOCOL.md` sections 4 and 5 for each direction).
    Ack {
        /// The acknowledged position.
        ack: u64,
    },
    /// Server -> client: a message from a room's log (`PROTOCOL.md` section 14.1), at its
    /// position in the log. It is not counted in the session's numbering: the client keeps
    /// the last position per log, drops a frame at or below it, and acknowledges with
    /// [`Frame::LogAck`].
    Logged {
        /// The message, with its `room` (none: the log of everyone, a broadcast).
        message: Message<'a>,
        /// Its position in the room's log.
        pos: u64,
    },
    /// Server -> client: entries of a room's log before `first` are gone (past its retention)
    /// before this client had them (`PROTOCOL.md` section 14.1). The client, which knows the
    /// last position it has, tells the application how many it lost.
    Lost {
        /// The room (none: the log of everyone).
        room: Option<Cow<'a, str>>,
        /// The first position the log still has.
        first: u64,
        /// The server's count of the entries gone since the session's stored place, when the
        /// log went on (`began_again` false).
        lost: Option<u64>,
        /// The log was lost and begun again: its positions do not continue the client's.
        began_again: bool,
    },
    /// Client -> server: every frame of a room's log up to `pos` was received.
    LogAck {
        /// The room (none: the log of everyone).
        room: Option<Cow<'a, str>>,
        /// The last position received.
        pos: u64,
    },
    /// Application-level heartbeat request.
    Ping,
    /// Application-level heartbeat answer.
    Pong,
    /// An error report.
    Error(ErrorReport),
}

/// The server's answer to a hello (`PROTOCOL.md` section 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome<'a> {
    /// Protocol version the server speaks.
    pub version: u64,
    /// The session token, echoed.
    pub session: Cow<'a, str>,
    /// Highest client message id consumed in this session.
    pub ack: u64,
    /// Whether the server still held the session with nothing missing: every reliable frame
    /// after the hello's `ack` follows.
    pub resumed: bool,
    /// When not resumed after an earlier session: how many reliable frames addressed to the
    /// client were lost, when the server knows.
    pub lost: Option<u64>,
    /// Flow control: the most bytes of messages the client should have sent and not yet seen
    /// acknowledged (`PROTOCOL.md` section 4). Absent: no limit.
    pub window: Option<u64>,
    /// The server's name for this instance of the session, unique across its restarts; the
    /// client sends it back in its next hello.
    pub sid: Option<Cow<'a, str>>,
    /// The server's rate limit (`PROTOCOL.md` section 4): messages per second a client may
    /// send on average. Absent: no limit.
    pub rate: Option<u64>,
    /// The most messages the server lets a client send at once, above the rate, when it has
    /// been quiet (the token bucket's size). Present with `rate`.
    pub burst: Option<u64>,
}

/// An application message, or a response to one when `re` is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<'a> {
    /// The message type (never starts with `~`).
    pub kind: Cow<'a, str>,
    /// The sender's message id; absent from bare clients.
    pub id: Option<u64>,
    /// The id of the message this one answers.
    pub re: Option<u64>,
    /// The addressee's source.
    pub to: Option<Cow<'a, str>>,
    /// The sender's source, as registered by the server.
    pub source: Option<Cow<'a, str>>,
    /// The room the message is addressed to (client -> server) or was sent to (server ->
    /// client): every member of the room but the sender receives it (`PROTOCOL.md` section 14).
    pub room: Option<Cow<'a, str>>,
    /// The payload, as raw JSON text.
    pub payload: Option<&'a str>,
    /// On a response: the handler failed.
    pub error: Option<RemoteError>,
    /// The sender waits for a response (a `request`): a receiver with no handler for its type
    /// answers `no_handler` at once rather than leaving it to time out.
    pub request: bool,
}

/// A failure reported by the other side: `code` is machine-readable, `message` is for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteError {
    /// One of the codes of `PROTOCOL.md`, or an application's own.
    pub code: String,
    /// A human-readable explanation.
    pub message: String,
}

/// An `~error` frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorReport {
    /// What went wrong.
    pub error: RemoteError,
    /// The id of the offending message, if it had one.
    pub re: Option<u64>,
}

/// The error codes of `PROTOCOL.md` section 8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// Not JSON, not UTF-8, or nested too deep.
    InvalidJson,
    /// JSON, but not a valid envelope.
    InvalidFrame,
    /// A binary frame where text is expected.
    BinaryFrame,
    /// Larger than the maximum message size.
    TooLarge,
    /// An application type starting with `~`, or an unknown control type.
    ReservedType,
    /// `to` names a source that is not connected.
    UnknownTarget,
    /// The hello's version is not spoken.
    UnsupportedVersion,
    /// The recipient's outbound queue is full.
    Overflow,
    /// A handler failed.
    HandlerError,
    /// Over the server's rate limit: the message was not consumed; send it again later.
    RateLimited,
    /// A response (`re` with `to`) to a message the server did not relay to the responder.
    UnexpectedResponse,
    /// A request (`"request":true`) of a type its receiver has no handler for.
    NoHandler,
    /// A message to a room the sender is not a member of.
    NotMember,
    /// A room the client's credentials do not let it join.
    Forbidden,
    /// Messages of a room were lost to the client: its place in the room's log fell off the
    /// log's retention (`PROTOCOL.md` section 14.1). The client reports it (from a `~lost`
    /// frame) as an error with this code.
    Lost,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::InvalidFrame => "invalid_frame",
            ErrorCode::BinaryFrame => "binary_frame",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::ReservedType => "reserved_type",
            ErrorCode::UnknownTarget => "unknown_target",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::Overflow => "overflow",
            ErrorCode::HandlerError => "handler_error",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::UnexpectedResponse => "unexpected_response",
            ErrorCode::NoHandler => "no_handler",
            ErrorCode::NotMember => "not_member",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Lost => "lost",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a text is not a valid frame: the code to report and an explanation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// `InvalidJson`, `InvalidFrame` or `ReservedType`.
    pub code: ErrorCode,
    /// What exactly is wrong, for the error frame's `message`.
    pub message: Cow<'static, str>,
    /// The frame's `id`, when it could be read, so the error can name the message.
    pub id: Option<u64>,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl core::error::Error for DecodeError {}

impl From<JsonError> for DecodeError {
    fn from(error: JsonError) -> Self {
        DecodeError {
            code: ErrorCode::InvalidJson,
            message: json_error_message(&error).into(),
            id: None,
        }
    }
}

/// The envelope's fields as read, before deciding which frame they make. Strings and the
/// error object stay raw (checked, not yet unescaped or copied) until the frame is built: the
/// fields are then all `Copy`, so none of the early returns has anything to drop, which keeps
/// the decoder small in the wasm build.
#[derive(Default, Clone, Copy)]
struct Fields<'a> {
    kind: Option<RawValue<'a>>,
    payload: Option<RawValue<'a>>,
    id: Option<u64>,
    re: Option<u64>,
    to: Option<RawValue<'a>>,
    room: Option<RawValue<'a>>,
    request: Option<bool>,
    source: Option<RawValue<'a>>,
    error: Option<RawValue<'a>>,
    ack: Option<u64>,
    pos: Option<u64>,
    version: Option<u64>,
    session: Option<RawValue<'a>>,
    resumed: Option<bool>,
    lost: Option<u64>,
    window: Option<u64>,
    sid: Option<RawValue<'a>>,
    rate: Option<u64>,
    burst: Option<u64>,
    code: Option<RawValue<'a>>,
    message: Option<RawValue<'a>>,
}

/// `value` if it is a string that [`RawValue::as_str`] reads (which [`text`] then does again).
fn string(value: RawValue<'_>) -> Option<RawValue<'_>> {
    value.as_str().map(|_| value)
}

/// The text of a field checked by [`string`]: the slice between the quotes when there is no
/// escape in it (the common case, read once), else unescaped again.
fn text<'a>(value: Option<RawValue<'a>>) -> Option<Cow<'a, str>> {
    let value = value?;
    let quoted = value.text();
    let inner = quoted.get(1..quoted.len() - 1)?;
    if inner.bytes().any(|byte| byte == b'\\') {
        value.as_str()
    } else {
        Some(Cow::Borrowed(inner))
    }
}

fn invalid(message: &'static str) -> DecodeError {
    DecodeError {
        code: ErrorCode::InvalidFrame,
        message: Cow::Borrowed(message),
        id: None,
    }
}

fn set<T>(slot: &mut Option<T>, value: Option<T>, what: &'static str) -> Result<(), DecodeError> {
    if slot.is_some() {
        return Err(invalid("duplicate field"));
    }
    *slot = Some(value.ok_or_else(|| invalid(what))?);
    Ok(())
}

fn positive(value: RawValue<'_>) -> Option<u64> {
    value.as_safe_integer().filter(|&n| n >= 1)
}

fn remote_error(value: RawValue<'_>) -> Option<RemoteError> {
    let members = json::object_members(value.text()).ok()??;
    let mut code = None;
    let mut message = None;
    for (name, value) in members {
        match &*name {
            "code" => code = Some(value.as_str()?.into_owned()),
            "message" => message = Some(value.as_str()?.into_owned()),
            _ => {}
        }
    }
    Some(RemoteError {
        code: code?,
        message: message.unwrap_or_default(),
    })
}

impl<'a> Frame<'a> {
    /// Decodes one text frame.
    pub fn decode(text: &'a str) -> Result<Frame<'a>, DecodeError> {
        let members =
            json::object_members(text)?.ok_or_else(|| invalid("a frame must be a JSON object"))?;
        let mut f = Fields::default();
        for (name, value) in members {
            match &*name {
                "type" => set(&mut f.kind, string(value), "\"type\" must be a string")?,
                "payload" => set(&mut f.payload, Some(value), "")?,
                "id" => set(&mut f.id, positive(value), "\"id\" must be an integer >= 1")?,
                "re" => set(&mut f.re, positive(value), "\"re\" must be an integer >= 1")?,
                "to" => set(&mut f.to, string(value), "\"to\" must be a string")?,
                "room" => set(&mut f.room, string(value), "\"room\" must be a string")?,
                "request" => set(&mut f.request, Some(value.is_true()), "")?,
                "source" => set(&mut f.source, string(value), "\"source\" must be a string")?,
                "error" => set(
                    &mut f.error,
                    remote_error(value).map(|_| value),
                    "\"error\" must be an object with a string \"code\"",
                )?,
                "ack" => set(
                    &mut f.ack,
                    value.as_safe_integer(),
                    "\"ack\" must be an integer",
                )?,
                "pos" => set(
                    &mut f.pos,
                    positive(value),
                    "\"pos\" must be an integer >= 1",
                )?,
                "v" => set(
                    &mut f.version,
                    value.as_safe_integer(),
                    "\"v\" must be an integer",
                )?,
                "session" => set(
                    &mut f.session,
                    string(value),
                    "\"session\" must be a string",
                )?,
                "resumed" => set(&mut f.resumed, Some(value.is_true()), "")?,
                "lost" => set(
                    &mut f.lost,
                    value.as_safe_integer(),
                    "\"lost\" must be an integer",
                )?,
                "window" => set(
                    &mut f.window,
                    value.as_safe_integer(),
                    "\"window\" must be an integer",
                )?,
                "sid" => set(&mut f.sid, string(value), "\"sid\" must be a string")?,
                "rate" => set(
                    &mut f.rate,
                    value.as_safe_integer(),
                    "\"rate\" must be an integer",
                )?,
                "burst" => set(
                    &mut f.burst,
                    value.as_safe_integer(),
                    "\"burst\" must be an integer",
                )?,
                "code" => set(&mut f.code, string(value), "\"code\" must be a string")?,
                "message" => set(
                    &mut f.message,
                    string(value),
                    "\"message\" must be a string",
                )?,
                _ => {}
            }
        }
        let id = f.id;
        Frame::from_fields(f).map_err(|mut error| {
            error.id = id;
            error
        })
    }

    fn from_fields(f: Fields<'a>) -> Result<Frame<'a>, DecodeError> {
        let kind = text(f.kind).ok_or_else(|| invalid("\"type\" is required"))?;
        let Some(control) = kind.strip_prefix(RESERVED_PREFIX) else {
            if f.payload.is_some() && f.error.is_some() {
                return Err(invalid(
                    "a response carries \"payload\" or \"error\", not both",
                ));
            }
            if f.error.is_some() && f.re.is_none() {
                return Err(invalid(
                    "\"error\" is only valid on a response (with \"re\")",
                ));
            }
            let message = Message {
                kind,
                id: f.id,
                re: f.re,
                to: text(f.to),
                source: text(f.source),
                room: text(f.room),
                payload: f.payload.map(|raw| raw.text()),
                error: f.error.and_then(remote_error),
                request: f.request.unwrap_or(false),
            };
            return Ok(match f.pos {
                Some(pos) => Frame::Logged { message, pos },
                None => Frame::Message(message),
            });
        };
        let ack = f.ack.unwrap_or(0);
        Ok(match control {
            "hello" | "welcome" => {
                let version = f.version.ok_or_else(|| invalid("\"v\" is required"))?;
                let session = text(f.session).ok_or_else(|| invalid("\"session\" is required"))?;
                if control == "hello" {
                    Frame::Hello {
                        version,
                        session,
                        ack,
                        sid: text(f.sid),
                    }
                } else {
                    Frame::Welcome(Welcome {
                        version,
                        session,
                        ack,
                        resumed: f.resumed.unwrap_or(false),
                        lost: f.lost,
                        window: f.window,
                        sid: text(f.sid),
                        rate: f.rate,
                        burst: f.burst,
                    })
                }
            }
            "ack" => match f.pos {
                Some(pos) => Frame::LogAck {
                    room: text(f.room),
                    pos,
                },
                None => Frame::Ack {
                    ack: f.ack.ok_or_else(|| invalid("\"ack\" is required"))?,
                },
            },
            "lost" => Frame::Lost {
                room: text(f.room),
                first: f.pos.ok_or_else(|| invalid("\"pos\" is required"))?,
                lost: f.lost,
                began_again: f.resumed == Some(false),
            },
            "ping" => Frame::Ping,
            "pong" => Frame::Pong,
            "error" => Frame::Error(ErrorReport {
                error: RemoteError {
                    code: text(f.code)
                        .ok_or_else(|| invalid("\"code\" is required"))?
                        .into_owned(),
                    message: text(f.message).map(Cow::into_owned).unwrap_or_default(),
                },
                re: f.re,
            }),
            _ => {
                return Err(DecodeError {
                    code: ErrorCode::ReservedType,
                    message: Cow::Borrowed("types starting with '~' are reserved"),
                    id: None,
                })
            }
        })
    }

    /// Encodes the frame as JSON text.
    ///
    /// Always inlined, and each variant's text written by a function of its own: a call site
    /// that names its frame (`Frame::Ack { .. }.encode()`) links only that frame's encoder. The
    /// client's wasm build so carries no welcome or error-report encoder, which only the server
    /// sends.
    #[inline(always)]
    pub fn encode(&self) -> String {
        match self {
            Frame::Message(message) => message.encode(),
            Frame::Hello {
                version,
                session,
                ack,
                sid,
            } => encode_hello(*version, session, *ack, sid.as_deref()),
            Frame::Welcome(welcome) => welcome.encode(),
            Frame::Ack { ack } => encode_ack(*ack),
            Frame::Logged { message, pos } => {
                let mut out = String::from("{\"pos\":");
                push_u64(&mut out, *pos);
                out.push(',');
                let text = message.encode();
                out.push_str(text.get(1..).unwrap_or_default());
                out
            }
            Frame::LogAck { room, pos } => encode_log_ack(room.as_deref(), *pos),
            Frame::Lost {
                room,
                first,
                lost,
                began_again,
            } => {
                let mut out = String::from("{\"type\":\"~lost\",\"pos\":");
                push_u64(&mut out, *first);
                if let Some(room) = room {
                    out.push_str(",\"room\":");
                    json::write_string(&mut out, room);
                }
                if let Some(lost) = lost {
                    out.push_str(",\"lost\":");
                    push_u64(&mut out, *lost);
                }
                if *began_again {
                    out.push_str(",\"resumed\":false");
                }
                out.push('}');
                out
            }
            Frame::Ping => String::from("{\"type\":\"~ping\"}"),
            Frame::Pong => String::from("{\"type\":\"~pong\"}"),
            Frame::Error(report) => report.encode(),
        }
    }
}

fn encode_hello(version: u64, session: &str, ack: u64, sid: Option<&str>) -> String {
    let mut out = String::with_capacity(64);
    out.push_str("{\"type\":\"~hello\",\"v\":");
    push_u64(&mut out, version);
    out.push_str(",\"session\":");
    json::write_string(&mut out, session);
    out.push_str(",\"ack\":");
    push_u64(&mut out, ack);
    if let Some(sid) = sid {
        out.push_str(",\"sid\":");
        json::write_string(&mut out, sid);
    }
    out.push('}');
    out
}

fn encode_log_ack(room: Option<&str>, pos: u64) -> String {
    let mut out = String::with_capacity(48);
    out.push_str("{\"type\":\"~ack\",\"pos\":");
    push_u64(&mut out, pos);
    if let Some(room) = room {
        out.push_str(",\"room\":");
        json::write_string(&mut out, room);
    }
    out.push('}');
    out
}

fn encode_ack(ack: u64) -> String {
    let mut out = String::with_capacity(32);
    out.push_str("{\"type\":\"~ack\",\"ack\":");
    push_u64(&mut out, ack);
    out.push('}');
    out
}

impl Welcome<'_> {
    /// The `~welcome` frame's JSON text (see [`Frame::encode`]).
    fn encode(&self) -> String {
        let mut out = String::with_capacity(64);
        out.push_str("{\"type\":\"~welcome\",\"v\":");
        push_u64(&mut out, self.version);
        out.push_str(",\"session\":");
        json::write_string(&mut out, &self.session);
        out.push_str(",\"ack\":");
        push_u64(&mut out, self.ack);
        out.push_str(if self.resumed {
            ",\"resumed\":true"
        } else {
            ",\"resumed\":false"
        });
        if let Some(lost) = self.lost {
            out.push_str(",\"lost\":");
            push_u64(&mut out, lost);
        }
        if let Some(window) = self.window {
            out.push_str(",\"window\":");
            push_u64(&mut out, window);
        }
        if let Some(sid) = &self.sid {
            out.push_str(",\"sid\":");
            json::write_string(&mut out, sid);
        }
        if let Some(rate) = self.rate {
            out.push_str(",\"rate\":");
            push_u64(&mut out, rate);
        }
        if let Some(burst) = self.burst {
            out.push_str(",\"burst\":");
            push_u64(&mut out, burst);
        }
        out.push('}');
        out
    }
}

impl ErrorReport {
    /// The `~error` frame's JSON text (see [`Frame::encode`]).
    fn encode(&self) -> String {
        let mut out = String::with_capacity(64);
        out.push_str("{\"type\":\"~error\",\"code\":");
        json::write_string(&mut out, &self.error.code);
        out.push_str(",\"message\":");
        json::write_string(&mut out, &self.error.message);
        if let Some(re) = self.re {
            out.push_str(",\"re\":");
            push_u64(&mut out, re);
        }
        out.push('}');
        out
    }
}

impl Message<'_> {
    /// Appends the message's JSON text to `out`. The payload is copied verbatim: it must be
    /// valid JSON text (it is, when it came from [`Frame::decode`] or [`json::validate`]).
    pub fn encode_into(&self, out: &mut String) {
        out.push_str("{\"type\":");
        json::write_string(out, &self.kind);
        if let Some(id) = self.id {
            out.push_str(",\"id\":");
            push_u64(out, id);
        }
        if let Some(re) = self.re {
            out.push_str(",\"re\":");
            push_u64(out, re);
        }
        if self.request {
            out.push_str(",\"request\":true");
        }
        if let Some(to) = &self.to {
            out.push_str(",\"to\":");
            json::write_string(out, to);
        }
        if let Some(source) = &self.source {
            out.push_str(",\"source\":");
            json::write_string(out, source);
        }
        if let Some(room) = &self.room {
            out.push_str(",\"room\":");
            json::write_string(out, room);
        }
        if let Some(payload) = self.payload {
            out.push_str(",\"payload\":");
            out.push_str(payload);
        }
        if let Some(error) = &self.error {
            out.push_str(",\"error\":{\"code\":");
            json::write_string(out, &error.code);
            out.push_str(",\"message\":");
            json::write_string(out, &error.message);
            out.push('}');
        }
        out.push('}');
    }

    /// The message's JSON text.
    pub fn encode(&self) -> String {
        let mut out =
            String::with_capacity(48 + self.kind.len() + self.payload.map_or(0, str::len));
        self.encode_into(&mut out);
        out
    }
}

/// `JsonError`'s Display text, built without the formatting machinery (which the wasm build
/// avoids: decoding is on the client's receive path).
fn json_error_message(error: &JsonError) -> String {
    let mut message = String::from(error.kind.as_str());
    message.push_str(" at byte ");
    push_u64(&mut message, error.offset as u64);
    message
}

/// Writes a decimal integer without the formatting machinery (which the wasm build avoids)
/// and without validating the digits as UTF-8 (which `push_str` of them would need).
pub fn push_u64(out: &mut String, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    let digits = digits.get(at..).unwrap_or_default();
    out.reserve(digits.len());
    for &digit in digits {
        out.push(char::from(digit));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(text: &str) -> Message<'_> {
        match Frame::decode(text) {
            Ok(Frame::Message(message)) => message,
            other => panic!("not a message: {other:?}"),
        }
    }

    #[test]
    fn bare_frame_is_a_message() {
        let m = message(r#"{"type":"chat-message","payload":{"message":"Hello"},"source":"me"}"#);
        assert_eq!(m.kind, "chat-message");
        assert_eq!(m.payload, Some(r#"{"message":"Hello"}"#));
        assert_eq!(m.id, None);
        assert_eq!(m.source.as_deref(), Some("me"));
    }

    #[test]
    fn messages_round_trip() {
        let original = Message {
            kind: Cow::Borrowed("chat \"x\""),
            id: Some(7),
            re: Some(3),
            to: Some(Cow::Borrowed("bob")),
            source: Some(Cow::Borrowed("alice")),
            room: None,
            payload: Some("[1, {\"a\": null}]"),
            error: None,
            request: true,
        };
        let text = original.encode();
        assert!(text.contains(r#""request":true"#), "{text}");
        assert_eq!(message(&text), original);
        let failed = Message {
            payload: None,
            error: Some(RemoteError {
                code: "handler_error".into(),
                message: "boom".into(),
            }),
            request: false,
            ..original
        };
        assert_eq!(message(&failed.encode()), failed);
    }

    #[test]
    fn control_frames_round_trip() {
        for frame in [
            Frame::Hello {
                version: 1,
                session: "abc".into(),
                ack: 12,
                sid: None,
            },
            Frame::Hello {
                version: 1,
                session: "abc".into(),
                ack: 12,
                sid: Some("7f3a-2".into()),
            },
            Frame::Welcome(Welcome {
                version: 1,
                session: "abc".into(),
                ack: 41,
                resumed: true,
                lost: None,
                window: None,
                sid: None,
                rate: None,
                burst: None,
            }),
            Frame::Welcome(Welcome {
                version: 1,
                session: "abc".into(),
                ack: 0,
                resumed: false,
                lost: Some(17),
                window: Some(262_144),
                sid: Some("7f3a-3".into()),
                rate: Some(100),
                burst: Some(200),
            }),
            Frame::Ack { ack: 0 },
            Frame::LogAck {
                room: Some("general".into()),
                pos: 1_765_000_000_000_001,
            },
            Frame::LogAck { room: None, pos: 9 },
            Frame::Lost {
                room: Some("general".into()),
                first: 500,
                lost: Some(12),
                began_again: false,
            },
            Frame::Lost {
                room: None,
                first: 1_765_000_000_000_001,
                lost: None,
                began_again: true,
            },
            Frame::Logged {
                message: Message {
                    kind: "chat".into(),
                    id: Some(3),
                    re: None,
                    to: None,
                    source: Some("alice".into()),
                    room: Some("general".into()),
                    payload: Some("\"hi\""),
                    error: None,
                    request: false,
                },
                pos: 12,
            },
            Frame::Ping,
            Frame::Pong,
            Frame::Error(ErrorReport {
                error: RemoteError {
                    code: "unknown_target".into(),
                    message: "no \"bob\"".into(),
                },
                re: Some(7),
            }),
        ] {
            let text = frame.encode();
            assert_eq!(Frame::decode(&text).as_ref(), Ok(&frame), "{text}");
        }
    }

    #[test]
    fn invalid_envelopes_name_their_problem() {
        let code = |text: &str| Frame::decode(text).expect_err(text).code;
        assert_eq!(code("not json"), ErrorCode::InvalidJson);
        assert_eq!(code("[1]"), ErrorCode::InvalidFrame);
        assert_eq!(code(r#"{"payload":1}"#), ErrorCode::InvalidFrame);
        assert_eq!(code(r#"{"type":5}"#), ErrorCode::InvalidFrame);
        assert_eq!(code(r#"{"type":"a","id":0}"#), ErrorCode::InvalidFrame);
        assert_eq!(code(r#"{"type":"a","id":1.5}"#), ErrorCode::InvalidFrame);
        assert_eq!(code(r#"{"type":"a","type":"b"}"#), ErrorCode::InvalidFrame);
        assert_eq!(code(r#"{"type":"~nope"}"#), ErrorCode::ReservedType);
        assert_eq!(
            code(r#"{"type":"~hello","session":"s"}"#),
            ErrorCode::InvalidFrame
        );
    }

    #[test]
    fn decode_error_names_the_offending_id() {
        let error = Frame::decode(r#"{"type":"~x","id":9}"#).expect_err("reserved");
        assert_eq!(error.id, Some(9));
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let m = message(r#"{"type":"a","future":{"x":[1]},"id":2}"#);
        assert_eq!(m.id, Some(2));
    }

    #[test]
    fn json_error_messages_match_display() {
        let error = Frame::decode("{\"type\":").expect_err("truncated");
        let json_error = json::validate("{\"type\":").expect_err("truncated");
        assert_eq!(error.message, json_error.to_string());
    }

    #[test]
    fn integers_encode_without_fmt() {
        for value in [0, 7, 10, 12345, u64::MAX] {
            let mut out = String::new();
            push_u64(&mut out, value);
            assert_eq!(out, value.to_string());
        }
    }
}
