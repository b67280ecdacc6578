//! Files sink: rebuilt lines are appended to one file per source, so that `cmp` can check a round trip.
//!
//! A log's source is its `filename:` tag; `/var/log/app.log` is written to `<root>/var/log/app.log`. A
//! path that is relative, empty or climbs with `..` cannot be mapped safely and goes to
//! `<root>/_unfiled.log`, as do logs without the tag. Each line gets its original bytes (see
//! [`super::original_bytes`]) and terminator (see [`super::line_terminator`]) back. A batch's lines for
//! one file are gathered first and appended with one write, so a file only ever grows by whole lines:
//! an intake killed mid-batch leaves no torn line for the replayed batch to be glued to. Every batch is
//! handed to the OS before it is acked, and synced to disk too when `fsync` is on.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use stencil_codec::LogRecord;

use super::{line_terminator, original_bytes, Sink, SinkError, StreamInfo, FILENAME_TAG};

/// Open files kept at once; past it the least recently opened one is flushed and closed.
const MAX_OPEN_FILES: usize = 256;

/// Name of the file that collects logs without a usable `filename:` tag.
pub const UNFILED: &str = "_unfiled.log";

/// Appends each source's lines to its own file under a root folder.
pub struct FilesSink {
    root: PathBuf,
    fsync: bool,
    open: Mutex<OpenFiles>,
}

#[derive(Default)]
struct OpenFiles {
    files: HashMap<PathBuf, File>,
    order: Vec<PathBuf>,
}

impl FilesSink {
    /// A sink writing under `root` (created if missing).
    pub fn new(root: &Path, fsync: bool) -> Result<Self, SinkError> {
        std::fs::create_dir_all(root)
            .map_err(|e| SinkError::io(format!("creating {}", root.display()), e))?;
        Ok(FilesSink {
            root: root.to_owned(),
            fsync,
            open: Mutex::new(OpenFiles::default()),
        })
    }

    /// Where a log with this `filename:` tag value is written.
    pub fn path_for(&self, filename: Option<&str>) -> PathBuf {
        filename
            .and_then(|f| safe_relative(Path::new(f)))
            .map_or_else(|| self.root.join(UNFILED), |rel| self.root.join(rel))
    }
}

/// The absolute path `p` without its root, or `None` if it is relative or climbs with `..`.
fn safe_relative(p: &Path) -> Option<PathBuf> {
    if !p.is_absolute() {
        return None;
    }
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::RootDir | Component::Prefix(_) | Component::CurDir => {}
            Component::Normal(part) => out.push(part),
            Component::ParentDir => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

impl OpenFiles {
    fn get(&mut self, path: &Path) -> std::io::Result<&mut File> {
        if !self.files.contains_key(path) {
            if self.files.len() >= MAX_OPEN_FILES {
                let oldest = self.order.remove(0);
                self.files.remove(&oldest);
            }
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let file = OpenOptions::new().create(true).append(true).open(path)?;
            self.files.insert(path.to_owned(), file);
            self.order.push(path.to_owned());
        }
        self.files
            .get_mut(path)
            .ok_or_else(|| std::io::Error::other("file vanished from the cache"))
    }
}

impl Sink for FilesSink {
    fn write_batch(&self, _stream: &StreamInfo, logs: &[LogRecord]) -> Result<(), SinkError> {
        let mut open = self
            .open
            .lock()
            .map_err(|_| SinkError::io("files sink", std::io::Error::other("lock poisoned")))?;
        // Each file's bytes for this batch, in order of first appearance (a batch rarely spans many).
        let mut pending: Vec<(PathBuf, Vec<u8>)> = Vec::new();
        for record in logs {
            let path = self.path_for(record.tag(FILENAME_TAG));
            let k = match pending.iter().rposition(|(p, _)| *p == path) {
                Some(k) => k,
                None => {
                    pending.push((path, Vec::new()));
                    pending.len() - 1
                }
            };
            let bytes = &mut pending[k].1;
            bytes.extend_from_slice(&original_bytes(record));
            bytes.extend_from_slice(line_terminator(record));
        }
        for (path, bytes) in pending {
            let context = || format!("writing {}", path.display());
            let file = open.get(&path).map_err(|e| SinkError::io(context(), e))?;
            file.write_all(&bytes)
                .map_err(|e| SinkError::io(context(), e))?;
            if self.fsync {
                file.sync_data().map_err(|e| SinkError::io(context(), e))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_under_the_root_or_to_unfiled() {
        let dir = std::env::temp_dir();
        let sink = FilesSink::new(&dir, false).expect("sink");
        assert_eq!(
            sink.path_for(Some("/var/log/a.log")),
            dir.join("var/log/a.log")
        );
        for bad in [
            None,
            Some(""),
            Some("relative.log"),
            Some("/var/../etc/passwd"),
            Some("/"),
        ] {
            assert_eq!(sink.path_for(bad), dir.join(UNFILED), "{bad:?}");
        }
    }
}
