//! Round trip of every line of every corpus file through the engine and the real codec, keeping each
//! file's final newline or its absence. The corpus is found through `STENCIL_CORPUS` (`.ci/run` sets it
//! to `../shared/corpus`); without the variable the test says it skipped, with it set but missing it fails.

mod common;

use std::path::{Path, PathBuf};

use common::{assert_lossless, split_lines};
use stencil_patterns::{Budget, EngineConfig};

/// The corpus folder (these tests are `#[ignore]`d unless asked for, and then need it).
fn corpus() -> PathBuf {
    let dir = std::env::var_os("STENCIL_CORPUS")
        .expect("set STENCIL_CORPUS=../shared/corpus to run the corpus tests");
    // A relative path is taken from the workspace root, as in the README's test command.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(dir);
    assert!(
        dir.join("loghub-2k").is_dir(),
        "STENCIL_CORPUS={} has no loghub-2k folder",
        dir.display()
    );
    dir
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let loghub = dir.join("loghub-2k");
    for system in std::fs::read_dir(&loghub).expect("loghub-2k readable") {
        let system = system.expect("entry").path();
        if let Some(name) = system.file_name().and_then(|n| n.to_str()) {
            let log = system.join(format!("{name}_2k.log"));
            if log.is_file() {
                out.push(log);
            }
        }
    }
    for entry in std::fs::read_dir(dir.join("fail2ban")).expect("fail2ban readable") {
        let path = entry.expect("entry").path();
        if path.is_file() {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// Rebuilds the file from its rebuilt lines and compares it with the original, final newline included.
fn check_file(path: &Path, config: EngineConfig) -> usize {
    let bytes = std::fs::read(path).expect("corpus file readable");
    let (lines, final_newline) = split_lines(&bytes);
    let rebuilt = common::round_trip(&lines, config, 100);
    let mut file = Vec::with_capacity(bytes.len());
    for (i, line) in rebuilt.iter().enumerate() {
        file.extend_from_slice(line);
        if i + 1 < rebuilt.len() || final_newline {
            file.push(b'\n');
        }
    }
    assert_eq!(file, bytes, "{} does not round-trip", path.display());
    lines.len()
}

#[test]
#[ignore = "needs the shared corpus: STENCIL_CORPUS=../shared/corpus cargo test -- --include-ignored"]
fn every_corpus_line_round_trips() {
    let dir = corpus();
    let files = files(&dir);
    assert!(
        files.len() >= 12 + 50,
        "expected the 12 Loghub files and the fail2ban samples"
    );
    let lines: usize = files
        .iter()
        .map(|f| check_file(f, EngineConfig::default()))
        .sum();
    assert!(lines > 25_000, "{lines} lines");
}

#[test]
#[ignore = "needs the shared corpus: STENCIL_CORPUS=../shared/corpus cargo test -- --include-ignored"]
fn every_corpus_line_round_trips_with_tiny_budgets() {
    let dir = corpus();
    let tiny = EngineConfig {
        patterns: Budget::new(8, 64 << 10),
        values: Budget::new(16, 4 << 10),
        meta: Budget::new(16, 4 << 10),
        ..EngineConfig::default()
    };
    for f in files(&dir) {
        check_file(&f, tiny.clone());
    }
}

#[test]
fn last_line_without_newline_is_kept() {
    let lines: Vec<&[u8]> = vec![b"first", b"second  "];
    assert_lossless(&lines, EngineConfig::default(), 10, "trailing spaces");
}
