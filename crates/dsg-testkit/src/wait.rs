//! Waiting for a condition by polling: the one way the tests and the tools
//! wait for something that has no notification (a replica's role, a list's
//! length, Sentinel's choice of primary, a server answering `PING`).

use std::time::{Duration, Instant};

/// How often [`eventually`] probes.
pub const POLL_EVERY: Duration = Duration::from_millis(20);

/// Probes `probe` every `every` until it yields a value or `timeout` has
/// passed; the value, or `None` on timeout. It probes at least once, and
/// once more after the deadline, so a slow probe still gets its last look.
pub async fn poll<T>(
    timeout: Duration,
    every: Duration,
    mut probe: impl AsyncFnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return Some(value);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(every).await;
    }
}

/// [`poll`], with an error naming `what` did not happen on timeout.
pub async fn within<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    probe: impl AsyncFnMut() -> Option<T>,
) -> Result<T, String> {
    poll(timeout, every, probe)
        .await
        .ok_or_else(|| format!("{what} did not happen within {timeout:?}"))
}

/// [`poll`] for synchronous code (launchers that block their thread while
/// a server starts): the same rule, sleeping the thread between probes.
pub fn poll_blocking<T>(
    timeout: Duration,
    every: Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(every);
    }
}

/// Probes `cond` every [`POLL_EVERY`] until it holds or `timeout` has
/// passed; whether it held.
pub async fn eventually(timeout: Duration, mut cond: impl AsyncFnMut() -> bool) -> bool {
    poll(timeout, POLL_EVERY, async || cond().await.then_some(()))
        .await
        .is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn polls_until_the_probe_yields_and_gives_up_after_the_timeout() {
        let mut calls = 0;
        let found = poll(
            Duration::from_secs(5),
            Duration::from_millis(1),
            async || {
                calls += 1;
                (calls == 3).then_some(calls)
            },
        )
        .await;
        assert_eq!(found, Some(3));
        let never = eventually(Duration::from_millis(30), async || false).await;
        assert!(!never);
    }
}
