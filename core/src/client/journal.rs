//! The journal that keeps a client's state across processes (`persist`; PROTOCOL.md section
//! 10): the lines the core writes, which the drivers store as they are, and their replay.
//!
//! One JSON object per line. A batch of lines ends with a commit line, and only committed
//! batches count on replay: a process killed while writing one leaves a tail that is ignored
//! (and the first save after the restore rewrites the whole journal, so no later line is
//! appended to a torn one).
//!
//! | line | meaning |
//! |---|---|
//! | `{"session":S,"sid":I}` | the session token, and the session instance of the last welcome (`null` before one); a new instance counts frames from 1 again |
//! | `{"n":ID}` | ids up to `ID` were used (the next message gets a higher one) |
//! | `{"q":ID,"r":1,"e":MS,"d":MS,"f":FRAME}` | message `ID` was queued: `r` a request, `e` its time-to-live's end, `d` its request's deadline (both in milliseconds since the Unix epoch), `FRAME` its text |
//! | `{"m":ID}` | the queued messages up to `ID` may have been transmitted |
//! | `{"x":"A-B,C"}` | these ids left the queue (acknowledged, failed, expired) |
//! | `{"w":N}` | the session's reliable frames 1 to `N` were handled |
//! | `{"h":N}` | frame `N`, above that watermark, was handled |
//! | `{"c":MARK}` | end of batch `MARK` |

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use crate::protocol::{json, push_u64};

/// A message the journal holds: queued by an earlier process and not settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Queued {
    pub(crate) id: u64,
    pub(crate) request: bool,
    /// When its time-to-live ends, in milliseconds since the Unix epoch.
    pub(crate) expires: Option<u64>,
    /// When its request times out, in milliseconds since the Unix epoch.
    pub(crate) deadline: Option<u64>,
    pub(crate) frame: String,
}

/// What a journal says, replayed: the state a client resumes from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Journal {
    pub(crate) session: Option<String>,
    pub(crate) sid: Option<String>,
    pub(crate) last_id: u64,
    /// Queued messages up to this id may have been transmitted.
    pub(crate) marked: u64,
    /// Reliable frames 1 to `handled` of the session were handled.
    pub(crate) handled: u64,
    /// Frames above `handled` that were handled, ascending.
    pub(crate) handled_above: Vec<u64>,
    /// Messages still queued, ids ascending.
    pub(crate) queued: Vec<Queued>,
}

/// A journal that cannot be read: the line (from 1) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalError {
    /// The line, counted from 1.
    pub line: usize,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl fmt::Display for JournalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "journal line {}: {}", self.line, self.reason)
    }
}

impl core::error::Error for JournalError {}

/// One line, read.
enum Line {
    Session(String, Option<String>),
    Used(u64),
    Queued(Queued),
    Marked(u64),
    Left(Vec<(u64, u64)>),
    Watermark(u64),
    Handled(u64),
    Commit,
}

impl Journal {
    /// Replays `text`: every committed batch, in order; an uncommitted tail is ignored.
    pub(crate) fn replay(text: &str) -> Result<Journal, JournalError> {
        let mut journal = Journal::default();
        let mut batch = Vec::new();
        let lines: Vec<&str> = text.split('\n').collect();
        for (index, text) in lines.iter().enumerate() {
            if text.is_empty() {
                continue;
            }
            let error = |reason| JournalError {
                line: index + 1,
                reason,
            };
            match read_line(text) {
                Ok(Line::Commit) => {
                    for line in batch.drain(..) {
                        journal.apply(line).map_err(error)?;
                    }
                }
                Ok(line) => batch.push(line),
                Err(reason) => {
                    // Only a process killed mid-write leaves an unreadable line, and then as
                    // the last one: a commit after it means the journal was damaged.
                    let committed_after = lines
                        .get(index + 1..)
                        .unwrap_or_default()
                        .iter()
                        .any(|line| matches!(read_line(line), Ok(Line::Commit)));
                    if committed_after {
                        return Err(error(reason));
                    }
                    break;
                }
            }
        }
        Ok(journal)
    }

