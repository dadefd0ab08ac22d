//! The one way from the server's threads to JavaScript: handler calls, the outcomes of
//! operations that did not finish at once, and events, written as records into one outbox and
//! handed to the JavaScript side in batches, one thread-safe function call per batch.
//!
//! A batch is one JSON array of records, flat: a tag, then the record's fields.
//!
//! | tag | fields | what |
//! |---|---|---|
//! | 0 | call id, type, source, payload | call the handler of `type` |
//! | 1 | op, value | operation `op` succeeded with `value` |
//! | 2 | op, code, message | operation `op` failed |
//! | 3 | source, address | a client connected (`address` may be `null`) |
//! | 4 | source, reason, code | a client's connection ended (`code` may be `null`) |
//! | 5 | source, type, payload | a client answered a message of the server's |
//! | 6 | source, type, code, message | ... with an error |
//! | 7 | | the server is closed: nothing follows |
//! | 8 | type, source, ms | a handler call got no answer within `ms` (answered with an error) |
//!
//! Waking JavaScript costs a cross-thread hop onto the event loop (libuv's async handle), so a
//! record only wakes it when no wake-up is pending: whatever is written before the JavaScript
//! side takes the outbox goes in the same batch. A handler call is written when the server
//! makes it, as the message is consumed (the server library calls handlers in arrival order),
//! so a busy connection's calls travel together, and JavaScript calls them in that order.
//! Their number is bounded by the server's flow control: a connection consumes a message only
//! while fewer than 256 of its handler calls are unanswered, so a JavaScript side that falls
//! behind stops its senders' connections from consuming, and their clients wait for their
//! acknowledgements (PROTOCOL.md section 4), instead of memory growing here.
//!
//! JavaScript answers handler calls with [`Bridge::settle`]: a flat JSON array of
//! `call id, kind, value` triples, kind 0 (no response), 1 (`value` is the response) or 2
//! (`value` is `{"code", "message"}`, an error response).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use napi::bindgen_prelude::Unknown;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::Status;
use serde_json::value::RawValue;
use tokio::sync::oneshot;
use wsrelay_server::{RemoteError, Reply};

/// The JavaScript function that takes a batch (its text).
pub(crate) type Dispatch = ThreadsafeFunction<(), Unknown<'static>, String, Status, false>;

/// The records not yet taken.
#[derive(Default)]
struct Outbox {
    /// Records, comma-separated, without the array's brackets.
    text: String,
    /// Handler calls among them.
    calls: usize,
}

