//! `stencil bench wire`: bytes on the wire for the same lines and metadata, side by side, per batch size:
//! Stencil v3 (every batch, snapshot included, plus gRPC framing), raw lines with zstd-1 and zstd-3 per
//! batch, the Datadog HTTP JSON transport (zstd-1), and OTLP logs (protobuf `LogsData`, zstd-1). The
//! baselines are built here from the same lines; no number is copied from anywhere.

use std::path::PathBuf;
use std::time::Instant;

use serde_json::json;
use stencil_codec::{BatchEncoder, Compression, Generation};
use stencil_patterns::{Engine, EngineConfig, Meta};

use super::baselines::{self, Line, Metadata};

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
    #[arg(long, conflicts_with = "markdown")]
    json: bool,
    /// Markdown tables (one per batch size), as pasted into BENCHMARKS.md.
    #[arg(long)]
    markdown: bool,
    /// All files over one stream (one engine, state shared, as an agent pipeline reads several files)
    /// instead of one stream per file. Batches still hold one file's lines each.
    #[arg(long)]
    shared_stream: bool,
    /// Experiment: the v3 engine defines a pattern on its Nth line (default: the engine's, 2).
    #[arg(long, value_name = "N")]
    v3_define_after: Option<u32>,
    /// Experiment: the v3 engine admits a value to the dictionary on its Nth sighting (default: the
    /// engine's, 2; the count stops at 255, so 255 admits only values seen that often).
    #[arg(long, value_name = "N")]
    v3_admit_after: Option<u8>,
    /// Experiment: every slot is its own value in v3 (the default merges slots separated only by short
    /// punctuation into one string value).
    #[arg(long)]
    v3_separate_slots: bool,
    /// Experiment: the v3 engine sends JSON logs on the text path, not as documents (default: as
    /// documents when byte-exact, as `ship --wire v3` does).
    #[arg(long)]
    v3_json_text: bool,
    /// Experiment: zstd level of the v3 payloads (default 1, as the baselines).
    #[arg(long, value_name = "LEVEL", default_value_t = 1)]
    v3_zstd_level: i32,
    /// zstd level of the default wire's stream context (default: `stencil ship --stream-level`'s, 6).
    #[arg(long, value_name = "LEVEL", default_value_t = stencil_codec::extensions::STREAM_LEVEL)]
    stream_level: i32,
    /// Also write SVG charts of bytes per log (by method and batch size, and by file) into this folder.
    #[arg(long, value_name = "DIR")]
    charts: Option<PathBuf>,
    /// Measure each line as a container runtime or a JSON logger writes it: `docker` wraps it as
    /// Docker's `json-file` driver does (a JSON object with the line, the stream and a time); `bunyan`
    /// and `pino` as those Node.js loggers write a record whose message is the line (bunyan's among the
    /// members, pino's last). Every method gets the wrapped lines.
    #[arg(long, value_enum)]
    wrap: Option<super::Wrap>,
    /// The default wire sends JSON logs as documents, as `stencil ship --json-documents` does.
    #[arg(long)]
    json_documents: bool,
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
    native: u64,
    zstd1: u64,
    zstd3: u64,
    http_json: u64,
    otlp: u64,
    stream_zstd1: u64,
    /// The same zstd-1 stream with each file's metadata sent once, as a header line, when the file's
    /// first batch goes on the stream (what every other method carries).
    stream_zstd1_meta: u64,
    stream_zstd3: u64,
    /// The default wire to a Stencil intake (`stencil_bytes` in the JSON).
    native_stream: u64,
    /// Seconds spent laying out and compressing the default wire (both forms, engine excluded).
    ext_seconds: f64,
    /// Seconds spent laying out and compressing the datums as v3 (the engine's time excluded).
    v3_seconds: f64,
    /// Seconds spent laying out and compressing `native/3` alone (per-batch zstd-1).
    native_seconds: f64,
}

impl Sizes {
    fn add(&mut self, o: &Sizes) {
        self.lines += o.lines;
        self.raw += o.raw;
        self.stencil += o.stencil;
        self.native += o.native;
        self.zstd1 += o.zstd1;
        self.zstd3 += o.zstd3;
        self.http_json += o.http_json;
        self.otlp += o.otlp;
        self.stream_zstd1 += o.stream_zstd1;
        self.stream_zstd1_meta += o.stream_zstd1_meta;
        self.stream_zstd3 += o.stream_zstd3;
        self.native_stream += o.native_stream;
        self.ext_seconds += o.ext_seconds;
        self.v3_seconds += o.v3_seconds;
        self.native_seconds += o.native_seconds;
    }
}

