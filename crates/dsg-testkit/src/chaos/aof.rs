//! What the generators wrote durably, read from Redis' append-only files:
//! `MONITOR` also shows pushes Redis executed just before a crash and never
//! made durable (nor acknowledged), so the audit alone would over-count.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Every `LPUSH` to `queue` in Redis' append-only files under `dir`, by
/// message, with how often it was pushed.
pub(super) fn durable_pushes(dir: &Path, queue: &str) -> Result<HashMap<Vec<u8>, u32>, String> {
    let aof_dir = dir.join("appendonlydir");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&aof_dir)
        .map_err(|e| format!("cannot read {}: {e}", aof_dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".incr.aof"))
        .collect();
    files.sort();
    let mut out = HashMap::new();
    for f in files {
        let bytes = std::fs::read(&f).map_err(|e| e.to_string())?;
        for cmd in parse_resp_commands(&bytes) {
            if cmd.len() > 2 && cmd[0].eq_ignore_ascii_case(b"LPUSH") && cmd[1] == queue.as_bytes()
            {
                for m in &cmd[2..] {
                    *out.entry(m.clone()).or_default() += 1;
                }
            }
        }
    }
    Ok(out)
}

/// The commands of an append-only file (RESP arrays of bulk strings); a
/// truncated last command (a crash mid-write) is left out.
fn parse_resp_commands(b: &[u8]) -> Vec<Vec<Vec<u8>>> {
    fn line(b: &[u8], i: &mut usize) -> Option<Vec<u8>> {
        let end = b.get(*i..)?.windows(2).position(|w| w == b"\r\n")? + *i;
        let l = b[*i..end].to_vec();
        *i = end + 2;
        Some(l)
    }
    let mut out = Vec::new();
    let mut i = 0;
    'commands: while i < b.len() {
        let Some(head) = line(b, &mut i) else { break };
        let Some(n) = head
            .strip_prefix(b"*")
            .and_then(|n| std::str::from_utf8(n).ok()?.parse::<usize>().ok())
        else {
            break;
        };
        let mut cmd = Vec::with_capacity(n);
        for _ in 0..n {
            let Some(len) = line(b, &mut i)
                .and_then(|l| l.strip_prefix(b"$").map(<[u8]>::to_vec))
                .and_then(|l| std::str::from_utf8(&l).ok()?.parse::<usize>().ok())
            else {
                break 'commands;
            };
            let Some(arg) = b.get(i..i + len) else {
                break 'commands;
            };
            cmd.push(arg.to_vec());
            i += len + 2;
        }
        out.push(cmd);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_only_file_commands_are_parsed_and_a_torn_tail_dropped() {
        let aof = b"*2\r\n$6\r\nSELECT\r\n$1\r\n0\r\n*3\r\n$5\r\nLPUSH\r\n$1\r\nq\r\n$4\r\na\r\nb\r\n*3\r\n$5\r\nLPUSH\r\n$1\r\nq\r\n$10\r\ntrunc";
        let cmds = parse_resp_commands(aof);
        assert_eq!(cmds.len(), 2);
        assert_eq!(
            cmds[1],
            vec![b"LPUSH".to_vec(), b"q".to_vec(), b"a\r\nb".to_vec()]
        );
    }
}
