//! The checkpoint registry ("auditor", TRANSPORT.md §9): the latest acked offset per source, persisted
//! atomically so that a restart — even after `kill -9` — resumes where the intake's acks left off.
//!
//! Offsets only move forward. The file is JSON, rewritten whole: write a temporary file, fsync it,
//! rename it over the old one, fsync the folder.
//!
//! A source is a file's **content**, not its path: it is identified by the path it was found at plus a
//! fingerprint of its first bytes ([`source_id`]), and its checkpoint is keyed by that id. So a file that
//! is renamed away (`app.log` → `app.log.1`) while it is being read keeps its checkpoint: the tail reads
//! on from its open descriptor and its acks still advance it, while the new `app.log` gets a checkpoint
//! of its own. Several checkpoints can therefore name the same path; the most recent
//! [`MAX_PER_PATH`] are kept.
//!
//! A file rotated away while the agent was down (or while it was being drained) may still hold lines
//! past its checkpoint. When a checkpoint from an earlier run no longer matches the file at its path,
//! the registry looks in the same folder for the file that still starts with the checkpoint's
//! fingerprint (`app.log.1`, `app.log-20261127`) and hands it back as a [`Leftover`] to read to its end
//! first, under its own checkpoint, so that those lines are neither lost nor sent twice.
//!
//! The data folder is locked (`flock`) for as long as the registry is open: a second agent on the same
//! folder would overwrite its checkpoints, so it is refused with a clear error.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::checkpoint::Mailbox;

/// Bytes hashed to fingerprint a file.
pub const FINGERPRINT_BYTES: usize = 256;

/// One source's resume point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The path the file was found at (and its lines are tagged with).
    pub path: String,
    /// Fingerprint of the file's first `fingerprint_len` bytes when it was opened.
    pub fingerprint: u64,
    /// How many bytes the fingerprint covers (fewer than [`FINGERPRINT_BYTES`] for a short file).
    pub fingerprint_len: usize,
    /// Offset just past the last acked line.
    pub offset: u64,
    /// Loaded from disk and not yet opened by this run: only such a checkpoint can have a leftover.
    pub from_previous_run: bool,
    /// When it was last opened (a counter, persisted): the oldest checkpoints of a path go first.
    pub opened: u64,
}

/// Most checkpoints kept for one path: the file there now and the most recent ones rotated away.
pub const MAX_PER_PATH: usize = 8;

/// The checkpoint file (`checkpoints.json`): version 2 keys entries by source id with the path inside;
/// version 1 (no `version` field) keyed them by path.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct FileDoc {
    #[serde(default = "version_one")]
    version: u64,
    #[serde(default)]
    sources: BTreeMap<String, serde_json::Value>,
}

fn version_one() -> u64 {
    1
}

/// One entry of [`FileDoc`].
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct EntryDoc {
    #[serde(default)]
    path: Option<String>,
    /// Hex.
    fingerprint: String,
    #[serde(default)]
    fingerprint_len: usize,
    offset: u64,
    #[serde(default)]
    opened: u64,
}

/// What to read for a path: where to start, under which checkpoint id, and first, maybe, the rest of the
/// file it was rotated from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// Where to start reading the file at the path.
    pub start: u64,
    /// The checkpoint source id of its lines.
    pub source: String,
    /// Rotated-away files with lines past their checkpoints, to read to their ends before `start`.
    pub leftovers: Vec<Leftover>,
    /// The file resumes at a checkpoint (false: it is seen for the first time).
    pub resumed: bool,
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

