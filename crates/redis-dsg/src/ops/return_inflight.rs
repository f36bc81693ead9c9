//! `redis-dsg return-inflight`: returns every message held in any
//! consumer's in-flight hash to the consuming end of the queue, exactly
//! once. The tool for a rollback to go-redis-dsg, which knows nothing of
//! in-flight hashes: once no redis-dsg pod runs, no reaper returns what
//! killed pods held.
//!
//! Each consumer's hash goes back with one atomic script
//! ([`RETURN_INFLIGHT`], the reaper's): its messages are pushed, then the
//! hash is deleted and the consumer unregistered, so a message is in the
//! hash or in the queue, never both or neither, and a second run (or a
//! reaper racing this one) finds the hash gone and returns nothing. The
//! push comes first (contract 10): a wrong-type queue or a missing right
//! fails before anything is removed. Without `--force` the command refuses
//! while any consumer is alive, and the script checks the heartbeat again
//! atomically; with `--force` it also takes what live consumers hold (their
//! later acknowledgements find nothing, so those messages are delivered
//! again: duplicates, never losses).

use serde::Serialize;

use super::CliError;
use crate::cli::ReturnInflightArgs;
use crate::config::Config;
use crate::redis::scripts;
use crate::redis::{Keys, Redis, RedisError};
use crate::service::registry::{self, RegisteredConsumer};

/// One consumer's in-flight storage and what the command did with it.
#[derive(Debug, Clone, Serialize)]
struct InflightOwner {
    /// The consumer id.
    id: String,
    /// Whether it is in the consumer set (an unregistered hash was found
    /// by its key).
    registered: bool,
    /// Whether its heartbeat is alive.
    alive: bool,
    /// Milliseconds before its heartbeat expires.
    heartbeat_ttl_ms: Option<u64>,
    /// Messages it held when looked at.
    held: u64,
    /// Messages returned to the queue by this run.
    returned: u64,
    /// `returned`, `skipped: alive` (it came alive after the check),
    /// `dry run`, or why it failed.
    outcome: String,
}

/// What one run found and did.
#[derive(Debug, Clone, Serialize)]
struct ReturnReport {
    /// The queue the messages went back to.
    queue: String,
    /// Whether nothing was changed (`--dry-run`).
    dry_run: bool,
    /// Messages returned in total.
    returned: u64,
    /// Every consumer with a registration or an in-flight hash.
    consumers: Vec<InflightOwner>,
    /// Things worth knowing that are not failures.
    notes: Vec<String>,
}

/// Every consumer that is registered or has an in-flight hash, with its
/// liveness and what it holds; notes when the search for unregistered
/// hashes was not allowed.
async fn owners(
    redis: &Redis,
    keys: &Keys,
    notes: &mut Vec<String>,
) -> Result<Vec<InflightOwner>, RedisError> {
    let mut found: Vec<(RegisteredConsumer, bool)> = registry::registered_consumers(redis, keys)
        .await?
        .into_iter()
        .map(|c| (c, true))
        .collect();
    // The consumer registers before it holds anything, so every hash has a
    // registration; the search is a safety net for hashes unregistered by
    // hand or by older versions, and the least-privilege ACL rule leaves
    // SCAN out (it would list every key name of the database).
    let hashes = match registry::inflight_owners(redis, keys).await {
        Ok(ids) => ids,
        Err(RedisError::Command(e)) => {
            notes.push(format!(
                "in-flight hashes without a registration were not searched ({e}); allow +scan to include them"
            ));
            Vec::new()
        }
        Err(e) => return Err(e),
    };
    let unregistered: Vec<String> = hashes
        .into_iter()
        .filter(|id| !found.iter().any(|(c, _)| &c.id == id))
        .collect();
    found.extend(
        registry::liveness(redis, keys, unregistered)
            .await?
            .into_iter()
            .map(|c| (c, false)),
    );
    let ids: Vec<String> = found.iter().map(|(c, _)| c.id.clone()).collect();
    let held = registry::held(redis, keys, &ids).await?;
    Ok(found
        .into_iter()
        .zip(held)
        .map(|((c, registered), held)| InflightOwner {
            id: c.id,
            registered,
            alive: c.alive,
            heartbeat_ttl_ms: c.heartbeat_ttl_ms,
            held,
            returned: 0,
            outcome: String::new(),
        })
        .collect())
}

