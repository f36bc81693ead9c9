//! A throwaway Sentinel-managed Redis on loopback ports: one primary, one
//! replica and three sentinels, for the Sentinel failover test and
//! benchmark. Everything is killed when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::local_redis::{LocalRedis, ensure_installed, find_on_path, free_port};

/// The master name the sentinels monitor.
pub const MASTER_NAME: &str = "m";

/// One `redis-server --sentinel` process.
#[derive(Debug)]
pub struct LocalSentinel {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl LocalSentinel {
    /// Starts a sentinel monitoring `127.0.0.1:primary_port` with quorum 2.
    /// `down_after_ms` is how long the primary must be silent before it is
    /// considered down: the floor of every failover.
    pub fn start(primary_port: u16, down_after_ms: u64) -> Result<LocalSentinel, String> {
        let binary = ensure_installed()?;
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("redis-dsg-sentinel-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        // Sentinel rewrites its configuration file, so each gets its own.
        let conf = dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {dir}\nlogfile {dir}/sentinel.log\n\
                 sentinel monitor {MASTER_NAME} 127.0.0.1 {primary_port} 2\n\
                 sentinel down-after-milliseconds {MASTER_NAME} {down_after_ms}\n\
                 sentinel failover-timeout {MASTER_NAME} 5000\n\
                 sentinel parallel-syncs {MASTER_NAME} 1\n",
                dir = dir.display()
            ),
        )
        .map_err(|e| format!("cannot write {}: {e}", conf.display()))?;
        let child = Command::new(binary)
            .arg(&conf)
            .arg("--sentinel")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start a sentinel: {e}"))?;
        let sentinel = LocalSentinel { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !crate::local_redis::ping(port) {
            if Instant::now() > deadline {
                return Err(format!("sentinel on port {port} did not answer"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(sentinel)
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The reply of a command, as `redis-cli` prints it (one value a line).
    pub fn ask(&self, args: &[&str]) -> String {
        ask(self.port, args)
    }

    /// The port of the primary this sentinel currently names.
    pub fn primary_port(&self) -> Option<u16> {
        self.ask(&["SENTINEL", "get-master-addr-by-name", MASTER_NAME])
            .lines()
            .nth(1)
            .and_then(|p| p.trim().parse().ok())
    }
}

impl Drop for LocalSentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A command's reply from the server on `port`, through `redis-cli`
/// (installed with `redis-server`); empty when it cannot be asked.
pub fn ask(port: u16, args: &[&str]) -> String {
    let Some(cli) = find_on_path("redis-cli") else {
        return String::new();
    };
    Command::new(cli)
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// One primary, one replica, three sentinels.
#[derive(Debug)]
pub struct SentinelTopology {
    /// The two data nodes; which one is primary changes with failovers.
    pub nodes: Vec<LocalRedis>,
    /// The three sentinels.
    pub sentinels: Vec<LocalSentinel>,
}

impl SentinelTopology {
    /// Starts the topology and waits until every sentinel knows the other
    /// two and the replica (acting earlier makes failovers fail).
    pub fn start(down_after_ms: u64) -> Result<SentinelTopology, String> {
        let primary = LocalRedis::start()?;
        let replica =
            LocalRedis::start_with(&["--replicaof", "127.0.0.1", &primary.port().to_string()])?;
        let sentinels = (0..3)
            .map(|_| LocalSentinel::start(primary.port(), down_after_ms))
            .collect::<Result<Vec<_>, _>>()?;
        let topology = SentinelTopology {
            nodes: vec![primary, replica],
            sentinels,
        };
        topology.wait_converged(Duration::from_secs(30))?;
        Ok(topology)
    }

    /// `redis-sentinel://` URL naming all three sentinels.
    pub fn url(&self) -> String {
        let mut url = format!(
            "redis-sentinel://127.0.0.1:{}?sentinelServiceName={MASTER_NAME}",
            self.sentinels[0].port
        );
        for s in &self.sentinels[1..] {
            url.push_str(&format!("&node=127.0.0.1:{}", s.port));
        }
        url
    }

    /// The primary's port as the first sentinel names it.
    pub fn primary_port(&self) -> Option<u16> {
        self.sentinels[0].primary_port()
    }

    /// Waits until every sentinel sees the other two, names the same
    /// primary, and lists the other node as a healthy replica whose link to
    /// the primary is up.
    pub fn wait_converged(&self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.converged() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the sentinels did not converge within {timeout:?}; sentinel 1 says: {}",
                    self.sentinels[0].ask(&["SENTINEL", "replicas", MASTER_NAME])
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn converged(&self) -> bool {
        let Some(primary) = self.primary_port() else {
            return false;
        };
        let Some(replica) = self
            .nodes
            .iter()
            .map(LocalRedis::port)
            .find(|p| *p != primary)
        else {
            return false;
        };
        let link_up = ask(replica, &["INFO", "replication"]).contains("master_link_status:up");
        link_up
            && self.sentinels.iter().all(|s| {
                let replicas = s.ask(&["SENTINEL", "replicas", MASTER_NAME]);
                s.primary_port() == Some(primary)
                    && s.ask(&["SENTINEL", "sentinels", MASTER_NAME])
                        .matches("127.0.0.1")
                        .count()
                        >= 2
                    && replicas.contains(&replica.to_string())
                    && !replicas.contains("s_down")
                    && !replicas.contains("disconnected")
            })
    }

    /// The data node listening on `port`.
    pub fn node_mut(&mut self, port: u16) -> Option<&mut LocalRedis> {
        self.nodes.iter_mut().find(|n| n.port() == port)
    }
}
