//! `stencil ship` following files: appends, a new file matching the glob, rotation by rename,
//! copytruncate, and a last line without a newline; then SIGTERM. The embedded intake's output must be
//! every byte written, in order, with nothing doubled.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn append(path: &std::path::Path, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open for append");
    f.write_all(bytes).expect("append");
}

fn rebuilt(out: &std::path::Path, source: &std::path::Path) -> Vec<u8> {
    std::fs::read(common::rebuilt_path(out, source)).unwrap_or_default()
}

#[test]
fn follows_appends_new_files_rotation_and_truncation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = std::fs::canonicalize(dir.path()).expect("abs").join("logs");
    std::fs::create_dir_all(&logs).expect("mkdir");
    let out = dir.path().join("out");
    let app = logs.join("app.log");
    let other = logs.join("other.log");
    append(&app, b"one\ntwo\r\n");

    let mut child = common::Reaped(
        Command::new(env!("CARGO_BIN_EXE_stencil"))
            .args([
                "ship",
                "--checkpoint-interval-ms",
                "50",
                "--batch-wait-ms",
                "100",
                "--data-dir",
            ])
            .arg(dir.path().join("data"))
            .arg("--out")
            .arg(&out)
            .arg(format!("{}/*.log", logs.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starts"),
    );

    common::wait_for(|| rebuilt(&out, &app) == b"one\ntwo\r\n");
    append(&app, b"three\n");
    append(&other, b"other 1\n");
    common::wait_for(|| {
        rebuilt(&out, &other) == b"other 1\n" && rebuilt(&out, &app).ends_with(b"three\n")
    });

    // Rotation by rename: the old file is read to its end, the new one from its start.
    append(&app, b"four, last of the old file\n");
    std::fs::rename(&app, logs.join("app.log.1")).expect("rotate");
    append(&app, b"new file 1\n");
    // copytruncate on the other file.
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&other)
        .expect("truncate");
    std::thread::sleep(Duration::from_millis(300));
    append(&other, b"after truncate\n");
    common::wait_for(|| {
        rebuilt(&out, &app).ends_with(b"new file 1\n")
            && rebuilt(&out, &other).ends_with(b"after truncate\n")
    });

    // A last line without a newline goes out after the idle timeout, once.
    append(&app, b"partial tail");
    std::thread::sleep(Duration::from_millis(1_500));
    common::sigterm_and_wait(&mut child);

    assert_eq!(
        String::from_utf8_lossy(&rebuilt(&out, &app)),
        "one\ntwo\r\nthree\nfour, last of the old file\nnew file 1\npartial tail"
    );
    assert_eq!(
        String::from_utf8_lossy(&rebuilt(&out, &other)),
        "other 1\nafter truncate\n"
    );
}

