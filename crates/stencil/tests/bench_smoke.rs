//! Smoke test of `stencil bench patterns` on the shared corpus: it runs, reports every system, and every
//! raw line round-trips. (The quality and speed targets are read from the benchmark, not asserted here.)

use std::process::Command;

#[test]
fn bench_patterns_runs_on_the_corpus() {
    let Some(corpus) = std::env::var_os("STENCIL_CORPUS") else {
        eprintln!("SKIPPED: set STENCIL_CORPUS=../shared/corpus to run the benchmark smoke test");
        return;
    };
    // A relative path is taken from the workspace root, as in the README's test command.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let loghub = root.join(&corpus).join("loghub-2k");
    assert!(loghub.is_dir(), "STENCIL_CORPUS has no loghub-2k folder");
    let out = Command::new(env!("CARGO_BIN_EXE_stencil"))
        .args(["bench", "patterns", "--json", "--loghub"])
        .arg(&loghub)
        .output()
        .expect("stencil runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(rows.len(), 13, "12 systems and the average");
    for r in &rows {
        assert_eq!(r["roundtrip_ok"], true, "{r}");
        for key in [
            "system",
            "lines",
            "ga_content",
            "ga_line",
            "patterns",
            "lines_per_sec",
            "encoded_bytes",
        ] {
            assert!(r.get(key).is_some(), "missing {key} in {r}");
        }
    }
    assert_eq!(rows[12]["system"], "average");
    assert!(rows[12]["ga_content"].as_f64().expect("number") > 0.5);
}

#[test]
fn bench_wire_reports_every_method() {
    let sample = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/sample.log");
    let out = Command::new(env!("CARGO_BIN_EXE_stencil"))
        .args([
            "bench",
            "wire",
            "--json",
            "--batch-lines",
            "10",
            "--batch-lines",
            "100",
        ])
        .arg(&sample)
        .output()
        .expect("stencil runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert_eq!(rows.len(), 4, "one file and the total, for two batch sizes");
    for r in &rows {
        for key in [
            "file",
            "batch_lines",
            "lines",
            "raw_bytes",
            "stencil_bytes",
            "zstd1_bytes",
            "zstd3_bytes",
            "http_json_zstd1_bytes",
            "otlp_zstd1_bytes",
        ] {
            assert!(r.get(key).is_some(), "missing {key} in {r}");
        }
        assert_eq!(r["lines"], 60);
        assert!(r["stencil_bytes"].as_u64().expect("number") > 0);
    }
    assert_eq!(rows[1]["file"], "total");
    assert_eq!(rows[3]["batch_lines"], 100);
}
