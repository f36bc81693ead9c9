//! Error-list entries: the original message bytes, intact, behind a one-line
//! header saying why, who and when.
//!
//! An entry is `DSGERR1 {"reason":…,"detail":…,"consumer":…,"at_ms":…}\n`
//! followed by the message's bytes exactly as they were in the queue (any
//! bytes at all: the header ends at the first newline, and JSON never holds a
//! raw newline). The header is built by the consumer and joined to the
//! message inside Redis, so a message's bytes never travel back and forth.
//! Entries written by the original go-redis-dsg (`m:"<msg>" e:"Error code
//! N"`, the message Go-quoted) are decoded exactly (`legacy.rs`).
//!
//! [`decode`] is the one reading of an entry: `errors list`, `drain`,
//! `--json` and `requeue` all use it, so what is shown is what is requeued.

mod legacy;
mod text;

use serde::Serialize;
use time::OffsetDateTime;

pub use text::{escape_payload, unescape_payload};

/// Prefix of a structured error entry: `DSGERR1 <JSON header>\n<bytes>`.
pub const ERROR_ENTRY_PREFIX: &str = "DSGERR1 ";

/// Why a message went to the error list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The processor rejected it.
    Invalid,
    /// It is not `<uuid> <timestamp>`.
    Malformed,
    /// It is larger than `consumer.max_message_bytes`.
    Oversized,
}

impl Reason {
    /// The name used in entries and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Invalid => "invalid",
            Reason::Malformed => "malformed",
            Reason::Oversized => "oversized",
        }
    }
}

#[derive(Serialize, serde::Deserialize)]
struct Header {
    reason: String,
    detail: String,
    consumer: String,
    at_ms: i64,
}

/// The header line for a message that failed for `reason`.
pub fn header(reason: Reason, detail: &str, consumer: &str, at: OffsetDateTime) -> String {
    let h = Header {
        reason: reason.as_str().to_string(),
        detail: detail.to_string(),
        consumer: consumer.to_string(),
        at_ms: (at.unix_timestamp_nanos() / 1_000_000) as i64,
    };
    // Serializing a struct of strings and an integer cannot fail.
    let json = serde_json::to_string(&h).expect("an error header serializes");
    format!("{ERROR_ENTRY_PREFIX}{json}\n")
}

/// A decoded error-list entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorEntry {
    /// `invalid`, `malformed`, `oversized`, `legacy` (the original's
    /// format) or `unknown` (something else pushed to the list).
    pub reason: String,
    /// Human-readable detail.
    pub detail: String,
    /// The consumer that gave up on the message, when known.
    pub consumer: Option<String>,
    /// When, when known.
    pub failed_at: Option<OffsetDateTime>,
    /// The original message bytes.
    pub payload: Vec<u8>,
}

/// Decodes an entry; never fails (unknown shapes keep all their bytes).
pub fn decode(entry: &[u8]) -> ErrorEntry {
    if let Some(rest) = entry.strip_prefix(ERROR_ENTRY_PREFIX.as_bytes())
        && let Some(nl) = rest.iter().position(|&b| b == b'\n')
        && let Ok(h) = serde_json::from_slice::<Header>(&rest[..nl])
    {
        return ErrorEntry {
            reason: h.reason,
            detail: h.detail,
            consumer: Some(h.consumer),
            failed_at: OffsetDateTime::from_unix_timestamp_nanos(i128::from(h.at_ms) * 1_000_000)
                .ok(),
            payload: rest[nl + 1..].to_vec(),
        };
    }
    if let Some((payload, detail)) = legacy::parse(entry) {
        return ErrorEntry {
            reason: "legacy".into(),
            detail,
            consumer: None,
            failed_at: None,
            payload,
        };
    }
    ErrorEntry {
        reason: "unknown".into(),
        detail: "not written by redis-dsg".into(),
        consumer: None,
        failed_at: None,
        payload: entry.to_vec(),
    }
}

impl ErrorEntry {
    /// The entry as one JSON object: the payload as a string when it is
    /// UTF-8, else base64 in `payload_base64`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "reason": self.reason,
            "detail": self.detail,
            "consumer": self.consumer,
            "failed_at": self.failed_at.and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok()),
            "size_bytes": self.payload.len(),
        });
        match std::str::from_utf8(&self.payload) {
            Ok(text) => v["payload"] = text.into(),
            Err(_) => v["payload_base64"] = base64_encode(&self.payload).into(),
        }
        v
    }

    /// The entry as one human-readable line (payload escaped with
    /// [`escape_payload`], which [`unescape_payload`] reverses exactly).
    pub fn to_line(&self) -> String {
        let when = self
            .failed_at
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_else(|| "-".into());
        format!(
            "{when} reason={} consumer={} detail={:?} payload={}",
            self.reason,
            self.consumer.as_deref().unwrap_or("-"),
            self.detail,
            escape_payload(&self.payload)
        )
    }
}

/// Standard base64 with padding.
pub(crate) fn base64_encode(bytes: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64 (padding optional).
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_keep_any_bytes_intact() {
        let payload: Vec<u8> = (0..=255u8)
            .chain(b"\n\nDSGERR1 {}\n".iter().copied())
            .collect();
        let mut entry = header(
            Reason::Malformed,
            "not UTF-8 \"text\"\n",
            "host-1a2b",
            OffsetDateTime::now_utc(),
        )
        .into_bytes();
        entry.extend_from_slice(&payload);
        let e = decode(&entry);
        assert_eq!(e.reason, "malformed");
        assert_eq!(e.detail, "not UTF-8 \"text\"\n");
        assert_eq!(e.consumer.as_deref(), Some("host-1a2b"));
        assert!(e.failed_at.is_some());
        assert_eq!(e.payload, payload);
        let json = e.to_json();
        let decoded = base64_decode(json["payload_base64"].as_str().expect("base64 for binary"));
        assert_eq!(decoded.as_deref(), Some(payload.as_slice()));
    }

    #[test]
    fn legacy_and_foreign_entries_are_read() {
        // As Go's `m:%q e:%q` writes a message holding quotes and a byte
        // that is not UTF-8.
        let e = decode(br#"m:"abc \"quoted\" \xff x" e:"Error code 7""#);
        assert_eq!(e.reason, "legacy");
        assert_eq!(e.payload, b"abc \"quoted\" \xff x");
        assert_eq!(e.detail, "Error code 7");
        // Go never writes unescaped quotes inside: kept whole.
        let raw = b"m:\"abc \"quoted\" x\" e:\"Error code 7\"";
        let e = decode(raw);
        assert_eq!(e.reason, "unknown");
        assert_eq!(e.payload, raw);
        let e = decode(b"just bytes");
        assert_eq!(e.reason, "unknown");
        assert_eq!(e.payload, b"just bytes");
    }

    #[test]
    fn a_corrupt_header_keeps_the_whole_entry() {
        let raw = b"DSGERR1 {not json}\nmessage";
        let e = decode(raw);
        assert_eq!(e.reason, "unknown");
        assert_eq!(e.payload, raw);
    }

    #[test]
    fn base64_round_trips() {
        for n in 0..10 {
            let data: Vec<u8> = (0..n).map(|i| (i * 37) as u8).collect();
            assert_eq!(base64_decode(&base64_encode(&data)), Some(data));
        }
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
    }
}
