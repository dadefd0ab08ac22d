//! Rooms on one log each (`PROTOCOL.md` section 14.1): a message to a room, or a broadcast
//! (the log of everyone, room `""`), is appended once to the room's stream by one script,
//! whatever the number of members, and every relay is told of it once (`wsr:all`, with the
//! frame). Each relay keeps the recent entries of the rooms its connections are in
//! ([`Feed`]) and where each of its members is; a member behind what the relay keeps (it
//! resumed from an older cursor, a note was missed) reads the stream itself. A session's place
//! in each room (`c:<room>` in its meta) is advanced by its client's acknowledgements, so a
//! relay that takes the session over replays from there (the client drops what it has).
//!
//! Flow control: a relay whose member is more than the window behind in a room says so in the
//! room's slow set (its node, until a time it renews while the member stays behind); the
//! append script refuses clients' messages to the room while the set names a live relay. When
//! it takes itself out, it tells every relay (`W room`), which wake the senders that wait.

use std::collections::{BTreeMap, VecDeque};

use wsrelay_core::server::engine::{Gap, LogBatch};

use super::status::Status;
use super::*;

/// The room of the log of everyone (broadcasts): no room name is empty.
pub(super) const EVERYONE: &str = "";
/// Entries a relay keeps per room for its members.
const KEPT: usize = 8192;
/// How long a relay gathers the entries of its rooms before it rings their members: a
/// connection then writes the entries of that moment at once (one write, not one per entry),
/// which is most of what a delivery costs. Measured on the cluster broadcast row: 654k
/// deliveries/s at half a millisecond, 981k at two; the price is up to 2 ms of latency.
const RING_AFTER: Duration = Duration::from_millis(2);
/// How often a relay stores the places its members reached (a relay that dies makes them
/// receive at most this much again, which their clients drop).
pub(super) const STORE_PLACES: Duration = Duration::from_secs(2);
/// How long a relay's "a member of mine is behind" lasts unless renewed.
const SLOW_FOR: Duration = Duration::from_secs(3);

/// Where one member is in a room's log.
#[derive(Debug, Clone, Copy)]
struct Place {
    /// The claim whose connection this is (a newer claim's place is not the old one's).
    epoch: u64,
    /// The last position handed to the connection.
    sent: u64,
    /// The last position the client acknowledged.
    acked: u64,
    /// The connection has a session, whose place is stored.
    session: bool,
    /// Read the stream before trusting what the relay keeps (the place came from storage).
    read: bool,
}

/// A room as this relay serves it.
#[derive(Debug, Default)]
pub(super) struct Feed {
    /// The last entries, at consecutive positions: (position, frame, who does not get it).
    entries: VecDeque<(u64, Utf8Bytes, Option<String>)>,
    members: HashMap<String, Place>,
    /// How many members acknowledged up to each position: the first is the furthest behind.
    acked: BTreeMap<u64, usize>,
    /// Until when this relay said, in the room's slow set, that a member of it is behind.
    slow_until: Option<std::time::Instant>,
    /// Connections of this relay whose message to the room waits for a member.
    waiters: Vec<Doorbell>,
}

impl Feed {
    fn insert(&mut self, source: String, place: Place) {
        if let Some(old) = self.members.insert(source, place) {
            self.unacked(old.acked);
        }
        *self.acked.entry(place.acked).or_default() += 1;
    }

    fn remove(&mut self, source: &str) {
        if let Some(old) = self.members.remove(source) {
            self.unacked(old.acked);
        }
    }

    fn unacked(&mut self, at: u64) {
        if let Some(count) = self.acked.get_mut(&at) {
            *count -= 1;
            if *count == 0 {
                self.acked.remove(&at);
            }
        }
    }

