//! One pass of the agent pipeline (`stencil ship --once`): read each input to its end, turn every line
//! into datums with the pattern engine, batch them, send them on one stream worker, and wait until
//! everything is acked. Each source's checkpoint is released only with its ack.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use stencil_codec::{BatchEncoder, Compression, Generation};
use stencil_patterns::{Engine, EngineConfig, Meta};
use tokio::sync::{mpsc, watch};
use tonic::transport::Channel;

use crate::batcher::{BatchConfig, Batcher, Entry, Flush};
use crate::checkpoint::Mailbox;
use crate::core::{Core, CoreConfig};
use crate::driver::Headers;
use crate::files::{for_each_line, MAX_LINE};
use crate::payload::{Checkpoint, Payload};
use crate::registry::Registry;

/// An input: a file path, or stdin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A file (its absolute path is the `filename:` tag).
    File(PathBuf),
    /// Standard input.
    Stdin,
}

/// What to attach to every log, and how to batch.
#[derive(Debug, Clone, Default)]
pub struct ShipOptions {
    /// `service`.
    pub service: Option<String>,
    /// `ddsource:` tag.
    pub source: Option<String>,
    /// `hostname:` tag.
    pub hostname: Option<String>,
    /// Extra `k:v` tags.
    pub tags: Vec<String>,
    /// Payload codec.
    pub compression: Compression,
    /// Batching.
    pub batch: BatchConfig,
    /// Worker timings.
    pub core: CoreConfig,
    /// Where the checkpoint registry lives; with it, a rerun resumes after the last acked line.
    pub data_dir: Option<PathBuf>,
    /// How often acked checkpoints are persisted (default 1 s when zero).
    pub checkpoint_interval: std::time::Duration,
}

/// The outcome of a pass.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// Lines read and acked.
    pub lines: u64,
    /// Raw bytes read (terminators included).
    pub raw_bytes: u64,
    /// Bytes of `StatefulBatch.data` sent, snapshots and replays included.
    pub wire_bytes: u64,
    /// Per-batch zstd-1 of the same lines (the same batch boundaries), for comparison.
    pub zstd1_bytes: u64,
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
}

