//! Every Lua script the service runs, each with a comment saying what it
//! guarantees. Key names are in [`super::keys`]. One file per owner:
//! `lease` (the generator), `consumer` (what a consumer holds) and `ack`
//! (its acknowledgements), `chores` (one replica for the fleet), `errors`
//! and `drain` (the `errors` command).
//!
//! # No destructive step before a fallible one (DESIGN.md, contract 10)
//!
//! Redis does not roll back a script that fails half-way: whatever it
//! removed before the error stays removed. So every script runs in three
//! phases:
//!
//! 1. **Check.** Read what it needs, and probe every key it will later
//!    remove from with a no-op form of that removal (`LTRIM k 0 -1`,
//!    `HDEL k ''`, `SREM k ''`, `ZREM k ''`, `ZADD k XX …`), so a key of
//!    the wrong type or a command the ACL user may not run fails here,
//!    before anything changed.
//! 2. **Write.** Then the writes. The first write is the one step that may
//!    still fail (`LPUSH`, `HSET`, `SET` have no no-op form); every later
//!    write repeats a command already run on the same key, so it cannot
//!    fail where the first one passed. A "done" record (a marker, a
//!    registration of a claim) is written after what it records, or is
//!    harmless when found without it.
//! 3. **Remove.** Removals come last, each probed in phase 1. Tidying that
//!    loses nothing when skipped (expiring markers, a heartbeat that
//!    expires anyway) runs through `redis.pcall` and its failure is
//!    ignored.
//!
//! Every command goes through `guard` ([`GUARD`]), which names the command
//! and the key in the error (Redis names neither). Every script is listed
//! in [`all`]; a unit test fails when a `pub static …: LazyLock<Script>` is
//! missing there, and the integration test `contract10_*` runs each one
//! against every key of the wrong type and without each command it runs
//! (register a new script in [`all`] and give it a case there).

mod ack;
mod chores;
mod consumer;
mod drain;
mod errors;
mod lease;
mod script;

pub use ack::{ACK_ERROR, ACK_OUTPUT, FORGET, PUSH_ONCE};
pub(crate) use ack::{ack_error, ack_output, forget, push_once};
pub use chores::{REAP_SCAN, RELEASE_CLAIM, RING_IF_QUEUED, SAMPLE};
pub(crate) use chores::{Sample, reap_scan, release_claim, ring_if_queued, sample};
pub use consumer::{
    ADOPT, FETCH, HEARTBEAT, INFLIGHT_MARKER_FIELD, INFLIGHT_MARKER_VALUE, RETURN_INFLIGHT,
};
pub(crate) use consumer::{Fetch, adopt, fetch, heartbeat, return_inflight};
pub use drain::{DRAIN_ACK, DRAIN_CLAIM, DRAIN_KEEP, DRAIN_RESTORE};
pub(crate) use drain::{drain_ack, drain_claim, drain_keep, drain_restore};
pub use errors::{CONFIRM_DRAINED, REQUEUE};
pub(crate) use errors::{confirm_drained, requeue};
pub use lease::{ACQUIRE_LEASE, ACQUIRE_ORIGINAL_LOCK, FENCED_PUSH, RELEASE_LEASE, RENEW_LEASE};
pub(crate) use lease::{
    Acquired, Pushed, Released, acquire_lease, acquire_original_lock, fenced_push, release_lease,
    renew,
};
pub use script::{GUARD, Memory, Script};

/// A script's `1`/`0` flag argument.
fn flag(on: bool) -> fred::types::Value {
    if on { "1" } else { "0" }.into()
}

/// Every script, for the tests that prove contract 10 for each and for the
/// ACL rule (which must grant every command they run). Add every new
/// script here.
pub fn all() -> Vec<&'static Script> {
    vec![
        &ACQUIRE_LEASE,
        &RENEW_LEASE,
        &ACQUIRE_ORIGINAL_LOCK,
        &RELEASE_LEASE,
        &FENCED_PUSH,
        &FETCH,
        &ADOPT,
        &ACK_OUTPUT,
        &ACK_ERROR,
        &RETURN_INFLIGHT,
        &HEARTBEAT,
        &REAP_SCAN,
        &RING_IF_QUEUED,
        &SAMPLE,
        &RELEASE_CLAIM,
        &CONFIRM_DRAINED,
        &REQUEUE,
        &PUSH_ONCE,
        &FORGET,
        &DRAIN_CLAIM,
        &DRAIN_ACK,
        &DRAIN_RESTORE,
        &DRAIN_KEEP,
    ]
}
