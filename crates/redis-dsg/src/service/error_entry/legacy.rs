//! Error entries written by the original go-redis-dsg, decoded exactly.
//!
//! The original stored a failed message as
//! `fmt.Sprintf("m:%q e:%q", msg, "Error code N")`. Go's `%q` on a string is
//! `strconv.Quote`: printable runes (`unicode.IsPrint`) as they are, `\"`
//! and `\\` backslashed, `\a \b \f \n \r \t \v`, other runes below U+0020
//! and U+007F as `\xHH`, other non-printable runes as `\uHHHH` /
//! `\UHHHHHHHH`, and every byte that is not part of valid UTF-8 as `\xHH`.
//! Decoding is `strconv.Unquote`, so any bytes at all come back exactly.
//!
//! The decoder accepts what `strconv.Unquote` accepts (also the escapes
//! `%q` never writes: octal `\NNN`, upper-case hex digits, raw control
//! bytes other than a newline), with one exception: a raw byte that is not
//! valid UTF-8, which Unquote would turn into U+FFFD (losing it) and `%q`
//! never writes. Anything it rejects is not a legacy entry, and the caller
//! keeps the entry whole (`unknown`), so no byte is ever lost or invented.

/// Decodes `m:"<payload>" e:"<detail>"` as the original wrote it. Returns
/// the payload's exact bytes and the detail (lossy UTF-8: it is only
/// shown), or `None` when the entry is not exactly two Go-quoted strings in
/// that frame (unterminated quote, bad escape, trailing bytes, …).
///
/// Each quoted string ends at its first unescaped `"`, so a message that
/// held `" e:"` (written `\" e:\"` by Go) decodes correctly without any
/// "last separator" guess.
pub(super) fn parse(entry: &[u8]) -> Option<(Vec<u8>, String)> {
    let rest = entry.strip_prefix(b"m:")?;
    let (payload, rest) = unquote_prefix(rest)?;
    let rest = rest.strip_prefix(b" e:")?;
    let (detail, rest) = unquote_prefix(rest)?;
    if !rest.is_empty() {
        return None;
    }
    Some((payload, String::from_utf8_lossy(&detail).into_owned()))
}

/// Unquotes the Go double-quoted string literal at the start of `s`
/// (`strconv.Unquote` rules, see the module docs); returns its bytes and
/// what follows the closing quote.
fn unquote_prefix(s: &[u8]) -> Option<(Vec<u8>, &[u8])> {
    let mut rest = s.strip_prefix(b"\"")?;
    let mut out = Vec::with_capacity(rest.len());
    loop {
        // Copy the run of bytes that need no attention in one go.
        let plain = rest
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || b == b'\n' || b >= 0x80)
            .unwrap_or(rest.len());
        out.extend_from_slice(&rest[..plain]);
        rest = &rest[plain..];
        // Nothing left before a closing quote: not a Go string.
        let (&c, tail) = rest.split_first()?;
        match c {
            b'"' => return Some((out, tail)),
            // Unquote rejects a raw newline.
            b'\n' => return None,
            b'\\' => rest = unescape(tail, &mut out)?,
            _ => {
                // A raw UTF-8 sequence: copied as it is when valid.
                let width = match c {
                    0xC2..=0xDF => 2,
                    0xE0..=0xEF => 3,
                    0xF0..=0xF4 => 4,
                    _ => return None,
                };
                let seq = rest.get(..width)?;
                std::str::from_utf8(seq).ok()?;
                out.extend_from_slice(seq);
                rest = &rest[width..];
            }
        }
    }
}

/// Decodes one escape (the part after the backslash) into `out`; returns
/// what follows it (`strconv.UnquoteChar` with quote `"`).
fn unescape<'a>(s: &'a [u8], out: &mut Vec<u8>) -> Option<&'a [u8]> {
    let (&c, rest) = s.split_first()?;
    let simple = match c {
        b'a' => Some(0x07),
        b'b' => Some(0x08),
        b'f' => Some(0x0C),
        b'n' => Some(b'\n'),
        b'r' => Some(b'\r'),
        b't' => Some(b'\t'),
        b'v' => Some(0x0B),
        b'\\' => Some(b'\\'),
        b'"' => Some(b'"'),
        _ => None,
    };
    if let Some(b) = simple {
        out.push(b);
        return Some(rest);
    }
    match c {
        // One byte, any value (not UTF-8 encoded).
        b'x' => {
            let v = u8::try_from(hex(rest.get(..2)?)?).ok()?;
            out.push(v);
            Some(&rest[2..])
        }
        // A code point, UTF-8 encoded. Surrogates and values past
        // U+10FFFF are rejected: Go refuses them or writes U+FFFD, so
        // neither can be decoded exactly.
        b'u' | b'U' => {
            let n = if c == b'u' { 4 } else { 8 };
            let ch = char::from_u32(hex(rest.get(..n)?)?)?;
            out.extend_from_slice(ch.encode_utf8(&mut [0; 4]).as_bytes());
            Some(&rest[n..])
        }
        // Three octal digits, at most \377: one byte.
        b'0'..=b'7' => {
            let mut v = u32::from(c - b'0');
            for &d in rest.get(..2)? {
                if !(b'0'..=b'7').contains(&d) {
                    return None;
                }
                v = (v << 3) | u32::from(d - b'0');
            }
            out.push(u8::try_from(v).ok()?);
            Some(&rest[2..])
        }
        // `\'` is valid only in single quotes; anything else is no escape.
        _ => None,
    }
}

