//! The agent pipeline behind `stencil ship`: inputs → lines → pattern engine → batcher → one stream
//! worker → intake, with each source's checkpoint released only with its ack and persisted by the
//! registry. [`ship_once`] reads every input to its end and waits for the last ack; [`ship_follow`]
//! follows files (and new files matching the globs) until told to stop, then shuts down gracefully.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::endpoints::Endpoints;
use stencil_codec::{BatchEncoder, Compression, Generation};
use stencil_patterns::{Engine, EngineConfig, Meta};
use tokio::sync::{mpsc, watch};

use crate::batcher::{BatchConfig, Batcher, Entry, Flush};
use crate::checkpoint::Mailbox;
use crate::core::{Core, CoreConfig};
use crate::driver::Headers;
use crate::multiline::Aggregator;
use crate::payload::{Checkpoint, Payload};
use crate::registry::{Leftover, Registry};
use crate::sources::files::{for_each_line, Eol, MAX_LINE};
use crate::sources::tail::{FollowConfig, Follower};
use crate::sources::{Source, SourceInput, StartPosition};

/// An input of one pass: a file path, or stdin.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Input {
    /// A file (its absolute path is the `filename:` tag).
    File(PathBuf),
    /// Standard input.
    Stdin,
}

/// How to batch, send and checkpoint (what each log carries is its [`Source`]'s).
#[derive(Debug, Clone, Default)]
pub struct ShipOptions {
    /// Payload codec.
    pub compression: Compression,
    /// Batching.
    pub batch: BatchConfig,
    /// Worker timings.
    pub core: CoreConfig,
    /// Where the checkpoint registry lives; with it, a rerun resumes after the last acked line.
    pub data_dir: Option<PathBuf>,
    /// How often acked checkpoints are persisted (default 1 s when zero).
    pub checkpoint_interval: Duration,
    /// Follow mode: how long a last line without a newline waits before it is sent (default 1 s when
    /// zero).
    pub partial_line_timeout: Duration,
    /// Kept up to date with each pipeline's stream state (one entry per pipeline), for `/health` and
    /// `/ready`.
    pub health: Option<Arc<Mutex<Vec<crate::core::State>>>>,
    /// Follow mode: how long a file rotated away (renamed or deleted) is read on after it last grew,
    /// for writers that keep the old descriptor a while (default 30 s when zero).
    pub rotate_wait: Duration,
    /// Most TCP connections open at once over all listeners of a pipeline (0 means 256).
    pub tcp_max_connections: usize,
    /// Pipelines (engine + batcher + stream each) over the shared endpoints; each source belongs to
    /// exactly one. 0 means 1.
    pub pipelines: usize,
    /// Also compress the raw lines with one zstd-1 context per pipeline, as a plain zstd stream would,
    /// for the summary's comparison (costs CPU; the CLI turns it on for one pass unless told not to).
    pub compare: bool,
    /// Wire extensions to ask the intake for (`stream-zstd`, `native/2`); each stream uses them only
    /// once the intake echoes them, and plain v3 otherwise. Empty = plain v3 only.
    pub extensions: stencil_codec::Extensions,
    /// Pattern engine settings of every pipeline (budgets bound each engine's memory).
    pub engine: EngineConfig,
    /// Cancelled to give up: the workers stop at once (a stream that is connected gets the core's grace
    /// period to have its last acks), the acked checkpoints are persisted, and the summary says how
    /// many lines were left unacked. Used for `--shutdown-timeout` and `--once` stalls.
    pub abort: Option<tokio_util::sync::CancellationToken>,
    /// Give up (as with `abort`) when nothing has been acked for this long while a stream is not
    /// connected, or at once when the intake refuses the API key: for `--once`, whose errors that do
    /// not heal (a wrong key, TLS, an intake whose disk is full) must end the run. `None`: never.
    pub stall_timeout: Option<Duration>,
}

impl ShipOptions {
    /// Lines longer than this are split: the line cap, or the batch's raw-byte limit if that is
    /// smaller, so that no line is ever too large for a batch.
    pub fn max_line(&self) -> usize {
        MAX_LINE.min(self.batch.max_raw_bytes).max(1)
    }
}

/// The `filename:` tag of a file: its path, with commas and bytes that are not UTF-8 percent-encoded
/// (see [`stencil_codec::escape::escape_tag_value`]).
pub fn filename_tag(path: &std::path::Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    format!(
        "filename:{}",
        stencil_codec::escape::escape_tag_value(path.as_os_str().as_bytes())
    )
}

