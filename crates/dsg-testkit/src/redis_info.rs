//! What a fleet costs Redis, read from Redis' own counters
//! (`INFO commandstats`): calls per command, typed, so a test can take the
//! difference over a window, assert on it and print it; and, from
//! `MONITOR`, which of those commands clients sent (round trips, each with
//! its system calls) and which scripts ran ([`Sent`]).

use std::collections::BTreeMap;
use std::fmt;

use std::time::Duration;

use fred::prelude::ClientLike;
use fred::types::InfoKind;
use redis_dsg::redis::Redis;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::fencing_audit::parse_line;

/// One command's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommandStat {
    /// Times it ran (commands run inside scripts count too).
    pub calls: u64,
    /// Redis' CPU time spent in it, microseconds.
    pub usec: u64,
}

/// `INFO commandstats`: command name (lower case, subcommands as
/// `config|resetstat`) → its counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandStats(pub BTreeMap<String, CommandStat>);

impl CommandStats {
    /// Reads the counters now. The `INFO` call itself is counted by Redis
    /// after it answers, so it shows in the next reading.
    pub async fn read(redis: &Redis) -> Result<CommandStats, String> {
        let text: String = redis
            .client()
            .info(Some(InfoKind::CommandStats))
            .await
            .map_err(|e| format!("INFO commandstats: {e}"))?;
        Ok(CommandStats::parse(&text))
    }

    /// Parses the `INFO commandstats` section, e.g.
    /// `cmdstat_evalsha:calls=3,usec=87,usec_per_call=29.00,…`.
    pub fn parse(info: &str) -> CommandStats {
        let mut stats = BTreeMap::new();
        for line in info.lines() {
            let Some((name, fields)) = line
                .trim()
                .strip_prefix("cmdstat_")
                .and_then(|l| l.split_once(':'))
            else {
                continue;
            };
            let mut stat = CommandStat::default();
            for field in fields.split(',') {
                match field.split_once('=') {
                    Some(("calls", v)) => stat.calls = v.parse().unwrap_or(0),
                    Some(("usec", v)) => stat.usec = v.parse().unwrap_or(0),
                    _ => {}
                }
            }
            stats.insert(name.to_string(), stat);
        }
        CommandStats(stats)
    }

    /// What happened between `earlier` and this reading (commands that did
    /// not run in between are left out).
    pub fn since(&self, earlier: &CommandStats) -> CommandStats {
        let mut delta = BTreeMap::new();
        for (name, now) in &self.0 {
            let before = earlier.0.get(name).copied().unwrap_or_default();
            let d = CommandStat {
                calls: now.calls.saturating_sub(before.calls),
                usec: now.usec.saturating_sub(before.usec),
            };
            if d.calls > 0 {
                delta.insert(name.clone(), d);
            }
        }
        CommandStats(delta)
    }

    /// These counters without the commands `names` and their subcommands
    /// (e.g. the observer's own `info`; `config` also drops
    /// `config|resetstat`).
    pub fn without(mut self, names: &[&str]) -> CommandStats {
        self.0.retain(|name, _| {
            let command = name.split('|').next().unwrap_or(name);
            !names.contains(&command)
        });
        self
    }

    /// Calls of `name` (0 if it never ran).
    pub fn calls(&self, name: &str) -> u64 {
        self.0.get(name).map_or(0, |s| s.calls)
    }

    /// Calls of every command together.
    pub fn total_calls(&self) -> u64 {
        self.0.values().map(|s| s.calls).sum()
    }

    /// Redis CPU time of every command together, microseconds.
    pub fn total_usec(&self) -> u64 {
        self.0.values().map(|s| s.usec).sum()
    }
}

/// A table, most called first, with a total line.
impl fmt::Display for CommandStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rows: Vec<(&String, &CommandStat)> = self.0.iter().collect();
        rows.sort_by(|a, b| b.1.calls.cmp(&a.1.calls).then(a.0.cmp(b.0)));
        writeln!(f, "{:<24} {:>10} {:>12}", "command", "calls", "usec")?;
        for (name, s) in rows {
            writeln!(f, "{name:<24} {:>10} {:>12}", s.calls, s.usec)?;
        }
        write!(
            f,
            "{:<24} {:>10} {:>12}",
            "total",
            self.total_calls(),
            self.total_usec()
        )
    }
}

