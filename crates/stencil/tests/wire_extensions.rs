//! The negotiated wire through the real pair: `stencil ship --once --endpoint …` against `stencil intake`
//! processes over loopback gRPC. With an intake that echoes the extensions the streams use them; with
//! one that does not (`--no-extensions`, as a Datadog intake) they stay plain v3. Every rebuilt file is
//! byte-identical either way.

mod common;

use std::process::{Command, Stdio};

/// Ships `files` to a fresh intake (with `intake_flags`) and returns the summary JSON.
fn ship(
    files: &[std::path::PathBuf],
    intake_flags: &[&str],
    ship_flags: &[&str],
) -> serde_json::Value {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    let (mut intake, addr) = common::start_intake(&out, intake_flags);
    let summary = dir.path().join("summary.json");
    let status = Command::new(env!("CARGO_BIN_EXE_stencil"))
        .args(["ship", "--once", "--streams", "1", "--endpoint"])
        .arg(format!("http://{addr}"))
        .args(["--api-key", "k1", "--summary-json"])
        .arg(&summary)
        .args(ship_flags)
        .args(files)
        .stderr(Stdio::inherit())
        .status()
        .expect("ship runs");
    assert!(status.success(), "ship --once exits 0");
    common::sigterm_and_wait(&mut intake);
    for f in files {
        let rebuilt = common::rebuilt_path(&out, f);
        assert_eq!(
            std::fs::read(&rebuilt).expect("rebuilt file"),
            std::fs::read(f).expect("source"),
            "{} rebuilt byte for byte",
            f.display()
        );
    }
    serde_json::from_slice(&std::fs::read(&summary).expect("summary")).expect("summary JSON")
}

fn inputs() -> Vec<std::path::PathBuf> {
    let corpus = std::env::var_os("STENCIL_CORPUS").expect("set STENCIL_CORPUS=../shared/corpus");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(corpus);
    let files: Vec<_> = ["HDFS", "Apache", "OpenSSH"]
        .iter()
        .map(|s| {
            std::fs::canonicalize(root.join("loghub-2k").join(s).join(format!("{s}_2k.log")))
                .expect("corpus file")
        })
        .collect();
    files
}

#[test]
#[ignore = "needs the shared corpus: STENCIL_CORPUS=../shared/corpus cargo test -- --include-ignored"]
fn extensions_are_used_when_echoed_and_plain_v3_otherwise() {
    let files = inputs();
    let ext = ship(&files, &[], &["--batch-lines", "1000"]);
    assert_eq!(ext["wire"], "native/3+stream-zstd", "{ext}");
    let v3 = ship(&files, &["--no-extensions"], &["--batch-lines", "1000"]);
    assert_eq!(v3["wire"], "v3", "{v3}");
    let forced = ship(&files, &[], &["--batch-lines", "1000", "--wire", "v3"]);
    assert_eq!(forced["wire"], "v3", "{forced}");
    let bytes = |j: &serde_json::Value| j["wire_bytes"].as_u64().expect("wire_bytes");
    // The same lines cost fewer bytes with the extensions than plain v3, and no more than a plain
    // zstd-1 stream of the same lines.
    assert!(
        bytes(&ext) < bytes(&v3),
        "ext {} vs v3 {}",
        bytes(&ext),
        bytes(&v3)
    );
    assert!(
        bytes(&ext) <= ext["stream_zstd1_bytes"].as_u64().expect("baseline"),
        "{ext}"
    );
}

/// A file of JSON logs among lines of random words: no structure pays for its source, so it goes as
/// raw text, JSON logs included (their documents, as the line was), and every batch stays in the
/// native layout. Before, the JSON logs stayed structured, their schemas put every batch back in the
/// v3 layout, and the file cost more than a zstd-1 stream of its lines.
#[test]
fn a_source_of_json_logs_and_free_text_goes_raw_and_beats_the_zstd_stream() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("mixed.log");
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let words: Vec<String> = (0..400)
        .map(|_| {
            let len = 3 + next() % 7;
            (0..len)
                .map(|_| (b'a' + (next() % 26) as u8) as char)
                .collect()
        })
        .collect();
    let mut text = String::new();
    for i in 0..3000u64 {
        let word = |r: u64| words[(r % 400) as usize].clone();
        if i % 3 == 0 {
            let (req, a, b, c) = (next() as u32, next(), next(), next());
            text += &format!(
                "{{\"level\":\"info\",\"ts\":\"2026-11-27T10:{:02}:{:02}.{:03}Z\",\"req\":\"{req:08x}\",\"user\":\"{}\",\"msg\":\"{} {}\"}}\n",
                i / 600 % 60,
                i / 10 % 60,
                i % 1000,
                word(a),
                word(b),
                word(c)
            );
        } else {
            let n = 4 + next() % 9;
            let line: Vec<String> = (0..n).map(|_| word(next())).collect();
            text += &format!("{} id={:x}\n", line.join(" "), next() >> 24);
        }
    }
    std::fs::write(&file, text).expect("write");
    let file = std::fs::canonicalize(&file).expect("canonical");
    let summary = ship(std::slice::from_ref(&file), &[], &[]);
    assert_eq!(summary["raw_sources"], 1, "{summary}");
    assert_eq!(summary["structured_sources"], 0, "{summary}");
    let wire = summary["wire_bytes"].as_u64().expect("wire_bytes");
    let zstd = summary["stream_zstd1_bytes"].as_u64().expect("baseline");
    assert!(
        (wire as f64) < 0.95 * zstd as f64,
        "{wire} wire bytes against a zstd-1 stream of {zstd}"
    );
}

