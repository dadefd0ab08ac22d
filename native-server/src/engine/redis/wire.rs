//! What relays tell each other on their channels, and how sources are spelled in keys.

use wsrelay_core::protocol::RemoteError;

/// A source's bytes in lowercase hex: any source is a safe key part (no `{`, `}` or `:`).
pub(crate) fn hex(source: &str) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(source.len() * 2);
    for byte in source.bytes() {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 15)]));
    }
    out
}

/// The source `hex` spells, if it is valid hex of UTF-8.
pub(crate) fn unhex(hex: &str) -> Option<String> {
    let digit = |c: u8| char::from(c).to_digit(16);
    let bytes = hex
        .as_bytes()
        .chunks(2)
        .map(|pair| match pair {
            [hi, lo] => Some(u8::try_from(digit(*hi)? * 16 + digit(*lo)?).ok()?),
            _ => None,
        })
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

/// A note from one relay to another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Note {
    /// A frame appended for sources of the receiving relay, at these positions (hex, position).
    Frames {
        entries: Vec<(String, u64)>,
        frame: String,
    },
    /// Frames were appended for these sources (hex) earlier without their owner hearing of it
    /// (the answer to the append was lost): they should read their mailboxes.
    Check { sources: Vec<String> },
    /// A relay could not announce some appends (Redis was unreachable): every relay's
    /// connections read their mailboxes.
    Sweep,
    /// The source (hex) was claimed with `epoch`: older connections of it are replaced, or
    /// `superseded` by a newer attempt of the same client instance.
    Replaced {
        source: String,
        epoch: u64,
        superseded: bool,
    },
    /// The source's (hex) mailbox overflowed: its connection must close.
    Overflowed { source: String },
    /// An entry of a room's log (`L room position exclude`, hex names, `room` empty for the
    /// log of everyone, `exclude` empty for nobody; then a newline and the frame). Written by
    /// the append script itself, published to every relay.
    Logged {
        room: String,
        pos: u64,
        exclude: String,
        frame: String,
    },
    /// The server changed the rooms of the source (hex): its connection reads them again.
    Rooms { source: String },
    /// A relay no longer holds the room (hex) back for a member of its: senders go on.
    RoomGoesOn { room: String },
    /// A client's answer to a message of the receiving relay.
    Response {
        source: String,
        kind: String,
        re: u64,
        result: Result<Option<String>, RemoteError>,
    },
}

