//! Application handlers: `on(type, handler)` with typed payloads, and what they answer.

use std::collections::HashMap;
use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};
use std::task::Poll;

use futures_util::FutureExt;

use prometheus_client::metrics::histogram::Histogram;
use serde::de::DeserializeOwned;
use wsrelay_core::protocol::ErrorCode;
use wsrelay_core::server::HandlerSet;
// The reply trait is shared with the client (`wsrelay-core`, feature `serde`): a handler's value
// means the same on both sides.
pub use wsrelay_core::{IntoReply, Reply};

/// A message delivered to a handler: who sent it and its payload, decoded into `T`.
#[derive(Debug, Clone, PartialEq)]
pub struct Incoming<T> {
    /// The sender's `source`, as the server registered it (never taken from the frame).
    pub source: String,
    /// The message's payload (`null` when the frame had none).
    pub payload: T,
}

pub(crate) type BoxFuture = Pin<Box<dyn Future<Output = Reply> + Send>>;

/// A handler with its payload type erased: gets the sender and the raw payload text.
pub(crate) type ErasedHandler = Arc<dyn Fn(String, Option<String>) -> BoxFuture + Send + Sync>;

/// Wraps a typed handler: decodes the raw payload into `T` (a decoding failure answers with a
/// `handler_error`, the handler is not called) and turns its value into a [`Reply`].
///
/// The handler is called when the call is made, in arrival order, and its future is awaited
/// in the connection's turn: what a handler does before it returns its future (the Node
/// addon hands the message to JavaScript there) happens for every message as it is consumed,
/// not only once the calls before it have answered.
pub(crate) fn erase<T, R, F, Fut>(handler: F) -> ErasedHandler
where
    T: DeserializeOwned + Send + 'static,
    R: IntoReply + 'static,
    F: Fn(Incoming<T>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = R> + Send + 'static,
{
    Arc::new(move |source, payload| {
        match serde_json::from_str::<T>(payload.as_deref().unwrap_or("null")) {
            Ok(payload) => {
                let call = handler(Incoming { source, payload });
                Box::pin(async move { call.await.into_reply() })
            }
            Err(error) => Box::pin(std::future::ready(Reply::error(
                ErrorCode::HandlerError.as_str(),
                format!("invalid payload: {error}"),
            ))),
        }
    })
}

/// A handler call and its reply; a connection runs its calls one at a time, in arrival order.
pub(crate) type HandlerCall = Pin<Box<dyn Future<Output = Reply> + Send>>;

/// Starts the application handler of `kind`, catching its panics; its duration goes to
/// `histogram`.
pub(crate) fn handler_call(
    handlers: &Handlers,
    histogram: &Histogram,
    kind: String,
    source: String,
    payload: Option<String>,
) -> HandlerCall {
    let Some(handler) = handlers.get(&kind) else {
        // Removed since the message was consumed.
        let message = format!("no handler for {kind:?}");
        return Box::pin(std::future::ready(Reply::error(
            ErrorCode::HandlerError.as_str(),
            message,
        )));
    };
    let started = std::time::Instant::now();
    let histogram = histogram.clone();
    // The handler is called here (see `erase`): a panic in it is caught as one in its future.
    let call = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        handler(source.clone(), payload)
    })) {
        Ok(call) => call,
        Err(_) => {
            tracing::error!(source, kind, "handler panicked");
            return Box::pin(std::future::ready(Reply::error(
                ErrorCode::HandlerError.as_str(),
                "the handler panicked",
            )));
        }
    };
    Box::pin(async move {
        // A panicking handler must not take the connection with it, and its sender deserves
        // an answer rather than a timeout.
        let reply = match std::panic::AssertUnwindSafe(call).catch_unwind().await {
            Ok(reply) => reply,
            Err(_) => {
                tracing::error!(source, kind, "handler panicked");
                Reply::error(ErrorCode::HandlerError.as_str(), "the handler panicked")
            }
        };
        histogram.observe(started.elapsed().as_secs_f64());
        reply
    })
}

