//! Following a file as it grows (`stencil ship` without `--once`).
//!
//! A [`Tail`] reads appended lines from its open descriptor. A [`Follower`] owns the tails of one path:
//! - At end of file it looks at the path again. A different inode, or no file, means the file was
//!   rotated by rename (or deleted). The writer may still hold the old descriptor (logrotate with
//!   `create`, before the application reopens its log), so the old tail is **kept open and drained**:
//!   it is read on, under its own checkpoint, until it has been idle for `rotate_wait`; meanwhile the
//!   new file at the path gets a tail of its own.
//! - A size below what was read, on the same inode, means copytruncate or truncation: it starts over
//!   at 0.
//! - A last line without a newline is held and emitted, tagged `stencil_eol:none`, after an idle
//!   timeout or when the tail is closed: neither lost nor doubled. Lines over the cap are split.
//!
//! Opening a file can fail (permissions, a directory, an I/O error): the follower reports it and tries
//! again after a pause, and the caller keeps following the other files.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::sources::files::{Eol, Splitter};

/// What a poll found besides lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Nothing special.
    None,
    /// Another file (or none) is at the path now: this one was renamed or deleted. Its descriptor is
    /// still open and may still grow.
    Moved,
    /// The file is shorter than what was read: it was truncated, and its content starts over.
    Truncated,
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
    max_line: usize,
    /// When the tail last read something (for draining a rotated file).
    last_data: Option<Instant>,
    /// The file's first bytes (up to [`HEAD`]): if they change while the size does not shrink below
    /// what was read, the file was truncated and written again between two polls.
    head: Vec<u8>,
}

/// Bytes of a file's start compared to detect a copytruncate that the size alone does not show.
const HEAD: usize = 64;

impl Tail {
    /// Follows `path` (absolute) from `start`, reporting checkpoints under `source`, splitting lines
    /// longer than `max_line`.
    pub fn new(path: PathBuf, start: u64, source: String, max_line: usize) -> Tail {
        Tail {
            path,
            file: None,
            ino: 0,
            read_pos: start,
            source: Arc::from(source),
            lines: Splitter::new(start, max_line),
            partial_since: None,
            max_line,
            last_data: None,
            head: Vec::new(),
        }
    }

    /// The followed path.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Bytes written to the file but not read yet.
    pub fn lag(&self) -> u64 {
        self.file
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map_or(0, |m| m.len().saturating_sub(self.read_pos))
    }

