//! Redis-side evidence for fencing, read from `MONITOR`: every command a
//! client sends and every command a Lua script runs, in the order Redis
//! executed them.
//!
//! The audit follows the lease key's value (set by the acquire script,
//! deleted by release; an expiry is invisible, but after one a fenced push
//! finds no token and writes nothing, so it cannot hide a violation) and
//! attributes each `LPUSH` a fenced-push script performs to the token that
//! call carried. A push under a token other than the lease's current one is
//! a violation: a generator wrote after it lost its lease. The replicas'
//! own counters play no part.

use std::collections::HashMap;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use redis_dsg::redis::scripts::FENCED_PUSH;

/// What the audit found.
#[derive(Debug, Default, Clone)]
pub struct AuditReport {
    /// Fenced pushes Redis executed.
    pub accepted_pushes: u64,
    /// Fenced pushes that found another token (or none) and wrote nothing.
    pub rejected_pushes: u64,
    /// Fenced pushes that held the lease's token but found the queue at
    /// its backlog bound, and wrote nothing (the generator holds back).
    pub held_back_pushes: u64,
    /// Fenced pushes executed under a token that was not the lease's.
    pub violations: Vec<String>,
    /// Messages written by accepted fenced pushes, with how many times.
    pub generated: HashMap<Vec<u8>, u32>,
    /// Lease acquisitions: (Redis time in seconds, token).
    pub acquisitions: Vec<(f64, String)>,
    /// Lines that could not be parsed.
    pub unparsed_lines: u64,
}

/// Follows one queue's lease and fenced pushes.
#[derive(Debug)]
pub struct Audit {
    lease_key: Vec<u8>,
    queue_key: Vec<u8>,
    current: Option<Vec<u8>>,
    /// The fenced push being executed.
    pending: Option<Pending>,
    report: AuditReport,
}

impl Audit {
    /// An audit of `queue` guarded by `lease_key`.
    pub fn new(lease_key: &str, queue: &str) -> Audit {
        Audit {
            lease_key: lease_key.as_bytes().to_vec(),
            queue_key: queue.as_bytes().to_vec(),
            current: None,
            pending: None,
            report: AuditReport::default(),
        }
    }

    /// Sets the lease's value as read just before `MONITOR` started (after
    /// a reconnect, commands run while disconnected were not seen).
    pub fn resync(&mut self, token: Option<Vec<u8>>) {
        self.finish_pending();
        self.current = token;
    }

    /// Feeds one `MONITOR` line.
    pub fn feed(&mut self, line: &str) {
        let Some((time, source, args)) = parse_line(line) else {
            self.report.unparsed_lines += 1;
            return;
        };
        if source != "lua" {
            self.finish_pending();
            if is_fenced_push(&args) {
                // EVALSHA sha <numkeys> lease queue [bell] token messages…
                let token = std::str::from_utf8(args.get(2).map_or(&[][..], Vec::as_slice))
                    .ok()
                    .and_then(|n| n.parse::<usize>().ok())
                    .and_then(|keys| args.get(3 + keys));
                if let Some(token) = token {
                    self.pending = Some(Pending {
                        token: token.clone(),
                        pushed: false,
                        passed_fence: false,
                    });
                }
            }
            return;
        }
        let Some(cmd) = args.first().map(|c| c.to_ascii_uppercase()) else {
            return;
        };
        let key = args.get(1).map(Vec::as_slice);
        match (cmd.as_slice(), key) {
            (b"SET", Some(k)) if k == self.lease_key => {
                if let Some(token) = args.get(2) {
                    self.current = Some(token.clone());
                    self.report
                        .acquisitions
                        .push((time, String::from_utf8_lossy(token).into_owned()));
                }
            }
            (b"DEL", Some(k)) if k == self.lease_key => self.current = None,
            // The script measures the backlog only after the fence let
            // it through.
            (b"LLEN", Some(k)) if k == self.queue_key => {
                if let Some(p) = &mut self.pending {
                    p.passed_fence = true;
                }
            }
            (b"LPUSH", Some(k)) if k == self.queue_key => {
                if let Some(Pending { token, pushed, .. }) = &mut self.pending {
                    *pushed = true;
                    if self.current.as_ref() != Some(token) {
                        self.report.violations.push(format!(
                            "at {time:.6}: a push under token {:?} while the lease held {:?}",
                            String::from_utf8_lossy(token),
                            self.current.as_deref().map(String::from_utf8_lossy)
                        ));
                    }
                    for m in &args[2..] {
                        *self.report.generated.entry(m.clone()).or_default() += 1;
                    }
                }
            }
            _ => {}
        }
    }

