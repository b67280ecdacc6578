//! The intake as a fleet runs it (#11 item 5): configured by `STENCIL_INTAKE_*` environment variables
//! alone, with a files layout that keeps hosts with the same paths apart, and an API key file that is
//! read again on SIGHUP (a key added without a restart).

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

/// Ships `file` once as host `host` with `key`; returns whether it succeeded, and stderr.
fn ship(addr: &str, file: &Path, host: &str, key: &str) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_stencil"))
        .args([
            "ship",
            "--once",
            "--stall-timeout-secs",
            "5",
            "--hostname",
            host,
            "--endpoint",
            &format!("http://{addr}"),
            "--api-key",
            key,
        ])
        .arg(file)
        .stdout(Stdio::null())
        .output()
        .expect("ship runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn environment_layout_and_key_reload() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = std::fs::canonicalize(dir.path()).expect("abs");
    let log = root.join("syslog");
    std::fs::write(&log, "same path, line 1\nsame path, line 2\n").expect("write");
    let keys = root.join("keys");
    std::fs::write(&keys, "# fleet keys\nk1\n").expect("write keys");
    let out = root.join("out");
    let mut command = Command::new(env!("CARGO_BIN_EXE_stencil"));
    command
        .arg("intake")
        .env("STENCIL_INTAKE_LISTEN", "127.0.0.1:0")
        .env("STENCIL_INTAKE_OUT", &out)
        .env("STENCIL_INTAKE_OUT_LAYOUT", "{host}/{path}")
        .env("STENCIL_INTAKE_API_KEY_FILE", &keys);
    let (mut intake, addr) = common::spawn_intake(command);

    let (ok, stderr) = ship(&addr, &log, "web-a", "k1");
    assert!(ok, "{stderr}");
    let rel = log.strip_prefix("/").expect("absolute");
    assert_eq!(
        std::fs::read(out.join("web-a").join(rel)).expect("host a's file"),
        std::fs::read(&log).expect("source")
    );

    // k2 is not in the file yet: refused.
    let (ok, stderr) = ship(&addr, &log, "web-b", "k2");
    assert!(!ok && stderr.contains("API key"), "{stderr}");
    assert!(!out.join("web-b").exists());

    // Added to the file, and the intake told: accepted, without a restart.
    std::fs::write(&keys, "k1\nk2\n").expect("rewrite keys");
    let status = Command::new("kill")
        .args(["-HUP", &intake.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    common::wait_for(|| ship(&addr, &log, "web-b", "k2").0);
    assert_eq!(
        std::fs::read(out.join("web-b").join(rel)).expect("host b's file"),
        std::fs::read(&log).expect("source"),
        "the same path from another host is its own file"
    );
    assert_eq!(
        std::fs::read(out.join("web-a").join(rel)).expect("host a's file"),
        std::fs::read(&log).expect("source"),
        "host a's file is untouched"
    );
    common::sigterm_and_wait(&mut intake);
}
