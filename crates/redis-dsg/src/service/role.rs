//! The role loop: decides what this instance does and switches between
//! roles without ever running two generator loops.
//!
//! - `MODE=consumer`: consume until stopped.
//! - `MODE=generator`: wait for the lease (standby), generate while holding
//!   it, wait again after losing it.
//! - `MODE=auto`: like `generator`, but consume while not holding the lease.
//!
//! The consumer lives for the whole process (one id, one heartbeat); taking
//! the lease only closes its gate, so it stops fetching and finishes what it
//! holds while the generator starts at once.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::redis::Keys;
use crate::redis::Operation;
use crate::redis::Redis;
use crate::service::chores::Chores;
use crate::service::consumer::Consumer;
use crate::service::generator::{FencedWriter, Generator, GeneratorEnd};
use crate::service::health::Health;
use crate::service::lease::original_lock::{self, OriginalLockKind};
use crate::service::lease::{HoldEnd, LOCK_GEN_TAKEN, Lease, LeaseClient, Notices};
use crate::service::metrics::{Metrics, Transition};
use crate::service::redis_memory::RedisMemory;
use crate::service::state::{InstanceState, Role};

/// Everything the role loop works with.
#[derive(Debug, Clone)]
pub(super) struct RoleContext {
    /// Redis connections.
    pub redis: Redis,
    /// Key names.
    pub keys: Keys,
    /// The configuration.
    pub config: Config,
    /// Metrics.
    pub metrics: Metrics,
    /// Shared state (role, holder, readiness).
    pub state: Arc<InstanceState>,
    /// Where Redis failures are reported.
    pub health: Health,
    /// The chores claim, which a consumer's heartbeat may find free.
    pub chores: Chores,
    /// What Redis says of its memory (the generator's memory bound).
    pub memory: RedisMemory,
}

/// Runs the roles until `stop` fires, then releases the lease, drains the
/// consumer, and returns.
pub(super) async fn run(ctx: RoleContext, stop: CancellationToken) {
    // Wait for Redis before doing anything: readiness stays false meanwhile.
    tokio::select! {
        _ = stop.cancelled() => return,
        r = ctx.redis.wait_connected() => {
            if let Err(e) = r {
                tracing::error!(error = %e, "cannot connect to Redis");
            }
        }
    }
    ctx.state.set_role_loop_running(true);
    let mode = ctx.config.mode;
    let id = ctx.state.id.clone();
    tracing::info!(id = %id, mode = mode.as_str(), "connected to Redis; role loop running");
    announce_original_lock(&ctx).await;

    let (gate_tx, gate_rx) = watch::channel(false);
    let consumer = mode.may_consume().then(|| {
        let consumer = Arc::new(Consumer::new(&ctx));
        let (drain, give_back) = budgets(&ctx.config);
        // The consumer stops with everything else, at the signal: it must
        // not take new messages while the lease is being released.
        tokio::spawn(consumer.run(gate_rx, stop.clone(), drain, give_back))
    });

    if mode.may_generate() {
        contend(&ctx, &gate_tx, &stop).await;
    } else {
        ctx.state.set_role(Role::Consumer);
        let _ = gate_tx.send(true);
        stop.cancelled().await;
    }

    let _ = gate_tx.send(false);
    if let Some(task) = consumer {
        let _ = task.await;
    }
    ctx.state.set_role_loop_running(false);
}

/// Says once, at start, how this instance stands to the election of the
/// original go-redis-dsg (`lock:gen`): in compatibility mode, that it
/// defers to it; otherwise, a warning when an original seems to generate
/// right now, since both would then generate.
async fn announce_original_lock(ctx: &RoleContext) {
    if ctx.config.compat.original_lock {
        tracing::info!(
            "compatibility mode: generating only while also holding lock:gen (go-redis-dsg's election key, global to database 0); turn it off once no go-redis-dsg process runs"
        );
        return;
    }
    if !ctx.config.mode.may_generate() {
        return;
    }
    match original_lock::read(&ctx.redis).await {
        Ok(Some(seen))
            if OriginalLockKind::of(&seen.value, &ctx.keys.lease(), None)
                .is_foreign_generator() =>
        {
            tracing::warn!(
                value = %seen.value,
                "lock:gen is held: an original go-redis-dsg may be generating too; enable compat.original_lock on every redis-dsg pod while both run (README: Migrating from go-redis-dsg)"
            );
        }
        Ok(_) => {}
        // An ACL rule from before lock:gen was in it: nothing to say.
        Err(e) => tracing::debug!(error = %e, "could not read lock:gen"),
    }
}

/// How the shutdown timeout is spent by the consumer: finishing in-flight
/// work, then returning the rest to the queue; what remains is a margin for
/// closing connections.
fn budgets(config: &Config) -> (Duration, Duration) {
    let total = config.shutdown.timeout();
    let reserve = Duration::from_secs(2).min(total / 4);
    (total - reserve, reserve / 2)
}