pub(super) fn sc(level: i32) -> Result<stencil_codec::stream::StreamCompressor, String> {
    stencil_codec::stream::StreamCompressor::new(level, stencil_codec::stream::DEFAULT_WINDOW_LOG)
        .map_err(|e| e.to_string())
}

fn zstd(level: i32, bytes: &[u8]) -> u64 {
    Compression::Zstd { level }
        .compress(bytes)
        .map_or(0, |c| c.len()) as u64
}

/// The engine settings of the default wire (`stencil ship --wire auto`,
/// [`EngineConfig::for_default_wire`]), JSON logs on the text path.
pub fn engine_config() -> EngineConfig {
    engine_config_with(false)
}

/// [`engine_config`], with JSON logs sent as documents when `json_documents` (`ship --json-documents`).
pub fn engine_config_with(json_documents: bool) -> EngineConfig {
    EngineConfig::default().for_default_wire(json_documents)
}

/// One simulated stream: the engines (v3's and the default wire's), their encoders, and the next batch id.
struct Stream {
    encoder: BatchEncoder,
    engine: Engine,
    native_engine: Engine,
    /// `native/3` alone, negotiated without `stream-zstd` (per-batch zstd-1).
    native_encoder: stencil_codec::ExtEncoder,
    next_batch: u32,
    raw1: stencil_codec::stream::StreamCompressor,
    raw1_meta: stencil_codec::stream::StreamCompressor,
    raw3: stencil_codec::stream::StreamCompressor,
    /// The default wire to a Stencil intake: the extensions, agreed from batch 1 on.
    ext: stencil_codec::ExtEncoder,
}

impl Stream {
    /// A fresh stream, and the bytes of its opening (empty) snapshot, batch 0, with its gRPC frame.
    fn open(args: &WireArgs) -> Result<(Stream, u64), String> {
        let encoder = BatchEncoder::new(
            Generation::V3,
            Compression::Zstd {
                level: args.v3_zstd_level,
            },
        );
        let mut config = EngineConfig::default();
        if let Some(n) = args.v3_define_after {
            config.define_after = n;
        }
        if args.v3_separate_slots {
            config.merge_slots = false;
        }
        if args.v3_json_text {
            config.json = false;
        }
        if let Some(n) = args.v3_admit_after {
            config.admit_after = n;
        }
        let snapshot = encoder.encode(&[]).map_err(|e| e.to_string())?;
        let opening = (snapshot.batch_len(0) + GRPC_FRAME) as u64;
        Ok((
            Stream {
                encoder,
                engine: Engine::new(config),
                // The default wire runs its own engine with the settings `ship --wire auto` uses.
                native_engine: Engine::new(engine_config_with(args.json_documents)),
                native_encoder: stencil_codec::ExtEncoder::new(
                    stencil_codec::Extensions {
                        stream_zstd: None,
                        native: true,
                        json_order: true,
                    },
                    Compression::ZSTD,
                    &[],
                )
                .map_err(|e| e.to_string())?,
                next_batch: 1,
                raw1: sc(1)?,
                raw1_meta: sc(1)?,
                raw3: sc(3)?,
                ext: stencil_codec::ExtEncoder::with_level(
                    stencil_codec::Extensions::ALL,
                    Compression::ZSTD,
                    &[],
                    args.stream_level,
                )
                .map_err(|e| e.to_string())?,
            },
            opening,
        ))
    }
}

