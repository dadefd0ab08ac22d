//! Whether the connection lives: pings and the client's silence, the close, transport errors,
//! the engine's signals (replaced, superseded, overflowed, gone) and the server's shutdown.

use super::*;

impl<F: FrameText, H: HandlerSet> ServerConnection<F, H> {
    /// Any sign of life that is not a frame (a WebSocket pong or ping).
    pub fn handle_heard(&mut self) {
        self.heard = true;
    }

    /// The client closed the connection (with `code`, if it sent one), or the stream ended.
    pub fn handle_closed(&mut self, code: Option<u16>) {
        self.end(DisconnectReason::Closed(code), None, None);
    }

    /// The transport failed.
    pub fn handle_transport_error(&mut self, error: TransportError) {
        match error {
            TransportError::TooLarge => {
                let limit = self.settings.max_message_size;
                let message = format!("messages are limited to {limit} bytes");
                let words = error_frame(ErrorCode::TooLarge, &message, None);
                self.end(
                    DisconnectReason::TooLarge,
                    Some(words),
                    Some(close(1009, "message too big")),
                );
            }
            TransportError::InvalidUtf8 => {
                let message = "text frame is not valid UTF-8";
                let words = error_frame(ErrorCode::InvalidJson, message, None);
                self.end(
                    DisconnectReason::InvalidUtf8,
                    Some(words),
                    Some(close(1007, "invalid UTF-8")),
                );
            }
            TransportError::Protocol(message) => self.end(
                DisconnectReason::ProtocolError(message),
                None,
                Some(close(1002, "protocol error")),
            ),
            TransportError::Io(message) => self.end(DisconnectReason::Failed(message), None, None),
        }
    }

    /// Another client instance claimed the source.
    pub(super) fn handle_replaced(&mut self) {
        self.end(
            DisconnectReason::Replaced,
            None,
            Some(close(CLOSE_REPLACED, "replaced by another connection")),
        );
    }

    /// A newer connection attempt of the same client claimed the source.
    pub(super) fn handle_superseded(&mut self) {
        self.end(
            DisconnectReason::Superseded,
            None,
            Some(close(CLOSE_SUPERSEDED, "superseded by a newer connection")),
        );
    }

    /// The mailbox overflowed: the session lost frames, which the client learns when it
    /// reconnects.
    pub(super) fn handle_overflowed(&mut self) {
        self.end(
            DisconnectReason::SlowConsumer,
            None,
            Some(close(1013, "slow consumer")),
        );
    }

    /// The engine lost this source's state: the client reconnects (1012) and gets a fresh
    /// session, which tells it what it lost.
    pub(super) fn handle_gone(&mut self) {
        self.end(
            DisconnectReason::Failed("the engine lost the session".into()),
            None,
            Some(close(1012, "session state lost")),
        );
    }

    /// The engine cannot be reached to open the session: the client is asked to come back
    /// later (1013), as a server under load would.
    pub fn handle_engine_down(&mut self, message: String) {
        self.end(
            DisconnectReason::Failed(message),
            None,
            Some(TRY_AGAIN_LATER),
        );
    }

    /// The server shuts down, closing with `code`. Nothing more is consumed; what the client
    /// sent and was not acknowledged, it sends again to the next server.
    pub fn handle_shutdown(&mut self, code: u16) {
        self.end(
            DisconnectReason::Shutdown,
            None,
            Some(close(code, "server shutting down")),
        );
    }

    /// The server ends at once (its shutdown deadline passed): nothing more is written, not
    /// even a close frame.
    pub fn handle_abort(&mut self) {
        self.end(DisconnectReason::Shutdown, None, None);
    }

    /// Time has come: run whatever is due at `now`. Spurious calls do nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.ending.is_some() {
            return;
        }
        self.latest = self.latest.max(now);
        if self.refetch_at.is_some_and(|at| at <= now) {
            self.refetch_at = None;
            self.mail = true;
            self.logs_mail = true;
        }
        if self.settle_due.is_some_and(|due| due <= now) {
            self.settle_now();
        }
        if self.expires.is_some_and(|at| at <= now) {
            self.end(
                DisconnectReason::Expired,
                None,
                Some(close(CLOSE_EXPIRED, "token expired")),
            );
            return;
        }
        if let Mode::Pending { announced } = self.mode {
            if self.hello_deadline <= now {
                if announced {
                    self.end(
                        DisconnectReason::Stale,
                        None,
                        Some(close(1000, "no hello in time")),
                    );
                    return;
                }
                self.not_a_hello();
            }
        }
        if self.next_check <= now {
            self.next_check = now + self.settings.ping_interval;
            // A connection that went quiet after a burst does not keep the room of its
            // largest backlog (up to a backlog window's worth of entries).
            crate::server::shrink_drained(&mut self.in_flight);
            if std::mem::take(&mut self.heard) {
                // The client spoke during the period (a wsrelay client pings every 15 s): a
                // ping would only cost both sides a write and a read.
                self.awaiting_pong = false;
            } else if self.awaiting_pong {
                self.end(
                    DisconnectReason::Stale,
                    None,
                    Some(close(1000, "ping timeout")),
                );
                return;
            } else {
                self.awaiting_pong = true;
                self.outputs.push_back(Output::Ping);
            }
        }
        if self
            .over_since
            .is_some_and(|since| since + self.settings.slow_consumer_timeout <= now)
        {
            self.handle_overflowed();
            return;
        }
        if let Some(held) = self.held.as_mut() {
            if held.retry_at.is_some_and(|at| at <= now) {
                held.retry_at = None;
                let (id, effect) = (held.id, held.effect.clone());
                self.outputs.push_back(Output::Route { id, effect });
            }
        }
    }
}
