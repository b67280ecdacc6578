//! Crash safety: `stencil ship --once --data-dir` is killed with SIGKILL mid-run, then run again. No line
//! is lost, and the only duplicates are lines that were written but not yet acked when the process died.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn ship(dir: &std::path::Path, input: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stencil"));
    cmd.args([
        "ship",
        "--once",
        "--batch-lines",
        "200",
        "--checkpoint-interval-ms",
        "20",
        "--data-dir",
    ])
    .arg(dir.join("data"))
    .arg("--out")
    .arg(dir.join("out"))
    .arg(input)
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    cmd
}

fn saved_offset(dir: &std::path::Path) -> u64 {
    std::fs::read(dir.join("data/checkpoints.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| {
            v["sources"]
                .as_object()
                .and_then(|m| m.values().next().and_then(|s| s["offset"].as_u64()))
        })
        .unwrap_or(0)
}

/// Runs `ship` on `input` (`size` bytes) and SIGKILLs it as soon as a checkpoint is saved partway through
/// the file; fails if the run ends on its own first.
fn kill_once_partly_acked(dir: &std::path::Path, input: &std::path::Path, size: u64) {
    let mut first = ship(dir, input).spawn().expect("starts");
    let started = Instant::now();
    let mut killed = false;
    while started.elapsed() < Duration::from_secs(60) {
        if let Some(status) = first.try_wait().expect("wait") {
            assert!(status.success(), "the first run failed on its own");
            break;
        }
        let offset = saved_offset(dir);
        if offset > 0 && offset < size {
            first.kill().expect("SIGKILL");
            killed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // Reap the first run (killed above, or exited on its own, or still running at the deadline).
    if !killed && first.try_wait().ok().flatten().is_none() {
        let _ = first.kill();
    }
    first.wait().expect("reaped");
    assert!(
        killed,
        "the run finished before it could be killed; make the input bigger"
    );
}

#[test]
fn kill_9_then_rerun_loses_no_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("big.log");
    let lines: Vec<String> = (0..400_000)
        .map(|i| {
            format!(
                "{i:07} GET /api/v{}/items/{} status={} bytes={} user=u{}",
                i % 3,
                i * 7 % 10_007,
                [200, 404, 500][i % 3],
                i * 13 % 65_536,
                i % 97
            )
        })
        .collect();
    std::fs::write(&input, lines.join("\n") + "\n").expect("write input");
    let size = std::fs::metadata(&input).expect("stat").len();

    kill_once_partly_acked(dir.path(), &input, size);
    let acked_before = saved_offset(dir.path());

    let status = ship(dir.path(), &input).status().expect("reruns");
    assert!(status.success());
    assert_eq!(
        saved_offset(dir.path()),
        size,
        "every line acked in the end"
    );

    let rebuilt = std::fs::read_to_string(common::rebuilt_path(&dir.path().join("out"), &input))
        .expect("rebuilt");
    // First occurrences cover every line in order; every extra line repeats an earlier one.
    let (next, extras) = common::in_order(rebuilt.lines(), &lines);
    for &(seen, line) in &extras {
        assert!(
            lines[..seen].iter().any(|l| l == line),
            "unexpected line {line:?}"
        );
    }
    let duplicates = extras.len();
    assert_eq!(next, lines.len(), "no line lost");
    // Only lines after the last saved checkpoint can repeat.
    let replayable = lines.iter().scan(0u64, |off, l| {
        *off += l.len() as u64 + 1;
        Some(*off)
    });
    let after_checkpoint = replayable.filter(|end| *end > acked_before).count();
    assert!(
        duplicates <= after_checkpoint,
        "{duplicates} duplicates, but only {after_checkpoint} lines were unacked"
    );
}

/// The file is rotated (renamed away, a new one created) while the agent is down after a SIGKILL. The
/// rerun on the original path first reads the rest of the rotated file from its checkpoint, then the new
/// file: nothing of either is lost, and both land in the original path's rebuilt file, in order.
#[test]
fn file_rotated_while_down_is_finished_before_the_new_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("app.log");
    let old: Vec<String> = (0..400_000)
        .map(|i| format!("{i:07} old worker={} took={}ms", i % 13, i * 7 % 997))
        .collect();
    std::fs::write(&input, old.join("\n") + "\n").expect("write input");
    let size = std::fs::metadata(&input).expect("stat").len();

    kill_once_partly_acked(dir.path(), &input, size);

    // Rotate while the agent is down.
    let rotated = dir.path().join("app.log.1");
    std::fs::rename(&input, &rotated).expect("rotate");
    let new: Vec<String> = (0..1000)
        .map(|i| format!("{i:07} new worker={}", i % 5))
        .collect();
    std::fs::write(&input, new.join("\n") + "\n").expect("new file");

    let status = ship(dir.path(), &input).status().expect("reruns");
    assert!(status.success());

    let rebuilt = std::fs::read_to_string(common::rebuilt_path(&dir.path().join("out"), &input))
        .expect("rebuilt");
    let expected: Vec<&String> = old.iter().chain(new.iter()).collect();
    let (next, extras) = common::in_order(rebuilt.lines(), &expected);
    for (_, line) in extras {
        assert!(
            old.iter().any(|l| l == line),
            "only old lines may repeat: {line:?}"
        );
    }
    assert_eq!(
        next,
        expected.len(),
        "every old line, then every new line (stopped at {:?})",
        expected.get(next)
    );
    // The rotated file's checkpoint reached its end.
    let doc: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("data/checkpoints.json")).expect("checkpoints"),
    )
    .expect("JSON");
    // Checkpoints follow the content: the old file's is still the one it had under its first path.
    let input_abs = std::fs::canonicalize(&input).expect("abs");
    let old_offsets: Vec<u64> = doc["sources"]
        .as_object()
        .expect("sources")
        .values()
        .filter(|s| s["path"].as_str() == Some(input_abs.to_string_lossy().as_ref()))
        .filter_map(|s| s["offset"].as_u64())
        .collect();
    assert!(old_offsets.contains(&size), "{old_offsets:?}");
}
