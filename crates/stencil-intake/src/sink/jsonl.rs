//! JSON Lines sink: one JSON object per log, to a file (appended) or to stdout.
//!
//! Each object has `timestamp` (RFC 3339 with milliseconds, UTC; `null` when the year is outside
//! 0000–9999), `timestamp_ms` (always, the exact integer), `status`, `service`, `hostname` (from the
//! `hostname:` tag), `tags` (an array), `message` (the text, or the whole JSON document for JSON logs),
//! `uuid` when present, and for a log sent as a pattern: `pattern` (its template with `<*>` holes) and
//! `pattern_hash` (16 hex digits, the same for the same template on every stream and run).
//!
//! Every object ends with a newline, so a file that does not was torn by a crash in the middle of a
//! batch that was never acked: opening it cuts the torn object away before the replay is appended. A
//! batch is serialized whole and appended with one write; when the write fails (a full disk, `EFBIG`
//! past a file-size limit), the file is cut back to where the batch began, so the replay is not glued to
//! a torn object.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::{json, Map, Value};
use stencil_codec::LogRecord;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::{Sink, SinkError, StreamInfo, ROLLED_BACK_BYTES};

enum Target {
    File {
        file: File,
        /// Where the last whole batch ends: what a failed write is cut back to.
        len: u64,
        path: PathBuf,
        fsync: bool,
    },
    Stdout,
}

/// Writes JSON Lines to a file or to stdout.
pub struct JsonLinesSink {
    target: Mutex<Target>,
}

impl JsonLinesSink {
    /// Appends to `path`, creating it (and its parent folders) if needed. With `fsync`, every batch is
    /// synced to disk before it is acked.
    pub fn to_file(path: &Path, fsync: bool) -> Result<Self, SinkError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| SinkError::io(format!("creating {}", parent.display()), e))?;
        }
        let context = || format!("opening {}", path.display());
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .map_err(|e| SinkError::io(context(), e))?;
        cut_torn_tail(&file).map_err(|e| SinkError::io(context(), e))?;
        let len = file
            .metadata()
            .map_err(|e| SinkError::io(context(), e))?
            .len();
        Ok(JsonLinesSink {
            target: Mutex::new(Target::File {
                file,
                len,
                path: path.to_owned(),
                fsync,
            }),
        })
    }

    /// Writes to standard output.
    pub fn stdout() -> Self {
        JsonLinesSink {
            target: Mutex::new(Target::Stdout),
        }
    }
}

/// Cuts whatever follows the last newline of `file`: the torn end of an object whose batch was not
/// acked.
fn cut_torn_tail(file: &File) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let len = file.metadata()?.len();
    let mut end = len;
    let mut buf = [0u8; 4096];
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(end - start) as usize];
        file.read_exact_at(chunk, start)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            end = start + i as u64 + 1;
            break;
        }
        end = start;
    }
    if end < len {
        file.set_len(end)?;
        tracing::warn!(
            removed_bytes = len - end,
            "cut away a torn JSON line left by a crash; its batch was not acked and is sent again"
        );
        metrics::counter!(ROLLED_BACK_BYTES).increment(len - end);
    }
    Ok(())
}

/// Cuts `file` back to `len` after a failed write, so that the batch's replay starts on a record
/// boundary. If even that fails, the next open cuts the torn object away.
fn cut_back(file: &File, len: u64, path: &Path) {
    let reached = file.metadata().map_or(len, |m| m.len());
    match file.set_len(len) {
        Ok(()) if reached > len => {
            tracing::warn!(
                file = %path.display(),
                removed_bytes = reached - len,
                "cut away the part of a failed batch that reached the file; it was not acked and is sent again"
            );
            metrics::counter!(ROLLED_BACK_BYTES).increment(reached - len);
        }
        Ok(()) => {}
        Err(e) => tracing::error!(
            file = %path.display(),
            error = %e,
            "could not cut a failed batch away; the next start cuts the torn object"
        ),
    }
}

