//! What goes to the client: the session opened, the engine's answers to routes, frames from
//! the mailbox written within the window, handlers' replies, and settling what the client
//! acknowledged.

use super::*;

impl<F: FrameText, H: HandlerSet> ServerConnection<F, H> {
    /// `count` more frames of `Output::Deliver` were written to the socket. A bare client has
    /// no acknowledgements: for it, written is settled.
    pub fn handle_written(&mut self, count: usize) {
        if matches!(self.mode, Mode::Bare) && count > 0 {
            let through = (self.settled + count as u64).min(self.next - 1);
            self.settle_through(through);
            self.drain();
        }
    }

    /// The engine opened the session (or set up the bare client) asked for by `Output::Open`.
    pub fn handle_opened(&mut self, opened: Opened) {
        let Mode::Opening { token, late } = std::mem::replace(&mut self.mode, Mode::Bare) else {
            return;
        };
        self.base = opened.base;
        self.next = opened.next;
        self.mail = true;
        self.settled = opened.next - 1;
        self.in_flight.clear();
        self.logs_in_flight.clear();
        // Where the session is in its rooms' logs is the engine's (opened with it).
        self.logs_mail = true;
        self.backlog_bytes = 0;
        self.over_since = None;
        if opened.resumed {
            self.stats.resent += self.claimed_next.saturating_sub(opened.next);
        }
        self.settle_owed = 0;
        self.settle_due = None;
        if let Some(token) = token {
            self.consumed = opened.consumed;
            self.acked_to_client = opened.consumed;
            let welcome = Frame::Welcome(Welcome {
                version: VERSION,
                session: Cow::Borrowed(&token),
                ack: opened.consumed,
                resumed: opened.resumed,
                lost: opened.lost,
                window: Some(self.settings.send_window as u64),
                sid: opened.sid.as_deref().map(Cow::Borrowed),
                rate: self
                    .limiter
                    .as_ref()
                    .map(|limiter| u64::from(limiter.limit().per_second)),
                burst: self
                    .limiter
                    .as_ref()
                    .map(|limiter| u64::from(limiter.limit().burst)),
            });
            self.transmit(welcome.encode());
            self.event(ServerEvent::Opened {
                resumed: opened.resumed,
                lost: opened.lost,
                late,
            });
            self.mode = Mode::Session { token };
        }
        self.drain();
    }

    /// The engine's answer to the last `Output::Route`.
    pub fn handle_routed(&mut self, now: Instant, routed: Routed) {
        self.latest = self.latest.max(now);
        let Some(held) = self.held.take_if(|held| held.retry_at.is_none()) else {
            return;
        };
        match routed {
            Routed::Done | Routed::Duplicate => {
                if let Some(id) = held.id {
                    self.consumed = self.consumed.max(id);
                    if routed == Routed::Duplicate {
                        self.event(ServerEvent::Duplicate { id });
                    }
                }
                if let (Effect::Join { room, .. } | Effect::Leave { room, .. }, Routed::Done) =
                    (&held.effect, &routed)
                {
                    let joined = matches!(held.effect, Effect::Join { .. });
                    self.event(ServerEvent::Membership {
                        room: room.clone(),
                        joined,
                    });
                }
                if let (Some((kind, payload)), Routed::Done) = (held.call, &routed) {
                    self.calls.push_back((kind.clone(), held.id));
                    self.outputs.push_back(Output::Call {
                        kind,
                        source: self.source.clone(),
                        payload,
                    });
                }
                self.drain();
            }
            Routed::UnknownTarget | Routed::Overflow => {
                let target = match &held.effect {
                    Effect::To { target, .. } => clip(target),
                    _ => Cow::Borrowed("?"),
                };
                let (code, message) = if routed == Routed::UnknownTarget {
                    let message = format!("no client with source \"{target}\"");
                    (ErrorCode::UnknownTarget, message)
                } else {
                    let message = format!("the mailbox of \"{target}\" is full");
                    (ErrorCode::Overflow, message)
                };
                // Consuming the message is answering it: the error goes out before the ack.
                let frame = self.rejection(code, message, held.id);
                self.route(held.id, Effect::ToSelf { frame }, None);
            }
            Routed::NotMember => {
                let room = match &held.effect {
                    Effect::Room { room, .. } => clip(room),
                    _ => Cow::Borrowed("?"),
                };
                let message = format!("you are not a member of room \"{room}\"");
                // Consuming the message is answering it: the error goes out before the ack.
                let frame = self.rejection(ErrorCode::NotMember, message, held.id);
                self.route(held.id, Effect::ToSelf { frame }, None);
            }
            Routed::Blocked { .. } | Routed::Unavailable => {
                if let Routed::Blocked { on } = routed {
                    self.event(ServerEvent::Blocked { on });
                }
                self.held = Some(Held {
                    retry_at: Some(now + self.settings.retry_interval),
                    ..held
                });
            }
            Routed::Fenced { superseded: true } => self.handle_superseded(),
            Routed::Fenced { superseded: false } => self.handle_replaced(),
            Routed::Gone => self.handle_gone(),
        }
    }

