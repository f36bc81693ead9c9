//! The lease's value and a held lease.
//!
//! The lease key holds a [`LeaseToken`], `<holder id> <epoch>`: the holder's
//! unique instance id and the fencing epoch of its acquisition. Every
//! fenced write carries it and Redis compares it whole, so fencing never
//! rests on the epoch alone.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// The value of the lease key: who holds the lease, with which epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseToken {
    /// The holder's instance id (host name and a random suffix; no spaces).
    pub holder: String,
    /// The fencing epoch of this acquisition.
    pub epoch: u64,
}

impl LeaseToken {
    /// Parses `<holder id> <epoch>`; `None` for any other value (a key set
    /// by hand, or by another program).
    pub fn parse(value: &str) -> Option<LeaseToken> {
        let (holder, epoch) = value.rsplit_once(' ')?;
        let epoch = epoch.parse().ok()?;
        (!holder.is_empty()).then(|| LeaseToken {
            holder: holder.to_string(),
            epoch,
        })
    }
}

impl fmt::Display for LeaseToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.holder, self.epoch)
    }
}

/// A lease this instance holds.
#[derive(Debug, Clone)]
pub(crate) struct Lease {
    /// The fencing epoch (the token's).
    pub epoch: u64,
    /// The token as the lease key holds it, sent with every fenced write.
    wire: String,
    pub(super) valid_until: Arc<ValidUntil>,
    lost: CancellationToken,
}

impl Lease {
    pub(super) fn new(token: LeaseToken, valid_until: Instant) -> Lease {
        Lease {
            epoch: token.epoch,
            wire: token.to_string(),
            valid_until: Arc::new(ValidUntil::new(valid_until)),
            lost: CancellationToken::new(),
        }
    }

    /// The lease key's value: `<holder id> <epoch>`.
    pub(crate) fn wire(&self) -> &str {
        &self.wire
    }

    /// Whether the holder may still write: before its renew deadline and
    /// not marked lost.
    pub(crate) fn is_valid(&self) -> bool {
        !self.lost.is_cancelled() && Instant::now() < self.valid_until.get()
    }

    /// The moment the holder must stop writing unless renewed.
    pub(crate) fn valid_until(&self) -> Instant {
        self.valid_until.get()
    }

    /// Marks the lease lost (a fenced write was refused).
    pub(crate) fn mark_lost(&self) {
        self.lost.cancel();
    }

    /// Resolves when the lease is marked lost.
    pub(crate) async fn lost(&self) {
        self.lost.cancelled().await
    }
}

/// An `Instant` that can be moved forward from another task.
#[derive(Debug)]
pub(super) struct ValidUntil {
    base: Instant,
    nanos: AtomicU64,
}

impl ValidUntil {
    fn new(at: Instant) -> ValidUntil {
        // A base in the past, so that any deadline can be stored exactly.
        let now = Instant::now();
        let base = now.checked_sub(Duration::from_secs(3600)).unwrap_or(now);
        let v = ValidUntil {
            base,
            nanos: AtomicU64::new(0),
        };
        v.set(at);
        v
    }

    fn get(&self) -> Instant {
        self.base + Duration::from_nanos(self.nanos.load(Ordering::Acquire))
    }

    pub(super) fn set(&self, at: Instant) {
        let nanos = at.saturating_duration_since(self.base).as_nanos();
        self.nanos
            .store(u64::try_from(nanos).unwrap_or(u64::MAX), Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_refuse_other_values() {
        let t = LeaseToken::parse("pod-1-abc 42").expect("a token");
        assert_eq!(t.holder, "pod-1-abc");
        assert_eq!(t.epoch, 42);
        assert_eq!(t.to_string(), "pod-1-abc 42");
        assert_eq!(LeaseToken::parse("weird"), None);
        assert_eq!(LeaseToken::parse("a b"), None);
        assert_eq!(LeaseToken::parse(" 7"), None);
    }

    #[test]
    fn lease_validity_follows_the_deadline_and_loss() {
        let token = LeaseToken::parse("x 1").expect("a token");
        let l = Lease::new(token, Instant::now() + Duration::from_secs(5));
        assert!(l.is_valid());
        l.valid_until.set(Instant::now() - Duration::from_millis(1));
        assert!(!l.is_valid());
        l.valid_until.set(Instant::now() + Duration::from_secs(5));
        assert!(l.is_valid());
        l.mark_lost();
        assert!(!l.is_valid());
    }
}
