//! Reading files (or stdin) into line records for one pass (`stencil ship --once`).
//!
//! A record is a line without its terminator. The terminator is kept as metadata so that the intake can
//! write the file back byte for byte: `\n` is the default, `\r\n` is tagged `stencil_eol:crlf`, and a
//! last line without a newline is tagged `stencil_eol:none`. Lines longer than the cap are split (each
//! part but the last tagged `stencil_eol:none`) and counted, never dropped.

use std::io::{BufRead, BufReader, Read};

/// How a line ended in its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eol {
    /// `\n`.
    Lf,
    /// `\r\n`.
    CrLf,
    /// Nothing (last line without a newline, or a split part).
    None,
}

impl Eol {
    /// The tag that records a terminator other than `\n`.
    pub fn tag(self) -> Option<&'static str> {
        match self {
            Eol::Lf => None,
            Eol::CrLf => Some("stencil_eol:crlf"),
            Eol::None => Some("stencil_eol:none"),
        }
    }
}

/// Default line cap: 1 MiB.
pub const MAX_LINE: usize = 1 << 20;

/// Calls `each(line, eol, offset_after)` for every line of `reader`, whose first byte is at offset
/// `start` of its source. Returns the number of lines that had to be split because they exceeded
/// `max_line`.
pub fn for_each_line(
    reader: impl Read,
    start: u64,
    max_line: usize,
    mut each: impl FnMut(&[u8], Eol, u64),
) -> std::io::Result<u64> {
    let mut reader = BufReader::with_capacity(256 << 10, reader);
    let mut buf = Vec::with_capacity(4096);
    let mut offset = start;
    let mut split = 0;
    loop {
        buf.clear();
        let n = (&mut reader)
            .take(max_line as u64 + 1)
            .read_until(b'\n', &mut buf)?;
        if n == 0 {
            return Ok(split);
        }
        offset += n as u64;
        if buf.last() == Some(&b'\n') {
            buf.pop();
            if buf.last() == Some(&b'\r') {
                buf.pop();
                each(&buf, Eol::CrLf, offset);
            } else {
                each(&buf, Eol::Lf, offset);
            }
        } else if n > max_line {
            // Over the cap: emit this part without a terminator; the rest follows as the next record.
            split += 1;
            metrics::counter!("stencil_agent_lines_split_total").increment(1);
            each(&buf, Eol::None, offset);
        } else {
            each(&buf, Eol::None, offset);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8], max: usize) -> (Vec<(Vec<u8>, Eol)>, u64) {
        let mut out = Vec::new();
        let split =
            for_each_line(input, 0, max, |l, e, _| out.push((l.to_vec(), e))).expect("reads");
        (out, split)
    }

    #[test]
    fn terminators_are_recorded() {
        let (out, _) = lines(b"a\nb\r\nc", MAX_LINE);
        assert_eq!(
            out,
            vec![
                (b"a".to_vec(), Eol::Lf),
                (b"b".to_vec(), Eol::CrLf),
                (b"c".to_vec(), Eol::None)
            ]
        );
        let (out, _) = lines(b"\n\n", MAX_LINE);
        assert_eq!(out, vec![(vec![], Eol::Lf), (vec![], Eol::Lf)]);
    }

    #[test]
    fn long_lines_are_split_not_dropped() {
        let (out, split) = lines(b"abcdefghij\nxy\n", 4);
        assert_eq!(split, 2);
        let rebuilt: Vec<u8> = out
            .iter()
            .flat_map(|(l, e)| {
                l.iter().copied().chain(
                    match e {
                        Eol::Lf => &b"\n"[..],
                        Eol::CrLf => b"\r\n",
                        Eol::None => b"",
                    }
                    .iter()
                    .copied(),
                )
            })
            .collect();
        assert_eq!(rebuilt, b"abcdefghij\nxy\n");
    }
}