    fn finish_pending(&mut self) {
        match self.pending.take() {
            Some(Pending { pushed: true, .. }) => self.report.accepted_pushes += 1,
            Some(Pending {
                passed_fence: true, ..
            }) => self.report.held_back_pushes += 1,
            Some(_) => self.report.rejected_pushes += 1,
            None => {}
        }
    }

    /// The findings so far.
    pub fn report(&mut self) -> AuditReport {
        self.finish_pending();
        self.report.clone()
    }
}

/// A fenced push in the audit's view: its token, whether it pushed, and
/// whether it got past the fence (it read the backlog).
#[derive(Debug)]
struct Pending {
    token: Vec<u8>,
    pushed: bool,
    passed_fence: bool,
}

/// The push script as sent to Redis 7 (with its flags) or to Redis 6
/// (without).
fn is_fenced_push(args: &[Vec<u8>]) -> bool {
    let s = &*FENCED_PUSH;
    match args.first().map(|c| c.to_ascii_uppercase()) {
        Some(c) if c == b"EVALSHA" => args.get(1).is_some_and(|sha| {
            [&s.sha1, &s.sha1_without_flags]
                .iter()
                .any(|known| sha.eq_ignore_ascii_case(known.as_bytes()))
        }),
        Some(c) if c == b"EVAL" => args
            .get(1)
            .is_some_and(|src| src == s.lua.as_bytes() || src == s.lua_without_flags.as_bytes()),
        _ => false,
    }
}

/// `1700000000.123456 [0 127.0.0.1:5555] "CMD" "arg"…` → time, source
/// (`lua` or the client address), arguments (unescaped).
pub(crate) fn parse_line(line: &str) -> Option<(f64, String, Vec<Vec<u8>>)> {
    let line = line.strip_prefix('+').unwrap_or(line);
    let (time, rest) = line.split_once(' ')?;
    let time: f64 = time.parse().ok()?;
    let rest = rest.strip_prefix('[')?;
    let (bracket, rest) = rest.split_once(']')?;
    let source = bracket.split_whitespace().nth(1)?.to_string();
    Some((time, source, parse_args(rest.trim_start())?))
}

/// Parses the `"…"` arguments as `sdscatrepr` writes them.
fn parse_args(s: &str) -> Option<Vec<Vec<u8>>> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b' ' {
            i += 1;
            continue;
        }
        if b[i] != b'"' {
            return None;
        }
        i += 1;
        let mut arg = Vec::new();
        loop {
            let c = *b.get(i)?;
            i += 1;
            match c {
                b'"' => break,
                b'\\' => {
                    let e = *b.get(i)?;
                    i += 1;
                    arg.push(match e {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'a' => 7,
                        b'b' => 8,
                        b'x' => {
                            let hex = std::str::from_utf8(b.get(i..i + 2)?).ok()?;
                            i += 2;
                            u8::from_str_radix(hex, 16).ok()?
                        }
                        other => other,
                    });
                }
                other => arg.push(other),
            }
        }
        out.push(arg);
    }
    Some(out)
}

