//! What flows on a connection: the outbox sent within the window and the pace, messages,
//! errors and acknowledgements received, and the outcomes of what will not be sent.

use super::*;
use crate::client::events::*;
use crate::protocol::ErrorCode;

impl ClientCore {
    /// Checks and queues an application message (send, request), transmitting it when open.
    pub(super) fn enqueue_outgoing(
        &mut self,
        now: Instant,
        message: Outgoing<'_>,
        settles: Settles,
    ) -> Result<u64, Error> {
        self.clock = self.clock.max(now);
        if message.kind.is_empty() || message.kind.starts_with(RESERVED_PREFIX) {
            return Err(Error::InvalidType);
        }
        let message_frame = Message {
            kind: message.kind.into(),
            id: None,
            re: None,
            to: message.to.map(Into::into),
            source: None,
            room: message.room.map(Into::into),
            payload: message.payload,
            error: None,
            request: settles == Settles::OnReply,
        };
        self.enqueue(message_frame, message.ttl.map(|ttl| now + ttl), settles)
    }

    /// Queues `message` under the next id, transmitting it when open.
    pub(super) fn enqueue(
        &mut self,
        mut message: Message<'_>,
        expires: Option<Instant>,
        settles: Settles,
    ) -> Result<u64, Error> {
        if let Some(error) = &self.stopped {
            return Err(error.clone());
        }
        if let State::Closing { .. } = self.state {
            return Err(Error::Closed);
        }
        if let Some(payload) = message.payload {
            json::validate(payload).map_err(|_| Error::InvalidPayload)?;
        }
        let encode = |id| {
            message.id = Some(id);
            message.encode()
        };
        let id = self.outbox.push(&self.options, encode, expires, settles)?;
        self.send_more();
        Ok(id)
    }

    /// Settles every message up to `ack`: sends and responses are delivered.
    pub(super) fn settle_acked(&mut self, ack: u64) {
        for (id, settles) in self.outbox.settle_through(ack) {
            self.acknowledged_messages += 1;
            if settles == Settles::OnAck {
                self.event(Event::Delivered { id });
            }
        }
    }

    /// Transmits queued messages while open, as far as the server's window and rate limit
    /// allow; when the rate limit stops it, again once a token is back (`paced`).
    pub(super) fn send_more(&mut self) {
        if let State::Open { .. } | State::Closing { .. } = self.state {
            let budget = match &mut self.pace {
                Some(pace) => {
                    pace.refill(self.clock);
                    usize::try_from(pace.tokens()).unwrap_or(usize::MAX)
                }
                None => usize::MAX,
            };
            let outputs = &mut self.outputs;
            let (sent, more) = self.outbox.send_more(self.window, budget, |frame| {
                outputs.push(Some(Output::Transmit(frame)));
            });
            if let Some(pace) = &mut self.pace {
                pace.spend(sent as u64);
                if more && self.paced.is_none() {
                    self.paced = Some(pace.next_token());
                }
            }
        }
    }

    /// One more reliable frame of `bytes` received: acknowledged at once past `ack_every`
    /// frames or `ack_bytes` bytes (so the server's flow control never waits on a lazy
    /// acknowledgement), else within `ack_delay`.
    /// Returns the frame's receipt, or `None` when it was handed over already (see
    /// [`receipt`](Self::receipt)).
    pub(super) fn count_received(&mut self, now: Instant, bytes: usize) -> Option<Option<Receipt>> {
        self.received += 1;
        self.schedule_ack(now, bytes);
        self.receipt(self.received)
    }

