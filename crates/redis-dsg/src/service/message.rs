//! The message format: `<uuid> <timestamp>`.
//!
//! We write RFC 3339 UTC timestamps with microseconds
//! (`3f2b…-… 2026-11-26T21:29:38.123456Z`). The original go-redis-dsg wrote
//! `<uuid> at <Go time string>` (`… at 2017-03-01 12:34:56.789 +0300 MSK
//! m=+0.01`); both are well-formed, so a mixed fleet works during migration.
//! Anything else in the queue is consumed too and reported as malformed.

use std::time::{SystemTime, UNIX_EPOCH};

use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};
use uuid::Uuid;

/// Length of a message we generate: 36 (uuid) + 1 + 27 (timestamp).
pub const GENERATED_LEN: usize = 64;

/// Writes new messages without allocating: the date part of the timestamp is
/// cached per second.
#[derive(Debug, Default)]
pub struct MessageWriter {
    cached: Option<(u64, [u8; 19])>,
}

impl MessageWriter {
    /// A writer with an empty cache.
    pub fn new() -> MessageWriter {
        MessageWriter::default()
    }

    /// Appends one message for the current time to `out`.
    pub fn write_now(&mut self, out: &mut Vec<u8>) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        self.write(
            out,
            rand::random::<[u8; 16]>(),
            now.as_secs(),
            now.subsec_micros(),
        );
    }

    /// `n` new messages, written into one buffer and handed out as slices
    /// of it: one allocation per batch, none per message.
    pub fn batch(&mut self, n: usize) -> Vec<fred::bytes::Bytes> {
        let mut buf = Vec::with_capacity(n * GENERATED_LEN);
        let mut ends = Vec::with_capacity(n);
        for _ in 0..n {
            self.write_now(&mut buf);
            ends.push(buf.len());
        }
        let all = fred::bytes::Bytes::from(buf);
        let mut start = 0;
        ends.into_iter()
            .map(|end| {
                let m = all.slice(start..end);
                start = end;
                m
            })
            .collect()
    }

    /// Appends the message for `uuid_bytes` (random) at `unix_seconds` +
    /// `micros` to `out`.
    pub fn write(
        &mut self,
        out: &mut Vec<u8>,
        uuid_bytes: [u8; 16],
        unix_seconds: u64,
        micros: u32,
    ) {
        let uuid = uuid::Builder::from_random_bytes(uuid_bytes).into_uuid();
        let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
        out.extend_from_slice(uuid.hyphenated().encode_lower(&mut buf).as_bytes());
        out.push(b' ');
        let date_time = match self.cached {
            Some((second, text)) if second == unix_seconds => text,
            _ => {
                let text = format_seconds(unix_seconds);
                self.cached = Some((unix_seconds, text));
                text
            }
        };
        out.extend_from_slice(&date_time);
        out.push(b'.');
        let mut digits = [b'0'; 6];
        put_digits(&mut digits, micros.min(999_999).into());
        out.extend_from_slice(&digits);
        out.push(b'Z');
    }
}

/// Writes `value` as decimal digits filling `out`, zero-padded.
fn put_digits(out: &mut [u8], mut value: u64) {
    for d in out.iter_mut().rev() {
        *d = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// `YYYY-MM-DDTHH:MM:SS` for a Unix time (UTC), by the civil-from-days
/// algorithm (Howard Hinnant's), valid for years 0000–9999.
fn format_seconds(unix_seconds: u64) -> [u8; 19] {
    let days = unix_seconds / 86_400;
    let secs = unix_seconds % 86_400;
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    let mut out = *b"0000-00-00T00:00:00";
    put_digits(&mut out[0..4], year);
    put_digits(&mut out[5..7], month);
    put_digits(&mut out[8..10], day);
    put_digits(&mut out[11..13], secs / 3600);
    put_digits(&mut out[14..16], (secs / 60) % 60);
    put_digits(&mut out[17..19], secs % 60);
    out
}

/// A parsed, well-formed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The message id.
    pub id: Uuid,
    /// When it was generated.
    pub created_at: OffsetDateTime,
}

/// Why a message is not well-formed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// Not UTF-8 text.
    #[error("not UTF-8 text")]
    NotText,
    /// No space between id and timestamp.
    #[error("expected \"<uuid> <timestamp>\"")]
    Shape,
    /// The first field is not a UUID.
    #[error("{0:?} is not a UUID")]
    Id(String),
    /// The rest is not a timestamp we know.
    #[error("{0:?} is not an RFC 3339 or go-redis-dsg timestamp")]
    Timestamp(String),
}

