//! `stencil ship` against the files users really have (#16 items 7, 8, 9, 12, 13): a writer that keeps
//! writing to a file after it was rotated away, files that cannot be read, odd file names, a file named
//! twice, lines longer than a batch, and an endpoint without a scheme.

mod common;

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

fn stencil() -> Command {
    Command::new(env!("CARGO_BIN_EXE_stencil"))
}

fn rebuilt(out: &Path, source: &Path) -> Vec<u8> {
    std::fs::read(common::rebuilt_path(out, source)).unwrap_or_default()
}

fn lines(prefix: &str, range: std::ops::Range<u32>) -> String {
    range.map(|i| format!("{prefix} {i:03}\n")).collect()
}

/// logrotate with `create`: `app.log` is renamed to `app.log.1` and a new `app.log` appears, but the
/// application keeps writing to its old descriptor until it reopens its log. Those lines used to be lost
/// (19 of 60 in the report); they are read from the rotated file, under the same filename.
#[test]
fn lines_written_after_a_rename_to_the_old_descriptor_arrive() {
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = std::fs::canonicalize(dir.path()).expect("abs").join("logs");
    std::fs::create_dir_all(&logs).expect("mkdir");
    let out = dir.path().join("out");
    let app = logs.join("app.log");
    let mut writer = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&app)
        .expect("the application opens its log");
    writer
        .write_all(lines("before", 0..20).as_bytes())
        .expect("write");

    let mut child = stencil()
        .args(["ship", "--batch-wait-ms", "100", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--out")
        .arg(&out)
        .arg(format!("{}/*.log", logs.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starts");
    common::wait_for(|| rebuilt(&out, &app).ends_with(b"before 019\n"));

    std::fs::rename(&app, logs.join("app.log.1")).expect("rotate");
    std::fs::File::create(&app).expect("logrotate creates the new file");
    // Let the agent notice the new file before the old one grows again.
    std::thread::sleep(Duration::from_millis(700));
    writer
        .write_all(lines("after rename, old descriptor", 0..20).as_bytes())
        .expect("write");
    std::thread::sleep(Duration::from_millis(700));
    // The application reopens its log.
    drop(writer);
    let mut reopened = std::fs::OpenOptions::new()
        .append(true)
        .open(&app)
        .expect("reopen");
    reopened
        .write_all(lines("reopened", 0..20).as_bytes())
        .expect("write");

    let want = lines("before", 0..20)
        + &lines("after rename, old descriptor", 0..20)
        + &lines("reopened", 0..20);
    common::wait_for(|| rebuilt(&out, &app).len() >= want.len());
    common::sigterm_and_wait(&mut child);
    let got = String::from_utf8(rebuilt(&out, &app)).expect("utf-8");
    let mut got_lines: Vec<&str> = got.lines().collect();
    let mut want_lines: Vec<&str> = want.lines().collect();
    // Two files are read at once, so their lines may interleave; each file's own order is kept.
    let old_order: Vec<&str> = got_lines
        .iter()
        .copied()
        .filter(|l| !l.starts_with("reopened"))
        .collect();
    assert_eq!(old_order, want_lines[..40].to_vec());
    got_lines.sort_unstable();
    want_lines.sort_unstable();
    assert_eq!(got_lines, want_lines, "all 60 lines, once each");
}

/// Runs `stencil ship --once` on `args`; returns (exit success, stderr).
fn ship_once(out: &Path, args: &[&std::ffi::OsStr]) -> (bool, String) {
    let output = stencil()
        .args(["ship", "--once", "--no-compare", "--out"])
        .arg(out)
        .args(args)
        .output()
        .expect("runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A comma in a file name used to split the `filename:` tag (so `a,b.log` was rebuilt into `a`), a
/// glob skipped names that are not UTF-8, and a file named twice was shipped twice.
#[test]
fn odd_names_are_filed_right_and_a_file_named_twice_is_read_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = std::fs::canonicalize(dir.path()).expect("abs").join("logs");
    std::fs::create_dir_all(&logs).expect("mkdir");
    let out = dir.path().join("out");
    let comma = logs.join("a,b.log");
    let plain = logs.join("a");
    let latin1 = logs.join(std::ffi::OsStr::from_bytes(b"caf\xe9.log"));
    let percent = logs.join("100%2C.log");
    std::fs::write(&comma, "from the comma file\n").expect("write");
    std::fs::write(&plain, "from a\n").expect("write");
    std::fs::write(&latin1, "from the latin-1 name\n").expect("write");
    std::fs::write(&percent, "from the percent file\n").expect("write");
    let glob = format!("{}/*.log", logs.display());
    let (ok, stderr) = ship_once(
        &out,
        &[
            glob.as_ref(),
            comma.as_os_str(),
            plain.as_os_str(),
            "--streams".as_ref(),
            "1".as_ref(),
        ],
    );
    assert!(ok, "{stderr}");
    assert_eq!(rebuilt(&out, &comma), b"from the comma file\n");
    assert_eq!(rebuilt(&out, &plain), b"from a\n");
    assert_eq!(rebuilt(&out, &latin1), b"from the latin-1 name\n");
    assert_eq!(rebuilt(&out, &percent), b"from the percent file\n");
}

/// A line longer than `--batch-bytes` used to be dropped without a word, with exit 0. It is split to
/// fit and rebuilt byte for byte; a nonsensical value is refused at start.
#[test]
fn lines_longer_than_a_batch_are_split_not_dropped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("long.log");
    let long = format!("start {} end\nshort\n", "x".repeat(5_000));
    std::fs::write(&input, &long).expect("write");
    let out = dir.path().join("out");
    let (ok, stderr) = ship_once(
        &out,
        &["--batch-bytes".as_ref(), "1000".as_ref(), input.as_os_str()],
    );
    assert!(ok, "{stderr}");
    assert!(stderr.contains("0 dropped"), "{stderr}");
    assert_eq!(rebuilt(&out, &input), long.as_bytes());

    let (ok, stderr) = ship_once(
        &out,
        &["--batch-bytes".as_ref(), "10".as_ref(), input.as_os_str()],
    );
    assert!(!ok);
    assert!(stderr.contains("--batch-bytes"), "{stderr}");
}

/// An endpoint without `http://` or `https://` is refused at start instead of failing forever.
#[test]
fn an_endpoint_without_a_scheme_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("a.log");
    std::fs::write(&input, "x\n").expect("write");
    for bad in ["localhost:10600", "ftp://host:21", "https://"] {
        let output = stencil()
            .args(["ship", "--once", "--api-key", "k", "--endpoint", bad])
            .arg(&input)
            .output()
            .expect("runs");
        assert!(!output.status.success(), "{bad}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("give the scheme"), "{bad}: {stderr}");
    }
}

/// A file the agent may not read, and a folder named as an input, used to stop the pipeline that held
/// them (with `--streams 1` the agent exited 1). Now each is warned about once and counted, the rest is
/// shipped, `--once` exits 1 saying what was skipped, and follow mode keeps going and picks the file up
/// once it becomes readable.
#[test]
fn unreadable_files_are_skipped_and_the_rest_ships() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = std::fs::canonicalize(dir.path()).expect("abs");
    let logs = root.join("logs");
    std::fs::create_dir_all(&logs).expect("mkdir");
    let readable = logs.join("readable.log");
    let secret = logs.join("secret.log");
    std::fs::write(&readable, "public line\n").expect("write");
    std::fs::write(&secret, "secret line\n").expect("write");
    set_mode(&secret, 0o600);
    // As root, the agent runs as `nobody` so that the permission bits apply.
    let as_other_user = running_as_root();
    if as_other_user {
        for d in [&root, &logs] {
            set_mode(d, 0o777);
        }
        set_mode(&readable, 0o644);
    } else {
        set_mode(&secret, 0o000);
    }
    let agent = |args: &[&std::ffi::OsStr]| {
        let mut cmd = if as_other_user {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(env!("CARGO_BIN_EXE_stencil"));
            c
        } else {
            stencil()
        };
        cmd.arg("ship").args(args);
        cmd
    };

    // --once: the readable file is shipped, the folder and the secret are named, exit 1.
    let out = root.join("out-once");
    let output = agent(&[
        "--once".as_ref(),
        "--streams".as_ref(),
        "1".as_ref(),
        "--out".as_ref(),
        out.as_os_str(),
        secret.as_os_str(),
        logs.as_os_str(),
        readable.as_os_str(),
    ])
    .output()
    .expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("2 files skipped"), "{stderr}");
    assert!(stderr.contains("secret.log"), "{stderr}");
    assert_eq!(rebuilt(&out, &readable), b"public line\n");

    // Follow mode: it keeps shipping, warns once, and reads the file once it can.
    let out = root.join("out-follow");
    let mut child = agent(&[
        "--streams".as_ref(),
        "1".as_ref(),
        "--batch-wait-ms".as_ref(),
        "100".as_ref(),
        "--out".as_ref(),
        out.as_os_str(),
        format!("{}/*.log", logs.display()).as_ref(),
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .expect("starts");
    common::wait_for(|| rebuilt(&out, &readable) == b"public line\n");
    std::fs::OpenOptions::new()
        .append(true)
        .open(&readable)
        .and_then(|mut f| f.write_all(b"second public line\n"))
        .expect("append");
    common::wait_for(|| rebuilt(&out, &readable).ends_with(b"second public line\n"));
    assert!(child.try_wait().expect("wait").is_none(), "still running");
    set_mode(&secret, 0o644);
    common::wait_for(|| rebuilt(&out, &secret) == b"secret line\n");
    common::sigterm_and_wait(&mut child);
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("stderr");
    let warnings = stderr
        .lines()
        .filter(|l| l.contains("cannot read this file") && l.contains("secret.log"))
        .count();
    assert_eq!(warnings, 1, "warned once: {stderr}");
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}
