//! The HTTP side: WebSocket upgrades on any path (after origin and authentication checks),
//! static files for everything else.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower::ServiceExt;
use tower_http::services::ServeDir;

use crate::auth::UpgradeRequest;
use crate::config::OnDuplicate;
use crate::connection;
use crate::engine::Router as _;
use crate::hub::Hub;

#[derive(Clone)]
struct App {
    hub: Arc<Hub>,
    files: Option<ServeDir>,
}

/// The router: one fallback handler sees every request.
pub(crate) fn router(hub: Arc<Hub>) -> Router {
    let files = hub
        .config
        .static_dir
        .as_ref()
        .map(|dir| ServeDir::new(dir).append_index_html_on_directories(true));
    Router::new().fallback(entry).with_state(App { hub, files })
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.eq_ignore_ascii_case("websocket"))
}

/// Holds one of the `max_connections` places until the connection ends (or never upgrades).
struct Slot(Arc<Hub>);

impl Slot {
    fn reserve(hub: &Arc<Hub>) -> Option<Slot> {
        let max = hub.config.max_connections;
        hub.live
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(Arc::clone(hub)))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::AcqRel);
    }
}

fn refuse(hub: &Hub, status: StatusCode, reason: String) -> Response {
    hub.stats.rejected.fetch_add(1, Ordering::Relaxed);
    tracing::info!(%status, reason, "upgrade refused");
    (status, reason).into_response()
}

async fn entry(State(app): State<App>, request: Request) -> Response {
    let hub = app.hub;
    if !is_upgrade(request.headers()) {
        return match app.files {
            Some(files) => match files.oneshot(request).await {
                Ok(response) => response.map(Body::new),
                Err(never) => match never {},
            },
            None => (
                StatusCode::UPGRADE_REQUIRED,
                "wsrelay: connect with a WebSocket\n",
            )
                .into_response(),
        };
    }
    let addr = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0);
    let (mut parts, _body) = request.into_parts();
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    let request = UpgradeRequest {
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers,
        remote_addr: addr,
    };
    if hub.shutdown.is_cancelled() {
        return refuse(
            &hub,
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting down".into(),
        );
    }
    let allowed = &hub.config.allowed_origins;
    if let Some(origin) = request.origin() {
        if !allowed.is_empty() && !allowed.iter().any(|o| o == origin) {
            return refuse(
                &hub,
                StatusCode::FORBIDDEN,
                format!("origin {origin} not allowed"),
            );
        }
    }
    // A wsrelay client says so in its URL: it is then never taken for a bare client.
    let announced = request.query_param("v").is_some();
    let source = match (hub.auth)(&request) {
        Ok(source) => source,
        Err(rejection) => return refuse(&hub, rejection.status, rejection.reason),
    };
    if hub.config.on_duplicate == OnDuplicate::Reject
        && hub.engine.is_connected(&source).await.unwrap_or(false)
    {
        return refuse(
            &hub,
            StatusCode::CONFLICT,
            format!("source {source:?} already connected"),
        );
    }
    let Some(slot) = Slot::reserve(&hub) else {
        return refuse(
            &hub,
            StatusCode::SERVICE_UNAVAILABLE,
            "too many connections".into(),
        );
    };
    hub.stats.accepted.fetch_add(1, Ordering::Relaxed);
    let config = &hub.config;
    let hard_limit = config.hard_message_limit();
    // The shutdown waits for this connection: the token lives as long as the upgrade task.
    let tracked = hub.tracker.token();
    upgrade
        .read_buffer_size(config.read_buffer_size)
        .write_buffer_size(config.write_buffer_size)
        .max_write_buffer_size(config.write_buffer_size + hard_limit + 64 * 1024)
        .max_message_size(hard_limit)
        .max_frame_size(hard_limit)
        .on_upgrade(move |socket| async move {
            let _tracked = tracked;
            let _slot = slot;
            connection::serve(socket, hub, source, announced, addr).await;
        })
}
