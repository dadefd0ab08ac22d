//! Appending a client's message to one recipient, and the commit of the sender's watermark
//! (and its own answer) that makes it consumed. Rooms and broadcasts are appended to logs
//! (`logs`).

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
