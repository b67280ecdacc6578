//! The comparison a run's summary makes: the same lines through one plain zstd-1 stream per pipeline,
//! with a flushed block per batch of the same size, as the simplest alternative to our wire would send
//! them. It costs CPU on the reading side, so it is optional (`ShipOptions::compare`).

use stencil_codec::stream::{StreamCompressor, DEFAULT_WINDOW_LOG};

/// One zstd-1 stream of raw lines, flushed every `per_batch` lines.
pub(super) struct Baseline {
    ctx: StreamCompressor,
    pending: Vec<u8>,
    lines: usize,
    per_batch: usize,
    bytes: u64,
}

impl Baseline {
    /// `None` when zstd cannot make a context (the summary then reports 0).
    pub(super) fn new(per_batch: usize) -> Option<Self> {
        Some(Baseline {
            ctx: StreamCompressor::new(1, DEFAULT_WINDOW_LOG).ok()?,
            pending: Vec::new(),
            lines: 0,
            per_batch: per_batch.max(1),
            bytes: 0,
        })
    }

    /// One line (without its terminator; the stream ends each with `\n`).
    pub(super) fn line(&mut self, line: &[u8]) {
        self.pending.extend_from_slice(line);
        self.pending.push(b'\n');
        self.lines += 1;
        if self.lines == self.per_batch {
            self.flush();
        }
    }

    /// Ends the open batch.
    pub(super) fn flush(&mut self) {
        if self.lines > 0 {
            self.bytes += self
                .ctx
                .compress_batch(&self.pending)
                .map_or(0, |c| c.len()) as u64;
            self.pending.clear();
            self.lines = 0;
        }
    }

    /// Compressed bytes so far (flushed batches only).
    pub(super) fn bytes(&self) -> u64 {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_batches_cost_less_than_the_first() {
        let mut b = Baseline::new(2).expect("zstd");
        let line = b"2026-12-01 00:00:00 INFO worker 17 finished job 4242 in 13 ms";
        b.line(line);
        assert_eq!(b.bytes(), 0, "nothing flushed before the batch is full");
        b.line(line);
        let first = b.bytes();
        assert!(first > 0);
        b.line(line);
        b.line(line);
        let second = b.bytes() - first;
        assert!(
            second < first,
            "the stream keeps its context: {second} >= {first}"
        );
    }
}
