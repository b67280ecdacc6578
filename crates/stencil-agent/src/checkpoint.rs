//! The coalescing checkpoint mailbox between stream workers and the checkpoint registry (TRANSPORT.md §9).
//!
//! It holds at most one entry per source, the latest released offset, so it can never overflow and no
//! acked offset is ever dropped (R6); the worker never blocks on it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::payload::Checkpoint;

/// Latest offset per source.
type Offsets = BTreeMap<Arc<str>, u64>;

/// Latest released offset per source, and a count of acked logs (for progress displays).
#[derive(Debug, Clone, Default)]
pub struct Mailbox {
    inner: Arc<Mutex<Offsets>>,
    acked: Arc<std::sync::atomic::AtomicU64>,
}

impl Mailbox {
    /// An empty mailbox.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records released checkpoints; an offset only moves forward.
    pub fn post(&self, checkpoints: &[Checkpoint]) {
        if checkpoints.is_empty() {
            return;
        }
        if let Ok(mut map) = self.inner.lock() {
            for c in checkpoints {
                let slot = map.entry(c.source.clone()).or_insert(c.offset);
                *slot = (*slot).max(c.offset);
            }
        }
    }

    /// Counts logs whose payload was acked (or dropped on purpose).
    pub fn add_acked(&self, logs: u64) {
        self.acked
            .fetch_add(logs, std::sync::atomic::Ordering::Relaxed);
    }

    /// Logs acked so far.
    pub fn acked(&self) -> u64 {
        self.acked.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Takes everything posted since the last call.
    pub fn take(&self) -> Offsets {
        self.inner
            .lock()
            .map(|mut m| std::mem::take(&mut *m))
            .unwrap_or_default()
    }
}
