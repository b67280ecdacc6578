//! Joining the lines of one event (a stack trace, a multi-line message) into one log: the `multi_line`
//! processing rule of the Datadog Agent, plus an automatic mode for the usual stack traces.
//!
//! - With a pattern, a line that matches starts a new event and a line that does not is added to the
//!   event before it (the Datadog Agent's rule).
//! - `auto` joins what the common runtimes print after a log line: indented lines (Java `\tat …`,
//!   Python `  File …`, Go `\t/path/x.go:12`), `Caused by:`, `... 12 more`, Java and Python exception
//!   lines, Python's `Traceback (most recent call last):`, Go's `goroutine 1 [running]:` and its frames.
//!   Anything else starts a new event, so a log without traces is shipped line for line.
//!
//! The lines of an event are joined with their own terminators (`\n`, or `\r\n` for a CRLF file), so the
//! intake rebuilds the file byte for byte; the event ends with its last line's terminator. An event is
//! emitted when the next one starts, when it reaches the size or line cap, when it has waited
//! `flush_after` (follow mode: the writer may never write another line), and when its input ends.

use std::sync::LazyLock;
use std::time::Instant;

use regex::bytes::Regex;

use crate::sources::files::Eol;

/// How a source's lines are joined into events.
#[derive(Debug, Clone)]
pub enum MultiLine {
    /// A line matching this starts a new event (`multi_line` with `pattern`).
    Pattern(Regex),
    /// Stack traces of the common runtimes are joined to the line before them.
    Auto,
}

/// Most lines in one event: a runaway (a whole file of indented lines) is cut into events of this many.
pub const MAX_EVENT_LINES: usize = 1000;

/// One joined event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The lines, each but the last followed by its own terminator.
    pub text: Vec<u8>,
    /// The last line's terminator.
    pub eol: Eol,
    /// The offset after the last line in its source (the event's checkpoint).
    pub offset: u64,
    /// Lines joined.
    pub lines: usize,
}

#[derive(Debug)]
struct Pending {
    event: Event,
    started: Instant,
    /// A trace is under way (`auto`): its frames and final exception line are joined.
    in_trace: bool,
}

/// The event being joined for one input (file, connection or stdin).
#[derive(Debug)]
pub struct Aggregator {
    mode: MultiLine,
    max_bytes: usize,
    pending: Option<Pending>,
}

impl Aggregator {
    /// An aggregator whose events are at most `max_bytes` long (the line cap).
    pub fn new(mode: MultiLine, max_bytes: usize) -> Aggregator {
        Aggregator {
            mode,
            max_bytes: max_bytes.max(1),
            pending: None,
        }
    }

    /// Adds a line that ended at `offset`; returns the event it completed, if it starts a new one.
    pub fn push(&mut self, line: &[u8], eol: Eol, offset: u64, now: Instant) -> Option<Event> {
        let joins = match &self.pending {
            None => false,
            Some(p) => {
                let fits = p.event.text.len() + terminator(p.event.eol).len() + line.len()
                    <= self.max_bytes
                    && p.event.lines < MAX_EVENT_LINES;
                // A part of a split line always goes with the part before it.
                fits && (p.event.eol == Eol::None || self.continues(line, p))
            }
        };
        if joins {
            if let Some(p) = self.pending.as_mut() {
                p.event.text.extend_from_slice(terminator(p.event.eol));
                p.event.text.extend_from_slice(line);
                p.event.eol = eol;
                p.event.offset = offset;
                p.event.lines += 1;
                p.in_trace = true;
            }
            return None;
        }
        let done = self.pending.take().map(|p| p.event);
        self.pending = Some(Pending {
            event: Event {
                text: line.to_vec(),
                eol,
                offset,
                lines: 1,
            },
            started: now,
            in_trace: matches!(self.mode, MultiLine::Auto) && starts_trace(line),
        });
        done
    }

    /// When the pending event started, if there is one.
    pub fn started(&self) -> Option<Instant> {
        self.pending.as_ref().map(|p| p.started)
    }

    /// The pending event, now (its input ended, or it waited long enough).
    pub fn take(&mut self) -> Option<Event> {
        self.pending.take().map(|p| p.event)
    }

    fn continues(&self, line: &[u8], pending: &Pending) -> bool {
        match &self.mode {
            MultiLine::Pattern(start) => !start.is_match(line),
            MultiLine::Auto => auto_continues(line, pending.in_trace),
        }
    }
}

fn terminator(eol: Eol) -> &'static [u8] {
    match eol {
        Eol::Lf => b"\n",
        Eol::CrLf => b"\r\n",
        Eol::None => b"",
    }
}

