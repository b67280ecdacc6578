//! A reversible text form for records that are not valid UTF-8 (PATTERNS.md §1.3, option B).
//!
//! Protobuf strings must be UTF-8, but a log line can hold any bytes. The agent escapes such a line: each
//! byte of an invalid sequence becomes the private-use character [`ESCAPE`] followed by two upper-case hex
//! digits, and a literal [`ESCAPE`] becomes two of them. The agent marks the log with the tag
//! [`ESCAPED_TAG`] so that only those logs are unescaped: valid UTF-8 lines are never touched, and a foreign
//! intake shows readable text with visible escapes and loses nothing.

use std::borrow::Cow;

/// The escape character, U+F8FE (private use, in the BMP so templates may hold it).
pub const ESCAPE: char = '\u{F8FE}';

/// The tag (`key:value`) on logs whose text was escaped.
pub const ESCAPED_TAG: &str = "stencil_utf8:escaped";

/// Returns the text unchanged when `bytes` is valid UTF-8 (`Cow::Borrowed`), otherwise its escaped form.
pub fn escape(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => Cow::Owned(escape_always(bytes)),
    }
}

/// Escapes every invalid byte and every literal [`ESCAPE`], whatever the input.
pub fn escape_always(mut bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 16);
    loop {
        match std::str::from_utf8(bytes) {
            Ok(valid) => {
                push_escaping_marker(&mut out, valid);
                return out;
            }
            Err(e) => {
                let (valid, rest) = bytes.split_at(e.valid_up_to());
                // Safe by construction: `valid_up_to` bytes are valid UTF-8.
                push_escaping_marker(&mut out, std::str::from_utf8(valid).unwrap_or_default());
                let bad = e.error_len().unwrap_or(rest.len()).max(1).min(rest.len());
                for b in &rest[..bad] {
                    out.push(ESCAPE);
                    out.push(hex_digit(b >> 4));
                    out.push(hex_digit(b & 0xf));
                }
                bytes = &rest[bad..];
            }
        }
    }
}

fn push_escaping_marker(out: &mut String, text: &str) {
    for (i, part) in text.split(ESCAPE).enumerate() {
        if i > 0 {
            out.push(ESCAPE);
            out.push(ESCAPE);
        }
        out.push_str(part);
    }
}

fn hex_digit(n: u8) -> char {
    char::from(b"0123456789ABCDEF"[usize::from(n & 0xf)])
}

/// Why escaped text could not be undone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad escape at byte {0}: the escape character must be followed by itself or two upper-case hex digits")]
pub struct BadEscape(pub usize);

/// Undoes [`escape_always`]. A malformed escape is an error, never a guess.
pub fn unescape(text: &str) -> Result<Vec<u8>, BadEscape> {
    let mut out = Vec::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(ESCAPE) {
        out.extend_from_slice(&rest.as_bytes()[..at]);
        let after = &rest[at + ESCAPE.len_utf8()..];
        let offset = text.len() - rest.len() + at;
        if let Some(tail) = after.strip_prefix(ESCAPE) {
            out.extend_from_slice(ESCAPE.encode_utf8(&mut [0; 4]).as_bytes());
            rest = tail;
            continue;
        }
        let hex = after.as_bytes().get(..2).ok_or(BadEscape(offset))?;
        let value = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        };
        match (value(hex[0]), value(hex[1])) {
            (Some(hi), Some(lo)) => out.push(hi << 4 | lo),
            _ => return Err(BadEscape(offset)),
        }
        rest = &after[2..];
    }
    out.extend_from_slice(rest.as_bytes());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_invalid_utf8_and_literal_markers() {
        let marker = ["marker \u{F8FE} literal ".as_bytes(), b"\xF0"].concat();
        let cases: [&[u8]; 7] = [
            b"plain",
            b"bad \xff byte",
            b"\xc3\x28 overlong-ish",
            b"truncated \xe2\x82",
            b"lone \x80 continuation",
            &marker,
            b"\xed\xa0\x80 surrogate",
        ];
        for case in cases {
            let escaped = escape_always(case);
            assert_eq!(
                unescape(&escaped).expect("valid escape"),
                case,
                "{escaped:?}"
            );
        }
        assert!(matches!(escape(b"valid"), Cow::Borrowed("valid")));
        assert_eq!(escape(b"a\xffb"), "a\u{F8FE}FFb");
    }

    #[test]
    fn malformed_escapes_are_errors() {
        assert_eq!(unescape("x\u{F8FE}"), Err(BadEscape(1)));
        assert_eq!(unescape("x\u{F8FE}G1"), Err(BadEscape(1)));
        assert_eq!(unescape("x\u{F8FE}ff"), Err(BadEscape(1)));
    }
}