/// Parses `<uuid> <RFC 3339>` or the original's `<uuid> at <Go time>`.
pub fn parse(bytes: &[u8]) -> Result<Message, Malformed> {
    let text = std::str::from_utf8(bytes).map_err(|_| Malformed::NotText)?;
    let (id, rest) = text.split_once(' ').ok_or(Malformed::Shape)?;
    let id = Uuid::try_parse(id).map_err(|_| Malformed::Id(shorten(id)))?;
    let created_at = match rest.strip_prefix("at ") {
        Some(go) => parse_go_time(go),
        None => OffsetDateTime::parse(rest, &Rfc3339).ok(),
    }
    .ok_or_else(|| Malformed::Timestamp(shorten(rest)))?;
    Ok(Message { id, created_at })
}

fn shorten(s: &str) -> String {
    s.chars().take(64).collect()
}

/// Go's `time.Time.String()`: `2006-01-02 15:04:05.999999999 -0700 MST`,
/// optionally followed by a monotonic reading ` m=+0.000000001`.
fn parse_go_time(s: &str) -> Option<OffsetDateTime> {
    let mut parts = s.split(' ');
    let date = parts.next()?;
    let clock = parts.next()?;
    let offset = parts.next()?;
    // The zone abbreviation and the monotonic reading are informational.
    let date = time::Date::parse(
        date,
        time::macros::format_description!("[year]-[month]-[day]"),
    )
    .ok()?;
    let (hms, frac) = clock.split_once('.').unwrap_or((clock, ""));
    let time = time::Time::parse(
        hms,
        time::macros::format_description!("[hour]:[minute]:[second]"),
    )
    .ok()?;
    let nanos = if frac.is_empty() {
        0
    } else {
        if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        frac.parse::<u32>().ok()? * 10u32.pow(9 - frac.len() as u32)
    };
    let time = time.replace_nanosecond(nanos).ok()?;
    let sign = match offset.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    if offset.len() != 5 || !offset[1..].bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let hours: i8 = offset[1..3].parse().ok()?;
    let minutes: i8 = offset[3..5].parse().ok()?;
    let offset = UtcOffset::from_hms(sign * hours, sign * minutes, 0).ok()?;
    Some(PrimitiveDateTime::new(date, time).assume_offset(offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_messages_parse_and_have_fixed_length() {
        let mut w = MessageWriter::new();
        let mut out = Vec::new();
        w.write_now(&mut out);
        assert_eq!(
            out.len(),
            GENERATED_LEN,
            "{}",
            String::from_utf8_lossy(&out)
        );
        let m = parse(&out).expect("well-formed");
        let age = OffsetDateTime::now_utc() - m.created_at;
        assert!(age.whole_seconds().abs() < 5, "{age}");
    }

    #[test]
    fn timestamp_formatting_matches_the_time_crate() {
        let mut w = MessageWriter::new();
        for secs in [
            0u64,
            951_782_400,
            1_709_164_799,
            1_795_000_000,
            4_102_444_799,
        ] {
            let mut out = Vec::new();
            w.write(&mut out, [7; 16], secs, 42);
            let text = String::from_utf8(out).expect("utf-8");
            let ts = &text[37..];
            let expected = OffsetDateTime::from_unix_timestamp(secs as i64).expect("in range")
                + time::Duration::microseconds(42);
            assert_eq!(
                OffsetDateTime::parse(ts, &Rfc3339).expect(ts),
                expected,
                "{ts}"
            );
            assert!(ts.ends_with(".000042Z"), "{ts}");
        }
    }

    #[test]
    fn original_go_format_is_well_formed() {
        let m = parse(b"0f8fad5b-d9cb-469f-a165-70867728950e at 2017-03-01 12:34:56.789012345 +0300 MSK m=+0.001")
            .expect("go format");
        assert_eq!(m.created_at.offset().whole_hours(), 3);
        assert_eq!(m.created_at.nanosecond(), 789_012_345);
        assert!(
            parse(b"0f8fad5b-d9cb-469f-a165-70867728950e at 2017-03-01 12:34:56 +0000 UTC").is_ok()
        );
    }

    #[test]
    fn malformed_messages_say_why() {
        assert_eq!(parse(b"\xff\xfe"), Err(Malformed::NotText));
        assert_eq!(parse(b"hello"), Err(Malformed::Shape));
        assert!(matches!(
            parse(b"nope 2026-01-01T00:00:00Z"),
            Err(Malformed::Id(_))
        ));
        assert!(matches!(
            parse(b"0f8fad5b-d9cb-469f-a165-70867728950e yesterday"),
            Err(Malformed::Timestamp(_))
        ));
    }
}
