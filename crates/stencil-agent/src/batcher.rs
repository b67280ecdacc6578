//! The batcher (TRANSPORT.md §3): entries in, payloads out, each encoded once.
//!
//! An entry is what the pattern engine emitted for one record: its state changes and its one `Log`, with
//! the source checkpoint after it and its raw length. A payload is flushed when it holds `max_logs` logs,
//! before an entry would take it past `max_raw_bytes`, when its first entry is `max_wait` old (the driver
//! asks [`Batcher::deadline`]), or on demand. A payload whose encoding would exceed `max_batch_bytes` is
//! split in halves, recursively. A log too large even alone is dropped and counted, but its defines are
//! kept: a define is never dropped.

use std::time::{Duration, Instant};

use stencil_codec::datum::Datum;
use stencil_codec::{BatchEncoder, EncodeError};

use crate::payload::{Checkpoint, Payload};

/// Batching limits (defaults from TRANSPORT.md §13).
#[derive(Debug, Clone)]
pub struct BatchConfig {
    /// Logs per payload.
    pub max_logs: usize,
    /// Raw bytes per payload, counted once per log.
    pub max_raw_bytes: usize,
    /// Age of the first entry before a flush.
    pub max_wait: Duration,
    /// Largest encoded `StatefulBatch.data`.
    pub max_batch_bytes: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_logs: 1000,
            max_raw_bytes: 5_000_000,
            max_wait: Duration::from_secs(5),
            max_batch_bytes: 4 << 20,
        }
    }
}

/// One record's datums: state changes (deletes, defines), then its log.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The datums, in order.
    pub datums: Vec<Datum>,
    /// The source position after this record.
    pub checkpoint: Option<Checkpoint>,
    /// The record's raw length.
    pub raw_len: usize,
}

/// Why a payload was flushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    /// `max_logs` reached.
    Count,
    /// `max_raw_bytes` would be exceeded.
    Bytes,
    /// `max_wait` elapsed.
    Age,
    /// Asked for (shutdown, end of input).
    Manual,
}

/// Builds payloads from entries.
#[derive(Debug)]
pub struct Batcher {
    config: BatchConfig,
    encoder: BatchEncoder,
    entries: Vec<Entry>,
    logs: usize,
    raw: usize,
    first_at: Option<Instant>,
    next_seq: u64,
    /// Logs dropped because they were too large to send even alone.
    pub dropped_too_large: u64,
    /// Leave the v3 encoding to send time when a payload surely fits (see [`Payload::build_lazy`]).
    lazy: bool,
}

impl Batcher {
    /// An empty batcher; payload numbers start at 1.
    pub fn new(config: BatchConfig, encoder: BatchEncoder) -> Self {
        Batcher {
            config,
            encoder,
            entries: Vec::new(),
            logs: 0,
            raw: 0,
            first_at: None,
            next_seq: 1,
            dropped_too_large: 0,
            lazy: false,
        }
    }

    /// Leaves the v3 encoding of payloads that surely fit `max_batch_bytes` to send time (for
    /// pipelines whose streams negotiate the extensions).
    pub fn lazy_encoding(mut self, lazy: bool) -> Self {
        self.lazy = lazy;
        self
    }

    /// When the open payload must be flushed for age.
    pub fn deadline(&self) -> Option<Instant> {
        self.first_at.map(|t| t + self.config.max_wait)
    }

    /// Adds an entry; returns the payloads it caused to be flushed.
    pub fn push(&mut self, entry: Entry, now: Instant) -> Result<Vec<Payload>, EncodeError> {
        let mut out = Vec::new();
        if self.logs > 0 && self.raw + entry.raw_len > self.config.max_raw_bytes {
            out.extend(self.flush(Flush::Bytes)?);
        }
        let is_log = entry.datums.iter().any(|d| matches!(d, Datum::Log(_)));
        let mut entry = entry;
        if is_log && entry.raw_len > self.config.max_raw_bytes {
            // Too large to ever send: keep its defines, drop its log (counted).
            entry.datums.retain(|d| !matches!(d, Datum::Log(_)));
            self.dropped_too_large += 1;
            metrics::counter!(crate::metrics::LOGS_DROPPED, "reason" => "too_large").increment(1);
            tracing::warn!(
                raw_bytes = entry.raw_len,
                max = self.config.max_raw_bytes,
                "dropped a log larger than a whole batch"
            );
        } else if is_log {
            self.logs += 1;
            self.raw += entry.raw_len;
        }
        self.first_at.get_or_insert(now);
        self.entries.push(entry);
        if self.logs >= self.config.max_logs {
            out.extend(self.flush(Flush::Count)?);
        }
        Ok(out)
    }

    /// Flushes the open payload (if any), split as needed to respect `max_batch_bytes`.
    pub fn flush(&mut self, reason: Flush) -> Result<Vec<Payload>, EncodeError> {
        self.first_at = None;
        self.logs = 0;
        self.raw = 0;
        let entries = std::mem::take(&mut self.entries);
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        metrics::counter!("stencil_agent_batcher_flushes_total", "reason" => match reason {
            Flush::Count => "count",
            Flush::Bytes => "bytes",
            Flush::Age => "age",
            Flush::Manual => "manual",
        })
        .increment(1);
        let mut out = Vec::new();
        self.build(entries, &mut out)?;
        Ok(out)
    }

