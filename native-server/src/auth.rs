//! Who may connect: the upgrade request as the authentication hook sees it, and its answers.

use std::fmt;
use std::net::SocketAddr;

use axum::http::{HeaderMap, StatusCode};

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
}

impl UpgradeRequest {
    /// The first value of the query parameter `name`, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        let query = self.query.as_deref()?;
        form_urlencoded::parse(query.as_bytes())
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.into_owned())
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

/// The authentication hook: accepts an upgrade with the identity (`source`) to register, or
/// refuses it. It runs before any connection state is allocated.
pub type Authenticator = dyn Fn(&UpgradeRequest) -> Result<String, Rejection> + Send + Sync;

/// The default authentication: the client is who its `source` query parameter says (1 to 128
/// bytes), as in the original design. Anything stronger (tokens, cookies) needs a hook.
pub fn source_from_query(request: &UpgradeRequest) -> Result<String, Rejection> {
    match request.query_param("source") {
        Some(source) if !source.is_empty() && source.len() <= 128 => Ok(source),
        Some(_) => Err(Rejection::new(
            StatusCode::BAD_REQUEST,
            "source must be 1 to 128 bytes",
        )),
        None => Err(Rejection::new(StatusCode::BAD_REQUEST, "missing ?source=")),
    }
}
