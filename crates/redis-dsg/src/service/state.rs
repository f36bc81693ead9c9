//! What this instance is doing right now, shared between the role loop and
//! the HTTP handlers: role, lease holder and epoch, readiness flags.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::config::Mode;
use crate::service::status::OriginalLockView;

/// The role this instance plays at the moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Deciding: not yet connected, or waiting for the lease without
    /// consuming (`MODE=generator`).
    Standby,
    /// Taking messages from the queue.
    Consumer,
    /// Holding the lease and generating.
    Generator,
    /// Shutting down.
    Stopping,
}

impl Role {
    fn from_u8(v: u8) -> Role {
        match v {
            1 => Role::Consumer,
            2 => Role::Generator,
            3 => Role::Stopping,
            _ => Role::Standby,
        }
    }

    /// The lowercase name used in `/status` and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Standby => "standby",
            Role::Consumer => "consumer",
            Role::Generator => "generator",
            Role::Stopping => "stopping",
        }
    }
}

/// Shared, lock-light state of one instance.
#[derive(Debug)]
pub(super) struct InstanceState {
    /// This instance's id: consumer id and lease holder id.
    pub id: String,
    /// The configured mode.
    pub mode: Mode,
    started: Instant,
    role: AtomicU8,
    epoch: AtomicU64,
    holder: Mutex<Option<String>>,
    original_lock: Mutex<Option<OriginalLockView>>,
    role_loop_running: AtomicBool,
    stopping: AtomicBool,
}

impl InstanceState {
    /// A fresh state: standby, not ready.
    pub(super) fn new(id: String, mode: Mode) -> InstanceState {
        InstanceState {
            id,
            mode,
            started: Instant::now(),
            role: AtomicU8::new(0),
            epoch: AtomicU64::new(0),
            holder: Mutex::new(None),
            original_lock: Mutex::new(None),
            role_loop_running: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
        }
    }

    /// The current role.
    pub(super) fn role(&self) -> Role {
        Role::from_u8(self.role.load(Ordering::Acquire))
    }

    /// Changes the role (never away from `Stopping`).
    pub(super) fn set_role(&self, role: Role) {
        let v = role as u8;
        let _ = self
            .role
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |cur| {
                (Role::from_u8(cur) != Role::Stopping).then_some(v)
            });
    }

    /// The highest lease epoch this instance has held or seen.
    pub(super) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Relaxed)
    }

    /// The lease holder as last seen (`None` when nobody holds it).
    pub(super) fn holder(&self) -> Option<String> {
        self.holder_lock().clone()
    }

    /// Records who holds the lease, with which epoch.
    pub(super) fn set_holder(&self, holder: Option<String>, epoch: Option<u64>) {
        *self.holder_lock() = holder;
        // The highest ever seen: it is the floor for new epochs, which
        // keeps them increasing even if Redis lost its counter.
        if let Some(e) = epoch {
            self.epoch.fetch_max(e, Ordering::Relaxed);
        }
    }

    /// The holder's lock. Only whole values are stored under it, so a
    /// panic elsewhere cannot leave it half-written: a poisoned lock is used
    /// as it is (the same policy as every lock of the service).
    fn holder_lock(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.holder.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `lock:gen` as the contender last saw it (compatibility mode).
    pub(super) fn original_lock(&self) -> Option<OriginalLockView> {
        self.original_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Records `lock:gen` as just seen (whole values only, see
    /// [`InstanceState::holder_lock`]).
    pub(super) fn set_original_lock(&self, seen: Option<OriginalLockView>) {
        *self
            .original_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = seen;
    }

    /// Marks the role loop as running (connected, doing its work) or not.
    pub(super) fn set_role_loop_running(&self, running: bool) {
        self.role_loop_running.store(running, Ordering::Release);
    }

    /// Whether the role loop runs.
    pub(super) fn role_loop_running(&self) -> bool {
        self.role_loop_running.load(Ordering::Acquire)
    }

    /// Marks the start of shutdown: readiness turns false for good.
    pub(super) fn begin_stopping(&self) {
        self.stopping.store(true, Ordering::Release);
        self.role.store(Role::Stopping as u8, Ordering::Release);
    }

    /// Whether shutdown has begun.
    pub(super) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Seconds since start.
    pub(super) fn uptime_seconds(&self) -> u64 {
        self.started.elapsed().as_secs()
    }
}

/// A new instance id: the host name plus a random suffix, so a restarted
/// container (same host name) never reuses its predecessor's id and its
/// predecessor's messages are recovered rather than adopted.
pub(super) fn new_instance_id() -> String {
    let host = hostname();
    let suffix: u32 = rand::random();
    let clean: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .take(60)
        .collect();
    format!("{clean}-{suffix:08x}")
}

fn hostname() -> String {
    if let Ok(h) = std::env::var("HOSTNAME")
        && !h.is_empty()
    {
        return h;
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "redis-dsg".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_safe() {
        let a = new_instance_id();
        let b = new_instance_id();
        assert_ne!(a, b);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'),
            "{a}"
        );
    }

    #[test]
    fn stopping_is_final() {
        let s = InstanceState::new("x".into(), Mode::Auto);
        s.set_role(Role::Generator);
        assert_eq!(s.role(), Role::Generator);
        s.begin_stopping();
        s.set_role(Role::Consumer);
        assert_eq!(s.role(), Role::Stopping);
    }
}
