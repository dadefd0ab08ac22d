//! Two bounds a connection keeps on what its client may do: the rate of its messages (a token
//! bucket, time as input) and which messages it may answer (the recent messages with an id
//! relayed to it).

use std::borrow::Cow;
use std::collections::VecDeque;

use crate::bucket::{TokenBucket, TOKEN};
use crate::protocol::json;
use crate::Instant;

/// A client's message rate limit (`PROTOCOL.md` section 4): on average `per_second` messages
/// per second, and up to `burst` at once after a quiet spell (a token bucket of `burst` tokens
/// refilled at `per_second`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Messages per second, on average (at least 1).
    pub per_second: u32,
    /// The bucket's size: messages a quiet client may send at once (at least 1).
    pub burst: u32,
}

/// What the limiter says about one more frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Within the limit.
    Allow,
    /// Over the limit: refuse this frame.
    Refuse,
    /// Over the limit for longer than the rate forgives: close the connection.
    Flood,
}

/// A token bucket, and a count of refusals: each refused frame adds a token of debt, which
/// drains at the same rate. A client that sends at up to twice the rate has part of its frames
/// refused and is never cut; one that keeps going faster runs up more than `burst` of debt and
/// is closed.
#[derive(Debug, Clone)]
pub(crate) struct Limiter {
    limit: RateLimit,
    bucket: TokenBucket,
    debt: u64,
}

impl Limiter {
    pub(crate) fn new(limit: RateLimit, now: Instant) -> Self {
        let limit = RateLimit {
            per_second: limit.per_second.max(1),
            burst: limit.burst.max(1),
        };
        Limiter {
            bucket: TokenBucket::new(limit.per_second.into(), limit.burst.into(), now),
            limit,
            debt: 0,
        }
    }

    pub(crate) fn limit(&self) -> RateLimit {
        self.limit
    }

    /// Counts one frame arriving at `now`.
    pub(crate) fn take(&mut self, now: Instant) -> Verdict {
        let gained = self.bucket.refill(now);
        self.debt = self.debt.saturating_sub(gained);
        if self.bucket.tokens() >= 1 {
            self.bucket.spend(1);
            return Verdict::Allow;
        }
        self.debt += TOKEN;
        if self.debt > u64::from(self.limit.burst) * TOKEN {
            Verdict::Flood
        } else {
            Verdict::Refuse
        }
    }
}

/// The messages with an id most recently relayed to a client, as fingerprints of (sender,
/// id): a response the client sends (`re` with `to`) must answer one of them. Bounded: the
/// oldest is forgotten first.
#[derive(Debug, Clone, Default)]
pub(crate) struct Answerable {
    recent: VecDeque<u64>,
}

impl Answerable {
    /// Notes a frame written to the client, if it is a message from another client with an id
    /// (read from the frame's leading fields: the payload is not parsed).
    pub(crate) fn note(&mut self, frame: &str, capacity: usize) {
        if capacity == 0 {
            return;
        }
        let Some((id, source, response)) = envelope(frame).or_else(|| any_envelope(frame)) else {
            return;
        };
        // A response is answered by nobody: its requester settles on it.
        if let (Some(id), Some(source), false) = (id, source, response) {
            if self.recent.len() >= capacity {
                self.recent.pop_front();
            }
            self.recent.push_back(fingerprint(&source, id));
        }
    }

    /// Whether a message `id` from `source` was relayed to the client (and not forgotten).
    pub(crate) fn contains(&self, source: &str, id: u64) -> bool {
        let wanted = fingerprint(source, id);
        self.recent.iter().rev().any(|&seen| seen == wanted)
    }
}

