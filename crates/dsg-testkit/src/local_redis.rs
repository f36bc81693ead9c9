//! A throwaway `redis-server` on a free loopback port, for the demo, the
//! benchmark and the tests. It keeps nothing on disk unless asked, and is
//! killed when dropped.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use crate::wait::poll_blocking;

/// A `redis-server` child process.
#[derive(Debug)]
pub struct LocalRedis {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    binary: PathBuf,
    extra_args: Vec<String>,
}

/// Finds `redis-server`; when missing, installs it with apt where that is
/// possible (root and apt-get present), else says exactly what to install.
pub fn ensure_installed() -> Result<PathBuf, String> {
    if let Some(p) = find_on_path("redis-server") {
        return Ok(p);
    }
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if root && find_on_path("apt-get").is_some() {
        eprintln!("redis-dsg: redis-server is missing; installing it with apt-get …");
        let ok = |args: &[&str]| {
            Command::new("apt-get")
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .stdout(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        };
        if ok(&["install", "-y", "-q", "redis-server"])
            || (ok(&["update", "-q"]) && ok(&["install", "-y", "-q", "redis-server"]))
        {
            // Debian starts a system service on install; we use our own.
            if let Some(p) = find_on_path("redis-server") {
                return Ok(p);
            }
        }
        return Err("installing redis-server with apt-get failed; install it yourself (apt-get install redis-server) or set REDIS_URL".into());
    }
    Err("redis-server is not installed. Install it (Debian/Ubuntu: sudo apt-get install redis-server; \
         Fedora: sudo dnf install redis; macOS: brew install redis) or point REDIS_URL at a running Redis."
        .into())
}

/// The full path of `name` on `PATH`.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    // Ports handed out by this process, with their Redis Cluster bus ports
    // (port + 10000): the OS may offer a port again once its probe socket is
    // closed, before the test that got it has bound it, and a cluster node
    // binds a second port nobody asked for.
    static TAKEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let bindable = |port: u16| TcpListener::bind(("127.0.0.1", port)).is_ok();
    for _ in 0..1000 {
        let Some(port) = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .ok()
            .filter(|p| *p <= 55_535)
        else {
            continue;
        };
        let mut taken = taken_ports(&TAKEN);
        let clash = [port, port + 10_000, port.saturating_sub(10_000)]
            .iter()
            .any(|p| taken.contains(p));
        if !clash && bindable(port + 10_000) {
            taken.insert(port);
            taken.insert(port + 10_000);
            return port;
        }
    }
    0
}

fn taken_ports(m: &Mutex<BTreeSet<u16>>) -> std::sync::MutexGuard<'_, BTreeSet<u16>> {
    // A set of numbers is never left half-changed: use it whatever panicked.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl LocalRedis {
    /// Starts a server without persistence on a free port.
    pub fn start() -> Result<LocalRedis, String> {
        Self::start_with(&[])
    }

    /// Starts a server with extra `redis-server` arguments (e.g.
    /// `["--appendonly", "yes"]`).
    pub fn start_with(extra_args: &[&str]) -> Result<LocalRedis, String> {
        let binary = ensure_installed()?;
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("redis-dsg-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let mut r = LocalRedis {
            child: None,
            port,
            dir,
            binary,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
        };
        r.spawn()?;
        Ok(r)
    }

    fn spawn(&mut self) -> Result<(), String> {
        let mut cmd = Command::new(&self.binary);
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(["--logfile", "redis.log"])
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.binary.display()))?;
        self.child = Some(child);
        self.wait_ready(Duration::from_secs(10))
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        poll_blocking(timeout, Duration::from_millis(20), || {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                return Some(Err(format!(
                    "redis-server exited at start ({status}); see {}",
                    self.dir.join("redis.log").display()
                )));
            }
            ping(self.port).then_some(Ok(()))
        })
        .unwrap_or_else(|| {
            Err(format!(
                "redis-server on port {} did not answer within {timeout:?}",
                self.port
            ))
        })
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`, as `REDIS_URL` takes it.
    pub fn url(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Its process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Its working directory (log file, persistence files).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Kills it with SIGKILL (a crash) and waits for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port with the same settings.
    pub fn restart(&mut self) -> Result<(), String> {
        self.kill();
        // The old socket may linger a moment.
        let mut failed = String::new();
        poll_blocking(Duration::from_secs(10), Duration::from_millis(100), || {
            self.spawn().map_err(|e| failed = e).ok()
        })
        .ok_or(failed)
    }

    /// Starts it again on the same port with other extra arguments (e.g.
    /// as a replica of the node promoted in its place).
    pub fn restart_with(&mut self, extra_args: &[&str]) -> Result<(), String> {
        self.extra_args = extra_args.iter().map(|s| s.to_string()).collect();
        self.restart()
    }
}

impl Drop for LocalRedis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A client of the Redis at `url` for setting up and inspecting it, not a
/// service connection: one connection attempt, commands timing out after
/// `command_timeout`.
pub async fn connect(
    url: &str,
    command_timeout: Duration,
) -> Result<redis_dsg::redis::Redis, String> {
    let mut config = redis_dsg::config::Config::default();
    config.redis.url = redis_dsg::config::RedisUrl::new(url);
    config.redis.command_timeout_ms =
        u64::try_from(command_timeout.as_millis()).unwrap_or(u64::MAX);
    redis_dsg::redis::Redis::connect_once(&config.redis)
        .await
        .map_err(|e| format!("cannot connect to {url}: {e}"))
}

/// Whether a Redis server on `port` answers `PING` (an authentication
/// error is an answer too).
pub fn ping(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 1];
    s.read_exact(&mut buf).is_ok() && (buf[0] == b'+' || buf[0] == b'-')
}

/// Test certificates, made with `openssl` in `dir`: a CA (`ca.pem`), an
/// unrelated CA (`other-ca.pem`), a server certificate for `redis.test`
/// only (`server.pem`/`server.key`: connecting to 127.0.0.1 needs the
/// server-name override) and a client certificate (`client.pem`/
/// `client.key`), both signed by the first CA.
pub fn make_test_certificates(dir: &Path) -> Result<(), String> {
    let openssl = |args: &[&str]| -> Result<(), String> {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .map_err(|e| format!("cannot run openssl: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    };
    let write = |file: &str, text: &str| {
        std::fs::write(dir.join(file), text).map_err(|e| format!("{file}: {e}"))
    };
    for (name, subject) in [("ca", "/CN=dsg test CA"), ("other-ca", "/CN=someone else")] {
        let (key, pem) = (format!("{name}.key"), format!("{name}.pem"));
        openssl(&[
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", subject,
            "-keyout", &key, "-out", &pem,
        ])?;
    }
    write("server.ext", "subjectAltName=DNS:redis.test\n")?;
    write("client.ext", "extendedKeyUsage=clientAuth\n")?;
    for name in ["server", "client"] {
        let (key, csr, pem, ext) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &key,
            "-out",
            &csr,
        ])?;
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &ext,
            "-out",
            &pem,
        ])?;
    }
    Ok(())
}