/// The sum of every series of `family` in a Prometheus text page.
fn sum_of(metrics: &str, family: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| {
            l.strip_prefix(family)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn agent_serves_metrics_and_health() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Two files over two pipelines: the counters of both must add up.
    let logs: Vec<_> = (0..6)
        .map(|i| dir.path().join(format!("f{i}.log")))
        .collect();
    for (i, log) in logs.iter().enumerate() {
        append(
            log,
            format!("hello {i} 1\nhello {i} 2\nhello {i} 3\n").as_bytes(),
        );
    }
    let port = common::free_port();
    let mut child = common::Reaped(
        Command::new(env!("CARGO_BIN_EXE_stencil"))
            .args([
                "ship",
                "--streams",
                "2",
                "--batch-wait-ms",
                "50",
                "--metrics-listen",
                &format!("127.0.0.1:{port}"),
                "--out",
            ])
            .arg(dir.path().join("out"))
            .arg(format!("{}/*.log", dir.path().display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starts"),
    );
    common::wait_for(|| {
        common::http_get(port, "/health")
            .is_some_and(|h| h.contains("200 OK") && h.contains("\"stream\":\"active\""))
    });
    common::wait_for(|| {
        common::http_get(port, "/metrics")
            .is_some_and(|m| sum_of(&m, "stencil_agent_logs_acked_total") == 18.0)
    });
    let metrics = common::http_get(port, "/metrics").expect("metrics");
    // Each pipeline has its own series (exported from its start), and they add up.
    for pipeline in ["0", "1"] {
        assert!(
            metrics.contains(&format!(
                "stencil_agent_logs_acked_total{{pipeline=\"{pipeline}\"}}"
            )),
            "pipeline {pipeline} missing:\n{metrics}"
        );
    }
    assert!(sum_of(&metrics, "stencil_agent_payloads_acked_total") >= 2.0);
    for series in [
        "stencil_agent_inflight_payloads{pipeline=",
        "stencil_agent_stream_state{state=\"active\",pipeline=\"0\"} 1",
        // Exported at 0 from the start, so that an alert on them works before the first incident.
        "stencil_agent_logs_dropped_total{reason=\"too_large\"} 0",
        "stencil_agent_logs_dropped_total{reason=\"poison\"} 0",
        "stencil_agent_files_skipped_total{reason=\"permission_denied\"} 0",
        "stencil_build_info{",
        "command=\"ship\"",
    ] {
        assert!(metrics.contains(series), "missing {series}:\n{metrics}");
    }
    // Per source: lines and bytes read, files watched, lag.
    let source = format!("{}/*.log", dir.path().display());
    assert_eq!(
        sum_of(
            &metrics,
            &format!("stencil_agent_source_lines_total{{source=\"{source}\"}}")
        ),
        18.0
    );
    let bytes: usize = logs
        .iter()
        .map(|l| std::fs::metadata(l).map_or(0, |m| m.len() as usize))
        .sum();
    assert_eq!(
        sum_of(
            &metrics,
            &format!("stencil_agent_source_bytes_total{{source=\"{source}\"}}")
        ),
        bytes as f64
    );
    assert_eq!(sum_of(&metrics, "stencil_agent_source_files_watched"), 6.0);
    assert_eq!(sum_of(&metrics, "stencil_agent_source_lag_bytes"), 0.0);
    // Every family has its HELP and TYPE lines.
    let families: std::collections::BTreeSet<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("stencil_"))
        .filter_map(|l| l.split(['{', ' ']).next())
        // A histogram's or summary's series share its family's name.
        .map(|name| {
            ["_count", "_sum", "_bucket"]
                .iter()
                .filter_map(|suffix| name.strip_suffix(suffix))
                .find(|base| metrics.contains(&format!("# TYPE {base} ")))
                .unwrap_or(name)
        })
        .collect();
    assert!(families.len() > 20, "{families:?}");
    for family in families {
        assert!(
            metrics.contains(&format!("# HELP {family} ")),
            "no HELP for {family}"
        );
        assert!(
            metrics.contains(&format!("# TYPE {family} ")),
            "no TYPE for {family}"
        );
    }
    // Readiness: every pipeline's stream is connected.
    common::wait_for(|| {
        common::http_get(port, "/ready")
            .is_some_and(|r| r.contains("200 OK") && r.contains("\"ready\":true"))
    });
    common::sigterm_and_wait(&mut child);
}

#[test]
fn tcp_lines_are_shipped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    let port = common::free_port();
    let mut child = common::Reaped(
        Command::new(env!("CARGO_BIN_EXE_stencil"))
            .args([
                "ship",
                "--batch-wait-ms",
                "50",
                "--tcp",
                &format!("127.0.0.1:{port}"),
                "--tcp-max-connections",
                "2",
                "--out",
            ])
            .arg(&out)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starts"),
    );
    let started = Instant::now();
    let mut conn = loop {
        match std::net::TcpStream::connect(("127.0.0.1", port)) {
            Ok(c) => break c,
            Err(_) if started.elapsed() < Duration::from_secs(10) => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(e) => panic!("the TCP input never listened: {e}"),
        }
    };
    conn.write_all(b"over tcp 1\nover tcp 2\r\n").expect("send");
    drop(conn);
    let unfiled = out.join("_unfiled.log");
    common::wait_for(|| std::fs::read(&unfiled).is_ok_and(|b| b == b"over tcp 1\nover tcp 2\r\n"));
    // Past --tcp-max-connections (2 here), a connection is closed at once; the open ones keep working.
    let held: Vec<std::net::TcpStream> = (0..2)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).expect("connects"))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut over = std::net::TcpStream::connect(("127.0.0.1", port)).expect("tcp connects");
    over.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut buf = [0u8; 1];
    let read = std::io::Read::read(&mut over, &mut buf);
    assert!(
        matches!(&read, Ok(0))
            || read
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "the third connection is closed by the agent, not left open: {read:?}"
    );
    for (i, mut conn) in held.into_iter().enumerate() {
        conn.write_all(format!("held {i}\n").as_bytes())
            .expect("send");
    }
    common::wait_for(|| {
        std::fs::read_to_string(&unfiled)
            .is_ok_and(|s| s.contains("held 0\n") && s.contains("held 1\n"))
    });
    common::sigterm_and_wait(&mut child);
}

/// `journalctl -f | stencil ship -`: lines from standard input are sent as they come (batches flush on
/// age), not when the input ends; at its end the run finishes gracefully and exits 0.
#[test]
fn stdin_is_streamed_and_its_end_ends_the_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    let mut child = common::Reaped(
        Command::new(env!("CARGO_BIN_EXE_stencil"))
            .args(["ship", "--batch-wait-ms", "100", "--out"])
            .arg(&out)
            .arg("-")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starts"),
    );
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(b"first from a pipe\nsecond\n")
        .expect("write");
    stdin.flush().expect("flush");
    let unfiled = out.join("_unfiled.log");
    // Arrives while standard input is still open.
    common::wait_for(|| std::fs::read(&unfiled).is_ok_and(|b| b == b"first from a pipe\nsecond\n"));
    stdin.write_all(b"third, then the end\n").expect("write");
    drop(stdin);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the end of stdin ends the run"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    assert_eq!(
        std::fs::read(&unfiled).expect("rebuilt"),
        b"first from a pipe\nsecond\nthird, then the end\n"
    );
}
