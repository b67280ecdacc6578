//! Files sink: rebuilt lines are appended to one file per source, so that `cmp` can check a round trip.
//!
//! A log's source is its `filename:` tag; `/var/log/app.log` is written to `<root>/var/log/app.log`. A
//! path that is relative, empty, climbs with `..` or names one of the sink's own files at the root
//! (`/.stencil-journal`, `/_unfiled.log`) cannot be mapped safely and goes to `<root>/_unfiled.log`, as
//! do logs without the tag. Each line gets its original bytes (see
//! [`super::original_bytes`]) and terminator (see [`super::line_terminator`]) back. A batch's lines for
//! one file are gathered first and appended with one write, under an [`AppendJournal`] kept in
//! `<root>/.stencil-journal`: a process killed mid-batch leaves part of the batch behind, and the next
//! sink opened on the same root cuts it away, so the replayed batch is not glued to a torn line. Every
//! batch is handed to the OS before it is acked, and synced to disk too when `fsync` is on.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use stencil_codec::LogRecord;

use super::journal::{AppendJournal, Repair};
use super::{
    line_terminator, original_bytes, Sink, SinkError, StreamInfo, FILENAME_TAG, ROLLED_BACK_BYTES,
};

/// Open files kept at once; past it the least recently opened one is flushed and closed.
const MAX_OPEN_FILES: usize = 256;

/// Name of the file that collects logs without a usable `filename:` tag.
pub const UNFILED: &str = "_unfiled.log";

/// Name of the append journal in the root folder.
pub const JOURNAL: &str = ".stencil-journal";

/// Appends each source's lines to its own file under a root folder.
pub struct FilesSink {
    root: PathBuf,
    layout: Layout,
    fsync: bool,
    open: Mutex<OpenFiles>,
}

struct OpenFiles {
    /// Each open file and its length (known at open, then grown by what this sink appends).
    files: HashMap<PathBuf, (File, u64)>,
    /// With [`FilesSink::rewrite`]: the files written by this sink so far (each was emptied when it was
    /// first opened).
    rewritten: Option<std::collections::HashSet<PathBuf>>,
    order: Vec<PathBuf>,
    journal: AppendJournal,
}

impl FilesSink {
    /// A sink writing under `root` (created if missing). What a batch interrupted by a crash left in
    /// its files is cut away first (and logged).
    pub fn new(root: &Path, fsync: bool) -> Result<Self, SinkError> {
        std::fs::create_dir_all(root)
            .map_err(|e| SinkError::io(format!("creating {}", root.display()), e))?;
        let journal_path = root.join(JOURNAL);
        let (journal, repairs) = AppendJournal::open(&journal_path, fsync)
            .map_err(|e| SinkError::io(format!("recovering {}", journal_path.display()), e))?;
        log_repairs(&repairs, "an interrupted batch");
        Ok(FilesSink {
            root: root.to_owned(),
            layout: Layout::default(),
            fsync,
            open: Mutex::new(OpenFiles {
                files: HashMap::new(),
                rewritten: None,
                order: Vec::new(),
                journal,
            }),
        })
    }

    /// Empties each file the first time this sink writes into it, instead of appending to what an
    /// earlier run left there: for a one-pass rebuild (`stencil ship` with its embedded intake and no
    /// checkpoints), whose rerun must give the same files, not the old ones twice.
    pub fn rewrite(self) -> Self {
        if let Ok(mut open) = self.open.lock() {
            open.rewritten = Some(std::collections::HashSet::new());
        }
        self
    }

    /// Names files by `layout` under the root instead of by their path alone.
    pub fn with_layout(mut self, layout: Layout) -> Self {
        self.layout = layout;
        self
    }

    /// Where a log with this `filename:` tag value is written (the default layout, `{path}`).
    pub fn path_for(&self, filename: Option<&str>) -> PathBuf {
        self.path_of(filename, |_| None)
    }

