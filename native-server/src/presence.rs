//! Who is online ([`ServerConfig::presence`](crate::ServerConfig::presence)): changes are
//! announced to every client as `relay:presence` messages, and a `relay:clients` request is
//! answered with the list. Per room too: the members of a room connected now, announced to
//! the room's members as `relay:presence` messages with the room in their envelope, and
//! listed by `relay:clients` with `{"room": NAME}` (for members of the room only).
//!
//! Changes are coalesced: at most one announcement per `presence_interval`, carrying every
//! source that came or went since the last one (a source that left and came back in between
//! is no change). A flood of N connections therefore costs each client a handful of frames,
//! not N, and nobody falls behind because of who else arrived. The list comes from the
//! engine, so with a shared engine it spans every relay.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Weak};

use serde::{Deserialize, Serialize};

use wsrelay_core::protocol::ErrorCode;

use crate::engine::{MessageRouter, SendRefused};
use crate::handlers::{erase, Incoming, IntoReply, Reply};
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
    /// List this room's members connected now instead (the asker must be a member).
    room: Option<String>,
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
    let mut announced_rooms: HashMap<String, BTreeSet<String>> = HashMap::new();
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
        announce_rooms(&state, &mut announced_rooms).await;
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

/// Announces to each room's members who of them came or went since the last announcement
/// (`announced`: the members announced per room, brought up to date).
async fn announce_rooms(state: &ServerState, announced: &mut HashMap<String, BTreeSet<String>>) {
    let rooms = match state.engine.rooms().await {
        Ok(rooms) => rooms,
        Err(error) => {
            tracing::warn!(%error, "presence per room not announced");
            return;
        }
    };
    let mut now: HashMap<String, BTreeSet<String>> = HashMap::with_capacity(rooms.len());
    for (room, members) in rooms {
        let online: BTreeSet<String> = members.into_iter().collect();
        let before = announced.remove(&room).unwrap_or_default();
        let change = Change {
            joined: online.difference(&before).cloned().collect(),
            left: before.difference(&online).cloned().collect(),
        };
        if !change.joined.is_empty() || !change.left.is_empty() {
            match serde_json::to_string(&change) {
                Ok(payload) => {
                    let frame = state.requests.room_message(&room, PRESENCE, &payload);
                    if let Err(error) = state.engine.send_to_room(&room, frame, None).await {
                        tracing::warn!(%error, room, "presence per room not announced");
                    }
                }
                Err(error) => tracing::error!(%error, "presence not serializable"),
            }
        }
        now.insert(room, online);
    }
    // Rooms left by everyone have nobody to tell.
    *announced = now;
}

/// Answers `relay:clients` with a page of the sorted list of online sources.
pub(crate) fn install_clients_handler(state: &Arc<ServerState>) {
    let weak = Arc::downgrade(state);
    let handler = erase(move |request: Incoming<Option<Page>>| {
        let state = weak.upgrade();
        let page = request.payload.unwrap_or_default();
        let asker = request.source;
        async move {
            let Some(state) = state else {
                return Reply::None;
            };
            let listed = match &page.room {
                Some(room) => room_members(&state, &asker, room).await,
                None => state.engine.clients().await.map_err(|error| {
                    Reply::error(ErrorCode::HandlerError.as_str(), error.to_string())
                }),
            };
            let mut clients = match listed {
                Ok(clients) => clients,
                Err(reply) => return reply,
            };
            let start = match &page.after {
                Some(after) => clients.partition_point(|source| source <= after),
                None => 0,
            };
            let limit = page.limit.unwrap_or(CLIENTS_PAGE).min(CLIENTS_PAGE);
            clients.truncate(start.saturating_add(limit));
            clients.drain(..start.min(clients.len()));
            Some(clients).into_reply()
        }
    });
    state.handlers.insert(CLIENTS, handler);
}

/// The members of `room` connected now, if `asker` is one of them (a room's members are its
/// own business); else the reply that says why not.
async fn room_members(state: &ServerState, asker: &str, room: &str) -> Result<Vec<String>, Reply> {
    let refused =
        |error: SendRefused| Reply::error(ErrorCode::HandlerError.as_str(), error.to_string());
    if !state.engine.is_member(asker, room).await.map_err(refused)? {
        let message = format!("you are not a member of room {room:?}");
        return Err(Reply::error(ErrorCode::NotMember.as_str(), message));
    }
    state.engine.members(room).await.map_err(refused)
}