/// What the server's threads share with the JavaScript thread.
pub(crate) struct Bridge {
    outbox: Mutex<Outbox>,
    /// A wake-up of the JavaScript side is on its way: records written meanwhile go with it.
    wake_pending: AtomicBool,
    /// `None` once the server is closed (released: it no longer holds the event loop open).
    dispatch: Mutex<Option<Dispatch>>,
    /// Handler calls taken by JavaScript and not answered yet, by id.
    waiting: Mutex<HashMap<u32, oneshot::Sender<Reply>>>,
    next_call: AtomicU32,
    /// How long a handler call may wait for its answer.
    handler_timeout: Duration,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Bridge {
    /// A bridge with no JavaScript side yet ([`connect`](Self::connect) gives it one), whose
    /// handler calls wait at most `handler_timeout` for their answer.
    pub(crate) fn new(handler_timeout: Duration) -> Arc<Bridge> {
        Arc::new(Bridge {
            outbox: Mutex::default(),
            wake_pending: AtomicBool::new(false),
            dispatch: Mutex::new(None),
            waiting: Mutex::default(),
            next_call: AtomicU32::new(1),
            handler_timeout,
        })
    }

    /// Hands batches to `dispatch` from now on.
    pub(crate) fn connect(&self, dispatch: Dispatch) {
        *lock(&self.dispatch) = Some(dispatch);
    }

    /// Whether JavaScript still takes batches.
    pub(crate) fn is_open(&self) -> bool {
        lock(&self.dispatch).is_some()
    }

    /// Handler calls waiting in the outbox for JavaScript now.
    pub(crate) fn queued_calls(&self) -> usize {
        lock(&self.outbox).calls
    }

    /// Handler calls JavaScript has taken and not answered yet.
    pub(crate) fn unanswered_calls(&self) -> usize {
        // Every call waits from when it is written: those not taken yet are queued.
        let waiting = lock(&self.waiting).len();
        waiting.saturating_sub(self.queued_calls())
    }

    /// Appends one record (written by `write`) and wakes JavaScript unless a wake-up is due.
    pub(crate) fn push(&self, write: impl FnOnce(&mut String)) {
        self.push_counted(0, write);
    }

    fn push_counted(&self, calls: usize, write: impl FnOnce(&mut String)) {
        {
            let mut outbox = lock(&self.outbox);
            if !outbox.text.is_empty() {
                outbox.text.push(',');
            }
            write(&mut outbox.text);
            outbox.calls += calls;
        }
        self.wake();
    }

    fn wake(&self) {
        if !self.wake_pending.swap(true, Ordering::AcqRel) {
            if let Some(dispatch) = lock(&self.dispatch).as_ref() {
                // Unbounded queue, and at most one call in it: `NonBlocking` never waits.
                // `Closing`: the environment is going away, and nobody needs the batch.
                let _ = dispatch.call((), ThreadsafeFunctionCallMode::NonBlocking);
            }
        }
    }

    /// On the JavaScript thread: everything written so far, as one batch (`[]` when a
    /// wake-up found nothing new).
    pub(crate) fn take(&self) -> String {
        self.wake_pending.store(false, Ordering::Release);
        let text = {
            let mut outbox = lock(&self.outbox);
            outbox.calls = 0;
            std::mem::take(&mut outbox.text)
        };
        let mut batch = String::with_capacity(text.len() + 2);
        batch.push('[');
        batch.push_str(&text);
        batch.push(']');
        batch
    }

    /// Calls the JavaScript handler of `kind`: writes the call now, and returns the wait
    /// for its answer. A call not answered within the handler timeout (counted from when the
    /// wait is first polled: the connection awaits its calls one at a time) is answered with
    /// a `handler_error` and reported (record 8): one that never settled would hold up its
    /// sender's later messages for good.
    pub(crate) fn call(
        self: &Arc<Self>,
        kind: &str,
        source: &str,
        payload: &RawValue,
    ) -> impl Future<Output = Reply> + Send + 'static {
        let (answer, answered) = oneshot::channel();
        let id = self.next_call.fetch_add(1, Ordering::Relaxed);
        let open = {
            // Checked under the lock `close` clears the waiting calls with: a call is either
            // refused here or answered there.
            let mut waiting = lock(&self.waiting);
            let open = self.is_open();
            if open {
                waiting.insert(id, answer);
            }
            open
        };
        if open {
            self.push_counted(1, |out| {
                let _ = write!(out, "0,{id},");
                push_json_string(out, kind);
                out.push(',');
                push_json_string(out, source);
                out.push(',');
                out.push_str(payload.get());
            });
        }
        let bridge = Arc::clone(self);
        let (kind, source) = (kind.to_owned(), source.to_owned());
        async move {
            let closed = || {
                Reply::error(
                    "handler_error",
                    "the server closed before the handler answered",
                )
            };
            if !open {
                return closed();
            }
            match tokio::time::timeout(bridge.handler_timeout, answered).await {
                Ok(answer) => answer.unwrap_or_else(|_| closed()),
                Err(_) => {
                    lock(&bridge.waiting).remove(&id);
                    let ms = bridge.handler_timeout.as_millis();
                    bridge.push(|out| {
                        out.push_str("8,");
                        push_json_string(out, &kind);
                        out.push(',');
                        push_json_string(out, &source);
                        let _ = write!(out, ",{ms}");
                    });
                    Reply::error(
                        "handler_error",
                        format!("the handler did not answer within {ms} ms"),
                    )
                }
            }
        }
    }

