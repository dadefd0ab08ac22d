//! Failures as JavaScript sees them: an `Error` named `WsRelayError` with a stable `code`.
//!
//! A plain `Error` with two extra properties rather than an exported class: callers branch on
//! `error.code` (`"timeout"`, `"closed"`, `"handler_error"`...), stack traces work as usual, and
//! no class glue is generated. Messages are static or come from the peer, never formatted: the
//! formatting machinery costs kilobytes of wasm.

use alloc::string::String;

use super::js;
use wasm_bindgen::JsValue;

use crate::client::Error;

/// A `WsRelayError` with `code` and `message`.
pub(crate) fn error_value(code: &str, message: &str) -> JsValue {
    let error = js_sys::Error::new(message);
    error.set_name("WsRelayError");
    // Setting a data property on a fresh Error cannot fail.
    js::set(&error, "code", &code.into());
    error.into()
}

/// The JavaScript error for a core failure.
pub(crate) fn core_error(error: &Error) -> JsValue {
    let message = match error {
        Error::QueueFull { .. } => "send queue full (maxEnqueuedMessages)",
        Error::QueueBytesFull { .. } => "send queue full (maxEnqueuedBytes)",
        Error::TooLarge { .. } => "message larger than maxMessageSize",
        Error::InvalidPayload => "payload is not JSON-serializable",
        Error::InvalidType => "type must be non-empty and not start with '~'",
        Error::Expired => "time-to-live expired before the message could be sent",
        Error::Timeout => "no response within the timeout",
        Error::Closed => "client closed before the message was acknowledged",
        Error::Rejected { reason, .. } => reason,
        Error::RetriesExhausted { .. } => "gave up reconnecting (maxRetries)",
        Error::Remote(remote) => &remote.message,
        Error::Transport(message)
        | Error::Protocol(message)
        | Error::Decode(message)
        | Error::InvalidOption(message)
        | Error::Storage(message) => message,
        Error::Handler { error, .. } => &error.message,
        Error::Unanswerable { .. } => {
            "the handler returned a value, but the message has no id to answer: it was not sent"
        }
        Error::SessionLost => {
            "the server lost the session before acknowledging this message: it may have been delivered"
        }
        Error::Unconfirmed(_) => {
            "the client stopped after this message was sent and before it was acknowledged: it may have been delivered"
        }
    };
    let value = error_value(error.code(), message);
    match error {
        // The close code that stopped the client, for `rejected`.
        Error::Rejected { code, .. } => {
            js::set(&value, "closeCode", &JsValue::from(*code));
        }
        // Why the client stopped, as its own error (with its `closeCode`).
        Error::Unconfirmed(cause) => {
            js::set(&value, "cause", &core_error(cause));
            if let Error::Rejected { code, .. } = **cause {
                js::set(&value, "closeCode", &JsValue::from(code));
            }
        }
        // The message type whose handler failed or could not answer.
        Error::Handler { kind, .. } | Error::Unanswerable { kind } => {
            js::set(&value, "type", &kind.as_str().into());
        }
        _ => {}
    }
    value
}

/// The message of whatever a handler threw or rejected with.
pub(crate) fn thrown_message(thrown: &JsValue) -> String {
    if let Some(text) = thrown.as_string() {
        return text;
    }
    js::get(thrown, "message")
        .ok()
        .and_then(|message| message.as_string())
        .unwrap_or_else(|| "handler failed".into())
}
