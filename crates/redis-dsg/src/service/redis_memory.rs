//! What Redis says of its memory (`INFO memory`): how full it is, against
//! its `maxmemory`, and whether it evicts (contract 12).
//!
//! Every replica reads it at start and every minute: an eviction policy
//! other than `noeviction` is named loudly (it destroys queued and
//! in-flight messages, leases and heartbeats), exported as
//! `dsg_redis_eviction_safe`, and with `redis.require_noeviction` makes
//! the replica unready. The generator also asks before its pushes, at most
//! once a second ([`RedisMemory::reading`]), to hold back below
//! `generator.max_redis_memory_ratio` of `maxmemory`. `INFO` needs no
//! `CONFIG` permission, so an ACL user of the product can read it.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::redis::{Operation, Redis, RedisError};
use crate::service::health::Health;
use crate::service::metrics::Metrics;

/// How often every replica reads the policy (and the gauges) again.
const READ_EVERY: Duration = Duration::from_secs(60);

/// How old a reading the generator's memory bound may use, at most.
const GENERATOR_READ_EVERY: Duration = Duration::from_secs(1);

/// Until the first reading succeeds, it is retried this often, so an
/// evicting policy is named within seconds of start.
const FIRST_READ_RETRY: Duration = Duration::from_secs(1);

/// The policy that never evicts: the only one under which Redis loses no
/// message of its own accord.
pub(super) const NOEVICTION: &str = "noeviction";

/// One reading of `INFO memory`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct MemoryReading {
    /// When it was read (it names the reading).
    pub read_at: Instant,
    /// `used_memory`, bytes.
    pub used_bytes: u64,
    /// `maxmemory`, bytes; 0 when none is set.
    pub max_bytes: u64,
    /// `maxmemory_policy`.
    pub policy: String,
}

impl MemoryReading {
    /// Reads the fields of an `INFO memory` reply; `None` when one is
    /// missing (a proxy or server that does not report them).
    pub(super) fn parse(info: &str) -> Option<MemoryReading> {
        let field = |name: &str| {
            info.lines().find_map(|line| {
                let (k, v) = line.trim_end_matches('\r').split_once(':')?;
                (k == name).then(|| v.trim().to_string())
            })
        };
        Some(MemoryReading {
            read_at: Instant::now(),
            used_bytes: field("used_memory")?.parse().ok()?,
            max_bytes: field("maxmemory")?.parse().ok()?,
            policy: field("maxmemory_policy")?,
        })
    }

    /// Whether Redis may evict keys (any policy but `noeviction`). Without
    /// a `maxmemory` no policy ever acts, but one may be set at any time
    /// (`CONFIG SET`), so the policy alone decides.
    pub(super) fn evicts(&self) -> bool {
        self.policy != NOEVICTION
    }

    /// Whether `used_memory` will be at or above `ratio` of `maxmemory`
    /// once `more` bytes were added since the reading (never when no
    /// `maxmemory` is set or `ratio` is 0).
    pub(super) fn at_or_above_after(&self, ratio: f64, more: u64) -> bool {
        ratio > 0.0
            && self.max_bytes > 0
            && self.used_bytes.saturating_add(more) as f64 >= ratio * self.max_bytes as f64
    }
}

/// What an eviction policy destroys, for the operator.
pub(super) fn what_it_destroys(policy: &str) -> &'static str {
    if policy.starts_with("allkeys-") {
        "it may evict any key at maxmemory: queued messages, the error list, in-flight messages \
         and the generator lease (lost messages, two generators)"
    } else if policy.starts_with("volatile-") {
        "it may evict keys with a TTL at maxmemory: the generator lease and consumer heartbeats \
         (elections churn, live consumers are reaped and their messages handed out twice)"
    } else {
        "it is not noeviction: Redis may drop keys of the queue, its in-flight messages or its lease"
    }
}

/// The memory monitor of this instance; cheap to clone.
#[derive(Debug, Clone)]
pub(super) struct RedisMemory {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    redis: Redis,
    /// A key of the queue's slot: on a Cluster, the node to ask.
    queue: String,
    metrics: Metrics,
    health: Health,
    require_noeviction: bool,
    last: Mutex<Option<(Instant, MemoryReading)>>,
    /// One reading at a time: the generator's writers share it.
    reading: tokio::sync::Mutex<()>,
    /// The policy last logged, so each change is logged once.
    logged_policy: Mutex<Option<String>>,
}

impl RedisMemory {
    /// The monitor of the Redis holding `queue`; readings are exported in
    /// `metrics` and, with `require_noeviction`, an evicting policy makes
    /// `health` unready.
    pub(super) fn new(
        redis: Redis,
        queue: String,
        metrics: Metrics,
        health: Health,
        require_noeviction: bool,
    ) -> RedisMemory {
        RedisMemory {
            inner: Arc::new(Inner {
                redis,
                queue,
                metrics,
                health,
                require_noeviction,
                last: Mutex::new(None),
                reading: tokio::sync::Mutex::new(()),
                logged_policy: Mutex::new(None),
            }),
        }
    }

    /// A reading at most `max_age` old: the last one, or a new one (one
    /// `INFO memory`; callers at once share it).
    pub(super) async fn reading(&self, max_age: Duration) -> Result<MemoryReading, RedisError> {
        if let Some(r) = self.fresh(max_age) {
            return Ok(r);
        }
        let _one_at_a_time = self.inner.reading.lock().await;
        if let Some(r) = self.fresh(max_age) {
            return Ok(r);
        }
        self.read().await
    }

