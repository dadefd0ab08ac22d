//! The life of a connection: opening it, the hello and the welcome, the heartbeat and the
//! timers, losing it and closing.

use super::*;
use crate::client::events::*;
use crate::protocol::{CLOSE_FORBIDDEN, CLOSE_REPLACED, CLOSE_UNAUTHORIZED};

impl ClientCore {
    /// The transport `transport` opened: send the hello.
    pub fn handle_opened(&mut self, now: Instant, transport: TransportId) {
        if let State::Connecting {
            transport: current,
            ref mut opened,
            ..
        } = self.state
        {
            if current == transport {
                *opened = true;
                // The hello and its welcome are the first round trip measured.
                self.round_trips.sent(now);
                let ack = self.ackable();
                self.durable_hello(ack);
                let hello = Frame::Hello {
                    version: VERSION,
                    session: self.session.as_str().into(),
                    ack,
                    sid: self.sid.as_deref().map(Into::into),
                };
                self.output(Output::Transmit(hello.encode()));
            }
        }
    }

    /// A text frame arrived on `transport`.
    pub fn handle_frame(&mut self, now: Instant, transport: TransportId, text: &str) {
        if !self.heard(now, transport) {
            return;
        }
        match Frame::decode(text) {
            Ok(frame) => self.dispatch(now, transport, frame, text.len()),
            Err(error) => {
                // Not `to_string()`: the formatting machinery is kilobytes of wasm.
                let mut message = String::from(error.code.as_str());
                message.push_str(": ");
                message.push_str(&error.message);
                self.event(Event::Error(Error::Protocol(message)));
            }
        }
    }

    /// A text frame of `bytes` bytes arrived on `transport`, already decoded by the driver:
    /// the same decisions as [`ClientCore::handle_frame`] on its text. The web driver decodes
    /// the frequent frames (messages, acknowledgements) with the runtime's own `JSON.parse`,
    /// so their payloads never cross into wasm; a frame's payload is then the driver's to
    /// hand over (`payload: None` here), and everything else about it is decided here.
    pub fn handle_decoded(
        &mut self,
        now: Instant,
        transport: TransportId,
        frame: Frame<'_>,
        bytes: usize,
    ) {
        if self.heard(now, transport) {
            self.dispatch(now, transport, frame, bytes);
        }
    }

    /// A binary frame arrived on `transport`. wsrelay speaks text frames only: it is reported
    /// as [`Error::Protocol`] and otherwise ignored (it still shows the connection is alive).
    pub fn handle_binary(&mut self, now: Instant, transport: TransportId) {
        if self.heard(now, transport) {
            self.event(Event::Error(Error::Protocol(
                "binary frame from the server".into(),
            )));
        }
    }

    /// Something arrived on `transport`: whether it is the current one (else it is ignored),
    /// and if so, the connection is alive.
    fn heard(&mut self, now: Instant, transport: TransportId) -> bool {
        if self.transport() != Some(transport) {
            return false;
        }
        self.clock = self.clock.max(now);
        if let State::Open {
            ref mut last_heard, ..
        } = self.state
        {
            *last_heard = now;
        }
        true
    }

    /// What a frame of `bytes` bytes from the current transport does.
    fn dispatch(&mut self, now: Instant, transport: TransportId, frame: Frame<'_>, bytes: usize) {
        match frame {
            Frame::Welcome(welcome) => self.handle_welcome(now, transport, &welcome),
            _ if matches!(self.state, State::Connecting { .. }) => {
                self.event(Event::Error(Error::Protocol(
                    "frame before the welcome".into(),
                )));
            }
            Frame::Message(message) => {
                if let Some(receipt) = self.count_received(now, bytes) {
                    self.handle_message(message, receipt);
                }
            }
            Frame::Error(report) => {
                if self.count_received(now, bytes).is_some() {
                    self.mark_handled(self.received);
                    self.handle_error_report(report);
                }
            }
            Frame::Logged { message, pos } => {
                if self.count_logged(now, message.room.as_deref(), pos, bytes) {
                    self.handle_message(message, None);
                }
            }
            Frame::Lost {
                room,
                first,
                lost,
                began_again,
            } => self.handle_lost(room.as_deref(), first, lost, began_again),
            Frame::Ack { ack } => self.handle_ack(ack),
            Frame::Ping => self.output(Output::Transmit(Frame::Pong.encode())),
            Frame::Pong => self.round_trips.answered(now),
            Frame::Hello { .. } | Frame::LogAck { .. } => {
                self.event(Event::Error(Error::Protocol(
                    "a client's frame from the server".into(),
                )));
            }
        }
    }

