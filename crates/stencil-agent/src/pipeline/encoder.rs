//! Lines in, payloads out: the part of a pipeline between its sources and its stream worker. Per
//! input it joins `multi_line` events, applies the source's processing rules and status detection,
//! runs the pattern engine with the source's metadata, and batches; payloads go to the worker over a
//! bounded channel (back-pressure reaches the readers). One pass and follow mode share it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use stencil_codec::{BatchEncoder, Generation};
use stencil_patterns::{Engine, Meta};
use tokio::sync::mpsc;

use super::baseline::Baseline;
use super::summary::ReadStats;
use super::{now_ms, ShipError, ShipOptions};
use crate::batcher::{BatchConfig, Batcher, Entry, Flush};
use crate::multiline::Aggregator;
use crate::payload::{Checkpoint, Payload};
use crate::sources::files::{for_each_line, Eol};
use crate::sources::Source;

/// What the encoder keeps per source: the tags every log carries (built once), and the handles of its
/// metrics.
struct SourceState {
    common: Vec<String>,
    lines: metrics::Counter,
    bytes: metrics::Counter,
}

/// The event being joined for one input (`multi_line`), with what its log will carry.
struct Joining {
    source: usize,
    tag: Option<String>,
    aggregator: Aggregator,
}

/// Lines in, payloads out: multi-line joining, the processing rules, the engine, the batcher, the
/// comparison baseline and the counters.
pub(super) struct LineEncoder {
    engine: Engine,
    batcher: Batcher,
    tx: mpsc::Sender<Payload>,
    pub(super) sources: Arc<[Source]>,
    states: Vec<SourceState>,
    /// Events being joined, by checkpoint id of their input.
    joining: HashMap<Arc<str>, Joining>,
    /// The plain zstd stream the summary compares with, if asked for.
    baseline: Option<Baseline>,
    max_line: usize,
    pub(super) stats: ReadStats,
    /// Logs sent so far, across pipelines (for the unacked count of a run given up).
    read_lines: Arc<AtomicU64>,
}

impl LineEncoder {
    pub(super) fn new(
        options: &ShipOptions,
        sources: Arc<[Source]>,
        max_wait: Duration,
        tx: mpsc::Sender<Payload>,
        read_lines: Arc<AtomicU64>,
    ) -> Self {
        let encoder = BatchEncoder::new(Generation::V3, options.compression);
        let states = sources
            .iter()
            .map(|s| SourceState {
                common: s.common_tags(),
                lines: metrics::counter!(crate::metrics::SOURCE_LINES, "source" => s.name.clone()),
                bytes: metrics::counter!(crate::metrics::SOURCE_BYTES, "source" => s.name.clone()),
            })
            .collect();
        LineEncoder {
            engine: Engine::new(options.engine.clone()),
            batcher: Batcher::new(
                BatchConfig {
                    max_wait,
                    ..options.batch.clone()
                },
                encoder,
            )
            .lazy_encoding(!options.extensions.is_empty()),
            tx,
            sources,
            states,
            joining: HashMap::new(),
            baseline: options
                .compare
                .then(|| Baseline::new(options.batch.max_logs))
                .flatten(),
            max_line: options.max_line(),
            stats: ReadStats::default(),
            read_lines,
        }
    }

    /// Encodes every line of `reader` (whose first byte is at `start` in its input) of source `src`
    /// under checkpoint id `key`, tagged `tag`, and then the event it left pending. The outer error is
    /// fatal (the pipeline stopped); the inner one is the input's own read error, after which the rest
    /// of the input is skipped.
    pub(super) fn read_all(
        &mut self,
        reader: impl std::io::Read,
        start: u64,
        src: usize,
        key: &Arc<str>,
        tag: Option<&str>,
    ) -> Result<std::io::Result<()>, ShipError> {
        let mut failed = None;
        let read = for_each_line(reader, start, self.max_line, |line, eol, offset| {
            if failed.is_none() {
                failed = self.line(src, line, eol, offset, key, tag).err();
            }
        });
        if let Some(e) = failed {
            return Err(e);
        }
        self.end_input(key)?;
        Ok(read.map(|split| self.stats.split += split))
    }

    fn send(&self, payloads: Vec<Payload>) -> Result<(), ShipError> {
        for p in payloads {
            self.tx
                .blocking_send(p)
                .map_err(|_| ShipError::WorkerStopped)?;
        }
        Ok(())
    }

