//! What a fleet costs Redis, from Redis' own counters: CPU (`INFO cpu`,
//! `used_cpu_sys` + `used_cpu_user`) and commands (`INFO commandstats`),
//! as deltas between two snapshots taken around a measurement window.
//! Commands run inside scripts are counted by Redis too, so a fetch script
//! shows as its `evalsha` plus the commands it ran.

use std::time::Instant;

use fred::prelude::*;
use fred::types::InfoKind;
use serde::Serialize;

use dsg_testkit::redis_info::{CommandStat, CommandStats};
use redis_dsg::redis::Redis;

/// Commands the benchmark itself sends during a window; left out of the
/// figures.
const OWN_COMMANDS: &[&str] = &["info", "config"];

/// How many commands a window lists by name.
const TOP_COMMANDS: usize = 5;

/// Redis' counters at one moment.
#[derive(Debug, Clone)]
pub(super) struct Snapshot {
    pub at: Instant,
    /// `used_cpu_sys + used_cpu_user`, seconds.
    pub cpu_seconds: f64,
    pub commands: CommandStats,
}

impl Snapshot {
    /// Reads `INFO cpu` and `INFO commandstats`.
    pub(super) async fn take(redis: &Redis) -> Result<Snapshot, String> {
        let client = redis.client();
        let cpu: String = client
            .info(Some(InfoKind::Cpu))
            .await
            .map_err(|e| format!("INFO cpu: {e}"))?;
        let commands = CommandStats::read(redis).await?;
        Ok(Snapshot {
            at: Instant::now(),
            cpu_seconds: parse_cpu_seconds(&cpu).ok_or("INFO cpu without used_cpu_*")?,
            commands,
        })
    }
}

/// `used_cpu_sys + used_cpu_user` of an `INFO cpu` reply.
fn parse_cpu_seconds(info: &str) -> Option<f64> {
    let field = |name: &str| {
        info.lines()
            .filter_map(|l| l.trim().split_once(':'))
            .find(|(k, _)| *k == name)
            .and_then(|(_, v)| v.parse::<f64>().ok())
    };
    Some(field("used_cpu_sys")? + field("used_cpu_user")?)
}

/// One command's share of a window.
#[derive(Debug, Clone, Serialize)]
pub(super) struct TopCommand {
    pub name: String,
    pub calls_per_second: f64,
    /// Redis' own time per call (`usec` delta / `calls` delta).
    pub usec_per_call: f64,
}

/// What Redis spent during a window.
#[derive(Debug, Clone, Serialize)]
pub(super) struct RedisLoad {
    /// Length of the window, seconds.
    pub seconds: f64,
    /// Redis CPU (user + system) in percent of one core.
    pub cpu_percent: f64,
    /// Commands per second (the benchmark's own INFO calls left out).
    pub commands_per_second: f64,
    /// The commands that took most of Redis' command time, largest first.
    pub top: Vec<TopCommand>,
}

impl RedisLoad {
    /// The deltas from `before` to `after`.
    pub(super) fn between(before: &Snapshot, after: &Snapshot) -> RedisLoad {
        let seconds = (after.at - before.at).as_secs_f64().max(1e-9);
        let window = after.commands.since(&before.commands).without(OWN_COMMANDS);
        let calls = window.total_calls();
        let mut deltas: Vec<(&String, &CommandStat)> = window.0.iter().collect();
        deltas.sort_by(|a, b| b.1.usec.cmp(&a.1.usec).then(b.1.calls.cmp(&a.1.calls)));
        RedisLoad {
            seconds,
            cpu_percent: cpu_percent(before.cpu_seconds, after.cpu_seconds, seconds),
            commands_per_second: calls as f64 / seconds,
            top: deltas
                .into_iter()
                .take(TOP_COMMANDS)
                .map(|(name, d)| TopCommand {
                    name: name.to_string(),
                    calls_per_second: d.calls as f64 / seconds,
                    usec_per_call: d.usec as f64 / d.calls as f64,
                })
                .collect(),
        }
    }
}

/// CPU in percent of one core between two `used_cpu_*` sums.
fn cpu_percent(before_seconds: f64, after_seconds: f64, wall_seconds: f64) -> f64 {
    (after_seconds - before_seconds).max(0.0) / wall_seconds * 100.0
}

/// Redis CPU per message, microseconds: `cpu_percent` of a core over
/// `seconds` (less `reference_percent`, an empty server's own) divided by
/// the messages processed; `None` without messages.
pub(super) fn usec_per_message(
    cpu_percent: f64,
    reference_percent: f64,
    seconds: f64,
    messages: u64,
) -> Option<f64> {
    (messages > 0)
        .then(|| (cpu_percent - reference_percent) / 100.0 * seconds * 1e6 / messages as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_and_commands_are_deltas_without_the_benchmarks_own_calls() {
        let cpu = "# CPU\r\nused_cpu_sys:1.500000\r\nused_cpu_user:2.250000\r\nused_cpu_sys_children:9\r\n";
        assert_eq!(parse_cpu_seconds(cpu), Some(3.75));
        assert_eq!(parse_cpu_seconds("# CPU\r\n"), None);
        let stats = |evalsha: u64, info: u64| {
            format!(
                "# Commandstats\r\ncmdstat_evalsha:calls={evalsha},usec={},usec_per_call=150.00,rejected_calls=0,failed_calls=0\r\n\
                 cmdstat_info:calls={info},usec=10,usec_per_call=1.00\r\ncmdstat_exists:calls=30,usec=30,usec_per_call=1.00\r\n\
                 cmdstat_config|resetstat:calls={info},usec=10,usec_per_call=1.00\r\n",
                evalsha * 150
            )
        };
        let start = Instant::now();
        let before = Snapshot {
            at: start,
            cpu_seconds: 1.0,
            commands: CommandStats::parse(&stats(100, 5)),
        };
        let after = Snapshot {
            at: start + std::time::Duration::from_secs(10),
            cpu_seconds: 2.0,
            commands: CommandStats::parse(&stats(4_100, 9)),
        };
        let load = RedisLoad::between(&before, &after);
        assert!((load.cpu_percent - 10.0).abs() < 1e-9);
        assert!((load.commands_per_second - 400.0).abs() < 1e-9);
        assert_eq!(load.top.len(), 1);
        assert_eq!(load.top[0].name, "evalsha");
        assert!((load.top[0].usec_per_call - 150.0).abs() < 1e-9);
    }

    #[test]
    fn cost_per_message_is_above_the_reference() {
        // 20 % of a core for 10 s is 2 s; 1 % of it is an empty server's.
        let us = usec_per_message(20.0, 1.0, 10.0, 1_000).expect("messages");
        assert!((us - 1_900.0).abs() < 1e-6);
        assert_eq!(usec_per_message(20.0, 0.0, 10.0, 0), None);
    }
}
