//! The generator role: writes `<uuid> <timestamp>` messages to the queue
//! while this instance holds the lease.
//!
//! Every write goes through [`FencedWriter`], the one write path, which asks
//! Redis to push only while the lease still holds this holder's token. At
//! `interval_ms = 0` it writes batches, several in flight at once, optionally
//! paced to a target rate by time: one push per window of 100–250 ms carries the
//! window's messages ([`Timetable`]). It holds back while the queue or
//! Redis' memory is at its bound ([`hold_back`]).

mod hold_back;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use fred::bytes::Bytes;
use tokio_util::sync::CancellationToken;

use crate::config::GeneratorConfig;
use crate::redis::Keys;
use crate::redis::scripts::{self, Pushed};
use crate::redis::{Cause, Operation};
use crate::redis::{Redis, RedisError};
use crate::service::backoff::Backoff;
use crate::service::health::Health;
use crate::service::lease::Lease;
use crate::service::message::MessageWriter;
use crate::service::metrics::{HoldBack, Metrics};
use crate::service::redis_memory::RedisMemory;
use hold_back::HeldBack;

/// The single write path of the generator.
#[derive(Debug, Clone)]
pub(super) struct FencedWriter {
    redis: Redis,
    keys: Keys,
}

impl FencedWriter {
    /// A writer to `keys.queue`, fenced by `keys.lease()`.
    pub(super) fn new(redis: Redis, keys: Keys) -> FencedWriter {
        FencedWriter { redis, keys }
    }

    /// Pushes `messages` (in order, with LPUSH) if `lease` is still ours
    /// and the queue holds fewer than `max_backlog` (0: no bound).
    pub(super) async fn push(
        &self,
        lease: &Lease,
        max_backlog: u64,
        messages: Vec<Bytes>,
    ) -> Result<Pushed, RedisError> {
        scripts::fenced_push(&self.redis, &self.keys, lease.wire(), max_backlog, messages).await
    }
}

/// How a generator run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum GeneratorEnd {
    /// Asked to stop.
    Stopped,
    /// The lease's renew deadline passed or a write was fenced off.
    LeaseLost,
}

/// The generator loop.
#[derive(Debug, Clone)]
pub(super) struct Generator {
    writer: FencedWriter,
    cfg: GeneratorConfig,
    metrics: Metrics,
    health: Health,
    /// Asked before pushes, at most once a second, whether Redis is near
    /// its `maxmemory`.
    memory: RedisMemory,
    held_back: Arc<HeldBack>,
    /// How the queue grew since the memory reading it last used: at
    /// interval 0 it fills 24 MiB in well under the second a reading may be
    /// old, so it adds that growth to the reading.
    since_reading: Arc<Mutex<SinceReading>>,
}

/// The queue's growth since the reading taken at `read_at`, from the
/// lengths the fenced pushes return (no extra round trip). Its net growth,
/// not what was pushed: consumers keeping up leave the queue short, and
/// counting every push made a generator at 470,000 msgs/s hold back at
/// 11 % of maxmemory.
#[derive(Debug, Default)]
struct SinceReading {
    read_at: Option<Instant>,
    /// The queue's length when the reading was taken, as the push before
    /// it (or, lacking one, the first after it) saw it.
    baseline: Option<u64>,
    /// The length the latest push returned.
    latest: Option<u64>,
    /// Redis bytes per queued message of the latest batch, about.
    bytes_per_message: u64,
}

impl SinceReading {
    /// A push of `n` messages costing `bytes` left the queue `len` long.
    fn pushed(&mut self, n: u64, bytes: u64, len: u64) {
        if self.baseline.is_none() {
            self.baseline = Some(len.saturating_sub(n));
        }
        self.latest = Some(len);
        self.bytes_per_message = bytes / n.max(1);
    }

    /// The reading taken at `read_at` is the one in use: growth counts
    /// from it.
    fn reading(&mut self, read_at: Instant) {
        if self.read_at != Some(read_at) {
            self.read_at = Some(read_at);
            self.baseline = self.latest;
        }
    }

    /// Bytes the queue grew by since the reading, about.
    fn growth_bytes(&self) -> u64 {
        match (self.baseline, self.latest) {
            (Some(from), Some(to)) => to.saturating_sub(from) * self.bytes_per_message,
            _ => 0,
        }
    }
}

