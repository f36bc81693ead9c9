//! Release notices: a pub/sub subscription on which a releasing holder
//! announces the release, so standbys try to acquire at once instead of
//! waiting out the TTL.

use std::time::Duration;

use fred::prelude::*;
use tokio::sync::broadcast;

use crate::redis::{Keys, Redis};
use crate::service::backoff::Backoff;

/// Release notices from other instances (a pub/sub subscription that
/// survives reconnects). Missing one only delays takeover until the TTL
/// runs out.
#[derive(Debug)]
pub(crate) struct Notices {
    rx: Option<broadcast::Receiver<fred::types::Message>>,
    client: Option<fred::clients::SubscriberClient>,
}

impl Notices {
    /// Subscribes to the release channel. Without a connection the
    /// subscription is retried in the background; until then standbys rely
    /// on PTTL-timed wake-ups.
    pub(crate) fn subscribe(redis: &Redis, keys: &Keys) -> Notices {
        let client = match redis.subscriber() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot create a subscriber; release notices disabled");
                return Notices {
                    rx: None,
                    client: None,
                };
            }
        };
        let rx = client.message_rx();
        drop(client.connect());
        drop(client.manage_subscriptions());
        let c = client.clone();
        let channel = keys.release_channel();
        // fred resubscribes after reconnects only to channels whose first
        // subscription succeeded, so retry that one until it does.
        tokio::spawn(async move {
            let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
            loop {
                if c.wait_for_connect().await.is_ok() {
                    match c.subscribe(channel.clone()).await {
                        Ok(()) => return,
                        Err(e) => {
                            tracing::debug!(error = %e, "subscribing to release notices failed; retrying")
                        }
                    }
                }
                tokio::time::sleep(backoff.fail()).await;
            }
        });
        Notices {
            rx: Some(rx),
            client: Some(client),
        }
    }

    /// Resolves at the next release notice (never, without a subscription).
    pub(crate) async fn next(&mut self) {
        let Some(rx) = &mut self.rx else {
            return std::future::pending().await;
        };
        match rx.recv().await {
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
            Err(broadcast::error::RecvError::Closed) => {
                self.rx = None;
                std::future::pending::<()>().await
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