/// The value of ASCII hex digits (either case).
fn hex(digits: &[u8]) -> Option<u32> {
    digits.iter().try_fold(0u32, |v, &d| {
        let x = char::from(d).to_digit(16)?;
        Some((v << 4) | x)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(entry: &[u8]) -> Option<Vec<u8>> {
        parse(entry).map(|(p, _)| p)
    }

    #[test]
    fn plain_and_escaped_entries_decode() {
        assert_eq!(
            parse(br#"m:"abc" e:"Error code 7""#),
            Some((b"abc".to_vec(), "Error code 7".to_string()))
        );
        assert_eq!(
            payload(br#"m:"has \"quotes\" and \\ and \n\t\a\b\f\v\r" e:"x""#).as_deref(),
            Some(&b"has \"quotes\" and \\ and \n\t\x07\x08\x0c\x0b\r"[..])
        );
        assert_eq!(payload(br#"m:"" e:"""#).as_deref(), Some(&b""[..]));
    }

    #[test]
    fn a_separator_inside_the_message_is_part_of_it() {
        // Go writes the message `x" e:"y` as `"x\" e:\"y"`.
        assert_eq!(
            parse(br#"m:"x\" e:\"y" e:"Error code 3""#),
            Some((br#"x" e:"y"#.to_vec(), "Error code 3".to_string()))
        );
        // Unescaped quotes are not something Go writes: the frame breaks.
        assert_eq!(payload(br#"m:"abc "quoted" x" e:"Error code 7""#), None);
        assert_eq!(payload(br#"m:"x" e:"y" e:"Error code 1""#), None);
    }

    #[test]
    fn every_escape_form_unquote_accepts() {
        assert_eq!(
            payload(br#"m:"\xff\xFE\x00" e:"""#).as_deref(),
            Some(&b"\xff\xfe\x00"[..])
        );
        assert_eq!(
            payload(br#"m:"\377\000\101" e:"""#).as_deref(),
            Some(&b"\xff\x00A"[..])
        );
        assert_eq!(
            payload(br#"m:"\u00e9\u200B\U0001F600" e:"""#).as_deref(),
            Some("é\u{200b}😀".as_bytes())
        );
        // Raw UTF-8 and raw control bytes other than a newline.
        assert_eq!(
            payload("m:\"é\t\x01\" e:\"\"".as_bytes()).as_deref(),
            Some("é\t\x01".as_bytes())
        );
    }

    #[test]
    fn malformed_entries_are_rejected() {
        for bad in [
            &br#"m:"unterminated e:"Error code 1""#[..],
            br#"m:"abc" e:"unterminated"#,
            br#"m:"abc"#,
            br#"m:"bad \q escape" e:"x""#,
            br#"m:"single \' quote" e:"x""#,
            br#"m:"short \x4" e:"x""#,
            br#"m:"not hex \xg0" e:"x""#,
            br#"m:"octal \400 too big" e:"x""#,
            br#"m:"octal \08 digit" e:"x""#,
            br#"m:"surrogate \ud800" e:"x""#,
            br#"m:"too big \U00110000" e:"x""#,
            br#"m:"short \u12" e:"x""#,
            br#"m:"trailing backslash \"#,
            b"m:\"raw\nnewline\" e:\"x\"",
            b"m:\"raw invalid \xff\" e:\"x\"",
            b"m:\"truncated \xe4\xb8\" e:\"x\"",
            b"m:\"overlong \xc0\xaf\" e:\"x\"",
            b"m:\"encoded surrogate \xed\xa0\x80\" e:\"x\"",
            br#"m:"abc" e:"x" "#,
            br#"m:"abc"e:"x""#,
            br#"m: "abc" e:"x""#,
            br#"m:abc e:x"#,
            b"",
        ] {
            assert_eq!(parse(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }
}
