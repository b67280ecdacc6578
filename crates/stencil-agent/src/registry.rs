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
    /// Fingerprint of the file's first `fingerprint_len` bytes when it was opened.
    pub fingerprint: u64,
    /// How many bytes the fingerprint covers (fewer than [`FINGERPRINT_BYTES`] for a short file).
    pub fingerprint_len: usize,
    /// Offset just past the last acked line.
    pub offset: u64,
}

/// The checkpoint source id of a file with a fingerprint: acks for a file that has since been replaced
/// (rotation) are recognised and ignored.
pub fn source_id(path: &str, fingerprint: u64) -> String {
    format!("{path}\u{0}{fingerprint:016x}")
}

/// The registry: a map from source to its position, and the file it persists to.
#[derive(Debug)]
pub struct Registry {
    path: PathBuf,
    positions: BTreeMap<String, Position>,
}

/// The fingerprint of a file: a fixed-key hash of its first [`FINGERPRINT_BYTES`] bytes (fewer if the
/// file is shorter) and of how many there were; returns the hash and the byte count.
pub fn fingerprint(path: &Path) -> std::io::Result<(u64, usize)> {
    fingerprint_n(path, FINGERPRINT_BYTES)
}

/// The fingerprint of a file's first `len` bytes (fewer if the file is shorter).
pub fn fingerprint_n(path: &Path, len: usize) -> std::io::Result<(u64, usize)> {
    use std::io::Read;
    let mut buf = vec![0u8; len];
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
    Ok((h, n))
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
                        let fingerprint_len = v
                            .get("fingerprint_len")
                            .and_then(Value::as_u64)
                            .unwrap_or(0) as usize;
                        if let (Some(fingerprint), Some(offset)) = (fingerprint, offset) {
                            let position = Position {
                                fingerprint,
                                fingerprint_len,
                                offset,
                            };
                            positions.insert(source.clone(), position);
                        }
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{}: {e}", path.display())),
        }
        Ok(Registry { path, positions })
    }

    /// Where to resume the file at `path`: its saved offset if the file still starts with the bytes it
    /// was fingerprinted on, else 0. Tracks the file (with a fresh fingerprint when it starts over) and
    /// returns the checkpoint source id to use for its logs.
    pub fn open_file(&mut self, path: &Path) -> std::io::Result<(u64, String)> {
        let key = path.to_string_lossy().into_owned();
        if let Some(p) = self.positions.get(&key) {
            let (fp, _) = fingerprint_n(path, p.fingerprint_len)?;
            let size = std::fs::metadata(path)?.len();
            if fp == p.fingerprint && p.offset <= size {
                return Ok((p.offset, source_id(&key, p.fingerprint)));
            }
        }
        let (fingerprint, fingerprint_len) = fingerprint(path)?;
        self.positions.insert(
            key.clone(),
            Position {
                fingerprint,
                fingerprint_len,
                offset: 0,
            },
        );
        Ok((0, source_id(&key, fingerprint)))
    }

    /// Applies acked offsets (forward only) for tracked files; acks for a replaced file are ignored.
    pub fn advance(&mut self, acked: &BTreeMap<Arc<str>, u64>) -> bool {
        let mut changed = false;
        for (source, offset) in acked {
            let Some((path, fp)) = source.split_once('\u{0}') else {
                continue;
            };
            let Ok(fp) = u64::from_str_radix(fp, 16) else {
                continue;
            };
            if let Some(p) = self.positions.get_mut(path) {
                if p.fingerprint == fp && *offset > p.offset {
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
                    json!({
                        "fingerprint": format!("{:016x}", p.fingerprint),
                        "fingerprint_len": p.fingerprint_len,
                        "offset": p.offset,
                    }),
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

    /// Persists acked offsets from `mailbox` every `interval` until `stop`, then once more. The
    /// registry is shared with the readers, which open files through it.
    pub async fn run(
        registry: Arc<std::sync::Mutex<Registry>>,
        mailbox: Mailbox,
        interval: Duration,
        stop: tokio_util::sync::CancellationToken,
    ) {
        loop {
            let stopping = tokio::select! {
                _ = tokio::time::sleep(interval) => false,
                _ = stop.cancelled() => true,
            };
            let acked = mailbox.take();
            if let Ok(mut reg) = registry.lock() {
                if reg.advance(&acked) {
                    if let Err(e) = reg.persist() {
                        metrics::counter!("stencil_agent_registry_flush_errors_total").increment(1);
                        tracing::error!(error = %e, path = %reg.path.display(), "cannot persist checkpoints");
                    }
                }
            }
            if stopping {
                return;
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
        let file = dir.path().join("a.log");
        std::fs::write(&file, "first line\nsecond line\n").expect("write");
        let mut r = Registry::open(dir.path()).expect("open");
        let (start, id) = r.open_file(&file).expect("open file");
        assert_eq!(start, 0);
        let acked: BTreeMap<Arc<str>, u64> = [
            (Arc::from(id.as_str()), 11u64),
            (Arc::from("/unknown\u{0}00"), 5),
        ]
        .into();
        assert!(r.advance(&acked));
        assert!(
            !r.advance(&[(Arc::from(id.as_str()), 5u64)].into()),
            "never backwards"
        );
        r.persist().expect("persist");
        let mut again = Registry::open(dir.path()).expect("reopen");
        assert_eq!(again.open_file(&file).expect("resume").0, 11);
        // Appending keeps the position; replacing the content starts over.
        std::fs::write(&file, "first line\nsecond line\nthird\n").expect("append");
        assert_eq!(again.open_file(&file).expect("resume").0, 11);
        std::fs::write(&file, "a different file\n").expect("replace");
        assert_eq!(again.open_file(&file).expect("start over").0, 0);
        std::fs::write(dir.path().join("checkpoints.json"), b"{not json").expect("corrupt");
        let err = Registry::open(dir.path()).expect_err("corrupt file");
        assert!(err.contains("move it away"), "{err}");
    }
}