/// Says that a file of source `source` is skipped for now, and counts it.
fn warn_skipped(
    source: &str,
    path: &std::path::Path,
    error: &dyn std::fmt::Display,
    reason: &'static str,
) {
    metrics::counter!(crate::metrics::FILES_SKIPPED, "reason" => reason, "source" => source.to_owned())
        .increment(1);
    tracing::warn!(source, file = %path.display(), error = %error, "cannot read this file; shipping the others");
}

/// The reason label of an I/O error.
fn skip_reason(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::PermissionDenied => "permission_denied",
        std::io::ErrorKind::NotFound => "vanished",
        _ => "io_error",
    }
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
    /// A plain zstd-1 stream of the same lines (one context per pipeline, a flushed block per batch of
    /// the same size), for comparison.
    pub zstd1_bytes: u64,
    /// The wire the streams used: `v3`, `native/2+stream-zstd`, … (`mixed` when pipelines differ).
    pub wire: String,
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
    /// Logs sent but never acked, when the run was given up (see [`ShipOptions::abort`]).
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
struct ReadStats {
    lines: u64,
    logs: u64,
    excluded: u64,
    raw: u64,
    zstd1: u64,
    patterns: u64,
    split: u64,
    dropped: u64,
    skipped_files: u64,
}

impl ReadStats {
    fn add(&mut self, o: &ReadStats) {
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
struct LineEncoder {
    engine: Engine,
    batcher: Batcher,
    tx: mpsc::Sender<Payload>,
    sources: Arc<[Source]>,
    states: Vec<SourceState>,
    /// Events being joined, by checkpoint id of their input.
    joining: HashMap<Arc<str>, Joining>,
    baseline: Vec<u8>,
    baseline_lines: usize,
    /// The plain zstd stream the summary compares with.
    baseline_ctx: Option<stencil_codec::stream::StreamCompressor>,
    max_logs: usize,
    max_line: usize,
    compare: bool,
    stats: ReadStats,
    /// Logs sent so far, across pipelines (for the unacked count of a run given up).
    read_lines: Arc<std::sync::atomic::AtomicU64>,
}

impl LineEncoder {
    fn new(
        options: &ShipOptions,
        sources: Arc<[Source]>,
        max_wait: Duration,
        tx: mpsc::Sender<Payload>,
        read_lines: Arc<std::sync::atomic::AtomicU64>,
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
            baseline: Vec::new(),
            baseline_lines: 0,
            baseline_ctx: options
                .compare
                .then(|| {
                    stencil_codec::stream::StreamCompressor::new(
                        1,
                        stencil_codec::stream::DEFAULT_WINDOW_LOG,
                    )
                    .ok()
                })
                .flatten(),
            max_logs: options.batch.max_logs,
            max_line: options.max_line(),
            compare: options.compare,
            stats: ReadStats::default(),
            read_lines,
        }
    }

    /// Encodes every line of `reader` (whose first byte is at `start` in its input) of source `src`
    /// under checkpoint id `key`, tagged `tag`, and then the event it left pending. The outer error is
    /// fatal (the pipeline stopped); the inner one is the input's own read error, after which the rest
    /// of the input is skipped.
    fn read_all(
        &mut self,
        reader: impl std::io::Read,
        start: u64,
        src: usize,
        key: &Arc<str>,
        tag: Option<&str>,
    ) -> Result<std::io::Result<()>, String> {
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

    fn send(&self, payloads: Vec<Payload>) -> Result<(), String> {
        for p in payloads {
            self.tx
                .blocking_send(p)
                .map_err(|_| "the stream worker stopped early".to_string())?;
        }
        Ok(())
    }

    fn baseline_flush(&mut self) {
        if self.baseline_lines > 0 {
            if let Some(ctx) = self.baseline_ctx.as_mut() {
                self.stats.zstd1 +=
                    ctx.compress_batch(&self.baseline).map_or(0, |c| c.len()) as u64;
            }
            self.baseline.clear();
            self.baseline_lines = 0;
        }
    }

    /// Takes one line of source `src` ending at `offset` of the input `key`; `tag` is the input's
    /// `filename:` (or `peer:`) tag.
    fn line(
        &mut self,
        src: usize,
        line: &[u8],
        eol: Eol,
        offset: u64,
        key: &Arc<str>,
        tag: Option<&str>,
    ) -> Result<(), String> {
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
        if self.compare {
            self.baseline.extend_from_slice(line);
            self.baseline.push(b'\n');
            self.baseline_lines += 1;
            if self.baseline_lines == self.max_logs {
                self.baseline_flush();
            }
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
    fn end_input(&mut self, key: &Arc<str>) -> Result<(), String> {
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
    ) -> Result<(), String> {
        let Some(source) = self.sources.get(src) else {
            return Err(format!("no source {src}"));
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
        let mut tags: Vec<&str> = self
            .states
            .get(src)
            .map(|s| s.common.iter().map(String::as_str).collect())
            .unwrap_or_default();
        if let Some(f) = tag {
            tags.push(f);
        }
        if let Some(t) = eol.tag() {
            tags.push(t);
        }
        let meta = Meta {
            timestamp: now_ms(),
            status: Some(status),
            service: source.service.as_deref(),
            tags: &tags,
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
        let payloads = self
            .batcher
            .push(entry, Instant::now())
            .map_err(|e| e.to_string())?;
        self.send(payloads)
    }

    /// Flushes the open payload if its first line is old enough, and the joined events that waited
    /// their source's `multi_line` flush time.
    fn tick(&mut self, now: Instant) -> Result<(), String> {
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
            let payloads = self.batcher.flush(Flush::Age).map_err(|e| e.to_string())?;
            self.send(payloads)?;
        }
        Ok(())
    }

    fn finish(mut self) -> Result<ReadStats, String> {
        let pending: Vec<Arc<str>> = self.joining.keys().cloned().collect();
        for key in pending {
            self.end_input(&key)?;
        }
        self.baseline_flush();
        let payloads = self
            .batcher
            .flush(Flush::Manual)
            .map_err(|e| e.to_string())?;
        self.send(payloads)?;
        self.stats.patterns = self.engine.state_size().0 as u64;
        self.stats.dropped = self.batcher.dropped_too_large;
        Ok(self.stats)
    }
}

/// Reads every input to its end and produces payloads into `tx` (blocking; run on a blocking thread).
/// A file that cannot be opened or read is warned about, counted and skipped; the others are shipped.
fn produce(
    inputs: Vec<Planned>,
    options: ShipOptions,
    sources: Arc<[Source]>,
    tx: mpsc::Sender<Payload>,
    read_lines: Arc<std::sync::atomic::AtomicU64>,
) -> Result<ReadStats, String> {
    let mut enc = LineEncoder::new(&options, sources, Duration::MAX, tx, read_lines);
    for Planned {
        input,
        source: src,
        start,
        id,
        tag_as,
    } in inputs
    {
        let name = source_name(&enc.sources, src);
        let read = match &input {
            Input::File(path) => {
                let opened = std::fs::File::open(path).and_then(|mut f| {
                    use std::io::Seek;
                    if f.metadata()?.is_dir() {
                        return Err(std::io::Error::other("a directory, not a file"));
                    }
                    f.seek(std::io::SeekFrom::Start(start))?;
                    Ok(f)
                });
                let f = match opened {
                    Ok(f) => f,
                    Err(e) => {
                        warn_skipped(&name, path, &e, skip_reason(&e));
                        enc.stats.skipped_files += 1;
                        continue;
                    }
                };
                let key: Arc<str> = Arc::from(
                    id.clone()
                        .unwrap_or_else(|| path.to_string_lossy().into_owned()),
                );
                let tag = filename_tag(tag_as.as_deref().unwrap_or(path));
                enc.read_all(f, start, src, &key, Some(&tag))?
            }
            Input::Stdin => enc.read_all(std::io::stdin(), 0, src, &Arc::from("-"), None)?,
        };
        if let Err(e) = read {
            let path = match &input {
                Input::File(path) => path.clone(),
                Input::Stdin => PathBuf::from("stdin"),
            };
            warn_skipped(&name, &path, &e, skip_reason(&e));
            enc.stats.skipped_files += 1;
        }
    }
    enc.finish()
}

/// The metric label of source `src`.
fn source_name(sources: &[Source], src: usize) -> String {
    sources
        .get(src)
        .map_or_else(String::new, |s| s.name.clone())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        ^ u64::from(std::process::id())
}

/// The registry shared by readers and the flush task, if `--data-dir` was given.
fn open_registry(options: &ShipOptions) -> Result<Option<Arc<Mutex<Registry>>>, String> {
    match &options.data_dir {
        Some(dir) => Ok(Some(Arc::new(Mutex::new(Registry::open(dir)?)))),
        None => Ok(None),
    }
}

/// Where to start `path`, the checkpoint id of its logs, the rest of the files it was rotated to
/// while the agent was down (to read first), and whether it resumes at a checkpoint.
fn open_file(
    registry: Option<&Arc<Mutex<Registry>>>,
    abs: &std::path::Path,
) -> std::io::Result<(u64, Option<String>, Vec<Leftover>, bool)> {
    match registry {
        Some(reg) => {
            let mut reg = reg
                .lock()
                .map_err(|_| std::io::Error::other("checkpoint registry lock poisoned"))?;
            let opened = reg.open_file(abs)?;
            for l in &opened.leftovers {
                tracing::info!(
                    file = %abs.display(),
                    rotated = %l.path.display(),
                    offset = l.offset,
                    "reading the rest of a rotated file"
                );
            }
            Ok((
                opened.start,
                Some(opened.source),
                opened.leftovers,
                opened.resumed,
            ))
        }
        None => Ok((0, None, Vec::new(), false)),
    }
}

/// One file to read in a single pass: where to start, its checkpoint id, and the path its lines are tagged
/// with (`filename:`), which differs from the file's own for the rest of a rotated file.
struct Planned {
    input: Input,
    /// Index of its source.
    source: usize,
    start: u64,
    id: Option<String>,
    tag_as: Option<PathBuf>,
}

/// A reading side: fills one pipeline's payload channel (runs on a blocking thread), counting the
/// lines it reads in the shared counter.
type Producer = Box<
    dyn FnOnce(
            ShipOptions,
            Arc<[Source]>,
            mpsc::Sender<Payload>,
            Arc<std::sync::atomic::AtomicU64>,
        ) -> Result<ReadStats, String>
        + Send,
>;

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs one stream worker per producer (all over `endpoints`) and the registry, and waits for the last ack.
async fn run_pipeline(
    options: ShipOptions,
    sources: Arc<[Source]>,
    endpoints: Endpoints,
    api_key: String,
    mailbox: Mailbox,
    registry: Option<Arc<Mutex<Registry>>>,
    producers: Vec<Producer>,
) -> Result<Summary, String> {
    let started = Instant::now();
    crate::metrics::describe();
    let stop_registry = tokio_util::sync::CancellationToken::new();
    let registry_task = match &registry {
        Some(reg) => {
            reg.lock()
                .map_err(|_| "registry lock poisoned".to_string())?
                .persist()
                .map_err(|e| format!("cannot write checkpoints: {e}"))?;
            let every = if options.checkpoint_interval.is_zero() {
                Duration::from_secs(1)
            } else {
                options.checkpoint_interval
            };
            Some(tokio::spawn(Registry::run(
                reg.clone(),
                mailbox.clone(),
                every,
                stop_registry.clone(),
            )))
        }
        None => None,
    };
    let encoder = BatchEncoder::new(Generation::V3, options.compression);
    let (_key_tx, key_rx) = watch::channel(api_key);
    // Probes bring endpoints that failed back into use; they end with the pipelines.
    let _probes = AbortOnDrop(endpoints.spawn_probes());
    let mut workers = Vec::new();
    let mut readers = Vec::new();
    let read_lines: Arc<std::sync::atomic::AtomicU64> = Arc::default();
    for (i, producer) in producers.into_iter().enumerate() {
        let (tx, rx) = mpsc::channel(4);
        let core = Core::new(
            CoreConfig {
                extensions: options.extensions,
                pipeline: i,
                ..options.core.clone()
            },
            encoder,
            seed() ^ (i as u64).wrapping_mul(0x9E37_79B9),
        );
        let worker = crate::driver::spawn(
            core,
            endpoints.clone(),
            Headers {
                extensions: options.extensions,
                ..Headers::new(encoder.content_encoding())
            },
            key_rx.clone(),
            rx,
            mailbox.clone(),
        );
        if let Some(health) = options.health.clone() {
            if let Ok(mut h) = health.lock() {
                h.resize(i + 1, crate::core::State::Idle);
            }
            let mut states = worker.state();
            tokio::spawn(async move {
                loop {
                    if let Ok(mut h) = health.lock() {
                        if let Some(slot) = h.get_mut(i) {
                            *slot = *states.borrow();
                        }
                    }
                    if states.changed().await.is_err() {
                        break;
                    }
                }
            });
        }
        let (opts, srcs, read) = (options.clone(), sources.clone(), read_lines.clone());
        readers.push(tokio::task::spawn_blocking(move || {
            producer(opts, srcs, tx, read)
        }));
        workers.push(worker);
    }
    let states: Vec<watch::Receiver<crate::core::State>> =
        workers.iter().map(|w| w.state()).collect();
    let give_up = tokio_util::sync::CancellationToken::new();
    let reason: Arc<Mutex<Option<String>>> = Arc::default();
    let watchdog = tokio::spawn(watch_for_giving_up(
        options.abort.clone(),
        options.stall_timeout,
        states,
        mailbox.clone(),
        give_up.clone(),
        reason.clone(),
    ));
    // Once given up, the workers stop at once (and their inputs close, which ends the readers).
    let stopper = {
        let give_up = give_up.clone();
        let stops: Vec<_> = workers.iter().map(|w| w.stopper()).collect();
        tokio::spawn(async move {
            give_up.cancelled().await;
            for stop in stops {
                stop.cancel();
            }
        })
    };
    let mut read = ReadStats::default();
    let mut first_error = None;
    for r in readers {
        match r
            .await
            .map_err(|e| format!("reader failed: {e}"))
            .and_then(|x| x)
        {
            Ok(s) => read.add(&s),
            Err(e) => {
                if !give_up.is_cancelled() {
                    first_error.get_or_insert(e);
                }
            }
        }
    }
    let mut summary = Summary::default();
    for w in workers {
        // A run given up does not wait on a stalled stream: what is unacked stays unacked.
        let report = if give_up.is_cancelled() {
            match tokio::time::timeout(Duration::from_secs(5), w.join()).await {
                Ok(report) => report,
                Err(_) => continue,
            }
        } else {
            let stop = give_up.clone();
            let join = w.join();
            tokio::pin!(join);
            tokio::select! {
                report = &mut join => report,
                _ = stop.cancelled() => match tokio::time::timeout(Duration::from_secs(5), join).await {
                    Ok(report) => report,
                    Err(_) => continue,
                },
            }
        };
        if summary.wire.is_empty() {
            summary.wire = report.wire.to_string();
        } else if summary.wire != report.wire {
            summary.wire = "mixed".into();
        }
        summary.wire_bytes += report.stats.bytes_sent;
        summary.replayed += report.stats.replayed;
        summary.dropped += report.stats.dropped_logs;
    }
    watchdog.abort();
    stopper.abort();
    if give_up.is_cancelled() {
        summary.gave_up = reason.lock().ok().and_then(|r| r.clone());
        summary.unacked = read_lines
            .load(Ordering::Relaxed)
            .saturating_sub(mailbox.acked());
    }
    stop_registry.cancel();
    if let Some(task) = registry_task {
        task.await
            .map_err(|e| format!("checkpoint registry failed: {e}"))?;
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    summary.lines = read.lines;
    summary.logs = read.logs;
    summary.excluded = read.excluded;
    summary.raw_bytes = read.raw;
    summary.zstd1_bytes = read.zstd1;
    summary.seconds = started.elapsed().as_secs_f64();
    summary.patterns = read.patterns;
    summary.split_lines = read.split;
    summary.dropped += read.dropped;
    summary.skipped_files = read.skipped_files;
    Ok(summary)
}

/// Cancels `give_up` (with the reason) when `abort` is cancelled, when a stream is refused its API key
/// and `stall` is set, or when nothing was acked for `stall` while some stream is not connected.
async fn watch_for_giving_up(
    abort: Option<tokio_util::sync::CancellationToken>,
    stall: Option<Duration>,
    states: Vec<watch::Receiver<crate::core::State>>,
    mailbox: Mailbox,
    give_up: tokio_util::sync::CancellationToken,
    reason: Arc<Mutex<Option<String>>>,
) {
    use crate::core::{Pause, State};
    let abort = abort.unwrap_or_default();
    let mut acked = mailbox.acked();
    let mut progress_at = Instant::now();
    let why = loop {
        tokio::select! {
            _ = abort.cancelled() => break "the shutdown timeout ran out before every line was acked".to_string(),
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        let Some(stall) = stall else { continue };
        let now_states: Vec<State> = states.iter().map(|s| *s.borrow()).collect();
        if now_states.contains(&State::Paused(Pause::Auth)) {
            break "the intake refused the API key (UNAUTHENTICATED or PERMISSION_DENIED): check --api-key".to_string();
        }
        let now_acked = mailbox.acked();
        let all_connected = now_states.iter().all(|s| {
            matches!(
                s,
                State::Active | State::Draining | State::Stopped | State::Closing
            )
        });
        if now_acked != acked || all_connected {
            acked = now_acked;
            progress_at = Instant::now();
        } else if progress_at.elapsed() >= stall {
            break format!(
                "nothing was acked for {} s and the intake is not reachable or keeps refusing batches (see the errors above)",
                stall.as_secs()
            );
        }
    };
    if let Ok(mut r) = reason.lock() {
        *r = Some(why);
    }
    give_up.cancel();
}

/// Ships every input of `sources` once over `endpoints` with `api_key` and waits until everything is
/// acked. A path that does not exist or a glob that matches nothing is an error before anything is
/// sent.
pub async fn ship_once(
    sources: Vec<Source>,
    options: ShipOptions,
    endpoints: Endpoints,
    api_key: String,
    mailbox: Mailbox,
) -> Result<Summary, String> {
    let mut inputs = Vec::new();
    for (i, source) in sources.iter().enumerate() {
        match &source.input {
            SourceInput::Files { .. } => {
                inputs.extend(
                    source
                        .files_now(true)?
                        .into_iter()
                        .map(|p| (i, Input::File(p))),
                );
            }
            SourceInput::Stdin => inputs.push((i, Input::Stdin)),
            SourceInput::Tcp(_) => {
                return Err(format!(
                    "source {}: TCP is a follow-mode input (drop --once)",
                    source.name
                ))
            }
        }
    }
    crate::metrics::describe_sources(&sources);
    let registry = open_registry(&options)?;
    let mut skipped = 0;
    // One unit per input: the rest of its rotated predecessors (if any), then the input itself, so that
    // all go through the same pipeline, in order.
    let mut planned: Vec<Vec<Planned>> = Vec::with_capacity(inputs.len());
    // The same file named twice (or by a glob and a path, or through a symlink) is read once.
    let mut seen = std::collections::HashSet::new();
    for (src, input) in inputs {
        let name = source_name(&sources, src);
        let unit = match &input {
            Input::File(path) => {
                use std::os::unix::fs::MetadataExt;
                let abs = match std::fs::canonicalize(path) {
                    Ok(abs) => abs,
                    Err(e) => {
                        warn_skipped(&name, path, &e, skip_reason(&e));
                        skipped += 1;
                        continue;
                    }
                };
                if let Ok(m) = std::fs::metadata(&abs) {
                    if !seen.insert((m.dev(), m.ino())) {
                        tracing::info!(file = %abs.display(), "named more than once; read once");
                        continue;
                    }
                }
                let (start, id, leftovers, _) = match open_file(registry.as_ref(), &abs) {
                    Ok(opened) => opened,
                    Err(e) => {
                        warn_skipped(&name, &abs, &e, skip_reason(&e));
                        skipped += 1;
                        continue;
                    }
                };
                let mut unit: Vec<Planned> = leftovers
                    .into_iter()
                    .map(|l| Planned {
                        input: Input::File(l.path),
                        source: src,
                        start: l.offset,
                        id: Some(l.source),
                        tag_as: Some(abs.clone()),
                    })
                    .collect();
                unit.push(Planned {
                    input: Input::File(abs),
                    source: src,
                    start,
                    id,
                    tag_as: None,
                });
                unit
            }
            Input::Stdin => vec![Planned {
                input,
                source: src,
                start: 0,
                id: None,
                tag_as: None,
            }],
        };
        planned.push(unit);
    }
    // Each input belongs to exactly one pipeline (round robin, in order).
    let n = options.pipelines.max(1).min(planned.len().max(1));
    let mut groups: Vec<Vec<Planned>> = (0..n).map(|_| Vec::new()).collect();
    for (i, unit) in planned.into_iter().enumerate() {
        groups[i % n].extend(unit);
    }
    let producers: Vec<Producer> = groups
        .into_iter()
        .map(|group| {
            Box::new(
                move |options: ShipOptions,
                      sources: Arc<[Source]>,
                      tx: mpsc::Sender<Payload>,
                      read| { produce(group, options, sources, tx, read) },
            ) as Producer
        })
        .collect();
    let mut summary = run_pipeline(
        options,
        sources.into(),
        endpoints,
        api_key,
        mailbox,
        registry,
        producers,
    )
    .await?;
    summary.skipped_files += skipped;
    Ok(summary)
}

/// Follows every source (files matching its paths and globs, new matches picked up; TCP; stdin) until
/// `stop` is cancelled, then emits held partial lines and pending events, flushes, waits for the acks and
/// returns the summary. A run whose only source is stdin ends at its end.
pub async fn ship_follow(
    sources: Vec<Source>,
    options: ShipOptions,
    endpoints: Endpoints,
    api_key: String,
    mailbox: Mailbox,
    stop: tokio_util::sync::CancellationToken,
) -> Result<Summary, String> {
    crate::metrics::describe_sources(&sources);
    let registry = open_registry(&options)?;
    // Standard input alone is one source: one pipeline, which ends when it does.
    let only_stdin = sources
        .iter()
        .all(|s| matches!(s.input, SourceInput::Stdin));
    let n = if only_stdin {
        1
    } else {
        options.pipelines.max(1)
    };
    let mut producers: Vec<Producer> = Vec::with_capacity(n);
    for index in 0..n {
        let (reg, stop) = (registry.clone(), stop.clone());
        producers.push(Box::new(
            move |options: ShipOptions, sources: Arc<[Source]>, tx: mpsc::Sender<Payload>, read| {
                follow(index, n, reg, stop, options, sources, tx, read)
            },
        ));
    }
    run_pipeline(
        options,
        sources.into(),
        endpoints,
        api_key,
        mailbox,
        registry,
        producers,
    )
    .await
}

/// Reads the rest of a rotated file once, to its current end, under its own checkpoint and tagged with
/// the path it was rotated from. A file that cannot be read is warned about and skipped.
fn read_leftover(
    enc: &mut LineEncoder,
    src: usize,
    l: &Leftover,
    tag_as: &std::path::Path,
) -> Result<(), String> {
    use std::io::Seek;
    let opened = std::fs::File::open(&l.path).and_then(|mut f| {
        f.seek(std::io::SeekFrom::Start(l.offset))?;
        Ok(f)
    });
    let read = match opened {
        Ok(f) => {
            let key: Arc<str> = Arc::from(l.source.as_str());
            enc.read_all(f, l.offset, src, &key, Some(&filename_tag(tag_as)))?
        }
        Err(e) => Err(e),
    };
    if let Err(e) = read {
        warn_skipped(
            &source_name(&enc.sources, src),
            &l.path,
            &e,
            skip_reason(&e),
        );
    }
    Ok(())
}

/// The per-source gauges of follow mode.
struct SourceGauges {
    watched: metrics::Gauge,
    lag: metrics::Gauge,
}

/// Pipeline `index` of `n`: follows the matching files whose path hashes to it (and the TCP and stdin
/// sources, for pipeline 0) until `stop`.
#[allow(clippy::too_many_arguments)]
fn follow(
    index: usize,
    n: usize,
    reg: Option<Arc<Mutex<Registry>>>,
    stop: tokio_util::sync::CancellationToken,
    options: ShipOptions,
    sources: Arc<[Source]>,
    tx: mpsc::Sender<Payload>,
    read_lines: Arc<std::sync::atomic::AtomicU64>,
) -> Result<ReadStats, String> {
    let mine = |path: &std::path::Path| {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        path.hash(&mut h);
        (h.finish() as usize) % n == index
    };
    let config = FollowConfig {
        partial_line_timeout: if options.partial_line_timeout.is_zero() {
            Duration::from_secs(1)
        } else {
            options.partial_line_timeout
        },
        rotate_wait: if options.rotate_wait.is_zero() {
            FollowConfig::default().rotate_wait
        } else {
            options.rotate_wait
        },
        max_line: options.max_line(),
        ..FollowConfig::default()
    };
    let mut enc = LineEncoder::new(
        &options,
        sources.clone(),
        options.batch.max_wait,
        tx,
        read_lines,
    );
    let gauges: Vec<SourceGauges> = sources
        .iter()
        .map(|s| SourceGauges {
            watched: metrics::gauge!(crate::metrics::SOURCE_FILES_WATCHED, "source" => s.name.clone(), "pipeline" => index.to_string()),
            lag: metrics::gauge!(crate::metrics::SOURCE_LAG_BYTES, "source" => s.name.clone(), "pipeline" => index.to_string()),
        })
        .collect();
    // Each followed path, with the index of the source that named it first.
    let mut followers: BTreeMap<PathBuf, (usize, Follower)> = BTreeMap::new();
    // Files warned about, so that a file that stays unreadable is reported once, not every retry.
    let mut warned: std::collections::HashSet<PathBuf> = std::collections::HashSet::new();
    // TCP sources listen on pipeline 0, each into its own channel.
    let mut net: Vec<(usize, mpsc::Receiver<crate::sources::tcp::NetLine>)> = Vec::new();
    for (i, source) in sources.iter().enumerate().filter(|_| index == 0) {
        if let SourceInput::Tcp(listener) = &source.input {
            let (net_tx, net_rx) = mpsc::channel(4096);
            crate::sources::tcp::spawn(
                listener,
                match options.tcp_max_connections {
                    0 => 256,
                    n => n,
                },
                options.max_line(),
                net_tx,
                stop.clone(),
            )
            .map_err(|e| format!("source {}: {e}", source.name))?;
            net.push((i, net_rx));
        }
    }
    // Standard input, streamed (pipeline 0). A run whose only source it is ends at its end.
    let stdin_done = Arc::new(AtomicBool::new(false));
    let (stdin_tx, mut stdin_rx) = mpsc::channel::<crate::sources::stdin::StdinLine>(4096);
    let stdin_src = sources
        .iter()
        .position(|s| matches!(s.input, SourceInput::Stdin))
        .filter(|_| index == 0);
    if stdin_src.is_some() {
        crate::sources::stdin::spawn(options.max_line(), stdin_tx, stdin_done.clone());
    } else {
        drop(stdin_tx);
    }
    let only_stdin = stdin_src.is_some()
        && sources
            .iter()
            .all(|s| matches!(s.input, SourceInput::Stdin));
    let stdin_key: Arc<str> = Arc::from("-");
    // `start_position = "end"`: files there at the first scan, without a checkpoint, start at their end.
    let mut at_end: std::collections::HashSet<PathBuf> = std::collections::HashSet::new();
    let mut last_scan: Option<Instant> = None;
    loop {
        let stdin_ended = only_stdin && stdin_done.load(Ordering::SeqCst) && stdin_rx.is_empty();
        let stopping = stop.is_cancelled() || stdin_ended;
        let now = Instant::now();
        if last_scan.is_none_or(|t| now.duration_since(t) >= Duration::from_millis(500)) {
            let first_scan = last_scan.is_none();
            last_scan = Some(now);
            let mut seen = std::collections::HashSet::new();
            for (i, source) in sources.iter().enumerate() {
                for path in source.files_now(false).unwrap_or_default() {
                    let Ok(abs) = std::fs::canonicalize(&path) else {
                        continue;
                    };
                    if source.excludes(&abs)
                        || !seen.insert(abs.clone())
                        || followers.contains_key(&abs)
                        || !mine(&abs)
                    {
                        continue;
                    }
                    if first_scan && source.start_position == StartPosition::End {
                        at_end.insert(abs.clone());
                    }
                    followers.insert(abs.clone(), (i, Follower::new(abs, config)));
                }
            }
            for (i, g) in gauges.iter().enumerate() {
                let mine = followers.values().filter(|(s, _)| *s == i);
                g.watched.set(mine.clone().count() as f64);
                g.lag.set(mine.map(|(_, f)| f.lag()).sum::<u64>() as f64);
            }
        }
        let mut any = false;
        for (path, (src, follower)) in followers.iter_mut() {
            let src = *src;
            let tag = filename_tag(path);
            // Both callbacks feed the encoder, one after the other (never nested).
            let shared = std::cell::RefCell::new((&mut enc, None::<String>));
            let mut open = |p: &std::path::Path| -> std::io::Result<(u64, String)> {
                let (mut start, id, leftovers, resumed) = open_file(reg.as_ref(), p)?;
                let id = id.unwrap_or_else(|| p.to_string_lossy().into_owned());
                if at_end.remove(p) && !resumed {
                    start = std::fs::metadata(p)?.len();
                    if let Some(reg) = reg.as_ref() {
                        let mut reg = reg.lock().map_err(|_| {
                            std::io::Error::other("checkpoint registry lock poisoned")
                        })?;
                        reg.advance(&BTreeMap::from([(Arc::from(id.as_str()), start)]));
                    }
                }
                let mut guard = shared.borrow_mut();
                let (enc, failed) = &mut *guard;
                for l in &leftovers {
                    if let Err(e) = read_leftover(enc, src, l, p) {
                        failed.get_or_insert(e);
                    }
                }
                Ok((start, id))
            };
            let mut each = |key: &Arc<str>, line: &[u8], eol: Eol, offset: u64| {
                let mut guard = shared.borrow_mut();
                let (enc, failed) = &mut *guard;
                if failed.is_none() {
                    *failed = enc.line(src, line, eol, offset, key, Some(&tag)).err();
                }
            };
            let polled = follower.poll(now, &mut open, &mut each);
            if stopping {
                follower.close(now, &mut each);
            }
            let (enc, failed) = shared.into_inner();
            if let Some(e) = failed {
                return Err(e);
            }
            match polled {
                Ok(read) => {
                    any |= read;
                    warned.remove(path);
                }
                Err(e) => {
                    if warned.insert(path.clone()) {
                        warn_skipped(&source_name(&sources, src), path, &e, skip_reason(&e));
                        enc.stats.skipped_files += 1;
                    }
                }
            }
        }
        followers.retain(|_, (_, f)| !f.is_done());
        for (src, rx) in net.iter_mut() {
            while let Ok((line, eol, peer)) = rx.try_recv() {
                any = true;
                enc.line(*src, &line, eol, 0, &peer, Some(&peer))?;
            }
        }
        if let Some(src) = stdin_src {
            while let Ok((line, eol)) = stdin_rx.try_recv() {
                any = true;
                enc.line(src, &line, eol, 0, &stdin_key, None)?;
            }
        }
        enc.tick(Instant::now())?;
        if stopping {
            break;
        }
        if !any {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    enc.finish()
}
