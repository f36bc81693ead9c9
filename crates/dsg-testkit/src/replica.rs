//! Child processes of this same binary running the service, for the demo,
//! the benchmark and the tests: started with a given environment, signalled
//! (SIGTERM, SIGKILL, SIGSTOP, SIGCONT), restarted, killed when dropped.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use redis_dsg::service::{Counts, InstanceStatus, Role};

use crate::http_client;

/// How long a replica may take to become ready in the tools and the
/// shared launchers (the integration tests' `TestEnv` waits 15 s).
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// How much of a log a failure message shows.
pub const LOG_TAIL_LINES: usize = 30;

/// One service process.
#[derive(Debug)]
pub struct Replica {
    exe: PathBuf,
    port: u16,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
}

impl Replica {
    /// Starts `exe run` with `env` (plus `MPORT=port`), in its own process
    /// group (so a terminal's Ctrl-C reaches only the parent, which stops
    /// its children in order), logging to `log`.
    pub fn start(
        exe: &Path,
        port: u16,
        env: &[(String, String)],
        log: &Path,
    ) -> std::io::Result<Replica> {
        let mut r = Replica {
            exe: exe.to_path_buf(),
            port,
            env: env.to_vec(),
            log: log.to_path_buf(),
            child: None,
        };
        r.spawn()?;
        Ok(r)
    }

    fn spawn(&mut self) -> std::io::Result<()> {
        use std::os::unix::process::CommandExt;
        let log = File::options().create(true).append(true).open(&self.log)?;
        let child = Command::new(&self.exe)
            .arg("run")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("MPORT", self.port.to_string())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()?;
        self.child = Some(child);
        Ok(())
    }

    /// Its HTTP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Its process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`).
    pub fn signal(&self, signal: i32) {
        if let Some(pid) = self.pid() {
            // SAFETY: kill has no memory preconditions; pid is our child's.
            unsafe {
                libc::kill(pid as i32, signal);
            }
        }
    }

