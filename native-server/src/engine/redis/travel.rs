//! How frames and notes travel between relays: the frames an append hands to this relay's
//! connections, the notes published to the others (`wsr:n:<node>`), and what this relay does
//! with the notes it receives; after a resubscription or a failed call, every connection reads
//! its mailbox again.

use super::*;

impl RedisEngine {
    /// Hands a frame to a connection of this relay, and rings it.
    pub(super) fn cache(&self, source: &str, position: u64, frame: Utf8Bytes) {
        if let Some(local) = self.locals().get_mut(source) {
            local.inbox.insert(position, frame);
            local.doorbell.ring(Signal::Mail);
        }
    }

    /// Tells the owners of these sources (hex, owner) to read their mailboxes: something was
    /// appended for them that they may not have heard of.
    pub(super) async fn check(&self, sources: Vec<(String, String)>) {
        let mut by_owner: HashMap<String, Vec<String>> = HashMap::new();
        for (source, owner) in sources {
            if owner.is_empty() {
                continue;
            }
            if self
                .node
                .get()
                .is_some_and(|node| node.to_string() == owner)
            {
                if let Some(source) = unhex(&source) {
                    self.recheck(&source);
                }
            } else {
                by_owner.entry(owner).or_default().push(source);
            }
        }
        for (owner, sources) in by_owner {
            self.notify(&owner, Note::Check { sources }).await;
        }
    }

    pub(super) async fn notify(&self, node: &str, note: Note) {
        let mut conn = self.conn.clone();
        let channel = format!("wsr:n:{node}");
        let payload = note.encode();
        let sent: Result<i64, _> = self
            .call(
                redis::cmd("PUBLISH")
                    .arg(channel)
                    .arg(payload)
                    .query_async(&mut conn),
            )
            .await;
        if let Err(error) = sent {
            // The mailbox has the frame; the owner reads it at its next sweep.
            tracing::debug!(%error, node, "notification not published");
        }
    }

    /// Settles a server request's answer: here, or at the relay that sent the request.
    pub(super) async fn resolve(
        &self,
        source: &str,
        kind: &str,
        re: u64,
        result: &Result<Option<String>, wsrelay_core::protocol::RemoteError>,
    ) {
        let node = re >> 32;
        if node == 0 || self.node.get() == Some(&node) {
            self.requests.resolve(source, kind, re, result.clone());
            return;
        }
        let note = Note::Response {
            source: source.to_owned(),
            kind: kind.to_owned(),
            re,
            result: result.clone(),
        };
        self.notify(&node.to_string(), note).await;
    }

