//! Smoke tests of the `stencil bench` commands on small inputs: each runs, reports every field, and (where
//! it checks it) rebuilds its input byte for byte. The quality, size and speed targets are read from the
//! benchmarks, not asserted here.

use std::ffi::OsStr;
use std::process::Command;

/// Runs `stencil ARGS`, asserts success, and parses each stdout line as one JSON object.
fn json_rows<I, S>(args: I) -> Vec<serde_json::Value>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let out = Command::new(env!("CARGO_BIN_EXE_stencil"))
        .args(args)
        .output()
        .expect("stencil runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

#[test]
#[ignore = "needs the shared corpus: STENCIL_CORPUS=../shared/corpus cargo test -- --include-ignored"]
fn bench_patterns_runs_on_the_corpus() {
    let corpus = std::env::var_os("STENCIL_CORPUS")
        .expect("set STENCIL_CORPUS=../shared/corpus to run the benchmark smoke test");
    // A relative path is taken from the workspace root, as in the README's test command.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let loghub = root.join(&corpus).join("loghub-2k");
    assert!(loghub.is_dir(), "STENCIL_CORPUS has no loghub-2k folder");
    let rows = json_rows([
        OsStr::new("bench"),
        OsStr::new("patterns"),
        OsStr::new("--json"),
        OsStr::new("--loghub"),
        loghub.as_os_str(),
    ]);
    assert_eq!(rows.len(), 13, "12 systems and the average");
    for r in &rows {
        assert_eq!(r["roundtrip_ok"], true, "{r}");
        for key in [
            "system",
            "lines",
            "ga_content",
            "ga_content_as_sent",
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
    for r in &rows {
        // Both are shares of lines; neither is degenerate on these systems.
        let (grouped, sent) = (
            r["ga_content"].as_f64().expect("number"),
            r["ga_content_as_sent"].as_f64().expect("number"),
        );
        assert!(
            (0.3..=1.0).contains(&sent) && (0.3..=1.0).contains(&grouped),
            "{r}"
        );
    }
    // Leave-one-out: each system scored with the threshold chosen on the other eleven.
    let loo = json_rows([
        OsStr::new("bench"),
        OsStr::new("patterns"),
        OsStr::new("--leave-one-out"),
        OsStr::new("--json"),
        OsStr::new("--loghub"),
        loghub.as_os_str(),
    ]);
    assert_eq!(loo.len(), 13, "12 systems and the average");
    for r in &loo[..12] {
        let chosen = r["similarity_chosen"].as_f64().expect("number");
        assert!((0.3..=0.9).contains(&chosen), "{r}");
        let words = r["sibling_words_chosen"].as_u64().expect("number");
        assert!(words == 0 || (2..=4).contains(&words), "{r}");
        let (loo_ga, best) = (
            r["ga_leave_one_out"].as_f64().expect("number"),
            r["ga_best_in_hindsight"].as_f64().expect("number"),
        );
        assert!(loo_ga <= best + 1e-9, "hindsight is never worse: {r}");
    }
    assert!(loo[12]["min_ga_leave_one_out"].as_f64().expect("number") > 0.3);
}

#[test]
fn bench_wire_reports_every_method() {
    let sample = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/sample.log");
    let rows = json_rows([
        OsStr::new("bench"),
        OsStr::new("wire"),
        OsStr::new("--json"),
        OsStr::new("--batch-lines"),
        OsStr::new("10"),
        OsStr::new("--batch-lines"),
        OsStr::new("100"),
        sample.as_os_str(),
    ]);
    assert_eq!(rows.len(), 4, "one file and the total, for two batch sizes");
    for r in &rows {
        for key in [
            "file",
            "batch_lines",
            "lines",
            "raw_bytes",
            "stencil_bytes",
            "v3_bytes",
            "stream_zstd1_bytes",
            "stream_zstd3_bytes",
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

#[test]
fn bench_decode_decodes_every_log_on_both_wires() {
    let sample = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/sample.log");
    for wire in ["auto", "v3"] {
        let rows = json_rows([
            OsStr::new("bench"),
            OsStr::new("decode"),
            OsStr::new("--json"),
            OsStr::new("--wire"),
            OsStr::new(wire),
            OsStr::new("--batch-lines"),
            OsStr::new("7"),
            OsStr::new("--min-seconds"),
            OsStr::new("0.01"),
            sample.as_os_str(),
        ]);
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        assert_eq!(r["logs"], 60, "{r}");
        assert!(r["wire_bytes"].as_u64().expect("number") > 0, "{r}");
        let figures = r["figures"].as_array().expect("figures");
        assert_eq!(figures.len(), 4, "baseline, decode, files, JSON Lines: {r}");
        for f in figures {
            assert!(f["passes"].as_u64().expect("passes") >= 1, "{f}");
            assert!(
                f["logs_per_cpu_second"].as_f64().expect("rate") > 0.0,
                "{f}"
            );
        }
    }
}

/// The pipeline benchmark runs both processes for real and checks the rebuilt files; a tiny input keeps
/// it fast (the numbers themselves are for `stencil bench pipeline` runs, not for this test).
#[test]
fn bench_pipeline_runs_two_processes_and_verifies_the_output() {
    let sample = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/sample.log");
    let rows = json_rows([
        OsStr::new("bench"),
        OsStr::new("pipeline"),
        OsStr::new("--json"),
        OsStr::new("--min-mib"),
        OsStr::new("1"),
        OsStr::new("--engine-rounds"),
        OsStr::new("3"),
        sample.as_os_str(),
    ]);
    assert_eq!(rows.len(), 1, "one JSON object");
    let r = &rows[0];
    assert_eq!(r["rebuilt_identical"], true);
    assert!(r["input_bytes"].as_u64().expect("bytes") >= 1 << 20);
    assert_eq!(
        r["lines"].as_u64().expect("lines") % 60,
        0,
        "whole copies of the 60-line sample"
    );
    for key in [
        "lines_per_sec",
        "mib_per_sec",
        "agent_cpu_seconds_per_gib",
        "intake_cpu_seconds_per_gib",
        "engine_lines_per_sec",
        "zstd1_mib_per_sec",
    ] {
        assert!(r[key].as_f64().expect("number") > 0.0, "{key} in {r}");
    }
    assert!(r["agent_peak_rss_bytes"].as_u64().expect("rss") > 1 << 20);
    assert!(r["intake_peak_rss_bytes"].as_u64().expect("rss") > 1 << 20);
    // The engine's cost is the median of the alternated rounds, inside their range.
    assert_eq!(r["engine_rounds"], 3);
    let ratio = r["engine_to_zstd1_cpu"].as_f64().expect("ratio");
    let range = &r["engine_to_zstd1_cpu_range"];
    let (lo, hi) = (
        range[0].as_f64().expect("min"),
        range[1].as_f64().expect("max"),
    );
    assert!(0.0 < lo && lo <= ratio && ratio <= hi, "{ratio} in {range}");
}

#[test]
fn bench_cardinality_reports_rss_per_budget() {
    let rows = json_rows([
        "bench",
        "cardinality",
        "--json",
        "--lines",
        "3000",
        "--budgets-mib",
        "1,4",
        "--levels",
        "extreme",
    ]);
    assert_eq!(rows.len(), 2);
    for (r, budget) in rows.iter().zip([1, 4]) {
        assert_eq!(r["budget_mib"], budget);
        assert_eq!(r["lines"], 3000);
        assert!(r["agent_peak_rss_bytes"].as_u64().expect("rss") > 1 << 20);
        assert!(r["wire_bytes"].as_u64().expect("bytes") > 0);
        assert_eq!(r["rebuilt_identical"], true);
    }
}

/// A report piped into a reader that stops early (`stencil bench wire --json … | head -1`) ends quietly,
/// killed by SIGPIPE as other Unix tools are, instead of panicking in `println!` with a backtrace.
#[test]
fn a_report_whose_reader_goes_away_ends_quietly() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;
    let dir = tempfile::tempdir().expect("tempdir");
    // Enough rows (3 per file) to overflow the pipe after the reader has gone.
    let files: Vec<std::path::PathBuf> = (0..400)
        .map(|i| {
            let p = dir.path().join(format!("f{i}.log"));
            std::fs::write(&p, format!("line {i} of a small file\n")).expect("write");
            p
        })
        .collect();
    let mut child = Command::new(env!("CARGO_BIN_EXE_stencil"))
        .args(["bench", "wire", "--json"])
        .args(&files)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("stencil runs");
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("a first row");
    assert!(first.starts_with('{'), "{first}");
    // The reader is dropped here: stdout is closed.
    let out = child.wait_with_output().expect("waits");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{:?}", out.status);
}
