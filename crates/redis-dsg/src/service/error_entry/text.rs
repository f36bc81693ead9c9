//! The payload in the text lines of `errors list|drain|requeue`: an escape
//! that is unambiguous, so a reader can get the exact bytes back.
//!
//! Valid UTF-8 goes through Rust's `char::escape_debug` (`\t \r \n \\ \"
//! \0`, non-printable and combining characters as `\u{…}`), which never
//! writes `\x`; every byte that is not part of valid UTF-8 is `\xHH`. So
//! the character U+0085 (`\u{85}`) and the lone byte 0x85 (`\x85`) print
//! differently: an escape of C1 controls as `\x85` would confuse them.

/// `"…"` with the payload escaped as described in the module docs.
pub fn escape_payload(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 2);
    out.push('"');
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            // `'` needs no escape inside double quotes.
            if c == '\'' {
                out.push(c);
            } else {
                out.extend(c.escape_debug());
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out.push('"');
    out
}

/// The inverse of [`escape_payload`], for readers of the text output (and
/// the tests that prove nothing is lost); `None` for text it never writes.
pub fn unescape_payload(text: &str) -> Option<Vec<u8>> {
    let inner = text.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = Vec::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
            continue;
        }
        match chars.next()? {
            't' => out.push(b'\t'),
            'r' => out.push(b'\r'),
            'n' => out.push(b'\n'),
            '0' => out.push(0),
            c @ ('\\' | '"' | '\'') => out.push(c as u8),
            'x' => {
                let digits: String = chars.by_ref().take(2).collect();
                out.push(u8::try_from(hex(&digits)?).ok()?);
            }
            'u' => {
                if chars.next()? != '{' {
                    return None;
                }
                let digits: String = chars.by_ref().take_while(|&c| c != '}').collect();
                let ch = char::from_u32(hex(&digits)?)?;
                out.extend_from_slice(ch.encode_utf8(&mut [0; 4]).as_bytes());
            }
            _ => return None,
        }
    }
    Some(out)
}

/// Hex digits only (no sign, unlike `from_str_radix`), at most 8.
fn hex(digits: &str) -> Option<u32> {
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    digits
        .chars()
        .try_fold(0u32, |v, d| Some((v << 4) | d.to_digit(16)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn characters_and_bytes_stay_distinct() {
        assert_eq!(escape_payload("\u{85}".as_bytes()), "\"\\u{85}\"");
        assert_eq!(escape_payload(b"\x85"), "\"\\x85\"");
        assert_eq!(escape_payload(b"a\"b\n\xff'"), "\"a\\\"b\\n\\xff'\"");
    }

    #[test]
    fn escaped_payloads_read_back_exactly() {
        let all_bytes: Vec<u8> = (0..=255u8).collect();
        for p in [
            &b"\x00\x01\x7f\xc2\x85\x85 \\x41 \\u{41}"[..],
            "é😀\u{200b}\u{feff}'e\u{301}".as_bytes(),
            &all_bytes,
            b"",
        ] {
            let line = escape_payload(p);
            assert!(!line.contains('\n'), "{line}");
            assert_eq!(unescape_payload(&line).as_deref(), Some(p), "{line}");
        }
        assert_eq!(unescape_payload("\"\\x+1\""), None);
        assert_eq!(unescape_payload("\"\\q\""), None);
    }
}
