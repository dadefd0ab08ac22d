//! One task per WebSocket connection: a plain I/O loop around the connection's state machine,
//! [`ServerConnection`]. It reads frames, writes frames, sleeps until the state machine's next
//! deadline, waits for the engine's doorbell and for handler replies, and carries out what the
//! state machine asks, feeding back the answers. Every protocol decision is the state
//! machine's.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::FutureExt;
use hyper::upgrade::Upgraded;
use tokio::time::{sleep_until, timeout};
use tungstenite::Utf8Bytes;
use wsrelay_core::server::websocket::Inbound;
use wsrelay_core::server::{
    CloseFrame, ConnectionStats, DisconnectReason, Output, ServerConnection, ServerEvent,
    TransportError,
};

use crate::auth::{Identity, RoomAccess};
use crate::config::OnDuplicate;
use crate::engine::{Attempt, Claim, Doorbell, MessageRouter, SessionStore};
use crate::handlers::SharedHandlers;
use crate::handlers::{first_call, handler_call, HandlerCall};
use crate::hooks::ClientInfo;
use crate::state::ServerState;
use crate::websocket::{poll_io, Outbound, Progress, Read, WebSocket};

/// Frames read back to back before the state machine's outputs are carried out.
const READ_BATCH: usize = 64;

type Machine = ServerConnection<Utf8Bytes, SharedHandlers>;

/// Serves one upgraded connection for `source` until it ends. `announced`: the URL said the
/// client speaks the protocol (`v=1`).
pub(crate) async fn serve(
    upgraded: Upgraded,
    state: Arc<ServerState>,
    identity: Identity,
    attempt: Option<Attempt>,
    announced: bool,
    addr: Option<SocketAddr>,
) {
    let Identity {
        source,
        expires,
        rooms,
    } = identity;
    let doorbell = Doorbell::default();
    let exclusive = state.config.on_duplicate == OnDuplicate::Reject;
    let claimed = state
        .engine
        .claim(&source, attempt.as_ref(), &doorbell, exclusive)
        .await;
    let claim = match claimed {
        Ok(claim) => claim,
        Err(error) => {
            // Another instance holds the source (checked at the upgrade too, for clients that
            // name no attempt), a newer attempt of this client got there first, or the engine
            // is down.
            let close = error.refused().close_frame();
            tracing::info!(source, %error, "refused after the upgrade");
            state.metrics.count_claim_refused(error.refused());
            state.metrics.count_closed(Some(close.code));
            close_at_once(upgraded, &state, close.code, close.reason).await;
            return;
        }
    };
    let bell = state.lifecycle.register(&doorbell);
    let info = ClientInfo { source, addr };
    let peer = addr.map_or_else(|| "unknown".to_owned(), |addr| addr.to_string());
    tracing::info!(
        source = info.source,
        addr = peer,
        epoch = claim.epoch,
        "connected"
    );
    state.presence.changed();
    state.hooks.connected(&info);
    // Made by a plain function: a local borrowed across this body would keep its place
    // in the task's future for the connection's life.
    let machine = new_machine(&state, &info.source, claim.next, announced, expires, rooms);
    // Boxed: the task's future then holds a pointer to it across the loop and the finish,
    // not the connection's state twice (a task's future is what an idle connection costs).
    let mut conn = Box::new(Conn {
        socket: new_socket(&state, upgraded),
        state: Arc::clone(&state),
        claim,
        doorbell,
        machine,
        outq: VecDeque::new(),
        calls: VecDeque::new(),
        fetched: Vec::new(),
        closing: None,
        released: false,
        counted: ConnectionStats::default(),
        had_session: false,
    });
    conn.run().await;
    let reason = conn
        .machine
        .ending()
        .cloned()
        .unwrap_or(DisconnectReason::Shutdown);
    let code = conn.machine.close_code();
    state.metrics.count_closed(code);
    if conn.had_session {
        state.metrics.sessions_active.dec();
    }
    conn.finish().await;
    state.lifecycle.forget(bell);
    tracing::info!(
        source = info.source,
        addr = peer,
        code,
        %reason,
        "disconnected"
    );
    state.presence.changed();
    state.hooks.disconnected(&info, &reason);
}