/// A line that opens a trace whose next lines would not look like continuations on their own (Go's
/// `panic:` is followed by a blank line and `goroutine N [running]:`).
fn starts_trace(line: &[u8]) -> bool {
    line.starts_with(b"panic: ") || line.starts_with(b"fatal error: ")
}

static CONTINUATION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"^(?:[ \t]",                                  // indented: frames, wrapped text
        r"|Caused by: ",                               // Java
        r"|\.\.\. \d+ (?:more|common frames omitted)", // Java
        r"|Traceback \(most recent call last\):",      // Python
        r"|During handling of the above exception",    // Python
        r"|The above exception was the direct cause",  // Python
        r"|goroutine \d+ \[[^\]]*\]:$",                // Go
        r"|(?:[A-Za-z_$][\w$]*\.)+[A-Za-z_$][\w$]*(?:Exception|Error|Throwable)(?::|$)", // Java
        r")"
    ))
    .unwrap_or_else(|e| unreachable!("a fixed pattern: {e}"))
});

/// Lines that go on a trace already under way: Python's final exception line, Go's frames and
/// `created by`, and blank lines (Go separates the panic from its goroutines with one).
static IN_TRACE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"^(?:$",
        r"|[A-Za-z_][\w.]*(?:Error|Exception|Warning|Exit|Interrupt|Fault)(?::|$)", // Python
        r"|created by ",                                                            // Go
        r"|[\w./\-]*[\w)]\(.*\)$",                                                  // Go frame
        r")"
    ))
    .unwrap_or_else(|e| unreachable!("a fixed pattern: {e}"))
});

fn auto_continues(line: &[u8], in_trace: bool) -> bool {
    CONTINUATION.is_match(line) || (in_trace && IN_TRACE.is_match(line))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every event of `text` (LF lines) through an aggregator.
    fn events(mode: MultiLine, text: &str) -> Vec<String> {
        let mut agg = Aggregator::new(mode, 1 << 20);
        let now = Instant::now();
        let mut out = Vec::new();
        let mut offset = 0;
        for line in text.lines() {
            offset += line.len() as u64 + 1;
            out.extend(agg.push(line.as_bytes(), Eol::Lf, offset, now));
        }
        out.extend(agg.take());
        out.into_iter()
            .map(|e| String::from_utf8(e.text).unwrap())
            .collect()
    }

    #[test]
    fn pattern_starts_events() {
        let got = events(
            MultiLine::Pattern(Regex::new(r"^\d{4}-").unwrap()),
            "2024-01-01 a\n  more a\nplain a\n2024-01-02 b\n2024-01-03 c\n  more c\n",
        );
        assert_eq!(
            got,
            [
                "2024-01-01 a\n  more a\nplain a",
                "2024-01-02 b",
                "2024-01-03 c\n  more c"
            ]
        );
    }

    #[test]
    fn auto_joins_java_python_and_go_traces() {
        let java = "2024-01-01 12:00:00 ERROR Request failed\njava.lang.IllegalStateException: boom\n\tat com.example.A.run(A.java:10)\n\tat com.example.Main.main(Main.java:5)\nCaused by: java.io.IOException: disk\n\t... 2 more\n2024-01-01 12:00:01 INFO next\n";
        assert_eq!(events(MultiLine::Auto, java).len(), 2);
        let python = "2024-01-01 ERROR oops\nTraceback (most recent call last):\n  File \"x.py\", line 3, in <module>\n    f()\nValueError: bad value\n2024-01-01 INFO after\n";
        let got = events(MultiLine::Auto, python);
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].ends_with("ValueError: bad value"));
        let go = "panic: runtime error: index out of range [3] with length 2\n\ngoroutine 1 [running]:\nmain.main()\n\t/tmp/x.go:8 +0x1d\nexit status 2\n";
        let got = events(MultiLine::Auto, go);
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].ends_with("+0x1d"));
        // Plain logs stay one event per line; a blank line outside a trace is its own log.
        let plain = "a 1\nb: 2\n\nValueError-looking: but no trace\nmain.main()\n";
        assert_eq!(events(MultiLine::Auto, plain).len(), 5);
    }

    #[test]
    fn joined_with_own_terminators_and_capped() {
        let mut agg = Aggregator::new(MultiLine::Auto, 20);
        let now = Instant::now();
        assert_eq!(agg.push(b"head", Eol::CrLf, 6, now), None);
        assert_eq!(agg.push(b"  frame", Eol::CrLf, 15, now), None);
        // Over the size cap: the next continuation starts a new event.
        let done = agg.push(b"  another frame", Eol::Lf, 31, now).unwrap();
        assert_eq!(done.text, b"head\r\n  frame");
        assert_eq!((done.eol, done.offset, done.lines), (Eol::CrLf, 15, 2));
        assert_eq!(agg.take().unwrap().text, b"  another frame");
        assert_eq!(agg.take(), None);
    }
}