/// The registry: a map from source id to its position, and the file it persists to.
#[derive(Debug)]
pub struct Registry {
    path: PathBuf,
    positions: BTreeMap<String, Position>,
    next_open: u64,
    /// Holds the data folder's lock while the registry is open.
    _lock: std::fs::File,
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

/// Why the registry could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The data folder or one of its files cannot be created or read.
    #[error("--data-dir {}: {error}", path.display())]
    Io {
        /// The folder or file.
        path: PathBuf,
        /// What the system said.
        error: std::io::Error,
    },
    /// Another agent holds the folder's lock.
    #[error("--data-dir {} is in use by another stencil agent; give each agent its own data folder", .0.display())]
    InUse(PathBuf),
    /// The checkpoint file does not parse.
    #[error("{} is not a valid checkpoint file ({error}); move it away to start over", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        error: serde_json::Error,
    },
}

impl Registry {
    /// Opens (or creates) the registry in `dir` (`dir/checkpoints.json`), locking the folder against a
    /// second agent. A corrupt file is an error that names it.
    pub fn open(dir: &Path) -> Result<Registry, RegistryError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |error| RegistryError::Io { path, error }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let lock_path = dir.join("lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(RegistryError::InUse(dir.to_path_buf()))
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(&lock_path)(e)),
        }
        let path = dir.join("checkpoints.json");
        let mut positions = BTreeMap::new();
        let mut next_open = 0;
        match std::fs::read(&path) {
            Ok(bytes) => {
                let doc: FileDoc =
                    serde_json::from_slice(&bytes).map_err(|error| RegistryError::Corrupt {
                        path: path.clone(),
                        error,
                    })?;
                for (key, v) in doc.sources {
                    // An entry that does not parse is forgotten (its file is read again from the
                    // start): the others still resume.
                    let Ok(entry) = serde_json::from_value::<EntryDoc>(v) else {
                        continue;
                    };
                    let fingerprint = u64::from_str_radix(&entry.fingerprint, 16).ok();
                    let (offset, fingerprint_len, opened) =
                        (entry.offset, entry.fingerprint_len, entry.opened);
                    // Version 1 keyed checkpoints by path; version 2 by source id, with the path inside.
                    let file = match doc.version {
                        1 => Some(key.clone()),
                        _ => entry.path,
                    };
                    if let (Some(fingerprint), Some(file)) = (fingerprint, file) {
                        next_open = next_open.max(opened + 1);
                        positions.insert(
                            source_id(&file, fingerprint),
                            Position {
                                path: file,
                                fingerprint,
                                fingerprint_len,
                                offset,
                                from_previous_run: true,
                                opened,
                            },
                        );
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&path)(e)),
        }
        Ok(Registry {
            path,
            positions,
            next_open,
            _lock: lock,
        })
    }

    /// Where to read `path` from, under which source id, and which rotated-away files to read first.
    ///
    /// The file at `path` resumes at its checkpoint when one of the path's checkpoints still matches
    /// its first bytes; otherwise it is a new source, read from 0. Each checkpoint of the path from an
    /// earlier run that does not match is looked for in the folder (see [`Leftover`]); one whose file
    /// is gone is forgotten.
    pub fn open_file(&mut self, path: &Path) -> std::io::Result<Opened> {
        let key = path.to_string_lossy().into_owned();
        let size = std::fs::metadata(path)?.len();
        let mine: Vec<String> = self
            .positions
            .iter()
            .filter(|(_, p)| p.path == key)
            .map(|(id, _)| id.clone())
            .collect();
        let mut resumed = None;
        let mut leftovers = Vec::new();
        for id in mine {
            let Some(p) = self.positions.get(&id).cloned() else {
                continue;
            };
            let (fp, _) = fingerprint_n(path, p.fingerprint_len)?;
            if fp == p.fingerprint && p.offset <= size {
                if resumed
                    .as_ref()
                    .is_none_or(|(_, len): &(String, usize)| p.fingerprint_len > *len)
                {
                    resumed = Some((id, p.fingerprint_len));
                }
                continue;
            }
            if !p.from_previous_run {
                continue;
            }
            match find_rotated(path, &p) {
                Some(rotated) => {
                    metrics::counter!("stencil_agent_rotated_leftovers_total").increment(1);
                    if let Some(pos) = self.positions.get_mut(&id) {
                        pos.from_previous_run = false;
                    }
                    leftovers.push(Leftover {
                        path: rotated,
                        offset: p.offset,
                        source: id,
                    });
                }
                None => {
                    self.positions.remove(&id);
                }
            }
        }
        let opened = self.next_open;
        self.next_open += 1;
        if let Some((id, _)) = resumed {
            if let Some(p) = self.positions.get_mut(&id) {
                p.from_previous_run = false;
                p.opened = opened;
                let start = p.offset;
                self.forget_oldest(&key);
                return Ok(Opened {
                    start,
                    source: id,
                    leftovers,
                    resumed: true,
                });
            }
        }
        let (fingerprint, fingerprint_len) = fingerprint(path)?;
        let source = source_id(&key, fingerprint);
        self.positions.insert(
            source.clone(),
            Position {
                path: key.clone(),
                fingerprint,
                fingerprint_len,
                offset: 0,
                from_previous_run: false,
                opened,
            },
        );
        self.forget_oldest(&key);
        Ok(Opened {
            start: 0,
            source,
            leftovers,
            resumed: false,
        })
    }

    /// Keeps the [`MAX_PER_PATH`] most recently opened checkpoints of `key`.
    fn forget_oldest(&mut self, key: &str) {
        let mut mine: Vec<(u64, String)> = self
            .positions
            .iter()
            .filter(|(_, p)| p.path == key)
            .map(|(id, p)| (p.opened, id.clone()))
            .collect();
        if mine.len() > MAX_PER_PATH {
            mine.sort();
            for (_, id) in &mine[..mine.len() - MAX_PER_PATH] {
                self.positions.remove(id);
            }
        }
    }

    /// Moves acked sources forward; returns whether anything changed.
    pub fn advance(&mut self, acked: &BTreeMap<Arc<str>, u64>) -> bool {
        let mut changed = false;
        for (source, offset) in acked {
            if let Some(p) = self.positions.get_mut(&**source) {
                if *offset > p.offset {
                    p.offset = *offset;
                    changed = true;
                }
            }
        }
        changed
    }

    /// Every checkpoint, by source id.
    pub fn positions(&self) -> impl Iterator<Item = (&String, &Position)> {
        self.positions.iter()
    }

    /// The checkpoint of a source id.
    pub fn get(&self, source: &str) -> Option<&Position> {
        self.positions.get(source)
    }

    /// Writes the registry atomically (temporary file, fsync, rename, fsync of the folder).
    pub fn persist(&self) -> std::io::Result<()> {
        let sources = self
            .positions
            .iter()
            .map(|(k, p)| {
                let entry = EntryDoc {
                    path: Some(p.path.clone()),
                    fingerprint: format!("{:016x}", p.fingerprint),
                    fingerprint_len: p.fingerprint_len,
                    offset: p.offset,
                    opened: p.opened,
                };
                serde_json::to_value(entry).map(|v| (k.clone(), v))
            })
            .collect::<Result<_, _>>()?;
        let doc = FileDoc {
            version: 2,
            sources,
        };
        let bytes = serde_json::to_vec(&doc)?;
        let tmp = self.path.with_extension("json.tmp");
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
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
            // The writes and fsyncs block: off the async runtime.
            let registry = registry.clone();
            let _ = tokio::task::spawn_blocking(move || {
                if let Ok(mut reg) = registry.lock() {
                    if reg.advance(&acked) {
                        if let Err(e) = reg.persist() {
                            metrics::counter!("stencil_agent_registry_flush_errors_total")
                                .increment(1);
                            tracing::error!(error = %e, path = %reg.path.display(), "cannot persist checkpoints");
                        }
                    }
                }
            })
            .await;
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
        drop(r);

        // Down: app.log becomes app.log.1; a decoy with other bytes and a fresh app.log appear.
        std::fs::rename(&file, dir.path().join("app.log.1")).expect("rotate");
        std::fs::write(dir.path().join("app.log.0"), "something else entirely\n").expect("decoy");
        std::fs::write(&file, "brand new\n").expect("new");

        let mut again = Registry::open(&data).expect("reopen");
        let opened = again.open_file(&file).expect("open new");
        assert_eq!(opened.start, 0);
        assert_eq!(opened.leftovers.len(), 1);
        let left = opened.leftovers[0].clone();
        assert_eq!(left.path, dir.path().join("app.log.1"));
        assert_eq!(left.offset, 25);
        // The rotated file keeps its own checkpoint, which its acks advance.
        assert_eq!(left.source, id);
        assert!(again.advance(&[(Arc::from(left.source.as_str()), body.len() as u64)].into()));
        // And the new file has one of its own.
        let new_id = opened.source;
        assert_ne!(new_id, id);
        assert!(again.advance(&[(Arc::from(new_id.as_str()), 10u64)].into()));
        again.persist().expect("persist");
        drop(again);

        let third = Registry::open(&data).expect("third");
        assert_eq!(third.get(&id).map(|p| p.offset), Some(body.len() as u64));
        drop(third);

        // A rotated file whose every line was acked is not a leftover, and its checkpoint is forgotten.
        std::fs::rename(&file, dir.path().join("app.log.2")).expect("rotate again");
        std::fs::write(&file, "another new file\n").expect("newer");
        let mut fourth = Registry::open(&data).expect("fourth");
        assert!(fourth.open_file(&file).expect("open").leftovers.is_empty());
        assert!(fourth.get(&id).is_none());
    }

    #[test]
    fn a_second_registry_on_the_same_folder_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = Registry::open(dir.path()).expect("open");
        let err = Registry::open(dir.path()).expect_err("locked");
        assert!(matches!(err, RegistryError::InUse(_)), "{err}");
        assert!(
            err.to_string().contains("in use by another stencil agent"),
            "{err}"
        );
        drop(first);
        Registry::open(dir.path()).expect("free again");
    }

    #[test]
    fn a_path_keeps_a_bounded_number_of_checkpoints() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("a.log");
        let mut r = Registry::open(&dir.path().join("data")).expect("open");
        for i in 0..(MAX_PER_PATH + 5) {
            std::fs::write(&file, format!("content number {i}\n")).expect("write");
            r.open_file(&file).expect("open");
        }
        assert_eq!(r.positions.len(), MAX_PER_PATH);
    }

    /// Opens the registry again after the previous handle was dropped. A test elsewhere in this process
    /// that spawns a child can hold the lock's descriptor between its fork and exec for a moment, so a
    /// refusal as "in use" is retried briefly; any other result is returned at once.
    fn reopen(dir: &Path) -> Result<Registry, RegistryError> {
        for _ in 0..100 {
            match Registry::open(dir) {
                Err(RegistryError::InUse(_)) => {
                    std::thread::sleep(std::time::Duration::from_millis(20))
                }
                other => return other,
            }
        }
        Registry::open(dir)
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
        drop(r);
        let mut again = reopen(dir.path()).expect("reopen");
        assert_eq!(again.open_file(&file).expect("resume").start, 11);
        // Appending keeps the position; replacing the content starts over.
        std::fs::write(&file, "first line\nsecond line\nthird\n").expect("append");
        assert_eq!(again.open_file(&file).expect("resume").start, 11);
        std::fs::write(&file, "a different file\n").expect("replace");
        assert_eq!(again.open_file(&file).expect("start over").start, 0);
        // Replaced within this run: no leftover is looked for (the tail read the old file to its end).
        assert!(again.open_file(&file).expect("again").leftovers.is_empty());
        drop(again);
        std::fs::write(dir.path().join("checkpoints.json"), b"{not json").expect("corrupt");
        let err = reopen(dir.path()).expect_err("corrupt file");
        assert!(matches!(err, RegistryError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("move it away"), "{err}");
    }
}