impl Note {
    /// `F` lines `hex position`, a blank line, the frame; `R hex epoch`; `O hex`;
    /// `A re` / source / kind / `P` payload, `N` (none) or `E` code, then the message.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = String::new();
        match self {
            Note::Frames { entries, frame } => {
                out.push('F');
                for (source, position) in entries {
                    out.push('\n');
                    out.push_str(source);
                    out.push(' ');
                    out.push_str(&position.to_string());
                }
                out.push_str("\n\n");
                out.push_str(frame);
            }
            Note::Check { sources } => {
                out.push('C');
                for source in sources {
                    out.push(' ');
                    out.push_str(source);
                }
            }
            Note::Sweep => out.push('S'),
            Note::Replaced {
                source,
                epoch,
                superseded,
            } => {
                out = format!("R {source} {epoch} {}", u8::from(*superseded));
            }
            Note::Overflowed { source } => out = format!("O {source}"),
            Note::Logged {
                room,
                pos,
                exclude,
                frame,
            } => out = format!("L {room} {pos} {exclude}\n{frame}"),
            Note::Rooms { source } => out = format!("M {source}"),
            Note::RoomGoesOn { room } => out = format!("W {room}"),
            Note::Response {
                source,
                kind,
                re,
                result,
            } => {
                out = format!("A {re}\n{}\n{}\n", hex(source), hex(kind));
                match result {
                    Ok(Some(payload)) => {
                        out.push('P');
                        out.push_str(payload);
                    }
                    Ok(None) => out.push('N'),
                    Err(error) => {
                        out.push('E');
                        out.push_str(&hex(&error.code));
                        out.push('\n');
                        out.push_str(&error.message);
                    }
                }
            }
        }
        out.into_bytes()
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<Note> {
        let text = std::str::from_utf8(bytes).ok()?;
        let (head, rest) = text.split_once('\n').unwrap_or((text, ""));
        match head.split(' ').collect::<Vec<_>>().as_slice() {
            ["F"] => {
                // Entry lines up to an empty one; the frame is everything after it.
                let mut entries = Vec::new();
                let mut remaining = rest;
                loop {
                    let (line, after) = remaining.split_once('\n')?;
                    if line.is_empty() {
                        return Some(Note::Frames {
                            entries,
                            frame: after.to_owned(),
                        });
                    }
                    let (source, position) = line.split_once(' ')?;
                    entries.push((source.to_owned(), position.parse().ok()?));
                    remaining = after;
                }
            }
            ["C", sources @ ..] => Some(Note::Check {
                sources: sources.iter().map(|source| (*source).to_owned()).collect(),
            }),
            ["S"] => Some(Note::Sweep),
            ["R", source, epoch, superseded] => Some(Note::Replaced {
                source: (*source).to_owned(),
                epoch: epoch.parse().ok()?,
                superseded: *superseded == "1",
            }),
            ["L", room, pos, exclude] => Some(Note::Logged {
                room: (*room).to_owned(),
                pos: pos.parse().ok()?,
                exclude: (*exclude).to_owned(),
                frame: rest.to_owned(),
            }),
            ["W", room] => Some(Note::RoomGoesOn {
                room: (*room).to_owned(),
            }),
            ["M", source] => Some(Note::Rooms {
                source: (*source).to_owned(),
            }),
            ["O", source] => Some(Note::Overflowed {
                source: (*source).to_owned(),
            }),
            ["A", re] => {
                let mut parts = rest.splitn(3, '\n');
                let source = unhex(parts.next()?)?;
                let kind = unhex(parts.next()?)?;
                let body = parts.next()?;
                let result = match body.split_at_checked(1)? {
                    ("P", payload) => Ok(Some(payload.to_owned())),
                    ("N", _) => Ok(None),
                    ("E", error) => {
                        let (code, message) = error.split_once('\n')?;
                        Err(RemoteError {
                            code: unhex(code)?,
                            message: message.to_owned(),
                        })
                    }
                    _ => return None,
                };
                Some(Note::Response {
                    source,
                    kind,
                    re: re.parse().ok()?,
                    result,
                })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_round_trip_through_hex() {
        for source in ["alice", "", "{x}:y", "é€😀"] {
            assert_eq!(unhex(&hex(source)).as_deref(), Some(source));
        }
        assert_eq!(hex("A{"), "417b");
        assert_eq!(unhex("4"), None);
        assert_eq!(unhex("zz"), None);
        assert_eq!(unhex("ff"), None, "not UTF-8");
    }

    #[test]
    fn notes_round_trip() {
        let notes = [
            Note::Frames {
                entries: vec![("616c696365".into(), 7), ("626f62".into(), 12)],
                frame: "{\"type\":\"chat\",\"payload\":\"a\\nb\\n\\nc\"}".into(),
            },
            Note::Frames {
                entries: vec![],
                frame: "{\n\n}".into(),
            },
            Note::Replaced {
                source: "616c696365".into(),
                epoch: 9,
                superseded: false,
            },
            Note::Replaced {
                source: "616c696365".into(),
                epoch: 10,
                superseded: true,
            },
            Note::Overflowed {
                source: "626f62".into(),
            },
            Note::Check {
                sources: vec!["616c696365".into(), "626f62".into()],
            },
            Note::Sweep,
            Note::Response {
                source: "bob b".into(),
                kind: "get\nname".into(),
                re: (3 << 32) | 17,
                result: Ok(Some("{\"a\":\"\\n\"}".into())),
            },
            Note::Response {
                source: "bob".into(),
                kind: "k".into(),
                re: 1,
                result: Ok(None),
            },
            Note::Response {
                source: "bob".into(),
                kind: "k".into(),
                re: 2,
                result: Err(RemoteError {
                    code: "handler_error".into(),
                    message: "line one\nline two".into(),
                }),
            },
        ];
        for note in notes {
            assert_eq!(Note::decode(&note.encode()), Some(note.clone()), "{note:?}");
        }
        assert_eq!(Note::decode(b"X"), None);
        assert_eq!(Note::decode(b"R abc notanumber"), None);
    }
}