    /// Where `record` is written.
    fn record_path(&self, record: &LogRecord) -> PathBuf {
        self.path_of(record.tag(FILENAME_TAG), |part| match part {
            Part::Host => record.tag("hostname"),
            Part::Service => record.service.as_deref(),
            Part::Source => record.tag("ddsource"),
            Part::Path | Part::Literal(_) => None,
        })
    }

    fn path_of<'a>(
        &self,
        filename: Option<&str>,
        value: impl Fn(&Part) -> Option<&'a str>,
    ) -> PathBuf {
        let path = filename.and_then(|f| {
            use std::os::unix::ffi::OsStrExt;
            // The agent percent-encodes commas and bytes that are not UTF-8 in the tag value.
            let raw = stencil_codec::escape::unescape_tag_value(f);
            safe_relative(Path::new(std::ffi::OsStr::from_bytes(&raw)))
        });
        let mut rel = PathBuf::new();
        for part in &self.layout.0 {
            match part {
                Part::Path => match &path {
                    Some(p) => rel.push(p),
                    None => return self.root.join(UNFILED),
                },
                Part::Literal(text) => rel.push(text),
                other => rel.push(component(value(other))),
            }
        }
        if rel.as_os_str().is_empty() || is_reserved(&rel) {
            return self.root.join(UNFILED);
        }
        self.root.join(rel)
    }
}

/// How the files sink names a log's file under its root: `/`-separated parts, each a literal folder or
/// file name, or one of `{host}` (the `hostname:` tag), `{service}`, `{source}` (the `ddsource:` tag)
/// and `{path}` (the log's `filename:` path, all its folders). The default is `{path}`; a fleet writes
/// `{host}/{path}` so that two hosts' `/var/log/syslog` stay apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout(Vec<Part>);

/// One part of a [`Layout`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Host,
    Service,
    Source,
    Path,
}

impl Default for Layout {
    fn default() -> Self {
        Layout(vec![Part::Path])
    }
}

/// Why an `--out-layout` is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// A part that would not name a folder.
    #[error("`{0}`: empty, `.` and `..` parts are not allowed (write e.g. `{{host}}/{{path}}`)")]
    EmptyPart(String),
    /// Braces that are not one of the placeholders.
    #[error("`{layout}`: `{part}` is not a placeholder; a part is a name or one of {{host}}, {{service}}, {{source}}, {{path}}")]
    NotAPlaceholder {
        /// The layout as given.
        layout: String,
        /// The part at fault.
        part: String,
    },
    /// No `{path}`: files would be mixed.
    #[error("`{0}` has no {{path}}: the logs of different files would be mixed in one file")]
    NoPath(String),
}

impl std::str::FromStr for Layout {
    type Err = LayoutError;

    fn from_str(text: &str) -> Result<Self, LayoutError> {
        let mut parts = Vec::new();
        for p in text.split('/') {
            parts.push(match p {
                "{host}" => Part::Host,
                "{service}" => Part::Service,
                "{source}" => Part::Source,
                "{path}" => Part::Path,
                "" | "." | ".." => return Err(LayoutError::EmptyPart(text.to_owned())),
                p if p.contains(['{', '}']) => {
                    return Err(LayoutError::NotAPlaceholder {
                        layout: text.to_owned(),
                        part: p.to_owned(),
                    })
                }
                p => Part::Literal(p.to_owned()),
            });
        }
        if !parts.contains(&Part::Path) {
            return Err(LayoutError::NoPath(text.to_owned()));
        }
        Ok(Layout(parts))
    }
}

/// A layout value as one safe path component: missing → `unknown`; `/`, NUL and a leading `.` are
/// replaced, so that a value never climbs out of its folder or hides.
fn component(value: Option<&str>) -> String {
    let v = value.filter(|v| !v.is_empty()).unwrap_or("unknown");
    let mut out: String = v
        .chars()
        .map(|c| if c == '/' || c == '\0' { '_' } else { c })
        .collect();
    if out.starts_with('.') {
        out.replace_range(0..1, "_");
    }
    out
}

