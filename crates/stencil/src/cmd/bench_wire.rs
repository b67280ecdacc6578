//! `stencil bench wire`: bytes on the wire for the same lines and metadata, side by side, per batch size:
//! Stencil v3 (every batch, snapshot included, plus gRPC framing), raw lines with zstd-1 and zstd-3 per
//! batch, the Datadog HTTP JSON transport (zstd-1), and OTLP logs (protobuf `LogsData`, zstd-1). The
//! baselines are built here from the same lines; no number is copied from anywhere.

use std::path::PathBuf;

use prost::Message;
use serde_json::json;
use stencil_codec::{BatchEncoder, Compression, Generation};
use stencil_patterns::{Engine, EngineConfig, Meta};

/// Minimal OTLP logs messages (field numbers from the public OpenTelemetry protocol).
mod otlp {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LogsData {
        #[prost(message, repeated, tag = "1")]
        pub resource_logs: Vec<ResourceLogs>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResourceLogs {
        #[prost(message, optional, tag = "1")]
        pub resource: Option<Resource>,
        #[prost(message, repeated, tag = "2")]
        pub scope_logs: Vec<ScopeLogs>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Resource {
        #[prost(message, repeated, tag = "1")]
        pub attributes: Vec<KeyValue>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ScopeLogs {
        #[prost(message, repeated, tag = "2")]
        pub log_records: Vec<LogRecord>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LogRecord {
        #[prost(fixed64, tag = "1")]
        pub time_unix_nano: u64,
        #[prost(int32, tag = "2")]
        pub severity_number: i32,
        #[prost(string, tag = "3")]
        pub severity_text: String,
        #[prost(message, optional, tag = "5")]
        pub body: Option<AnyValue>,
        #[prost(message, repeated, tag = "6")]
        pub attributes: Vec<KeyValue>,
        #[prost(fixed64, tag = "11")]
        pub observed_time_unix_nano: u64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AnyValue {
        #[prost(string, tag = "1")]
        pub string_value: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct KeyValue {
        #[prost(string, tag = "1")]
        pub key: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<AnyValue>,
    }
}

/// Flags of `stencil bench wire`.
#[derive(clap::Args, Debug)]
pub struct WireArgs {
    /// Files to measure (each line is one log).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Lines per batch (repeatable; default 10, 100 and 1000).
    #[arg(long = "batch-lines")]
    batch_lines: Vec<usize>,
    /// One JSON object per (file, batch size), then a `total` row per batch size.
    #[arg(long)]
    json: bool,
}

const HOST: &str = "bench-host";
const SERVICE: &str = "bench";
const SOURCE: &str = "bench";
const STATUS: &str = "info";
const BASE_MS: i64 = 1_700_000_000_000;

/// gRPC message framing: 1 compression flag byte and a 4-byte length.
const GRPC_FRAME: usize = 5;

#[derive(Default, Clone, Copy)]
struct Sizes {
    lines: u64,
    raw: u64,
    stencil: u64,
    zstd1: u64,
    zstd3: u64,
    http_json: u64,
    otlp: u64,
}

impl Sizes {
    fn add(&mut self, o: &Sizes) {
        self.lines += o.lines;
        self.raw += o.raw;
        self.stencil += o.stencil;
        self.zstd1 += o.zstd1;
        self.zstd3 += o.zstd3;
        self.http_json += o.http_json;
        self.otlp += o.otlp;
    }
}

fn zstd(level: i32, bytes: &[u8]) -> u64 {
    Compression::Zstd { level }
        .compress(bytes)
        .map_or(0, |c| c.len()) as u64
}

fn measure(path: &std::path::Path, lines: &[&[u8]], batch: usize) -> Result<Sizes, String> {
    let file = std::fs::canonicalize(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let filename = format!("filename:{}", file.display());
    let tags = [filename.as_str(), "env:bench"];
    let ddtags = format!("{},env:bench", filename);
    let encoder = BatchEncoder::new(Generation::V3, Compression::ZSTD);
    let mut engine = Engine::new(EngineConfig::default());
    // The stream opens with an (empty) snapshot: batch 0.
    let snapshot = encoder.encode(&[]).map_err(|e| e.to_string())?;
    let mut s = Sizes {
        stencil: (snapshot.batch_len(0) + GRPC_FRAME) as u64,
        ..Sizes::default()
    };
    for (n, chunk) in lines.chunks(batch.max(1)).enumerate() {
        let mut datums = Vec::new();
        let mut raw = Vec::new();
        let mut http = Vec::new();
        let mut records = Vec::new();
        for (i, line) in chunk.iter().enumerate() {
            let ts = BASE_MS + ((n * batch + i) as i64) * 7;
            let meta = Meta {
                timestamp: ts,
                status: Some(STATUS),
                service: Some(SERVICE),
                tags: &tags,
            };
            engine.encode(line, &meta, &mut datums);
            raw.extend_from_slice(line);
            raw.push(b'\n');
            let text = String::from_utf8_lossy(line).into_owned();
            http.push(json!({
                "message": text,
                "status": STATUS,
                "timestamp": ts,
                "hostname": HOST,
                "service": SERVICE,
                "ddsource": SOURCE,
                "ddtags": ddtags,
            }));
            records.push(otlp::LogRecord {
                time_unix_nano: ts as u64 * 1_000_000,
                observed_time_unix_nano: ts as u64 * 1_000_000,
                severity_number: 9,
                severity_text: STATUS.into(),
                body: Some(otlp::AnyValue { string_value: text }),
                attributes: vec![otlp::KeyValue {
                    key: "log.file.path".into(),
                    value: Some(otlp::AnyValue {
                        string_value: file.display().to_string(),
                    }),
                }],
            });
        }
        let payload = encoder.encode(&datums).map_err(|e| e.to_string())?;
        s.stencil += (payload.batch_len(n as u32 + 1) + GRPC_FRAME) as u64;
        s.lines += chunk.len() as u64;
        s.raw += raw.len() as u64;
        s.zstd1 += zstd(1, &raw);
        s.zstd3 += zstd(3, &raw);
        s.http_json += zstd(1, &serde_json::to_vec(&http).map_err(|e| e.to_string())?);
        let resource = otlp::Resource {
            attributes: vec![
                otlp::KeyValue {
                    key: "service.name".into(),
                    value: Some(otlp::AnyValue {
                        string_value: SERVICE.into(),
                    }),
                },
                otlp::KeyValue {
                    key: "host.name".into(),
                    value: Some(otlp::AnyValue {
                        string_value: HOST.into(),
                    }),
                },
            ],
        };
        let data = otlp::LogsData {
            resource_logs: vec![otlp::ResourceLogs {
                resource: Some(resource),
                scope_logs: vec![otlp::ScopeLogs {
                    log_records: records,
                }],
            }],
        };
        s.otlp += zstd(1, &data.encode_to_vec());
    }
    Ok(s)
}

fn row(file: &str, batch: usize, s: &Sizes) -> serde_json::Value {
    json!({
        "file": file,
        "batch_lines": batch,
        "lines": s.lines,
        "raw_bytes": s.raw,
        "stencil_bytes": s.stencil,
        "zstd1_bytes": s.zstd1,
        "zstd3_bytes": s.zstd3,
        "http_json_zstd1_bytes": s.http_json,
        "otlp_zstd1_bytes": s.otlp,
    })
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// Runs the wire benchmark.
pub fn run(args: &WireArgs) -> Result<(), String> {
    let sizes = if args.batch_lines.is_empty() {
        vec![10, 100, 1000]
    } else {
        args.batch_lines.clone()
    };
    let contents: Vec<(String, Vec<u8>)> = args
        .files
        .iter()
        .map(|p| {
            std::fs::read(p)
                .map(|b| (p.display().to_string(), b))
                .map_err(|e| format!("{}: {e}", p.display()))
        })
        .collect::<Result<_, _>>()?;
    if !args.json {
        println!(
            "{:<40} {:>6} {:>7} {:>10} {:>9} {:>9} {:>9} {:>10} {:>9}   zstd1/stencil json/stencil otlp/stencil",
            "file", "batch", "lines", "raw", "stencil", "zstd1", "zstd3", "http_json", "otlp"
        );
    }
    for &batch in &sizes {
        let mut total = Sizes::default();
        for ((name, bytes), path) in contents.iter().zip(&args.files) {
            let lines = super::bench::split_lines(bytes);
            let s = measure(path, &lines, batch)?;
            total.add(&s);
            emit(args.json, name, batch, &s);
        }
        emit(args.json, "total", batch, &total);
    }
    Ok(())
}

fn emit(json_out: bool, name: &str, batch: usize, s: &Sizes) {
    if json_out {
        println!("{}", row(name, batch, s));
    } else {
        let short: String = name
            .chars()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        println!(
            "{:<40} {:>6} {:>7} {:>10} {:>9} {:>9} {:>9} {:>10} {:>9}   {:>13.2} {:>12.2} {:>12.2}",
            short,
            batch,
            s.lines,
            s.raw,
            s.stencil,
            s.zstd1,
            s.zstd3,
            s.http_json,
            s.otlp,
            ratio(s.zstd1, s.stencil),
            ratio(s.http_json, s.stencil),
            ratio(s.otlp, s.stencil)
        );
    }
}