    /// The checkpoint source id.
    pub fn source(&self) -> &Arc<str> {
        &self.source
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
            if meta.is_dir() {
                return Err(std::io::Error::other("a directory, not a file"));
            }
            if meta.len() < self.read_pos {
                // Shorter than where we were: it was truncated or replaced while we were away.
                self.read_pos = 0;
                self.lines = Splitter::new(0, self.max_line);
            }
            f.seek(SeekFrom::Start(self.read_pos))?;
            self.ino = meta.ino();
            self.file = Some(f);
        }
        // Truncated (and maybe written again) since the last poll: what follows the old position is
        // not the continuation of what was read.
        if self.truncated()? {
            self.emit_partial(each);
            return Ok((false, Change::Truncated));
        }
        let any = self.read_more(now, each)?;
        // At end of file: was the path rotated or truncated?
        let change = match std::fs::metadata(&self.path) {
            Ok(m) if m.ino() != self.ino => Change::Moved,
            Ok(m) if m.len() < self.read_pos => Change::Truncated,
            Ok(_) => Change::None,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Change::Moved,
            Err(e) => return Err(e),
        };
        match change {
            Change::Truncated => self.emit_partial(each),
            Change::Moved => {}
            Change::None => self.emit_stale_partial(now, idle, each),
        }
        Ok((any, change))
    }

    /// Reads what was appended to the open descriptor, without looking at the path (a rotated file
    /// being drained). Returns whether anything was read.
    pub fn drain(
        &mut self,
        now: Instant,
        idle: Duration,
        each: &mut dyn FnMut(&[u8], Eol, u64),
    ) -> std::io::Result<bool> {
        if self.truncated()? {
            // A rotated file cut in place: start over at its beginning.
            self.emit_partial(each);
            self.restart(None)?;
        }
        let any = self.read_more(now, each)?;
        self.emit_stale_partial(now, idle, each);
        Ok(any)
    }

    /// Starts over at the beginning of the open file (it was truncated), under `source` if given.
    fn restart(&mut self, source: Option<String>) -> std::io::Result<()> {
        if let Some(f) = self.file.as_mut() {
            f.seek(SeekFrom::Start(0))?;
        }
        self.read_pos = 0;
        self.head.clear();
        self.partial_since = None;
        self.lines = Splitter::new(0, self.max_line);
        if let Some(source) = source {
            self.source = Arc::from(source);
        }
        Ok(())
    }

    /// Whether the open file was cut below what was read, or its first bytes changed.
    fn truncated(&mut self) -> std::io::Result<bool> {
        let Some(f) = self.file.as_ref() else {
            return Ok(false);
        };
        Ok(f.metadata()?.len() < self.read_pos || self.head_changed()?)
    }

    /// The file's first bytes now, at most `want`.
    fn read_head(&self, want: usize) -> std::io::Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let Some(f) = self.file.as_ref() else {
            return Ok(Vec::new());
        };
        let mut buf = vec![0u8; want];
        let mut n = 0;
        while n < want {
            match f.read_at(&mut buf[n..], n as u64)? {
                0 => break,
                k => n += k,
            }
        }
        buf.truncate(n);
        Ok(buf)
    }

    /// Whether the file's first bytes differ from the ones this tail read.
    fn head_changed(&self) -> std::io::Result<bool> {
        if self.head.is_empty() {
            return Ok(false);
        }
        Ok(self.read_head(self.head.len())? != self.head)
    }

    /// Remembers the file's first bytes, up to [`HEAD`] of what was read (after a read).
    fn fill_head(&mut self) -> std::io::Result<()> {
        let want = HEAD.min(usize::try_from(self.read_pos).unwrap_or(HEAD));
        if self.head.len() < want {
            self.head = self.read_head(want)?;
        }
        Ok(())
    }

    /// When the tail last read something (its creation counts).
    pub fn last_data(&self) -> Option<Instant> {
        self.last_data
    }

    fn read_more(
        &mut self,
        now: Instant,
        each: &mut dyn FnMut(&[u8], Eol, u64),
    ) -> std::io::Result<bool> {
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
            self.fill_head()?;
        }
        if any || self.last_data.is_none() {
            self.last_data = Some(now);
        }
        Ok(any)
    }

    fn emit_stale_partial(
        &mut self,
        now: Instant,
        idle: Duration,
        each: &mut dyn FnMut(&[u8], Eol, u64),
    ) {
        if self
            .partial_since
            .is_some_and(|t| now.duration_since(t) >= idle)
        {
            self.emit_partial(each);
        }
    }
}

/// Timings of a [`Follower`].
#[derive(Debug, Clone, Copy)]
pub struct FollowConfig {
    /// How long a last line without a newline waits before it is emitted.
    pub partial_line_timeout: Duration,
    /// How long a rotated file is read on after it last grew.
    pub rotate_wait: Duration,
    /// How long to wait before trying again to open a file that could not be opened.
    pub retry_after: Duration,
    /// Lines longer than this are split.
    pub max_line: usize,
}

impl Default for FollowConfig {
    fn default() -> Self {
        FollowConfig {
            partial_line_timeout: Duration::from_secs(1),
            rotate_wait: Duration::from_secs(30),
            retry_after: Duration::from_secs(5),
            max_line: crate::sources::files::MAX_LINE,
        }
    }
}

/// Where a file starts and its source id: the checkpoint registry's answer, or 0 and the path.
pub type Opener<'a> = dyn FnMut(&std::path::Path) -> std::io::Result<(u64, String)> + 'a;

/// A line read by a follower: its source id, the line, its terminator, and the offset after it.
pub type Emit<'a> = dyn FnMut(&Arc<str>, &[u8], Eol, u64) + 'a;

/// The tails of one followed path: the file there now, and the rotated ones still being drained.
#[derive(Debug)]
pub struct Follower {
    path: PathBuf,
    active: Option<Tail>,
    draining: Vec<Tail>,
    retry_at: Option<Instant>,
    config: FollowConfig,
}

impl Follower {
    /// Follows `path` (absolute).
    pub fn new(path: PathBuf, config: FollowConfig) -> Follower {
        Follower {
            path,
            active: None,
            draining: Vec::new(),
            retry_at: None,
            config,
        }
    }

    /// The followed path.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Bytes written to its files but not read yet.
    pub fn lag(&self) -> u64 {
        self.active
            .iter()
            .chain(&self.draining)
            .map(Tail::lag)
            .sum()
    }

