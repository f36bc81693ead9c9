//! Integration tests: real redis-server processes on free ports and the
//! real binary. Each test names the DESIGN.md contract it proves.

// The helpers are shared by the test modules of this one crate.
#![allow(unreachable_pub)]

mod acl_ablation;
mod chaos;
mod cli;
mod contract10;
mod drain;
mod election;
mod failures;
mod faults;
mod fleet_cost;
mod helpers;
mod http_limits;
mod legacy_entries;
mod memory;
mod migration;
mod observability;
mod rollback;
mod runtime;
mod secrets;
mod topologies;
