//! The agent pipeline behind `stencil ship`, in Vector's terms: sources → transforms (multi-line
//! joining, processing rules) → the pattern engine and batcher → one stream worker per pipeline →
//! intake, with each source's checkpoint released only with its ack and persisted by the registry.
//!
//! - [`once`]: [`ship_once`] reads every input to its end and waits for the last ack;
//! - [`follow`]: [`ship_follow`] follows files (and new files matching the globs), TCP and stdin until
//!   told to stop, then shuts down gracefully;
//! - `encoder`: lines in, payloads out (joining, rules, engine, batcher), shared by both;
//! - `run`: the workers, the registry task and the watchdog around the readers;
//! - [`summary`]: what a run reports; `baseline`: the plain zstd stream it compares with.

mod baseline;
mod encoder;
pub mod follow;
pub mod once;
mod run;
pub mod summary;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stencil_codec::Compression;
use stencil_patterns::EngineConfig;

use crate::batcher::BatchConfig;
use crate::core::CoreConfig;
use crate::registry::{Leftover, Registry, RegistryError};
use crate::sources::files::MAX_LINE;
use crate::sources::{Source, SourceError};

pub use follow::ship_follow;
pub use once::ship_once;
pub use summary::Summary;

/// Why a run could not start or had to stop (a file that cannot be read is not one: it is warned about,
/// counted and skipped).
#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    /// A source's paths cannot be listed (one pass: a path or glob that names nothing).
    #[error(transparent)]
    Source(#[from] SourceError),
    /// A TCP source in a one-pass run.
    #[error("source {0}: TCP is a follow-mode input (drop --once)")]
    TcpInOnce(String),
    /// A TCP source cannot listen.
    #[error("source {name}: {error}")]
    Listen {
        /// The source.
        name: String,
        /// What the system said.
        error: std::io::Error,
    },
    /// The checkpoint registry cannot be opened.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The checkpoints cannot be written.
    #[error("cannot write checkpoints: {0}")]
    Checkpoints(std::io::Error),
    /// A thread panicked while holding the registry.
    #[error("the checkpoint registry's lock is poisoned (a thread panicked holding it)")]
    RegistryPoisoned,
    /// A task of the run panicked or was cancelled.
    #[error("{task} failed: {error}")]
    Task {
        /// Which task.
        task: &'static str,
        /// What the runtime said.
        error: String,
    },
    /// The stream worker ended while lines were still coming.
    #[error("the stream worker stopped early")]
    WorkerStopped,
    /// A line was attributed to a source that does not exist (a bug).
    #[error("internal error: no source {0}")]
    UnknownSource(usize),
    /// A batch could not be encoded (a bug: the engine's datums always encode).
    #[error("encoding a batch failed: {0}")]
    Encode(#[from] stencil_codec::EncodeError),
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
    /// Wire extensions to ask the intake for (`stream-zstd`, `native/3`); each stream uses them only
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
pub(crate) fn warn_skipped(
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
pub(crate) fn skip_reason(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::PermissionDenied => "permission_denied",
        std::io::ErrorKind::NotFound => "vanished",
        _ => "io_error",
    }
}

/// The metric label of source `src`.
pub(crate) fn source_name(sources: &[Source], src: usize) -> String {
    sources
        .get(src)
        .map_or_else(String::new, |s| s.name.clone())
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

pub(crate) fn seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        ^ u64::from(std::process::id())
}

/// The registry shared by readers and the flush task, if `--data-dir` was given.
pub(crate) fn open_registry(
    options: &ShipOptions,
) -> Result<Option<Arc<Mutex<Registry>>>, ShipError> {
    match &options.data_dir {
        Some(dir) => Ok(Some(Arc::new(Mutex::new(Registry::open(dir)?)))),
        None => Ok(None),
    }
}

/// Where to start `path`, the checkpoint id of its logs, the rest of the files it was rotated to
/// while the agent was down (to read first), and whether it resumes at a checkpoint.
pub(crate) fn open_file(
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
