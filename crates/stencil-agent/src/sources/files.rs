//! Reading files (or stdin) into line records for one pass (`stencil ship --once`).
//!
//! A record is a line without its terminator. The terminator is kept as metadata so that the intake can
//! write the file back byte for byte: `\n` is the default, `\r\n` is tagged `stencil_eol:crlf`, and a
//! last line without a newline is tagged `stencil_eol:none`. Lines longer than the cap are split (each
//! part but the last tagged `stencil_eol:none`) and counted, never dropped.

use std::io::Read;

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

/// Cuts a byte stream into lines, wherever the chunk boundaries fall. Shared by one-pass reading and by
/// the file tail, so both frame lines the same way.
#[derive(Debug)]
pub struct Splitter {
    partial: Vec<u8>,
    offset: u64,
    max_line: usize,
    split: u64,
}

impl Splitter {
    /// A splitter whose first byte is at `start` of its source.
    pub fn new(start: u64, max_line: usize) -> Self {
        Splitter {
            partial: Vec::new(),
            offset: start,
            max_line: max_line.max(1),
            split: 0,
        }
    }

    /// Offset just past the last emitted line.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// True when bytes of an unfinished line are held.
    pub fn has_partial(&self) -> bool {
        !self.partial.is_empty()
    }

    /// Lines split because they exceeded the cap.
    pub fn split_lines(&self) -> u64 {
        self.split
    }

    /// Adds bytes; calls `each(line, eol, offset_after)` for every complete line, and for each `max_line`
    /// part of an over-long one.
    pub fn feed(&mut self, bytes: &[u8], each: &mut dyn FnMut(&[u8], Eol, u64)) {
        self.partial.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(pos) = self.partial[start..].iter().position(|&b| b == b'\n') {
            let end = start + pos;
            let (mut line, eol) = match self.partial[start..end].last() {
                Some(b'\r') => (&self.partial[start..end - 1], Eol::CrLf),
                _ => (&self.partial[start..end], Eol::Lf),
            };
            // An over-long line goes out in `max_line` parts; the last part carries the terminator.
            while line.len() > self.max_line {
                self.split += 1;
                metrics::counter!("stencil_agent_lines_split_total").increment(1);
                self.offset += self.max_line as u64;
                each(&line[..self.max_line], Eol::None, self.offset);
                line = &line[self.max_line..];
            }
            self.offset += (line.len() + if eol == Eol::CrLf { 2 } else { 1 }) as u64;
            each(line, eol, self.offset);
            start = end + 1;
        }
        self.partial.drain(..start);
        while self.partial.len() > self.max_line {
            self.split += 1;
            metrics::counter!("stencil_agent_lines_split_total").increment(1);
            let rest = self.partial.split_off(self.max_line);
            self.offset += self.max_line as u64;
            each(&self.partial, Eol::None, self.offset);
            self.partial = rest;
        }
    }

    /// Emits the held unfinished line, if any, without a terminator (end of input, idle timeout).
    pub fn flush(&mut self, each: &mut dyn FnMut(&[u8], Eol, u64)) {
        if !self.partial.is_empty() {
            self.offset += self.partial.len() as u64;
            each(&self.partial, Eol::None, self.offset);
            self.partial.clear();
        }
    }
}

/// Calls `each(line, eol, offset_after)` for every line of `reader`, whose first byte is at offset
/// `start` of its source. Returns the number of lines that had to be split because they exceeded
/// `max_line`.
pub fn for_each_line(
    mut reader: impl Read,
    start: u64,
    max_line: usize,
    mut each: impl FnMut(&[u8], Eol, u64),
) -> std::io::Result<u64> {
    let mut splitter = Splitter::new(start, max_line);
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        splitter.feed(&buf[..n], &mut each);
    }
    splitter.flush(&mut each);
    Ok(splitter.split_lines())
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