    /// A recipient this connection waits for has room again: retry now.
    pub(super) fn handle_wake(&mut self, now: Instant) {
        if let Some(held) = self.held.as_mut() {
            if held.retry_at.is_some() {
                held.retry_at = Some(now);
                self.handle_timeout(now);
            }
        }
    }

    /// The engine's answer to `Output::Fetch`: the frames read, in position order from the
    /// position asked for.
    pub fn handle_fetched(&mut self, now: Instant, frames: impl IntoIterator<Item = F>) {
        self.fetching = false;
        let mut count = 0;
        for frame in frames {
            count += 1;
            self.deliver(now, frame);
        }
        // A full batch: the mailbox may hold more.
        self.mail |= count >= self.settings.fetch_batch;
    }

    /// The engine's answer to `Output::FetchLogs`: per room, the entries after the
    /// connection's place in its log (which the engine advanced past them).
    pub fn handle_logs_fetched(&mut self, now: Instant, batches: Vec<LogBatch<F>>) {
        self.logs_fetching = false;
        if !matches!(self.mode, Mode::Session { .. } | Mode::Bare) {
            return;
        }
        self.latest = self.latest.max(now);
        let mut count = 0;
        let session = matches!(self.mode, Mode::Session { .. });
        for batch in batches {
            if let Some(gap) = batch.lost {
                let room = (!batch.room.is_empty()).then_some(Cow::Borrowed(batch.room.as_str()));
                let lost = Frame::Lost {
                    room,
                    first: gap.first,
                    lost: gap.count,
                    began_again: gap.count.is_none(),
                };
                self.transmit(lost.encode());
            }
            let mut flight = session.then(|| self.logs_in_flight.entry(batch.room).or_default());
            for (pos, frame) in batch.frames {
                count += 1;
                // Its members may answer it, like any message relayed to them.
                self.answerable.note(&frame, self.settings.answerable);
                let len = frame.len();
                if let Some(flight) = flight.as_mut() {
                    flight.push_back((pos, len));
                    self.backlog_bytes += len;
                }
                self.outputs.push_back(Output::DeliverLogged(frame));
            }
        }
        if self.backlog_bytes > self.settings.backlog_window && self.over_since.is_none() {
            self.over_since = Some(now);
        }
        // A full batch: the logs may hold more.
        self.logs_mail |= count >= self.settings.fetch_batch;
    }

    /// `Output::Fetch` or `Output::FetchLogs` failed (the engine's store cannot be reached):
    /// the mailbox and the logs are read again after `retry_interval`, or, once the
    /// connection ended, no more.
    pub fn handle_fetch_failed(&mut self, now: Instant) {
        self.fetching = false;
        self.logs_fetching = false;
        if self.ending.is_none() {
            self.refetch_at = Some(now + self.settings.retry_interval);
        }
    }

    /// A frame from the mailbox, at the next position.
    fn deliver(&mut self, now: Instant, frame: F) {
        if self.fetch_from().is_none() {
            return;
        }
        self.latest = self.latest.max(now);
        let len = frame.len();
        if matches!(self.mode, Mode::Session { .. } | Mode::Bare) {
            self.answerable.note(&frame, self.settings.answerable);
        }
        self.next += 1;
        self.in_flight.push_back(len);
        self.backlog_bytes += len;
        if self.backlog_bytes > self.settings.backlog_window && self.over_since.is_none() {
            self.over_since = Some(now);
        }
        self.outputs.push_back(Output::Deliver(frame));
    }

