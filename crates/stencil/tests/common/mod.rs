//! Helpers for the tests that run `stencil` as a process.

#![allow(dead_code)]

use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A child process that is killed and reaped when dropped, so that a test that fails half-way leaves no
/// intake or follower running. It derefs to the [`Child`].
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl std::ops::Deref for Reaped {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Reaped {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

/// Where the files sink under `out` writes the lines of `source` (an absolute path, or one that
/// canonicalizes to it).
pub fn rebuilt_path(out: &std::path::Path, source: &std::path::Path) -> std::path::PathBuf {
    let abs = std::fs::canonicalize(source).unwrap_or_else(|_| source.to_owned());
    out.join(abs.strip_prefix("/").expect("absolute path"))
}

/// `stencil intake` on a free loopback port with API key `k1`; the caller adds the sink and any flag.
pub fn intake_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_stencil"));
    command.args(["intake", "--listen", "127.0.0.1:0", "--api-key", "k1"]);
    command
}

/// Starts `stencil intake` on a free loopback port with API key `k1`, writing files under `out`, plus
/// `extra` flags; returns the child and the address it printed.
pub fn start_intake(out: &std::path::Path, extra: &[&str]) -> (Reaped, String) {
    let mut command = intake_command();
    command.arg("--out").arg(out).args(extra);
    spawn_intake(command)
}

/// Starts an intake writing JSON Lines to `jsonl`.
pub fn start_jsonl_intake(jsonl: &std::path::Path) -> (Reaped, String) {
    let mut command = intake_command();
    command.arg("--jsonl").arg(jsonl);
    spawn_intake(command)
}

/// The records of a JSON Lines file (none when it does not exist).
pub fn jsonl_records(jsonl: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(jsonl)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON object per line"))
        .collect()
}

/// Spawns an intake `command` (which must pass `--listen 127.0.0.1:0`) and returns the child and the
/// address it printed on stderr.
pub fn spawn_intake(mut command: Command) -> (Reaped, String) {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let mut child = command
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("stencil binary runs");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("stencil intake: listening on ") {
                let _ = tx.send(addr.to_string());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the intake prints its address");
    (Reaped(child), addr)
}

/// Sends SIGTERM and asserts a graceful exit (status 0).
pub fn sigterm_and_wait(child: &mut Child) {
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs")
        .success());
    let status = child.wait().expect("exits");
    assert!(status.success(), "graceful exit: {status:?}");
}

/// Polls `done` every 50 ms; fails after 20 s.
pub fn wait_for(mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < Duration::from_secs(20), "timed out");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Walks the rebuilt `got` lines against `expected`: a line equal to the next expected one advances;
/// any other line is an extra, returned with how many expected lines had been seen before it. Returns
/// how many expected lines were found in order, and the extras.
pub fn in_order<'a, S: AsRef<str>>(
    got: impl IntoIterator<Item = &'a str>,
    expected: &[S],
) -> (usize, Vec<(usize, &'a str)>) {
    let mut next = 0;
    let mut extras = Vec::new();
    for line in got {
        if next < expected.len() && line == expected[next].as_ref() {
            next += 1;
        } else {
            extras.push((next, line));
        }
    }
    (next, extras)
}

/// `GET path` on a local HTTP port (the metrics endpoints); the whole response, or `None` when the port
/// does not answer.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// A loopback port that was free a moment ago (for servers that must keep their address across a
/// restart).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