/// The `id`, `source` and whether it is a response (`re`), of a frame in the layout the
/// server writes (`Message::encode_into`: type, id, re, to, source, room, then the payload;
/// a room log's frame leads with its `pos`), with no escape in its strings; `None` for anything else, which [`any_envelope`] then reads.
/// Every frame written to a client is noted, so this is on the hot path of a broadcast: the
/// general reader cost about 2000 instructions per delivery, this a few hundred.
fn envelope(frame: &str) -> Option<(Option<u64>, Option<Cow<'_, str>>, bool)> {
    /// The plain string at the start of `text` (after its opening quote), and what follows.
    fn string(text: &str) -> Option<(&str, &str)> {
        let bytes = text.as_bytes();
        let mut end = 0;
        loop {
            match *bytes.get(end)? {
                b'"' => return Some((text.get(..end)?, text.get(end + 1..)?)),
                b'\\' | 0..=0x1f => return None,
                _ => end += 1,
            }
        }
    }
    /// The integer at the start of `text` (JSON's form, below 2^53), and what follows.
    fn integer(text: &str) -> Option<(u64, &str)> {
        let bytes = text.as_bytes();
        let mut value: u64 = 0;
        let mut end = 0;
        while let Some(digit) = bytes.get(end).filter(|b| b.is_ascii_digit()) {
            if end == 1 && value == 0 || end == 16 {
                return None; // a leading zero, or too long
            }
            value = value * 10 + u64::from(digit - b'0');
            end += 1;
        }
        (end > 0 && value < 1 << 53).then_some((value, text.get(end..)?))
    }
    // A room log's frame leads with its position (`{"pos":N,"type":...`).
    let body = match frame.strip_prefix("{\"pos\":") {
        Some(after) => integer(after)?.1.strip_prefix(',')?,
        None => frame.strip_prefix('{')?,
    };
    let (_, mut rest) = string(body.strip_prefix("\"type\":\"")?)?;
    let mut id = None;
    if let Some(after) = rest.strip_prefix(",\"id\":") {
        let (value, after) = integer(after)?;
        id = Some(value);
        rest = after;
    }
    let response = rest.starts_with(",\"re\":");
    if response {
        return Some((id, None, true));
    }
    if let Some(after) = rest.strip_prefix(",\"to\":\"") {
        rest = string(after)?.1;
    }
    let mut source = None;
    if let Some(after) = rest.strip_prefix(",\"source\":\"") {
        let (value, after) = string(after)?;
        source = Some(Cow::Borrowed(value));
        rest = after;
    }
    if let Some(after) = rest.strip_prefix(",\"room\":\"") {
        rest = string(after)?.1;
    }
    // What follows must be what the server writes next, or the end.
    (rest.starts_with(",\"payload\":") || rest.starts_with(",\"error\":") || rest == "}")
        .then_some((id, source, false))
}

/// What [`envelope`] reads, from any JSON object (the general reader, up to `payload`);
/// `None` if it is not one.
fn any_envelope(frame: &str) -> Option<(Option<u64>, Option<Cow<'_, str>>, bool)> {
    let (mut id, mut source, mut response) = (None, None, false);
    json::leading_members(frame, "payload", |name, value| match name {
        "id" => id = value.as_safe_integer(),
        "re" => response = true,
        "source" => source = value.as_str(),
        _ => {}
    })
    .ok()?;
    Some((id, source, response))
}

