//! Test support for redis-dsg, shared by the integration tests
//! (`tests/it/`) and the development tools (`dsg-dev`): private
//! `redis-server`, Sentinel and Cluster launchers, the product binary as
//! child processes, a TCP fault proxy, the MONITOR-based fencing audit,
//! the chaos soak, a stand-in for the original go-redis-dsg and Redis' own
//! command counters ([`redis_info`]); and the one way the tests and tools
//! wait for a condition ([`wait`]) and summarise samples ([`stats`]).
//! Nothing here ships in the image.

pub mod chaos;
pub mod fencing_audit;
pub mod fleet;
pub mod http_client;
pub mod local_redis;
pub mod local_sentinel;
pub mod original;
pub mod process;
pub mod proxy;
pub mod redis_info;
pub mod replica;
pub mod stats;
pub mod wait;
