//! What the client sends: the hello (or a bare client's first frame), then each frame checked,
//! limited, de-duplicated and routed in order, waiting (flow control) while it cannot be.

use super::*;

impl<F: FrameText, H: HandlerSet> ServerConnection<F, H> {
    /// A text frame arrived at `now`.
    pub fn handle_text(&mut self, now: Instant, text: &str) {
        if self.ending.is_some() {
            return;
        }
        self.latest = self.latest.max(now);
        self.heard = true;
        if text.len() > self.settings.max_message_size {
            self.not_a_hello();
            if self.within_limit(now, None) {
                self.work(Work::TooLarge(text.len()));
            }
            return;
        }
        let frame = Frame::decode(text);
        // Acknowledgements and the first hello are never limited: they only ever make the
        // connection lighter. Everything else counts.
        let exempt = match &frame {
            Ok(Frame::Ack { .. } | Frame::LogAck { .. }) => true,
            Ok(Frame::Hello { .. }) => matches!(self.mode, Mode::Pending { .. } | Mode::Bare),
            _ => false,
        };
        match &frame {
            Ok(Frame::Message(_)) => self.stats.messages += 1,
            Ok(Frame::Ack { .. } | Frame::LogAck { .. }) => self.stats.acks_received += 1,
            _ => {}
        }
        if !exempt {
            let id = match &frame {
                Ok(Frame::Message(message)) => message.id,
                _ => None,
            };
            if !self.within_limit(now, id) {
                return;
            }
        }
        match frame {
            Ok(Frame::Hello {
                version,
                session,
                ack,
                sid,
            }) => self.hello(version, session, ack, sid, text),
            Ok(Frame::Ack { ack }) => {
                self.not_a_hello();
                self.client_ack(ack);
            }
            Ok(Frame::LogAck { room, pos }) => {
                self.not_a_hello();
                self.client_log_ack(room.as_deref().unwrap_or_default(), pos);
            }
            Ok(Frame::Ping) => {
                self.not_a_hello();
                self.transmit(Frame::Pong.encode());
            }
            Ok(Frame::Pong) => self.not_a_hello(),
            Ok(Frame::Error(report)) => {
                self.not_a_hello();
                self.event(ServerEvent::ClientError {
                    code: clip(&report.error.code).into_owned(),
                    message: clip(&report.error.message).into_owned(),
                });
            }
            other => {
                self.not_a_hello();
                if self.can_consume() {
                    self.consume(other);
                } else {
                    self.stash(Work::Text(text.to_owned()));
                }
            }
        }
    }

    /// A binary frame arrived at `now`: refused.
    pub fn handle_binary(&mut self, now: Instant) {
        if self.ending.is_none() {
            self.heard = true;
            self.not_a_hello();
            if self.within_limit(now, None) {
                self.work(Work::Binary);
            }
        }
    }

    /// Whether a message may be consumed now: the client's kind is known, nothing waits
    /// before it, and neither its own backlog nor its handler calls are over their bounds.
    pub(super) fn can_consume(&self) -> bool {
        matches!(self.mode, Mode::Bare | Mode::Session { .. })
            && self.held.is_none()
            && self.stash.is_empty()
            && self.backlog_bytes <= self.settings.backlog_window
            && self.calls.len() < self.settings.max_pending_calls
    }

    /// Counts one frame against the rate limit; false when it is over. A message with an id
    /// (not a retransmit) is then answered `rate_limited` in its turn, anything else dropped;
    /// a client that keeps going over is closed with 1008.
    pub(super) fn within_limit(&mut self, now: Instant, id: Option<u64>) -> bool {
        let Some(limiter) = self.limiter.as_mut() else {
            return true;
        };
        match limiter.take(now) {
            Verdict::Allow => true,
            Verdict::Refuse => {
                let retransmit = matches!(self.mode, Mode::Session { .. })
                    && id.is_some_and(|id| id <= self.consumed);
                let re = id.filter(|_| !retransmit);
                self.event(ServerEvent::RateLimited { re });
                if let Some(id) = re {
                    self.not_a_hello();
                    self.work(Work::RateLimited(id));
                }
                false
            }
            Verdict::Flood => {
                self.event(ServerEvent::RateLimited { re: None });
                self.end(
                    DisconnectReason::Flooding,
                    None,
                    Some(close(1008, "rate limit exceeded")),
                );
                false
            }
        }
    }

