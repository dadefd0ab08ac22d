//! Appending a client's message: to one recipient, to every shard for a broadcast, and the
//! commit of the sender's watermark (and its own answer) that makes it consumed.

use super::status::Status;
use super::*;

impl RedisEngine {
    /// Appends a frame for another source (a directed message, or the server's own).
    pub(super) async fn route_one(
        &self,
        target: &str,
        frame: &Utf8Bytes,
        sender: Option<(&str, &str)>,
        window: Option<usize>,
    ) -> Result<Status, EngineError> {
        let keys = Keys::of(target);
        let (sender_hex, dedupe) = match sender {
            Some((source, dedupe)) => (hex(source), dedupe.to_owned()),
            None => (String::new(), String::new()),
        };
        let window = window.map_or(-1, |w| i64::try_from(w).unwrap_or(i64::MAX));
        let node = self.node()?.to_string();
        let value = self
            .eval(
                &self.scripts.route_one,
                &[&keys.meta, &keys.r#box, &keys.from],
                &[
                    frame.as_bytes(),
                    sender_hex.as_bytes(),
                    dedupe.as_bytes(),
                    window.to_string().as_bytes(),
                    self.limits.max_backlog.to_string().as_bytes(),
                    b"",
                    node.as_bytes(),
                    keys.hex.as_bytes(),
                ],
            )
            .await?;
        let parts = items(&value);
        let status = Status::of("route_one", &value)?;
        let position = ints(&value).get(1).copied().unwrap_or(0);
        let owner = text(parts.get(2));
        match status {
            // Another relay's connection was told by the script itself.
            Status::Done if owner == node => {
                if let Ok(position) = u64::try_from(position) {
                    self.cache(target, position, frame.clone());
                }
            }
            Status::Duplicate => self.check(vec![(keys.hex.clone(), owner)]).await,
            _ => {}
        }
        Ok(status)
    }

    /// Appends a frame to every source but `exclude`, shard by shard. Returns how many took
    /// it, or the member that is behind (nothing appended in its shard).
    pub(super) async fn broadcast_all(
        &self,
        frame: &Utf8Bytes,
        exclude: Option<&str>,
        dedupe: &str,
        window: Option<usize>,
    ) -> Result<Result<usize, String>, EngineError> {
        self.fan_out(frame, exclude, dedupe, window, None).await
    }

    /// [`broadcast_all`](Self::broadcast_all), or to the members of `room` only: the same
    /// script, over the room's members in each shard.
    pub(super) async fn fan_out(
        &self,
        frame: &Utf8Bytes,
        exclude: Option<&str>,
        dedupe: &str,
        window: Option<usize>,
        room: Option<&str>,
    ) -> Result<Result<usize, String>, EngineError> {
        let exclude_hex = exclude.map(hex).unwrap_or_default();
        let room_hex = room.map(hex).unwrap_or_default();
        let window = window.map_or(-1, |w| i64::try_from(w).unwrap_or(i64::MAX));
        let (window, max) = (window.to_string(), self.limits.max_backlog.to_string());
        let calls = (0..SHARDS).map(|shard| {
            let members = match room {
                Some(_) => format!("wsr:{{{shard}}}:r:{room_hex}"),
                None => format!("wsr:{{{shard}}}:members"),
            };
            let dedupe_key = format!("wsr:{{{shard}}}:bf");
            let prefix = format!("wsr:{{{shard}}}:");
            let (window, max, exclude_hex, room_hex) = (&window, &max, &exclude_hex, &room_hex);
            async move {
                self.eval(
                    &self.scripts.broadcast,
                    &[&members, &dedupe_key],
                    &[
                        frame.as_bytes(),
                        exclude_hex.as_bytes(),
                        dedupe.as_bytes(),
                        window.as_bytes(),
                        max.as_bytes(),
                        prefix.as_bytes(),
                        room_hex.as_bytes(),
                    ],
                )
                .await
            }
        });
        let results = join_all(calls).await;
        let mut notes = HashMap::new();
        let mut checks = Vec::new();
        let mut behind = None;
        let mut failed = None;
        let mut delivered = 0;
        for result in results {
            // The shards that did append are announced even when another failed.
            let value = match result {
                Ok(value) => value,
                Err(error) => {
                    failed = Some(error);
                    continue;
                }
            };
            let parts = items(&value);
            match Status::of("broadcast", &value) {
                Ok(Status::Duplicate) => {
                    for entry in parts.get(1..).unwrap_or_default().chunks(2) {
                        if let [member, owner] = entry {
                            checks.push((text(Some(member)), text(Some(owner))));
                        }
                    }
                }
                Ok(Status::Done) => {
                    for entry in parts.get(1..).unwrap_or_default().chunks(3) {
                        let [member, position, owner] = entry else {
                            continue;
                        };
                        let member = text(Some(member));
                        let position = ints(&Value::Array(vec![position.clone()]))
                            .first()
                            .copied()
                            .unwrap_or(-1);
                        let owner = text(Some(owner));
                        if position < 0 {
                            if !owner.is_empty() {
                                self.notify(&owner, Note::Overflowed { source: member })
                                    .await;
                            }
                            continue;
                        }
                        delivered += 1;
                        self.handover(&member, position, &owner, frame, &mut notes);
                    }
                }
                Ok(Status::Blocked) => behind = unhex(&text(parts.get(1))),
                Ok(other) => failed = Some(EngineError(format!("broadcast answered {other:?}"))),
                Err(error) => failed = Some(error),
            }
        }
        self.publish(notes, frame).await;
        self.check(checks).await;
        if let Some(error) = failed {
            return Err(error);
        }
        Ok(match behind {
            Some(member) => Err(member),
            None => Ok(delivered),
        })
    }

    /// Consumes `id` for the claim's source (and appends `frame` to its own box).
    pub(super) async fn commit(
        &self,
        claim: &Claim,
        id: Option<u64>,
        frame: Option<&Utf8Bytes>,
    ) -> Result<Routed, EngineError> {
        let keys = Keys::of(&claim.source);
        let id = id.map(|id| id.to_string()).unwrap_or_default();
        let value = self
            .eval(
                &self.scripts.commit,
                &[&keys.meta, &keys.r#box],
                &[
                    claim.epoch.to_string().as_bytes(),
                    id.as_bytes(),
                    frame.map_or(&b""[..], |frame| frame.as_bytes()),
                ],
            )
            .await?;
        let numbers = ints(&value);
        Ok(match Status::of("commit", &value)? {
            Status::Done => {
                if let (Some(frame), Some(&position)) = (frame, numbers.get(1)) {
                    if let Ok(position) = u64::try_from(position) {
                        self.cache(&claim.source, position, frame.clone());
                    }
                }
                Routed::Done
            }
            Status::Duplicate => {
                // Appended before, its answer lost: the frame was never handed over.
                if frame.is_some() {
                    self.recheck(&claim.source);
                }
                Routed::Duplicate
            }
            Status::Fenced => Routed::Fenced {
                superseded: claim.superseded_by(Some(&text(items(&value).get(2)))),
            },
            Status::Gone => Routed::Gone,
            other => return Err(EngineError(format!("commit answered {other:?}"))),
        })
    }
}
