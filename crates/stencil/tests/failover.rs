//! Several endpoints through real processes: an agent following two files with two intakes as its
//! endpoints. Its streams spread over both; when one intake dies, every stream moves to the other and
//! nothing is lost; when the dead intake comes back on its address, the agent's probe marks it up again
//! (`/ready` shows each endpoint).

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

fn intake(port: u16, out: &Path) -> common::Reaped {
    let mut command = Command::new(env!("CARGO_BIN_EXE_stencil"));
    command
        .args(["intake", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--api-key", "k1", "--out"])
        .arg(out);
    common::spawn_intake(command).0
}

fn append(path: &Path, from: usize, to: usize) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open");
    for i in from..to {
        writeln!(f, "{} line {i:05}", path.display()).expect("append");
    }
}

/// `/ready`'s endpoints: (url, up, streams).
fn endpoints(metrics: u16) -> Vec<(String, bool, u64)> {
    let Some(resp) = common::http_get(metrics, "/ready") else {
        return Vec::new();
    };
    let Some(body) = resp.split("\r\n\r\n").nth(1) else {
        return Vec::new();
    };
    let Ok(json) = serde_json::from_str::<serde_json::Value>(body) else {
        return Vec::new();
    };
    json["endpoints"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|e| {
                    (
                        e["url"].as_str().unwrap_or_default().to_owned(),
                        e["up"].as_bool().unwrap_or(false),
                        e["streams"].as_u64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn streams_spread_fail_over_and_a_recovered_endpoint_is_used_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (port_a, port_b, metrics) = (
        common::free_port(),
        common::free_port(),
        common::free_port(),
    );
    let (out_a, out_b) = (dir.path().join("out-a"), dir.path().join("out-b"));
    let mut a = intake(port_a, &out_a);
    let mut b = intake(port_b, &out_b);
    let files = [dir.path().join("one.log"), dir.path().join("two.log")];
    for f in &files {
        append(f, 0, 100);
    }
    let url_a = format!("http://127.0.0.1:{port_a}");
    let mut agent = Command::new(env!("CARGO_BIN_EXE_stencil"))
        .args(["ship", "--streams", "2", "--batch-wait-ms", "50"])
        .args(["--endpoint", &url_a])
        .args(["--endpoint", &format!("http://127.0.0.1:{port_b}")])
        .args([
            "--api-key",
            "k1",
            "--metrics-listen",
            &format!("127.0.0.1:{metrics}"),
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(&files)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ship runs");
    // Two pipelines, two endpoints: one stream on each.
    common::wait_for(|| {
        let e = endpoints(metrics);
        e.len() == 2 && e.iter().all(|(_, up, streams)| *up && *streams == 1)
    });
    // Intake A dies: its stream moves to B, and the lines written meanwhile arrive there.
    let _ = a.kill();
    let _ = a.wait();
    for f in &files {
        append(f, 100, 200);
    }
    common::wait_for(|| {
        let e = endpoints(metrics);
        e.len() == 2 && !e[0].1 && e[1].2 == 2
    });
    let lines_in = |out: &Path, f: &Path| -> Vec<String> {
        std::fs::read_to_string(common::rebuilt_path(out, f))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    };
    let all_arrived = |upto: usize| {
        files.iter().all(|f| {
            let mut got = lines_in(&out_a, f);
            got.extend(lines_in(&out_b, f));
            (0..upto).all(|i| got.contains(&format!("{} line {i:05}", f.display())))
        })
    };
    common::wait_for(|| all_arrived(200));
    // A comes back on its address: the probe marks it up again.
    let mut a = intake(port_a, &out_a);
    common::wait_for(|| {
        let e = endpoints(metrics);
        e.len() == 2 && e[0].0 == url_a && e[0].1
    });
    for f in &files {
        append(f, 200, 300);
    }
    common::wait_for(|| all_arrived(300));
    common::sigterm_and_wait(&mut agent);
    common::sigterm_and_wait(&mut a);
    common::sigterm_and_wait(&mut b);
}
