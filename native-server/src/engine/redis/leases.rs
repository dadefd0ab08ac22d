//! Ownership over time: every connection's lease renewed every third of it, Redis probed every
//! second (readiness), presence kept.

use super::status::Renewal;
use super::*;

impl RedisEngine {
    /// Renews the lease of every connection of this relay, every third of it.
    pub(super) async fn renew_leases(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(LEASE / 3);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let claims: Vec<(String, u64)> = self
                .locals()
                .iter()
                .map(|(source, local)| (source.clone(), local.epoch))
                .collect();
            let lease = LEASE.as_millis().to_string();
            let grace = self.limits.session_grace.as_millis().to_string();
            let engine = &*self;
            let renewals = claims.iter().map(|(source, epoch)| {
                let keys = Keys::of(source);
                let (lease, grace) = (&lease, &grace);
                async move {
                    let renewed = engine
                        .eval(
                            &engine.scripts.renew,
                            &[&keys.meta, &keys.r#box, &keys.from],
                            &[
                                epoch.to_string().as_bytes(),
                                lease.as_bytes(),
                                grace.as_bytes(),
                            ],
                        )
                        .await;
                    (source, renewed)
                }
            });
            for (source, renewed) in join_all(renewals).await {
                match renewed.and_then(|value| Renewal::of(&value)) {
                    // Claimed by another connection, or the state is gone: the connection
                    // learns which at its next read of the mailbox.
                    Ok(Renewal::Stale) => self.recheck(source),
                    Ok(Renewal::Renewed) => self.present(source).await,
                    Ok(Renewal::Lapsed) => {
                        // Appends meanwhile were announced to nobody.
                        self.recheck(source);
                        self.present(source).await;
                    }
                    Err(error) => tracing::debug!(source, %error, "lease not renewed"),
                }
            }
        }
    }

    /// Pings Redis every [`PROBE`] through the shared connection, for the health flag
    /// ([`call`](Self::call) keeps it): readiness turns to 503 within about `PROBE` +
    /// `DEADLINE` of Redis going away, and back once it answers. A round trip a second is
    /// nothing beside what clients cost, and `GET /readyz` itself only reads the flag, so
    /// probing the endpoint never reaches Redis.
    pub(super) async fn probe(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(PROBE);
        // A ping that waited out its deadline is not followed by a burst of them.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let mut conn = self.conn.clone();
            let pong: Result<String, _> =
                self.call(redis::cmd("PING").query_async(&mut conn)).await;
            if let Err(error) = pong {
                tracing::trace!(node = self.node_id, %error, "Redis did not answer a ping");
            }
        }
    }

    /// Marks `source` online until its lease ends.
    pub(super) async fn present(&self, source: &str) {
        let mut conn = self.conn.clone();
        let until = now_ms() + LEASE.as_millis() as u64;
        let _: Result<i64, _> = self
            .call(
                redis::cmd("ZADD")
                    .arg("wsr:presence")
                    .arg(until)
                    .arg(source)
                    .query_async(&mut conn),
            )
            .await;
    }
}