    /// Takes one line of source `src` ending at `offset` of the input `key`; `tag` is the input's
    /// `filename:` (or `peer:`) tag.
    pub(super) fn line(
        &mut self,
        src: usize,
        line: &[u8],
        eol: Eol,
        offset: u64,
        key: &Arc<str>,
        tag: Option<&str>,
    ) -> Result<(), ShipError> {
        let terminator = match eol {
            Eol::Lf => 1,
            Eol::CrLf => 2,
            Eol::None => 0,
        };
        self.stats.lines += 1;
        self.stats.raw += (line.len() + terminator) as u64;
        if let Some(state) = self.states.get(src) {
            state.lines.increment(1);
            state.bytes.increment((line.len() + terminator) as u64);
        }
        if let Some(baseline) = self.baseline.as_mut() {
            baseline.line(line);
        }
        let Some(mode) = self.sources.get(src).and_then(|s| s.multi_line.as_ref()) else {
            return self.emit(src, line, eol, offset, key, tag);
        };
        let max_line = self.max_line;
        // The mode is cloned once per input, when its first line arrives; not per line.
        let joining = self.joining.entry(key.clone()).or_insert_with(|| Joining {
            source: src,
            tag: tag.map(str::to_owned),
            aggregator: Aggregator::new(mode.clone(), max_line),
        });
        match joining.aggregator.push(line, eol, offset, Instant::now()) {
            Some(done) => self.emit(src, &done.text, done.eol, done.offset, key, tag),
            None => Ok(()),
        }
    }

    /// Emits the event pending for input `key` (its input ended).
    fn end_input(&mut self, key: &Arc<str>) -> Result<(), ShipError> {
        if let Some(mut j) = self.joining.remove(key) {
            if let Some(done) = j.aggregator.take() {
                self.emit(
                    j.source,
                    &done.text,
                    done.eol,
                    done.offset,
                    key,
                    j.tag.as_deref(),
                )?;
            }
        }
        Ok(())
    }

    /// Applies the source's rules to one event and encodes it.
    fn emit(
        &mut self,
        src: usize,
        event: &[u8],
        eol: Eol,
        offset: u64,
        key: &Arc<str>,
        tag: Option<&str>,
    ) -> Result<(), ShipError> {
        let Some(source) = self.sources.get(src) else {
            return Err(ShipError::UnknownSource(src));
        };
        let text = match crate::processing::apply(&source.rules, event) {
            crate::processing::Verdict::Keep(text) => text,
            crate::processing::Verdict::Drop(rule) => {
                metrics::counter!(crate::metrics::SOURCE_EXCLUDED, "source" => source.name.clone(), "rule" => rule.to_owned())
                    .increment(1);
                self.stats.excluded += 1;
                return Ok(());
            }
        };
        let status = match source.detect_status {
            true => crate::processing::detect_status(&text).unwrap_or(&source.status),
            false => &source.status,
        };
        // The source's tags, then the input's and the line ending's: on the stack for the usual few (a
        // vector per line was two allocations per line).
        let common = self
            .states
            .get(src)
            .map_or(&[][..], |s| s.common.as_slice());
        let all = common
            .iter()
            .map(String::as_str)
            .chain(tag)
            .chain(eol.tag());
        let mut stack = [""; 8];
        let heap: Vec<&str>;
        let tags: &[&str] = if common.len() + 2 <= stack.len() {
            let mut n = 0;
            for (slot, t) in stack.iter_mut().zip(all) {
                *slot = t;
                n += 1;
            }
            &stack[..n]
        } else {
            heap = all.collect();
            &heap
        };
        let meta = Meta {
            timestamp: now_ms(),
            status: Some(status),
            service: source.service.as_deref(),
            tags,
        };
        let mut datums = Vec::new();
        self.engine.encode(&text, &meta, &mut datums);
        self.stats.logs += 1;
        self.read_lines.fetch_add(1, Ordering::Relaxed);
        let entry = Entry {
            datums,
            checkpoint: Some(Checkpoint {
                source: key.clone(),
                offset,
            }),
            raw_len: text.len(),
        };
        let payloads = self.batcher.push(entry, Instant::now())?;
        self.send(payloads)
    }

    /// Flushes the open payload if its first line is old enough, and the joined events that waited
    /// their source's `multi_line` flush time.
    pub(super) fn tick(&mut self, now: Instant) -> Result<(), ShipError> {
        let due: Vec<Arc<str>> = if self.joining.is_empty() {
            Vec::new()
        } else {
            self.joining
                .iter()
                .filter(|(_, j)| {
                    let wait = self
                        .sources
                        .get(j.source)
                        .map_or(crate::sources::MULTI_LINE_FLUSH, |s| s.multi_line_flush);
                    j.aggregator
                        .started()
                        .is_some_and(|t| now.duration_since(t) >= wait)
                })
                .map(|(k, _)| k.clone())
                .collect()
        };
        for key in due {
            self.end_input(&key)?;
        }
        if self.batcher.deadline().is_some_and(|d| d <= now) {
            let payloads = self.batcher.flush(Flush::Age)?;
            self.send(payloads)?;
        }
        Ok(())
    }

    pub(super) fn finish(mut self) -> Result<ReadStats, ShipError> {
        let pending: Vec<Arc<str>> = self.joining.keys().cloned().collect();
        for key in pending {
            self.end_input(&key)?;
        }
        if let Some(baseline) = self.baseline.as_mut() {
            baseline.flush();
            self.stats.zstd1 = baseline.bytes();
        }
        let payloads = self.batcher.flush(Flush::Manual)?;
        self.send(payloads)?;
        self.stats.patterns = self.engine.state_size().0 as u64;
        self.stats.dropped = self.batcher.dropped_too_large;
        Ok(self.stats)
    }
}
