//! An in-memory sink, for tests and for embedding the intake in another program.

use std::sync::{Arc, Mutex};

use stencil_codec::LogRecord;

use super::{Sink, SinkError, StreamInfo};

/// Keeps every log it receives, with its stream, in arrival order.
#[derive(Debug, Clone, Default)]
pub struct MemorySink {
    logs: Arc<Mutex<Vec<(StreamInfo, LogRecord)>>>,
}

impl MemorySink {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of everything received so far.
    pub fn logs(&self) -> Vec<(StreamInfo, LogRecord)> {
        self.logs.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// The messages received so far, in order.
    pub fn messages(&self) -> Vec<String> {
        self.logs().into_iter().map(|(_, l)| l.message).collect()
    }
}

impl Sink for MemorySink {
    fn write_batch(&self, stream: &StreamInfo, logs: &[LogRecord]) -> Result<(), SinkError> {
        let mut held = self
            .logs
            .lock()
            .map_err(|_| SinkError::io("memory sink", std::io::Error::other("lock poisoned")))?;
        held.extend(logs.iter().map(|l| (stream.clone(), l.clone())));
        Ok(())
    }
}
