//! What the original go-redis-dsg writes, byte for byte as Go's `fmt`
//! writes it: its messages (`<uuid> at <Go time>`) and its error entries
//! (`m:%q e:%q`), for the stand-in and for tests of legacy entries.

use std::time::{Duration, Instant};

/// `fmt.Sprintf("%s at %s", uuid.NewV4(), time.Now())`: the time as Go's
/// `Time.String()` prints it, in UTC, with the monotonic reading the Go
/// runtime adds (`m=+<seconds since start>`).
pub fn go_message(process_start: Instant) -> String {
    format!(
        "{} at {}",
        uuid::Uuid::new_v4(),
        go_time_string(
            time::OffsetDateTime::now_utc(),
            Some(process_start.elapsed())
        )
    )
}

/// Go's `Time.String()` for a UTC time: `2006-01-02 15:04:05.999999999
/// +0000 UTC` (fraction without trailing zeros, none when zero), then
/// ` m=+S.NNNNNNNNN` when there is a monotonic reading.
pub fn go_time_string(t: time::OffsetDateTime, monotonic: Option<Duration>) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    let mut s = format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    let nanos = t.nanosecond();
    if nanos != 0 {
        s.push('.');
        s.push_str(format!("{nanos:09}").trim_end_matches('0'));
    }
    s.push_str(" +0000 UTC");
    if let Some(m) = monotonic {
        s.push_str(&format!(" m=+{}.{:09}", m.as_secs(), m.subsec_nanos()));
    }
    s
}

/// `fmt.Sprintf("m:%q e:%q", msg, detail)`: an error entry as the original
/// wrote it.
pub fn go_error_entry(msg: &[u8], detail: &str) -> Vec<u8> {
    let mut out = b"m:".to_vec();
    out.extend_from_slice(&go_quote(msg));
    out.extend_from_slice(b" e:");
    out.extend_from_slice(&go_quote(detail.as_bytes()));
    out
}

/// Go's `strconv.Quote`. Exact for ASCII and for bytes that are not valid
/// UTF-8; for other runes Go's `unicode.IsPrint` is approximated by Rust's
/// own printable test (same categories, possibly another Unicode version;
/// byte-identical to Go 1.19 for all 468 entries of the fixture).
pub fn go_quote(bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![b'"'];
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            let escaped = match c {
                '"' => "\\\"".to_string(),
                '\\' => "\\\\".to_string(),
                '\x07' => "\\a".to_string(),
                '\x08' => "\\b".to_string(),
                '\x0c' => "\\f".to_string(),
                '\n' => "\\n".to_string(),
                '\r' => "\\r".to_string(),
                '\t' => "\\t".to_string(),
                '\x0b' => "\\v".to_string(),
                ' '..='~' => c.to_string(),
                c if (c as u32) < 0x20 || c == '\x7f' => format!("\\x{:02x}", c as u32),
                c if is_print(c) => c.to_string(),
                c if (c as u32) < 0x10000 => format!("\\u{:04x}", c as u32),
                c => format!("\\U{:08x}", c as u32),
            };
            out.extend_from_slice(escaped.as_bytes());
        }
        for b in chunk.invalid() {
            out.extend_from_slice(format!("\\x{b:02x}").as_bytes());
        }
    }
    out.push(b'"');
    out
}

/// Go's `IsPrint` for a non-ASCII rune, approximated: Rust's `escape_debug`
/// leaves a char alone exactly when it is printable (letters, marks,
/// numbers, punctuation, symbols), once grapheme extenders are not at the
/// start of the string. U+00AD (soft hyphen) is a format character Rust
/// prints as it is.
fn is_print(c: char) -> bool {
    if c == '\u{ad}' {
        return false;
    }
    let probe = format!("a{c}");
    probe.escape_debug().to_string() == probe
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_time_strings() {
        let t = time::macros::datetime!(2017-01-20 12:00:00.123456789 UTC);
        assert_eq!(
            go_time_string(t, None),
            "2017-01-20 12:00:00.123456789 +0000 UTC"
        );
        let t = time::macros::datetime!(2017-01-20 12:00:00.1 UTC);
        assert_eq!(
            go_time_string(t, Some(Duration::from_millis(12_345))),
            "2017-01-20 12:00:00.1 +0000 UTC m=+12.345000000"
        );
        let t = time::macros::datetime!(2017-01-20 12:00:00 UTC);
        assert_eq!(go_time_string(t, None), "2017-01-20 12:00:00 +0000 UTC");
    }

    #[test]
    fn messages_are_well_formed_for_redis_dsg() {
        let m = go_message(Instant::now());
        assert!(
            redis_dsg::service::message::parse(m.as_bytes()).is_ok(),
            "{m}"
        );
    }

    #[test]
    fn quoting_is_go_s() {
        assert_eq!(
            go_error_entry(b"has \"q\" \\ \n\x00\xff\xc2\x85", "Error code 1"),
            br#"m:"has \"q\" \\ \n\x00\xff\u0085" e:"Error code 1""#
        );
    }
}
