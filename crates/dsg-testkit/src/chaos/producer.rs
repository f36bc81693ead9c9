//! The soak's external producer: numbered messages at a steady rate beside
//! the built-in generator, each number pushed exactly once whatever fails,
//! so the reconciliation knows exactly what must come out.

use std::sync::Arc;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fred::types::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use redis_dsg::redis::scripts::Memory;
use redis_dsg::redis::{Redis, Script, int};

/// Pushes message number N only once, however often a push is retried
/// after an error whose outcome is unknown.
///
/// KEYS: queue, set of numbers pushed. ARGV: N, message.
/// Returns 1 when pushed, 0 when N was pushed before.
static PRODUCE_ONCE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "produce_once",
        // A producer beside the generator: like it, refused at maxmemory.
        Memory::Refused,
        r#"
if redis.call('SADD', KEYS[2], ARGV[1]) == 1 then
  redis.call('LPUSH', KEYS[1], ARGV[2])
  return 1
end
return 0
"#,
    )
});

/// Numbered message `n`: well-formed, its number readable back.
pub fn numbered(n: u64) -> Vec<u8> {
    let ts = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    format!("00000000-0000-4000-8000-{n:012} {ts}").into_bytes()
}

/// The number of a [`numbered`] message.
pub fn number_of(payload: &[u8]) -> Option<u64> {
    std::str::from_utf8(payload)
        .ok()?
        .strip_prefix("00000000-0000-4000-8000-")?
        .get(..12)?
        .parse()
        .ok()
}

/// The producer while it runs.
pub(super) struct Producer {
    produced: Arc<AtomicU64>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Producer {
    /// Pushes numbered messages 0, 1, 2, … onto `queue`, `rate` a second,
    /// recording each number in the set `produced_set`; a failed push is
    /// retried until it succeeds (the script makes the retry harmless).
    pub(super) fn start(client: Redis, queue: &str, produced_set: &str, rate: u64) -> Producer {
        let produced = Arc::new(AtomicU64::new(0));
        let stop = CancellationToken::new();
        let keys = vec![queue.to_string(), produced_set.to_string()];
        let period = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
        let task = tokio::spawn({
            let (produced, stop) = (produced.clone(), stop.clone());
            async move {
                let mut tick = tokio::time::interval(period);
                let mut n = 0u64;
                while !stop.is_cancelled() {
                    tick.tick().await;
                    let args = vec![int(n), Value::Bytes(numbered(n).into())];
                    while client
                        .run::<i64>(&PRODUCE_ONCE, keys.clone(), args.clone())
                        .await
                        .is_err()
                    {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    n += 1;
                    produced.store(n, Ordering::Relaxed);
                }
            }
        });
        Producer {
            produced,
            stop,
            task,
        }
    }

    /// Stops it after the push under way; how many messages it pushed.
    pub(super) async fn stop(self) -> u64 {
        self.stop.cancel();
        let _ = self.task.await;
        self.produced.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_messages_are_well_formed_and_read_back() {
        let m = numbered(42);
        assert!(redis_dsg::service::message::parse(&m).is_ok());
        assert_eq!(number_of(&m), Some(42));
        assert_eq!(
            number_of(b"0f8fad5b-d9cb-469f-a165-70867728950e 2026-01-01T00:00:00Z"),
            None
        );
    }
}