    /// A frame of a room's log at `pos` arrived (`room`: `None` for the log of everyone):
    /// whether it is new. One at or below the last position received is a frame the client
    /// has (a relay that took the session over replays from the cursor it found stored, which
    /// may lag): it is dropped. Acknowledged like session frames, per log.
    pub(super) fn count_logged(
        &mut self,
        now: Instant,
        room: Option<&str>,
        pos: u64,
        bytes: usize,
    ) -> bool {
        let key = room.unwrap_or_default();
        let at = match self.logs.iter().position(|(room, _)| room == key) {
            Some(at) => at,
            None => {
                self.logs.push((key.to_owned(), LogCursor::default()));
                self.logs.len() - 1
            }
        };
        let Some((_, cursor)) = self.logs.get_mut(at) else {
            return false;
        };
        if pos <= cursor.received {
            return false;
        }
        cursor.received = pos;
        self.logs_unacked += 1;
        self.schedule_ack(now, bytes);
        true
    }

    /// Entries of `room`'s log before `first` are gone: the application is told how many this
    /// client lost (an error with code `lost`), unless it had them all. The server's count is
    /// from the session's stored place, which may lag what this client has; the client's own
    /// place is exact. A log begun again numbers anew: how much was lost is unknown.
    pub(super) fn handle_lost(
        &mut self,
        room: Option<&str>,
        first: u64,
        lost: Option<u64>,
        began_again: bool,
    ) {
        let key = room.unwrap_or_default();
        let had = self
            .logs
            .iter()
            .find(|(room, _)| room == key)
            .map_or(0, |(_, cursor)| cursor.received);
        let count = match (began_again, had) {
            (true, _) => None,
            (false, 0) => lost,
            (false, had) if first <= had + 1 => return,
            (false, had) => Some(first - had - 1),
        };
        let mut message = String::from("messages of ");
        match room {
            Some(room) => {
                message.push_str("room \"");
                message.push_str(room);
                message.push('"');
            }
            None => message.push_str("broadcasts"),
        }
        message.push_str(" were lost to you");
        if let Some(count) = count {
            message.push_str(": ");
            push_u64(&mut message, count);
        }
        message.push_str(" (past the log's retention)");
        let error = RemoteError {
            code: ErrorCode::Lost.as_str().into(),
            message,
        };
        self.event(Event::Error(Error::Remote(error)));
    }

    /// One more frame of `bytes` to acknowledge: at once past `ack_every` frames or
    /// `ack_bytes` bytes, else within `ack_delay`.
    fn schedule_ack(&mut self, now: Instant, bytes: usize) {
        self.unacked_bytes = self.unacked_bytes.saturating_add(bytes);
        if self.received - self.acknowledged + self.logs_unacked >= self.options.ack_every
            || self.unacked_bytes >= self.options.ack_bytes
        {
            self.send_ack();
        } else if self.ack_due.is_none() {
            self.ack_due = Some(now + self.options.ack_delay);
        }
    }

    /// Acknowledges what may be: every frame received, or for a client that persists, what
    /// its stored journal says was handled (the rest once it does: `handle_saved`).
    pub(super) fn send_ack(&mut self) {
        self.ack_due = None;
        let ack = self.ackable();
        if ack < self.received {
            self.durable_ack_wanted();
        }
        if !matches!(self.state, State::Open { .. } | State::Closing { .. }) {
            return;
        }
        if ack > self.acknowledged {
            self.acknowledged = ack;
            self.unacked_bytes = 0;
            let ack = Frame::Ack { ack };
            self.output(Output::Transmit(ack.encode()));
        }
        if self.logs_unacked > 0 {
            self.logs_unacked = 0;
            self.unacked_bytes = 0;
            for (room, cursor) in self.logs.iter_mut() {
                if cursor.received > cursor.acknowledged {
                    cursor.acknowledged = cursor.received;
                    let ack = Frame::LogAck {
                        room: (!room.is_empty()).then_some(room.as_str().into()),
                        pos: cursor.received,
                    };
                    self.outputs.push(Some(Output::Transmit(ack.encode())));
                }
            }
        }
    }