    pub(super) fn stash(&mut self, work: Work) {
        if let Work::Text(text) = &work {
            self.stash_bytes += text.len();
        }
        self.stash.push_back(work);
    }

    /// Consumes what waited, in order, for as long as nothing blocks.
    pub(super) fn drain(&mut self) {
        while self.ending.is_none()
            && matches!(self.mode, Mode::Bare | Mode::Session { .. })
            && self.held.is_none()
            && self.backlog_bytes <= self.settings.backlog_window
            && self.calls.len() < self.settings.max_pending_calls
        {
            let Some(work) = self.stash.pop_front() else {
                return;
            };
            match work {
                Work::Text(text) => {
                    self.stash_bytes -= text.len();
                    self.consume(Frame::decode(&text));
                }
                other => self.work_now(other),
            }
        }
    }

    /// Input other than a message: processed now or after what waits before it.
    pub(super) fn work(&mut self, work: Work) {
        if self.can_consume() {
            self.work_now(work);
        } else {
            self.stash(work);
        }
    }

    pub(super) fn work_now(&mut self, work: Work) {
        match work {
            Work::TooLarge(len) => {
                let limit = self.settings.max_message_size;
                let message = format!("frame of {len} bytes exceeds the limit of {limit}");
                self.reject_unnumbered(ErrorCode::TooLarge, message);
            }
            Work::Binary => self.reject_unnumbered(
                ErrorCode::BinaryFrame,
                "binary frames are not accepted".into(),
            ),
            Work::RateLimited(id) => {
                // Not consumed: the watermark stays, and the client may send it again later.
                let limit = self.settings.rate_limit.map_or(0, |limit| limit.per_second);
                let message = format!("over the rate limit of {limit} messages per second");
                let frame = F::from(error_frame(ErrorCode::RateLimited, &message, Some(id)));
                self.append(frame);
            }
            Work::Text(_) => debug_assert!(false, "texts are consumed, not worked"),
        }
    }

    /// The first frame is not a hello (or none came in time): a bare client.
    pub(super) fn not_a_hello(&mut self) {
        if matches!(self.mode, Mode::Pending { .. }) {
            self.mode = Mode::Opening {
                token: None,
                late: false,
            };
            self.outputs.push_back(Output::Open {
                hello: None,
                fresh_next: self.next,
            });
        }
    }

    pub(super) fn hello(
        &mut self,
        version: u64,
        token: Cow<'_, str>,
        ack: u64,
        sid: Option<Cow<'_, str>>,
        text: &str,
    ) {
        let late = match self.mode {
            Mode::Pending { .. } => false,
            Mode::Bare => true,
            _ => {
                // A second hello is a message to refuse, in its turn.
                if self.can_consume() {
                    self.consume(Frame::decode(text));
                } else {
                    self.stash(Work::Text(text.to_owned()));
                }
                return;
            }
        };
        if version != VERSION {
            let message = format!(
                "protocol version {version} is not supported; this server speaks {VERSION}"
            );
            let words = error_frame(ErrorCode::UnsupportedVersion, &message, None);
            let reason = DisconnectReason::ProtocolError(message);
            self.end(reason, Some(words), Some(close(1002, "protocol error")));
            return;
        }
        if !(8..=64).contains(&token.chars().count()) {
            let message = "the session token must be 8 to 64 characters";
            let words = error_frame(ErrorCode::InvalidFrame, message, None);
            let reason = DisconnectReason::ProtocolError(message.into());
            self.end(reason, Some(words), Some(close(1002, "protocol error")));
            return;
        }
        self.mode = Mode::Opening {
            token: Some(token.to_string()),
            late,
        };
        self.outputs.push_back(Output::Open {
            hello: Some(Hello {
                token: token.into_owned(),
                ack,
                sid: sid.map(Cow::into_owned),
            }),
            fresh_next: self.next,
        });
    }

