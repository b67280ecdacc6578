//! The checkpoint registry ("auditor", TRANSPORT.md §9): the latest acked offset per source, persisted
//! atomically so that a restart — even after `kill -9` — resumes where the intake's acks left off.
//!
//! Offsets only move forward. The file is JSON, rewritten whole: write a temporary file, fsync it,
//! rename it over the old one, fsync the folder. A source is identified by its path plus a fingerprint of
//! its first bytes, so a replaced file (rotation, inode reuse) is read from the start again.
//!
//! A file rotated away while the agent was down may still hold lines past its checkpoint (they were read
//! but not acked, or not read at all). When a checkpoint from an earlier run no longer matches its path,
//! the registry looks in the same folder for the file that still starts with the checkpoint's
//! fingerprint (`app.log.1`, `app.log-20261127`) and hands it back as a [`Leftover`] to read to its end
//! first, under its own checkpoint, so that those lines are neither lost nor sent twice.

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
    /// Loaded from disk and not yet opened by this run: only such a checkpoint can have a leftover.
    pub from_previous_run: bool,
}

/// What to read for a path: where to start, under which checkpoint id, and first, maybe, the rest of the
/// file it was rotated from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// Where to start reading the file at the path.
    pub start: u64,
    /// The checkpoint source id of its lines.
    pub source: String,
    /// A rotated-away file with lines past its checkpoint, to read to its end before `start`.
    pub leftover: Option<Leftover>,
}

/// The rest of a file that was rotated away while the agent was down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftover {
    /// Where the rotated file is now.
    pub path: PathBuf,
    /// Its acked offset: read from here to its end.
    pub offset: u64,
    /// The checkpoint source id of its lines (tracked under its new path).
    pub source: String,
}

/// Most folder entries examined when looking for a rotated file.
const MAX_ROTATION_CANDIDATES: usize = 1024;

/// In `path`'s folder, the first regular file (by name) other than `path` that is longer than
/// `p.offset` and starts with the bytes `p` was fingerprinted on.
fn find_rotated(path: &Path, p: &Position) -> Option<PathBuf> {
    let dir = path.parent()?;
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .take(MAX_ROTATION_CANDIDATES)
        .map(|e| e.path())
        .filter(|c| c != path)
        .collect();
    names.sort();
    names.into_iter().find(|c| {
        std::fs::metadata(c).is_ok_and(|m| m.is_file() && m.len() > p.offset)
            && fingerprint_n(c, p.fingerprint_len)
                .is_ok_and(|(fp, n)| fp == p.fingerprint && n == p.fingerprint_len)
    })
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
                                from_previous_run: true,
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
    /// returns the checkpoint source id to use for its logs. When a checkpoint from an earlier run no
    /// longer matches, also returns the rotated file that still holds lines past it (see the module doc).
    pub fn open_file(&mut self, path: &Path) -> std::io::Result<Opened> {
        let key = path.to_string_lossy().into_owned();
        let mut leftover = None;
        if let Some(p) = self.positions.get_mut(&key) {
            let (fp, _) = fingerprint_n(path, p.fingerprint_len)?;
            let size = std::fs::metadata(path)?.len();
            if fp == p.fingerprint && p.offset <= size {
                p.from_previous_run = false;
                return Ok(Opened {
                    start: p.offset,
                    source: source_id(&key, p.fingerprint),
                    leftover: None,
                });
            }
            if p.from_previous_run {
                let old = p.clone();
                if let Some(rotated) = find_rotated(path, &old) {
                    let rotated_key = rotated.to_string_lossy().into_owned();
                    // Resume the rotated file from the furthest acked offset known for it.
                    let offset = match self.positions.get(&rotated_key) {
                        Some(r) if r.fingerprint == old.fingerprint => r.offset.max(old.offset),
                        _ => old.offset,
                    };
                    self.positions.insert(
                        rotated_key.clone(),
                        Position {
                            offset,
                            from_previous_run: false,
                            ..old
                        },
                    );
                    metrics::counter!("stencil_agent_rotated_leftovers_total").increment(1);
                    leftover = Some(Leftover {
                        path: rotated,
                        offset,
                        source: source_id(&rotated_key, old.fingerprint),
                    });
                }
            }
        }
        let (fingerprint, fingerprint_len) = fingerprint(path)?;
        self.positions.insert(
            key.clone(),
            Position {
                fingerprint,
                fingerprint_len,
                offset: 0,
                from_previous_run: false,
            },
        );
        Ok(Opened {
            start: 0,
            source: source_id(&key, fingerprint),
            leftover,
        })
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
    fn a_file_rotated_while_down_is_found_by_its_fingerprint() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let file = dir.path().join("app.log");
        let body = "line one of the old file\nline two\nline three\n";
        std::fs::write(&file, body).expect("write");
        let mut r = Registry::open(&data).expect("open");
        let id = r.open_file(&file).expect("open file").source;
        assert!(r.advance(&[(Arc::from(id.as_str()), 25u64)].into()));
        r.persist().expect("persist");

        // Down: app.log becomes app.log.1; a decoy with other bytes and a fresh app.log appear.
        std::fs::rename(&file, dir.path().join("app.log.1")).expect("rotate");
        std::fs::write(dir.path().join("app.log.0"), "something else entirely\n").expect("decoy");
        std::fs::write(&file, "brand new\n").expect("new");

        let mut again = Registry::open(&data).expect("reopen");
        let opened = again.open_file(&file).expect("open new");
        assert_eq!(opened.start, 0);
        let left = opened.leftover.expect("the rotated file");
        assert_eq!(left.path, dir.path().join("app.log.1"));
        assert_eq!(left.offset, 25);
        // Its acks now advance its own checkpoint.
        assert!(again.advance(&[(Arc::from(left.source.as_str()), body.len() as u64)].into()));
        again.persist().expect("persist");
        let third = Registry::open(&data).expect("third");
        let key = dir.path().join("app.log.1").to_string_lossy().into_owned();
        assert_eq!(third.get(&key).map(|p| p.offset), Some(body.len() as u64));

        // A rotated file whose every line was acked is not a leftover.
        let new_id = opened.source;
        assert!(again.advance(&[(Arc::from(new_id.as_str()), 10u64)].into()));
        again.persist().expect("persist");
        std::fs::rename(&file, dir.path().join("app.log.2")).expect("rotate again");
        std::fs::write(&file, "another new file\n").expect("newer");
        let mut fourth = Registry::open(&data).expect("fourth");
        assert!(fourth.open_file(&file).expect("open").leftover.is_none());
    }

    #[test]
    fn persists_and_resumes_forward_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("a.log");
        std::fs::write(&file, "first line\nsecond line\n").expect("write");
        let mut r = Registry::open(dir.path()).expect("open");
        let opened = r.open_file(&file).expect("open file");
        assert_eq!(opened.start, 0);
        let id = opened.source;
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
        assert_eq!(again.open_file(&file).expect("resume").start, 11);
        // Appending keeps the position; replacing the content starts over.
        std::fs::write(&file, "first line\nsecond line\nthird\n").expect("append");
        assert_eq!(again.open_file(&file).expect("resume").start, 11);
        std::fs::write(&file, "a different file\n").expect("replace");
        assert_eq!(again.open_file(&file).expect("start over").start, 0);
        // Replaced within this run: no leftover is looked for (the tail read the old file to its end).
        assert!(again.open_file(&file).expect("again").leftover.is_none());
        std::fs::write(dir.path().join("checkpoints.json"), b"{not json").expect("corrupt");
        let err = Registry::open(dir.path()).expect_err("corrupt file");
        assert!(err.contains("move it away"), "{err}");
    }
}
