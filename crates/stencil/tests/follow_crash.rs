//! Crash test in follow mode: a writer appends numbered lines to two files while the agent is killed
//! with SIGKILL at random moments, several times, and restarted with the same `--data-dir`. In the end
//! every number is present at the intake at least once and, per file, in order. The duplicate count is
//! printed.

mod common;

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn agent(dir: &std::path::Path, logs: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_stencil"))
        .args([
            "ship",
            "--batch-wait-ms",
            "20",
            "--checkpoint-interval-ms",
            "30",
            "--streams",
            "2",
            "--data-dir",
        ])
        .arg(dir.join("data"))
        .arg("--out")
        .arg(dir.join("out"))
        .arg(format!("{}/*.log", logs.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("agent starts")
}

/// A small deterministic PRNG for the kill moments.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn sigkill_at_random_moments_loses_no_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = std::fs::canonicalize(dir.path()).expect("abs").join("logs");
    std::fs::create_dir_all(&logs).expect("mkdir");
    let files = [logs.join("a.log"), logs.join("b.log")];
    let written = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (files, written, stop) = (files.clone(), written.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut handles: Vec<std::fs::File> = files
                .iter()
                .map(|f| {
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(f)
                        .expect("open")
                })
                .collect();
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                for h in handles.iter_mut() {
                    h.write_all(format!("line {n:08} of the crash test\n").as_bytes())
                        .expect("append");
                }
                n += 1;
                written.store(n, Ordering::SeqCst);
                std::thread::sleep(Duration::from_micros(300));
            }
        })
    };

    let mut seed = 0x2545_F491_4F6C_DD1D_u64;
    let mut child = agent(dir.path(), &logs);
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(300 + next(&mut seed) % 700));
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
        child = agent(dir.path(), &logs);
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    writer.join().expect("writer");
    let total = written.load(Ordering::SeqCst);

    // Wait until both files are fully delivered, then stop gracefully.
    let out = |f: &std::path::Path| {
        std::fs::read_to_string(common::rebuilt_path(&dir.path().join("out"), f))
            .unwrap_or_default()
    };
    let last = format!("line {:08} of the crash test", total - 1);
    let started = Instant::now();
    while !files.iter().all(|f| out(f).lines().any(|l| l == last)) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the last line never arrived"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    common::sigterm_and_wait(&mut child);

    let mut duplicates = 0;
    for f in &files {
        let text = out(f);
        let mut expected = 0u64;
        for line in text.lines() {
            let n: u64 = line[5..13].parse().expect("a numbered line");
            if n == expected {
                expected += 1;
            } else {
                assert!(
                    n < expected,
                    "{}: line {n} arrived before line {expected}",
                    f.display()
                );
                duplicates += 1;
            }
        }
        assert_eq!(expected, total, "{}: every line arrived", f.display());
    }
    eprintln!("crash test: {total} lines per file, 4 SIGKILLs, {duplicates} duplicates (replays of unacked data)");
}

/// Follow mode: the agent is killed mid-file, the file is rotated (renamed to `app.log.1`, which the glob
/// does not match) and a new `app.log` is written while it is down. The restarted agent reads the rest of
/// `app.log.1` from its checkpoint before the new file: nothing is lost.
#[test]
fn rotated_while_down_the_rest_is_read_before_the_new_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = std::fs::canonicalize(dir.path()).expect("abs").join("logs");
    std::fs::create_dir_all(&logs).expect("mkdir");
    let input = logs.join("app.log");
    let old: Vec<String> = (0..300_000)
        .map(|i| format!("{i:07} old request id={} ms={}", i * 31 % 10_007, i % 211))
        .collect();
    std::fs::write(&input, old.join("\n") + "\n").expect("write");
    let size = std::fs::metadata(&input).expect("stat").len();
    let offset = |dir: &std::path::Path| -> u64 {
        std::fs::read(dir.join("data/checkpoints.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| {
                // Checkpoints are keyed by source id; the path is inside.
                v["sources"].as_object()?.values().find_map(|s| {
                    (s["path"].as_str()? == input.to_string_lossy())
                        .then(|| s["offset"].as_u64())?
                })
            })
            .unwrap_or(0)
    };

    let mut first = agent(dir.path(), &logs);
    let started = Instant::now();
    loop {
        let o = offset(dir.path());
        if o > 0 && o < size {
            break;
        }
        assert!(
            o < size && started.elapsed() < Duration::from_secs(60),
            "could not catch the agent mid-file (offset {o} of {size})"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    first.kill().expect("SIGKILL");
    first.wait().expect("reaped");

    std::fs::rename(&input, logs.join("app.log.1")).expect("rotate");
    let new: Vec<String> = (0..500).map(|i| format!("{i:07} new line")).collect();
    std::fs::write(&input, new.join("\n") + "\n").expect("new file");

    let mut second = agent(dir.path(), &logs);
    let rebuilt_path = common::rebuilt_path(&dir.path().join("out"), &input);
    let last = new.last().expect("lines").clone();
    common::wait_for(|| {
        std::fs::read_to_string(&rebuilt_path).is_ok_and(|s| s.lines().any(|l| l == last))
    });
    common::sigterm_and_wait(&mut second);

    let rebuilt = std::fs::read_to_string(&rebuilt_path).expect("rebuilt");
    let expected: Vec<&String> = old.iter().chain(new.iter()).collect();
    let (next, extras) = common::in_order(rebuilt.lines(), &expected);
    for (_, line) in extras {
        assert!(old.iter().any(|l| l == line), "unexpected line {line:?}");
    }
    assert_eq!(
        next,
        expected.len(),
        "every old line, then every new one (stopped at {:?})",
        expected.get(next)
    );
}