/// Ends an upgraded connection at once with `code` and `reason`, holding no state for it: a
/// refusal the client must be able to read (a browser's WebSocket sees the close frame of an
/// accepted upgrade, never the HTTP status of a refused one).
pub(crate) async fn close_at_once(
    upgraded: Upgraded,
    state: &ServerState,
    code: u16,
    reason: &str,
) {
    let mut socket = new_socket(state, upgraded);
    socket.queue_close(code, reason);
    let _ = timeout(state.config.close_timeout, socket.finish()).await;
}

/// Hands a frame (or the end of the stream) to the state machine.
fn read(machine: &mut Machine, state: &ServerState, received: Read<'_>) {
    let now = state.clock.now();
    match received {
        Read::Frame(Inbound::Text(text)) => {
            state.metrics.bytes_in.inc_by(text.len() as u64);
            machine.handle_text(now, text);
        }
        Read::Frame(Inbound::Binary(_)) => machine.handle_binary(now),
        Read::Frame(Inbound::Ping(_) | Inbound::Pong(_)) => machine.handle_heard(),
        Read::Frame(Inbound::Close(code)) => machine.handle_closed(code),
        Read::Ended => machine.handle_closed(None),
        Read::Failed(error) => machine.handle_transport_error(error),
    }
}

/// The WebSocket over an upgraded connection, with the relay's limits.
fn new_socket(state: &ServerState, upgraded: Upgraded) -> WebSocket {
    let config = &state.config;
    WebSocket::new(
        upgraded,
        config.hard_message_limit(),
        config.read_buffer_size,
        config.write_buffer_size,
    )
}

/// The connection's state machine, with the expiry of its verified identity if it has one and
/// the rooms it may join.
fn new_machine(
    state: &Arc<ServerState>,
    source: &str,
    next: u64,
    announced: bool,
    expires: Option<SystemTime>,
    rooms: RoomAccess,
) -> Machine {
    let now = state.clock.now();
    let mut machine = ServerConnection::new(
        source.to_owned(),
        next,
        announced,
        state.config.connection_settings(),
        SharedHandlers(Arc::clone(&state.handlers)),
        now,
    );
    if let Some(expires) = expires {
        let left = expires
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        machine.set_expiry(now + left);
    }
    machine.set_room_access(rooms);
    machine
}

struct Conn {
    /// Here rather than in the task's future, which would hold it twice (the async body's
    /// argument and its local) at every level it is passed down.
    socket: WebSocket,
    state: Arc<ServerState>,
    claim: Claim,
    doorbell: Doorbell,
    machine: Machine,
    /// Frames to write.
    outq: VecDeque<Outbound>,
    calls: VecDeque<HandlerCall>,
    /// Frames fetched from the mailbox (kept for its room).
    fetched: Vec<Utf8Bytes>,
    closing: Option<Option<CloseFrame>>,
    released: bool,
    /// The state machine's counters as last added to the metrics.
    counted: ConnectionStats,
    /// A session was opened on this connection (counted in the active sessions).
    had_session: bool,
}

impl Conn {
    /// Adds what the state machine counted since the last time to the metrics.
    fn publish_stats(&mut self) {
        let now = self.machine.stats();
        let metrics = &self.state.metrics;
        metrics
            .messages_in
            .inc_by(now.messages - self.counted.messages);
        metrics
            .acks_in
            .inc_by(now.acks_received - self.counted.acks_received);
        metrics
            .acks_out
            .inc_by(now.acks_sent - self.counted.acks_sent);
        metrics.resent.inc_by(now.resent - self.counted.resent);
        self.counted = now;
    }

