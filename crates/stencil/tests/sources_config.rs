//! Sources declared in the config file (#11): `[[ship.sources]]` with the Datadog Agent's keys, their
//! processing rules (exclude, include, mask, multi-line, automatic stack traces) and status, shipped by
//! a real agent process to a real intake whose JSON Lines output is checked record by record; typed
//! config errors; follow mode with `start_position = "end"`; shell completions and man pages.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

fn stencil() -> Command {
    Command::new(env!("CARGO_BIN_EXE_stencil"))
}

fn tags(record: &serde_json::Value) -> Vec<String> {
    record["tags"]
        .as_array()
        .map(|t| {
            t.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn two_sources_with_rules_yield_exactly_the_expected_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = std::fs::canonicalize(dir.path()).expect("abs");
    let app = root.join("app.log");
    std::fs::write(
        &app,
        "2024-01-01 12:00:00 INFO start\n\
         2024-01-01 12:00:01 ERROR payment failed\n\
         java.lang.IllegalStateException: card declined\n\
         \tat com.shop.Pay.charge(Pay.java:42)\n\
         \tat com.shop.Main.main(Main.java:7)\n\
         2024-01-01 12:00:02 INFO GET /health 200\n\
         2024-01-01 12:00:03 WARN card=4111-1111-1111-1234 retried\n",
    )
    .expect("write app.log");
    let worker = root.join("worker.log");
    std::fs::write(
        &worker,
        "preamble line\n[job 1] begin\n  step a\n  step b\n[job 2] begin\ndebug noise\n[job 3] begin\n",
    )
    .expect("write worker.log");
    let py = root.join("py.log");
    std::fs::write(
        &py,
        "2024-01-01 ERROR crashed\nTraceback (most recent call last):\n  File \"x.py\", line 3, in <module>\n    f()\nValueError: bad\n2024-01-01 INFO after\n",
    )
    .expect("write py.log");
    let config = root.join("stencil.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[ship]
once = true
batch_wait = "200ms"
batch_bytes = "1MiB"
hostname = "host-a"
tags = ["env:test"]

[[ship.sources]]
path = "{app}"
service = "shop"
source = "java"
tags = ["team:pay"]
detect_status = true
auto_multi_line_detection = true

  [[ship.sources.log_processing_rules]]
  type = "exclude_at_match"
  name = "drop_health"
  pattern = "GET /health"

  [[ship.sources.log_processing_rules]]
  type = "mask_sequences"
  name = "cards"
  pattern = '\d{{4}}-\d{{4}}-\d{{4}}-(\d{{4}})'
  replace_placeholder = "[card ending $1]"

[[ship.sources]]
path = "{root}/w*.log"
service = "worker"
status = "warn"
tags = "role:batch,tier:2"

  [[ship.sources.log_processing_rules]]
  type = "multi_line"
  name = "jobs"
  pattern = '^\[job'

  [[ship.sources.log_processing_rules]]
  type = "include_at_match"
  name = "jobs_only"
  pattern = 'job'

[[ship.sources]]
path = "{py}"
service = "py"
auto_multi_line_detection = true
"#,
            app = app.display(),
            root = root.display(),
            py = py.display(),
        ),
    )
    .expect("write config");
    let jsonl = root.join("out.jsonl");
    let (mut intake, addr) = common::start_jsonl_intake(&jsonl);
    let out = stencil()
        .arg("--config")
        .arg(&config)
        .args([
            "ship",
            "--endpoint",
            &format!("http://{addr}"),
            "--api-key",
            "k1",
        ])
        .stdout(Stdio::null())
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("shipped 20 lines (8 logs, 2 excluded by rules)"),
        "{stderr}"
    );
    common::sigterm_and_wait(&mut intake);

    let got = common::jsonl_records(&jsonl);
    let view: Vec<(String, String, String)> = got
        .iter()
        .map(|r| {
            (
                r["service"].as_str().unwrap_or("").to_owned(),
                r["status"].as_str().unwrap_or("").to_owned(),
                r["message"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let mut view_sorted = view.clone();
    view_sorted.sort();
    let s = |a: &str, b: &str, c: &str| (a.to_owned(), b.to_owned(), c.to_owned());
    let mut expected = vec![
        s("shop", "info", "2024-01-01 12:00:00 INFO start"),
        s(
            "shop",
            "error",
            "2024-01-01 12:00:01 ERROR payment failed\njava.lang.IllegalStateException: card declined\n\tat com.shop.Pay.charge(Pay.java:42)\n\tat com.shop.Main.main(Main.java:7)",
        ),
        s("shop", "warning", "2024-01-01 12:00:03 WARN card=[card ending 1234] retried"),
        s("worker", "warning", "[job 1] begin\n  step a\n  step b"),
        // `debug noise` does not start a job: it joins job 2, and the include rule keeps the event.
        s("worker", "warning", "[job 2] begin\ndebug noise"),
        s("worker", "warning", "[job 3] begin"),
        s(
            "py",
            "info",
            "2024-01-01 ERROR crashed\nTraceback (most recent call last):\n  File \"x.py\", line 3, in <module>\n    f()\nValueError: bad",
        ),
        s("py", "info", "2024-01-01 INFO after"),
    ];
    expected.sort();
    // Eight events from the files, and nothing else (`preamble` has no job: the include rule dropped it).
    assert_eq!(view_sorted, expected, "{view:#?}");
    for r in &got {
        let t = tags(r);
        assert!(t.contains(&"env:test".to_owned()), "{t:?}");
        assert!(t.contains(&"hostname:host-a".to_owned()), "{t:?}");
        match r["service"].as_str() {
            Some("shop") => {
                assert!(t.contains(&"ddsource:java".to_owned()), "{t:?}");
                assert!(t.contains(&"team:pay".to_owned()), "{t:?}");
                assert!(t.contains(&format!("filename:{}", app.display())), "{t:?}");
            }
            Some("worker") => {
                assert!(t.contains(&"role:batch".to_owned()), "{t:?}");
                assert!(t.contains(&"tier:2".to_owned()), "{t:?}");
                assert!(!t.iter().any(|x| x.starts_with("ddsource:")), "{t:?}");
            }
            _ => {}
        }
    }
}

#[test]
fn joined_events_rebuild_the_file_byte_for_byte() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = std::fs::canonicalize(dir.path()).expect("abs");
    let log = root.join("crlf.log");
    // CRLF lines, a trace, and a last line without a newline: joined events keep every terminator.
    let text = b"2024 INFO a\r\n2024 ERROR b\r\n\tat x.y(Z.java:1)\r\n\tat x.z(Z.java:2)\r\n2024 INFO c\n  tail";
    std::fs::write(&log, text).expect("write");
    let config = root.join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[ship]\nonce = true\nout = {:?}\n[[ship.sources]]\npath = {:?}\nauto_multi_line_detection = true\n",
            root.join("out").display().to_string(),
            log.display().to_string()
        ),
    )
    .expect("config");
    let out = stencil()
        .arg("--config")
        .arg(&config)
        .arg("ship")
        .stdout(Stdio::null())
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("shipped 6 lines (3 logs)"), "{stderr}");
    let rebuilt =
        std::fs::read(common::rebuilt_path(&root.join("out"), &log)).expect("rebuilt file");
    assert_eq!(rebuilt, text);
}

