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

use serde::Serialize;
use tokio::sync::Notify;

use crate::engine::Router;
use crate::handlers::{erase, Incoming};
use crate::hub::Hub;
use crate::server::server_message;

/// Message type of the announcements.
pub const PRESENCE: &str = "relay:presence";
/// Request type answered with the sorted list of online sources.
pub const CLIENTS: &str = "relay:clients";

/// One announcement's payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Change {
    /// Sources online now that were not at the last announcement.
    pub(crate) joined: Vec<String>,
    /// Sources announced online last time that are gone.
    pub(crate) left: Vec<String>,
}

/// Wakes the announcer when somebody connects or disconnects.
#[derive(Default)]
pub(crate) struct PresenceSignal(Notify);

impl PresenceSignal {
    pub(crate) fn changed(&self) {
        self.0.notify_one();
    }
}

/// Announces changes until the server shuts down.
pub(crate) async fn announce(hub: Weak<Hub>, signal: Arc<PresenceSignal>) {
    let mut announced: BTreeSet<String> = BTreeSet::new();
    loop {
        let Some(interval) = hub.upgrade().map(|hub| hub.config.presence_interval) else {
            return;
        };
        signal.0.notified().await;
        // Let changes gather for one interval: one announcement covers them all.
        tokio::time::sleep(interval).await;
        let Some(hub) = hub.upgrade() else {
            return;
        };
        if hub.shutdown.is_cancelled() {
            return;
        }
        let online: BTreeSet<String> = match hub.engine.clients().await {
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
        let (_, frame) = server_message(&hub, PRESENCE, &payload);
        if let Err(error) = hub.engine.broadcast(frame, None).await {
            tracing::warn!(%error, "presence not announced");
        }
    }
}

/// Answers `relay:clients` with the sorted list of online sources.
pub(crate) fn install_clients_handler(hub: &Arc<Hub>) {
    let weak = Arc::downgrade(hub);
    let handler = erase(move |_: Incoming<serde_json::Value>| {
        let hub = weak.upgrade();
        async move {
            match hub {
                Some(hub) => hub.engine.clients().await.map(Some),
                None => Ok(None),
            }
        }
    });
    hub.handlers.insert(CLIENTS, handler);
}