/// Formats milliseconds since the epoch as RFC 3339 with milliseconds, or `None` when out of range.
pub fn rfc3339_ms(ms: i64) -> Option<String> {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()?;
    if !(0..=9999).contains(&t.year()) {
        return None;
    }
    let t = t
        .replace_nanosecond(t.millisecond() as u32 * 1_000_000)
        .ok()?;
    let mut s = t.format(&Rfc3339).ok()?;
    // `time` drops a zero fraction; keep a fixed three digits.
    if !s.contains('.') {
        s.insert_str(s.len() - 1, ".000");
    } else if let Some(dot) = s.find('.') {
        let digits = s.len() - 1 - (dot + 1);
        for _ in digits..3 {
            s.insert(s.len() - 1, '0');
        }
    }
    Some(s)
}

/// The JSON object for one log.
pub fn record_json(record: &LogRecord) -> Value {
    let mut obj = Map::new();
    obj.insert(
        "timestamp".into(),
        rfc3339_ms(record.timestamp).map_or(Value::Null, Value::String),
    );
    obj.insert("timestamp_ms".into(), json!(record.timestamp));
    obj.insert("status".into(), json!(record.status.as_deref()));
    obj.insert("service".into(), json!(record.service.as_deref()));
    obj.insert("hostname".into(), json!(record.tag("hostname")));
    obj.insert("tags".into(), json!(record.tags().collect::<Vec<_>>()));
    let message = match &record.json {
        Some(doc) => Value::Object(doc.clone()),
        None => Value::String(record.message.clone()),
    };
    obj.insert("message".into(), message);
    if let Some(uuid) = &record.uuid {
        obj.insert("uuid".into(), json!(uuid));
    }
    if let Some(p) = &record.pattern {
        obj.insert("pattern".into(), json!(&*p.text));
        obj.insert("pattern_hash".into(), json!(p.hash_hex()));
    }
    Value::Object(obj)
}

fn write_lines(out: &mut dyn Write, logs: &[LogRecord]) -> std::io::Result<()> {
    for record in logs {
        serde_json::to_writer(&mut *out, &record_json(record))?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

impl Sink for JsonLinesSink {
    fn write_batch(&self, _stream: &StreamInfo, logs: &[LogRecord]) -> Result<(), SinkError> {
        let mut target = self
            .target
            .lock()
            .map_err(|_| SinkError::io("jsonl sink", std::io::Error::other("lock poisoned")))?;
        match &mut *target {
            Target::File {
                file,
                len,
                path,
                fsync,
            } => {
                let context = || format!("writing {}", path.display());
                let mut bytes = Vec::new();
                write_lines(&mut bytes, logs).map_err(|e| SinkError::io(context(), e))?;
                let written = file.write_all(&bytes).and_then(|()| match fsync {
                    true => file.sync_data(),
                    false => Ok(()),
                });
                if let Err(e) = written {
                    cut_back(file, *len, path);
                    return Err(SinkError::io(context(), e));
                }
                *len += bytes.len() as u64;
            }
            Target::Stdout => {
                let stdout = std::io::stdout();
                let mut lock = stdout.lock();
                write_lines(&mut lock, logs).map_err(|e| SinkError::io("writing stdout", e))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_last_object_is_cut_away_on_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("out.jsonl");
        let whole = "{\"a\":1}\n".repeat(1000);
        for torn in ["", "{\"a\"", &"x".repeat(10_000)] {
            std::fs::write(&path, format!("{whole}{torn}")).expect("write");
            JsonLinesSink::to_file(&path, false).expect("open");
            assert_eq!(std::fs::read_to_string(&path).expect("read"), whole);
        }
        // A file with no newline at all is one torn object.
        std::fs::write(&path, "{\"a\"").expect("write");
        JsonLinesSink::to_file(&path, false).expect("open");
        assert_eq!(std::fs::metadata(&path).expect("stat").len(), 0);
    }

    #[test]
    fn rfc3339_with_milliseconds() {
        assert_eq!(rfc3339_ms(0).as_deref(), Some("1970-01-01T00:00:00.000Z"));
        assert_eq!(
            rfc3339_ms(1_700_000_000_250).as_deref(),
            Some("2023-11-14T22:13:20.250Z")
        );
        assert_eq!(
            rfc3339_ms(1_700_000_000_205).as_deref(),
            Some("2023-11-14T22:13:20.205Z")
        );
        assert_eq!(rfc3339_ms(-1).as_deref(), Some("1969-12-31T23:59:59.999Z"));
        assert_eq!(rfc3339_ms(i64::MAX), None);
        assert_eq!(rfc3339_ms(i64::MIN), None);
    }
}
