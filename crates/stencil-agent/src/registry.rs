//! The checkpoint registry ("auditor", TRANSPORT.md §9): the latest acked offset per source, persisted
//! atomically so that a restart — even after `kill -9` — resumes where the intake's acks left off.
//!
//! Offsets only move forward. The file is JSON, rewritten whole: write a temporary file, fsync it,
//! rename it over the old one, fsync the folder. A source is identified by its path plus a fingerprint of
//! its first bytes, so a replaced file (rotation, inode reuse) is read from the start again.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::checkpoint::Mailbox;

/// Bytes hashed to fingerprint a file.
pub const FINGERPRINT_BYTES: usize = 256;

/// One source's resume point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// Fingerprint of the file's first bytes when it was read.
    pub fingerprint: u64,
    /// Offset just past the last acked line.
    pub offset: u64,
}

/// The registry: a map from source to its position, and the file it persists to.
#[derive(Debug)]
pub struct Registry {
    path: PathBuf,
    positions: BTreeMap<String, Position>,
}

/// The fingerprint of a file: a fixed-key hash of its first [`FINGERPRINT_BYTES`] bytes (fewer if the
/// file is shorter) and of how many there were.
pub fn fingerprint(path: &Path) -> std::io::Result<u64> {
    use std::io::Read;
    let mut buf = vec![0u8; FINGERPRINT_BYTES];
    let mut file = std::fs::File::open(path)?;
    let mut n = 0;
    while n < buf.len() {
        let k = file.read(&mut buf[n..])?;
        if k == 0 {
            break;
        }
        n += k;
    }
    // FNV-1a: stable across runs and machines.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ n as u64;
    for b in &buf[..n] {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    Ok(h)
}

impl Registry {
    /// Opens (or starts) the registry at `dir/checkpoints.json`. A corrupt file is an error that names it.
    pub fn open(dir: &Path) -> Result<Registry, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("--data-dir {}: {e}", dir.display()))?;
        let path = dir.join("checkpoints.json");
        let mut positions = BTreeMap::new();
        match std::fs::read(&path) {
            Ok(bytes) => {
                let doc: Value = serde_json::from_slice(&bytes).map_err(|e| {
                    format!(
                        "{} is not a valid checkpoint file ({e}); move it away to start over",
                        path.display()
                    )
                })?;
                if let Some(sources) = doc.get("sources").and_then(Value::as_object) {
                    for (source, v) in sources {
                        let fingerprint = v
                            .get("fingerprint")
                            .and_then(Value::as_str)
                            .and_then(|s| u64::from_str_radix(s, 16).ok());
                        let offset = v.get("offset").and_then(Value::as_u64);
                        if let (Some(fingerprint), Some(offset)) = (fingerprint, offset) {
                            positions.insert(
                                source.clone(),
                                Position {
                                    fingerprint,
                                    offset,
                                },
                            );
                        }
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{}: {e}", path.display())),
        }
        Ok(Registry { path, positions })
    }

    /// Where to resume `source` whose file now has `fingerprint`: the saved offset if the file is the
    /// same, else 0.
    pub fn resume(&self, source: &str, fingerprint: u64) -> u64 {
        self.positions
            .get(source)
            .filter(|p| p.fingerprint == fingerprint)
            .map_or(0, |p| p.offset)
    }

    /// Records that `source` (fingerprint known) is read from `offset` on, without moving backwards.
    pub fn track(&mut self, source: &str, fingerprint: u64, offset: u64) {
        let p = self.positions.entry(source.to_owned()).or_insert(Position {
            fingerprint,
            offset,
        });
        if p.fingerprint != fingerprint {
            *p = Position {
                fingerprint,
                offset,
            };
        }
        p.offset = p.offset.max(offset);
    }

    /// Applies acked offsets (forward only) for sources already tracked.
    pub fn advance(&mut self, acked: &BTreeMap<Arc<str>, u64>) -> bool {
        let mut changed = false;
        for (source, offset) in acked {
            if let Some(p) = self.positions.get_mut(source.as_ref()) {
                if *offset > p.offset {
                    p.offset = *offset;
                    changed = true;
                }
            }
        }
        changed
    }

    /// The saved position of `source`.
    pub fn get(&self, source: &str) -> Option<&Position> {
        self.positions.get(source)
    }

    /// Writes the registry atomically (temporary file, fsync, rename, fsync of the folder).
    pub fn persist(&self) -> std::io::Result<()> {
        let sources: serde_json::Map<String, Value> = self
            .positions
            .iter()
            .map(|(k, p)| {
                (
                    k.clone(),
                    json!({"fingerprint": format!("{:016x}", p.fingerprint), "offset": p.offset}),
                )
            })
            .collect();
        let doc = json!({"version": 1, "sources": sources});
        let tmp = self.path.with_extension("json.tmp");
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(doc.to_string().as_bytes())?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        metrics::counter!("stencil_agent_registry_flushes_total").increment(1);
        Ok(())
    }

    /// Persists acked offsets from `mailbox` every `interval` until `stop`, then once more.
    pub async fn run(
        mut self,
        mailbox: Mailbox,
        interval: Duration,
        stop: tokio_util::sync::CancellationToken,
    ) -> Registry {
        loop {
            let stopping = tokio::select! {
                _ = tokio::time::sleep(interval) => false,
                _ = stop.cancelled() => true,
            };
            if self.advance(&mailbox.take()) {
                if let Err(e) = self.persist() {
                    metrics::counter!("stencil_agent_registry_flush_errors_total").increment(1);
                    tracing::error!(error = %e, path = %self.path.display(), "cannot persist checkpoints");
                }
            }
            if stopping {
                return self;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persists_and_resumes_forward_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut r = Registry::open(dir.path()).expect("open");
        r.track("/a.log", 7, 0);
        let acked: BTreeMap<Arc<str>, u64> =
            [(Arc::from("/a.log"), 120u64), (Arc::from("/unknown"), 5)].into();
        assert!(r.advance(&acked));
        assert!(
            !r.advance(&[(Arc::from("/a.log"), 100u64)].into()),
            "never backwards"
        );
        r.persist().expect("persist");
        let again = Registry::open(dir.path()).expect("reopen");
        assert_eq!(again.resume("/a.log", 7), 120);
        assert_eq!(again.resume("/a.log", 8), 0, "a different file starts over");
        assert!(again.get("/unknown").is_none());
        std::fs::write(dir.path().join("checkpoints.json"), b"{not json").expect("corrupt");
        let err = Registry::open(dir.path()).expect_err("corrupt file");
        assert!(err.contains("move it away"), "{err}");
    }
}
