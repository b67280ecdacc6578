//! A source, as an operator declares it (`[[ship.sources]]`, or the command line's paths and flags):
//! what to read (files by path or glob, a TCP listener, or stdin), what every log of it carries (the
//! Datadog Agent's `service`, `source`, `tags`, `hostname` and default `status`), and how its lines are
//! processed (`multi_line`, the other `log_processing_rules`, status detection).
//!
//! The pipeline reads every source the same way: this module says what a source is and which files it
//! names now; its submodules read them:
//!
//! - [`files`]: lines out of a byte stream (files and stdin in one pass), terminators kept;
//! - [`tail`]: following files through rotation and truncation;
//! - [`glob`]: which files a path pattern names (names that are not UTF-8 included);
//! - [`stdin`]: standard input, streamed;
//! - [`tcp`]: newline-delimited logs from TCP connections.

pub mod files;
pub mod glob;
pub mod stdin;
pub mod tail;
pub mod tcp;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::multiline::MultiLine;
use crate::processing::Rule;

/// Why a source's files cannot be listed (one pass is strict about it; follow mode warns and goes on).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A glob that matches nothing.
    #[error("{0:?} matches no file")]
    NoMatch(String),
    /// A plain path that does not exist.
    #[error("{}: no such file (pass `-` for stdin)", .0.display())]
    NoSuchFile(PathBuf),
    /// A malformed glob.
    #[error("bad glob {pattern:?}: {reason}")]
    BadGlob {
        /// The pattern as written.
        pattern: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl SourceError {
    pub(crate) fn bad_glob(pattern: &str, e: impl std::fmt::Display) -> Self {
        SourceError::BadGlob {
            pattern: pattern.to_owned(),
            reason: e.to_string(),
        }
    }
}

/// What a source reads.
#[derive(Debug, Clone)]
pub enum SourceInput {
    /// Files named by paths or globs, minus those matching an exclude glob. New matches are picked up
    /// in follow mode.
    Files {
        /// Paths or globs.
        include: Vec<String>,
        /// Globs of paths not to read (`exclude_paths`).
        exclude: Vec<::glob::Pattern>,
    },
    /// Newline-delimited logs from TCP connections (follow mode; tagged `peer:IP:PORT`).
    Tcp(Arc<std::net::TcpListener>),
    /// Standard input, streamed.
    Stdin,
}

/// Where a file seen for the first time (no checkpoint) is read from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StartPosition {
    /// From its first byte (the default: nothing already written is missed).
    #[default]
    Beginning,
    /// From its end, for files that exist when the agent starts; a file created later (a rotation's
    /// new file) is always read from its beginning, so that nothing written after the start is missed.
    End,
}

/// One source.
#[derive(Debug, Clone)]
pub struct Source {
    /// The `source` label of its metrics.
    pub name: String,
    /// What it reads.
    pub input: SourceInput,
    /// `service` of its logs.
    pub service: Option<String>,
    /// `ddsource:` tag of its logs (the Datadog Agent's `source`).
    pub source: Option<String>,
    /// `hostname:` tag.
    pub hostname: Option<String>,
    /// Extra `k:v` tags.
    pub tags: Vec<String>,
    /// Status of its logs when none is detected (the Datadog Agent sends `info`).
    pub status: String,
    /// Detect each log's status from its severity word or JSON level field.
    pub detect_status: bool,
    /// Where new files are read from.
    pub start_position: StartPosition,
    /// `exclude_at_match`, `include_at_match` and `mask_sequences`, in order.
    pub rules: Vec<Rule>,
    /// `multi_line`: how lines are joined into events.
    pub multi_line: Option<MultiLine>,
    /// How long a joined event waits for more lines in follow mode.
    pub multi_line_flush: Duration,
}

/// How long a multi-line event waits for its next line by default (the Datadog Agent's 1 s).
pub const MULTI_LINE_FLUSH: Duration = Duration::from_secs(1);