/// Commands seen by `MONITOR` over a window: those clients sent, by
/// command and by client address, and how many scripts ran inside.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sent {
    /// Commands clients sent, by name (lower case).
    pub by_command: BTreeMap<String, u64>,
    /// Commands clients sent, by client address.
    pub by_client: BTreeMap<String, u64>,
    /// Commands run inside scripts.
    pub by_scripts: u64,
}

impl Sent {
    /// Follows `MONITOR` on the Redis at `127.0.0.1:port` for `window`,
    /// leaving out the commands of connections that sent one of
    /// `observers` (e.g. `info`, the test's own reads). `MONITOR` does not
    /// show administrative commands (`CONFIG`, …).
    pub async fn follow(port: u16, window: Duration, observers: &[&str]) -> Result<Sent, String> {
        let mut stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("MONITOR connection: {e}"))?;
        stream
            .write_all(b"MONITOR\r\n")
            .await
            .map_err(|e| format!("MONITOR: {e}"))?;
        let mut lines = BufReader::new(stream).lines();
        let mut seen: Vec<(String, String)> = Vec::new();
        let deadline = tokio::time::Instant::now() + window;
        loop {
            let line = tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                l = lines.next_line() => l.map_err(|e| format!("MONITOR: {e}"))?,
            };
            let Some(line) = line else {
                return Err("MONITOR: Redis closed the connection".into());
            };
            if let Some((_, source, args)) = parse_line(&line)
                && let Some(name) = args.first()
            {
                seen.push((source, String::from_utf8_lossy(name).to_lowercase()));
            }
        }
        let observer_clients: Vec<String> = seen
            .iter()
            .filter(|(_, name)| observers.contains(&name.as_str()))
            .map(|(source, _)| source.clone())
            .collect();
        let mut sent = Sent::default();
        for (source, name) in seen {
            if source == "lua" {
                sent.by_scripts += 1;
            } else if !observer_clients.contains(&source) {
                *sent.by_command.entry(name).or_default() += 1;
                *sent.by_client.entry(source).or_default() += 1;
            }
        }
        Ok(sent)
    }

    /// Commands clients sent, in all.
    pub fn total(&self) -> u64 {
        self.by_command.values().sum()
    }
}

/// Client-sent commands by name, most first, then the busiest clients.
impl fmt::Display for Sent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rows: Vec<(&String, &u64)> = self.by_command.iter().collect();
        rows.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        writeln!(f, "{:<24} {:>10}", "sent by clients", "calls")?;
        for (name, calls) in rows {
            writeln!(f, "{name:<24} {calls:>10}")?;
        }
        writeln!(f, "{:<24} {:>10}", "total sent", self.total())?;
        writeln!(f, "{:<24} {:>10}", "run inside scripts", self.by_scripts)?;
        let mut clients: Vec<(&String, &u64)> = self.by_client.iter().collect();
        clients.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let shown: Vec<String> = clients
            .iter()
            .take(3)
            .map(|(c, n)| format!("{c} {n}"))
            .collect();
        write!(
            f,
            "{} clients; busiest: {}",
            clients.len(),
            shown.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "# Commandstats\r\n\
        cmdstat_evalsha:calls=10,usec=300,usec_per_call=30.00,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_info:calls=1,usec=50,usec_per_call=50.00,rejected_calls=0,failed_calls=0\r\n";
    const AFTER: &str = "# Commandstats\r\n\
        cmdstat_evalsha:calls=15,usec=420,usec_per_call=28.00,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_config|resetstat:calls=1,usec=9,usec_per_call=9.00,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_info:calls=2,usec=90,usec_per_call=45.00,rejected_calls=0,failed_calls=0\r\n";

    #[test]
    fn the_difference_of_two_readings_without_the_observer() {
        let delta = CommandStats::parse(AFTER)
            .since(&CommandStats::parse(BEFORE))
            .without(&["info"]);
        assert_eq!(delta.calls("evalsha"), 5);
        assert_eq!(delta.calls("config|resetstat"), 1);
        assert_eq!(delta.calls("info"), 0);
        assert_eq!(delta.total_calls(), 6);
        assert_eq!(delta.total_usec(), 129);
        let table = delta.to_string();
        assert!(table.lines().nth(1).expect("a row").starts_with("evalsha"));
        assert!(table.lines().last().expect("total").starts_with("total"));
    }
}
