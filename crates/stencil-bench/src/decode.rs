//! `stencil bench decode`: the intake's side alone. The lines are encoded once, as the agent would send
//! them (one stream per file, batches of the same size, the default wire or plain v3); then the batches
//! are decoded again and again through the intake's own decoder, alone and followed by each sink, on this
//! thread, and the thread's CPU time is reported as logs per CPU-second. A plain zstd-1 stream of the
//! same lines, decompressed the same way, is the baseline measured in the same run.

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::json;
use stencil_codec::stream::{StreamCompressor, StreamDecompressor, DEFAULT_WINDOW_LOG};
use stencil_codec::{
    BatchEncoder, Compression, ExtEncoder, Extensions, Generation, Limits, StreamDecoder,
};
use stencil_intake::sink::{FilesSink, JsonLinesSink, Sink, StreamInfo};
use stencil_patterns::{Engine, EngineConfig, Meta};

/// Flags of `stencil bench decode`.
#[derive(clap::Args, Debug)]
pub struct DecodeArgs {
    /// Files to encode once and decode (each line is one log; one stream per file).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Lines per batch.
    #[arg(long = "batch-lines", default_value_t = 1000)]
    batch_lines: usize,
    /// The wire the batches are in: `auto` (the default wire to a Stencil intake, `native/3` with
    /// `stream-zstd`) or `v3`.
    #[arg(long, default_value = "auto", value_parser = ["auto", "v3"])]
    wire: String,
    /// Decode each figure's batches for at least this many CPU-seconds (whole passes).
    #[arg(long, default_value_t = 1.0)]
    min_seconds: f64,
    /// One JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Only this figure besides the baseline (for a profiler): `decode`, `files` or `jsonl`.
    #[arg(long, value_parser = ["decode", "files", "jsonl"])]
    only: Option<String>,
}

/// The batches of one stream, in order (batch 0 first), and the raw lines of each data batch.
struct Encoded {
    batches: Vec<Vec<u8>>,
    raw: Vec<Vec<u8>>,
    logs: u64,
}

fn encode(path: &std::path::Path, batch: usize, auto: bool) -> Result<Encoded, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let lines = super::split_lines(&bytes);
    let config = if auto {
        super::wire::engine_config()
    } else {
        EngineConfig::default()
    };
    let mut engine = Engine::new(config);
    let v3 = BatchEncoder::new(Generation::V3, Compression::ZSTD);
    let mut ext =
        ExtEncoder::new(Extensions::ALL, Compression::ZSTD, &[]).map_err(|e| e.to_string())?;
    let snapshot = v3.encode(&[]).map_err(|e| e.to_string())?;
    let filename = format!("filename:{}", path.display());
    let tags = [filename.as_str(), "env:bench"];
    let mut out = Encoded {
        batches: vec![snapshot.data],
        raw: Vec::new(),
        logs: 0,
    };
    let mut datums = Vec::new();
    for (n, chunk) in lines.chunks(batch.max(1)).enumerate() {
        datums.clear();
        let mut raw = Vec::new();
        for (i, line) in chunk.iter().enumerate() {
            let meta = Meta {
                timestamp: 1_700_000_000_000 + ((n * batch + i) as i64) * 7,
                status: Some("info"),
                service: Some("bench"),
                tags: &tags,
            };
            engine.encode(line, &meta, &mut datums);
            raw.extend_from_slice(line);
            raw.push(b'\n');
        }
        out.logs += chunk.len() as u64;
        let data = if auto {
            ext.encode(&datums).map_err(|e| e.to_string())?
        } else {
            v3.encode(&datums).map_err(|e| e.to_string())?.data
        };
        out.batches.push(data);
        out.raw.push(raw);
    }
    Ok(out)
}

/// Decodes every stream's batches once through a fresh decoder, handing each batch's logs to `sink`.
fn decode_pass(streams: &[Encoded], auto: bool, sink: Option<&dyn Sink>) -> Result<u64, String> {
    let mut logs = 0;
    for (i, s) in streams.iter().enumerate() {
        let mut decoder = StreamDecoder::new(Generation::V3, Compression::ZSTD, Limits::default());
        if auto {
            decoder = decoder.with_extensions(Extensions::ALL, DEFAULT_WINDOW_LOG);
        }
        let info = StreamInfo {
            id: i as u64,
            generation: Generation::V3,
            peer: None,
        };
        for (id, data) in s.batches.iter().enumerate() {
            let decoded = decoder
                .decode(id as u32, data)
                .map_err(|e| format!("batch {id}: {e}"))?;
            logs += decoded.logs.len() as u64;
            if let Some(sink) = sink {
                sink.write_batch(&info, &decoded.logs)
                    .map_err(|e| e.to_string())?;
            }
            drop(decoded);
            decoder.release_batch();
        }
    }
    Ok(logs)
}

/// The baseline: each stream's raw lines as one zstd-1 stream (a flushed block per batch), decompressed.
fn baseline_pass(compressed: &[Vec<Vec<u8>>]) -> Result<u64, String> {
    let mut bytes = 0;
    for stream in compressed {
        let mut d = StreamDecompressor::new(DEFAULT_WINDOW_LOG).map_err(|e| e.to_string())?;
        for block in stream {
            bytes += d
                .decompress_batch(block, 64 << 20)
                .map_err(|e| e.to_string())?
                .len() as u64;
        }
    }
    Ok(bytes)
}