/// FNV-1a over the source's bytes, then the id's: 64 bits, so that a false match among the
/// few thousand remembered is negligible (and would only let one stray response through).
fn fingerprint(source: &str, id: u64) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut add = |byte: u8| {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    };
    source.bytes().for_each(&mut add);
    add(0xff);
    id.to_le_bytes().into_iter().for_each(&mut add);
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(millis: u64) -> Instant {
        Instant::from_millis(millis)
    }

    #[test]
    fn the_bucket_allows_a_burst_then_the_rate() {
        let mut limiter = Limiter::new(
            RateLimit {
                per_second: 10,
                burst: 5,
            },
            at(0),
        );
        for _ in 0..5 {
            assert_eq!(limiter.take(at(0)), Verdict::Allow);
        }
        assert_eq!(limiter.take(at(0)), Verdict::Refuse);
        assert_eq!(limiter.take(at(99)), Verdict::Refuse, "0.99 of a token");
        assert_eq!(
            limiter.take(at(100)),
            Verdict::Allow,
            "one token per 100 ms"
        );
        // Six refusals of debt > a burst of 5: flooding.
        let verdicts: Vec<_> = (0..5).map(|_| limiter.take(at(100))).collect();
        assert_eq!(verdicts.last(), Some(&Verdict::Flood), "{verdicts:?}");
    }

    #[test]
    fn debt_drains_at_the_rate() {
        let limit = RateLimit {
            per_second: 1000,
            burst: 2,
        };
        let mut limiter = Limiter::new(limit, at(0));
        let mut flood = false;
        // Twice the rate for ten seconds: half refused, never closed.
        for tick in 0..20_000 {
            flood |= limiter.take(at(tick / 2)) == Verdict::Flood;
        }
        assert!(!flood);
    }

    #[test]
    fn the_fast_envelope_reads_what_the_general_reader_reads() {
        use crate::protocol::{Frame, Message};
        let frames = [
            r#"{"type":"ask","id":4,"source":"alice","payload":{"a":[1,2]}}"#,
            r#"{"type":"note","source":"bob","payload":1}"#,
            r#"{"type":"ask","id":5,"re":1,"source":"carol"}"#,
            r#"{"type":"dm","id":9007199254740991,"to":"bob","source":"al","payload":"x"}"#,
            r#"{"type":"big","id":9007199254740992,"source":"al","payload":"x"}"#,
            r#"{"type":"esc\"aped","id":1,"source":"al","payload":1}"#,
            r#"{"type":"x","id":1,"source":"a\u00e9","payload":1}"#,
            r#"{"type":"x","id":01,"source":"a","payload":1}"#,
            r#"{"type":"x","source":"a","id":1,"payload":1}"#,
            r#"{"type":"x","id":2,"source":"a"}"#,
            r#"{"type":"x","id":2,"source":"a","error":{"code":"c","message":"m"}}"#,
            r#"{"type":"chat","id":3,"source":"alice","room":"general","payload":1}"#,
            r#"{"pos":1765000000000042,"type":"chat","id":3,"source":"alice","room":"r","payload":1}"#,
            r#"{"pos":7,"type":"bc","id":8,"source":"bob","payload":1}"#,
            r#"{"pos":07,"type":"bc","id":8,"source":"bob","payload":1}"#,
        ];
        for text in frames {
            let general = any_envelope(text);
            // What is noted: the id and source of a message that is not a response.
            fn noted(
                (id, source, response): (Option<u64>, Option<Cow<'_, str>>, bool),
            ) -> Option<(u64, String)> {
                id.zip(source.map(Cow::into_owned)).filter(|_| !response)
            }
            if let Some(fast) = envelope(text) {
                assert_eq!(Some(noted(fast)), general.map(noted), "{text}");
            }
            // Frames the server writes always take the fast path.
            if let Ok(Frame::Message(message)) = Frame::decode(text) {
                let written: Message<'_> = message;
                let encoded = written.encode();
                if !encoded.contains('\\') {
                    assert!(envelope(&encoded).is_some(), "{encoded}");
                }
            }
        }
    }

    #[test]
    fn answerable_remembers_recent_messages_with_ids() {
        let mut seen = Answerable::default();
        seen.note(
            r#"{"type":"ask","id":4,"source":"alice","payload":{"a":[1,2]}}"#,
            2,
        );
        seen.note(r#"{"type":"note","source":"bob","payload":1}"#, 2);
        seen.note(r#"{"type":"ask","id":5,"re":1,"source":"carol"}"#, 2);
        assert!(seen.contains("alice", 4));
        assert!(!seen.contains("alice", 5) && !seen.contains("bob", 4));
        assert!(!seen.contains("carol", 5), "responses are not answered");
        seen.note(r#"{"type":"ask","id":1,"source":"dave"}"#, 2);
        seen.note(r#"{"type":"ask","id":2,"source":"dave"}"#, 2);
        assert!(!seen.contains("alice", 4), "the oldest is forgotten first");
        assert!(seen.contains("dave", 1) && seen.contains("dave", 2));
    }
}
