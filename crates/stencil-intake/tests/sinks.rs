//! Sinks through the real server: files round-trip byte for byte, JSON Lines carry every field, and a
//! failing sink write is never acked.

mod common;

use std::sync::Arc;

use common::*;
use stencil_codec::datum::*;
use stencil_codec::{Compression, Generation};
use stencil_intake::{FilesSink, IntakeConfig, JsonLinesSink};
use tonic::Code;

fn line(ts: i64, tags: u64, text: &str) -> Datum {
    Datum::Log(Log {
        timestamp: ts,
        status: None,
        service: None,
        tags: Some(Value::Dict(tags)),
        content: Content::Raw(text.into()),
        json: None,
        uuid: None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_sink_rebuilds_each_source_byte_for_byte() {
    let out = tempfile::tempdir().expect("tempdir");
    let sink = FilesSink::new(out.path(), true).expect("sink");
    let intake = intake_with(IntakeConfig::default(), Arc::new(sink)).await;
    let dict = |id, v: &str| {
        Datum::DictDefine(DictDefine {
            id,
            value: v.into(),
        })
    };
    let datums = vec![
        dict(2, "filename:/var/log/app.log"),
        dict(3, "filename:/srv/other.log,env:prod"),
        dict(4, "filename:/srv/other.log,stencil_eol:crlf"),
        dict(5, "filename:/var/log/app.log,stencil_eol:none"),
        dict(6, "filename:../../escape.log"),
        line(1, 2, "first line"),
        line(2, 3, "other 1"),
        line(3, 2, "  second line with spaces  "),
        line(4, 4, "windows line"),
        line(5, 2, "emoji 😀 and tab\t"),
        line(6, 5, "last line without newline"),
        line(7, 6, "cannot climb out"),
    ];
    let mut c = open_v3(&intake).await;
    c.send_ok(0, encode(Generation::V3, Compression::ZSTD, &datums))
        .await;
    let app = std::fs::read(out.path().join("var/log/app.log")).expect("app file");
    assert_eq!(app, b"first line\n  second line with spaces  \nemoji \xf0\x9f\x98\x80 and tab\t\nlast line without newline");
    let other = std::fs::read(out.path().join("srv/other.log")).expect("other file");
    assert_eq!(other, b"other 1\nwindows line\r\n");
    let unfiled = std::fs::read(out.path().join("_unfiled.log")).expect("unfiled");
    assert_eq!(unfiled, b"cannot climb out\n");
    assert!(!out
        .path()
        .parent()
        .expect("parent")
        .join("escape.log")
        .exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jsonl_sink_writes_every_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("out/logs.jsonl");
    let sink = JsonLinesSink::to_file(&path, false).expect("sink");
    let intake = intake_with(IntakeConfig::default(), Arc::new(sink)).await;
    let datums = vec![
        Datum::DictDefine(DictDefine {
            id: 2,
            value: "error".into(),
        }),
        Datum::DictDefine(DictDefine {
            id: 3,
            value: "api".into(),
        }),
        Datum::DictDefine(DictDefine {
            id: 4,
            value: "env:prod,hostname:web-1".into(),
        }),
        Datum::Log(Log {
            timestamp: 1_700_000_000_250,
            status: Some(Value::Dict(2)),
            service: Some(Value::Dict(3)),
            tags: Some(Value::Dict(4)),
            content: Content::Raw("boom".into()),
            json: None,
            uuid: Some("abc".into()),
        }),
    ];
    let mut c = open_v3(&intake).await;
    c.send_ok(0, encode(Generation::V3, Compression::ZSTD, &datums))
        .await;
    let text = std::fs::read_to_string(&path).expect("jsonl");
    let obj: serde_json::Value = serde_json::from_str(text.trim_end()).expect("one JSON object");
    assert_eq!(
        obj,
        serde_json::json!({
            "timestamp": "2023-11-14T22:13:20.250Z", "timestamp_ms": 1_700_000_000_250i64, "status": "error",
            "service": "api", "hostname": "web-1", "tags": ["env:prod", "hostname:web-1"], "message": "boom", "uuid": "abc"
        })
    );
}

/// Disk full: the JSON Lines sink writes to /dev/full, every write fails with ENOSPC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_sink_write_is_not_acked_disk_full() {
    let sink =
        JsonLinesSink::to_file(std::path::Path::new("/dev/full"), false).expect("/dev/full opens");
    let intake = intake_with(IntakeConfig::default(), Arc::new(sink)).await;
    let mut c = open_v3(&intake).await;
    c.send(0, Vec::new()).await; // nothing to write: acked
    c.send(1, healthy(3, "env:a")).await;
    let (code, message, acks) = c.finish().await;
    assert_eq!(acks, vec![0], "the batch whose write failed is not acked");
    assert_eq!(code, Code::Unavailable, "{message}");
    assert!(message.contains("sink write failed"), "{message}");
}

/// An unwritable output folder: a regular file stands where a directory must be created (this fails
/// even for root, unlike permission bits).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_sink_write_is_not_acked_unwritable_folder() {
    let out = tempfile::tempdir().expect("tempdir");
    std::fs::write(out.path().join("var"), b"a file, not a folder").expect("obstacle");
    let sink = FilesSink::new(out.path(), false).expect("sink");
    let intake = intake_with(IntakeConfig::default(), Arc::new(sink)).await;
    let datums = vec![
        Datum::DictDefine(DictDefine {
            id: 2,
            value: "filename:/var/log/app.log".into(),
        }),
        line(1, 2, "never acked"),
    ];
    let mut c = open_v3(&intake).await;
    c.send(0, encode(Generation::V3, Compression::ZSTD, &datums))
        .await;
    let (code, message, acks) = c.finish().await;
    assert!(acks.is_empty(), "no ack for a failed write");
    assert_eq!(code, Code::Unavailable);
    assert!(
        message.contains("var/log/app.log"),
        "names the file: {message}"
    );
}

/// The Prometheus endpoint shows the intake's series after traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_reports_traffic() {
    let (addr, _task) = stencil_telemetry::bind_and_serve(
        "127.0.0.1:0".parse().expect("addr"),
        stencil_telemetry::always_healthy(),
    )
    .await
    .expect("metrics endpoint");
    let (intake, _) = intake().await;
    let mut c = open_v3(&intake).await;
    c.send_ok(0, healthy(3, "env:m")).await;
    c.send(1, vec![9, 9, 9]).await;
    let _ = c.finish().await;
    let body = http_get(addr, "/metrics").await;
    for series in [
        "stencil_intake_batches_total",
        "stencil_intake_logs_total",
        "stencil_intake_bytes_total{stage=\"compressed\",wire=\"v3\"}",
        "stencil_intake_rejections_total{reason=\"corrupt_payload\"}",
        "stencil_intake_streams_total",
        "stencil_intake_ack_latency_seconds",
        "stencil_intake_streams_open",
    ] {
        assert!(body.contains(series), "missing {series} in:\n{body}");
    }
    assert!(http_get(addr, "/health").await.contains("\"ok\""));
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    out
}