    async fn run(&mut self) {
        let state = Arc::clone(&self.state);
        let sleep = sleep_until(tokio::time::Instant::now() + Duration::from_secs(3600));
        tokio::pin!(sleep);
        let mut armed = None;
        // The shutdown reaches a connection through its doorbell; one that registered after
        // the bells rang sees it here.
        if state.lifecycle.shutting_down() {
            self.machine
                .handle_shutdown(state.lifecycle.shutdown_code());
        }
        loop {
            self.carry_out().await;
            self.publish_stats();
            if let Some(close) = self.closing.take() {
                // Boxed: the farewell's future is larger than the loop's, and inline it would
                // be part of every idle connection's task.
                return Box::pin(self.farewell(close)).await;
            }
            // What the batch produced goes out now when the socket has room (the common case),
            // rather than after another turn of the select.
            if !self.outq.is_empty() || self.socket.wants_write() {
                let (socket, outq) = (&mut self.socket, &mut self.outq);
                let write = poll_fn(|cx| socket.poll_write(cx, outq));
                if let Some(written) = write.now_or_never() {
                    self.written(written);
                    continue;
                }
            }
            let deadline = self
                .machine
                .poll_timeout()
                .map(|at| state.clock.deadline(at));
            if let Some(at) = deadline.filter(|at| armed != Some(*at)) {
                sleep.as_mut().reset(at);
                armed = Some(at);
            }
            tokio::select! {
                biased;
                rung = self.doorbell.wait() => {
                    if rung.abort() {
                        self.machine.handle_abort();
                        self.outq.clear();
                        return;
                    }
                    if rung.shutdown() {
                        let code = state.lifecycle.shutdown_code();
                        self.machine.handle_shutdown(code);
                    }
                    let now = state.clock.now();
                    for signal in rung.signals() {
                        self.machine.handle_signal(now, signal);
                    }
                }
                io = poll_fn(|cx| {
                    let read = self.machine.wants_read();
                    poll_io(&mut self.socket, cx, &mut self.outq, read)
                }), if self.machine.wants_read() || !self.outq.is_empty() || self.socket.wants_write() => {
                    match io {
                        Progress::Written(written) => self.written(written),
                        Progress::Readable => {
                            for _ in 0..READ_BATCH {
                                if !self.machine.wants_read() {
                                    break;
                                }
                                match self.socket.next() {
                                    Some(received) => read(&mut self.machine, &self.state, received),
                                    None => break,
                                }
                            }
                        }
                    }
                }
                reply = first_call(&mut self.calls), if !self.calls.is_empty() => {
                    self.calls.pop_front();
                    self.machine.handle_reply(reply);
                }
                () = &mut sleep, if deadline.is_some() => {
                    armed = None;
                    self.machine.handle_timeout(state.clock.now());
                }
            }
        }
    }

    /// Tells the state machine how a write went.
    fn written(&mut self, written: std::io::Result<usize>) {
        match written {
            Ok(delivered) => self.machine.handle_written(delivered),
            Err(error) => self
                .machine
                .handle_transport_error(TransportError::Io(error.to_string())),
        }
    }

    /// Carries out the state machine's outputs until nothing is left to do, then ends the
    /// batch (the acknowledgement) and carries out what that asks.
    async fn carry_out(&mut self) {
        while let Some(output) = self.machine.poll_output() {
            self.apply(output).await;
        }
        self.machine.flush();
        while let Some(output) = self.machine.poll_output() {
            self.apply(output).await;
        }
    }

