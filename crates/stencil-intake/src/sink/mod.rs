//! Sinks: where rebuilt logs go before a batch is acked.
//!
//! A sink's `write_batch` returning `Ok` is the intake taking responsibility for the logs: only then is the
//! batch acked, and only then does the agent advance its checkpoints (PROTOCOL.md §10). A failed write
//! (disk full, permission denied) is returned as an error; the stream ends with `UNAVAILABLE` and the agent
//! replays the batch on a new stream. Sinks are synchronous and run on tokio's blocking pool.

mod files;
mod journal;
mod jsonl;
mod memory;
mod nats;

use std::net::SocketAddr;

use stencil_codec::{Generation, LogRecord};

pub use files::{FilesSink, Layout, LayoutError};
pub use jsonl::JsonLinesSink;
pub use memory::MemorySink;
pub use nats::{NatsConfig, NatsSink};

/// Who sent a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamInfo {
    /// A process-unique stream number.
    pub id: u64,
    /// The schema generation of the stream.
    pub generation: Generation,
    /// The peer's address, when known.
    pub peer: Option<SocketAddr>,
}

/// A sink write failure. Its message carries the I/O error's; it is not also a `source()`, so that
/// a chained report (`{:#}`) does not print the same text twice.
#[derive(Debug, thiserror::Error)]
#[error("{context}: {cause}")]
pub struct SinkError {
    /// What was being written.
    pub context: String,
    /// The I/O error.
    pub cause: std::io::Error,
}

impl SinkError {
    pub(crate) fn io(context: impl Into<String>, cause: std::io::Error) -> Self {
        SinkError {
            context: context.into(),
            cause,
        }
    }
}

/// Somewhere to put rebuilt logs.
pub trait Sink: Send + Sync + 'static {
    /// Writes one batch's logs, in order. `Ok` means the sink has taken responsibility for them.
    fn write_batch(&self, stream: &StreamInfo, logs: &[LogRecord]) -> Result<(), SinkError>;
}

/// Counter of bytes a sink cut away on open because a crash left them from a batch that was never acked.
pub(crate) const ROLLED_BACK_BYTES: &str = "stencil_intake_sink_bytes_rolled_back_total";

/// The tag that names a log's source file (`filename:/var/log/syslog`).
pub const FILENAME_TAG: &str = "filename";

/// The tag that records a line's original terminator when it is not `\n`: `stencil_eol:none` for a last
/// line without a newline, `stencil_eol:crlf` for `\r\n`. The files sink restores it byte for byte.
pub const EOL_TAG: &str = "stencil_eol";

/// The original bytes of a log (see [`stencil_codec::original_bytes`]): unescaped for a line that was
/// not valid UTF-8, the compact document for a JSON log. A malformed escape keeps the text as received
/// (nothing is dropped) and logs a warning.
pub fn original_bytes(record: &LogRecord) -> std::borrow::Cow<'_, [u8]> {
    match stencil_codec::original_bytes(record) {
        Ok(bytes) => std::borrow::Cow::Owned(bytes),
        Err(e) => {
            tracing::warn!(error = %e, "escaped log with a malformed escape; writing it as received");
            std::borrow::Cow::Borrowed(record.message.as_bytes())
        }
    }
}

/// The bytes that ended a line in its source file.
pub fn line_terminator(record: &LogRecord) -> &'static [u8] {
    match record.tag(EOL_TAG) {
        Some("none") => b"",
        Some("crlf") => b"\r\n",
        _ => b"\n",
    }
}