/// Returns what `owner` holds with one script; `force` takes it from a
/// live consumer too.
async fn return_one(redis: &Redis, keys: &Keys, owner: &mut InflightOwner, force: bool) {
    let result = scripts::return_inflight(redis, keys, &owner.id, force).await;
    owner.outcome = match result {
        Ok(None) => "skipped: alive".into(),
        Ok(Some(n)) => {
            owner.returned = n;
            "returned".into()
        }
        // The script is never re-sent, so it ran once or not at all.
        Err(RedisError::Unavailable(e)) => {
            format!("outcome unknown ({e}): run the command again")
        }
        Err(e) => format!("failed, nothing removed: {e}"),
    };
}

/// Finds every consumer's in-flight storage and, unless `dry_run`, returns
/// it to the queue. Refuses (changing nothing) while a consumer is alive,
/// unless `force`.
async fn return_inflight(
    redis: &Redis,
    keys: &Keys,
    force: bool,
    dry_run: bool,
) -> Result<ReturnReport, CliError> {
    let mut notes = Vec::new();
    let mut consumers = owners(redis, keys, &mut notes).await?;
    let alive: Vec<&InflightOwner> = consumers.iter().filter(|c| c.alive).collect();
    if !dry_run && !force && !alive.is_empty() {
        let list: Vec<String> = alive
            .iter()
            .map(|c| format!("{} (holds {})", c.id, c.held))
            .collect();
        return Err(CliError::Refused(format!(
            "{} redis-dsg consumer(s) alive: {}; stop them first (their heartbeats expire after consumer.heartbeat_ttl_ms) or pass --force (what they hold is then delivered again)",
            alive.len(),
            list.join(", ")
        )));
    }
    for c in &mut consumers {
        if dry_run {
            c.outcome = "dry run".into();
        } else {
            return_one(redis, keys, c, force).await;
        }
    }
    let returned = consumers.iter().map(|c| c.returned).sum();
    if !dry_run && returned == 0 {
        // In a rollback, these returns are what wakes an original that took
        // `lock:gen` while blocked in `BRPOP` on the empty queue: without
        // them it does not generate until a message arrives.
        notes.push(format!(
            "nothing was returned: if go-redis-dsg originals took over and nothing generates, \
             push one message to wake the one holding lock:gen (redis-cli LPUSH {} kick; \
             it is consumed as malformed)",
            keys.queue
        ));
    }
    Ok(ReturnReport {
        queue: keys.queue.clone(),
        dry_run,
        returned,
        consumers,
        notes,
    })
}

impl ReturnReport {
    /// One line per consumer and a total.
    fn to_text(&self) -> String {
        let mut s = format!(
            "  {:<40} {:>10} {:>10} {:>6} {:>8}  OUTCOME\n",
            "CONSUMER", "REGISTERED", "HEARTBEAT", "HELD", "RETURNED"
        );
        for c in &self.consumers {
            let hb = match (c.alive, c.heartbeat_ttl_ms) {
                (true, Some(t)) => format!("{:.1} s", t as f64 / 1000.0),
                (true, None) => "alive".into(),
                (false, _) => "expired".into(),
            };
            s.push_str(&format!(
                "  {:<40} {:>10} {:>10} {:>6} {:>8}  {}\n",
                c.id,
                if c.registered { "yes" } else { "no" },
                hb,
                c.held,
                c.returned,
                c.outcome
            ));
        }
        s.push_str(&format!(
            "{} {} messages of {} consumers to {}\n",
            if self.dry_run {
                "would return"
            } else {
                "returned"
            },
            if self.dry_run {
                self.consumers.iter().map(|c| c.held).sum()
            } else {
                self.returned
            },
            self.consumers.len(),
            self.queue
        ));
        for note in &self.notes {
            s.push_str(&format!("note: {note}\n"));
        }
        s
    }

    /// Consumers whose storage could not be returned.
    fn failures(&self) -> Vec<String> {
        self.consumers
            .iter()
            .filter(|c| c.outcome != "returned" && c.outcome != "dry run")
            .map(|c| format!("{}: {}", c.id, c.outcome))
            .collect()
    }
}

/// Runs `return-inflight`: prints the report; exits 1 when refused or when
/// some consumer's messages could not be returned (run it again).
pub async fn return_inflight_command(
    config: &Config,
    args: &ReturnInflightArgs,
) -> Result<(), CliError> {
    let redis = super::connect_once(config).await?;
    let keys = Keys::of(&config.redis);
    let report = return_inflight(&redis, &keys, args.force, args.dry_run).await;
    redis.quit().await;
    let report = report?;
    if args.json {
        // A struct of strings, numbers and options always serializes.
        let json = serde_json::to_string(&report).expect("ReturnReport serializes to JSON");
        println!("{json}");
    } else {
        print!("{}", report.to_text());
    }
    let failures = report.failures();
    if failures.is_empty() {
        Ok(())
    } else {
        Err(CliError::Refused(failures.join("; ")))
    }
}
