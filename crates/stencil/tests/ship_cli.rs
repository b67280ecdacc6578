//! `stencil ship --once` as a real process with its embedded intake: every input comes back byte for
//! byte under `--out` (CRLF, invalid UTF-8, no final newline, empty lines), and the summary adds up.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::rebuilt_path as rebuilt;

fn ship(out: &Path, inputs: &[PathBuf]) -> serde_json::Value {
    let summary = out.join("summary.json");
    let status = Command::new(env!("CARGO_BIN_EXE_stencil"))
        .args([
            "ship",
            "--once",
            "--streams",
            "4",
            "--batch-lines",
            "100",
            "--out",
        ])
        .arg(out)
        .arg("--summary-json")
        .arg(&summary)
        .args(inputs)
        .status()
        .expect("stencil runs");
    assert!(status.success());
    serde_json::from_str(&std::fs::read_to_string(&summary).expect("summary written"))
        .expect("JSON")
}

#[test]
fn hard_lines_round_trip_through_ship() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("mixed.log");
    let mut bytes = Vec::new();
    bytes.extend_from_slice(b"crlf line\r\n\n   \nplain 42 ok\n");
    bytes.extend_from_slice(b"bad \xff\xfe utf8\nnul \x00 byte\n");
    bytes.extend_from_slice("emoji \u{1F600} and marker \u{F8FE}\n".as_bytes());
    bytes.extend_from_slice(br#"{"level":"info","n":1,"msg":"json line"}"#);
    bytes.extend_from_slice(b"\n");
    bytes.extend_from_slice(br#"{"msg":"json, message first","level":"warn"}"#);
    bytes.extend_from_slice(b"\nlast without newline");
    std::fs::write(&input, &bytes).expect("write input");
    let out = dir.path().join("out");
    let summary = ship(&out, std::slice::from_ref(&input));
    assert_eq!(
        std::fs::read(rebuilt(&out, &input)).expect("rebuilt file"),
        bytes
    );
    assert_eq!(summary["lines"], 10);
    assert_eq!(summary["raw_bytes"], bytes.len());
    assert!(summary["wire_bytes"].as_u64().expect("number") > 0);
}

#[test]
#[ignore = "needs the shared corpus: STENCIL_CORPUS=../shared/corpus cargo test -- --include-ignored"]
fn corpus_files_round_trip_through_ship() {
    let corpus = std::env::var_os("STENCIL_CORPUS")
        .expect("set STENCIL_CORPUS=../shared/corpus to ship the corpus");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(corpus)
        .join("loghub-2k");
    assert!(root.is_dir(), "no loghub-2k under STENCIL_CORPUS");
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("readable")
        .filter_map(Result::ok)
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            e.path().join(format!("{name}_2k.log"))
        })
        .filter(|p| p.is_file())
        .collect();
    inputs.sort();
    assert_eq!(inputs.len(), 12);
    let fail2ban: Vec<PathBuf> = std::fs::read_dir(root.join("../fail2ban"))
        .expect("fail2ban samples")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file() && std::fs::metadata(p).is_ok_and(|m| m.len() > 0))
        .collect();
    assert!(fail2ban.len() > 50);
    inputs.extend(fail2ban);
    let dir = tempfile::tempdir().expect("tempdir");
    let summary = ship(dir.path(), &inputs);
    for input in &inputs {
        let original = std::fs::read(input).expect("corpus file");
        assert_eq!(
            std::fs::read(rebuilt(dir.path(), input)).expect("rebuilt"),
            original,
            "{}",
            input.display()
        );
    }
    assert!(summary["lines"].as_u64().expect("number") > 24_000);
}

/// Standard input streams without `--once` too; an empty one ends the run at once, with exit 0.
#[test]
fn an_empty_stdin_ends_a_follow_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_stencil"))
        .args(["ship", "--out"])
        .arg(dir.path().join("out"))
        .arg("-")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("shipped 0 lines"));
}