    fn apply(&mut self, line: Line) -> Result<(), &'static str> {
        match line {
            Line::Session(session, sid) => {
                if sid != self.sid {
                    // Another session instance: the frames are counted from 1 again.
                    self.handled = 0;
                    self.handled_above.clear();
                }
                self.session = Some(session);
                self.sid = sid;
            }
            Line::Used(id) => self.last_id = self.last_id.max(id),
            Line::Queued(queued) => {
                if queued.id <= self.last_id {
                    return Err("message ids must increase");
                }
                self.last_id = queued.id;
                self.queued.push(queued);
            }
            Line::Marked(id) => self.marked = self.marked.max(id),
            Line::Left(ranges) => {
                self.queued.retain(|queued| {
                    !ranges
                        .iter()
                        .any(|&(from, to)| (from..=to).contains(&queued.id))
                });
            }
            Line::Watermark(handled) => {
                self.handled = handled;
                self.handled_above.retain(|&seq| seq > handled);
            }
            Line::Handled(seq) => {
                if seq > self.handled {
                    if let Err(at) = self.handled_above.binary_search(&seq) {
                        self.handled_above.insert(at, seq);
                    }
                }
            }
            Line::Commit => {}
        }
        Ok(())
    }
}

fn read_line(text: &str) -> Result<Line, &'static str> {
    let members = match json::object_members(text) {
        Ok(Some(members)) => members,
        _ => return Err("not a JSON object"),
    };
    let (name, _) = members.first().ok_or("an empty object")?;
    let get = |key: &str| {
        members
            .iter()
            .find(|(name, _)| &**name == key)
            .map(|(_, value)| *value)
    };
    let number = |key: &str| {
        get(key)
            .and_then(|value| value.as_safe_integer())
            .ok_or("a number is missing or out of range")
    };
    let optional = |key: &str| match get(key) {
        None => Ok(None),
        Some(value) => value.as_safe_integer().map(Some).ok_or("a bad number"),
    };
    Ok(match name.as_ref() {
        "session" => {
            let session = get("session").and_then(|value| value.as_str());
            let sid = get("sid").and_then(|value| value.as_str());
            Line::Session(
                session.ok_or("a session that is not a string")?.into(),
                sid.map(Into::into),
            )
        }
        "n" => Line::Used(number("n")?),
        "q" => Line::Queued(Queued {
            id: number("q")?,
            request: get("r").is_some_and(|value| value.text() == "1"),
            expires: optional("e")?,
            deadline: optional("d")?,
            frame: get("f")
                .and_then(|value| value.as_str())
                .ok_or("a frame that is not a string")?
                .into(),
        }),
        "m" => Line::Marked(number("m")?),
        "x" => Line::Left(read_ranges(
            &get("x")
                .and_then(|value| value.as_str())
                .ok_or("ids that are not a string")?,
        )?),
        "w" => Line::Watermark(number("w")?),
        "h" => Line::Handled(number("h")?),
        "c" => Line::Commit,
        _ => return Err("an unknown line"),
    })
}

/// `"A-B,C"` as `[(A, B), (C, C)]`.
fn read_ranges(text: &str) -> Result<Vec<(u64, u64)>, &'static str> {
    let number = |text: &str| text.parse::<u64>().map_err(|_| "a bad id range");
    text.split(',')
        .map(|range| match range.split_once('-') {
            Some((from, to)) => Ok((number(from)?, number(to)?)),
            None => number(range).map(|id| (id, id)),
        })
        .collect()
}

/// Appends `ids` (ascending) to `out` as ranges, `"A-B,C"`.
pub(crate) fn write_ranges(out: &mut String, ids: &[u64]) {
    let mut index = 0;
    while let Some(&from) = ids.get(index) {
        let mut to = from;
        index += 1;
        while ids.get(index) == Some(&(to + 1)) {
            to += 1;
            index += 1;
        }
        if ids.first() != Some(&from) {
            out.push(',');
        }
        push_u64(out, from);
        if to != from {
            out.push('-');
            push_u64(out, to);
        }
    }
}

/// Appends the line `{"KEY":VALUE}` and its newline.
pub(crate) fn write_number_line(out: &mut String, key: &str, value: u64) {
    out.push_str("{\"");
    out.push_str(key);
    out.push_str("\":");
    push_u64(out, value);
    out.push_str("}\n");
}