impl Source {
    /// A source of `input` named `name`, with the defaults: no attributes, status `info`, read from the
    /// beginning, no rules.
    pub fn new(name: impl Into<String>, input: SourceInput) -> Source {
        Source {
            name: name.into(),
            input,
            service: None,
            source: None,
            hostname: None,
            tags: Vec::new(),
            status: "info".into(),
            detect_status: false,
            start_position: StartPosition::Beginning,
            rules: Vec::new(),
            multi_line: None,
            multi_line_flush: MULTI_LINE_FLUSH,
        }
    }

    /// The tags every log of the source carries: its own, then `ddsource:` and `hostname:`.
    pub fn common_tags(&self) -> Vec<String> {
        let mut tags = self.tags.clone();
        if let Some(s) = &self.source {
            tags.push(format!("ddsource:{s}"));
        }
        if let Some(h) = &self.hostname {
            tags.push(format!("hostname:{h}"));
        }
        tags
    }

    /// The include patterns of a files source (none for the others).
    pub fn patterns(&self) -> &[String] {
        match &self.input {
            SourceInput::Files { include, .. } => include,
            _ => &[],
        }
    }

    /// True when `path` matches one of the source's `exclude_paths`.
    pub fn excludes(&self, path: &Path) -> bool {
        match &self.input {
            SourceInput::Files { exclude, .. } => exclude.iter().any(|g| g.matches_path(path)),
            _ => false,
        }
    }

    /// The files the source names now. `strict` (one pass): a plain path that does not exist, or a glob
    /// that matches nothing, is an error; otherwise it is skipped with a warning.
    pub fn files_now(&self, strict: bool) -> Result<Vec<PathBuf>, SourceError> {
        let mut out = Vec::new();
        for p in self.patterns() {
            if crate::sources::glob::is_pattern(p) {
                match crate::sources::glob::expand(p) {
                    Ok(found) if found.is_empty() && strict => {
                        return Err(SourceError::NoMatch(p.clone()));
                    }
                    Ok(found) => out.extend(found),
                    Err(e) if strict => return Err(e),
                    Err(e) => tracing::warn!(pattern = %p, error = %e, "skipping a pattern"),
                }
            } else {
                let path = PathBuf::from(p);
                if strict && !path.exists() {
                    return Err(SourceError::NoSuchFile(path));
                }
                // An unreadable or odd file is reported and skipped when it is read.
                if strict || path.is_file() {
                    out.push(path);
                }
            }
        }
        out.retain(|p| !self.excludes(p));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_now_applies_excludes_and_strictness() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["a.log", "b.log", "debug.log"] {
            std::fs::write(dir.path().join(name), "x\n").unwrap();
        }
        let glob = format!("{}/*.log", dir.path().display());
        let source = Source::new(
            "app",
            SourceInput::Files {
                include: vec![glob.clone()],
                exclude: vec![::glob::Pattern::new("**/debug.log").unwrap()],
            },
        );
        let names: Vec<String> = source
            .files_now(true)
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["a.log", "b.log"]);
        let missing = Source::new(
            "gone",
            SourceInput::Files {
                include: vec![format!("{}/none-*.log", dir.path().display())],
                exclude: Vec::new(),
            },
        );
        let err = missing.files_now(true).unwrap_err();
        assert!(matches!(err, SourceError::NoMatch(_)), "{err}");
        assert!(err.to_string().contains("matches no file"), "{err}");
        assert!(missing.files_now(false).unwrap().is_empty());
    }

    #[test]
    fn common_tags_carry_source_and_hostname() {
        let mut s = Source::new("web", SourceInput::Stdin);
        s.tags = vec!["env:prod".into()];
        s.source = Some("nginx".into());
        s.hostname = Some("web-1".into());
        assert_eq!(
            s.common_tags(),
            ["env:prod", "ddsource:nginx", "hostname:web-1"]
        );
    }
}