    fn build(&mut self, entries: Vec<Entry>, out: &mut Vec<Payload>) -> Result<(), EncodeError> {
        let mut checkpoints: Vec<Checkpoint> = Vec::new();
        let mut raw = 0;
        let mut count = 0;
        for e in &entries {
            count += e.datums.len();
            raw += e.raw_len;
            if let Some(c) = &e.checkpoint {
                match checkpoints.iter_mut().find(|x| x.source == c.source) {
                    Some(x) => x.offset = x.offset.max(c.offset),
                    None => checkpoints.push(c.clone()),
                }
            }
        }
        if self.lazy
            && 2 * crate::payload::estimated_size(raw, count) <= self.config.max_batch_bytes
        {
            // The entries are not needed again: their datums move into the payload, uncopied.
            let mut datums = Vec::with_capacity(count);
            for e in entries {
                datums.extend(e.datums);
            }
            out.push(Payload::build_lazy(self.next_seq, datums, checkpoints, raw));
            self.next_seq += 1;
            return Ok(());
        }
        // The entries stay until the payload is known to fit (a payload that does not is split).
        let mut datums = Vec::with_capacity(count);
        for e in &entries {
            datums.extend(e.datums.iter().cloned());
        }
        let payload = Payload::build(self.next_seq, datums, checkpoints, raw, &self.encoder)?;
        if payload.size <= self.config.max_batch_bytes || entries.len() < 2 {
            if payload.size > self.config.max_batch_bytes {
                // One entry that cannot fit: keep its defines, drop its log (counted).
                self.dropped_too_large += 1;
                metrics::counter!(crate::metrics::LOGS_DROPPED, "reason" => "too_large")
                    .increment(1);
                tracing::warn!(
                    payload_bytes = payload.size,
                    max = self.config.max_batch_bytes,
                    "dropped a log whose encoding is larger than a whole batch"
                );
                let defines: Vec<Datum> = entries
                    .into_iter()
                    .flat_map(|e| e.datums)
                    .filter(|d| !matches!(d, Datum::Log(_)))
                    .collect();
                let kept = Payload::build(
                    self.next_seq,
                    defines,
                    payload.checkpoints,
                    0,
                    &self.encoder,
                )?;
                self.next_seq += 1;
                out.push(kept);
                return Ok(());
            }
            self.next_seq += 1;
            out.push(payload);
            return Ok(());
        }
        let mut first = entries;
        let second = first.split_off(first.len() / 2);
        self.build(first, out)?;
        self.build(second, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stencil_codec::datum::{DictDefine, Log};
    use stencil_codec::{Compression, Generation};

    fn entry(i: u64, text: &str) -> Entry {
        Entry {
            datums: vec![
                Datum::DictDefine(DictDefine {
                    id: i + 2,
                    value: format!("d{i}"),
                }),
                Datum::Log(Log::raw(0, text)),
            ],
            checkpoint: Some(Checkpoint {
                source: "s".into(),
                offset: i,
            }),
            raw_len: text.len(),
        }
    }

    fn batcher(config: BatchConfig) -> Batcher {
        Batcher::new(config, BatchEncoder::new(Generation::V3, Compression::ZSTD))
    }

    #[test]
    fn flushes_on_count_bytes_and_age() {
        let now = Instant::now();
        let mut b = batcher(BatchConfig {
            max_logs: 3,
            max_raw_bytes: 100,
            ..BatchConfig::default()
        });
        assert!(b.push(entry(1, "a"), now).expect("ok").is_empty());
        assert_eq!(b.deadline(), Some(now + Duration::from_secs(5)));
        b.push(entry(2, "b"), now).expect("ok");
        let out = b.push(entry(3, "c"), now).expect("ok");
        assert_eq!(out.len(), 1, "count");
        assert_eq!(
            (out[0].logs, out[0].checkpoints[0].offset, out[0].seq),
            (3, 3, 1)
        );
        b.push(entry(4, &"x".repeat(60)), now).expect("ok");
        let out = b.push(entry(5, &"y".repeat(60)), now).expect("ok");
        assert_eq!(out.len(), 1, "flushed before going over the byte limit");
        assert_eq!(out[0].logs, 1);
        assert_eq!(b.flush(Flush::Age).expect("ok")[0].logs, 1);
        assert!(b.flush(Flush::Manual).expect("ok").is_empty());
    }

    #[test]
    fn oversized_payloads_split_and_giant_logs_keep_their_defines() {
        let now = Instant::now();
        let noise = |i: u64| {
            (0..64)
                .map(|k| format!("{:016x}", (i * 97 + k).wrapping_mul(0x9E37_79B9_7F4A_7C15)))
                .collect::<String>()
        };
        let mut b = batcher(BatchConfig {
            max_batch_bytes: 3_000,
            ..BatchConfig::default()
        });
        for i in 0..8 {
            b.push(entry(i, &noise(i)), now).expect("ok");
        }
        let out = b.flush(Flush::Manual).expect("ok");
        assert!(out.len() > 1, "split");
        assert!(out.iter().all(|p| p.size <= 3_000));
        assert_eq!(out.iter().map(|p| p.logs).sum::<usize>(), 8, "no log lost");
        let seqs: Vec<u64> = out.iter().map(|p| p.seq).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]));
        // A single log over the raw limit: dropped, its define kept.
        let mut b = batcher(BatchConfig {
            max_raw_bytes: 10,
            ..BatchConfig::default()
        });
        b.push(entry(1, &"z".repeat(50)), now).expect("ok");
        let out = b.flush(Flush::Manual).expect("ok");
        assert_eq!(out[0].logs, 0);
        assert!(out[0]
            .wire
            .iter()
            .any(|d| matches!(d, Datum::DictDefine(_))));
        assert_eq!(b.dropped_too_large, 1);
    }
}