/// JSON logs as bunyan, zap, logrus and journald write them: the message among the other members.
/// With `--json-documents` and an intake that echoes `json-order` they go as documents, the message's
/// place in their schema; with an intake that does not (`--no-extensions`, as a Datadog intake) they go
/// as their text; by default they take the text path, which costs fewer bytes. Every file comes back
/// byte for byte each way, and the JSON Lines sink shows the documents and their messages' templates.
#[test]
fn json_logs_keep_their_members_order_on_every_wire() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("app.json.log");
    let users = ["alice", "bob", "carol", "dave", "erin"];
    let mut text = String::new();
    for i in 0..1200u64 {
        let user = users[(i * 7 % 5) as usize];
        let line = match i % 4 {
            0 => format!(
                r#"{{"name":"api","hostname":"web-1","pid":{},"level":30,"msg":"user {} logged in from 10.0.{}.{}","time":"2026-11-30T10:{:02}:{:02}.{:03}Z","v":0}}"#,
                4000 + i % 3,
                1000 + i % 37,
                i % 7,
                i % 250,
                i / 60 % 60,
                i % 60,
                i % 1000
            ),
            1 => format!(
                r#"{{"level":"info","ts":1764496800.{:03},"caller":"server/handler.go:{}","msg":"request served","status":200,"bytes":{}}}"#,
                i % 1000,
                40 + i % 3,
                100 + i * 13 % 900
            ),
            2 => format!(
                r#"{{"level":"warning","msg":"cache miss for key {user}-{}","time":"2026-11-30T10:{:02}:{:02}Z"}}"#,
                i % 50,
                i / 60 % 60,
                i % 60
            ),
            _ => format!(
                r#"{{"__REALTIME_TIMESTAMP":"{}","MESSAGE":"Started session {} of user {user}.","PRIORITY":"6","_PID":"1"}}"#,
                1_764_496_800_000_000 + i * 1000,
                100 + i
            ),
        };
        text += &line;
        text.push('\n');
    }
    std::fs::write(&file, &text).expect("write");
    let file = std::fs::canonicalize(&file).expect("canonical");
    let one = std::slice::from_ref(&file);

    // Every wire rebuilds the file (ship() compares it).
    let docs = ["--batch-lines", "100", "--json-documents"];
    let ext = ship(one, &[], &docs);
    assert_eq!(ext["wire"], "native/3+stream-zstd", "{ext}");
    let v3 = ship(one, &["--no-extensions"], &docs);
    assert_eq!(v3["wire"], "v3", "{v3}");
    let text_path = ship(one, &[], &["--batch-lines", "100"]);
    let bytes = |j: &serde_json::Value| j["wire_bytes"].as_u64().expect("wire_bytes");
    assert!(
        bytes(&text_path) < bytes(&ext),
        "text path {} bytes, documents {}",
        bytes(&text_path),
        bytes(&ext)
    );

    // What the intake knows of them as documents: fields, and the message with its own template.
    let jsonl = dir.path().join("out.jsonl");
    let (mut intake, addr) = common::start_jsonl_intake(&jsonl);
    let status = Command::new(env!("CARGO_BIN_EXE_stencil"))
        .args(["ship", "--once", "--streams", "1"])
        .args(docs)
        .args(["--endpoint", &format!("http://{addr}"), "--api-key", "k1"])
        .arg(&file)
        .stderr(Stdio::null())
        .status()
        .expect("ship runs");
    assert!(status.success());
    common::sigterm_and_wait(&mut intake);
    let records = common::jsonl_records(&jsonl);
    assert_eq!(records.len(), 1200);
    let login = records
        .iter()
        .filter(|r| r["pattern"] == "user <*> logged in from <*>")
        .count();
    assert_eq!(login, 300, "every login under its message's template");
    // Each record is its line's document, member order included.
    for (r, line) in records.iter().zip(text.lines()) {
        assert!(r["message"].is_object(), "{r}");
        assert_eq!(
            serde_json::to_string(&r["message"]).expect("serializes"),
            line
        );
    }
}