/// The first pending handler call's reply.
pub(crate) async fn first_call(calls: &mut VecDeque<HandlerCall>) -> Reply {
    poll_fn(|cx| match calls.front_mut() {
        Some(call) => call.as_mut().poll(cx),
        None => Poll::Pending,
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handler_values_become_replies() {
        assert_eq!(().into_reply(), Reply::None);
        assert_eq!(None::<u8>.into_reply(), Reply::None);
        assert_eq!(
            Some(vec![1, 2]).into_reply(),
            Reply::Payload("[1,2]".into())
        );
        assert_eq!(
            Ok::<_, String>(Some("x")).into_reply(),
            Reply::Payload("\"x\"".into())
        );
        assert_eq!(Ok::<(), String>(()).into_reply(), Reply::None);
        assert_eq!(
            Err::<(), _>("boom").into_reply(),
            Reply::error("handler_error", "boom")
        );
    }

    #[tokio::test]
    async fn payloads_are_decoded_before_the_handler_runs() {
        let handler = erase(|msg: Incoming<u32>| async move { Some(msg.payload * 2) });
        assert_eq!(
            handler("a".into(), Some("21".into())).await,
            Reply::Payload("42".into())
        );
        let Reply::Error(error) = handler("a".into(), Some("\"x\"".into())).await else {
            panic!("a string is not a u32");
        };
        assert_eq!(error.code, "handler_error");
        let optional = erase(|msg: Incoming<Option<u32>>| async move { Some(msg.payload) });
        assert_eq!(
            optional("a".into(), None).await,
            Reply::Payload("null".into())
        );
    }

    #[tokio::test]
    async fn handlers_are_called_in_arrival_order_when_the_calls_are_made() {
        let called = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = Arc::clone(&called);
        let handler = erase(move |msg: Incoming<u32>| {
            seen.lock().expect("not poisoned").push(msg.payload);
            async move { Some(msg.payload) }
        });
        let first = handler("a".into(), Some("1".into()));
        let second = handler("a".into(), Some("2".into()));
        assert_eq!(
            *called.lock().expect("not poisoned"),
            [1, 2],
            "before any is awaited"
        );
        assert_eq!(second.await, Reply::Payload("2".into()));
        assert_eq!(first.await, Reply::Payload("1".into()));
    }

    #[tokio::test]
    async fn a_handler_that_panics_when_called_is_answered() {
        let handlers = Handlers::default();
        handlers.insert(
            "boom",
            erase(|_: Incoming<()>| -> std::future::Ready<()> { panic!("at once") }),
        );
        let histogram = Histogram::new([1.0]);
        let call = handler_call(&handlers, &histogram, "boom".into(), "a".into(), None);
        let Reply::Error(error) = call.await else {
            panic!("a panic is an error reply");
        };
        assert_eq!(error.message, "the handler panicked");
    }
}

/// The application's handlers by message type.
#[derive(Default)]
pub(crate) struct Handlers(RwLock<HashMap<String, ErasedHandler>>);

impl Handlers {
    pub(crate) fn new(handlers: HashMap<String, ErasedHandler>) -> Self {
        Handlers(RwLock::new(handlers))
    }

    pub(crate) fn get(&self, kind: &str) -> Option<ErasedHandler> {
        self.read().get(kind).cloned()
    }

    pub(crate) fn insert(&self, kind: &str, handler: ErasedHandler) {
        self.0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(kind.to_owned(), handler);
    }

    pub(crate) fn remove(&self, kind: &str) -> bool {
        self.0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(kind)
            .is_some()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, ErasedHandler>> {
        self.0.read().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The connections' view of the handlers: which types the application takes.
#[derive(Clone)]
pub(crate) struct SharedHandlers(pub(crate) Arc<Handlers>);

impl HandlerSet for SharedHandlers {
    fn handles(&self, kind: &str) -> bool {
        self.0.read().contains_key(kind)
    }
}
