//! Release notices: a pub/sub subscription on which a releasing holder
//! announces the release, so standbys try to acquire at once instead of
//! waiting out the TTL.
//!
//! A notice published while a standby is not subscribed is lost: before its
//! first subscription is confirmed, and between a lost connection and the
//! subscription made again on the new one. So the subscription is watched
//! (fred's connection events on the subscriber client) and made again after
//! every reconnection, retried until Redis confirms it; each confirmed
//! subscription wakes the standby, which looks at the lease once more (a
//! release during the gap is then seen); and while no subscription is
//! confirmed, a standby looks at the lease every retry period instead of
//! sleeping for the lease's TTL. Each subscription made again after a loss
//! counts in `dsg_lease_notice_resubscriptions_total`.

use std::time::Duration;

use fred::prelude::*;
use tokio::sync::{broadcast, watch};

use crate::redis::{Failure, Keys, Redis};
use crate::service::backoff::Backoff;
use crate::service::metrics::Metrics;

/// The subscription as last confirmed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Subscription {
    /// Confirmed subscriptions so far (the first, then one per loss).
    confirmed: u64,
    /// Whether the last confirmed one is still in place.
    active: bool,
}

/// Release notices from other instances. See the module docs.
#[derive(Debug)]
pub(crate) struct Notices {
    rx: Option<broadcast::Receiver<fred::types::Message>>,
    subscription: watch::Receiver<Subscription>,
    client: Option<fred::clients::SubscriberClient>,
}

impl Notices {
    /// Subscribes to the release channel in the background; until Redis
    /// confirms it, standbys look at the lease every retry period.
    pub(crate) fn subscribe(redis: &Redis, keys: &Keys, metrics: &Metrics) -> Notices {
        let (tx, subscription) = watch::channel(Subscription::default());
        let client = match redis.subscriber() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot create a subscriber; release notices disabled");
                return Notices {
                    rx: None,
                    subscription,
                    client: None,
                };
            }
        };
        let rx = client.message_rx();
        // Subscribed before connecting, so the first connection is seen.
        let connected = client.reconnect_rx();
        let errors = client.error_rx();
        drop(client.connect());
        tokio::spawn(keep_subscribed(
            client.clone(),
            keys.release_channel(),
            connected,
            errors,
            tx,
            metrics.clone(),
        ));
        Notices {
            rx: Some(rx),
            subscription,
            client: Some(client),
        }
    }

    /// Whether a subscription is confirmed now: if not, a notice may be
    /// missed and the caller should not wait long without looking.
    pub(crate) fn is_active(&self) -> bool {
        self.subscription.borrow().active
    }

    /// Resolves at the next release notice, and when the subscription is
    /// confirmed or lost (then the caller looks at the lease again).
    /// Never resolves without a subscriber.
    pub(crate) async fn next(&mut self) {
        let Some(rx) = &mut self.rx else {
            return std::future::pending().await;
        };
        tokio::select! {
            notice = rx.recv() => match notice {
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => {
                    self.rx = None;
                    std::future::pending::<()>().await
                }
            },
            changed = self.subscription.changed() => {
                if changed.is_err() {
                    // The watcher ended (the client quit): no more changes.
                    std::future::pending::<()>().await
                }
            }
        }
    }

    /// Closes the subscription.
    pub(crate) async fn close(self) {
        if let Some(c) = self.client {
            let _ = c.quit().await;
        }
    }
}

/// Subscribes after every (re)connection until Redis confirms it, and marks
/// the subscription lost on every connection error. Ends when the client
/// quits.
async fn keep_subscribed(
    client: fred::clients::SubscriberClient,
    channel: String,
    mut connected: broadcast::Receiver<fred::types::config::Server>,
    mut errors: broadcast::Receiver<(fred::error::Error, Option<fred::types::config::Server>)>,
    state: watch::Sender<Subscription>,
    metrics: Metrics,
) {
    use broadcast::error::RecvError;
    loop {
        tokio::select! {
            // Errors first: the failed attempts before a reconnection are
            // queued before its event, and must not count as losing the
            // subscription made after it.
            biased;
            e = errors.recv() => match e {
                Ok((e, _)) => lost(&state, &channel, &e),
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            },
            c = connected.recv() => match c {
                Ok(_) => {
                    if !subscribe_until_confirmed(&client, &channel, &mut errors).await {
                        continue;
                    }
                    let resubscribed = state.borrow().confirmed > 0;
                    state.send_modify(|s| {
                        s.confirmed += 1;
                        s.active = true;
                    });
                    if resubscribed {
                        metrics.record_notice_resubscription();
                        tracing::info!(channel = %channel, "subscribed to lease release notices again");
                    }
                }
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            },
        }
    }
}

/// `SUBSCRIBE`, retried with a growing pause while the connection holds.
/// Returns false when the connection failed meanwhile (the next
/// reconnection subscribes again).
async fn subscribe_until_confirmed(
    client: &fred::clients::SubscriberClient,
    channel: &str,
    errors: &mut broadcast::Receiver<(fred::error::Error, Option<fred::types::config::Server>)>,
) -> bool {
    let mut backoff = Backoff::new(
        Duration::from_millis(50),
        Duration::from_secs(2),
        Duration::from_secs(10),
    );
    loop {
        match client.subscribe(channel).await {
            Ok(()) => return true,
            Err(e) => {
                tracing::debug!(error = %e, "subscribing to lease release notices failed; retrying");
                let pause = backoff.fail_for(&e.into());
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    // A connection error: wait for the reconnection.
                    Ok(_) = errors.recv() => return false,
                }
            }
        }
    }
}

fn lost(state: &watch::Sender<Subscription>, channel: &str, error: &fred::error::Error) {
    if !state.borrow().active {
        return;
    }
    state.send_modify(|s| s.active = false);
    tracing::info!(
        channel = %channel,
        error = %Failure::of(error),
        "lost the subscription to lease release notices; standbys look at the lease every retry period until it is back"
    );
}