/// Runs `stencil --config FILE ship` on `text` and returns its stderr (it must fail).
fn refused(text: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("a.log");
    std::fs::write(&log, "x\n").expect("write");
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, text.replace("LOG", &log.display().to_string())).expect("write");
    let out = stencil()
        .arg("--config")
        .arg(&config)
        .args(["ship", "--once", "--out"])
        .arg(dir.path().join("out"))
        .stdout(Stdio::null())
        .output()
        .expect("runs");
    assert!(!out.status.success(), "accepted: {text}");
    assert!(
        !dir.path().join("out").exists(),
        "nothing may be shipped before the config is checked: {text}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        stderr.contains("bad.toml"),
        "the error names the file: {stderr}"
    );
    stderr
}

#[test]
fn config_errors_name_the_file_the_key_and_what_was_expected() {
    let e = refused("[ship]\n[[ship.sources]]\npath = \"LOG\"\nservise = \"x\"\n");
    assert!(
        e.contains("ship.sources[0]") && e.contains("unknown field `servise`"),
        "{e}"
    );
    let e = refused(
        "[ship]\n[[ship.sources]]\npath = \"LOG\"\n[[ship.sources.log_processing_rules]]\ntype = \"exclude_at_match\"\nname = \"x\"\npattern = \"(\"\n",
    );
    assert!(
        e.contains("ship.sources[0]")
            && e.contains("log_processing_rules[0]")
            && e.contains("regex"),
        "{e}"
    );
    let e = refused("[ship]\nbatch_bytes = \"5 parsecs\"\npaths = [\"LOG\"]\n");
    assert!(e.contains("ship.batch_bytes") && e.contains("size"), "{e}");
    let e = refused("[ship]\nbatch_wait = \"5\"\npaths = [\"LOG\"]\n");
    assert!(
        e.contains("ship.batch_wait") && e.contains("no unit"),
        "{e}"
    );
    let e = refused("[ship]\nbatch_lines = \"many\"\npaths = [\"LOG\"]\n");
    assert!(
        e.contains("ship.batch_lines") && e.contains("invalid type"),
        "{e}"
    );
    // Nonsense values are refused at start, wherever they come from.
    let e = refused("[ship]\nstreams = 0\npaths = [\"LOG\"]\n");
    assert!(
        e.contains("ship.streams") && e.contains("between 1 and"),
        "{e}"
    );
    let e = refused("[ship]\nstate_budget = \"900GiB\"\npaths = [\"LOG\"]\n");
    assert!(
        e.contains("ship.state_budget") && e.contains("between"),
        "{e}"
    );
    let e = refused("[ship]\nbatch_bytes = 0\npaths = [\"LOG\"]\n");
    assert!(
        e.contains("ship.batch_bytes") && e.contains("between 256"),
        "{e}"
    );
    let e = refused("[ship]\n[[ship.sources]]\npath = \"LOG\"\nstdin = true\n");
    assert!(e.contains("exactly one input"), "{e}");
    let e = refused("[ship]\n[[ship.sources]]\npath = \"LOG\"\nstatus = \"loud\"\n");
    assert!(e.contains("status") && e.contains("unknown status"), "{e}");
    // A value that looks like a flag stays a value: it is never put on a command line.
    let e = refused("[ship]\nservice = \"--once\"\nbatch_lines = -5\npaths = [\"LOG\"]\n");
    assert!(e.contains("ship.batch_lines"), "{e}");
}