fn log_repairs(repairs: &[Repair], what: &str) {
    for r in repairs {
        tracing::warn!(
            file = %r.path.display(),
            removed_bytes = r.removed,
            length = r.len,
            "cut away the part of {what} that reached the file; its batch was not acked and is sent again"
        );
        metrics::counter!(ROLLED_BACK_BYTES).increment(r.removed);
    }
}

/// The sink's own files at the root: a log named `/.stencil-journal` must not append into the journal.
fn is_reserved(rel: &Path) -> bool {
    rel == Path::new(JOURNAL) || rel == Path::new(UNFILED)
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
    fn get(&mut self, path: &Path) -> std::io::Result<&mut (File, u64)> {
        if !self.files.contains_key(path) {
            if self.files.len() >= MAX_OPEN_FILES {
                let oldest = self.order.remove(0);
                self.files.remove(&oldest);
            }
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let file = OpenOptions::new().create(true).append(true).open(path)?;
            if let Some(seen) = self.rewritten.as_mut() {
                if seen.insert(path.to_owned()) {
                    file.set_len(0)?;
                }
            }
            let len = file.metadata()?.len();
            self.files.insert(path.to_owned(), (file, len));
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
            let path = self.record_path(record);
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
        let mut lengths = Vec::with_capacity(pending.len());
        for (path, _) in &pending {
            let (_, len) = open
                .get(path)
                .map_err(|e| SinkError::io(format!("opening {}", path.display()), e))?;
            lengths.push((path.as_path(), *len));
        }
        open.journal.begin(lengths).map_err(|e| {
            SinkError::io(format!("writing {}", self.root.join(JOURNAL).display()), e)
        })?;
        let written = pending.iter().try_for_each(|(path, bytes)| {
            let context = || format!("writing {}", path.display());
            let (file, len) = open.get(path).map_err(|e| SinkError::io(context(), e))?;
            file.write_all(bytes)
                .map_err(|e| SinkError::io(context(), e))?;
            if self.fsync {
                file.sync_data().map_err(|e| SinkError::io(context(), e))?;
            }
            *len += bytes.len() as u64;
            Ok(())
        });
        let journal =
            |e| SinkError::io(format!("writing {}", self.root.join(JOURNAL).display()), e);
        match written {
            Ok(()) => open.journal.commit().map_err(journal),
            Err(e) => {
                // Nothing of a failed batch stays: its replay starts from the same lengths. The open
                // files are closed, so that their lengths are read again.
                open.files.clear();
                open.order.clear();
                match open.journal.rollback() {
                    Ok(repairs) => log_repairs(&repairs, "a failed batch"),
                    Err(r) => {
                        tracing::warn!(error = %journal(r), "could not roll back a failed batch; the next batch retries")
                    }
                }
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(file: &Path, message: &str, eol: Option<&str>) -> LogRecord {
        let mut tags = format!("filename:{}", file.display());
        if let Some(eol) = eol {
            tags.push_str(&format!(",stencil_eol:{eol}"));
        }
        LogRecord {
            timestamp: 0,
            status: None,
            service: None,
            tags: Some(tags.into()),
            message: message.into(),
            json: None,
            uuid: None,
            pattern: None,
        }
    }

    /// What a sink killed in the middle of a batch leaves behind (the journal record, then part of the
    /// batch in each file) is cut away by the next sink on the same root; whole batches stay, including
    /// one whose last line legitimately has no newline.
    #[test]
    fn a_batch_cut_short_by_a_crash_is_removed_on_reopen() {
        let root = tempfile::tempdir().expect("tempdir");
        let stream = StreamInfo {
            id: 1,
            generation: stencil_codec::Generation::V3,
            peer: None,
        };
        let (a, b) = (Path::new("/logs/a.log"), Path::new("/logs/b.log"));
        let sink = FilesSink::new(root.path(), false).expect("sink");
        sink.write_batch(
            &stream,
            &[
                record(a, "a1", None),
                record(b, "b1 no newline", Some("none")),
            ],
        )
        .expect("batch");
        let (fa, fb) = (
            sink.path_for(Some("/logs/a.log")),
            sink.path_for(Some("/logs/b.log")),
        );
        drop(sink);
        let before = [
            std::fs::read(&fa).expect("a"),
            std::fs::read(&fb).expect("b"),
        ];
        assert_eq!(before, [b"a1\n".to_vec(), b"b1 no newline".to_vec()]);

        // The crash: the record of the next batch is written, then only part of its appends.
        let (mut journal, repairs) =
            AppendJournal::open(&root.path().join(JOURNAL), false).expect("journal");
        assert!(repairs.is_empty());
        journal
            .begin([(fa.as_path(), 3), (fb.as_path(), 13)])
            .expect("begin");
        for (p, torn) in [(&fa, "a2\na3 ha"), (&fb, "\nb2")] {
            OpenOptions::new()
                .append(true)
                .open(p)
                .and_then(|mut f| f.write_all(torn.as_bytes()))
                .expect("torn append");
        }
        drop(journal);

        let sink = FilesSink::new(root.path(), false).expect("reopened");
        assert_eq!(
            [
                std::fs::read(&fa).expect("a"),
                std::fs::read(&fb).expect("b")
            ],
            before
        );
        // The replay lands on whole lines.
        sink.write_batch(&stream, &[record(a, "a2", None), record(a, "a3", None)])
            .expect("replay");
        assert_eq!(std::fs::read(&fa).expect("a"), b"a1\na2\na3\n");
    }

    #[test]
    fn paths_map_under_the_root_or_to_unfiled() {
        let dir = std::env::temp_dir();
        let sink = FilesSink::new(&dir, false).expect("sink");
        assert_eq!(
            sink.path_for(Some("/var/log/a.log")),
            dir.join("var/log/a.log")
        );
        assert_eq!(
            sink.path_for(Some("/var/log/a%2Cb.log")),
            dir.join("var/log/a,b.log")
        );
        for bad in [
            None,
            Some(""),
            Some("relative.log"),
            Some("/var/../etc/passwd"),
            Some("/"),
            Some("/.stencil-journal"),
            Some("/./.stencil-journal"),
            Some("/_unfiled.log"),
        ] {
            assert_eq!(sink.path_for(bad), dir.join(UNFILED), "{bad:?}");
        }
    }

    #[test]
    fn a_layout_keeps_hosts_apart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let layout: Layout = "{host}/{service}/{path}".parse().expect("layout");
        let sink = FilesSink::new(dir.path(), false)
            .expect("sink")
            .with_layout(layout);
        let stream = StreamInfo {
            id: 1,
            generation: stencil_codec::Generation::V3,
            peer: None,
        };
        let mut a = record(Path::new("/var/log/syslog"), "from a", None);
        a.tags = Some("filename:/var/log/syslog,hostname:web-1".into());
        a.service = Some("api".into());
        let mut b = record(Path::new("/var/log/syslog"), "from b", None);
        b.tags = Some("filename:/var/log/syslog,hostname:../../etc".into());
        sink.write_batch(&stream, &[a, b]).expect("write");
        assert_eq!(
            std::fs::read(dir.path().join("web-1/api/var/log/syslog")).expect("host a"),
            b"from a\n"
        );
        // A hostile value stays one folder under the root; a missing one is `unknown`.
        assert_eq!(
            std::fs::read(dir.path().join("_._.._etc/unknown/var/log/syslog")).expect("host b"),
            b"from b\n"
        );
        for bad in [
            "{host}",
            "{host}/../{path}",
            "a//{path}",
            "{hostname}/{path}",
            "x{host}/{path}",
        ] {
            assert!(bad.parse::<Layout>().is_err(), "{bad}");
        }
    }
}