/// The sizes of one file's batches on `stream`, plus `opening` bytes for the stream's batch 0 (0 when the
/// stream was opened for an earlier file).
fn measure(
    path: &std::path::Path,
    lines: &[&[u8]],
    batch: usize,
    stream: &mut Stream,
    opening: u64,
) -> Result<Sizes, String> {
    let file = std::fs::canonicalize(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let meta = Metadata {
        host: HOST.into(),
        service: SERVICE.into(),
        source: SOURCE.into(),
        status: STATUS.into(),
        file: file.display().to_string(),
    };
    let filename = format!("filename:{}", meta.file);
    let tags = [filename.as_str(), "env:bench"];
    let Stream {
        encoder,
        engine,
        native_engine,
        native_encoder,
        next_batch,
        raw1,
        raw1_meta,
        raw3,
        ext,
    } = stream;
    let mut s = Sizes {
        stencil: opening,
        native: opening,
        native_stream: opening,
        ..Sizes::default()
    };
    for (n, chunk) in lines.chunks(batch.max(1)).enumerate() {
        let mut datums = Vec::new();
        let mut native_datums = Vec::new();
        let timed: Vec<Line<'_>> = chunk
            .iter()
            .enumerate()
            .map(|(i, line)| (*line, BASE_MS + ((n * batch + i) as i64) * 7))
            .collect();
        for (line, ts) in &timed {
            let m = Meta {
                timestamp: *ts,
                status: Some(STATUS),
                service: Some(SERVICE),
                tags: &tags,
            };
            engine.encode(line, &m, &mut datums);
            native_engine.encode(line, &m, &mut native_datums);
        }
        let started = Instant::now();
        let payload = encoder.encode(&datums).map_err(|e| e.to_string())?;
        s.v3_seconds += started.elapsed().as_secs_f64();
        let framing = payload.batch_len(*next_batch) - payload.data.len() + GRPC_FRAME;
        *next_batch = next_batch.wrapping_add(1);
        s.stencil += (payload.data.len() + framing) as u64;
        let started = Instant::now();
        let b = ext.encode(&native_datums).map_err(|e| e.to_string())?;
        s.ext_seconds += started.elapsed().as_secs_f64();
        s.native_stream += (b.len() + framing) as u64;
        let started = Instant::now();
        let native = native_encoder
            .encode(&native_datums)
            .map_err(|e| e.to_string())?;
        s.native_seconds += started.elapsed().as_secs_f64();
        s.native += (native.len() + framing) as u64;
        let raw = baselines::raw_lines(&timed);
        s.lines += chunk.len() as u64;
        s.raw += raw.len() as u64;
        s.zstd1 += zstd(1, &raw);
        s.zstd3 += zstd(3, &raw);
        s.stream_zstd1 += raw1.compress_batch(&raw).map_err(|e| e.to_string())?.len() as u64;
        let with_meta = if n == 0 {
            let mut b = format!(
                "host={} service={} source={} status={} file={}\n",
                meta.host, meta.service, meta.source, meta.status, meta.file
            )
            .into_bytes();
            b.extend_from_slice(&raw);
            b
        } else {
            raw.clone()
        };
        s.stream_zstd1_meta += raw1_meta
            .compress_batch(&with_meta)
            .map_err(|e| e.to_string())?
            .len() as u64;
        s.stream_zstd3 += raw3.compress_batch(&raw).map_err(|e| e.to_string())?.len() as u64;
        s.http_json += zstd(1, &baselines::http_json(&timed, &meta)?);
        s.otlp += zstd(1, &baselines::otlp(&timed, &meta));
    }
    Ok(s)
}

fn row(file: &str, batch: usize, s: &Sizes) -> serde_json::Value {
    json!({
        "file": file,
        "batch_lines": batch,
        "lines": s.lines,
        "raw_bytes": s.raw,
        "stencil_bytes": s.native_stream,
        "v3_bytes": s.stencil,
        "native_per_batch_zstd1_bytes": s.native,
        "zstd1_bytes": s.zstd1,
        "zstd3_bytes": s.zstd3,
        "http_json_zstd1_bytes": s.http_json,
        "otlp_zstd1_bytes": s.otlp,
        "stream_zstd1_bytes": s.stream_zstd1,
        "stream_zstd1_with_metadata_bytes": s.stream_zstd1_meta,
        "stream_zstd3_bytes": s.stream_zstd3,
        "ratios_to_stencil_default_wire": {
            "stream_zstd1": ratio(s.stream_zstd1, s.native_stream),
            "stream_zstd1_with_metadata": ratio(s.stream_zstd1_meta, s.native_stream),
            "stream_zstd3": ratio(s.stream_zstd3, s.native_stream),
            "zstd1": ratio(s.zstd1, s.native_stream),
            "v3": ratio(s.stencil, s.native_stream),
            "http_json_zstd1": ratio(s.http_json, s.native_stream),
            "otlp_zstd1": ratio(s.otlp, s.native_stream),
        },
        "ratios_to_stencil": {
            "raw": ratio(s.raw, s.stencil),
            "zstd1": ratio(s.zstd1, s.stencil),
            "zstd3": ratio(s.zstd3, s.stencil),
            "http_json_zstd1": ratio(s.http_json, s.stencil),
            "otlp_zstd1": ratio(s.otlp, s.stencil),
        },
        "v3_layout_seconds": s.v3_seconds,
        "native_layout_seconds": s.native_seconds,
        "default_wire_layout_seconds": s.ext_seconds,
    })
}

fn ratio_f(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// One measured row: a file (or `total`) at one batch size.
struct Row {
    name: String,
    batch: usize,
    sizes: Sizes,
}

/// Runs the wire benchmark.
pub fn run(args: &WireArgs) -> Result<(), String> {
    let sizes = if args.batch_lines.is_empty() {
        vec![10, 100, 1000]
    } else {
        args.batch_lines.clone()
    };
    if let Some(&zero) = sizes.iter().find(|&&b| b == 0) {
        return Err(format!(
            "--batch-lines {zero}: a batch needs at least one line"
        ));
    }
    let contents: Vec<(String, Vec<u8>)> = args
        .files
        .iter()
        .map(|p| {
            std::fs::read(p)
                .map(|b| match args.wrap {
                    Some(wrap) => wrap.apply(&b),
                    None => b,
                })
                .map(|b| (p.display().to_string(), b))
                .map_err(|e| format!("{}: {e}", p.display()))
        })
        .collect::<Result<_, _>>()?;
    let mut rows = Vec::new();
    for &batch in &sizes {
        let mut total = Sizes::default();
        let mut shared: Option<Stream> = None;
        for ((name, bytes), path) in contents.iter().zip(&args.files) {
            let lines = super::split_lines(bytes);
            let s = match (&mut shared, args.shared_stream) {
                (Some(stream), true) => measure(path, &lines, batch, stream, 0)?,
                (_, true) => {
                    let (stream, opening) = Stream::open(args)?;
                    measure(path, &lines, batch, shared.insert(stream), opening)?
                }
                (_, false) => {
                    let (mut stream, opening) = Stream::open(args)?;
                    measure(path, &lines, batch, &mut stream, opening)?
                }
            };
            total.add(&s);
            rows.push(Row {
                name: name.clone(),
                batch,
                sizes: s,
            });
        }
        rows.push(Row {
            name: "total".into(),
            batch,
            sizes: total,
        });
    }
    if args.json {
        for r in &rows {
            println!("{}", row(&r.name, r.batch, &r.sizes));
        }
    } else if args.markdown {
        print_markdown(&rows);
    } else {
        print_table(&rows);
    }
    if let Some(dir) = &args.charts {
        write_charts(dir, &rows, &sizes)?;
    }
    Ok(())
}

/// The name shown in tables and charts: the file's name without the Loghub `_2k.log` suffix.
fn short_name(name: &str) -> String {
    let file = std::path::Path::new(name)
        .file_name()
        .map_or_else(|| name.to_string(), |f| f.to_string_lossy().into_owned());
    file.strip_suffix("_2k.log")
        .map_or(file.clone(), str::to_string)
}

fn print_table(rows: &[Row]) {
    println!(
        "{:<24} {:>6} {:>7} {:>10} {:>9} {:>9} {:>9} {:>9} {:>10} {:>9}   zstd1/v3 json/v3 otlp/v3 zstd1/native raw/v3 zstd3/v3",
        "file", "batch", "lines", "raw", "v3", "native*", "zstd1", "zstd3", "http_json", "otlp"
    );
    for r in rows {
        let s = &r.sizes;
        println!(
            "{:<24} {:>6} {:>7} {:>10} {:>9} {:>9} {:>9} {:>9} {:>10} {:>9}   {:>8.2} {:>7.2} {:>7.2} {:>12.2} {:>6.2} {:>8.2}",
            short_name(&r.name),
            r.batch,
            s.lines,
            s.raw,
            s.stencil,
            s.native,
            s.zstd1,
            s.zstd3,
            s.http_json,
            s.otlp,
            ratio(s.zstd1, s.stencil),
            ratio(s.http_json, s.stencil),
            ratio(s.otlp, s.stencil),
            ratio(s.zstd1, s.native),
            ratio(s.raw, s.stencil),
            ratio(s.zstd3, s.stencil),
        );
    }
    for r in rows.iter().filter(|r| r.name == "total") {
        let s = &r.sizes;
        let l = s.lines.max(1) as f64;
        println!(
            "  total at {} lines/batch, bytes per line: Stencil (default wire) {:.2}, v3 {:.2}, stream zstd-1 {:.2}, stream zstd-1 with metadata {:.2}, stream zstd-3 {:.2}, zstd-1 per batch {:.2} (stream zstd-1 / Stencil {:.2}x, with metadata {:.2}x, zstd-1 per batch / Stencil {:.2}x)",
            r.batch,
            s.native_stream as f64 / l,
            s.stencil as f64 / l,
            s.stream_zstd1 as f64 / l,
            s.stream_zstd1_meta as f64 / l,
            s.stream_zstd3 as f64 / l,
            s.zstd1 as f64 / l,
            ratio(s.stream_zstd1, s.native_stream),
            ratio(s.stream_zstd1_meta, s.native_stream),
            ratio(s.zstd1, s.native_stream),
        );
    }
    println!(
        "* native: native/3 negotiated alone (no stream-zstd: each batch compressed on its own)"
    );
    for r in rows.iter().filter(|r| r.name == "total") {
        let s = &r.sizes;
        println!(
            "  layout + zstd-1 time at {} lines/batch (engine excluded): v3 {:.1} ms, native/3 alone {:.1} ms ({:.2}x)",
            r.batch,
            s.v3_seconds * 1e3,
            s.native_seconds * 1e3,
            ratio_f(s.native_seconds, s.v3_seconds)
        );
    }
}

fn print_markdown(rows: &[Row]) {
    let mut batch = None;
    for r in rows {
        if batch != Some(r.batch) {
            batch = Some(r.batch);
            println!();
            println!("#### {} lines per batch", r.batch);
            println!();
            println!(
                "| file | raw | Stencil (default wire) | stream zstd-1 | stream zstd-1 ÷ Stencil | Stencil v3 | zstd-1 | zstd-3 | HTTP JSON | OTLP | raw ÷ v3 | zstd-1 ÷ v3 | zstd-3 ÷ v3 | HTTP JSON ÷ v3 | OTLP ÷ v3 | native/3 alone | zstd-1 ÷ native/3 alone |"
            );
            println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        }
        let s = &r.sizes;
        let name = short_name(&r.name);
        let name = if r.name == "total" {
            "**total**".to_string()
        } else {
            name
        };
        println!(
            "| {name} | {} | {} | {} | {:.2}× | {} | {} | {} | {} | {} | {:.2}× | {:.2}× | {:.2}× | {:.2}× | {:.2}× | {} | {:.2}× |",
            s.raw,
            s.native_stream,
            s.stream_zstd1,
            ratio(s.stream_zstd1, s.native_stream),
            s.stencil,
            s.zstd1,
            s.zstd3,
            s.http_json,
            s.otlp,
            ratio(s.raw, s.stencil),
            ratio(s.zstd1, s.stencil),
            ratio(s.zstd3, s.stencil),
            ratio(s.http_json, s.stencil),
            ratio(s.otlp, s.stencil),
            s.native,
            ratio(s.zstd1, s.native),
        );
    }
}

/// Bytes per log of each method, in chart order.
fn per_log(s: &Sizes) -> Vec<f64> {
    let lines = s.lines.max(1) as f64;
    [
        s.zstd1,
        s.stream_zstd1,
        s.stream_zstd3,
        s.http_json,
        s.otlp,
        s.stencil,
        s.native_stream,
    ]
    .iter()
    .map(|&b| b as f64 / lines)
    .collect()
}

const METHODS: [&str; 7] = [
    "raw + zstd-1 per batch",
    "raw + zstd-1 stream",
    "raw + zstd-3 stream",
    "HTTP JSON + zstd-1",
    "OTLP + zstd-1",
    "Stencil v3",
    "Stencil (default wire)",
];

fn write_charts(dir: &std::path::Path, rows: &[Row], sizes: &[usize]) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("--charts {}: {e}", dir.display()))?;
    let totals: Vec<(String, Vec<f64>)> = rows
        .iter()
        .filter(|r| r.name == "total")
        .map(|r| (format!("{} lines/batch", r.batch), per_log(&r.sizes)))
        .collect();
    let path = dir.join("wire-bytes-per-log.svg");
    super::chart::grouped_bars(
        &path,
        "Bytes per log on the wire, 12 Loghub systems (lower is better)",
        "bytes per log",
        &METHODS,
        &totals,
    )?;
    let focus = if sizes.contains(&100) { 100 } else { sizes[0] };
    let systems: Vec<(String, Vec<f64>)> = rows
        .iter()
        .filter(|r| r.batch == focus)
        .map(|r| (short_name(&r.name), per_log(&r.sizes)))
        .collect();
    let path = dir.join(format!("wire-bytes-per-log-by-file-{focus}.svg"));
    super::chart::grouped_bars(
        &path,
        &format!("Bytes per log by file, {focus} lines per batch (lower is better)"),
        "bytes per log",
        &METHODS,
        &systems,
    )
}
