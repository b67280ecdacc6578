//! `stencil ship` never hangs (#16 items 11 and 12): with `--once`, an error that will not heal (a
//! refused API key, an intake that cannot be reached) ends the run with a clear message and a non-zero
//! exit after a bounded time; in follow mode, SIGTERM with the intake down ends within
//! `--shutdown-timeout-secs`, reporting the unacked lines, and a second signal exits at once.

mod common;

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A loopback address where nothing listens.
fn dead_endpoint() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    format!("http://{addr}")
}

fn ship(args: &[&str], input: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_stencil"))
        .arg("ship")
        .args(args)
        .arg(input)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts")
}

/// Waits for the child at most `limit`; returns its status, stderr and how long it took.
fn finish_within(mut child: Child, limit: Duration) -> (ExitStatus, String, Duration) {
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("stderr");
    (status, stderr, started.elapsed())
}

fn input(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("app.log");
    let text: String = (0..200).map(|i| format!("line {i}\n")).collect();
    std::fs::write(&path, text).expect("write");
    path
}

#[test]
fn once_with_a_refused_api_key_ends_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut intake, addr) = common::start_intake(&dir.path().join("out"), &[]);
    let child = ship(
        &[
            "--once",
            "--endpoint",
            &format!("http://{addr}"),
            "--api-key",
            "not-the-key",
        ],
        &input(dir.path()),
    );
    let (status, stderr, _) = finish_within(child, Duration::from_secs(30));
    assert!(!status.success());
    assert!(stderr.contains("refused the API key"), "{stderr}");
    assert!(stderr.contains("200 lines were not acked"), "{stderr}");
    common::sigterm_and_wait(&mut intake);
}

#[test]
fn once_with_an_unreachable_intake_gives_up_after_the_stall_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let child = ship(
        &[
            "--once",
            "--stall-timeout-secs",
            "2",
            "--endpoint",
            &dead_endpoint(),
            "--api-key",
            "k",
            "--data-dir",
            &dir.path().join("data").to_string_lossy(),
        ],
        &input(dir.path()),
    );
    let (status, stderr, took) = finish_within(child, Duration::from_secs(30));
    assert!(!status.success());
    assert!(stderr.contains("nothing was acked for 2 s"), "{stderr}");
    assert!(took >= Duration::from_secs(2), "{took:?}");
}

#[test]
fn sigterm_with_the_intake_down_ends_within_the_shutdown_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let child = ship(
        &[
            "--shutdown-timeout-secs",
            "2",
            "--batch-wait-ms",
            "100",
            "--endpoint",
            &dead_endpoint(),
            "--api-key",
            "k",
            "--data-dir",
            &dir.path().join("data").to_string_lossy(),
        ],
        &input(dir.path()),
    );
    std::thread::sleep(Duration::from_millis(1500));
    signal(&child, "-TERM");
    let (status, stderr, took) = finish_within(child, Duration::from_secs(20));
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("shutdown timeout ran out"), "{stderr}");
    assert!(stderr.contains("200 lines were not acked"), "{stderr}");
    assert!(took >= Duration::from_secs(2), "{took:?}");
}

#[test]
fn a_second_signal_exits_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let child = ship(
        &[
            "--shutdown-timeout-secs",
            "600",
            "--endpoint",
            &dead_endpoint(),
            "--api-key",
            "k",
        ],
        &input(dir.path()),
    );
    std::thread::sleep(Duration::from_millis(1000));
    signal(&child, "-TERM");
    std::thread::sleep(Duration::from_millis(300));
    signal(&child, "-INT");
    let (status, stderr, _) = finish_within(child, Duration::from_secs(10));
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("second signal"), "{stderr}");
}

fn signal(child: &Child, which: &str) {
    assert!(Command::new("kill")
        .args([which, &child.id().to_string()])
        .status()
        .expect("kill")
        .success());
}