    /// A message, or a response, arrived; `receipt` names it for [`ClientCore::handled`].
    pub(super) fn handle_message(&mut self, message: Message<'_>, receipt: Option<Receipt>) {
        let result = match message.error {
            Some(error) => Err(error),
            None => Ok(message.payload.map(str::to_owned)),
        };
        let source: Option<String> = message.source.map(Into::into);
        let Some(re) = message.re else {
            // A request to this client alone (directed to it, or the server's, which asks one
            // client at a time); one to everyone is left to those who handle it.
            let alone = message.to.is_some() || source.is_none();
            if let (true, true, Some(id)) = (message.request, alone, message.id) {
                if !self.handles(&message.kind) {
                    self.refuse_unhandled(&message.kind, id, source.clone());
                }
            }
            self.event(Event::Message(InboundMessage {
                kind: message.kind.into_owned(),
                payload: result.ok().flatten(),
                source,
                id: message.id,
                room: message.room.map(Into::into),
                receipt,
            }));
            return;
        };
        // A response settles a request or is reported: handled once the event is out.
        self.mark_handled(self.received);
        if let Some(index) = self.targets.iter().position(|(id, _)| *id == re) {
            // Put to one client: nobody else may answer it (the server refuses such answers
            // too, but a client does not rely on a server it cannot see).
            if source.as_deref() != self.targets.get(index).map(|(_, to)| to.as_str()) {
                let message = "a response from another client than the one asked".into();
                self.event(Event::Error(Error::Protocol(message)));
                return;
            }
            self.targets.swap_remove(index);
        }
        if self.requests.remove(re) {
            self.event(Event::Reply {
                request: re,
                source,
                result,
            });
        } else {
            let kind = message.kind.into_owned();
            self.event(Event::Response(Response {
                kind,
                re,
                source,
                result,
            }));
        }
    }

    /// Answers request `id` of `kind`, which no handler takes, with `no_handler`. Failing to
    /// queue the answer (closed, queue full) is reported like any answer's failure.
    fn refuse_unhandled(&mut self, kind: &str, id: u64, source: Option<String>) {
        let mut message = String::from("no handler for \"");
        message.push_str(kind);
        message.push('"');
        let error = RemoteError {
            code: ErrorCode::NoHandler.as_str().into(),
            message,
        };
        let target = ReplyTarget {
            kind: kind.to_owned(),
            re: id,
            source,
        };
        if let Err(error) = self.respond(&target, Err(error)) {
            self.event(Event::Error(error));
        }
    }

    pub(super) fn handle_error_report(&mut self, report: ErrorReport) {
        let error = Error::Remote(report.error);
        let Some(id) = report.re else {
            self.event(Event::Error(error));
            return;
        };
        // A request whose caller already got its outcome (a timeout) no longer waits: the
        // error is then only reported, never a second outcome for the same id.
        let entry = self.outbox.remove(id);
        let waiting =
            self.requests.remove(id) || entry.is_some_and(|entry| entry.settles == Settles::OnAck);
        if waiting {
            self.fail(id, error);
        } else {
            self.event(Event::Error(error));
        }
        self.check_closing_done();
    }

    pub(super) fn handle_ack(&mut self, ack: u64) {
        self.settle_acked(ack);
        self.send_more();
        self.check_closing_done();
    }

    /// Pending requests fail with `error`; one that was sent already may have been delivered,
    /// and fails as [`Error::Unconfirmed`] instead.
    pub(super) fn fail_requests(&mut self, error: &Error) {
        for (id, _) in self.requests.drain() {
            let sent = self.outbox.remove_untransmitted(id).is_none();
            self.fail(id, failure(error, sent));
        }
    }

    /// Everything still pending fails with `error`: the client will not send it. What it had
    /// sent and the server had not acknowledged may have been delivered, and says so
    /// ([`Error::Unconfirmed`]): only a message that never left fails with `error` itself.
    pub(super) fn fail_everything(&mut self, error: &Error) {
        self.fail_requests(error);
        for entry in self.outbox.drain() {
            // Requests had their outcome above (or when they timed out): never a second one.
            if entry.settles == Settles::OnAck {
                self.fail(entry.id, failure(error, entry.transmitted));
            }
        }
        self.ack_due = None;
    }
}