    /// A reading for the generator's memory bound: at most a second old,
    /// or a minute while Redis has no `maxmemory` (then there is no bound
    /// to watch closely; one may be set at any time, so it is looked at
    /// again).
    pub(super) async fn reading_for_generator(&self) -> Result<MemoryReading, RedisError> {
        let unbounded = self.fresh(READ_EVERY).is_some_and(|r| r.max_bytes == 0);
        self.reading(if unbounded {
            READ_EVERY
        } else {
            GENERATOR_READ_EVERY
        })
        .await
    }

    fn fresh(&self, max_age: Duration) -> Option<MemoryReading> {
        let last = self
            .inner
            .last
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        last.as_ref()
            .filter(|(at, _)| at.elapsed() < max_age)
            .map(|(_, r)| r.clone())
    }

    async fn read(&self) -> Result<MemoryReading, RedisError> {
        let i = &self.inner;
        let outcome = i.redis.info_memory(&i.queue).await.and_then(|info| {
            MemoryReading::parse(&info).ok_or_else(|| RedisError::Reply {
                script: "INFO memory",
                detail: "used_memory, maxmemory or maxmemory_policy is missing".into(),
            })
        });
        match &outcome {
            Ok(r) => {
                i.health.succeeded(Operation::Memory);
                self.record(r);
            }
            Err(e) => i.health.failed(Operation::Memory, e),
        }
        outcome
    }

    /// Exports a reading and says what changed about the policy.
    fn record(&self, r: &MemoryReading) {
        let i = &self.inner;
        *i.last.lock().unwrap_or_else(PoisonError::into_inner) = Some((Instant::now(), r.clone()));
        i.metrics
            .record_redis_memory(r.used_bytes, r.max_bytes, !r.evicts());
        let refusal = (i.require_noeviction && r.evicts()).then(|| {
            format!(
                "Redis' maxmemory-policy is {}, not {NOEVICTION} (redis.require_noeviction): {}",
                r.policy,
                what_it_destroys(&r.policy)
            )
        });
        i.health.set_refusal(refusal);
        let mut logged = i
            .logged_policy
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if logged.as_deref() == Some(r.policy.as_str()) {
            return;
        }
        if r.evicts() {
            tracing::warn!(
                maxmemory_policy = %r.policy,
                maxmemory_bytes = r.max_bytes,
                "Redis evicts: maxmemory-policy is {}, not {NOEVICTION}; {}. Set `maxmemory-policy {NOEVICTION}` \
                 (README: A Redis that evicts){}",
                r.policy,
                what_it_destroys(&r.policy),
                if i.require_noeviction {
                    "; redis.require_noeviction is set: reporting unready"
                } else {
                    ""
                }
            );
        } else if logged.is_some() {
            tracing::info!("Redis' maxmemory-policy is {NOEVICTION} again");
        }
        *logged = Some(r.policy.clone());
    }

    /// Reads at start (again every second until it works), then every
    /// minute, until `stop`.
    pub(super) async fn run(self, stop: CancellationToken) {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = self.inner.redis.wait_connected() => {}
        }
        let mut read_once = false;
        loop {
            let pause = match self.reading(Duration::ZERO).await {
                Ok(_) => {
                    read_once = true;
                    READ_EVERY
                }
                Err(_) if !read_once => FIRST_READ_RETRY,
                Err(_) => READ_EVERY.min(Duration::from_secs(10)),
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "# Memory\r\nused_memory:1040928\r\nused_memory_human:1016.53K\r\n\
        maxmemory:25165824\r\nmaxmemory_human:24.00M\r\nmaxmemory_policy:allkeys-lru\r\n";

    #[test]
    fn contract12_info_memory_is_read() {
        let r = MemoryReading::parse(INFO).expect("parsed");
        assert_eq!(
            (r.used_bytes, r.max_bytes, r.policy.as_str()),
            (1_040_928, 25_165_824, "allkeys-lru")
        );
        assert!(r.evicts());
        assert!(MemoryReading::parse("# Memory\r\nused_memory:12\r\n").is_none());
    }

    #[test]
    fn contract12_the_memory_bound_holds_only_with_a_maxmemory() {
        let r = |used, max| MemoryReading {
            read_at: Instant::now(),
            used_bytes: used,
            max_bytes: max,
            policy: NOEVICTION.into(),
        };
        assert!(r(80, 100).at_or_above_after(0.8, 0));
        assert!(!r(79, 100).at_or_above_after(0.8, 0));
        assert!(
            r(79, 100).at_or_above_after(0.8, 1),
            "what was pushed since counts"
        );
        assert!(
            !r(1_000, 0).at_or_above_after(0.8, 0),
            "no maxmemory: no bound"
        );
        assert!(!r(100, 100).at_or_above_after(0.0, 0), "ratio 0: no bound");
        assert!(!r(1, 1).evicts());
    }

    #[test]
    fn contract12_each_evicting_policy_says_what_it_destroys() {
        assert!(what_it_destroys("allkeys-lru").contains("queued messages"));
        assert!(what_it_destroys("volatile-ttl").contains("heartbeats"));
        assert!(what_it_destroys("something-new").contains("not noeviction"));
    }
}
