//! The engine's contract ([`SessionStore`], [`MessageRouter`]) over the scripts: claims, sessions,
//! fetches, settles and routes.

use super::logs::{Appended, EVERYONE};
use super::rooms::Membership;
use super::status::{self, Claimed, Open, Status};
use super::*;

impl SessionStore for RedisEngine {
    async fn claim(
        &self,
        source: &str,
        attempt: Option<&Attempt>,
        doorbell: &Doorbell,
        exclusive: bool,
    ) -> Result<Claim, ClaimError> {
        let node = self.node().map_err(ClaimError::Unavailable)?;
        let keys = Keys::of(source);
        let (instance, number) = attempt.map_or((String::new(), String::new()), |attempt| {
            (attempt.instance.clone(), attempt.number.to_string())
        });
        let value = self
            .eval(
                &self.scripts.claim,
                &[&keys.meta, &keys.r#box, &keys.from, &keys.members],
                &[
                    node.to_string().as_bytes(),
                    if exclusive { b"1" } else { b"0" },
                    LEASE.as_millis().to_string().as_bytes(),
                    self.limits.session_grace.as_millis().to_string().as_bytes(),
                    keys.hex.as_bytes(),
                    instance.as_bytes(),
                    number.as_bytes(),
                ],
            )
            .await
            .map_err(ClaimError::Unavailable)?;
        let numbers = ints(&value);
        let epoch = match Claimed::of(&value).map_err(ClaimError::Unavailable)? {
            Claimed::Occupied => return Err(ClaimError::Occupied),
            Claimed::Stale => return Err(ClaimError::Stale),
            Claimed::Epoch(epoch) => epoch,
        };
        let next = numbers
            .get(1)
            .copied()
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(1);
        let previous = text(items(&value).get(2));
        let signal = if numbers.get(3) == Some(&1) {
            Signal::Superseded
        } else {
            Signal::Replaced
        };
        let replaced = self.locals().insert(
            source.to_owned(),
            Local {
                epoch,
                doorbell: doorbell.clone(),
                inbox: Inbox::default(),
                session: false,
            },
        );
        if let Some(old) = replaced {
            old.doorbell.ring(signal);
        }
        if !previous.is_empty() && previous != node.to_string() {
            let note = Note::Replaced {
                source: keys.hex.clone(),
                epoch,
                superseded: signal == Signal::Superseded,
            };
            self.notify(&previous, note).await;
        }
        self.present(source).await;
        Ok(Claim {
            source: source.to_owned(),
            key: 0,
            epoch,
            next,
            attempt: attempt.cloned(),
            session: None,
        })
    }

    async fn open(
        &self,
        claim: &mut Claim,
        hello: Option<&Hello>,
        fresh_next: u64,
    ) -> Result<Opened, EngineError> {
        let keys = Keys::of(&claim.source);
        let (token, ack, sid) = match hello {
            Some(hello) => (
                hello.token.as_str(),
                hello.ack,
                hello.sid.as_deref().unwrap_or(""),
            ),
            None => ("", 0, ""),
        };
        let new_sid = self.new_sid();
        let value = self
            .eval(
                &self.scripts.open,
                &[&keys.meta, &keys.r#box],
                &[
                    claim.epoch.to_string().as_bytes(),
                    token.as_bytes(),
                    ack.to_string().as_bytes(),
                    sid.as_bytes(),
                    fresh_next.to_string().as_bytes(),
                    new_sid.as_bytes(),
                    keys.prefix.as_bytes(),
                    keys.hex.as_bytes(),
                ],
            )
            .await?;
        match Open::of(&value)? {
            Open::Opened => {}
            Open::Fenced => return Err(EngineError("the source was claimed again".into())),
            Open::Gone => return Err(EngineError("the source's state is gone".into())),
        }
        let numbers = ints(&value);
        let number = |i: usize| {
            numbers
                .get(i)
                .copied()
                .and_then(|n| u64::try_from(n).ok())
                .unwrap_or(0)
        };
        let lost = numbers.get(4).copied().filter(|&n| n >= 0);
        let sid = text(items(&value).get(5));
        claim.session = hello.map(|hello| hello.token.clone());
        // The connection reads the mailbox from its session's start.
        self.with_local(claim, |local| {
            local.inbox.forget();
            local.session = hello.is_some();
        });
        // Where it is in its rooms' logs: stored with a session that goes on.
        let resumed = number(0) == 1
            || (!sid.is_empty() && Some(sid.as_str()) == hello.and_then(|h| h.sid.as_deref()));
        self.attach_session(claim, resumed).await?;
        Ok(Opened {
            resumed: number(0) == 1,
            consumed: number(1),
            base: number(2),
            next: number(3),
            lost: lost.and_then(|n| u64::try_from(n).ok()),
            sid: (!sid.is_empty()).then_some(sid),
        })
    }

    async fn fetch(
        &self,
        claim: &Claim,
        from: u64,
        out: &mut Vec<Utf8Bytes>,
        max: usize,
    ) -> Result<usize, EngineError> {
        let now = tokio::time::Instant::now();
        let next = self.with_local(claim, |local| match local.inbox.take(from, max, now, out) {
            Next::Wait(Some(at)) => {
                // If the missing frame does not come, the connection reads its mailbox.
                let doorbell = local.doorbell.clone();
                tokio::spawn(async move {
                    tokio::time::sleep_until(at).await;
                    doorbell.ring(Signal::Mail);
                });
                Next::Wait(None)
            }
            next => next,
        });
        // Without an entry of its own (a newer claim here took it), the mailbox answers.
        let next = next.unwrap_or(Next::ReadMailbox);
        match next {
            Next::Taken(count) => return Ok(count),
            Next::Wait(_) => return Ok(0),
            Next::ReadMailbox => {}
        }
        let keys = Keys::of(&claim.source);
        let value = self
            .eval(
                &self.scripts.fetch,
                &[&keys.meta, &keys.r#box],
                &[
                    claim.epoch.to_string().as_bytes(),
                    from.to_string().as_bytes(),
                    max.to_string().as_bytes(),
                ],
            )
            .await?;
        let parts = items(&value);
        let signal = match Status::of("fetch", &value)? {
            Status::Done => None,
            Status::Fenced if claim.superseded_by(Some(&text(parts.get(1)))) => {
                Some(Signal::Superseded)
            }
            Status::Fenced => Some(Signal::Replaced),
            Status::Gone => Some(Signal::Gone),
            other => return Err(EngineError(format!("fetch answered {other:?}"))),
        };
        if let Some(signal) = signal {
            // This connection's own doorbell: a newer connection of the source on this relay
            // is not the one fenced off.
            self.with_local(claim, |local| local.doorbell.ring(signal));
            return Ok(0);
        }
        let before = out.len();
        tracing::trace!(
            source = claim.source,
            from,
            count = parts.len().saturating_sub(1),
            "fetched from Redis"
        );
        for frame in parts.get(1..).unwrap_or_default() {
            if let Value::BulkString(bytes) = frame {
                match Utf8Bytes::try_from(bytes.clone()) {
                    Ok(frame) => out.push(frame),
                    Err(_) => tracing::error!("a mailbox frame is not UTF-8"),
                }
            }
        }
        if parts.len() > max {
            // A full batch: the mailbox may hold more, which nothing will hand over (it was
            // appended before this read). The next fetch reads the mailbox again.
            self.with_local(claim, |local| local.inbox.forget());
        }
        Ok(out.len() - before)
    }

    async fn settle(&self, claim: &Claim, through: u64) -> Result<(), EngineError> {
        let keys = Keys::of(&claim.source);
        let value = self
            .eval(
                &self.scripts.settle,
                &[&keys.meta, &keys.r#box],
                &[
                    claim.epoch.to_string().as_bytes(),
                    through.to_string().as_bytes(),
                ],
            )
            .await?;
        // Fenced or gone: the connection learns it from its next fetch, which reads the same
        // state; settling nothing is all that is left to do here.
        match Status::of("settle", &value)? {
            Status::Done | Status::Fenced | Status::Gone => Ok(()),
            other => Err(EngineError(format!("settle answered {other:?}"))),
        }
    }

    async fn release(&self, claim: &Claim) {
        self.detach(claim, None);
        {
            let mut locals = self.locals();
            if locals
                .get(&claim.source)
                .is_some_and(|local| local.epoch == claim.epoch)
            {
                locals.remove(&claim.source);
            }
        }
        let keys = Keys::of(&claim.source);
        let released = self
            .eval(
                &self.scripts.release,
                &[&keys.meta, &keys.r#box, &keys.from, &keys.members],
                &[
                    claim.epoch.to_string().as_bytes(),
                    self.limits.session_grace.as_millis().to_string().as_bytes(),
                    keys.hex.as_bytes(),
                    keys.prefix.as_bytes(),
                ],
            )
            .await;
        if let Ok(value) = released {
            if status::released(&value).unwrap_or(false) {
                let mut conn = self.conn.clone();
                let _: Result<i64, _> = self
                    .call(
                        redis::cmd("ZREM")
                            .arg("wsr:presence")
                            .arg(&claim.source)
                            .query_async(&mut conn),
                    )
                    .await;
            }
        }
    }
}

impl RedisEngine {
    /// A client's message to `room`'s log (`EVERYONE`: a broadcast), which its session must
    /// follow: consumed in the same step as it is appended. `waiter` is woken when a room
    /// that waits for a member goes on.
    async fn route_log(
        &self,
        claim: &Claim,
        id: Option<u64>,
        room: &str,
        frame: &Utf8Bytes,
        waiter: &Doorbell,
    ) -> Result<Routed, EngineError> {
        if !self.follows(claim, room) {
            return Ok(Routed::NotMember);
        }
        match self
            .append_log(room, frame, Some((claim, id)), Some(&claim.source))
            .await?
        {
            Appended::Done => Ok(Routed::Done),
            Appended::Duplicate => Ok(Routed::Duplicate),
            Appended::Blocked => {
                self.wait_for_room(room, waiter);
                Ok(Routed::Blocked {
                    on: format!("a member of room \"{room}\""),
                })
            }
            Appended::Fenced(holder) => Ok(Routed::Fenced {
                superseded: claim.superseded_by(Some(&holder)),
            }),
            Appended::Gone => Ok(Routed::Gone),
        }
    }
}

impl MessageRouter for RedisEngine {
    async fn route(
        &self,
        claim: &Claim,
        id: Option<u64>,
        effect: &Effect<Utf8Bytes>,
        waiter: &Doorbell,
    ) -> Routed {
        let outcome = async {
            // The connection's own session, whoever holds the source on this relay now.
            let dedupe = || match (&claim.session, id) {
                (Some(token), Some(id)) => format!("{token}|{id}"),
                _ => String::new(),
            };
            match effect {
                Effect::Consume => self.commit(claim, id, None).await,
                Effect::Resolve { kind, re, result } => {
                    let routed = self.commit(claim, id, None).await?;
                    if routed == Routed::Done {
                        self.resolve(&claim.source, kind, *re, result).await;
                    }
                    Ok(routed)
                }
                Effect::ToSelf { frame } => self.commit(claim, id, Some(frame)).await,
                Effect::To { target, frame } if *target == claim.source => {
                    self.commit(claim, id, Some(frame)).await
                }
                Effect::To { target, frame } => {
                    let key = dedupe();
                    let sender = Some((claim.source.as_str(), key.as_str()));
                    let window = Some(self.limits.backlog_window);
                    match self.route_one(target, frame, sender, window).await? {
                        Status::Done | Status::Duplicate => self.commit(claim, id, None).await,
                        Status::UnknownTarget => Ok(Routed::UnknownTarget),
                        Status::Blocked => Ok(Routed::Blocked { on: target.clone() }),
                        Status::Overflow => Ok(Routed::Overflow),
                        // Only an append to oneself carries an epoch to be fenced by, and
                        // the recipient's state is never "gone" to route_one.
                        other @ (Status::Fenced | Status::Gone) => Err(EngineError(format!(
                            "route_one answered {other:?} for another source"
                        ))),
                    }
                }
                Effect::Join { room, frame } | Effect::Leave { room, frame } => {
                    let join = matches!(effect, Effect::Join { .. });
                    let epoch = Some(claim.epoch);
                    let after = match join {
                        true => self.join_position(room).await?,
                        false => 0,
                    };
                    // Joining or leaving twice is joining or leaving once: a retransmit after
                    // the membership changed and before the commit changes nothing more.
                    match self
                        .membership(&claim.source, epoch, room, join, after)
                        .await?
                    {
                        Membership::Done { .. } => {
                            if !join {
                                self.detach(claim, Some(room));
                            } else if !self.follows(claim, room) {
                                self.attach(claim, room, after, false);
                            }
                            self.commit(claim, id, Some(frame)).await
                        }
                        Membership::Fenced { holder } => Ok(Routed::Fenced {
                            superseded: claim.superseded_by(Some(&holder)),
                        }),
                        Membership::Gone => Ok(Routed::Gone),
                    }
                }
                Effect::Room { room, frame } => {
                    self.route_log(claim, id, room, frame, waiter).await
                }
                Effect::Broadcast { frame } => {
                    self.route_log(claim, id, EVERYONE, frame, waiter).await
                }
            }
        };
        match outcome.await {
            Ok(routed) => routed,
            Err(error) => {
                tracing::debug!(source = claim.source, %error, "route not done");
                Routed::Unavailable
            }
        }
    }

    async fn append(&self, claim: &Claim, frame: Utf8Bytes) -> Result<(), EngineError> {
        match self.commit(claim, None, Some(&frame)).await? {
            Routed::Done => Ok(()),
            other => Err(EngineError(format!("not appended: {other:?}"))),
        }
    }

    async fn send_to(&self, target: &str, frame: Utf8Bytes) -> Result<(), SendRefused> {
        let appended = self
            .route_one(target, &frame, None, None)
            .await
            .map_err(SendRefused::Unavailable)?;
        match appended {
            Status::Done => Ok(()),
            Status::UnknownTarget => Err(SendRefused::UnknownTarget),
            Status::Overflow => Err(SendRefused::Overflow),
            // The server's own frames carry no de-duplication key, never wait and name no
            // epoch: the script cannot answer these for them.
            Status::Duplicate | Status::Blocked | Status::Fenced | Status::Gone => Err(
                SendRefused::Unavailable(EngineError(format!("route_one answered {appended:?}"))),
            ),
        }
    }

    async fn broadcast(
        &self,
        frame: Utf8Bytes,
        exclude: Option<&str>,
    ) -> Result<usize, EngineError> {
        self.append_log(EVERYONE, &frame, None, exclude).await?;
        // Those connected now take it (parked sessions too, when they come back).
        let clients = self.clients().await?;
        Ok(clients
            .iter()
            .filter(|client| Some(client.as_str()) != exclude)
            .count())
    }

    async fn clients(&self) -> Result<Vec<String>, EngineError> {
        let mut conn = self.conn.clone();
        let mut sources: Vec<String> = self
            .call(
                redis::cmd("ZRANGEBYSCORE")
                    .arg("wsr:presence")
                    .arg(now_ms())
                    .arg("+inf")
                    .query_async(&mut conn),
            )
            .await?;
        sources.sort_unstable();
        Ok(sources)
    }

    async fn is_connected(&self, source: &str) -> Result<bool, EngineError> {
        let mut conn = self.conn.clone();
        let until: Option<u64> = self
            .call(
                redis::cmd("ZSCORE")
                    .arg("wsr:presence")
                    .arg(source)
                    .query_async(&mut conn),
            )
            .await?;
        Ok(until.is_some_and(|until| until > now_ms()))
    }

    async fn join(&self, source: &str, room: &str) -> Result<(), SendRefused> {
        let after = self
            .join_position(room)
            .await
            .map_err(SendRefused::Unavailable)?;
        match self.membership(source, None, room, true, after).await {
            Ok(Membership::Done { .. }) => {
                self.rejoin_everywhere(source).await;
                Ok(())
            }
            Ok(Membership::Gone) => Err(SendRefused::UnknownTarget),
            Ok(Membership::Fenced { .. }) => Err(SendRefused::Unavailable(EngineError(
                "fenced without an epoch".into(),
            ))),
            Err(error) => Err(SendRefused::Unavailable(error)),
        }
    }

    async fn leave(&self, source: &str, room: &str) -> Result<bool, SendRefused> {
        match self.membership(source, None, room, false, 0).await {
            Ok(Membership::Done { was_member }) => {
                self.rejoin_everywhere(source).await;
                Ok(was_member)
            }
            Ok(Membership::Gone) => Ok(false),
            Ok(Membership::Fenced { .. }) => Err(SendRefused::Unavailable(EngineError(
                "fenced without an epoch".into(),
            ))),
            Err(error) => Err(SendRefused::Unavailable(error)),
        }
    }

    async fn send_to_room(
        &self,
        room: &str,
        frame: Utf8Bytes,
        exclude: Option<&str>,
    ) -> Result<usize, SendRefused> {
        let sent = async {
            self.append_log(room, &frame, None, exclude).await?;
            let members = self.room_members(room).await?;
            Ok(members
                .iter()
                .filter(|member| Some(member.as_str()) != exclude)
                .count())
        };
        sent.await.map_err(SendRefused::Unavailable)
    }

    async fn members(&self, room: &str) -> Result<Vec<String>, SendRefused> {
        self.room_members(room)
            .await
            .map_err(SendRefused::Unavailable)
    }

    async fn is_member(&self, source: &str, room: &str) -> Result<bool, SendRefused> {
        self.in_room(source, room)
            .await
            .map_err(SendRefused::Unavailable)
    }

    async fn rooms(&self) -> Result<Vec<(String, Vec<String>)>, SendRefused> {
        // Presence per room is announced by the memory engine only for now: across relays
        // every relay would announce the same change (and listing every room's members is a
        // scan of the index). Asking (`relay:clients` with a room) works.
        Ok(Vec::new())
    }
}