    async fn apply(&mut self, output: Output<Utf8Bytes>) {
        let state = &self.state;
        match output {
            Output::Transmit(frame) => {
                state.metrics.bytes_out.inc_by(frame.len() as u64);
                self.outq.push_back(Outbound::Text(frame.into()));
            }
            Output::Deliver(frame) => {
                state.metrics.bytes_out.inc_by(frame.len() as u64);
                state.metrics.messages_out.inc();
                self.outq.push_back(Outbound::Delivery(frame.into()));
            }
            Output::DeliverLogged(frame) => {
                state.metrics.bytes_out.inc_by(frame.len() as u64);
                state.metrics.messages_out.inc();
                self.outq.push_back(Outbound::Text(frame.into()));
            }
            Output::Ping => self.outq.push_back(Outbound::Ping),
            Output::Open { hello, fresh_next } => {
                match state
                    .engine
                    .open(&mut self.claim, hello.as_ref(), fresh_next)
                    .await
                {
                    Ok(opened) => self.machine.handle_opened(opened),
                    Err(error) => self.machine.handle_engine_down(error.to_string()),
                }
            }
            Output::Fetch { from, max } => {
                self.fetched.clear();
                let fetched = state
                    .engine
                    .fetch(&self.claim, from, &mut self.fetched, max)
                    .await;
                let now = state.clock.now();
                match fetched {
                    Ok(_) => self.machine.handle_fetched(now, self.fetched.drain(..)),
                    Err(error) => {
                        tracing::warn!(source = self.claim.source, %error, "cannot fetch frames");
                        self.machine.handle_fetch_failed(now);
                    }
                }
            }
            Output::FetchLogs { max } => {
                let fetched = state.engine.fetch_logs(&self.claim, max).await;
                let now = state.clock.now();
                match fetched {
                    Ok(batches) => self.machine.handle_logs_fetched(now, batches),
                    Err(error) => {
                        tracing::warn!(source = self.claim.source, %error, "cannot read room logs");
                        self.machine.handle_fetch_failed(now);
                    }
                }
            }
            Output::SettleLog { room, through } => {
                if let Err(error) = state.engine.settle_log(&self.claim, &room, through).await {
                    tracing::warn!(source = self.claim.source, %error, "cannot settle a room log");
                }
            }
            Output::Route { id, effect } => {
                let routed = state
                    .engine
                    .route(&self.claim, id, &effect, &self.doorbell)
                    .await;
                self.machine.handle_routed(state.clock.now(), routed);
            }
            Output::Append(frame) => {
                if let Err(error) = state.engine.append(&self.claim, frame).await {
                    tracing::warn!(source = self.claim.source, %error, "response not kept");
                }
            }
            Output::Late(frame) => {
                // The session may have moved to a new connection: address the source.
                let source = &self.claim.source;
                if let Err(error) = state.engine.send_to(source, frame).await {
                    tracing::debug!(source, %error, "late response not delivered");
                }
            }
            Output::Call {
                kind,
                source,
                payload,
            } => {
                let histogram = &state.metrics.handler_seconds;
                let mut call = handler_call(&state.handlers, histogram, kind, source, payload);
                if self.calls.is_empty() {
                    // Nothing of this connection waits before it: run it now. A handler that
                    // completes at once (the common case) then has its response written with
                    // the batch's acknowledgement, in one write.
                    if let Some(reply) = (&mut call).now_or_never() {
                        self.machine.handle_reply(reply);
                        return;
                    }
                }
                self.calls.push_back(call);
            }
            Output::Settle { through } => {
                if let Err(error) = state.engine.settle(&self.claim, through).await {
                    tracing::warn!(source = self.claim.source, %error, "cannot settle");
                }
            }
            Output::Release => {
                state.engine.release(&self.claim).await;
                self.released = true;
            }
            Output::Close(close) => {
                // Counted when decided: the farewell may take a while on a stuck socket.
                if let Some(reason) = self.machine.ending() {
                    state.metrics.count_disconnect(reason);
                }
                self.closing = Some(close);
            }
            Output::Event(event) => {
                if let ServerEvent::Opened { .. } = event {
                    self.had_session = true;
                    state.metrics.sessions_active.inc();
                }
                state.record(&self.claim.source, event);
            }
        }
    }

    /// Writes what is left and the close frame, then waits a moment for the client's answer.
    async fn farewell(&mut self, close: Option<CloseFrame>) {
        let close_timeout = self.state.config.close_timeout;
        let Some(close) = close else {
            // The client closed (the echo of its close frame is queued), or the transport is
            // gone.
            let _ = timeout(close_timeout, self.socket.finish()).await;
            return;
        };
        // A frame refused from its header may still be arriving: the WebSocket cannot be read.
        let unreadable = self.socket.refused_input();
        let abort = self.state.lifecycle.aborted();
        let (socket, outq) = (&mut self.socket, &mut self.outq);
        let goodbye = async {
            socket.write_all(outq).await?;
            socket.queue_close(close.code, close.reason);
            socket.write_all(outq).await?;
            // The client answers the close; anything else it sends now is not consumed.
            if !unreadable {
                socket.read_until_close().await;
            }
            Ok::<(), std::io::Error>(())
        };
        tokio::select! {
            _ = timeout(close_timeout, goodbye) => {}
            () = abort => {}
        }
        if unreadable {
            Box::pin(self.socket.drain_and_close(close_timeout)).await;
        } else {
            let _ = timeout(close_timeout, self.socket.finish()).await;
        }
    }

    /// After the loop: the source released (if the loop could not), and handler calls still
    /// running finished on their own, their responses carried out as the state machine says.
    async fn finish(mut self: Box<Self>) {
        let state = Arc::clone(&self.state);
        if !self.released {
            state.engine.release(&self.claim).await;
        }
        if self.calls.is_empty() {
            return;
        }
        state.lifecycle.tracker.spawn(async move {
            while let Some(call) = self.calls.pop_front() {
                self.machine.handle_reply(call.await);
                while let Some(output) = self.machine.poll_output() {
                    self.apply(output).await;
                }
            }
        });
    }
}