/// Runs `MONITOR` against `127.0.0.1:port`, feeding `audit`, reconnecting
/// after Redis restarts, until `stop`.
pub async fn follow(
    port: u16,
    audit: std::sync::Arc<std::sync::Mutex<Audit>>,
    stop: CancellationToken,
) {
    loop {
        if stop.is_cancelled() {
            return;
        }
        let lease_key = audit
            .lock()
            .map(|a| a.lease_key.clone())
            .unwrap_or_default();
        // GET and MONITOR in one write run back to back: the lease's value
        // at the moment the stream starts, with nothing missed in between.
        let mut request = format!("*2\r\n$3\r\nGET\r\n${}\r\n", lease_key.len()).into_bytes();
        request.extend_from_slice(&lease_key);
        request.extend_from_slice(b"\r\nMONITOR\r\n");
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)).await
            && s.write_all(&request).await.is_ok()
        {
            let mut lines = BufReader::new(s).lines();
            let token = match lines.next_line().await {
                Ok(Some(head)) if head.starts_with("$-1") => Some(None),
                Ok(Some(head)) if head.starts_with('$') => match lines.next_line().await {
                    Ok(Some(value)) => Some(Some(value.into_bytes())),
                    _ => None,
                },
                _ => None,
            };
            // Redis still loading after a restart answers with an error;
            // try again shortly.
            let Some(token) = token else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            if let Ok(mut a) = audit.lock() {
                a.resync(token);
            }
            loop {
                let next = tokio::select! {
                    _ = stop.cancelled() => return,
                    l = lines.next_line() => l,
                };
                match next {
                    Ok(Some(line)) if line.starts_with("+OK") => {}
                    Ok(Some(line)) => {
                        if let Ok(mut a) = audit.lock() {
                            a.feed(&line);
                        }
                    }
                    _ => break,
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(t: &str, src: &str, args: &[&str]) -> String {
        let quoted: Vec<String> = args.iter().map(|a| format!("\"{a}\"")).collect();
        format!("+{t} [0 {src}] {}", quoted.join(" "))
    }

    #[test]
    fn parses_escaped_arguments() {
        let (t, src, args) =
            parse_line(r#"+1.5 [0 127.0.0.1:1] "SET" "a\"b" "\x00\n\\""#).expect("parsed");
        assert!((t - 1.5).abs() < 1e-9);
        assert_eq!(src, "127.0.0.1:1");
        assert_eq!(
            args,
            vec![b"SET".to_vec(), b"a\"b".to_vec(), b"\x00\n\\".to_vec()]
        );
    }

    #[test]
    fn a_push_under_a_stale_token_is_a_violation_and_a_refused_one_is_not() {
        let sha = FENCED_PUSH.sha1.as_str();
        let mut a = Audit::new("{q}:lease", "q");
        a.feed(&line(
            "1.0",
            "lua",
            &["SET", "{q}:lease", "A 1", "NX", "PX", "1000"],
        ));
        a.feed(&line(
            "1.1",
            "127.0.0.1:1",
            &["EVALSHA", sha, "2", "{q}:lease", "q", "A 1", "m1"],
        ));
        a.feed(&line("1.1", "lua", &["GET", "{q}:lease"]));
        a.feed(&line("1.1", "lua", &["LPUSH", "q", "m1"]));
        a.feed(&line(
            "2.0",
            "lua",
            &["SET", "{q}:lease", "B 2", "NX", "PX", "1000"],
        ));
        // A's push after B took over: refused (no LPUSH follows).
        a.feed(&line(
            "2.1",
            "127.0.0.1:1",
            &["EVALSHA", sha, "2", "{q}:lease", "q", "A 1", "m2"],
        ));
        a.feed(&line("2.1", "lua", &["GET", "{q}:lease"]));
        let r = a.report();
        assert_eq!((r.accepted_pushes, r.rejected_pushes), (1, 1));
        assert!(r.violations.is_empty());
        // B's push at the backlog bound: through the fence, held back.
        a.feed(&line(
            "2.15",
            "127.0.0.1:2",
            &["EVALSHA", sha, "2", "{q}:lease", "q", "B 2", "100", "m9"],
        ));
        a.feed(&line("2.15", "lua", &["GET", "{q}:lease"]));
        a.feed(&line("2.15", "lua", &["LLEN", "q"]));
        let r = a.report();
        assert_eq!(
            (r.accepted_pushes, r.rejected_pushes, r.held_back_pushes),
            (1, 1, 1)
        );
        // And one that did get through would be caught.
        a.feed(&line(
            "2.2",
            "127.0.0.1:1",
            &["EVALSHA", sha, "2", "{q}:lease", "q", "A 1", "m3"],
        ));
        a.feed(&line("2.2", "lua", &["LPUSH", "q", "m3"]));
        let r = a.report();
        assert_eq!(r.violations.len(), 1, "{:?}", r.violations);
        assert_eq!(r.generated.len(), 2);
        assert_eq!(r.acquisitions.len(), 2);
    }

    #[test]
    fn after_a_gap_the_lease_is_resynchronised() {
        let sha = FENCED_PUSH.sha1.as_str();
        let mut a = Audit::new("{q}:lease", "q");
        a.feed(&line(
            "1.0",
            "lua",
            &["SET", "{q}:lease", "A 1", "NX", "PX", "1000"],
        ));
        // Redis restarted; "B 2" was acquired while the monitor was away.
        a.resync(Some(b"B 2".to_vec()));
        a.feed(&line(
            "3.0",
            "127.0.0.1:1",
            &["EVALSHA", sha, "2", "{q}:lease", "q", "B 2", "m"],
        ));
        a.feed(&line("3.0", "lua", &["LPUSH", "q", "m"]));
        assert!(a.report().violations.is_empty());
    }
}
