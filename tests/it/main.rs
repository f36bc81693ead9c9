//! Integration tests: real redis-server processes on free ports and the
//! real binary. Each test names the DESIGN.md contract it proves.

mod chaos;
mod cli;
mod election;
mod faults;
mod helpers;
mod runtime;
mod topologies;
