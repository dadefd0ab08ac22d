//! Who is online, for the relay binary: joins and leaves are announced to every client as
//! `relay:presence` messages, and a `relay:clients` request is answered with the list.
//!
//! Built on the library's public hooks only. A source counts as online while at least one of
//! its connections is registered: when a reconnect replaces a connection, the new one
//! registers before the old one leaves, and nobody sees the source flicker.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;
use tokio::sync::mpsc;
use wsrelay_server::{Incoming, ServerBuilder, WebSocketServer};

/// Message type of the announcements.
pub const PRESENCE: &str = "relay:presence";
/// Request type answered with the sorted list of online sources.
pub const CLIENTS: &str = "relay:clients";

/// One announcement's payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// Who joined or left.
    pub source: String,
    /// Whether they are online now.
    pub online: bool,
}

/// Connections per online source.
type Online = Arc<Mutex<BTreeMap<String, usize>>>;

/// Presence tracking; [`install`](Self::install) it on a builder, then
/// [`announce`](Self::announce) once the server is bound.
pub struct Presence {
    online: Online,
    changes_tx: mpsc::UnboundedSender<Change>,
    changes: mpsc::UnboundedReceiver<Change>,
}

impl Presence {
    /// Nobody online yet.
    pub fn new() -> Self {
        let (changes_tx, changes) = mpsc::unbounded_channel();
        Presence {
            online: Online::default(),
            changes_tx,
            changes,
        }
    }

    /// Adds the hooks and the `relay:clients` handler to `builder`.
    pub fn install(&self, builder: ServerBuilder) -> ServerBuilder {
        let (joins, leaves, listing) = (
            self.online.clone(),
            self.online.clone(),
            self.online.clone(),
        );
        let (join_tx, leave_tx) = (self.changes_tx.clone(), self.changes_tx.clone());
        builder
            .on_connect(move |client| {
                let mut online = joins.lock().unwrap_or_else(PoisonError::into_inner);
                let count = online.entry(client.source.clone()).or_insert(0);
                *count += 1;
                if *count == 1 {
                    let _ = join_tx.send(Change {
                        source: client.source.clone(),
                        online: true,
                    });
                }
            })
            .on_disconnect(move |client, _reason| {
                let mut online = leaves.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(count) = online.get_mut(&client.source) {
                    *count -= 1;
                    if *count == 0 {
                        online.remove(&client.source);
                        let _ = leave_tx.send(Change {
                            source: client.source.clone(),
                            online: false,
                        });
                    }
                }
            })
            .on(CLIENTS, move |_: Incoming<serde_json::Value>| {
                let sources: Vec<String> = listing
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .keys()
                    .cloned()
                    .collect();
                async move { Some(sources) }
            })
    }

    /// Broadcasts every change, excluding the client it is about, until the server is gone.
    pub async fn announce(mut self, server: WebSocketServer) {
        drop(self.changes_tx);
        while let Some(change) = self.changes.recv().await {
            if let Err(error) = server
                .broadcast(PRESENCE, &change, Some(&change.source))
                .await
            {
                tracing::warn!(%error, "presence not announced");
            }
        }
    }
}