/// Runs `pass` until `min_seconds` of this thread's CPU are spent; (passes, CPU seconds).
fn timed(
    min_seconds: f64,
    mut pass: impl FnMut() -> Result<(), String>,
) -> Result<(u32, f64), String> {
    let start = super::thread_cpu();
    let mut passes = 0u32;
    loop {
        pass()?;
        passes += 1;
        let spent = super::thread_cpu() - start;
        if spent >= min_seconds || passes >= 10_000 {
            return Ok((passes, spent.max(1e-9)));
        }
    }
}

/// Runs the decode benchmark.
pub fn run(args: &DecodeArgs) -> Result<(), String> {
    let auto = args.wire == "auto";
    let streams: Vec<Encoded> = args
        .files
        .iter()
        .map(|p| encode(p, args.batch_lines, auto))
        .collect::<Result<_, _>>()?;
    let logs: u64 = streams.iter().map(|s| s.logs).sum();
    let wire_bytes: u64 = streams
        .iter()
        .flat_map(|s| s.batches.iter())
        .map(|b| b.len() as u64)
        .sum();
    let raw_bytes: u64 = streams
        .iter()
        .flat_map(|s| s.raw.iter())
        .map(|b| b.len() as u64)
        .sum();
    let compressed: Vec<Vec<Vec<u8>>> = streams
        .iter()
        .map(|s| {
            let mut c = StreamCompressor::new(1, DEFAULT_WINDOW_LOG).map_err(|e| e.to_string())?;
            s.raw
                .iter()
                .map(|r| c.compress_batch(r).map_err(|e| e.to_string()))
                .collect::<Result<Vec<_>, _>>()
        })
        .collect::<Result<_, _>>()?;
    // Every figure decodes the same logs: check once that they all come back.
    let decoded = decode_pass(&streams, auto, None)?;
    if decoded != logs {
        return Err(format!("decoded {decoded} logs of {logs}"));
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let files: Arc<dyn Sink> =
        Arc::new(FilesSink::new(&dir.path().join("files"), false).map_err(|e| e.to_string())?);
    let jsonl: Arc<dyn Sink> = Arc::new(
        JsonLinesSink::to_file(&dir.path().join("out.jsonl"), false).map_err(|e| e.to_string())?,
    );
    let mut rows = Vec::new();
    let (passes, cpu) = timed(args.min_seconds, || baseline_pass(&compressed).map(drop))?;
    rows.push(("stream zstd-1 decompression (baseline)", passes, cpu));
    let figures: [(&str, &str, Option<&dyn Sink>); 3] = [
        ("decode", "decode (rebuilt records)", None),
        ("files", "decode + files sink", Some(files.as_ref())),
        ("jsonl", "decode + JSON Lines sink", Some(jsonl.as_ref())),
    ];
    for (key, name, sink) in figures {
        if args.only.as_deref().is_some_and(|o| o != key) {
            continue;
        }
        let (passes, cpu) = timed(args.min_seconds, || {
            decode_pass(&streams, auto, sink).map(drop)
        })?;
        rows.push((name, passes, cpu));
    }
    // The baseline's CPU seconds per pass.
    let base = rows[0].2 / f64::from(rows[0].1);
    let figures: Vec<serde_json::Value> = rows
        .iter()
        .map(|(name, passes, cpu)| {
            let per_pass = cpu / f64::from(*passes);
            json!({
                "what": name,
                "passes": passes,
                "cpu_seconds": cpu,
                "logs_per_cpu_second": logs as f64 / per_pass,
                "raw_mib_per_cpu_second": raw_bytes as f64 / per_pass / (1 << 20) as f64,
                "cpu_vs_baseline": per_pass / base,
            })
        })
        .collect();
    if args.json {
        println!(
            "{}",
            json!({
                "wire": if auto { "native/3+stream-zstd" } else { "v3" },
                "batch_lines": args.batch_lines,
                "files": args.files.len(),
                "logs": logs,
                "raw_bytes": raw_bytes,
                "wire_bytes": wire_bytes,
                "figures": figures,
            })
        );
    } else {
        println!(
            "{} logs, {} raw bytes, {} wire bytes ({}), {} lines per batch; this thread's CPU time:",
            logs,
            raw_bytes,
            wire_bytes,
            if auto { "native/3+stream-zstd" } else { "v3" },
            args.batch_lines
        );
        println!(
            "{:<40} {:>14} {:>12} {:>12}",
            "", "logs/CPU-s", "raw MiB/s", "CPU × base"
        );
        for f in &figures {
            println!(
                "{:<40} {:>14.0} {:>12.1} {:>12.2}",
                f["what"].as_str().unwrap_or(""),
                f["logs_per_cpu_second"].as_f64().unwrap_or(0.0),
                f["raw_mib_per_cpu_second"].as_f64().unwrap_or(0.0),
                f["cpu_vs_baseline"].as_f64().unwrap_or(0.0),
            );
        }
    }
    Ok(())
}
