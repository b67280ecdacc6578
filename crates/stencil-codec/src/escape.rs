//! A reversible text form for records that are not valid UTF-8 (PATTERNS.md §1.3, option B).
//!
//! Protobuf strings must be UTF-8, but a log line can hold any bytes. The agent escapes such a line: each
//! byte of an invalid sequence becomes the private-use character [`ESCAPE`] followed by two upper-case hex
//! digits, and a literal [`ESCAPE`] becomes two of them. The agent marks the log with the tag
//! [`ESCAPED_TAG`] so that only those logs are unescaped: valid UTF-8 lines are never touched, and a foreign
//! intake shows readable text with visible escapes and loses nothing.

//!
//! Tag values have a second, simpler form: tags travel comma-joined, so a comma inside a value (a file
//! named `a,b.log`) would split it. [`escape_tag_value`] percent-encodes `,`, `%` and every byte that is
//! not valid UTF-8 (a file name need not be UTF-8), and [`unescape_tag_value`] reverses it.

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

/// Percent-encodes a tag value: `,` → `%2C`, `%` → `%25`, and each byte of an invalid UTF-8 sequence
/// → `%XX`. Values without those are returned as they are.
pub fn escape_tag_value(bytes: &[u8]) -> Cow<'_, str> {
    if let Ok(text) = std::str::from_utf8(bytes) {
        if !text.contains([',', '%']) {
            return Cow::Borrowed(text);
        }
    }
    let mut out = String::with_capacity(bytes.len() + 8);
    let mut rest = bytes;
    while !rest.is_empty() {
        let (valid, bad) = match std::str::from_utf8(rest) {
            Ok(v) => (v, 0),
            Err(e) => {
                let (v, r) = rest.split_at(e.valid_up_to());
                (
                    std::str::from_utf8(v).unwrap_or_default(),
                    e.error_len().unwrap_or(r.len()).max(1),
                )
            }
        };
        for c in valid.chars() {
            match c {
                ',' => out.push_str("%2C"),
                '%' => out.push_str("%25"),
                c => out.push(c),
            }
        }
        let after = &rest[valid.len()..];
        for b in &after[..bad.min(after.len())] {
            out.push_str(&format!("%{b:02X}"));
        }
        rest = &after[bad.min(after.len())..];
    }
    Cow::Owned(out)
}

/// Reverses [`escape_tag_value`]. A `%` not followed by two hex digits stays as it is.
pub fn unescape_tag_value(text: &str) -> Cow<'_, [u8]> {
    if !text.contains('%') {
        return Cow::Borrowed(text.as_bytes());
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    Cow::Owned(out)
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

    #[test]
    fn tag_values_round_trip() {
        for raw in [
            &b"/var/log/app.log"[..],
            b"/logs/a,b.log",
            b"/logs/100%.log",
            b"/logs/%2C.log",
            b"/logs/\xff\xfe-latin1-\xe9.log",
            b"",
        ] {
            let escaped = escape_tag_value(raw);
            assert!(!escaped.contains(','), "{escaped}");
            assert_eq!(&*unescape_tag_value(&escaped), raw, "{escaped}");
        }
        assert_eq!(escape_tag_value(b"/logs/a,b.log"), "/logs/a%2Cb.log");
        assert!(matches!(escape_tag_value(b"/plain.log"), Cow::Borrowed(_)));
    }
}
