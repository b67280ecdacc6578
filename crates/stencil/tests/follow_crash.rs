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
        std::fs::read_to_string(
            dir.path()
                .join("out")
                .join(f.strip_prefix("/").expect("abs")),
        )
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
