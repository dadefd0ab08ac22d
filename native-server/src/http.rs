//! The HTTP side: WebSocket upgrades on any path (after the origin, authentication and
//! capacity checks), the health and metrics endpoints, static files for everything else.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper::upgrade::OnUpgrade;
use tower::ServiceExt;
use tower_http::services::ServeDir;
use tungstenite::handshake::derive_accept_key;
use wsrelay_core::protocol::{CLOSE_FORBIDDEN, CLOSE_UNAUTHORIZED};

use crate::admission::Full;
use crate::auth::{check_source, UpgradeRequest};
use crate::config::{OnDuplicate, ServerConfig};
use crate::connection;
use crate::engine::{Attempt, MessageRouter as _};
use crate::logs::{clip, LogLimit};
use crate::state::ServerState;

#[derive(Clone)]
struct App {
    state: Arc<ServerState>,
    files: Option<ServeDir>,
}

/// Seconds a client refused for capacity is asked to wait (`Retry-After`).
const RETRY_AFTER: &str = "5";

/// The router: one fallback handler sees every request.
pub(crate) fn router(state: Arc<ServerState>) -> Router {
    let files = state
        .config
        .static_dir
        .as_ref()
        .map(|dir| ServeDir::new(dir).append_index_html_on_directories(true));
    Router::new()
        .fallback(entry)
        .with_state(App { state, files })
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.eq_ignore_ascii_case("websocket"))
}

/// The `Sec-WebSocket-Key` of a valid RFC 6455 handshake (GET, `Connection: upgrade`,
/// version 13), or `None`.
fn handshake_key<'a>(method: &Method, headers: &'a HeaderMap) -> Option<&'a HeaderValue> {
    let connection_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    let version = headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|value| value == "13");
    (method == Method::GET && connection_upgrade && version)
        .then(|| headers.get(header::SEC_WEBSOCKET_KEY))
        .flatten()
}

/// Where a request came from, for the HTTP side: the peer and whether it came over TLS.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer {
    pub(crate) addr: SocketAddr,
    pub(crate) secure: bool,
}

/// Refused upgrades are logged at info level, at most a few lines a second (a client can
/// provoke them at will).
static REFUSALS: LogLimit = LogLimit::new();

/// Counts and logs a refused upgrade.
fn count_refusal(state: &ServerState, status: StatusCode, reason: &str) {
    state.metrics.count_refused(status.as_u16());
    if let Some(suppressed) = REFUSALS.allow() {
        tracing::info!(%status, reason, suppressed, "upgrade refused");
    }
}

fn refuse(state: &ServerState, status: StatusCode, reason: &str) -> Response {
    count_refusal(state, status, reason);
    let mut response = (status, format!("{reason}\n")).into_response();
    // The client wanted another protocol on this connection: it ends here.
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    if matches!(
        status,
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS
    ) {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER));
    }
    response
}

/// Refuses a WebSocket upgrade for good (401, 403): the upgrade is accepted and the connection
/// closed at once with 4401 or 4403 and the reason, since a browser's WebSocket cannot see an
/// HTTP status (it reports a failed connection, and its client would try again forever). The
/// refusal costs a close frame more than the HTTP answer, and no state. Other statuses (400,
/// 409, 429, 503) stay HTTP: a client retries those, or cannot have sent them.
fn refuse_upgrade(
    state: &Arc<ServerState>,
    status: StatusCode,
    reason: &str,
    on_upgrade: Option<OnUpgrade>,
    accept: &str,
) -> Response {
    let code = match status {
        StatusCode::UNAUTHORIZED => CLOSE_UNAUTHORIZED,
        StatusCode::FORBIDDEN => CLOSE_FORBIDDEN,
        _ => return refuse(state, status, reason),
    };
    let Some(on_upgrade) = on_upgrade else {
        return refuse(state, status, reason);
    };
    count_refusal(state, status, reason);
    let tracked = state.lifecycle.tracker.token();
    let (state, reason) = (Arc::clone(state), reason.to_owned());
    tokio::spawn(async move {
        let _tracked = tracked;
        if let Ok(upgraded) = on_upgrade.await {
            connection::close_at_once(upgraded, &state, code, &reason).await;
        }
    });
    switching_protocols(accept)
}

/// The answer that accepts a WebSocket upgrade.
fn switching_protocols(accept: &str) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    if let Ok(accept) = HeaderValue::from_str(accept) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    response
}

async fn entry(State(app): State<App>, request: Request) -> Response {
    let state = app.state;
    if is_upgrade(request.headers()) {
        return upgrade(state, request).await;
    }
    let readable = matches!(*request.method(), Method::GET | Method::HEAD);
    match request.uri().path() {
        "/healthz" if readable => return (StatusCode::OK, "ok\n").into_response(),
        "/readyz" if readable => {
            return match state.ready() {
                Ok(()) => (StatusCode::OK, "ready\n").into_response(),
                Err(why) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready: {why}\n"),
                )
                    .into_response(),
            };
        }
        "/metrics" if readable => {
            state.refresh_gauges();
            let kind = "application/openmetrics-text; version=1.0.0; charset=utf-8";
            return ([(header::CONTENT_TYPE, kind)], state.metrics.render()).into_response();
        }
        _ => {}
    }
    match app.files {
        Some(files) => match files.oneshot(request).await {
            Ok(response) => response.map(Body::new),
            Err(never) => match never {},
        },
        None => (
            StatusCode::UPGRADE_REQUIRED,
            "wsrelay: connect with a WebSocket\n",
        )
            .into_response(),
    }
}