    /// On the JavaScript thread: the answers of handler calls (see the module's
    /// documentation). An answer to a call nobody waits for any more (its connection ended)
    /// is dropped.
    pub(crate) fn settle(&self, answers: &str) -> Result<(), String> {
        let values: Vec<&RawValue> =
            serde_json::from_str(answers).map_err(|error| format!("answers: {error}"))?;
        if !values.len().is_multiple_of(3) {
            return Err("answers: not a list of triples".into());
        }
        let mut waiting = lock(&self.waiting);
        for triple in values.chunks_exact(3) {
            let id: u32 = serde_json::from_str(triple[0].get())
                .map_err(|error| format!("answer id: {error}"))?;
            let kind: u8 = serde_json::from_str(triple[1].get())
                .map_err(|error| format!("answer kind: {error}"))?;
            let reply = match kind {
                0 => Reply::None,
                1 => Reply::Payload(triple[2].get().to_owned()),
                2 => {
                    let error: ErrorAnswer = serde_json::from_str(triple[2].get())
                        .map_err(|error| format!("error answer: {error}"))?;
                    Reply::Error(RemoteError {
                        code: error.code,
                        message: error.message,
                    })
                }
                other => return Err(format!("answer kind {other}")),
            };
            if let Some(answer) = waiting.remove(&id) {
                let _ = answer.send(reply);
            }
        }
        Ok(())
    }

    /// Writes the last record (tag 7) and lets JavaScript go: the thread-safe function is
    /// released (once the batch is delivered it no longer holds the event loop open), and
    /// handler calls still waiting are answered with an error.
    pub(crate) fn close(&self) {
        self.push(|out| out.push('7'));
        let dispatch = lock(&self.dispatch).take();
        drop(dispatch);
        lock(&self.waiting).clear();
    }
}

#[derive(serde::Deserialize)]
struct ErrorAnswer {
    code: String,
    message: String,
}

/// Appends `text` as a JSON string literal: the protocol's own string writer.
pub(crate) use wsrelay_core::protocol::json::write_string as push_json_string;

/// Appends `text` as a JSON string, or `null`.
pub(crate) fn push_json_option(out: &mut String, text: Option<&str>) {
    match text {
        Some(text) => push_json_string(out, text),
        None => out.push_str("null"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_as_json() {
        for text in [
            "plain",
            "",
            "quote \" back \\ slash",
            "line\nfeed\ttab\u{1}é✓",
        ] {
            let mut out = String::new();
            push_json_string(&mut out, text);
            let back: String = serde_json::from_str(&out).expect("valid JSON");
            assert_eq!(back, text);
        }
    }

    #[test]
    fn records_go_in_one_batch_until_taken() {
        let bridge = Bridge::new(Duration::from_secs(1));
        bridge.push(|out| out.push_str("1,3,null"));
        bridge.push(|out| out.push_str("2,4,\"timeout\",\"no answer\""));
        assert_eq!(bridge.take(), "[1,3,null,2,4,\"timeout\",\"no answer\"]");
        assert_eq!(bridge.take(), "[]");
    }

    #[tokio::test]
    async fn calls_are_answered_by_settle() {
        let bridge = Bridge::new(Duration::from_secs(1));
        // Not connected to JavaScript: a call is refused at once.
        let payload = RawValue::from_string("{\"a\":1}".into()).expect("JSON");
        let refused = bridge.call("t", "alice", &payload).await;
        assert_eq!(bridge.take(), "[]", "nothing written");
        assert!(matches!(refused, Reply::Error(_)));
        // Answers by id, in any order; unknown ids are ignored.
        let (tx, rx) = oneshot::channel();
        lock(&bridge.waiting).insert(9, tx);
        let (tx2, rx2) = oneshot::channel();
        lock(&bridge.waiting).insert(10, tx2);
        bridge
            .settle("[10,2,{\"code\":\"handler_error\",\"message\":\"boom\"},9,1,{\"ok\":true},77,0,null]")
            .expect("valid answers");
        assert_eq!(rx.await.ok(), Some(Reply::Payload("{\"ok\":true}".into())));
        assert_eq!(rx2.await.ok(), Some(Reply::error("handler_error", "boom")));
        assert!(bridge.settle("[1,2]").is_err());
        assert!(bridge.settle("not json").is_err());
    }
}