/// What Redis stores per queued message beyond its bytes, about (a list
/// entry's header; 67.5 bytes per 64-byte message measured): counted high,
/// so the estimate errs towards holding back early, until the next reading.
const QUEUED_OVERHEAD_BYTES: u64 = 16;

impl Generator {
    /// A generator writing through `writer`; failed writes are reported to
    /// `health`.
    pub(super) fn new(
        writer: FencedWriter,
        cfg: GeneratorConfig,
        metrics: Metrics,
        health: Health,
        memory: RedisMemory,
    ) -> Generator {
        Generator {
            writer,
            health,
            cfg,
            held_back: Arc::new(HeldBack::new(metrics.clone())),
            metrics,
            memory,
            since_reading: Arc::default(),
        }
    }

    /// Generates until `stop` fires or `lease` is lost. When it returns, no
    /// write of this run is still in flight.
    pub(super) async fn run(&self, lease: &Lease, stop: &CancellationToken) -> GeneratorEnd {
        let end = if self.cfg.interval_ms == 0 {
            self.run_batched(lease, stop).await
        } else {
            self.run_ticking(lease, stop).await
        };
        self.held_back.stopped();
        end
    }

    /// While the generator holds back, writers take turns and each turn
    /// starts [`hold_back::RETRY`] later: the guard is this writer's turn
    /// (`None`: not held back, no wait). `None` from the outer option:
    /// stopped meanwhile.
    async fn wait_while_held_back(
        &self,
        halt: &CancellationToken,
    ) -> Option<Option<tokio::sync::MutexGuard<'_, ()>>> {
        if self.held_back.reason().is_none() {
            return Some(None);
        }
        let turn = tokio::select! {
            _ = halt.cancelled() => return None,
            t = self.held_back.turn() => t,
        };
        if self.held_back.reason().is_some() {
            tokio::select! {
                _ = halt.cancelled() => return None,
                _ = tokio::time::sleep(hold_back::RETRY) => {}
            }
        }
        Some(Some(turn))
    }

    async fn run_ticking(&self, lease: &Lease, stop: &CancellationToken) -> GeneratorEnd {
        let mut ticker = tokio::time::interval(Duration::from_millis(self.cfg.interval_ms));
        // After a slow write, carry on at the interval instead of bursting.
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut writer = MessageWriter::new();
        let mut backoff = Backoff::for_redis();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return GeneratorEnd::Stopped,
                _ = lease.lost() => return GeneratorEnd::LeaseLost,
                _ = ticker.tick() => {}
            }
            let Some(_turn) = self.wait_while_held_back(stop).await else {
                return GeneratorEnd::Stopped;
            };
            match self.write_batch(lease, &mut writer, 1).await {
                Ok(true) => backoff.reset(),
                Ok(false) => return GeneratorEnd::LeaseLost,
                Err(e) => {
                    if backoff.fail_and_wait(&e, stop).await {
                        return GeneratorEnd::Stopped;
                    }
                }
            }
        }
    }

    async fn run_batched(&self, lease: &Lease, stop: &CancellationToken) -> GeneratorEnd {
        let pacer =
            Timetable::new(self.cfg.rate, self.cfg.batch_size).map(|t| Arc::new(Pacer::new(t)));
        let unpaced_batch = self.cfg.batch_size;
        let mut tasks = tokio::task::JoinSet::new();
        // The workers share a token that the first to see the lease lost
        // cancels, so every worker stops.
        let halt = stop.child_token();
        let watcher = {
            let (lease, halt) = (lease.clone(), halt.clone());
            tokio::spawn(async move {
                tokio::select! {
                    _ = lease.lost() => halt.cancel(),
                    _ = halt.cancelled() => {}
                }
            })
        };
        for _ in 0..self.cfg.max_in_flight_batches {
            let this = self.clone();
            let lease = lease.clone();
            let halt = halt.clone();
            let pacer = pacer.clone();
            tasks.spawn(async move {
                let mut writer = MessageWriter::new();
                let mut backoff = Backoff::for_redis();
                loop {
                    if halt.is_cancelled() {
                        return GeneratorEnd::Stopped;
                    }
                    let Some(_turn) = this.wait_while_held_back(&halt).await else {
                        return GeneratorEnd::Stopped;
                    };
                    let batch = match &pacer {
                        Some(pacer) => {
                            let push = pacer.reserve();
                            if push.at > Instant::now() {
                                tokio::select! {
                                    _ = halt.cancelled() => return GeneratorEnd::Stopped,
                                    _ = tokio::time::sleep_until(push.at.into()) => {}
                                }
                            }
                            push.messages
                        }
                        None => unpaced_batch,
                    };
                    // Messages are made (and stamped) now, when they are
                    // pushed, not when their slot was reserved.
                    match this.write_batch(&lease, &mut writer, batch).await {
                        Ok(true) => backoff.reset(),
                        Ok(false) => {
                            halt.cancel();
                            return GeneratorEnd::LeaseLost;
                        }
                        Err(e) => {
                            if backoff.fail_and_wait(&e, &halt).await {
                                return GeneratorEnd::Stopped;
                            }
                        }
                    }
                }
            });
        }
        let mut end = GeneratorEnd::Stopped;
        while let Some(result) = tasks.join_next().await {
            if let Ok(GeneratorEnd::LeaseLost) = result {
                end = GeneratorEnd::LeaseLost;
            }
        }
        halt.cancel();
        let _ = watcher.await;
        if lease.is_valid() || stop.is_cancelled() {
            end
        } else {
            GeneratorEnd::LeaseLost
        }
    }

    /// Writes one batch of `n` new messages, unless the queue or Redis'
    /// memory is at its bound (then nothing is written and the generator
    /// holds back: `Ok(true)` all the same). `Ok(false)`: the lease is gone
    /// (locally expired or fenced off by Redis); `Err`: Redis failed
    /// (already reported to health).
    async fn write_batch(
        &self,
        lease: &Lease,
        writer: &mut MessageWriter,
        n: usize,
    ) -> Result<bool, RedisError> {
        if !lease.is_valid() {
            lease.mark_lost();
            return Ok(false);
        }
        if self.memory_is_full().await {
            return Ok(true);
        }
        let sent = Instant::now();
        let bound = match self.held_back.reason() {
            Some(HoldBack::Backlog) => hold_back::resume_below(self.cfg.max_backlog),
            _ => self.cfg.max_backlog,
        };
        let batch = writer.batch(n);
        let bytes: u64 = batch
            .iter()
            .map(|m| m.len() as u64 + QUEUED_OVERHEAD_BYTES)
            .sum();
        match self.writer.push(lease, bound, batch).await {
            Ok(Pushed::Written(len)) => {
                self.since_reading().pushed(n as u64, bytes, len);
                self.held_back.resume(sent);
                self.health.succeeded(Operation::Push);
                self.metrics.record_generated(n as u64);
                Ok(true)
            }
            Ok(Pushed::HeldBack) => {
                self.health.succeeded(Operation::Push);
                let bound = self.cfg.max_backlog;
                self.held_back.hold(HoldBack::Backlog, || {
                    format!("the queue holds {bound} messages or more (generator.max_backlog)")
                });
                Ok(true)
            }
            Ok(Pushed::Fenced) => {
                self.metrics.record_fenced_rejection();
                lease.mark_lost();
                tracing::warn!(
                    epoch = lease.epoch,
                    "write fenced off: the lease is no longer ours"
                );
                Ok(false)
            }
            // Redis refused the whole push for lack of memory (the push is
            // the one script that does not run at maxmemory): holding back
            // is what the memory bound would have done, had Redis been
            // filled by others or faster than a reading a second can see.
            Err(e) if e.failure().cause == Cause::OutOfMemory => {
                self.health.succeeded(Operation::Push);
                self.held_back.hold(HoldBack::Memory, || {
                    "Redis refused the push: it is at maxmemory (OOM)".to_string()
                });
                Ok(true)
            }
            Err(e) => {
                self.health.failed(Operation::Push, &e);
                Err(e)
            }
        }
    }

    fn since_reading(&self) -> std::sync::MutexGuard<'_, SinceReading> {
        // Held for a few instructions; a poisoned lock still holds whole
        // numbers (the service's policy for every lock).
        self.since_reading
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether Redis' `used_memory` is at `generator.max_redis_memory_ratio`
    /// of its `maxmemory` (then the generator holds back). Read at most
    /// once a second, and once a minute while Redis has no `maxmemory`. A
    /// reading that fails does not stop generating: Redis' own refusal at
    /// `maxmemory` still guards it.
    async fn memory_is_full(&self) -> bool {
        let mut ratio = self.cfg.max_redis_memory_ratio;
        if ratio <= 0.0 {
            return false;
        }
        if self.held_back.reason() == Some(HoldBack::Memory) {
            ratio *= hold_back::RESUME_BELOW;
        }
        let Ok(reading) = self.memory.reading_for_generator().await else {
            return false;
        };
        let grown = {
            let mut since = self.since_reading();
            since.reading(reading.read_at);
            since.growth_bytes()
        };
        if !reading.at_or_above_after(ratio, grown) {
            return false;
        }
        self.held_back.hold(HoldBack::Memory, || {
            format!(
                "Redis uses {} of its maxmemory {} bytes ({:.0} %; generator.max_redis_memory_ratio is {ratio})",
                reading.used_bytes,
                reading.max_bytes,
                100.0 * reading.used_bytes as f64 / reading.max_bytes as f64
            )
        });
        true
    }
}