    /// The transport `transport` closed with `code` and `reason`.
    pub fn handle_closed(&mut self, now: Instant, transport: TransportId, code: u16, reason: &str) {
        if self.transport() == Some(transport) {
            self.connection_lost(now, code, reason);
        }
    }

    /// The upgrade of `transport` was refused with HTTP `status` and `reason` (a server or a
    /// proxy that answers with a status; a browser never sees one). 401, 403 and 409 are the
    /// refusals a wsrelay server sends as close codes 4401, 4403 and 4409 (PROTOCOL.md
    /// section 9), so the stop codes apply to them alike; any other status is a failed attempt.
    pub fn handle_refused(
        &mut self,
        now: Instant,
        transport: TransportId,
        status: u16,
        reason: &str,
    ) {
        let code = match status {
            401 => CLOSE_UNAUTHORIZED,
            403 => CLOSE_FORBIDDEN,
            409 => CLOSE_REPLACED,
            _ => {
                let mut message = String::from("upgrade refused: HTTP ");
                push_u64(&mut message, u64::from(status));
                message.push_str(": ");
                message.push_str(reason);
                return self.handle_error(now, transport, &message);
            }
        };
        self.handle_closed(now, transport, code, reason);
    }

    /// The transport `transport` failed; it is treated as closed abnormally.
    pub fn handle_error(&mut self, now: Instant, transport: TransportId, message: &str) {
        if self.transport() == Some(transport) {
            self.event(Event::Error(Error::Transport(message.to_owned())));
            self.abandon(transport, CLIENT_ABANDONED, "transport error");
            self.connection_lost(now, ABNORMAL, message);
        }
    }