/// Whether a request from `origin` may connect: no `Origin` (not a browser), an allowed one,
/// or (with `own_origin`) the server's own: the request's `Host` behind `http://` or
/// `https://` (either: a proxy in front may terminate TLS).
fn origin_allowed(config: &ServerConfig, request: &UpgradeRequest) -> bool {
    let Some(origin) = request.origin() else {
        return true;
    };
    if config
        .allowed_origins
        .iter()
        .any(|allowed| allowed == origin)
    {
        return true;
    }
    if config.own_origin {
        let host = request
            .headers
            .get(header::HOST)
            .and_then(|host| host.to_str().ok());
        let site = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"));
        if let (Some(site), Some(host)) = (site, host) {
            if site.eq_ignore_ascii_case(host) {
                return true;
            }
        }
    }
    config.allowed_origins.is_empty() && !config.own_origin
}

async fn upgrade(state: Arc<ServerState>, request: Request) -> Response {
    let peer = request.extensions().get::<Peer>().copied();
    let (mut parts, _body) = request.into_parts();
    let Some(key) = handshake_key(&parts.method, &parts.headers) else {
        return refuse(&state, StatusCode::BAD_REQUEST, "not a WebSocket handshake");
    };
    let accept = derive_accept_key(key.as_bytes());
    let on_upgrade = parts.extensions.remove::<OnUpgrade>();
    let request = UpgradeRequest {
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers,
        remote_addr: peer.map(|peer| peer.addr),
        secure: peer.is_some_and(|peer| peer.secure),
    };
    if let Err(why) = state.accepting() {
        return refuse(&state, StatusCode::SERVICE_UNAVAILABLE, &why);
    }
    if !origin_allowed(&state.config, &request) {
        // The peer's header, echoed in the answer and the log: at most 64 characters of it.
        let origin = clip(request.origin().unwrap_or_default());
        let reason = format!("origin {origin} not allowed");
        return refuse_upgrade(&state, StatusCode::FORBIDDEN, &reason, on_upgrade, &accept);
    }
    // A wsrelay client says so in its URL: it is then never taken for a bare client.
    let announced = matches!(request.query_param("v"), Ok(Some(_)));
    let identity = match (state.auth)(&request) {
        Ok(identity) => identity,
        Err(rejection) => {
            let (status, reason) = (rejection.status, &rejection.reason);
            return refuse_upgrade(&state, status, reason, on_upgrade, &accept);
        }
    };
    if let Err(rejection) = check_source(&identity.source) {
        return refuse(&state, rejection.status, &rejection.reason);
    }
    // Which attempt of which client instance this is: the claim orders them (a client's stale
    // attempt never replaces its newer one).
    let attempt = match request.query_param("attempt") {
        Ok(None) => None,
        Ok(Some(text)) => match Attempt::parse(&text) {
            Some(attempt) => Some(attempt),
            None => {
                let reason = "?attempt= must be INSTANCE.NUMBER (1 to 32 letters or digits)";
                return refuse(&state, StatusCode::BAD_REQUEST, reason);
            }
        },
        Err(rejection) => return refuse(&state, rejection.status, &rejection.reason),
    };
    // A client that names its attempt is checked by the claim instead, which knows whether
    // the connection that holds the source is its own (superseded, never a duplicate).
    if state.config.on_duplicate == OnDuplicate::Reject
        && attempt.is_none()
        && state
            .engine
            .is_connected(&identity.source)
            .await
            .unwrap_or(false)
    {
        let reason = format!("source {:?} already connected", identity.source);
        return refuse(&state, StatusCode::CONFLICT, &reason);
    }
    let ip = request
        .remote_addr
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |addr| addr.ip());
    let place = match state.admission.live(ip) {
        Ok(place) => place,
        Err(Full::Total) => {
            return refuse(
                &state,
                StatusCode::SERVICE_UNAVAILABLE,
                "too many connections",
            )
        }
        Err(Full::PerIp) => {
            let reason = "too many connections from this address";
            return refuse(&state, StatusCode::TOO_MANY_REQUESTS, reason);
        }
    };
    let Some(on_upgrade) = on_upgrade else {
        return refuse(
            &state,
            StatusCode::BAD_REQUEST,
            "this connection cannot be upgraded",
        );
    };
    state.metrics.opened.inc();
    // The shutdown waits for this connection: the token lives as long as its task.
    let tracked = state.lifecycle.tracker.token();
    let addr = request.remote_addr;
    tokio::spawn(async move {
        let _tracked = tracked;
        let _place = place;
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(error) => {
                tracing::debug!(%error, "upgrade failed");
                return;
            }
        };
        connection::serve(upgraded, state, identity, attempt, announced, addr).await;
    });
    switching_protocols(&accept)
}
