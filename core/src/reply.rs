//! What a handler answers, shared by the client drivers and the server library: one trait
//! turns whatever an application handler returns into the response sent back (`PROTOCOL.md`
//! section 6).

#[cfg(feature = "serde")]
use core::fmt;

#[cfg(feature = "serde")]
use serde::Serialize;

#[cfg(feature = "serde")]
use crate::protocol::ErrorCode;
use alloc::string::String;

use crate::protocol::RemoteError;

/// What a handler answers: nothing, a payload, or an error. The answer goes back to the sender
/// as a response (`re` set to the message's `id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Send no response.
    None,
    /// Respond with this payload (JSON text).
    Payload(String),
    /// Respond with an error.
    Error(RemoteError),
}

impl Reply {
    /// An error response with `code` and `message`.
    pub fn error(code: impl Into<String>, message: impl Into<String>) -> Reply {
        Reply::Error(RemoteError {
            code: code.into(),
            message: message.into(),
        })
    }

    /// A response carrying `value` serialized as JSON (a value serde cannot write as JSON
    /// answers with a `handler_error`).
    #[cfg(feature = "serde")]
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Reply {
        match serde_json::to_string(value) {
            Ok(text) => Reply::Payload(text),
            Err(error) => Reply::error(ErrorCode::HandlerError.as_str(), error.to_string()),
        }
    }
}

/// Values a handler may return. `()` and `None` send nothing, `Some(value)` responds with
/// `value` as JSON, `Err(error)` responds with a `handler_error` carrying `error`'s text, and a
/// [`Reply`] is sent as it is.
#[cfg(feature = "serde")]
pub trait IntoReply {
    /// Turns the handler's value into its response.
    fn into_reply(self) -> Reply;
}

#[cfg(feature = "serde")]
impl IntoReply for Reply {
    fn into_reply(self) -> Reply {
        self
    }
}

#[cfg(feature = "serde")]
impl IntoReply for () {
    fn into_reply(self) -> Reply {
        Reply::None
    }
}

#[cfg(feature = "serde")]
impl<T: Serialize> IntoReply for Option<T> {
    fn into_reply(self) -> Reply {
        self.map_or(Reply::None, |value| Reply::json(&value))
    }
}

#[cfg(feature = "serde")]
impl<T: IntoReply, E: fmt::Display> IntoReply for Result<T, E> {
    fn into_reply(self) -> Reply {
        match self {
            Ok(value) => value.into_reply(),
            Err(error) => Reply::error(ErrorCode::HandlerError.as_str(), error.to_string()),
        }
    }
}

#[cfg(all(test, feature = "serde"))]
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
        assert_eq!(Ok::<Option<u8>, String>(None).into_reply(), Reply::None);
        assert_eq!(
            Err::<(), _>("boom").into_reply(),
            Reply::error("handler_error", "boom")
        );
        assert_eq!(
            Reply::error("not_found", "no such key").into_reply(),
            Reply::error("not_found", "no such key")
        );
    }
}
