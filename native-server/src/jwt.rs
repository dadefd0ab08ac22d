//! Verified identity: HS256 JSON Web Tokens whose `sub` is the client's `source`.

use std::collections::HashSet;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::auth::{check_source, Identity, Rejection, UpgradeRequest};
use wsrelay_core::server::engine::RoomAccess;

/// An authentication hook for [`ServerBuilder::authenticate`](crate::ServerBuilder::authenticate)
/// that verifies HS256 JSON Web Tokens (the `jsonwebtoken` crate).
///
/// The token comes from the `token` query parameter (browsers cannot set headers on a
/// WebSocket) or an `Authorization: Bearer` header. Its `sub` claim is the client's `source`;
/// its `exp` claim is required and enforced at the upgrade and while connected: when it
/// passes, the connection is closed with 4001 and the client reconnects with a fresh token.
///
/// - a missing, malformed, forged (wrong signature, another algorithm) or expired token, or
///   one without `sub` or `exp`, is refused with 401 (the client's stop code 4401);
/// - a `source` query parameter that disagrees with `sub` is refused with 403;
/// - its `rooms` claim (an array of room names, or prefixes ending in `*`: `["lobby",
///   "team-7/*"]`) lists the rooms its holder may join; without it, none.
///
/// ```
/// use wsrelay_server::{JwtAuth, ServerConfig, WebSocketServer};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let auth = JwtAuth::hs256(b"a secret of at least 32 bytes, really");
/// let server = WebSocketServer::builder(ServerConfig::default())
///     .authenticate(move |request| auth.verify(request))
///     .bind("127.0.0.1:0")
///     .await?;
/// # server.close().await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct JwtAuth {
    key: DecodingKey,
    validation: Validation,
}

impl fmt::Debug for JwtAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("JwtAuth").finish_non_exhaustive()
    }
}

/// The claims read from a token.
#[derive(Deserialize)]
struct Claims {
    sub: String,
    /// Seconds since the Unix epoch. A number: a token whose `exp` is anything else is invalid.
    exp: u64,
    /// The rooms its holder may join: names, or prefixes ending in `*`. Absent: none.
    #[serde(default)]
    rooms: Vec<String>,
}

impl JwtAuth {
    /// Verifies HS256 tokens signed with `secret`, with no leeway on `exp`.
    pub fn hs256(secret: impl AsRef<[u8]>) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = false;
        validation.required_spec_claims = HashSet::from(["exp".to_owned(), "sub".to_owned()]);
        JwtAuth {
            key: DecodingKey::from_secret(secret.as_ref()),
            validation,
        }
    }

    /// Accepts tokens up to `leeway` past their `exp` (clock skew between the token's issuer
    /// and this server); the connection is then closed that much later too.
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.validation.leeway = leeway.as_secs();
        self
    }

    /// Checks the token of `request`: the identity it proves, or why not.
    pub fn verify(&self, request: &UpgradeRequest) -> Result<Identity, Rejection> {
        let unauthorized = |why: &str| Rejection::new(StatusCode::UNAUTHORIZED, why);
        let token = match request.query_param("token")? {
            Some(token) => token,
            None => request
                .bearer_token()
                .map(str::to_owned)
                .ok_or_else(|| unauthorized("missing token (?token= or Authorization: Bearer)"))?,
        };
        // The library's error says what is wrong with the token, never what it holds.
        let data = jsonwebtoken::decode::<Claims>(&token, &self.key, &self.validation)
            .map_err(|error| unauthorized(&format!("invalid token: {error}")))?;
        let Claims { sub, exp, rooms } = data.claims;
        let expires =
            UNIX_EPOCH + Duration::from_secs(exp) + Duration::from_secs(self.validation.leeway);
        if expires <= SystemTime::now() {
            return Err(unauthorized("invalid token: ExpiredSignature"));
        }
        check_source(&sub).map_err(|rejection| {
            unauthorized(&format!("invalid token sub: {}", rejection.reason))
        })?;
        if let Some(source) = request.query_param("source")? {
            if source != sub {
                return Err(Rejection::new(
                    StatusCode::FORBIDDEN,
                    "?source= is not the token's sub",
                ));
            }
        }
        Ok(Identity {
            source: sub,
            expires: Some(expires),
            rooms: RoomAccess::Only(rooms),
        })
    }
}
