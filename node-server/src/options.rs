//! The options of `new WebSocketServer({...})`: the relay binary's, under JavaScript names
//! (durations in milliseconds), checked by the JavaScript side for types and turned here into
//! the server library's [`ServerConfig`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use napi::bindgen_prelude::Buffer;
use napi_derive::napi;
use wsrelay_server::rustls::pki_types::pem::PemObject;
use wsrelay_server::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use wsrelay_server::{size_to_open_files, OnDuplicate, RateLimit, ServerConfig};

/// How long a handler call may take by default: a sender's request has given up by then
/// (the client's default request timeout).
const DEFAULT_HANDLER_TIMEOUT: Duration = Duration::from_secs(30);

/// What the JavaScript side hands over: every option present and of the right type.
#[napi(object)]
pub struct NativeOptions {
    /// Port to listen on (0 picks a free one).
    pub port: u32,
    /// Address to listen on.
    pub host: String,
    /// Serve the files of this directory on the same port.
    pub www: Option<String>,
    /// PEM certificate chain and key, as text or bytes.
    pub tls_cert: Option<Buffer>,
    /// See `tls_cert`.
    pub tls_key: Option<Buffer>,
    /// PEM certificate chain and key, as files.
    pub tls_cert_file: Option<String>,
    /// See `tls_cert_file`.
    pub tls_key_file: Option<String>,
    /// Verify HS256 tokens signed with this secret.
    pub auth_secret: Option<Buffer>,
    /// `replace` or `reject`.
    pub on_duplicate: Option<String>,
    /// Browser origins allowed to connect.
    pub allowed_origins: Option<Vec<String>>,
    /// Most clients at once.
    pub max_connections: Option<u32>,
    /// Most clients at once per IP address.
    pub max_connections_per_ip: Option<u32>,
    /// Most connections not upgraded yet.
    pub max_pending_connections: Option<u32>,
    /// The same per IP address.
    pub max_pending_per_ip: Option<u32>,
    /// Milliseconds for a TLS handshake and each HTTP request's headers.
    pub handshake_timeout: Option<f64>,
    /// Messages per second per client (0: none).
    pub rate_limit: Option<u32>,
    /// Messages at once after a quiet spell.
    pub rate_burst: Option<u32>,
    /// Milliseconds between liveness checks.
    pub ping_interval: Option<f64>,
    /// Keep sessions in this Redis.
    pub redis: Option<String>,
    /// This server's name among servers sharing Redis.
    pub node_id: Option<String>,
    /// With Redis: the most messages a room's log keeps.
    pub room_retention: Option<u32>,
    /// With Redis: milliseconds a room's log without new messages is kept.
    pub room_idle: Option<f64>,
    /// Announce joins and leaves (`relay:presence`) and answer `relay:clients`.
    pub presence: Option<bool>,
    /// Relay messages no handler takes.
    pub relay: Option<bool>,
    /// Largest message, in bytes.
    pub max_message_size: Option<u32>,
    /// Milliseconds a disconnected client's session is kept.
    pub session_grace: Option<f64>,
    /// Milliseconds `close()` waits for connections to close.
    pub shutdown_timeout: Option<f64>,
    /// Milliseconds a handler call may take before its sender gets an error instead.
    pub handler_timeout: Option<f64>,
    /// Level of the server's log lines on stderr.
    pub log_level: Option<String>,
    /// `text` or `json`.
    pub log_format: Option<String>,
}

/// What the server is built from.
pub(crate) struct Settings {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) config: ServerConfig,
    pub(crate) auth_secret: Option<Vec<u8>>,
    pub(crate) handler_timeout: Duration,
}

/// An option's value is wrong: the message names it.
pub(crate) struct Invalid(pub(crate) String);

fn millis(name: &str, value: Option<f64>, default: Duration) -> Result<Duration, Invalid> {
    match value {
        None => Ok(default),
        Some(ms) if (1.0..=1e12).contains(&ms) => Ok(Duration::from_millis(ms as u64)),
        Some(ms) => Err(Invalid(format!(
            "{name} must be a number of milliseconds >= 1 (got {ms})"
        ))),
    }
}

fn count(value: Option<u32>) -> Option<usize> {
    value.map(|n| n as usize)
}

