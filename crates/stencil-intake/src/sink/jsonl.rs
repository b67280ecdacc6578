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

use serde_json::{Map, Value};
use stencil_codec::LogRecord;

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

/// Formats milliseconds since the epoch as RFC 3339 with milliseconds (`2023-11-14T22:13:20.250Z`, UTC),
/// or `None` outside the years 0000–9999. Written out by hand: it runs once per record of every
/// JSON Lines batch, and the civil-date arithmetic is a few integer operations.
pub fn rfc3339_ms(ms: i64) -> Option<String> {
    // Years 0000 to 9999, in milliseconds since the epoch.
    const MIN_MS: i64 = -62_167_219_200_000;
    const MAX_MS: i64 = 253_402_300_799_999;
    if !(MIN_MS..=MAX_MS).contains(&ms) {
        return None;
    }
    let days = ms.div_euclid(86_400_000);
    let in_day = ms.rem_euclid(86_400_000);
    let (year, month, day) = civil_from_days(days);
    let (h, m, s, milli) = (
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000,
    );
    let mut out = [0u8; 24];
    let mut put = |at: usize, width: usize, mut v: i64| {
        for d in out[at..at + width].iter_mut().rev() {
            *d = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, month);
    put(8, 2, day);
    put(11, 2, h);
    put(14, 2, m);
    put(17, 2, s);
    put(20, 3, milli);
    for (at, c) in [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
        (23, b'Z'),
    ] {
        out[at] = c;
    }
    // Only ASCII digits and separators were written.
    Some(out.iter().map(|&b| char::from(b)).collect())
}

/// The proleptic Gregorian (year, month, day) of a day count since 1970-01-01 (days in 400-year eras).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The JSON object of one log, serialized straight from the record (no intermediate JSON tree): keys
/// in this order, `uuid` and the pattern keys only when present.
#[derive(serde::Serialize)]
pub struct RecordJson<'a> {
    timestamp: Option<String>,
    timestamp_ms: i64,
    status: Option<&'a str>,
    service: Option<&'a str>,
    hostname: Option<&'a str>,
    tags: Tags<'a>,
    message: Message<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    uuid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pattern: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pattern_hash: Option<String>,
}

/// A record's tags as a JSON array, without collecting them.
struct Tags<'a>(&'a LogRecord);

impl serde::Serialize for Tags<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.tags())
    }
}

/// The message: the text, or the whole document of a JSON log.
#[derive(serde::Serialize)]
#[serde(untagged)]
enum Message<'a> {
    Text(&'a str),
    Document(&'a Map<String, Value>),
}

/// The JSON object for one log (a `--jsonl` line, a NATS message body).
pub fn record_json(record: &LogRecord) -> RecordJson<'_> {
    RecordJson {
        timestamp: rfc3339_ms(record.timestamp),
        timestamp_ms: record.timestamp,
        status: record.status.as_deref(),
        service: record.service.as_deref(),
        hostname: record.tag("hostname"),
        tags: Tags(record),
        message: match &record.json {
            Some(doc) => Message::Document(doc),
            None => Message::Text(&record.message),
        },
        uuid: record.uuid.as_deref(),
        pattern: record.pattern.as_ref().map(|p| &*p.text),
        pattern_hash: record.pattern.as_ref().map(|p| p.hash_hex()),
    }
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
    use serde_json::json;

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

    /// The straight serialization writes what a JSON tree built key by key would.
    #[test]
    fn records_serialize_as_the_documented_object() {
        use std::sync::Arc;
        let mut doc = Map::new();
        doc.insert("level".into(), json!("warn"));
        doc.insert("msg".into(), json!("disk \"full\"\n"));
        let records = [
            LogRecord {
                timestamp: 1_700_000_000_250,
                status: Some(Arc::from("info")),
                service: None,
                tags: Some(Arc::from(
                    "hostname:web-1,env:prod,filename:/var/log/a,b.log",
                )),
                message: "GET /x 200 \u{1F600}".into(),
                json: None,
                uuid: None,
                pattern: Some(stencil_codec::PatternRef::of("GET  200", &[4])),
            },
            LogRecord {
                timestamp: i64::MIN,
                status: None,
                service: Some(Arc::from("api")),
                tags: None,
                message: String::new(),
                json: Some(doc.clone()),
                uuid: Some("0b8e0f52-4b7a-4f7d-9d25-8f4c0c2f6a11".into()),
                pattern: None,
            },
        ];
        for r in &records {
            let mut expected = Map::new();
            expected.insert(
                "timestamp".into(),
                rfc3339_ms(r.timestamp).map_or(Value::Null, Value::String),
            );
            expected.insert("timestamp_ms".into(), json!(r.timestamp));
            expected.insert("status".into(), json!(r.status.as_deref()));
            expected.insert("service".into(), json!(r.service.as_deref()));
            expected.insert("hostname".into(), json!(r.tag("hostname")));
            expected.insert("tags".into(), json!(r.tags().collect::<Vec<_>>()));
            let message = match &r.json {
                Some(d) => Value::Object(d.clone()),
                None => Value::String(r.message.clone()),
            };
            expected.insert("message".into(), message);
            if let Some(uuid) = &r.uuid {
                expected.insert("uuid".into(), json!(uuid));
            }
            if let Some(p) = &r.pattern {
                expected.insert("pattern".into(), json!(&*p.text));
                expected.insert("pattern_hash".into(), json!(p.hash_hex()));
            }
            assert_eq!(
                serde_json::to_string(&record_json(r)).expect("serializes"),
                serde_json::to_string(&Value::Object(expected)).expect("serializes")
            );
        }
    }

    /// The hand-written formatter agrees with the `time` crate over the whole range it accepts.
    #[test]
    fn rfc3339_agrees_with_the_time_crate() {
        use time::format_description::well_known::Rfc3339;
        let reference = |ms: i64| -> Option<String> {
            let t =
                time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()?;
            if !(0..=9999).contains(&t.year()) {
                return None;
            }
            let t = t.replace_nanosecond(0).ok()?;
            let s = t.format(&Rfc3339).ok()?;
            Some(format!("{}.{:03}Z", &s[..s.len() - 1], ms.rem_euclid(1000)))
        };
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut cases = vec![
            0,
            -1,
            1,
            951_782_400_000,     // 2000-02-29
            -62_167_219_200_000, // 0000-01-01
            -62_167_219_200_001,
            253_402_300_799_999, // 9999-12-31T23:59:59.999
            253_402_300_800_000,
        ];
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            cases.push((x % 316_000_000_000_000) as i64 - 63_000_000_000_000);
        }
        for ms in cases {
            assert_eq!(rfc3339_ms(ms), reference(ms), "{ms}");
        }
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
