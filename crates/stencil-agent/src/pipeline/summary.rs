//! What a run reports: the [`Summary`] of `stencil ship` (lines, bytes on the wire beside a plain zstd
//! stream of the same lines, replays, drops, skipped files), and the reading side's counters it is
//! added up from.

/// The outcome of a pass.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// Lines read and acked.
    pub lines: u64,
    /// Raw bytes read (terminators included).
    pub raw_bytes: u64,
    /// Bytes of `StatefulBatch.data` sent, snapshots and replays included.
    pub wire_bytes: u64,
    /// A plain zstd-1 stream of the same lines (one context per pipeline, a flushed block per batch of
    /// the same size), for comparison.
    pub zstd1_bytes: u64,
    /// The wire the streams used: `v3`, `native/3+stream-zstd`, … (`mixed` when pipelines differ).
    pub wire: String,
    /// Sources (files, sockets) whose logs the last streams sent as raw text, because structure did
    /// not pay for them (0 on plain v3).
    pub raw_sources: u64,
    /// Sources whose logs the last streams sent structured (0 on plain v3).
    pub structured_sources: u64,
    /// Seconds from start to the last ack.
    pub seconds: f64,
    /// Payloads replayed after a reconnect.
    pub replayed: u64,
    /// Patterns learned.
    pub patterns: u64,
    /// Lines longer than the cap, split.
    pub split_lines: u64,
    /// Logs dropped (too large even alone, or poison).
    pub dropped: u64,
    /// Files that could not be opened or read (each was warned about; the others were shipped).
    pub skipped_files: u64,
    /// Logs sent (lines joined by `multi_line` count once; lines dropped by a rule do not count).
    pub logs: u64,
    /// Events dropped by an `exclude_at_match` or `include_at_match` rule.
    pub excluded: u64,
    /// Logs sent but never acked, when the run was given up (see [`ShipOptions::abort`](crate::pipeline::ShipOptions::abort)).
    pub unacked: u64,
    /// Why the run was given up, if it was.
    pub gave_up: Option<String>,
}

impl Summary {
    /// The summary as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "lines": self.lines,
            "logs": self.logs,
            "excluded": self.excluded,
            "raw_bytes": self.raw_bytes,
            "wire_bytes": self.wire_bytes,
            "ratio_to_raw": ratio(self.raw_bytes, self.wire_bytes),
            "stream_zstd1_bytes": self.zstd1_bytes,
            "ratio_to_stream_zstd1": ratio(self.zstd1_bytes, self.wire_bytes),
            "wire": self.wire,
            "raw_sources": self.raw_sources,
            "structured_sources": self.structured_sources,
            "lines_per_sec": if self.seconds > 0.0 { self.lines as f64 / self.seconds } else { 0.0 },
            "seconds": self.seconds,
            "duplicates_replayed": self.replayed,
            "patterns": self.patterns,
            "split_lines": self.split_lines,
            "dropped": self.dropped,
            "skipped_files": self.skipped_files,
            "unacked": self.unacked,
            "gave_up": self.gave_up,
        })
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// Counters of the reading side.
#[derive(Debug, Default)]
pub(crate) struct ReadStats {
    pub(crate) lines: u64,
    pub(crate) logs: u64,
    pub(crate) excluded: u64,
    pub(crate) raw: u64,
    pub(crate) zstd1: u64,
    pub(crate) patterns: u64,
    pub(crate) split: u64,
    pub(crate) dropped: u64,
    pub(crate) skipped_files: u64,
}

impl ReadStats {
    pub(crate) fn add(&mut self, o: &ReadStats) {
        self.skipped_files += o.skipped_files;
        self.lines += o.lines;
        self.logs += o.logs;
        self.excluded += o.excluded;
        self.raw += o.raw;
        self.zstd1 += o.zstd1;
        self.patterns += o.patterns;
        self.split += o.split;
        self.dropped += o.dropped;
    }
}