#[test]
fn env_vars_configure_ship_and_flags_win() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("in.log");
    std::fs::write(&input, b"from env\n").expect("write");
    let env_out = dir.path().join("env-out");
    let flag_out = dir.path().join("flag-out");
    let run = |extra: &[&std::ffi::OsStr]| {
        let status = Command::new(env!("CARGO_BIN_EXE_stencil"))
            .env("STENCIL_OUT", &env_out)
            .args(["ship", "--once"])
            .args(extra)
            .arg(&input)
            .status()
            .expect("runs");
        assert!(status.success());
    };
    run(&[]);
    assert_eq!(
        std::fs::read(rebuilt(&env_out, &input)).expect("env chose --out"),
        b"from env\n"
    );
    run(&["--out".as_ref(), flag_out.as_os_str()]);
    assert_eq!(
        std::fs::read(rebuilt(&flag_out, &input)).expect("the flag wins"),
        b"from env\n"
    );
}

#[test]
fn config_file_then_env_then_flags() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("in.log");
    std::fs::write(&input, b"configured\n").expect("write");
    let (toml_out, env_out, flag_out) = (
        dir.path().join("toml-out"),
        dir.path().join("env-out"),
        dir.path().join("flag-out"),
    );
    let config = dir.path().join("stencil.toml");
    std::fs::write(&config, format!("[ship]\nonce = true\nout = {:?}\nbatch_lines = 10\ntags = [\"env:test\", \"team:a\"]\n", toml_out.display().to_string())).expect("write config");
    let run = |envs: &[(&str, &std::path::Path)], extra: &[&std::ffi::OsStr]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_stencil"));
        cmd.arg("--config").arg(&config).arg("ship");
        for (k, v) in envs {
            cmd.env(k, v);
        }
        cmd.args(extra).arg(&input).output().expect("runs")
    };
    assert!(run(&[], &[]).status.success());
    assert_eq!(
        std::fs::read(rebuilt(&toml_out, &input)).expect("the file chose --out"),
        b"configured\n"
    );
    assert!(run(&[("STENCIL_OUT", &env_out)], &[]).status.success());
    assert!(rebuilt(&env_out, &input).exists(), "env beats the file");
    assert!(run(
        &[("STENCIL_OUT", &env_out)],
        &["--out".as_ref(), flag_out.as_os_str()]
    )
    .status
    .success());
    assert!(rebuilt(&flag_out, &input).exists(), "the flag beats env");

    std::fs::write(&config, "[ship]\nbatch_linez = 3\n").expect("write bad config");
    let out = run(&[], &["--once".as_ref()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown key `ship.batch_linez`") && err.contains("batch_lines"),
        "{err}"
    );

    // Several endpoints as `endpoints = [...]`, one as `endpoint = "..."`: both reach --endpoint, and
    // each URL is checked.
    for (text, bad) in [
        (
            "endpoints = [\"http://127.0.0.1:9\", \"ftp://second\"]",
            "ftp://second",
        ),
        ("endpoint = \"ftp://only\"", "ftp://only"),
    ] {
        std::fs::write(&config, format!("[ship]\napi_key = \"k\"\n{text}\n")).expect("write");
        let out = run(&[], &["--once".as_ref()]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("--endpoint \"{bad}\"")), "{err}");
    }

    // JSON documents with their message anywhere need the extensions: refused on the v3 wire, with the
    // key that asked for them.
    std::fs::write(&config, "[ship]\napi_key = \"k\"\njson_documents = true\n").expect("write");
    let out = run(&[], &["--once".as_ref(), "--wire".as_ref(), "v3".as_ref()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("json_documents") && err.contains("--wire auto"),
        "{err}"
    );
}

#[test]
fn the_readme_sample_round_trips() {
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/sample.log");
    let dir = tempfile::tempdir().expect("tempdir");
    let summary = ship(dir.path(), std::slice::from_ref(&sample));
    assert_eq!(
        std::fs::read(rebuilt(dir.path(), &sample)).expect("rebuilt"),
        std::fs::read(&sample).expect("sample")
    );
    assert_eq!(summary["lines"], 60);
}

#[test]
fn intake_reads_its_config_table() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("stencil.toml");
    std::fs::write(
        &config,
        "[intake]\napi_keys = [\"a\", \"b\"]\nlisten = \"256.0.0.1:1\"\nmax_streams = 8\n",
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_stencil"))
        .arg("--config")
        .arg(&config)
        .arg("intake")
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    // The values reached the intake (it tried the configured address), and no flag was refused.
    assert!(err.contains("cannot listen on 256.0.0.1:1"), "{err}");
}