impl NativeOptions {
    /// The server's settings; sizes the connection bounds to the open-file limit as the
    /// relay binary does.
    pub(crate) fn settings(self) -> Result<Settings, Invalid> {
        let port = u16::try_from(self.port)
            .map_err(|_| Invalid(format!("port must be 0 to 65535 (got {})", self.port)))?;
        if let Some(dir) = &self.www {
            if !std::path::Path::new(dir).is_dir() {
                return Err(Invalid(format!("www: {dir} is not a directory")));
            }
        }
        let tls = match (
            &self.tls_cert,
            &self.tls_key,
            &self.tls_cert_file,
            &self.tls_key_file,
        ) {
            (Some(cert), Some(key), None, None) => Some(tls_from_pem(cert, key)?),
            (None, None, Some(cert), Some(key)) => Some(
                wsrelay_server::tls_config(cert, key).map_err(|e| Invalid(format!("tls: {e}")))?,
            ),
            (None, None, None, None) => None,
            _ => {
                return Err(Invalid(
                    "tls takes { cert, key } (PEM) or { certFile, keyFile }".into(),
                ))
            }
        };
        let on_duplicate = match self.on_duplicate.as_deref() {
            None | Some("replace") => OnDuplicate::Replace,
            Some("reject") => OnDuplicate::Reject,
            Some(other) => {
                return Err(Invalid(format!(
                    "onDuplicate must be \"replace\" or \"reject\" (got {other:?})"
                )))
            }
        };
        let rate_limit = match self.rate_limit.unwrap_or(0) {
            0 => None,
            per_second => Some(RateLimit {
                per_second,
                burst: self
                    .rate_burst
                    .unwrap_or(per_second.saturating_mul(2))
                    .max(1),
            }),
        };
        let (max_connections, max_pending_connections) = size_to_open_files(
            count(self.max_connections),
            count(self.max_pending_connections),
            ["maxConnections", "maxPendingConnections"],
        )
        .map_err(Invalid)?;
        let defaults = ServerConfig::default();
        let allowed_origins = self.allowed_origins.unwrap_or_default();
        // As the relay binary: a server of its own pages (`www`) expects no other page.
        let own_origin = self.www.is_some() && allowed_origins.is_empty();
        let auth_secret = self.auth_secret.map(|secret| secret.to_vec());
        if auth_secret.as_ref().is_some_and(Vec::is_empty) {
            return Err(Invalid("authSecret is empty".into()));
        }
        let config = ServerConfig {
            static_dir: self.www.map(PathBuf::from),
            ping_interval: millis("pingInterval", self.ping_interval, defaults.ping_interval)?,
            max_connections,
            max_connections_per_ip: count(self.max_connections_per_ip),
            max_pending_connections,
            max_pending_per_ip: count(self.max_pending_per_ip),
            handshake_timeout: millis(
                "handshakeTimeout",
                self.handshake_timeout,
                defaults.handshake_timeout,
            )?,
            rate_limit,
            on_duplicate,
            allowed_origins,
            own_origin,
            tls,
            presence: self.presence.unwrap_or(true),
            relay: self.relay.unwrap_or(true),
            max_message_size: self
                .max_message_size
                .map_or(defaults.max_message_size, |n| n as usize),
            session_grace: millis("sessionGrace", self.session_grace, defaults.session_grace)?,
            shutdown_timeout: millis(
                "shutdownTimeout",
                self.shutdown_timeout,
                defaults.shutdown_timeout,
            )?,
            redis: self.redis,
            node_id: self.node_id,
            room_retention: wsrelay_server::RoomRetention {
                entries: self
                    .room_retention
                    .map_or(defaults.room_retention.entries, |n| (n as usize).max(1)),
                idle: millis("roomIdle", self.room_idle, defaults.room_retention.idle)?,
            },
            ..defaults
        };
        Ok(Settings {
            host: self.host,
            port,
            config,
            auth_secret,
            handler_timeout: millis(
                "handlerTimeout",
                self.handler_timeout,
                DEFAULT_HANDLER_TIMEOUT,
            )?,
        })
    }
}

/// A TLS configuration from PEM text.
fn tls_from_pem(
    cert: &[u8],
    key: &[u8],
) -> Result<Arc<wsrelay_server::rustls::ServerConfig>, Invalid> {
    let chain = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| Invalid(format!("tls.cert: {error}")))?;
    if chain.is_empty() {
        return Err(Invalid("tls.cert: no PEM certificate in it".into()));
    }
    let key =
        PrivateKeyDer::from_pem_slice(key).map_err(|error| Invalid(format!("tls.key: {error}")))?;
    wsrelay_server::tls_config_from_der(chain, key)
        .map_err(|error| Invalid(format!("tls: {error}")))
}