/// How often a paced generator pushes, at most: one fenced push per window
/// carries the window's messages, so Redis pays one call for them and a
/// consumer fetches them as one batch (at 2,000 msgs/s, 200 per push rather
/// than 2).
const PACE_WINDOW: Duration = Duration::from_millis(100);

/// At low rates a window is longer, up to this, so that it carries about
/// [`WINDOW_MESSAGES`]: below ~500 msgs/s the per-push costs (the push, the
/// wake-up, the fetch, the watcher's look) outweighed the messages.
/// Messages are stamped when pushed, so their age does not grow with it.
const MAX_PACE_WINDOW: Duration = Duration::from_millis(250);

/// Messages a window aims to carry at low rates.
const WINDOW_MESSAGES: f64 = 50.0;

/// The window of a paced generator at `rate` (> 0) messages per second.
fn pace_window(rate: f64) -> Duration {
    Duration::from_secs_f64((WINDOW_MESSAGES / rate).min(MAX_PACE_WINDOW.as_secs_f64()))
        .max(PACE_WINDOW)
}

/// A paced generator's next push: when, and how many messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Push {
    at: Instant,
    messages: usize,
}

/// The timetable of a paced generator: slots of equal length from an anchor
/// instant, one push per slot. A slot is the window ([`pace_window`]), or an equal
/// fraction of it when a window's messages would exceed `batch_size` (then
/// several pushes per window, each at most `batch_size`).
///
/// With `r` messages per slot, the pushes up to and including slot `i` carry
/// `ceil(r × (i + 1))` messages in all (so the first push carries one even
/// at a rate below one per slot): fractions carry from slot to slot,
/// and slots are placed against the anchor, never after the previous push,
/// so the rate holds exactly over time (a late push does not delay the
/// ones after it). Slots that would carry no message (rates below one
/// message per slot) are skipped, not pushed empty.
#[derive(Debug, Clone)]
struct Timetable {
    /// [`pace_window`] of the rate.
    window: Duration,
    slot: Duration,
    /// Messages per slot, `r` (at most `batch_size`).
    per_slot: f64,
    /// Where slot 0 starts; set by the first reservation.
    anchor: Option<Instant>,
    /// The first slot not yet handed out.
    next_slot: u64,
}

