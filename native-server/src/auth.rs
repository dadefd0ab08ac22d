//! Who may connect: the upgrade request as the authentication hook sees it, and its answers.

use std::fmt;
use std::net::SocketAddr;
use std::time::SystemTime;

use axum::http::{HeaderMap, StatusCode};
use wsrelay_core::protocol::source_problem;
pub use wsrelay_core::server::engine::RoomAccess;

/// The HTTP upgrade request of a WebSocket connection, as the authentication hook sees it.
#[derive(Debug, Clone)]
pub struct UpgradeRequest {
    /// The request path, e.g. `/ws`.
    pub path: String,
    /// The raw query string without `?`, if any.
    pub query: Option<String>,
    /// Every request header (including `Origin`, `Cookie`, `Authorization`).
    pub headers: HeaderMap,
    /// The peer's address.
    pub remote_addr: Option<SocketAddr>,
    /// Whether the connection came over TLS (`wss://`).
    pub secure: bool,
}

impl UpgradeRequest {
    /// The first value of the query parameter `name`, percent-decoded (`+` is a space), or
    /// `None` when it is absent. A query whose encoding is not valid (a `%` not followed by two
    /// hex digits, bytes that are not UTF-8) is refused with 400 rather than guessed at: `%FF`
    /// and `%FE` must not both become U+FFFD and so the same identity.
    pub fn query_param(&self, name: &str) -> Result<Option<String>, Rejection> {
        let Some(query) = self.query.as_deref() else {
            return Ok(None);
        };
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if percent_decode(key).as_deref() == Ok(name) {
                return percent_decode(value).map(Some).map_err(|()| {
                    Rejection::new(
                        StatusCode::BAD_REQUEST,
                        format!("?{name}= is not valid percent-encoded UTF-8"),
                    )
                });
            }
        }
        Ok(None)
    }

    /// The token of an `Authorization: Bearer` header, if there is one.
    pub fn bearer_token(&self) -> Option<&str> {
        let value = self.headers.get(axum::http::header::AUTHORIZATION)?;
        let value = value.to_str().ok()?.trim();
        let (scheme, token) = value.split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim())
            .filter(|token| !token.is_empty())
    }

    /// The `Origin` header, when present and readable.
    pub fn origin(&self) -> Option<&str> {
        self.headers.get(axum::http::header::ORIGIN)?.to_str().ok()
    }
}

/// An upgrade refused with an HTTP status (401, 403, 409...) and a short reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The HTTP status of the refusal.
    pub status: StatusCode,
    /// A reason, sent as the response body.
    pub reason: String,
}

impl Rejection {
    /// A refusal with `status` and `reason`.
    pub fn new(status: StatusCode, reason: impl Into<String>) -> Self {
        Rejection {
            status,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.status, self.reason)
    }
}

impl std::error::Error for Rejection {}

/// Who a connection is, as the authentication hook decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The `source` to register (1 to 128 bytes of UTF-8 without control characters).
    pub source: String,
    /// When the credentials stop being valid (a token's `exp`): the connection is closed then
    /// with 4001, and its client reconnects with fresh ones. `None`: never.
    pub expires: Option<SystemTime>,
    /// The rooms the client may join with `relay:join` (default: any); others are refused
    /// with `~error` `forbidden`. [`JwtAuth`](crate::JwtAuth) reads them from the token's
    /// `rooms` claim.
    pub rooms: RoomAccess,
}

impl From<String> for Identity {
    fn from(source: String) -> Self {
        Identity {
            source,
            expires: None,
            rooms: RoomAccess::Any,
        }
    }
}

impl From<&str> for Identity {
    fn from(source: &str) -> Self {
        Identity::from(source.to_owned())
    }
}

/// The authentication hook: accepts an upgrade with the identity to register, or refuses it.
/// It runs before any connection state is allocated.
pub type Authenticator = dyn Fn(&UpgradeRequest) -> Result<Identity, Rejection> + Send + Sync;

/// The default authentication: the client is who its `source` query parameter says, as in the
/// original design; identities are not verified. Anything stronger needs a hook, such as
/// [`JwtAuth`](crate::JwtAuth).
pub fn source_from_query(request: &UpgradeRequest) -> Result<Identity, Rejection> {
    let source = request
        .query_param("source")?
        .ok_or_else(|| Rejection::new(StatusCode::BAD_REQUEST, "missing ?source="))?;
    check_source(&source)?;
    Ok(source.into())
}

/// Refuses (400) a `source` that is not 1 to 128 bytes of UTF-8 without control characters.
pub(crate) fn check_source(source: &str) -> Result<(), Rejection> {
    match source_problem(source) {
        Some(problem) => Err(Rejection::new(StatusCode::BAD_REQUEST, problem)),
        None => Ok(()),
    }
}

/// `application/x-www-form-urlencoded` decoding, strict: `Err` for a `%` not followed by two
/// hex digits, or bytes that are not UTF-8.
fn percent_decode(text: &str) -> Result<String, ()> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.bytes();
    while let Some(byte) = rest.next() {
        bytes.push(match byte {
            b'+' => b' ',
            b'%' => {
                let hex = |digit: Option<u8>| match digit {
                    Some(d @ b'0'..=b'9') => Ok(d - b'0'),
                    Some(d @ b'a'..=b'f') => Ok(d - b'a' + 10),
                    Some(d @ b'A'..=b'F') => Ok(d - b'A' + 10),
                    _ => Err(()),
                };
                hex(rest.next())? << 4 | hex(rest.next())?
            }
            other => other,
        });
    }
    String::from_utf8(bytes).map_err(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(query: &str) -> UpgradeRequest {
        UpgradeRequest {
            path: "/".into(),
            query: Some(query.into()),
            headers: HeaderMap::new(),
            remote_addr: None,
            secure: false,
        }
    }

    fn source(query: &str) -> Result<String, StatusCode> {
        source_from_query(&request(query))
            .map(|identity| identity.source)
            .map_err(|rejection| rejection.status)
    }

    #[test]
    fn sources_are_decoded_strictly() {
        assert_eq!(source("source=al%20ice&v=1"), Ok("al ice".into()));
        assert_eq!(source("v=1&source=b+ob"), Ok("b ob".into()));
        assert_eq!(source("source=%C3%A9"), Ok("é".into()));
        for bad in [
            "source=%FF",
            "source=%FE",
            "source=%F",
            "source=%zz",
            "source=a%00b",
            "source=%07",
            "source=%C2%85",
            "source=",
            "v=1",
        ] {
            assert_eq!(source(bad), Err(StatusCode::BAD_REQUEST), "{bad}");
        }
        assert_eq!(
            source(&format!("source={}", "x".repeat(129))),
            Err(StatusCode::BAD_REQUEST)
        );
    }

    #[test]
    fn bearer_tokens_are_read_from_the_header() {
        let mut with = request("");
        with.headers.insert(
            axum::http::header::AUTHORIZATION,
            "Bearer abc.def".parse().expect("a header value"),
        );
        assert_eq!(with.bearer_token(), Some("abc.def"));
        with.headers.insert(
            axum::http::header::AUTHORIZATION,
            "Basic abc".parse().expect("a header value"),
        );
        assert_eq!(with.bearer_token(), None);
    }
}