    /// Rotated files still being read.
    pub fn draining(&self) -> usize {
        self.draining.len()
    }

    /// True when nothing is open and the path is gone: the follower can be dropped.
    pub fn is_done(&self) -> bool {
        self.active.is_none() && self.draining.is_empty() && !self.path.exists()
    }

    /// Reads what every tail of the path has to give. `open` is asked where a new file at the path
    /// starts; `each` gets every line with its source id. Returns whether anything was read. An error
    /// opening or reading the file at the path is returned after the rotated files were read; the
    /// follower tries again after `retry_after`.
    pub fn poll(
        &mut self,
        now: Instant,
        open: &mut Opener<'_>,
        each: &mut Emit<'_>,
    ) -> std::io::Result<bool> {
        let FollowConfig {
            partial_line_timeout: idle,
            rotate_wait,
            ..
        } = self.config;
        let mut any = false;
        let mut k = 0;
        while k < self.draining.len() {
            let tail = &mut self.draining[k];
            let source = tail.source.clone();
            let read = tail.drain(now, idle, &mut |l, e, o| each(&source, l, e, o));
            let idle_for = tail
                .last_data()
                .map_or(Duration::ZERO, |t| now.duration_since(t));
            match &read {
                Ok(read) => any |= read,
                Err(e) => {
                    tracing::warn!(file = %tail.path.display(), error = %e, "reading a rotated file failed; closing it")
                }
            }
            if read.is_err() || idle_for >= rotate_wait {
                let mut tail = self.draining.swap_remove(k);
                tail.close(&mut |l, e, o| each(&source, l, e, o));
                continue;
            }
            k += 1;
        }
        // The file at the path; after a rotation, the new one at once.
        // A few steps at most: a truncation, then a rotation, then the new file.
        for _ in 0..4 {
            if self.active.is_none() {
                if self.retry_at.is_some_and(|t| now < t) {
                    break;
                }
                match self.open_active(open) {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(e) => {
                        self.retry_at = Some(now + self.config.retry_after);
                        return Err(e);
                    }
                }
            }
            let Some(tail) = self.active.as_mut() else {
                break;
            };
            let source = tail.source.clone();
            let polled = tail.poll(now, idle, &mut |l, e, o| each(&source, l, e, o));
            let (read, change) = match polled {
                Ok(done) => done,
                Err(e) => {
                    // Reopened from its checkpoint after the pause.
                    self.active = None;
                    self.retry_at = Some(now + self.config.retry_after);
                    return Err(e);
                }
            };
            any |= read;
            match change {
                Change::None => break,
                Change::Truncated => {
                    // The content starts over: a new checkpoint when the file is still at the path
                    // (read on from 0 through the open descriptor either way, so that what was
                    // written after the truncation is not lost if the file goes away).
                    let same_file = std::fs::metadata(&self.path).is_ok_and(|m| {
                        use std::os::unix::fs::MetadataExt;
                        m.ino() == tail.ino
                    });
                    let source = match same_file {
                        true => open(&self.path).ok().map(|(_, source)| source),
                        false => None,
                    };
                    if let Some(tail) = self.active.as_mut() {
                        tail.restart(source)?;
                    }
                }
                Change::Moved => {
                    if let Some(tail) = self.active.take() {
                        self.draining.push(tail);
                    }
                }
            }
        }
        Ok(any)
    }

    /// Opens the file at the path, if there is one. `Ok(false)`: there is none.
    fn open_active(&mut self, open: &mut Opener<'_>) -> std::io::Result<bool> {
        match std::fs::metadata(&self.path) {
            Ok(m) if m.is_dir() => {
                return Err(std::io::Error::other("a directory, not a file"));
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        }
        let (start, source) = match open(&self.path) {
            Ok(opened) => opened,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        self.retry_at = None;
        self.active = Some(Tail::new(
            self.path.clone(),
            start,
            source,
            self.config.max_line,
        ));
        Ok(true)
    }

    /// Reads every tail to its end and emits held partial lines (the agent is stopping).
    pub fn close(&mut self, now: Instant, each: &mut Emit<'_>) {
        for mut tail in self.draining.drain(..).chain(self.active.take()) {
            let source = tail.source.clone();
            let mut emit = |l: &[u8], e: Eol, o: u64| each(&source, l, e, o);
            let _ = tail.read_more(now, &mut emit);
            tail.close(&mut emit);
        }
    }
}
