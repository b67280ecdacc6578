//! Following a file as it grows (`stencil ship` without `--once`).
//!
//! A [`Tail`] reads appended lines from its open descriptor. At end of file it looks at the path again:
//! a different inode means the file was rotated by rename (the old descriptor was read to its end, so the
//! tail reopens the path from 0); a size below what was read means copytruncate or truncation (it starts
//! over at 0). A last line without a newline is held and emitted, tagged `stencil_eol:none`, after an idle
//! timeout or when the file is closed: neither lost nor doubled. Lines over the cap are split.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::files::{Eol, Splitter};

/// What a poll found besides lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Nothing special.
    None,
    /// The file was replaced (rotation, truncation): call [`Tail::restart`] with a new source id.
    Replaced,
}

/// One followed file.
#[derive(Debug)]
pub struct Tail {
    path: PathBuf,
    file: Option<File>,
    ino: u64,
    read_pos: u64,
    source: Arc<str>,
    lines: Splitter,
    partial_since: Option<Instant>,
}

impl Tail {
    /// Follows `path` (absolute) from `start`, reporting checkpoints under `source`.
    pub fn new(path: PathBuf, start: u64, source: String) -> Tail {
        Tail {
            path,
            file: None,
            ino: 0,
            read_pos: start,
            source: Arc::from(source),
            lines: Splitter::new(start, crate::files::MAX_LINE),
            partial_since: None,
        }
    }

    /// The followed path.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// The checkpoint source id.
    pub fn source(&self) -> &Arc<str> {
        &self.source
    }

    /// Starts over on a replaced file, from `start`, under a new source id.
    pub fn restart(&mut self, start: u64, source: String) {
        self.file = None;
        self.read_pos = start;
        self.lines = Splitter::new(start, crate::files::MAX_LINE);
        self.source = Arc::from(source);
    }

    fn emit_partial(&mut self, each: &mut dyn FnMut(&[u8], Eol, u64)) {
        self.lines.flush(each);
        self.partial_since = None;
    }

    /// Emits a held partial line now (the file is being closed).
    pub fn close(&mut self, each: &mut dyn FnMut(&[u8], Eol, u64)) {
        self.emit_partial(each);
    }

    /// Reads what was appended, calling `each(line, eol, offset_after)`. Returns whether anything was
    /// read, and whether the file was replaced.
    pub fn poll(
        &mut self,
        now: Instant,
        idle: Duration,
        each: &mut dyn FnMut(&[u8], Eol, u64),
    ) -> std::io::Result<(bool, Change)> {
        if self.file.is_none() {
            let mut f = match File::open(&self.path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Ok((false, Change::None))
                }
                Err(e) => return Err(e),
            };
            let meta = f.metadata()?;
            if meta.len() < self.read_pos {
                // Shorter than where we were: it was truncated or replaced while we were away.
                self.read_pos = 0;
                self.lines = Splitter::new(0, crate::files::MAX_LINE);
            }
            f.seek(SeekFrom::Start(self.read_pos))?;
            self.ino = meta.ino();
            self.file = Some(f);
        }
        let mut any = false;
        let mut buf = [0u8; 64 << 10];
        while let Some(f) = self.file.as_mut() {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            any = true;
            self.read_pos += n as u64;
            self.lines.feed(&buf[..n], each);
        }
        if any {
            self.partial_since = self.lines.has_partial().then_some(now);
        }
        // At end of file: was the path rotated or truncated?
        let replaced = match std::fs::metadata(&self.path) {
            Ok(m) => m.ino() != self.ino || m.len() < self.read_pos,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(e) => return Err(e),
        };
        if replaced {
            self.emit_partial(each);
            self.file = None;
            return Ok((any, Change::Replaced));
        }
        if self
            .partial_since
            .is_some_and(|t| now.duration_since(t) >= idle)
        {
            self.emit_partial(each);
        }
        Ok((any, Change::None))
    }
}