    /// Decides what a message does and hands it to the engine.
    pub(super) fn consume(&mut self, frame: Result<Frame<'_>, DecodeError>) {
        let message = match frame {
            Ok(Frame::Message(message)) => message,
            Ok(Frame::Hello { .. }) => {
                return self.reject_unnumbered(ErrorCode::InvalidFrame, "duplicate hello".into());
            }
            Ok(Frame::Welcome(_)) => {
                let message = "~welcome is sent by the server".into();
                return self.reject_unnumbered(ErrorCode::ReservedType, message);
            }
            Ok(Frame::Logged { message, .. }) => {
                let text = "\"pos\" is the server's: a message to send has none".into();
                let frame = self.rejection(ErrorCode::InvalidFrame, text, message.id);
                return self.answer(message.id, frame);
            }
            Ok(_) => return, // control frames are handled as they arrive
            Err(error) => {
                if let Some(id) = error.id {
                    if self.is_duplicate(id) {
                        return;
                    }
                }
                let frame = self.rejection(error.code, error.message.into_owned(), error.id);
                return self.answer(error.id, frame);
            }
        };
        if let Some(id) = message.id {
            if self.is_duplicate(id) {
                return;
            }
        }
        let relay = self.settings.relay;
        let id = message.id;
        let membership = message.kind == JOIN || message.kind == LEAVE;
        if membership && message.re.is_none() && message.to.is_none() {
            return self.membership(&message);
        }
        if let Some(room) = message.room.as_deref() {
            let problem = if message.to.is_some() || message.re.is_some() {
                Some("a message to a room has no \"to\" and no \"re\"")
            } else {
                room_problem(room)
            };
            if let Some(problem) = problem {
                let frame = self.rejection(ErrorCode::InvalidFrame, problem.into(), id);
                return self.answer(id, frame);
            }
        }
        // The relay's own types reach the relay only: a client may ask it (`relay:clients`)
        // but never speak in its name to others (a forged `relay:presence`).
        if message.kind.starts_with(RELAY_PREFIX)
            && (message.to.is_some()
                || (message.re.is_none() && !self.handlers.handles(&message.kind)))
        {
            let text = format!("types starting with \"{RELAY_PREFIX}\" are the relay's own");
            let frame = self.rejection(ErrorCode::ReservedType, text, id);
            return self.answer(id, frame);
        }
        if let (Some(re), Some(to), true) = (message.re, message.to.as_deref(), relay) {
            // A response goes only to a client whose message (with that id) was relayed to
            // this one: nobody answers a request that was not put to them.
            if !self.answerable.contains(to, re) {
                let text = format!("no message {re} from \"{}\" was relayed to you", clip(to));
                let frame = self.rejection(ErrorCode::UnexpectedResponse, text, id);
                return self.answer(id, frame);
            }
        }
        if let Some(re) = message.re {
            let effect = match message.to.as_deref() {
                Some(to) if relay => Effect::To {
                    target: to.to_owned(),
                    frame: self.relayed(&message),
                },
                Some(_) => {
                    self.event(ServerEvent::Dropped {
                        kind: message.kind.into_owned(),
                    });
                    Effect::Consume
                }
                None => Effect::Resolve {
                    kind: message.kind.into_owned(),
                    re,
                    result: match message.error {
                        Some(error) => Err(error),
                        None => Ok(message.payload.map(str::to_owned)),
                    },
                },
            };
            return self.route(id, effect, None);
        }
        if let (Some(room), true) = (message.room.as_deref(), relay) {
            // A room's members get it, whatever the server's handlers take: the room is
            // where its sender put it.
            let effect = Effect::Room {
                room: room.to_owned(),
                frame: self.relayed(&message),
            };
            return self.route(id, effect, None);
        }
        if let (Some(to), true) = (message.to.as_deref(), relay) {
            let effect = Effect::To {
                target: to.to_owned(),
                frame: self.relayed(&message),
            };
            return self.route(id, effect, None);
        }
        if self.handlers.handles(&message.kind) {
            let call = (
                message.kind.into_owned(),
                message.payload.map(str::to_owned),
            );
            return self.route(id, Effect::Consume, Some(call));
        }
        if relay {
            let frame = self.relayed(&message);
            return self.route(id, Effect::Broadcast { frame }, None);
        }
        self.event(ServerEvent::Dropped {
            kind: message.kind.into_owned(),
        });
        self.route(id, Effect::Consume, None);
    }

