//! Who does the fleet's chores. Contract 9: a chore for the whole fleet is
//! done once for the fleet, never once per pod. One instance at a time
//! holds the claim `{q}:sampler` ([`crate::service::sampler`]); while it
//! does, it reads the gauges, reaps dead consumers
//! ([`crate::service::reaper`]) and watches the queue for pushes by other
//! clients ([`crate::service::watcher`]). The others do none of it, at no
//! cost to Redis: they learn that the claim is free from their own
//! heartbeat's reply and try to take it at once.

use std::sync::Arc;

use tokio::sync::{Notify, watch};

/// This instance's view of the chores claim, shared by the sampler (which
/// takes and renews it) and the chores that run only while it is held.
#[derive(Debug, Clone)]
pub(super) struct Chores {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    holding: watch::Sender<bool>,
    claim_free: Notify,
}

impl Chores {
    /// Not holding the claim.
    pub(super) fn new() -> Chores {
        Chores {
            inner: Arc::new(Inner {
                holding: watch::channel(false).0,
                claim_free: Notify::new(),
            }),
        }
    }

    /// The sampler took the claim, or lost it.
    pub(super) fn set_holding(&self, holding: bool) {
        self.inner.holding.send_if_modified(|h| {
            let changed = *h != holding;
            *h = holding;
            changed
        });
    }

    /// Whether this instance holds the claim, to wait on.
    pub(super) fn holding(&self) -> watch::Receiver<bool> {
        self.inner.holding.subscribe()
    }

    /// A heartbeat found the claim free: the sampler tries now rather than
    /// at its next standby retry.
    pub(super) fn claim_seen_free(&self) {
        self.inner.claim_free.notify_one();
    }

    /// Resolves when a heartbeat found the claim free.
    pub(super) async fn claim_freed(&self) {
        self.inner.claim_free.notified().await;
    }
}

/// Resolves once `holding` is true; `false` when its sender is gone.
pub(super) async fn until_holding(holding: &mut watch::Receiver<bool>) -> bool {
    holding.wait_for(|h| *h).await.is_ok()
}