    /// Receives this relay's notes, resubscribing (and sweeping) after every reconnect.
    pub(super) async fn listen(self: Arc<Self>, stop: CancellationToken) {
        let mut delay = Duration::from_millis(100);
        loop {
            if stop.is_cancelled() {
                return;
            }
            match self.subscribe().await {
                Ok(mut pubsub) => {
                    delay = Duration::from_millis(100);
                    // Notes published while nobody listened are gone: every connection
                    // reads its mailbox again, and the other relays are asked to sweep too (a
                    // note this relay could not publish meanwhile is made up for).
                    self.sweep();
                    self.recovered.notify_one();
                    let mut messages = pubsub.on_message();
                    loop {
                        tokio::select! {
                            () = stop.cancelled() => return,
                            message = messages.next() => match message {
                                Some(message) => self.receive(message.get_payload_bytes()),
                                None => break,
                            },
                        }
                    }
                    tracing::warn!(node = self.node_id, "lost the Redis subscription");
                }
                Err(error) => {
                    tracing::warn!(node = self.node_id, %error, "cannot subscribe to Redis");
                }
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }

    pub(super) async fn subscribe(&self) -> Result<redis::aio::PubSub, EngineError> {
        let node = match self.node.get() {
            Some(node) => *node,
            None => {
                let mut conn = self.conn.clone();
                let node: u64 = self
                    .call(redis::cmd("INCR").arg("wsr:nodes").query_async(&mut conn))
                    .await?;
                *self.node.get_or_init(|| node)
            }
        };
        self.requests.set_node(node);
        let connect = self.client.get_async_pubsub();
        let mut pubsub = tokio::time::timeout(DEADLINE, connect)
            .await
            .map_err(|_| EngineError("Redis did not answer in time".into()))?
            .map_err(unavailable)?;
        let channel = format!("wsr:n:{node}");
        for channel in [channel.as_str(), ALL] {
            tokio::time::timeout(DEADLINE, pubsub.subscribe(channel))
                .await
                .map_err(|_| EngineError("Redis did not answer in time".into()))?
                .map_err(unavailable)?;
        }
        tracing::info!(node = self.node_id, number = node, "subscribed to Redis");
        Ok(pubsub)
    }

    /// After Redis failed and answers again, asks every relay to sweep: a notification this
    /// relay could not publish meanwhile is made up for.
    pub(super) async fn announce_recovery(self: Arc<Self>, stop: CancellationToken) {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.recovered.notified() => {}
            }
            let mut conn = self.conn.clone();
            let sweep = Note::Sweep.encode();
            let published: Result<i64, _> = self
                .call(
                    redis::cmd("PUBLISH")
                        .arg(ALL)
                        .arg(sweep)
                        .query_async(&mut conn),
                )
                .await;
            if let Err(error) = published {
                tracing::debug!(%error, "sweep not announced");
            }
        }
    }

    /// Something was appended for `source` that its connection here was not handed: it reads
    /// its mailbox.
    pub(super) fn recheck(&self, source: &str) {
        if let Some(local) = self.locals().get_mut(source) {
            local.inbox.forget();
            local.doorbell.ring(Signal::Mail);
        }
    }

    pub(super) fn sweep(&self) {
        for local in self.locals().values_mut() {
            local.inbox.forget();
            local.doorbell.ring(Signal::Mail);
        }
        self.reread_logs();
    }

    pub(super) fn receive(self: &Arc<Self>, payload: &[u8]) {
        let Some(note) = Note::decode(payload) else {
            tracing::warn!(node = self.node_id, "unreadable note");
            return;
        };
        match note {
            Note::Frames { entries, frame } => {
                let frame = Utf8Bytes::from(frame);
                for (source_hex, position) in entries {
                    if let Some(source) = unhex(&source_hex) {
                        self.cache(&source, position, frame.clone());
                    }
                }
            }
            Note::Sweep => self.sweep(),
            Note::Logged {
                room,
                pos,
                exclude,
                frame,
            } => {
                let Some(room) = unhex(&room) else { return };
                self.logged(
                    &room,
                    pos,
                    unhex(&exclude).filter(|x| !x.is_empty()),
                    frame.into(),
                );
            }
            Note::RoomGoesOn { room } => {
                if let Some(room) = unhex(&room) {
                    self.room_goes_on(&room);
                }
            }
            Note::Rooms { source } => {
                let Some(source) = unhex(&source) else { return };
                let engine = Arc::clone(self);
                tokio::spawn(async move { engine.reattach(&source).await });
            }
            Note::Check { sources } => {
                for source in sources.iter().filter_map(|source| unhex(source)) {
                    self.recheck(&source);
                }
            }
            Note::Replaced {
                source,
                epoch,
                superseded,
            } => {
                let Some(source) = unhex(&source) else { return };
                if let Some(local) = self.locals().get(&source) {
                    if local.epoch < epoch {
                        local.doorbell.ring(if superseded {
                            Signal::Superseded
                        } else {
                            Signal::Replaced
                        });
                    }
                }
            }
            Note::Overflowed { source } => {
                let Some(source) = unhex(&source) else { return };
                if let Some(local) = self.locals().get(&source) {
                    local.doorbell.ring(Signal::Overflowed);
                }
            }
            Note::Response {
                source,
                kind,
                re,
                result,
            } => self.requests.resolve(&source, &kind, re, result),
        }
    }
}