impl Summary {
    /// The summary as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "lines": self.lines,
            "raw_bytes": self.raw_bytes,
            "wire_bytes": self.wire_bytes,
            "ratio_to_raw": ratio(self.raw_bytes, self.wire_bytes),
            "zstd1_bytes": self.zstd1_bytes,
            "ratio_to_zstd1": ratio(self.zstd1_bytes, self.wire_bytes),
            "lines_per_sec": if self.seconds > 0.0 { self.lines as f64 / self.seconds } else { 0.0 },
            "seconds": self.seconds,
            "duplicates_replayed": self.replayed,
            "patterns": self.patterns,
            "split_lines": self.split_lines,
            "dropped": self.dropped,
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
struct ReadStats {
    lines: u64,
    raw: u64,
    zstd1: u64,
    patterns: u64,
    split: u64,
    dropped: u64,
}

/// Reads every input to its end and produces payloads into `tx` (blocking; run on a blocking thread).
fn produce(
    inputs: Vec<(Input, u64, Option<String>)>,
    options: ShipOptions,
    tx: mpsc::Sender<Payload>,
) -> Result<ReadStats, String> {
    let encoder = BatchEncoder::new(Generation::V3, options.compression);
    let mut batcher = Batcher::new(
        BatchConfig {
            max_wait: std::time::Duration::MAX,
            ..options.batch.clone()
        },
        encoder,
    );
    let mut engine = Engine::new(EngineConfig::default());
    let mut stats = ReadStats::default();
    let mut baseline = Vec::new();
    let mut baseline_lines = 0usize;
    let max_logs = options.batch.max_logs;
    let send = |payloads: Vec<Payload>| -> Result<(), String> {
        for p in payloads {
            tx.blocking_send(p)
                .map_err(|_| "the stream worker stopped early".to_string())?;
        }
        Ok(())
    };
    let mut common: Vec<String> = options.tags.clone();
    if let Some(s) = &options.source {
        common.push(format!("ddsource:{s}"));
    }
    if let Some(h) = &options.hostname {
        common.push(format!("hostname:{h}"));
    }
    for (input, start, id) in inputs {
        let (reader, source): (Box<dyn std::io::Read>, Option<String>) = match &input {
            Input::File(path) => {
                use std::io::Seek;
                let abs =
                    std::fs::canonicalize(path).map_err(|e| format!("{}: {e}", path.display()))?;
                let mut file =
                    std::fs::File::open(&abs).map_err(|e| format!("{}: {e}", abs.display()))?;
                file.seek(std::io::SeekFrom::Start(start))
                    .map_err(|e| format!("{}: {e}", abs.display()))?;
                (Box::new(file), Some(abs.to_string_lossy().into_owned()))
            }
            Input::Stdin => (Box::new(std::io::stdin()), None),
        };
        let source_id: Arc<str> = Arc::from(id.as_deref().or(source.as_deref()).unwrap_or("-"));
        let mut tags = common.clone();
        if let Some(s) = &source {
            tags.push(format!("filename:{s}"));
        }
        let mut failed = None;
        let split = for_each_line(reader, start, MAX_LINE, |line, eol, offset| {
            if failed.is_some() {
                return;
            }
            let mut line_tags: Vec<&str> = tags.iter().map(String::as_str).collect();
            if let Some(t) = eol.tag() {
                line_tags.push(t);
            }
            let meta = Meta {
                timestamp: now_ms(),
                status: None,
                service: options.service.as_deref(),
                tags: &line_tags,
            };
            let mut datums = Vec::new();
            engine.encode(line, &meta, &mut datums);
            let terminator = match eol {
                crate::files::Eol::Lf => 1,
                crate::files::Eol::CrLf => 2,
                crate::files::Eol::None => 0,
            };
            stats.lines += 1;
            stats.raw += (line.len() + terminator) as u64;
            baseline.extend_from_slice(line);
            baseline.push(b'\n');
            baseline_lines += 1;
            if baseline_lines == max_logs {
                stats.zstd1 += Compression::ZSTD.compress(&baseline).map_or(0, |c| c.len()) as u64;
                baseline.clear();
                baseline_lines = 0;
            }
            let entry = Entry {
                datums,
                checkpoint: Some(Checkpoint {
                    source: source_id.clone(),
                    offset,
                }),
                raw_len: line.len(),
            };
            match batcher
                .push(entry, Instant::now())
                .map_err(|e| e.to_string())
                .and_then(&send)
            {
                Ok(()) => {}
                Err(e) => failed = Some(e),
            }
        })
        .map_err(|e| format!("reading {}: {e}", source.as_deref().unwrap_or("stdin")))?;
        if let Some(e) = failed {
            return Err(e);
        }
        stats.split += split;
    }
    if baseline_lines > 0 {
        stats.zstd1 += Compression::ZSTD.compress(&baseline).map_or(0, |c| c.len()) as u64;
    }
    send(batcher.flush(Flush::Manual).map_err(|e| e.to_string())?)?;
    stats.patterns = engine.state_size().0 as u64;
    stats.dropped = batcher.dropped_too_large;
    Ok(stats)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Ships `inputs` once over `channel` with `api_key` and waits until everything is acked. `progress` is
/// told the number of payloads acked so far.
pub async fn ship_once(
    inputs: Vec<Input>,
    options: ShipOptions,
    channel: Channel,
    api_key: String,
    mailbox: Mailbox,
) -> Result<Summary, String> {
    let started = Instant::now();
    // With a data dir, each file resumes after its last acked line.
    let mut registry = match &options.data_dir {
        Some(dir) => Some(Registry::open(dir)?),
        None => None,
    };
    let mut planned = Vec::with_capacity(inputs.len());
    for input in inputs {
        let plan = match (&input, registry.as_mut()) {
            (Input::File(path), Some(reg)) => {
                let abs =
                    std::fs::canonicalize(path).map_err(|e| format!("{}: {e}", path.display()))?;
                let (start, id) = reg
                    .open_file(&abs)
                    .map_err(|e| format!("{}: {e}", abs.display()))?;
                (input, start, Some(id))
            }
            _ => (input, 0, None),
        };
        planned.push(plan);
    }
    let stop_registry = tokio_util::sync::CancellationToken::new();
    let registry_task = match registry {
        Some(reg) => {
            reg.persist()
                .map_err(|e| format!("cannot write checkpoints: {e}"))?;
            let every = if options.checkpoint_interval.is_zero() {
                std::time::Duration::from_secs(1)
            } else {
                options.checkpoint_interval
            };
            Some(tokio::spawn(reg.run(
                mailbox.clone(),
                every,
                stop_registry.clone(),
            )))
        }
        None => None,
    };
    let encoder = BatchEncoder::new(Generation::V3, options.compression);
    let (tx, rx) = mpsc::channel(4);
    let (_key_tx, key_rx) = watch::channel(api_key);
    let core = Core::new(options.core.clone(), encoder, seed());
    let worker = crate::driver::spawn(
        core,
        channel,
        Headers::new(encoder.content_encoding()),
        key_rx,
        rx,
        mailbox,
    );
    let producer = tokio::task::spawn_blocking(move || produce(planned, options, tx));
    let read = producer.await.map_err(|e| format!("reader failed: {e}"))?;
    let report = worker.join().await;
    stop_registry.cancel();
    if let Some(task) = registry_task {
        task.await
            .map_err(|e| format!("checkpoint registry failed: {e}"))?;
    }
    let read = read?;
    Ok(Summary {
        lines: read.lines,
        raw_bytes: read.raw,
        wire_bytes: report.stats.bytes_sent,
        zstd1_bytes: read.zstd1,
        seconds: started.elapsed().as_secs_f64(),
        replayed: report.stats.replayed,
        patterns: read.patterns,
        split_lines: read.split,
        dropped: read.dropped + report.stats.dropped_logs,
    })
}

fn seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        ^ u64::from(std::process::id())
}