impl Timetable {
    /// The timetable for `rate` messages per second in pushes of at most
    /// `batch_size`; `None` when `rate` is 0 (unpaced).
    fn new(rate: f64, batch_size: usize) -> Option<Timetable> {
        if rate <= 0.0 {
            return None;
        }
        let window = pace_window(rate);
        let per_window = rate * window.as_secs_f64();
        // Validation bounds the rate (10,000,000 msgs/s) and the batch (≥ 1),
        // so at most 1,000,000 slots per window: the cast cannot truncate.
        let slots_per_window = (per_window / batch_size.max(1) as f64).ceil().max(1.0) as u32;
        // Rounded down to whole nanoseconds, so a slot carries at most
        // `batch_size`; `per_slot` is computed from the rounded slot, so the
        // rate is still exact.
        let slot = window / slots_per_window;
        Some(Timetable {
            window,
            slot,
            per_slot: rate * slot.as_secs_f64(),
            anchor: None,
            next_slot: 0,
        })
    }

    /// Hands out the next push, given the time `now`.
    fn next(&mut self, now: Instant) -> Push {
        let mut anchor = *self.anchor.get_or_insert(now);
        let mut slot = self.first_busy_slot(self.next_slot);
        let mut at = self.start_of(anchor, slot, now);
        // More than a window behind (Redis slow or down, every worker
        // backing off): start a fresh timetable rather than burst the
        // backlog; a rate is a ceiling, not a debt.
        if at + self.window < now {
            anchor = now;
            self.anchor = Some(now);
            self.next_slot = 0;
            slot = self.first_busy_slot(0);
            at = self.start_of(anchor, slot, now);
        }
        let messages = self.due(slot + 1) - self.due(self.next_slot);
        self.next_slot = slot + 1;
        Push {
            at,
            // At most `batch_size` (or a little more from rounding) plus
            // whatever skipped slots carried, which is nothing.
            messages: messages as usize,
        }
    }