    /// A `relay:join` or `relay:leave`: the room named by the payload's `room`, if the
    /// client's credentials allow it, joined or left by the engine together with the answer.
    fn membership(&mut self, message: &Message<'_>) {
        let id = message.id;
        let join = message.kind == JOIN;
        let room = message.payload.and_then(room_of_payload);
        let problem = match &room {
            None => Some((
                ErrorCode::InvalidFrame,
                format!("{} takes {{\"room\": NAME}}", message.kind),
            )),
            Some(room) => match room_problem(room) {
                Some(problem) => Some((ErrorCode::InvalidFrame, problem.to_owned())),
                None if join && !self.room_access.allows(room) => Some((
                    ErrorCode::Forbidden,
                    format!("your credentials do not let you join \"{}\"", clip(room)),
                )),
                None => None,
            },
        };
        if let Some((code, text)) = problem {
            let frame = self.rejection(code, text, id);
            return self.answer(id, frame);
        }
        let Some(room) = room else {
            return;
        };
        let answer = Message {
            kind: Cow::Borrowed(&message.kind),
            id: None,
            re: id,
            to: None,
            source: None,
            room: Some(Cow::Borrowed(&room)),
            payload: None,
            error: None,
            request: false,
        };
        let frame = F::from(answer.encode());
        self.mail = true;
        let effect = if join {
            Effect::Join { room, frame }
        } else {
            Effect::Leave { room, frame }
        };
        self.route(id, effect, None);
    }

    pub(super) fn is_duplicate(&mut self, id: u64) -> bool {
        let duplicate = matches!(self.mode, Mode::Session { .. }) && id <= self.consumed;
        if duplicate {
            // Acknowledged again by the next ack (the client's retransmit is settled by the
            // welcome's `ack` anyway).
            self.event(ServerEvent::Duplicate { id });
        }
        duplicate
    }

    pub(super) fn route(
        &mut self,
        id: Option<u64>,
        effect: Effect<F>,
        call: Option<(String, Option<String>)>,
    ) {
        if id.is_none() && matches!(effect, Effect::Consume) {
            // Nothing to de-duplicate or deliver: no need to ask the engine.
            if let Some((kind, payload)) = call {
                self.calls.push_back((kind.clone(), None));
                self.outputs.push_back(Output::Call {
                    kind,
                    source: self.source.clone(),
                    payload,
                });
            }
            return;
        }
        // What the client is answered with, or sends itself, lands in its own mailbox.
        self.mail |= match &effect {
            Effect::ToSelf { .. } => true,
            Effect::To { target, .. } => *target == self.source,
            _ => false,
        };
        self.outputs.push_back(Output::Route {
            id,
            effect: effect.clone(),
        });
        self.held = Some(Held {
            id,
            effect,
            call,
            retry_at: None,
        });
    }

    /// The relayed form of a client's message: the same fields, `source` set by the server.
    pub(super) fn relayed(&self, message: &Message<'_>) -> F {
        F::from(
            Message {
                source: Some(Cow::Borrowed(&self.source)),
                ..message.clone()
            }
            .encode(),
        )
    }

    /// An `~error` frame about the client's input, reported as an event too.
    pub(super) fn rejection(&mut self, code: ErrorCode, message: String, re: Option<u64>) -> F {
        let frame = error_frame(code, &message, re);
        self.event(ServerEvent::Rejected { code, message, re });
        F::from(frame)
    }

    /// Answers input that carries no id (nothing to consume) with an `~error`.
    pub(super) fn reject_unnumbered(&mut self, code: ErrorCode, message: String) {
        let frame = self.rejection(code, message, None);
        self.answer(None, frame);
    }
}

/// The `room` of a `relay:join` or `relay:leave` payload (`{"room": NAME}`), if it has one.
fn room_of_payload(payload: &str) -> Option<String> {
    let members = json::object_members(payload).ok()??;
    members
        .into_iter()
        .find(|(name, _)| name == "room")
        .and_then(|(_, value)| value.as_str())
        .map(Cow::into_owned)
}
