//! Who is online ([`ServerConfig::presence`](crate::ServerConfig::presence)): changes are
//! announced to every client as `relay:presence` messages, and a `relay:clients` request is
//! answered with the list.
//!
//! Changes are coalesced: at most one announcement per `presence_interval`, carrying every
//! source that came or went since the last one (a source that left and came back in between
//! is no change). A flood of N connections therefore costs each client a handful of frames,
//! not N, and nobody falls behind because of who else arrived. The list comes from the
//! engine, so with a shared engine it spans every relay.

use std::collections::BTreeSet;
use std::sync::{Arc, Weak};

use serde::{Deserialize, Serialize};

use crate::engine::MessageRouter;
use crate::handlers::{erase, Incoming};
use crate::state::{PresenceSignal, ServerState};

/// Message type of the announcements.
pub const PRESENCE: &str = "relay:presence";
/// Request type answered with the sorted list of online sources, a page at a time: at most
/// `limit` (default and at most [`CLIENTS_PAGE`]) sources after `after`, both optional fields
/// of the request's payload. A page shorter than asked is the last one.
pub const CLIENTS: &str = "relay:clients";

/// The most sources one `relay:clients` answer lists (up to 128 KiB of names).
pub const CLIENTS_PAGE: usize = 1000;

/// The payload of a `relay:clients` request (`null` is the first page).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Page {
    /// List the sources after this one.
    after: Option<String>,
    /// At most this many.
    limit: Option<usize>,
}

/// One announcement's payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Change {
    /// Sources online now that were not at the last announcement.
    pub(crate) joined: Vec<String>,
    /// Sources announced online last time that are gone.
    pub(crate) left: Vec<String>,
}

/// Announces changes until the server shuts down.
pub(crate) async fn announce(state: Weak<ServerState>, signal: Arc<PresenceSignal>) {
    let mut announced: BTreeSet<String> = BTreeSet::new();
    let Some(shutdown) = state
        .upgrade()
        .map(|state| state.lifecycle.shutdown_token())
    else {
        return;
    };
    loop {
        let Some(interval) = state.upgrade().map(|state| state.config.presence_interval) else {
            return;
        };
        // The shutdown ends the wait too: the server's close waits for this task.
        tokio::select! {
            () = signal.wait() => {}
            () = shutdown.cancelled() => return,
        }
        // Let changes gather for one interval: one announcement covers them all.
        tokio::time::sleep(interval).await;
        let Some(state) = state.upgrade() else {
            return;
        };
        if state.lifecycle.shutting_down() {
            return;
        }
        let online: BTreeSet<String> = match state.engine.clients().await {
            Ok(clients) => clients.into_iter().collect(),
            Err(error) => {
                tracing::warn!(%error, "presence not announced");
                signal.changed();
                continue;
            }
        };
        let change = Change {
            joined: online.difference(&announced).cloned().collect(),
            left: announced.difference(&online).cloned().collect(),
        };
        announced = online;
        if change.joined.is_empty() && change.left.is_empty() {
            continue;
        }
        let payload = match serde_json::to_string(&change) {
            Ok(payload) => payload,
            Err(error) => {
                tracing::error!(%error, "presence not serializable");
                continue;
            }
        };
        let (_, frame) = state.requests.server_message(PRESENCE, &payload, false);
        if let Err(error) = state.engine.broadcast(frame, None).await {
            tracing::warn!(%error, "presence not announced");
        }
    }
}

/// Answers `relay:clients` with a page of the sorted list of online sources.
pub(crate) fn install_clients_handler(state: &Arc<ServerState>) {
    let weak = Arc::downgrade(state);
    let handler = erase(move |request: Incoming<Option<Page>>| {
        let state = weak.upgrade();
        let page = request.payload.unwrap_or_default();
        async move {
            let Some(state) = state else {
                return Ok::<_, crate::engine::EngineError>(None);
            };
            let mut clients = state.engine.clients().await?;
            let start = match &page.after {
                Some(after) => clients.partition_point(|source| source <= after),
                None => 0,
            };
            let limit = page.limit.unwrap_or(CLIENTS_PAGE).min(CLIENTS_PAGE);
            clients.truncate(start.saturating_add(limit));
            clients.drain(..start.min(clients.len()));
            Ok(Some(clients))
        }
    });
    state.handlers.insert(CLIENTS, handler);
}
