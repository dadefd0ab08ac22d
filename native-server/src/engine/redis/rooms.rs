//! Rooms' membership (PROTOCOL.md section 14) in Redis: a session's rooms are a field of its
//! meta (`rooms`), with its place in each room's log (`c:<room>`), indexed per shard by a set
//! of each room's members in the shard (`wsr:{s}:r:<room>`), which lists a room's members.
//! Membership so lives and dies with the session's keys. The messages go through the rooms'
//! logs (`logs`).

use super::status::Status;
use super::*;

/// What the membership script did.
pub(super) enum Membership {
    /// Joined or left; whether the session was a member before.
    Done { was_member: bool },
    /// The claim is stale: another connection holds the source (its client instance).
    Fenced { holder: String },
    /// Nobody with that source is connected or within its grace period.
    Gone,
}

impl RedisEngine {
    /// `source` joins (or leaves) `room`; `epoch`: the claim doing it, `None` for the
    /// server's own decision.
    pub(super) async fn membership(
        &self,
        source: &str,
        epoch: Option<u64>,
        room: &str,
        join: bool,
        after: u64,
    ) -> Result<Membership, EngineError> {
        let keys = Keys::of(source);
        let room_hex = hex(room);
        let epoch = epoch.map(|epoch| epoch.to_string()).unwrap_or_default();
        let value = self
            .eval(
                &self.scripts.membership,
                &[&keys.meta, &keys.room(&room_hex)],
                &[
                    epoch.as_bytes(),
                    room_hex.as_bytes(),
                    keys.hex.as_bytes(),
                    if join { b"1" } else { b"0" },
                    after.to_string().as_bytes(),
                ],
            )
            .await?;
        Ok(match Status::of("membership", &value)? {
            Status::Done => Membership::Done {
                was_member: ints(&value).get(1).copied() == Some(1),
            },
            Status::Fenced => Membership::Fenced {
                holder: text(items(&value).get(2)),
            },
            Status::Gone => Membership::Gone,
            other => return Err(EngineError(format!("membership answered {other:?}"))),
        })
    }

    /// The server changed `source`'s rooms: whichever relay holds its connection follows
    /// them again (from the places stored).
    pub(super) async fn rejoin_everywhere(&self, source: &str) {
        let mut conn = self.conn.clone();
        let note = Note::Rooms {
            source: hex(source),
        }
        .encode();
        let published: Result<i64, _> = self
            .call(
                redis::cmd("PUBLISH")
                    .arg(ALL)
                    .arg(note)
                    .query_async(&mut conn),
            )
            .await;
        if let Err(error) = published {
            tracing::warn!(%error, source, "a change of rooms not announced");
        }
    }

    /// Follows the rooms of `source`'s connection here again, from the places stored.
    pub(super) async fn reattach(&self, source: &str) {
        let claim = {
            let locals = self.locals();
            let Some(local) = locals.get(source) else {
                return;
            };
            Claim {
                source: source.to_owned(),
                key: 0,
                epoch: local.epoch,
                next: 0,
                attempt: None,
                session: local.session.then(String::new),
            }
        };
        if let Err(error) = self.attach_session(&claim, true).await {
            tracing::warn!(%error, source, "cannot follow the rooms again");
        }
    }

    /// Whether `source`'s session is a member of `room` (its meta says so).
    pub(super) async fn in_room(&self, source: &str, room: &str) -> Result<bool, EngineError> {
        let keys = Keys::of(source);
        let mut conn = self.conn.clone();
        let rooms: Option<String> = self
            .call(
                redis::cmd("HGET")
                    .arg(&keys.meta)
                    .arg("rooms")
                    .query_async(&mut conn),
            )
            .await?;
        let entry = format!(",{},", hex(room));
        Ok(rooms.is_some_and(|rooms| rooms.contains(&entry)))
    }

    /// The members of `room` connected now, sorted: the room's index in every shard, each
    /// candidate checked against its meta (the index may name sessions that expired).
    pub(super) async fn room_members(&self, room: &str) -> Result<Vec<String>, EngineError> {
        let room_hex = hex(room);
        let reads = (0..SHARDS).map(|shard| {
            let key = format!("wsr:{{{shard}}}:r:{room_hex}");
            let mut conn = self.conn.clone();
            async move {
                self.call::<Vec<String>>(redis::cmd("SMEMBERS").arg(key).query_async(&mut conn))
                    .await
            }
        });
        let online = self.clients().await?;
        let mut members = Vec::new();
        for indexed in join_all(reads).await {
            for member in indexed? {
                let Some(source) = unhex(&member) else {
                    continue;
                };
                if online.binary_search(&source).is_ok() && self.in_room(&source, room).await? {
                    members.push(source);
                }
            }
        }
        members.sort_unstable();
        Ok(members)
    }
}