    /// Moves `source`'s acknowledged place to `to` (never back).
    fn ack(&mut self, source: &str, epoch: u64, to: u64) {
        let Some(place) = self.members.get_mut(source).filter(|p| p.epoch == epoch) else {
            return;
        };
        let to = to.min(place.sent);
        if to <= place.acked {
            return;
        }
        let from = std::mem::replace(&mut place.acked, to);
        self.unacked(from);
        *self.acked.entry(to).or_default() += 1;
    }

    /// How far the member furthest behind is from the last entry.
    fn lag(&self) -> u64 {
        match (self.entries.back(), self.acked.first_key_value()) {
            (Some(&(last, ..)), Some((&acked, _))) => last.saturating_sub(acked),
            _ => 0,
        }
    }
}

/// The rooms this relay's connections follow.
#[derive(Debug, Default)]
pub(super) struct Feeds {
    rooms: HashMap<String, Feed>,
    /// The rooms each source's connection here follows: what its fetch looks at.
    followed: HashMap<String, Vec<String>>,
    /// Rooms with entries whose members are not rung yet ([`RING_AFTER`]).
    unrung: Vec<String>,
}

/// The keys of a room's log.
struct LogKeys {
    log: String,
    meta: String,
    slow: String,
    hex: String,
}

impl LogKeys {
    fn of(room: &str) -> LogKeys {
        let h = hex(room);
        LogKeys {
            log: format!("wsr:{{r:{h}}}:log"),
            meta: format!("wsr:{{r:{h}}}:lm"),
            slow: format!("wsr:{{r:{h}}}:slow"),
            hex: h,
        }
    }
}

/// The field of a session's meta that stores its place in `room` (hex).
fn cursor_field(room_hex: &str) -> String {
    format!("c:{room_hex}")
}

/// What appending to a log did.
pub(super) enum Appended {
    /// Appended at this position.
    Done,
    /// The sender's message was appended before.
    Duplicate,
    /// A member is behind: nothing appended.
    Blocked,
    /// The sender's claim is stale (the holder's client instance): nothing appended.
    Fenced(String),
    /// The sender's state is gone: nothing appended.
    Gone,
}

impl RedisEngine {
    /// Entries a member may be behind before its room waits for it.
    fn log_window(&self) -> u64 {
        (self.limits.backlog_window as u64 / 256).clamp(64, KEPT as u64 / 2)
    }

    /// Appends `frame` to `room`'s log; `sender` (its claim and the message's id) for a
    /// client's message, which is consumed in the same step and waits while a member is
    /// behind; `exclude` does not receive it.
    pub(super) async fn append_log(
        &self,
        room: &str,
        frame: &Utf8Bytes,
        sender: Option<(&Claim, Option<u64>)>,
        exclude: Option<&str>,
    ) -> Result<Appended, EngineError> {
        let keys = LogKeys::of(room);
        let (sender_meta, epoch, id) = match sender {
            Some((claim, id)) => (
                Keys::of(&claim.source).meta,
                claim.epoch.to_string(),
                id.map(|id| id.to_string()).unwrap_or_default(),
            ),
            None => (keys.meta.clone(), String::new(), String::new()),
        };
        let exclude = exclude.map(hex).unwrap_or_default();
        let value = self
            .eval(
                &self.scripts.log_append,
                &[&keys.log, &keys.meta, &keys.slow, &sender_meta],
                &[
                    frame.as_bytes(),
                    self.retention.entries.to_string().as_bytes(),
                    self.retention.idle.as_millis().to_string().as_bytes(),
                    keys.hex.as_bytes(),
                    exclude.as_bytes(),
                    epoch.as_bytes(),
                    id.as_bytes(),
                ],
            )
            .await?;
        Ok(match Status::of("log_append", &value)? {
            Status::Done => Appended::Done,
            Status::Duplicate => Appended::Duplicate,
            Status::Blocked => Appended::Blocked,
            Status::Fenced => Appended::Fenced(text(items(&value).get(2))),
            Status::Gone => Appended::Gone,
            other => return Err(EngineError(format!("log_append answered {other:?}"))),
        })
    }

