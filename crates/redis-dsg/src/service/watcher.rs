//! Noticing pushes by any client. The generator's fenced push rings the
//! doorbell itself ([`crate::redis::scripts::FENCED_PUSH`]), but a message
//! pushed by another producer (the original go-redis-dsg, `redis-cli`, an
//! operator's `errors requeue`) rings nothing. One instance, the holder of
//! the chores claim ([`crate::service::chores`]), reads the queue's length
//! on a RESP3 connection with `CLIENT TRACKING` on: Redis then sends it an
//! invalidation when anyone writes the queue, and it reads again and rings
//! the bell when the queue holds messages, in one script
//! ([`crate::redis::scripts::RING_IF_QUEUED`]). One connection for the
//! fleet, one round trip per change of the queue, nothing while it is
//! unchanged. Without it (no claim holder for a moment, a server that
//! refuses tracking) idle consumers still find messages at their fallback
//! poll.

use std::time::{Duration, Instant};

use fred::prelude::*;
use tokio_util::sync::CancellationToken;

use crate::redis::scripts;
use crate::redis::{Keys, Operation, Redis, RedisError};
use crate::service::backoff::Backoff;
use crate::service::chores::{Chores, until_holding};
use crate::service::health::Health;

/// A read now and then even without an invalidation: a reconnect the
/// watcher missed leaves tracking off on the new connection.
const SAFETY_READ: Duration = Duration::from_secs(30);

/// Looks at the queue at most this often. A push into an idle fleet is
/// looked at at once (the previous look was long ago); under load, when
/// every push and fetch invalidates the key, the looks stay at 100 a
/// second, however fast the queue changes (consumers that are busy need no
/// bell, and a full fetch rings it itself).
const MIN_SPACING: Duration = Duration::from_millis(10);

/// The queue watcher of one instance.
#[derive(Debug)]
pub(super) struct Watcher {
    redis: Redis,
    keys: Keys,
    health: Health,
    chores: Chores,
}

impl Watcher {
    pub(super) fn new(redis: Redis, keys: Keys, health: Health, chores: Chores) -> Watcher {
        Watcher {
            redis,
            keys,
            health,
            chores,
        }
    }

    /// Watches while this instance holds the chores claim, until `stop`.
    pub(super) async fn run(self, stop: CancellationToken) {
        let mut holding = self.chores.holding();
        let mut backoff = Backoff::for_redis();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                held = until_holding(&mut holding) => if !held { return },
            }
            let client = match self.redis.dedicated(true, Duration::ZERO) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot build the queue watcher's connection; idle consumers rely on their fallback poll");
                    return;
                }
            };
            let outcome = self.watch(&client, &mut holding, &stop).await;
            let _ = tokio::time::timeout(Duration::from_secs(1), client.quit()).await;
            match outcome {
                Ok(()) => backoff.reset(),
                Err(e) => {
                    self.health.failed(Operation::Watch, &e);
                    if backoff.fail_and_wait(&e, &stop).await {
                        return;
                    }
                }
            }
        }
    }

    /// One tracking session: returns when the claim is lost or `stop`
    /// fires, or with the first error.
    async fn watch(
        &self,
        client: &Client,
        holding: &mut tokio::sync::watch::Receiver<bool>,
        stop: &CancellationToken,
    ) -> Result<(), RedisError> {
        // fred retries a refused connection (an ACL user without `+hello`,
        // which RESP3 needs) on its own; its last error says why.
        let mut errors = client.error_rx();
        let connecting = client.connect();
        let connected =
            tokio::time::timeout(self.redis.command_timeout(), client.wait_for_connect()).await;
        if !matches!(connected, Ok(Ok(()))) {
            connecting.abort();
            let mut last = None;
            while let Ok((e, _)) = errors.try_recv() {
                last = Some(e);
            }
            return Err(match last {
                Some(e) => RedisError::Unavailable(e),
                None => RedisError::Setup(
                    "the queue watcher could not connect within the command timeout".into(),
                ),
            });
        }
        let mut invalidations = client.invalidation_rx();
        let mut reconnects = client.reconnect_rx();
        client
            .start_tracking(Vec::<String>::new(), false, false, false, false)
            .await?;
        tracing::debug!("watching the queue for pushes by any client");
        let mut last_look = Instant::now()
            .checked_sub(MIN_SPACING)
            .unwrap_or_else(Instant::now);
        loop {
            tokio::time::sleep_until((last_look + MIN_SPACING).into()).await;
            last_look = Instant::now();
            // Reading the length (in the script) is what arms tracking of
            // the key again.
            let length = scripts::ring_if_queued(&self.redis, client, &self.keys).await?;
            tracing::trace!(length, "queue read by the watcher");
            self.health.succeeded(Operation::Watch);
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                changed = holding.changed() => {
                    if changed.is_err() || !*holding.borrow() { return Ok(()); }
                }
                i = invalidations.recv() => tracing::trace!(?i, "invalidation"),
                _ = reconnects.recv() => {
                    client
                        .start_tracking(Vec::<String>::new(), false, false, false, false)
                        .await?;
                }
                _ = tokio::time::sleep(SAFETY_READ) => {}
            }
        }
    }
}