    /// Its exit status, if it has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Waits up to `timeout` for it to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        crate::wait::poll_blocking(timeout, Duration::from_millis(10), || self.try_wait())
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        self.signal(libc::SIGCONT);
        self.signal(libc::SIGTERM);
        match self.wait_timeout(grace) {
            Some(s) => Some(s),
            None => {
                self.signal(libc::SIGKILL);
                self.wait_timeout(Duration::from_secs(5))
            }
        }
    }

    /// Starts it again (after it exited) with the same settings.
    pub fn restart(&mut self) -> std::io::Result<()> {
        if self.try_wait().is_none() {
            self.signal(libc::SIGKILL);
            let _ = self.wait_timeout(Duration::from_secs(5));
        }
        self.spawn()
    }

    /// Starts `n` replicas with the same `env` on free ports, logging to
    /// `<logs>/<prefix>-<i>.log` (`i` from 1), without waiting for them.
    pub fn start_many(
        exe: &Path,
        env: &[(String, String)],
        logs: &Path,
        prefix: &str,
        n: usize,
    ) -> Result<Vec<Replica>, String> {
        (1..=n)
            .map(|i| Replica::start_numbered(exe, env, logs, prefix, i))
            .collect()
    }

    /// Replica number `i` of [`Replica::start_many`].
    fn start_numbered(
        exe: &Path,
        env: &[(String, String)],
        logs: &Path,
        prefix: &str,
        i: usize,
    ) -> Result<Replica, String> {
        let log = logs.join(format!("{prefix}-{i}.log"));
        Replica::start(exe, crate::local_redis::free_port(), env, &log)
            .map_err(|e| format!("cannot start a replica: {e}"))
    }

    /// Starts `n` replicas like [`Replica::start_many`], one after another:
    /// each is ready (within [`READY_TIMEOUT`]) before the next starts.
    /// So the first holds the lease, and every standby listens for release
    /// notices, well before the last is up: a replica reports ready before
    /// its notice subscription is in place, and a standby that misses a
    /// release waits out the TTL (the failover bench measured ~TTL instead
    /// of a few ms for a SIGTERM right after a simultaneous start).
    pub async fn start_ready(
        exe: &Path,
        env: &[(String, String)],
        logs: &Path,
        prefix: &str,
        n: usize,
    ) -> Result<Vec<Replica>, String> {
        let mut replicas = Vec::with_capacity(n);
        for i in 1..=n {
            let mut r = Replica::start_numbered(exe, env, logs, prefix, i)?;
            r.ready_within(READY_TIMEOUT).await?;
            replicas.push(r);
        }
        Ok(replicas)
    }

    /// Waits until it is ready; the error names its log and shows the end.
    pub async fn ready_within(&mut self, timeout: Duration) -> Result<(), String> {
        if self.wait_ready(timeout).await {
            return Ok(());
        }
        Err(format!(
            "the replica logging to {} did not become ready within {timeout:?}:\n{}",
            self.log.display(),
            self.log_tail(LOG_TAIL_LINES)
        ))
    }

    /// The last `lines` lines of its log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Waits until `/readyz` answers 200 (or `timeout`); `false` at once
    /// when it has exited.
    pub async fn wait_ready(&mut self, timeout: Duration) -> bool {
        let ready = crate::wait::poll(timeout, Duration::from_millis(25), async || {
            if self.try_wait().is_some() {
                return Some(false);
            }
            self.answers_ready(Duration::from_secs(1))
                .await
                .then_some(true)
        })
        .await;
        ready == Some(true)
    }

    /// Whether `/readyz` answers 200 now.
    pub async fn is_ready(&self) -> bool {
        self.answers_ready(Duration::from_secs(2)).await
    }

    async fn answers_ready(&self, timeout: Duration) -> bool {
        matches!(
            http_client::get(self.port, "/readyz", timeout).await,
            Some((200, _))
        )
    }

    /// Its role now (`None` while it does not answer).
    pub async fn role(&self) -> Option<Role> {
        self.status().await.map(|s| s.role)
    }

    /// Whether it generates now.
    pub async fn is_generator(&self) -> bool {
        self.role().await == Some(Role::Generator)
    }

    /// Its `/status`, parsed.
    pub async fn status(&self) -> Option<InstanceStatus> {
        http_client::status(self.port).await
    }

    /// Its counters now (zero while it does not answer).
    pub async fn counters(&self) -> Counts {
        self.status().await.map(|s| s.counters).unwrap_or_default()
    }
}

/// How many replicas generate and how many are not ready, at one look.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Census {
    /// Replicas whose role is generator.
    pub generators: usize,
    /// Replicas whose `/readyz` does not answer 200.
    pub not_ready: usize,
    /// For each of those: its port and what `/readyz` said (or that it did
    /// not answer).
    pub not_ready_reasons: Vec<String>,
}

impl Census {
    /// Takes one look at every replica.
    pub async fn of(replicas: &[Replica]) -> Census {
        let mut census = Census::default();
        for r in replicas {
            if r.is_generator().await {
                census.generators += 1;
            }
        }
        for r in replicas {
            match http_client::get(r.port, "/readyz", Duration::from_secs(2)).await {
                Some((200, _)) => {}
                answer => {
                    census.not_ready += 1;
                    census.not_ready_reasons.push(match answer {
                        Some((code, body)) => format!("port {}: {code} {}", r.port, body.trim()),
                        None => format!("port {}: no answer", r.port),
                    });
                }
            }
        }
        census
    }

    /// Exactly one generator and every replica ready: a fleet at rest.
    pub fn is_settled(&self) -> bool {
        self.generators == 1 && self.not_ready == 0
    }
}

/// The indices of the replicas that generate now.
pub async fn generators(replicas: &[Replica]) -> Vec<usize> {
    let mut out = Vec::new();
    for (i, r) in replicas.iter().enumerate() {
        if r.is_generator().await {
            out.push(i);
        }
    }
    out
}

impl Drop for Replica {
    fn drop(&mut self) {
        // SIGKILL ends a stopped (SIGSTOP) process too.
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