    /// A client's message to `room` waits for a member: `waiter` is woken when the room
    /// goes on.
    pub(super) fn wait_for_room(&self, room: &str, waiter: &Doorbell) {
        if let Some(feed) = self.feeds().rooms.get_mut(room) {
            if !feed.waiters.contains(waiter) {
                feed.waiters.push(waiter.clone());
            }
        }
    }

    /// A relay took itself out of `room`'s slow set: the senders waiting here try again.
    pub(super) fn room_goes_on(&self, room: &str) {
        if let Some(feed) = self.feeds().rooms.get_mut(room) {
            for waiter in feed.waiters.drain(..) {
                waiter.ring(Signal::Wake);
            }
        }
    }

    /// The last position of `room`'s log, and the position it began after (beginning it if
    /// it has none).
    async fn log_end(&self, room: &str) -> Result<(u64, u64), EngineError> {
        let keys = LogKeys::of(room);
        let value = self
            .eval(
                &self.scripts.log_end,
                &[&keys.meta],
                &[self.retention.idle.as_millis().to_string().as_bytes()],
            )
            .await?;
        let numbers = ints(&value);
        match (numbers.first(), numbers.get(1)) {
            (Some(&end), Some(&start)) if end > 0 && start > 0 => Ok((end as u64, start as u64)),
            _ => Err(EngineError(format!("log_end answered {value:?}"))),
        }
    }

    /// Where a member joining `room` now starts: after the log's last entry.
    pub(super) async fn join_position(&self, room: &str) -> Result<u64, EngineError> {
        Ok(self.log_end(room).await?.0)
    }

