//! The server's own requests waiting for their response, and the hooks that receive answers
//! nobody waits for.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::oneshot;
use tungstenite::Utf8Bytes;
use wsrelay_core::protocol::{Message, RemoteError};

/// A client's answer to a message the server sent, when no `request` waits for it: the
/// client's handler returned a value for a `send_to` or `broadcast` (`PROTOCOL.md` section 6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Who answered.
    pub source: String,
    /// The type of the answer (the answered message's type).
    pub kind: String,
    /// The id of the server's message it answers.
    pub re: u64,
    /// The payload (raw JSON text, `None` when empty), or the client handler's error.
    pub result: Result<Option<String>, RemoteError>,
}

pub(crate) type ResponseHook = Arc<dyn Fn(&Response) + Send + Sync>;

type Waiter = oneshot::Sender<Result<Option<String>, RemoteError>>;

/// Ids for the server's own messages, and the requests among them that wait.
pub(crate) struct Requests {
    /// This relay's number among relays sharing an engine (0 alone): the high bits of every id,
    /// so that an answer finds its way back to the relay that sent the message.
    node: AtomicU64,
    next_id: AtomicU64,
    pending: Mutex<HashMap<u64, (String, Waiter)>>,
    hooks: Vec<ResponseHook>,
}

impl Requests {
    pub(crate) fn new(hooks: Vec<ResponseHook>) -> Self {
        Requests {
            node: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
            pending: Mutex::default(),
            hooks,
        }
    }

    /// The id of the server's next message (every one carries one, so clients can answer):
    /// the relay's number in the high bits, a counter in the low 32.
    pub(crate) fn next_id(&self) -> u64 {
        let counter = self.next_id.fetch_add(1, Ordering::Relaxed) & 0xffff_ffff;
        (self.node.load(Ordering::Relaxed) << 32) | counter
    }

    /// Encodes a message from the server (no `source`) with a fresh id, so that a client's
    /// handler can answer it; `payload` is JSON text. `request`: the server waits for the
    /// answer (a client without a handler then answers `no_handler` at once).
    pub(crate) fn server_message(
        &self,
        kind: &str,
        payload: &str,
        request: bool,
    ) -> (u64, Utf8Bytes) {
        let id = self.next_id();
        let message = Message {
            kind: kind.into(),
            id: Some(id),
            re: None,
            to: None,
            source: None,
            room: None,
            payload: Some(payload),
            error: None,
            request,
        };
        (id, message.encode().into())
    }

    /// Encodes a message from the server to the members of `room` (no `source`), with a
    /// fresh id so that a member's handler can answer it.
    pub(crate) fn room_message(&self, room: &str, kind: &str, payload: &str) -> Utf8Bytes {
        let message = Message {
            kind: kind.into(),
            id: Some(self.next_id()),
            re: None,
            to: None,
            source: None,
            room: Some(room.into()),
            payload: Some(payload),
            error: None,
            request: false,
        };
        message.encode().into()
    }

    /// Sets this relay's number (from the engine), at most 2^21 - 1 so that ids stay exact in
    /// JavaScript.
    pub(crate) fn set_node(&self, node: u64) {
        self.node.store(node & 0x1f_ffff, Ordering::Relaxed);
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (String, Waiter)>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for the response of message `id` sent to `source`.
    pub(crate) fn expect(
        &self,
        id: u64,
        source: &str,
    ) -> oneshot::Receiver<Result<Option<String>, RemoteError>> {
        let (reply, response) = oneshot::channel();
        self.pending().insert(id, (source.to_owned(), reply));
        response
    }

    /// Stops waiting for message `id` (timed out, or not sent).
    pub(crate) fn forget(&self, id: u64) {
        self.pending().remove(&id);
    }

    /// `source` answered the server's message `re`: settles the request waiting for it, or
    /// hands the answer to the hooks. An answer from anyone else than the addressee settles
    /// nothing.
    pub(crate) fn resolve(
        &self,
        source: &str,
        kind: &str,
        re: u64,
        result: Result<Option<String>, RemoteError>,
    ) {
        let waiting = {
            let mut pending = self.pending();
            match pending.get(&re) {
                Some((to, _)) if to == source => pending.remove(&re),
                _ => None,
            }
        };
        match waiting {
            // The requester may have timed out and gone: nothing to do then.
            Some((_, reply)) => drop(reply.send(result)),
            None if self.hooks.is_empty() => {
                tracing::debug!(source, kind, re, "answer nobody waits for");
            }
            None => {
                let answer = Response {
                    source: source.to_owned(),
                    kind: kind.to_owned(),
                    re,
                    result,
                };
                for hook in &self.hooks {
                    hook(&answer);
                }
            }
        }
    }

    /// Fails every waiting request (the server closed).
    pub(crate) fn clear(&self) {
        self.pending().clear();
    }
}