    /// Time has come: run whatever is due at `now`. Spurious calls do nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.clock = self.clock.max(now);
        if self.paced.is_some_and(|at| at <= now) {
            self.paced = None;
            self.send_more();
        }
        match self.state {
            State::Waiting { until } if until <= now => self.connect(now),
            State::Connecting {
                transport,
                deadline,
                ..
            } if deadline <= now => {
                self.abandon(transport, CLIENT_ABANDONED, "connection timeout");
                self.connection_lost(now, ABNORMAL, "connection timeout");
            }
            State::Open {
                transport,
                last_heard,
                next_ping,
                ..
            } => {
                if last_heard + self.options.heartbeat_timeout <= now {
                    self.abandon(transport, CLIENT_ABANDONED, "heartbeat timeout");
                    self.connection_lost(now, ABNORMAL, "heartbeat timeout");
                } else if next_ping <= now {
                    self.round_trips.sent(now);
                    // The server counts pings against its rate limit too.
                    if let Some(pace) = &mut self.pace {
                        pace.refill(now);
                        pace.spend(1);
                    }
                    self.output(Output::Transmit(Frame::Ping.encode()));
                    if let State::Open {
                        ref mut next_ping, ..
                    } = self.state
                    {
                        *next_ping = now + self.options.heartbeat_interval;
                    }
                }
            }
            State::Closing { deadline, code, .. } if deadline <= now => {
                self.finish_close(code, true)
            }
            _ => {}
        }
        if self.ack_due.is_some_and(|due| due <= now) {
            self.send_ack();
        }
        while let Some(id) = self.requests.pop_due(now) {
            self.outbox.remove_untransmitted(id);
            self.fail(id, Error::Timeout);
        }
        while let Some(entry) = self.outbox.pop_expired(now) {
            self.requests.remove(entry.id);
            self.fail(entry.id, Error::Expired);
        }
    }

    pub(super) fn connect(&mut self, now: Instant) {
        self.last_transport += 1;
        let transport = TransportId(self.last_transport);
        let deadline = now + self.options.connection_timeout;
        self.state = State::Connecting {
            transport,
            deadline,
            opened: false,
        };
        self.output(Output::Connect(transport));
    }

    /// Stops using `transport` and asks the driver to close it.
    pub(super) fn abandon(&mut self, transport: TransportId, code: u16, reason: &str) {
        self.output(Output::CloseTransport {
            transport,
            code,
            reason: reason.to_owned(),
        });
    }

    pub(super) fn handle_welcome(
        &mut self,
        now: Instant,
        transport: TransportId,
        welcome: &Welcome<'_>,
    ) {
        let Welcome {
            version,
            ref session,
            ack,
            resumed,
            lost,
            window,
            ref sid,
            rate,
            burst,
        } = *welcome;
        if !matches!(self.state, State::Connecting { opened: true, .. }) {
            self.event(Event::Error(Error::Protocol("unexpected welcome".into())));
            return;
        }
        if version != VERSION || *session != self.session {
            let reason = if version != VERSION {
                "unsupported version"
            } else {
                "wrong session"
            };
            self.abandon(transport, CLIENT_ABANDONED, reason);
            self.connection_lost(now, 1002, reason);
            return;
        }
        let lost_session = !resumed && self.had_session;
        self.durable_welcome(resumed);
        if !resumed {
            self.received = 0;
            // The rooms went with the session.
            self.logs.clear();
            if lost_session {
                self.event(Event::SessionLost { lost });
            }
        }
        self.had_session = true;
        self.sid = sid.as_deref().map(str::to_owned);
        self.window = window.map(|window| usize::try_from(window).unwrap_or(usize::MAX));
        self.pace = rate.map(|rate| TokenBucket::new(rate, burst.unwrap_or(1) / 2, now));
        self.paced = None;
        // The hello acknowledged everything received (a resumed session), or the count
        // starts again (a fresh one).
        self.acknowledged = self.received;
        self.unacked_bytes = 0;
        self.ack_due = None;
        // The server's cursors in the rooms may lag what this client has (a relay that died
        // before storing its last advances): it hears where the client is at once.
        self.logs_unacked = 0;
        for (_, cursor) in self.logs.iter_mut() {
            if cursor.received > 0 {
                cursor.acknowledged = 0;
                self.logs_unacked += 1;
            }
        }
        if self.logs_unacked > 0 {
            self.ack_due = Some(now);
        }
        self.round_trips.answered(now);
        if core::mem::replace(&mut self.opened_once, true) {
            self.reconnects += 1;
        }
        self.state = State::Open {
            transport,
            since: now,
            last_heard: now,
            next_ping: now + self.options.heartbeat_interval,
        };
        self.event(Event::Open { resumed });
        self.outbox.restart();
        if lost_session {
            // What the lost session had been sent and had not acknowledged may have been
            // consumed: sending it again could deliver it twice, and not sending it would leave
            // its sender guessing. It fails, saying so.
            self.settle_acked(ack);
            for entry in self.outbox.take_transmitted() {
                // A request that already timed out had its outcome: never a second one.
                let waiting = self.requests.remove(entry.id) || entry.settles == Settles::OnAck;
                if waiting {
                    self.fail(entry.id, Error::SessionLost);
                }
            }
        }
        self.handle_ack(ack);
    }

    pub(super) fn check_closing_done(&mut self) {
        if let State::Closing { code, .. } = self.state {
            if self.outbox.is_empty() {
                self.finish_close(code, true);
            }
        }
    }

    /// Ends in `Closed` at the application's request, closing the transport if there is one
    /// and it is still `alive`.
    pub(super) fn finish_close(&mut self, code: u16, alive: bool) {
        let reason = core::mem::take(&mut self.close_reason);
        if let Some(transport) = self.transport().filter(|_| alive) {
            // What was received is acknowledged before the close, not left for the delay:
            // the server settles it rather than keeping it for a resume.
            self.send_ack();
            self.abandon(transport, code, &reason);
        }
        self.state = State::Closed;
        self.stopped = Some(Error::Closed);
        self.fail_everything(&Error::Closed);
        self.event(Event::Close {
            code,
            reason,
            reconnecting: false,
        });
    }

    /// The current transport is gone (closed, failed, timed out): decide what comes next.
    pub(super) fn connection_lost(&mut self, now: Instant, code: u16, reason: &str) {
        self.round_trips.lost();
        let was_stable = match self.state {
            State::Closing { code, .. } => {
                self.finish_close(code, false);
                return;
            }
            State::Open { since, .. } => {
                now.saturating_duration_since(since) >= self.options.min_uptime
            }
            _ => false,
        };
        if was_stable {
            self.retry_count = 0;
        }
        let give_up = if self.options.stop_codes.contains(&code) {
            Some(Error::Rejected {
                code,
                reason: reason.to_owned(),
            })
        } else if self
            .options
            .max_retries
            .is_some_and(|max| self.retry_count >= max)
        {
            Some(Error::RetriesExhausted {
                attempts: self.retry_count,
            })
        } else {
            None
        };
        self.event(Event::Close {
            code,
            reason: reason.to_owned(),
            reconnecting: give_up.is_none(),
        });
        if let Some(error) = give_up {
            self.state = State::Closed;
            self.stopped = Some(error.clone());
            self.event(Event::Error(error.clone()));
            self.fail_everything(&error);
            return;
        }
        self.retry_count += 1;
        let delay = backoff::next_delay(&self.options, self.retry_count, &mut self.rng);
        self.state = State::Waiting { until: now + delay };
        self.event(Event::Reconnecting {
            attempt: self.retry_count,
            delay,
        });
    }
}
