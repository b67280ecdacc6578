//! Log-pattern analytics at ingestion time. The intake knows the template of every pattern-encoded log,
//! so it can count logs per pattern for free: `stencil intake --patterns-report FILE` writes the counts
//! on shutdown, and the metrics port serves them at `/patterns`.
//!
//! [`PatternsSink`] wraps the real sink and counts a batch only once the real sink took it, so the
//! counts are those of stored logs. At most [`MAX_PATTERNS`] patterns are tracked; logs of patterns
//! beyond are counted as `untracked_logs`, so memory stays bounded whatever the agents send.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::json;
use stencil_codec::LogRecord;

use crate::sink::{Sink, SinkError, StreamInfo};

/// Most distinct patterns counted.
pub const MAX_PATTERNS: usize = 100_000;

/// Longest example line kept per pattern, in bytes.
const MAX_EXAMPLE: usize = 1024;

#[derive(Debug)]
struct Entry {
    text: Arc<str>,
    count: u64,
    example: String,
}

#[derive(Debug, Default)]
struct Counts {
    patterns: HashMap<u64, Entry>,
    untracked_logs: u64,
    raw_logs: u64,
}

/// Per-pattern counts, shared by the sink wrapper, the report and `/patterns`.
#[derive(Debug, Default)]
pub struct PatternStats {
    counts: Mutex<Counts>,
}

impl PatternStats {
    /// Empty counts.
    pub fn new() -> Arc<Self> {
        Arc::new(PatternStats::default())
    }

    /// Counts a batch of stored logs.
    pub fn record(&self, logs: &[LogRecord]) {
        let Ok(mut c) = self.counts.lock() else {
            return;
        };
        for log in logs {
            let Some(p) = &log.pattern else {
                c.raw_logs += 1;
                continue;
            };
            let tracked = c.patterns.len();
            match c.patterns.get_mut(&p.hash) {
                Some(e) => e.count += 1,
                None if tracked < MAX_PATTERNS => {
                    let mut example = log.message.clone();
                    if example.len() > MAX_EXAMPLE {
                        let mut cut = MAX_EXAMPLE;
                        while !example.is_char_boundary(cut) {
                            cut -= 1;
                        }
                        example.truncate(cut);
                    }
                    c.patterns.insert(
                        p.hash,
                        Entry {
                            text: p.text.clone(),
                            count: 1,
                            example,
                        },
                    );
                }
                None => c.untracked_logs += 1,
            }
        }
    }

    /// The report: every pattern with its count and an example, most frequent first.
    pub fn report(&self) -> serde_json::Value {
        let Ok(c) = self.counts.lock() else {
            return json!({"error": "pattern counts unavailable"});
        };
        let mut rows: Vec<(&u64, &Entry)> = c.patterns.iter().collect();
        rows.sort_by(|a, b| b.1.count.cmp(&a.1.count).then(a.0.cmp(b.0)));
        let patterns: Vec<serde_json::Value> = rows
            .into_iter()
            .map(|(hash, e)| {
                json!({
                    "pattern_hash": format!("{hash:016x}"),
                    "pattern": &*e.text,
                    "count": e.count,
                    "example": e.example,
                })
            })
            .collect();
        json!({
            "patterns": patterns,
            "pattern_logs": c.patterns.values().map(|e| e.count).sum::<u64>() + c.untracked_logs,
            "untracked_logs": c.untracked_logs,
            "raw_logs": c.raw_logs,
        })
    }

    /// Writes the report to `path` (atomically: a temporary file renamed over it).
    pub fn write_report(&self, path: &std::path::Path) -> std::io::Result<()> {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&self.report())?)?;
        std::fs::rename(&tmp, path)
    }
}

/// A sink that counts patterns after the sink it wraps stored the batch.
pub struct PatternsSink {
    inner: Arc<dyn Sink>,
    stats: Arc<PatternStats>,
}

impl PatternsSink {
    /// Wraps `inner`, counting into `stats`.
    pub fn new(inner: Arc<dyn Sink>, stats: Arc<PatternStats>) -> Self {
        PatternsSink { inner, stats }
    }
}

impl Sink for PatternsSink {
    fn write_batch(&self, stream: &StreamInfo, logs: &[LogRecord]) -> Result<(), SinkError> {
        self.inner.write_batch(stream, logs)?;
        self.stats.record(logs);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stencil_codec::PatternRef;

    fn log(message: &str, pattern: Option<PatternRef>) -> LogRecord {
        LogRecord {
            timestamp: 0,
            status: None,
            service: None,
            tags: None,
            message: message.into(),
            json: None,
            uuid: None,
            pattern,
        }
    }

    #[test]
    fn counts_by_pattern_most_frequent_first() {
        let stats = PatternStats::new();
        let login = PatternRef::of("user  in", &[5]);
        let disk = PatternRef::of("disk  full", &[5]);
        stats.record(&[
            log("user a in", Some(login.clone())),
            log("disk sda full", Some(disk.clone())),
            log("user b in", Some(login.clone())),
            log("a raw line", None),
        ]);
        let r = stats.report();
        assert_eq!(r["patterns"][0]["pattern"], "user <*> in");
        assert_eq!(r["patterns"][0]["count"], 2);
        assert_eq!(r["patterns"][0]["example"], "user a in");
        assert_eq!(r["patterns"][0]["pattern_hash"], login.hash_hex());
        assert_eq!(r["patterns"][1]["pattern"], "disk <*> full");
        assert_eq!(r["raw_logs"], 1);
        assert_eq!(r["pattern_logs"], 3);
    }
}