    /// An application handler's reply to the oldest call.
    pub fn handle_reply(&mut self, reply: Reply) {
        let Some((kind, id)) = self.calls.pop_front() else {
            return;
        };
        let (payload, error) = match reply {
            Reply::None => return self.drain(),
            Reply::Payload(payload) => (Some(payload), None),
            Reply::Error(error) => (None, Some(error)),
        };
        match id {
            Some(id) => {
                let response = Message {
                    kind: Cow::Borrowed(&kind),
                    id: None,
                    re: Some(id),
                    to: None,
                    source: None,
                    room: None,
                    payload: payload.as_deref(),
                    error,
                    request: false,
                };
                let frame = F::from(response.encode());
                if self.ending.is_some() {
                    self.outputs.push_back(Output::Late(frame));
                } else {
                    self.append(frame);
                }
            }
            None => self.event(ServerEvent::Unanswerable { kind }),
        }
        self.drain();
    }

    /// The end of a batch of input: acknowledge what was consumed. (Acknowledging per batch
    /// rather than per message lets one write carry the responses and the ack.)
    pub fn flush(&mut self) {
        if matches!(self.mode, Mode::Session { .. })
            && self.ending.is_none()
            && self.consumed > self.acked_to_client
        {
            self.acked_to_client = self.consumed;
            self.stats.acks_sent += 1;
            self.transmit(Frame::Ack { ack: self.consumed }.encode());
        }
    }

    /// Sends `frame` to the client about message `id`: consuming the id if it has one.
    pub(super) fn answer(&mut self, id: Option<u64>, frame: F) {
        match id {
            Some(_) => self.route(id, Effect::ToSelf { frame }, None),
            None => self.append(frame),
        }
    }

    /// Appends `frame` to this client's own mailbox, to be fetched from there.
    pub(super) fn append(&mut self, frame: F) {
        self.mail = true;
        self.outputs.push_back(Output::Append(frame));
    }

    pub(super) fn client_ack(&mut self, ack: u64) {
        if !matches!(self.mode, Mode::Session { .. }) {
            return;
        }
        // A stale ack, or one for more than was sent, changes nothing.
        let through = self.base.saturating_add(ack);
        if through > self.settled && through < self.next {
            self.settle_through(through);
            self.drain();
        }
    }

    /// The client has the entries of `room`'s log through `pos`.
    pub(super) fn client_log_ack(&mut self, room: &str, pos: u64) {
        if !matches!(self.mode, Mode::Session { .. }) {
            return;
        }
        let Some(flight) = self.logs_in_flight.get_mut(room) else {
            return; // nothing of that room in flight: a stale or invented ack
        };
        let mut freed = 0;
        let mut through = None;
        while let Some(&(at, len)) = flight.front() {
            if at > pos {
                break;
            }
            flight.pop_front();
            freed += len;
            through = Some(at);
        }
        let Some(through) = through else {
            return;
        };
        if flight.is_empty() {
            self.logs_in_flight.remove(room);
        }
        self.backlog_bytes -= freed;
        if self.backlog_bytes <= self.settings.backlog_window {
            self.over_since = None;
        }
        // At once: the engine keeps the place where it is cheap to (a relay's memory) and
        // stores it in batches of its own; senders waiting for this member go on sooner.
        self.outputs.push_back(Output::SettleLog {
            room: room.to_owned(),
            through,
        });
    }

    pub(super) fn settle_through(&mut self, through: u64) {
        if through <= self.settled {
            return;
        }
        for _ in self.settled..through {
            let len = self.in_flight.pop_front();
            debug_assert!(len.is_some(), "settled past what was transmitted");
            let len = len.unwrap_or(0);
            self.backlog_bytes -= len;
            self.settle_owed += len;
        }
        self.settled = through;
        if self.backlog_bytes <= self.settings.backlog_window {
            self.over_since = None;
        }
        if self.settings.settle_delay.is_zero() || self.settle_owed >= self.settings.settle_bytes {
            self.settle_now();
        } else if self.settle_due.is_none() {
            self.settle_due = Some(self.latest + self.settings.settle_delay);
        }
    }

    /// Settles with the engine what the client has.
    pub(super) fn settle_now(&mut self) {
        self.settle_owed = 0;
        self.settle_due = None;
        let through = self.settled;
        // Acknowledgements read in one batch settle once: for a remote store each settle is
        // a round trip the connection waits for.
        match self.outputs.back_mut() {
            Some(Output::Settle { through: queued }) => *queued = through,
            _ => self.outputs.push_back(Output::Settle { through }),
        }
    }
}
