//! A throwaway Sentinel-managed Redis on loopback ports: one primary, one
//! replica and three sentinels, for the Sentinel failover test and
//! benchmark. Everything is killed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::local_redis::{LocalRedis, ensure_installed, find_on_path, free_port};
use crate::wait::poll_blocking;

/// The master name the sentinels monitor.
pub const MASTER_NAME: &str = "m";

/// One `redis-server --sentinel` process.
#[derive(Debug)]
pub struct LocalSentinel {
    child: Child,
    port: u16,
    dir: PathBuf,
    password: Option<String>,
    /// With TLS: the CA to trust when asking it.
    tls_ca: Option<PathBuf>,
}

/// Passwords of a topology: the data nodes' (`requirepass`, `masterauth`,
/// and the sentinels' `auth-pass`) and the sentinels' own `requirepass`.
#[derive(Debug, Clone)]
pub struct TopologyAuth {
    /// Password of the primary and the replica.
    pub data: String,
    /// Password of the sentinels.
    pub sentinel: String,
}

impl LocalSentinel {
    /// Starts a sentinel monitoring `127.0.0.1:primary_port` with quorum 2.
    /// `down_after_ms` is how long the primary must be silent before it is
    /// considered down: the floor of every failover. It listens on
    /// 127.0.0.1 and 127.0.0.2, and announces itself as 127.0.0.1, so a URL
    /// naming 127.0.0.2 is one clients cannot match with what sentinels
    /// report (as with a Kubernetes Service name). With `tls` (a directory
    /// from [`crate::local_redis::make_test_certificates`]) it speaks TLS
    /// only, to clients and to the nodes and other sentinels.
    pub fn start(
        primary_port: u16,
        down_after_ms: u64,
        auth: Option<&TopologyAuth>,
        tls: Option<&Path>,
    ) -> Result<LocalSentinel, String> {
        let binary = ensure_installed()?;
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("redis-dsg-sentinel-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        // Sentinel rewrites its configuration file, so each gets its own.
        let conf = dir.join("sentinel.conf");
        let auth_lines = auth.map_or(String::new(), |a| {
            format!(
                "requirepass {}\nsentinel auth-pass {MASTER_NAME} {}\n",
                a.sentinel, a.data
            )
        });
        let listen = match tls {
            // Port 0 closes the plain port; the announced port must then
            // be given, or it would be 0.
            Some(certs) => format!(
                "port 0\ntls-port {port}\n{}sentinel announce-port {port}\n",
                tls_config_lines(certs)
            ),
            None => format!("port {port}\n"),
        };
        std::fs::write(
            &conf,
            format!(
                "{listen}bind 127.0.0.1 127.0.0.2\nsentinel announce-ip 127.0.0.1\n\
                 dir {dir}\nlogfile {dir}/sentinel.log\n\
                 sentinel monitor {MASTER_NAME} 127.0.0.1 {primary_port} 2\n\
                 sentinel down-after-milliseconds {MASTER_NAME} {down_after_ms}\n\
                 sentinel failover-timeout {MASTER_NAME} 5000\n\
                 sentinel parallel-syncs {MASTER_NAME} 1\n{auth_lines}",
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
        let sentinel = LocalSentinel {
            child,
            port,
            dir,
            password: auth.map(|a| a.sentinel.clone()),
            tls_ca: tls.map(|d| d.join("ca.pem")),
        };
        poll_blocking(Duration::from_secs(10), Duration::from_millis(20), || {
            sentinel.ask(&["PING"]).contains("PONG").then_some(())
        })
        .ok_or_else(|| format!("sentinel on port {port} did not answer"))?;
        Ok(sentinel)
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The reply of a command, as `redis-cli` prints it (one value a line).
    pub fn ask(&self, args: &[&str]) -> String {
        ask(
            self.port,
            self.password.as_deref(),
            self.tls_ca.as_deref(),
            args,
        )
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
pub fn ask(port: u16, password: Option<&str>, tls_ca: Option<&Path>, args: &[&str]) -> String {
    let Some(cli) = find_on_path("redis-cli") else {
        return String::new();
    };
    let mut cmd = Command::new(cli);
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string()]);
    if let Some(ca) = tls_ca {
        cmd.arg("--tls").arg("--cacert").arg(ca);
    }
    if let Some(p) = password {
        // The environment keeps it out of the process list.
        cmd.env("REDISCLI_AUTH", p);
    }
    cmd.args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// The `redis.conf` lines that give a server the test certificates and
/// make its own links (replication, sentinel) use TLS too.
fn tls_config_lines(certs: &Path) -> String {
    format!(
        "tls-cert-file {d}/server.pem\ntls-key-file {d}/server.key\ntls-ca-cert-file {d}/ca.pem\n\
         tls-auth-clients no\ntls-replication yes\n",
        d = certs.display()
    )
}

/// One primary, one replica, three sentinels.
#[derive(Debug)]
pub struct SentinelTopology {
    /// The two data nodes; which one is primary changes with failovers.
    pub nodes: Vec<LocalRedis>,
    /// The three sentinels.
    pub sentinels: Vec<LocalSentinel>,
    auth: Option<TopologyAuth>,
    /// With TLS: the certificates, and each node's TLS port (the port the
    /// sentinels know it by; its plain port stays open for the set-up).
    tls: Option<PathBuf>,
    tls_ports: Vec<u16>,
}

impl SentinelTopology {
    /// Starts the topology and waits until every sentinel knows the other
    /// two and the replica (acting earlier makes failovers fail).
    pub fn start(down_after_ms: u64) -> Result<SentinelTopology, String> {
        Self::start_full(down_after_ms, None, None)
    }

    /// The same with passwords on the data nodes and the sentinels.
    pub fn start_with(
        down_after_ms: u64,
        auth: Option<TopologyAuth>,
    ) -> Result<SentinelTopology, String> {
        Self::start_full(down_after_ms, auth, None)
    }

    /// The same with TLS everywhere, with the certificates in `certs`
    /// (from [`crate::local_redis::make_test_certificates`]).
    pub fn start_with_tls(down_after_ms: u64, certs: &Path) -> Result<SentinelTopology, String> {
        Self::start_full(down_after_ms, None, Some(certs.to_path_buf()))
    }

    fn start_full(
        down_after_ms: u64,
        auth: Option<TopologyAuth>,
        tls: Option<PathBuf>,
    ) -> Result<SentinelTopology, String> {
        let tls_ports: Vec<u16> = match tls {
            Some(_) => vec![free_port(), free_port()],
            None => Vec::new(),
        };
        let mut topology = SentinelTopology {
            nodes: Vec::new(),
            sentinels: Vec::new(),
            auth,
            tls,
            tls_ports,
        };
        let primary = topology.start_node(0, None)?;
        topology.nodes.push(primary);
        let primary_port = topology.known_port(0);
        let replica = topology.start_node(1, Some(primary_port))?;
        topology.nodes.push(replica);
        for _ in 0..3 {
            let sentinel = LocalSentinel::start(
                primary_port,
                down_after_ms,
                topology.auth.as_ref(),
                topology.tls.as_deref(),
            )?;
            topology.sentinels.push(sentinel);
        }
        topology.wait_converged(Duration::from_secs(30))?;
        Ok(topology)
    }

    /// The extra `redis-server` arguments of node `i`: passwords, TLS, and
    /// the primary it replicates.
    fn node_args(&self, i: usize, replica_of: Option<u16>) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(port) = replica_of {
            args.extend(["--replicaof".into(), "127.0.0.1".into(), port.to_string()]);
        }
        if let Some(a) = &self.auth {
            args.extend([
                "--requirepass".into(),
                a.data.clone(),
                "--masterauth".into(),
                a.data.clone(),
            ]);
        }
        if let Some(certs) = &self.tls {
            args.extend(["--tls-port".into(), self.tls_ports[i].to_string()]);
            for line in tls_config_lines(certs).lines() {
                let (key, value) = line.split_once(' ').unwrap_or((line, ""));
                args.extend([format!("--{key}"), value.to_string()]);
            }
        }
        args
    }

    fn start_node(&self, i: usize, replica_of: Option<u16>) -> Result<LocalRedis, String> {
        let args = self.node_args(i, replica_of);
        LocalRedis::start_with(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// The port the sentinels (and clients) know node `i` by.
    fn known_port(&self, i: usize) -> u16 {
        self.tls_ports
            .get(i)
            .copied()
            .unwrap_or_else(|| self.nodes[i].port())
    }

    /// The index of the node the sentinels know by `port`.
    fn index_of(&self, port: u16) -> Option<usize> {
        (0..self.nodes.len()).find(|i| self.known_port(*i) == port)
    }

    /// `redis-sentinel://` URL naming all three sentinels (by 127.0.0.1,
    /// as they announce themselves).
    pub fn url(&self) -> String {
        self.url_via("127.0.0.1")
    }

    /// `redis-sentinel://` URL naming the three sentinels by `host`
    /// (127.0.0.1 or 127.0.0.2).
    pub fn url_via(&self, host: &str) -> String {
        let scheme = if self.tls.is_some() {
            "rediss-sentinel"
        } else {
            "redis-sentinel"
        };
        let mut url = format!(
            "{scheme}://{host}:{}?sentinelServiceName={MASTER_NAME}",
            self.sentinels[0].port
        );
        for s in &self.sentinels[1..] {
            url.push_str(&format!("&node={host}:{}", s.port));
        }
        url
    }

    /// The data nodes' password, if any.
    pub fn data_password(&self) -> Option<&str> {
        self.auth.as_ref().map(|a| a.data.as_str())
    }

    /// The primary's port as the first sentinel names it.
    pub fn primary_port(&self) -> Option<u16> {
        self.sentinels[0].primary_port()
    }

    /// Waits until every sentinel sees the other two, names the same
    /// primary, and lists the other node as a healthy replica whose link to
    /// the primary is up.
    pub fn wait_converged(&self, timeout: Duration) -> Result<(), String> {
        poll_blocking(timeout, Duration::from_millis(100), || {
            self.converged().then_some(())
        })
        .ok_or_else(|| {
            format!(
                "the sentinels did not converge within {timeout:?}; sentinel 1 says: {}",
                self.sentinels[0].ask(&["SENTINEL", "replicas", MASTER_NAME])
            )
        })
    }

    fn converged(&self) -> bool {
        let Some(primary) = self.primary_port() else {
            return false;
        };
        let Some(i) = (0..self.nodes.len()).find(|i| self.known_port(*i) != primary) else {
            return false;
        };
        let replica = self.known_port(i);
        let link_up = ask(
            self.nodes[i].port(),
            self.data_password(),
            None,
            &["INFO", "replication"],
        )
        .contains("master_link_status:up");
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

    /// The data node the sentinels know by `port`.
    pub fn node_mut(&mut self, port: u16) -> Option<&mut LocalRedis> {
        let i = self.index_of(port)?;
        self.nodes.get_mut(i)
    }

    /// Restarts the crashed node known by `port` as a replica of the
    /// primary known by `primary_port`, with the topology's passwords and
    /// TLS.
    pub fn restart_as_replica(&mut self, port: u16, primary_port: u16) -> Result<(), String> {
        let i = self
            .index_of(port)
            .ok_or_else(|| format!("no node on port {port}"))?;
        let args = self.node_args(i, Some(primary_port));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.nodes[i].restart_with(&args)
    }
}

/// Waits until the replica has everything the primary behind `redis` has
/// written so far: a write of our own, then `WAIT 1` on the same
/// connection (since Redis 7, `WAIT` only waits for the calling
/// connection's own writes, so a `WAIT` alone returns at once).
pub async fn wait_replicated(
    redis: &redis_dsg::redis::Redis,
    probe_key: &str,
) -> Result<(), String> {
    use fred::prelude::*;
    let client = redis.client();
    for _ in 0..5 {
        let _: i64 = client.incr(probe_key).await.map_err(|e| e.to_string())?;
        let acked: i64 = client
            .custom(
                fred::types::CustomCommand::new_static("WAIT", None, false),
                vec!["1", "2000"],
            )
            .await
            .map_err(|e| e.to_string())?;
        if acked >= 1 {
            return Ok(());
        }
    }
    Err("the replica did not acknowledge the primary's writes".into())
}