#[test]
fn start_position_end_skips_what_was_there_and_reads_what_comes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = std::fs::canonicalize(dir.path()).expect("abs");
    let old = root.join("old.log");
    std::fs::write(&old, "history 1\nhistory 2\n").expect("write");
    let out = root.join("out");
    let config = root.join("f.toml");
    std::fs::write(
        &config,
        format!(
            "[ship]\nout = {:?}\nbatch_wait = \"100ms\"\n[[ship.sources]]\npath = \"{}/*.log\"\nstart_position = \"end\"\n",
            out.display().to_string(),
            root.display()
        ),
    )
    .expect("config");
    let mut child = stencil()
        .arg("--config")
        .arg(&config)
        .arg("ship")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starts");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&old)
            .expect("open");
        f.write_all(b"fresh 3\n").expect("append");
    }
    // A file created after the start is read from its beginning.
    let new = root.join("new.log");
    std::fs::write(&new, "new 1\nnew 2\n").expect("write");
    let rebuilt = |p: &Path| std::fs::read(common::rebuilt_path(&out, p)).unwrap_or_default();
    common::wait_for(|| rebuilt(&old) == b"fresh 3\n" && rebuilt(&new) == b"new 1\nnew 2\n");
    common::sigterm_and_wait(&mut child);
    assert_eq!(rebuilt(&old), b"fresh 3\n");
}

#[test]
fn completions_and_man_pages() {
    let out = stencil()
        .args(["completions", "bash"])
        .output()
        .expect("runs");
    assert!(out.status.success());
    let script = String::from_utf8(out.stdout).expect("utf-8");
    assert!(
        script.contains("--batch-lines"),
        "the script knows the flags"
    );
    // bash sources it and registers a completion for `stencil`.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("stencil.bash");
    std::fs::write(&path, &script).expect("write");
    let check = Command::new("bash")
        .arg("-c")
        .arg(format!("source {} && complete -p stencil", path.display()))
        .output()
        .expect("bash runs");
    assert!(
        check.status.success() && String::from_utf8_lossy(&check.stdout).contains("stencil"),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let man = stencil()
        .args(["man", "--dir"])
        .arg(dir.path())
        .output()
        .expect("runs");
    assert!(man.status.success());
    let page = std::fs::read_to_string(dir.path().join("stencil-ship.1")).expect("ship page");
    assert!(
        page.contains(".TH") && page.contains("batch\\-lines"),
        "{page}"
    );
    assert!(dir.path().join("stencil-intake.1").exists());
}

/// `--log-format json`: every line on stderr is one JSON object, the summary included, with each
/// top-level key once; and a rerun of the quick start rebuilds the same file instead of appending.
#[test]
fn json_diagnostics_only_and_reruns_rebuild_anew() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("a.log");
    std::fs::write(&log, "one\ntwo\n").expect("write");
    let out = dir.path().join("out");
    for run in 0..2 {
        let result = stencil()
            .args(["--log-format", "json", "ship", "--once", "--out"])
            .arg(&out)
            .arg(&log)
            .stdout(Stdio::null())
            .output()
            .expect("runs");
        assert!(result.status.success());
        let stderr = String::from_utf8(result.stderr).expect("utf-8");
        assert!(stderr.contains("shipped 2 lines"), "{stderr}");
        for line in stderr.lines() {
            let v: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            assert!(v.is_object(), "{line}");
            for key in ["\"timestamp\":", "\"level\":", "\"target\":"] {
                assert_eq!(line.matches(key).count(), 1, "{key} in {line}");
            }
            assert!(!line.contains('\u{1b}'), "no colours: {line}");
        }
        assert_eq!(
            std::fs::read(common::rebuilt_path(&out, &log)).expect("rebuilt"),
            b"one\ntwo\n",
            "run {run}"
        );
    }
}