/// Appends the session line.
pub(crate) fn write_session_line(out: &mut String, session: &str, sid: Option<&str>) {
    out.push_str("{\"session\":");
    json::write_string(out, session);
    out.push_str(",\"sid\":");
    match sid {
        Some(sid) => json::write_string(out, sid),
        None => out.push_str("null"),
    }
    out.push_str("}\n");
}

/// Appends the line of a queued message.
pub(crate) fn write_queued_line(out: &mut String, queued: &Queued) {
    out.push_str("{\"q\":");
    push_u64(out, queued.id);
    if queued.request {
        out.push_str(",\"r\":1");
    }
    for (key, value) in [(",\"e\":", queued.expires), (",\"d\":", queued.deadline)] {
        if let Some(value) = value {
            out.push_str(key);
            push_u64(out, value);
        }
    }
    out.push_str(",\"f\":");
    json::write_string(out, &queued.frame);
    out.push_str("}\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn queued(id: u64, frame: &str) -> Queued {
        Queued {
            id,
            request: false,
            expires: None,
            deadline: None,
            frame: frame.into(),
        }
    }

    #[test]
    fn ranges_round_trip() {
        let mut out = String::new();
        write_ranges(&mut out, &[1, 2, 3, 5, 7, 8]);
        assert_eq!(out, "1-3,5,7-8");
        assert_eq!(read_ranges(&out), Ok(vec![(1, 3), (5, 5), (7, 8)]));
        assert!(read_ranges("1-x").is_err());
    }

    #[test]
    fn committed_batches_count_and_a_torn_tail_does_not() {
        let mut text = String::new();
        write_session_line(&mut text, "s1", None);
        let mut request = queued(1, r#"{"type":"a","id":1,"request":true}"#);
        request.request = true;
        request.deadline = Some(1_700_000_000_000);
        write_queued_line(&mut text, &request);
        write_queued_line(
            &mut text,
            &queued(2, r#"{"type":"b","id":2,"payload":"x\n"}"#),
        );
        write_number_line(&mut text, "c", 1);
        write_number_line(&mut text, "m", 2);
        text.push_str("{\"x\":\"1\"}\n");
        write_number_line(&mut text, "w", 4);
        write_number_line(&mut text, "h", 6);
        write_number_line(&mut text, "c", 2);
        // A batch that never got its commit, and a torn line.
        text.push_str("{\"x\":\"2\"}\n{\"q\":3,\"f\":\"{\\\"ty");
        let journal = Journal::replay(&text).expect("replays");
        assert_eq!(journal.session.as_deref(), Some("s1"));
        assert_eq!(journal.last_id, 2);
        assert_eq!(journal.marked, 2);
        assert_eq!(journal.handled, 4);
        assert_eq!(journal.handled_above, [6]);
        assert_eq!(journal.queued.len(), 1);
        assert_eq!(
            journal.queued[0].frame,
            r#"{"type":"b","id":2,"payload":"x\n"}"#
        );
        // A later watermark takes in what was handled above the earlier one.
        write_number_line(&mut text, "w", 7);
        assert!(Journal::replay(&text).expect("replays").handled_above == [6]);
    }

    #[test]
    fn a_new_session_starts_the_count_again() {
        let mut text = String::new();
        write_session_line(&mut text, "s1", Some("i1"));
        write_number_line(&mut text, "w", 9);
        write_number_line(&mut text, "c", 1);
        write_session_line(&mut text, "s1", Some("i2"));
        write_number_line(&mut text, "w", 0);
        write_number_line(&mut text, "c", 2);
        let journal = Journal::replay(&text).expect("replays");
        assert_eq!(journal.sid.as_deref(), Some("i2"));
        assert_eq!(journal.handled, 0);
    }

    #[test]
    fn a_damaged_line_before_a_commit_is_an_error() {
        let mut text = String::new();
        write_number_line(&mut text, "n", 1);
        text.push_str("{\"n\":\n");
        write_number_line(&mut text, "c", 1);
        assert_eq!(Journal::replay(&text).expect_err("damaged").line, 2);
    }

    #[test]
    fn ids_must_increase() {
        let mut text = String::new();
        write_queued_line(&mut text, &queued(2, "{}"));
        write_queued_line(&mut text, &queued(2, "{}"));
        write_number_line(&mut text, "c", 1);
        let error = Journal::replay(&text).expect_err("refused");
        assert_eq!(error.line, 3);
    }
}
