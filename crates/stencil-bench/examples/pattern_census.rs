//! Development aid: how many patterns the engine learns and how many lines go raw, per file, for
//! checking that a tokenizer or miner change does not fragment formats nobody tuned for (issue #13 asks
//! for pattern counts and raw share on `lnav-formats`, which has no ground truth).
//!
//! ```text
//! cargo run --release -p stencil-bench --example pattern_census -- ../shared/corpus/lnav-formats/logfile_*
//! ```
//!
//! Each file gets a fresh engine with the default wire's configuration (one stream per file, as `bench
//! wire` runs without `--shared-stream`). Prints one row per file and a total.

use stencil_codec::datum::Datum;
use stencil_patterns::{Engine, EngineConfig, Meta};

fn main() -> Result<(), String> {
    let files: Vec<String> = std::env::args().skip(1).collect();
    if files.is_empty() {
        return Err("usage: pattern_census FILE…".into());
    }
    println!(
        "{:<48} {:>7} {:>8} {:>8} {:>7}",
        "file", "lines", "patterns", "defines", "raw"
    );
    let (mut lines_total, mut patterns_total, mut defines_total, mut raw_total) = (0, 0, 0, 0);
    for file in &files {
        let bytes = std::fs::read(file).map_err(|e| format!("{file}: {e}"))?;
        let mut engine = Engine::new(EngineConfig::default().for_default_wire(false));
        let mut out = Vec::new();
        let mut ids = std::collections::BTreeSet::new();
        let (mut lines, mut raw, mut defines) = (0usize, 0usize, 0usize);
        let body = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
        for line in body.split(|&b| b == b'\n').filter(|_| !bytes.is_empty()) {
            out.clear();
            let encoded = engine.encode(line, &Meta::default(), &mut out);
            lines += 1;
            if let Some(id) = encoded.pattern {
                ids.insert(id);
            }
            if !encoded.structured {
                raw += 1;
            }
            defines += out
                .iter()
                .filter(|d| matches!(d, Datum::PatternDefine(_)))
                .count();
        }
        let name = std::path::Path::new(file)
            .file_name()
            .map_or(file.clone(), |n| n.to_string_lossy().into_owned());
        println!(
            "{name:<48} {lines:>7} {:>8} {defines:>8} {raw:>7}",
            ids.len()
        );
        lines_total += lines;
        patterns_total += ids.len();
        defines_total += defines;
        raw_total += raw;
    }
    println!(
        "{:<48} {lines_total:>7} {patterns_total:>8} {defines_total:>8} {raw_total:>7} ({:.1} % raw)",
        "total",
        100.0 * raw_total as f64 / lines_total.max(1) as f64
    );
    Ok(())
}