    /// Messages due in slots `0..slots`: `ceil(r × slots)`.
    fn due(&self, slots: u64) -> u64 {
        // Saturating float-to-int cast; exact for every count a run reaches.
        (self.per_slot * slots as f64).ceil() as u64
    }

    /// The first slot from `from` on that carries a message.
    fn first_busy_slot(&self, from: u64) -> u64 {
        let done = self.due(from);
        if self.due(from + 1) > done {
            return from;
        }
        // Below one message per slot: jump to where the next one falls due
        // (`r × (slot + 1) > done`), then correct the float's rounding by
        // stepping.
        let guess = (done as f64 / self.per_slot).floor() as u64;
        let mut slot = guess.saturating_sub(2).max(from);
        while self.due(slot + 1) <= done && slot < u64::MAX - 1 {
            slot += 1;
        }
        slot
    }

    /// When slot `slot` starts. A slot too far off to be represented (a
    /// rate below one message in centuries) is placed a year from `now`.
    fn start_of(&self, anchor: Instant, slot: u64, now: Instant) -> Instant {
        let nanos = self.slot.as_nanos().checked_mul(u128::from(slot));
        nanos
            .and_then(|n| {
                let secs = u64::try_from(n / 1_000_000_000).ok()?;
                // The remainder of a division by 10⁹ fits a u32.
                let offset = Duration::new(secs, (n % 1_000_000_000) as u32);
                anchor.checked_add(offset)
            })
            .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600))
    }
}

/// The timetable shared by the generator's writers, which take turns at it.
#[derive(Debug)]
struct Pacer(Mutex<Timetable>);

impl Pacer {
    fn new(timetable: Timetable) -> Pacer {
        Pacer(Mutex::new(timetable))
    }