/// Contends for the lease, generating while holding it, until `stop`. Each
/// round has three phases: wait for the lease ([`LeaseClient::wait_for_lease`]),
/// generate while holding it ([`generate`]), then either release it at
/// shutdown ([`release_at_shutdown`]) or step down after losing it.
async fn contend(ctx: &RoleContext, gate: &watch::Sender<bool>, stop: &CancellationToken) {
    let lease_client = LeaseClient::new(
        ctx.redis.clone(),
        ctx.keys.clone(),
        ctx.state.id.clone(),
        ctx.config.lease.clone(),
        ctx.config.compat.original_lock,
        ctx.health.clone(),
    );
    let generator = Generator::new(
        FencedWriter::new(ctx.redis.clone(), ctx.keys.clone()),
        ctx.config.generator.clone(),
        ctx.metrics.clone(),
        ctx.health.clone(),
        ctx.memory.clone(),
    );
    let mut notices = Notices::subscribe(&ctx.redis, &ctx.keys, &ctx.metrics);
    let may_consume = ctx.config.mode.may_consume();
    // Until an attempt says someone else holds the lease, the instance is
    // deciding (standby) and does not consume.
    let on_waiting = || {
        if may_consume {
            ctx.state.set_role(Role::Consumer);
            let _ = gate.send(true);
        } else {
            ctx.state.set_role(Role::Standby);
        }
    };
    loop {
        ctx.state.set_role(Role::Standby);
        let Some(lease) = lease_client
            .wait_for_lease(&mut notices, &ctx.state, &ctx.metrics, stop, &on_waiting)
            .await
        else {
            break;
        };
        let _ = gate.send(false);
        ctx.health.stopped(Operation::Fetch);
        ctx.state.set_role(Role::Generator);
        ctx.metrics.record_generating(true);
        lease_client.announce_acquired(&lease, &ctx.state, &ctx.metrics);
        let ends = generate(ctx, &lease_client, &generator, &lease, stop).await;
        ctx.metrics.record_generating(false);
        // A write that failed just before the lease was lost says nothing
        // about this instance any more: it no longer writes.
        ctx.health.stopped(Operation::Push);
        if stop.is_cancelled() {
            release_at_shutdown(ctx, &lease_client, &lease).await;
            break;
        }
        let why = match ends {
            (HoldEnd::Lost(why), _) => why,
            (_, GeneratorEnd::LeaseLost) => "a fenced write was refused",
            _ => "stopped",
        };
        ctx.metrics.record_transition(Transition::Lost);
        tracing::warn!(
            epoch = lease.epoch,
            reason = why,
            "lost the generator lease; stepping down"
        );
        if why == LOCK_GEN_TAKEN {
            lease_client.give_back(&lease).await;
        }
        ctx.state.set_holder(None, None);
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), notices.close()).await;
}

/// Generates while holding `lease`: the holder renews, the generator
/// writes, and whichever ends first ends both.
async fn generate(
    ctx: &RoleContext,
    lease_client: &LeaseClient,
    generator: &Generator,
    lease: &Lease,
    stop: &CancellationToken,
) -> (HoldEnd, GeneratorEnd) {
    let run_stop = stop.child_token();
    tokio::join!(
        async {
            let end = lease_client.hold(lease, &run_stop).await;
            // Whatever ended holding ends generating too: no write can
            // pass any more (fenced), even one still waiting for Redis,
            // so the gauge says so now.
            lease.mark_lost();
            ctx.metrics.record_generating(false);
            ctx.state.set_role(Role::Standby);
            end
        },
        async {
            let end = generator.run(lease, &run_stop).await;
            if end == GeneratorEnd::LeaseLost {
                lease.mark_lost();
            }
            end
        },
    )
}

/// Releases the lease at shutdown, once the generator has no write in
/// flight any more, so a standby takes over at once. In compatibility mode
/// `lock:gen` is left to the successor, which overwrites it at once (or to
/// expire): deleting it would open a moment in which an original could
/// take it.
async fn release_at_shutdown(ctx: &RoleContext, lease_client: &LeaseClient, lease: &Lease) {
    let within = Duration::from_secs(2);
    let release = tokio::time::timeout(within, lease_client.release(lease));
    match release
        .await
        .unwrap_or(Err(crate::redis::RedisError::NoAnswer {
            what: "the lease release",
            within,
        })) {
        Ok(true) => {
            ctx.metrics.record_transition(Transition::Released);
            tracing::info!(epoch = lease.epoch, "released the generator lease");
        }
        Ok(false) => {
            ctx.metrics.record_transition(Transition::Lost);
            tracing::warn!(epoch = lease.epoch, "the lease was already gone at release");
        }
        Err(e) => {
            ctx.health.failed(Operation::Lease, &e);
            tracing::warn!(error = %e, "could not release the lease; it expires on its own");
        }
    }
    ctx.state.set_holder(None, None);
}