    fn feeds(&self) -> MutexGuard<'_, Feeds> {
        self.feeds.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The claim's connection follows `room`'s log from `after` (`read`: a stored place,
    /// which the stream may hold entries after that this relay does not keep).
    pub(super) fn attach(&self, claim: &Claim, room: &str, after: u64, read: bool) {
        let place = Place {
            epoch: claim.epoch,
            sent: after,
            acked: after,
            session: claim.session.is_some(),
            read,
        };
        {
            let mut feeds = self.feeds();
            feeds
                .rooms
                .entry(room.to_owned())
                .or_default()
                .insert(claim.source.clone(), place);
            let followed = feeds.followed.entry(claim.source.clone()).or_default();
            if !followed.iter().any(|name| name == room) {
                followed.push(room.to_owned());
            }
        }
        self.with_local(claim, |local| local.doorbell.ring(Signal::Logs));
    }

    /// The claim's connection no longer follows `room` (or, with `None`, any room).
    pub(super) fn detach(&self, claim: &Claim, room: Option<&str>) {
        let mut feeds = self.feeds();
        let Feeds {
            rooms, followed, ..
        } = &mut *feeds;
        let Some(names) = followed.get_mut(&claim.source) else {
            return;
        };
        names.retain(|name| {
            if room.is_some_and(|room| room != name) {
                return true;
            }
            let Some(feed) = rooms.get_mut(name) else {
                return false;
            };
            let own = feed
                .members
                .get(&claim.source)
                .is_some_and(|place| place.epoch == claim.epoch);
            if !own {
                return true; // a newer connection's
            }
            feed.remove(&claim.source);
            if feed.members.is_empty() {
                rooms.remove(name);
            }
            false
        });
        if names.is_empty() {
            followed.remove(&claim.source);
        }
    }

    /// Whether the claim's connection follows `room` here (its session is a member).
    pub(super) fn follows(&self, claim: &Claim, room: &str) -> bool {
        self.feeds()
            .rooms
            .get(room)
            .and_then(|feed| feed.members.get(&claim.source))
            .is_some_and(|place| place.epoch == claim.epoch)
    }

    /// The session just opened (or the bare client set up) on the claim follows the log of
    /// everyone and its rooms' logs: from its stored places when `resumed`, else from their
    /// ends.
    pub(super) async fn attach_session(
        &self,
        claim: &Claim,
        resumed: bool,
    ) -> Result<(), EngineError> {
        self.detach(claim, None);
        let keys = Keys::of(&claim.source);
        let mut conn = self.conn.clone();
        let session = claim.session.is_some();
        let rooms: Option<String> = if session {
            self.call(
                redis::cmd("HGET")
                    .arg(&keys.meta)
                    .arg("rooms")
                    .query_async(&mut conn),
            )
            .await?
        } else {
            None
        };
        let mut rooms: Vec<String> = rooms
            .unwrap_or_default()
            .split(',')
            .filter_map(|room| (!room.is_empty()).then(|| unhex(room)).flatten())
            .collect();
        rooms.push(EVERYONE.to_owned());
        // The stored places, in one read: a fresh session's place in the log of everyone is
        // its end, whatever an earlier session left there.
        let stored: Vec<Option<u64>> = if session {
            let mut read = redis::cmd("HMGET");
            read.arg(&keys.meta);
            for room in &rooms {
                read.arg(cursor_field(&hex(room)));
            }
            self.call(read.query_async(&mut conn)).await?
        } else {
            Vec::new()
        };
        // (room, place, whether the place was stored): a place begun now is stored before the
        // connection follows from it, so that a relay's death never leaves a session without.
        let mut places = Vec::with_capacity(rooms.len());
        let mut fresh = Vec::new();
        for (index, room) in rooms.into_iter().enumerate() {
            let kept = stored.get(index).copied().flatten();
            match kept.filter(|_| resumed || room != EVERYONE) {
                Some(after) => places.push((room, after, true)),
                None => {
                    let after = self.join_position(&room).await?;
                    if session {
                        fresh.push((claim.source.clone(), room.clone(), after));
                    }
                    places.push((room, after, false));
                }
            }
        }
        self.store_places(fresh).await?;
        for (room, after, read) in places {
            self.attach(claim, &room, after, read);
        }
        Ok(())
    }

    /// Stores sessions' places (source, room, position) in their rooms' logs, in one call.
    async fn store_places(&self, places: Vec<(String, String, u64)>) -> Result<(), EngineError> {
        if places.is_empty() {
            return Ok(());
        }
        let mut invocation = self.scripts.place.prepare_invoke();
        for (source, room, after) in &places {
            invocation
                .key(Keys::of(source).meta)
                .arg(cursor_field(&hex(room)))
                .arg(after);
        }
        let mut conn = self.conn.clone();
        self.call(invocation.invoke_async::<i64>(&mut conn)).await?;
        Ok(())
    }

    /// Stores, every [`STORE_PLACES`], the places this relay's members reached since.
    pub(super) async fn store_places_regularly(self: Arc<Self>, stop: CancellationToken) {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(STORE_PLACES) => {}
            }
            let places: Vec<_> = std::mem::take(&mut *self.unstored())
                .into_iter()
                .map(|((source, room), at)| (source, room, at))
                .collect();
            for chunk in places.chunks(512) {
                if let Err(error) = self.store_places(chunk.to_vec()).await {
                    // Kept for the next round: a place lost to a relay's death only replays.
                    tracing::debug!(%error, "places in rooms not stored");
                    let mut unstored = self.unstored();
                    for (source, room, at) in chunk.iter().cloned() {
                        let place = unstored.entry((source, room)).or_default();
                        *place = (*place).max(at);
                    }
                }
            }
        }
    }

    fn unstored(&self) -> MutexGuard<'_, HashMap<(String, String), u64>> {
        self.unstored.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A note: `room`'s log has `frame` at `pos` (not for `exclude`). Kept for this relay's
    /// members of the room, who are rung.
    pub(super) fn logged(
        self: &Arc<Self>,
        room: &str,
        pos: u64,
        exclude: Option<String>,
        frame: Utf8Bytes,
    ) {
        let mut feeds = self.feeds();
        let Some(feed) = feeds.rooms.get_mut(room) else {
            return; // nobody here is in the room
        };
        match feed.entries.back() {
            Some(&(last, ..)) if pos <= last => return, // known already
            Some(&(last, ..)) if pos > last + 1 => {
                // A note was missed (the subscription broke): members behind read the stream.
                feed.entries.clear();
            }
            _ => {}
        }
        feed.entries.push_back((pos, frame, exclude));
        if feed.entries.len() > KEPT {
            feed.entries.pop_front();
        }
        // Members are rung a moment later, for every room an entry came to meanwhile: each
        // connection then writes what came together in one go, not one write per entry.
        let first = feeds.unrung.is_empty();
        if !feeds.unrung.iter().any(|name| name == room) {
            feeds.unrung.push(room.to_owned());
        }
        if first {
            let engine = Arc::clone(self);
            tokio::spawn(async move {
                tokio::time::sleep(RING_AFTER).await;
                engine.ring_unrung();
            });
        }
        let Some(feed) = feeds.rooms.get_mut(room) else {
            return;
        };
        if let Some(slow) = self.behind(feed) {
            let (engine, room) = (Arc::clone(self), room.to_owned());
            tokio::spawn(async move {
                if let Err(error) = engine.say_slow(&room, slow).await {
                    tracing::debug!(%error, "cannot say a room waits for a member");
                }
            });
        }
    }

    /// Rings the members of every room that entries came to since the last time.
    fn ring_unrung(&self) {
        let mut feeds = self.feeds();
        let rooms = std::mem::take(&mut feeds.unrung);
        let locals = self.locals();
        for room in rooms {
            let Some(feed) = feeds.rooms.get(&room) else {
                continue;
            };
            for source in feed.members.keys() {
                if let Some(local) = locals.get(source) {
                    local.doorbell.ring(Signal::Logs);
                }
            }
        }
    }

    /// Every member here reads the streams of its rooms again: notes may have been missed.
    pub(super) fn reread_logs(&self) {
        let mut feeds = self.feeds();
        for feed in feeds.rooms.values_mut() {
            feed.entries.clear();
            for place in feed.members.values_mut() {
                place.read = true;
            }
        }
        drop(feeds);
        for local in self.locals().values() {
            local.doorbell.ring(Signal::Logs);
        }
    }

    /// The new entries of the logs the claim's connection follows, at most `max`.
    pub(crate) async fn fetch_logs(
        &self,
        claim: &Claim,
        max: usize,
    ) -> Result<Vec<LogBatch<Utf8Bytes>>, EngineError> {
        let mut batches = Vec::new();
        let mut reads = Vec::new();
        let mut budget = max;
        {
            let mut feeds = self.feeds();
            let Feeds {
                rooms, followed, ..
            } = &mut *feeds;
            let names = followed.get(&claim.source).map_or(&[][..], Vec::as_slice);
            for room in names {
                let Some(feed) = rooms.get_mut(room) else {
                    continue;
                };
                let Some(place) = feed
                    .members
                    .get_mut(&claim.source)
                    .filter(|place| place.epoch == claim.epoch)
                else {
                    continue;
                };
                let first = feed.entries.front().map(|entry| entry.0);
                let last = feed.entries.back().map(|entry| entry.0);
                let kept = first.is_some_and(|first| first <= place.sent + 1);
                if place.read || (!kept && last.is_some_and(|last| last > place.sent)) {
                    reads.push((room.clone(), place.sent));
                    continue;
                }
                let mut frames = Vec::new();
                let skip = usize::try_from(place.sent + 1 - first.unwrap_or(place.sent + 1))
                    .unwrap_or(usize::MAX);
                // Its own messages: nothing to wait for from its client, who never gets them.
                let mut own_through = None;
                let all_acked = place.acked == place.sent;
                for (pos, frame, exclude) in feed.entries.iter().skip(skip) {
                    if budget == 0 {
                        break;
                    }
                    place.sent = *pos;
                    if exclude.as_deref() == Some(claim.source.as_str()) {
                        if all_acked && frames.is_empty() {
                            own_through = Some(*pos);
                        }
                        continue;
                    }
                    budget -= 1;
                    frames.push((*pos, frame.clone()));
                }
                if let Some(through) = own_through {
                    feed.ack(&claim.source, claim.epoch, through);
                }
                if !frames.is_empty() {
                    batches.push(LogBatch {
                        room: room.clone(),
                        lost: None,
                        frames,
                    });
                }
            }
        }
        for (room, after) in reads {
            if budget == 0 {
                self.with_local(claim, |local| local.doorbell.ring(Signal::Logs));
                break;
            }
            let batch = match self.read_log(claim, &room, after, budget).await {
                Ok(batch) => batch,
                // What was taken from the kept entries goes out; the read is tried again.
                Err(error) if !batches.is_empty() => {
                    tracing::debug!(%error, room, "a room's log not read");
                    self.with_local(claim, |local| local.doorbell.ring(Signal::Logs));
                    break;
                }
                Err(error) => return Err(error),
            };
            budget = budget.saturating_sub(batch.frames.len());
            if batch.lost.is_some() || !batch.frames.is_empty() {
                batches.push(batch);
            }
        }
        if budget == 0 {
            // More may wait: the connection comes back.
            self.with_local(claim, |local| local.doorbell.ring(Signal::Logs));
        }
        Ok(batches)
    }

    /// Reads `room`'s stream after `after` for the claim's connection, and moves its place.
    async fn read_log(
        &self,
        claim: &Claim,
        room: &str,
        after: u64,
        max: usize,
    ) -> Result<LogBatch<Utf8Bytes>, EngineError> {
        let keys = LogKeys::of(room);
        let mut conn = self.conn.clone();
        let value: Value = self
            .call(
                redis::cmd("XRANGE")
                    .arg(&keys.log)
                    .arg(format!("({after}-0"))
                    .arg("+")
                    .arg("COUNT")
                    .arg(max)
                    .query_async(&mut conn),
            )
            .await?;
        let mut entries = Vec::new();
        for entry in items(&value) {
            let [id, fields] = items(entry) else { continue };
            let id = text(Some(id));
            let Some(pos) = id.split('-').next().and_then(|pos| pos.parse::<u64>().ok()) else {
                continue;
            };
            let fields = items(fields);
            let mut frame = None;
            let mut exclude = String::new();
            for pair in fields.chunks(2) {
                if let [name, value] = pair {
                    match text(Some(name)).as_str() {
                        "f" => frame = Some(text(Some(value))),
                        "x" => exclude = text(Some(value)),
                        _ => {}
                    }
                }
            }
            if let Some(frame) = frame {
                entries.push((pos, Utf8Bytes::from(frame), unhex(&exclude)));
            }
        }
        // Entries between the place and the first one read are gone: past the retention, or
        // the log was lost and began again (its `start` is past the place: how many, unknown).
        // Nothing read is no loss: nothing was there yet.
        let first = entries.first().map(|entry| entry.0);
        let lost = match first {
            Some(first) if first > after + 1 => {
                let (_, start) = self.log_end(room).await?;
                Some(Gap {
                    first,
                    count: (after >= start).then(|| first - after - 1),
                })
            }
            _ => None,
        };
        let mut feeds = self.feeds();
        let Some(place) = feeds
            .rooms
            .get_mut(room)
            .and_then(|feed| feed.members.get_mut(&claim.source))
            .filter(|place| place.epoch == claim.epoch && place.sent == after)
        else {
            // Left meanwhile, or another fetch moved the place: this read is stale.
            return Ok(LogBatch {
                room: room.to_owned(),
                lost: None,
                frames: Vec::new(),
            });
        };
        if let Some(last) = entries.last() {
            place.sent = last.0;
        }
        place.read = entries.len() >= max;
        if let (Some(_), Some(first)) = (lost, first) {
            // What is gone is not waited for.
            if let Some(feed) = feeds.rooms.get_mut(room) {
                feed.ack(&claim.source, claim.epoch, first - 1);
            }
        }
        if entries.len() >= max {
            // A full read: the stream holds more. The connection cannot tell from what it is
            // handed (its own messages are left out of it), so it is rung to read on; without
            // this a member that read from a stored place would wait for the room's next entry,
            // and after the last one, for ever.
            drop(feeds);
            self.with_local(claim, |local| local.doorbell.ring(Signal::Logs));
        }
        let frames = entries
            .into_iter()
            .filter(|(_, _, exclude)| exclude.as_deref() != Some(claim.source.as_str()))
            .map(|(pos, frame, _)| (pos, frame))
            .collect();
        Ok(LogBatch {
            room: room.to_owned(),
            lost,
            frames,
        })
    }

    /// The claim's client has `room`'s log through `through`: its session's place is stored
    /// with the next batch, and the room stops waiting for it once it is within the window.
    pub(crate) async fn settle_log(
        &self,
        claim: &Claim,
        room: &str,
        through: u64,
    ) -> Result<(), EngineError> {
        let slow = {
            let mut feeds = self.feeds();
            let Some(feed) = feeds.rooms.get_mut(room) else {
                return Ok(());
            };
            let Some(place) = feed.members.get(&claim.source) else {
                return Ok(());
            };
            if place.epoch != claim.epoch {
                return Ok(());
            }
            if place.session {
                let key = (claim.source.clone(), room.to_owned());
                let mut unstored = self.unstored();
                let stored = unstored.entry(key).or_default();
                *stored = (*stored).max(through);
            }
            feed.ack(&claim.source, claim.epoch, through);
            self.behind(feed)
        };
        if let Some(slow) = slow {
            self.say_slow(room, slow).await?;
        }
        Ok(())
    }

    /// Whether the member furthest behind in the feed is more than the window behind, when
    /// that changes what this relay says in the room's slow set (or the saying needs
    /// renewing).
    fn behind(&self, feed: &mut Feed) -> Option<bool> {
        let behind = feed.lag() > self.log_window();
        let now = std::time::Instant::now();
        match (behind, feed.slow_until) {
            (true, Some(until)) if until > now + SLOW_FOR / 2 => None,
            (true, _) => {
                feed.slow_until = Some(now + SLOW_FOR);
                Some(true)
            }
            (false, Some(_)) => {
                feed.slow_until = None;
                Some(false)
            }
            (false, None) => None,
        }
    }

    /// Says (or unsays) in `room`'s slow set that a member here is behind.
    async fn say_slow(&self, room: &str, slow: bool) -> Result<(), EngineError> {
        let keys = LogKeys::of(room);
        let node = self.node()?.to_string();
        let mut conn = self.conn.clone();
        let cmd = if slow {
            let mut cmd = redis::cmd("ZADD");
            let until = now_ms() + SLOW_FOR.as_millis() as u64;
            cmd.arg(&keys.slow).arg(until).arg(&node);
            cmd
        } else {
            let mut cmd = redis::cmd("ZREM");
            cmd.arg(&keys.slow).arg(&node);
            cmd
        };
        self.call(cmd.query_async::<i64>(&mut conn)).await?;
        if !slow {
            // The senders that wait for this room, on every relay, go on.
            let note = Note::RoomGoesOn { room: keys.hex }.encode();
            self.call(
                redis::cmd("PUBLISH")
                    .arg(ALL)
                    .arg(note)
                    .query_async::<i64>(&mut conn),
            )
            .await?;
        }
        Ok(())
    }
}