    /// The next push for the calling writer.
    fn reserve(&self) -> Push {
        // Held for a few instructions, never across an await; a poisoned
        // lock still holds a whole timetable (the same policy as every lock
        // of the service).
        let mut timetable = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        timetable.next(Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract12_between_readings_the_generator_counts_the_queues_net_growth() {
        let (t0, t1) = (Instant::now(), Instant::now() + Duration::from_secs(1));
        let mut s = SinceReading::default();
        s.reading(t0);
        // A backlog of 1,000 before the first push: not growth.
        s.pushed(500, 40_000, 1_500);
        assert_eq!(s.growth_bytes(), 40_000);
        s.pushed(500, 40_000, 2_000);
        assert_eq!(s.growth_bytes(), 80_000, "nobody consumes: all of it");
        // Consumers keep up: the queue stays short, whatever was pushed.
        s.reading(t1);
        for _ in 0..100 {
            s.pushed(500, 40_000, 2_000);
        }
        assert_eq!(s.growth_bytes(), 0);
        // A reading already in use changes nothing.
        s.pushed(500, 40_000, 2_500);
        s.reading(t1);
        assert_eq!(s.growth_bytes(), 40_000);
    }

    /// The pushes of `timetable` for a writer that is always `late` for its
    /// slot, until `until` after the start: (offset from the start,
    /// messages).
    fn pushes(mut timetable: Timetable, late: Duration, until: Duration) -> Vec<(Duration, usize)> {
        let start = Instant::now();
        let mut now = start;
        let mut out = Vec::new();
        loop {
            let push = timetable.next(now);
            let at = push.at - start;
            if at >= until {
                return out;
            }
            out.push((at, push.messages));
            now = push.at + late;
        }
    }

    #[test]
    fn contract9_a_window_carries_about_50_messages_within_100_to_250_ms() {
        assert_eq!(pace_window(2_000.0), PACE_WINDOW);
        assert_eq!(pace_window(500.0), PACE_WINDOW);
        assert_eq!(pace_window(200.0), MAX_PACE_WINDOW);
        assert_eq!(pace_window(0.5), MAX_PACE_WINDOW);
        assert_eq!(pace_window(300.0).as_millis(), 166);
    }

    #[test]
    fn a_moderate_rate_is_one_push_per_window() {
        let t = Timetable::new(2_000.0, 500).expect("paced");
        let p = pushes(t, Duration::ZERO, Duration::from_millis(350));
        let ms: Vec<(u128, usize)> = p.iter().map(|(at, n)| (at.as_millis(), *n)).collect();
        assert_eq!(ms, vec![(0, 200), (100, 200), (200, 200), (300, 200)]);
        assert!(Timetable::new(0.0, 500).is_none(), "rate 0 is unpaced");
    }

    #[test]
    fn a_window_larger_than_the_batch_is_split_into_equal_slots() {
        // 1,200 messages per window, batches of at most 500: three pushes of
        // 400 per window, 33.3 ms apart.
        let t = Timetable::new(12_000.0, 500).expect("paced");
        // (The third slot ends a nanosecond short of the window.)
        let p = pushes(t, Duration::ZERO, Duration::from_millis(99));
        assert_eq!(p.len(), 3);
        assert!(p.iter().all(|(_, n)| *n == 400), "{p:?}");
        assert_eq!(p[1].0, Duration::from_nanos(33_333_333));
        // The highest accepted rate with the smallest batch still fits.
        let t = Timetable::new(10_000_000.0, 1).expect("paced");
        assert!(t.slot >= Duration::from_nanos(100));
        let p = pushes(t, Duration::ZERO, Duration::from_micros(10));
        assert!(p.iter().all(|(_, n)| *n == 1), "{p:?}");
    }

    #[test]
    fn a_low_rate_pushes_single_messages_at_its_own_pace_from_the_start() {
        let t = Timetable::new(0.5, 500).expect("paced");
        let p = pushes(t, Duration::ZERO, Duration::from_secs(7));
        let secs: Vec<(u64, usize)> = p.iter().map(|(at, n)| (at.as_secs(), *n)).collect();
        assert_eq!(secs, vec![(0, 1), (2, 1), (4, 1), (6, 1)]);
    }

    /// Over many windows, for writers on time and writers late by a good
    /// part of a window, the messages pushed by any instant are the rate
    /// times the time elapsed, to within one message: no drift, fractions
    /// carried.
    #[test]
    fn the_rate_holds_over_many_windows() {
        let cases = [
            (2_000.0, 500, Duration::from_secs(600)),
            (12_345.6, 500, Duration::from_secs(60)),
            (15.5, 500, Duration::from_secs(600)),
            (0.3, 500, Duration::from_secs(3_600)),
            (999_999.9, 1_000, Duration::from_secs(5)),
        ];
        for (rate, batch, span) in cases {
            for late in [Duration::ZERO, Duration::from_millis(60)] {
                let t = Timetable::new(rate, batch).expect("paced");
                let slot = t.slot;
                let p = pushes(t, late, span);
                let mut total = 0u64;
                for (at, n) in &p {
                    assert!(*n >= 1 && *n <= batch, "rate {rate}: a push of {n}");
                    total += *n as u64;
                    // Everything due up to the end of this push's slot.
                    let due = rate * (*at + slot).as_secs_f64();
                    assert!(
                        (total as f64 - due).abs() <= 1.0,
                        "rate {rate}, late {late:?}: {total} pushed by {at:?}, {due:.1} due"
                    );
                }
                let held = total as f64 / span.as_secs_f64();
                assert!(
                    (held - rate).abs() <= rate * 0.001 + 1.0 / span.as_secs_f64(),
                    "rate {rate}, late {late:?}: held {held}"
                );
            }
        }
    }

    #[test]
    fn falling_far_behind_starts_a_fresh_timetable_instead_of_a_burst() {
        let mut t = Timetable::new(2_000.0, 500).expect("paced");
        let start = Instant::now();
        assert_eq!(
            t.next(start),
            Push {
                at: start,
                messages: 200
            }
        );
        // Redis was down for a second: one window's worth now, not ten.
        let later = start + Duration::from_secs(1);
        assert_eq!(
            t.next(later),
            Push {
                at: later,
                messages: 200
            }
        );
        assert_eq!(t.next(later).at, later + PACE_WINDOW);
    }
}
