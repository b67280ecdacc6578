//! Conformance: the real intake over loopback gRPC, driven by tonic clients built from our own protos, for
//! both generations.

mod common;

use std::sync::Arc;

use common::*;
use stencil_codec::datum::*;
use stencil_codec::{Compression, Generation};
use stencil_intake::{IntakeConfig, MemorySink};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v3_snapshot_then_data_with_every_codec() {
    let (intake, sink) = intake().await;
    for (codec, header) in [
        (Compression::ZSTD, Some("zstd")),
        (Compression::GZIP, Some("GZIP")),
        (Compression::Identity, None),
    ] {
        let mut c = open(&intake, Generation::V3, Some(KEY), header)
            .await
            .expect("opens");
        let snapshot = encode(Generation::V3, codec, &sample_datums(0, 0, "env:test")[..1]);
        c.send_ok(0, snapshot).await;
        c.send_ok(
            1,
            encode(
                Generation::V3,
                codec,
                &sample_datums(1_700_000_000_000, 3, "env:test"),
            ),
        )
        .await;
        c.send_ok(
            2,
            encode(
                Generation::V3,
                codec,
                &sample_datums(1_700_000_001_000, 2, "env:test"),
            ),
        )
        .await;
        c.half_close();
        assert_eq!(
            c.finish().await.0,
            Code::Ok,
            "{codec:?}: a half-close ends with OK"
        );
    }
    let logs = sink.logs();
    assert_eq!(logs.len(), 15);
    assert_eq!(logs[0].1.message, "user u0 logged in from 10.0.0.0");
    assert_eq!(logs[3].1.timestamp, 1_700_000_001_000);
    assert!(logs
        .iter()
        .all(|(s, l)| s.generation == Generation::V3 && l.status.as_deref() == Some("info")));
    intake.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_snapshot_then_data_and_first_batch_1() {
    let (intake, sink) = intake().await;
    let datums = vec![
        Datum::PatternDefine(PatternDefine {
            id: 1,
            template: "GET  ".into(),
            pos_list: vec![4, 5],
        }),
        Datum::DictDefine(DictDefine {
            id: 0,
            value: "service:web,env:prod".into(),
        }),
        Datum::Log(Log {
            timestamp: 1_700_000_000_000,
            status: Some(Value::Str("warn".into())),
            service: None,
            tags: Some(Value::Dict(0)),
            content: Content::Pattern {
                id: 1,
                values: vec![Value::Str("/x".into()).into(), Value::Int(200).into()],
            },
            json: None,
            uuid: Some("u-1".into()),
        }),
    ];
    let mut c = open(&intake, Generation::V2, Some(KEY), Some("zstd"))
        .await
        .expect("opens");
    c.send_ok(0, Vec::new()).await;
    c.send_ok(1, encode(Generation::V2, Compression::ZSTD, &datums))
        .await;
    // An older v2 agent skips the empty snapshot: the stream starts at 1.
    let mut c2 = open(&intake, Generation::V2, Some(KEY), Some("zstd"))
        .await
        .expect("opens");
    c2.send_ok(1, encode(Generation::V2, Compression::ZSTD, &datums))
        .await;
    let logs = sink.logs();
    assert_eq!(logs.len(), 2);
    for (stream, log) in &logs {
        assert_eq!(stream.generation, Generation::V2);
        assert_eq!(log.message, "GET /x 200");
        assert_eq!(log.service.as_deref(), Some("web"));
        assert_eq!(log.status.as_deref(), Some("warn"));
        assert_eq!(log.uuid.as_deref(), Some("u-1"));
    }
    assert_ne!(logs[0].0.id, logs[1].0.id, "two streams");
}

/// A replay after a reconnect (new stream, new ids, a define prefix) rebuilds the same logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_after_reconnect_gives_the_same_logs() {
    let (intake, sink) = intake().await;
    let payload = sample_datums(1_700_000_000_000, 4, "env:a");
    // Stream 1: the snapshot carries the defines; the payload's own defines are then redundant but legal.
    let mut first = open_v3(&intake).await;
    first
        .send_ok(0, encode(Generation::V3, Compression::ZSTD, &payload[..3]))
        .await;
    let logs_only: Vec<Datum> = payload[3..].to_vec();
    first
        .send_ok(1, encode(Generation::V3, Compression::ZSTD, &logs_only))
        .await;
    drop(first); // the connection breaks before anything else is acked
    let before = sink.messages();

    // Stream 2: the agent replays the unacked payload under a new id with a different prefix.
    let mut second = open_v3(&intake).await;
    second.send_ok(0, Vec::new()).await;
    second
        .send_ok(1, encode(Generation::V3, Compression::ZSTD, &payload))
        .await;
    let all = sink.logs();
    assert_eq!(all.len(), 8);
    let replayed: Vec<_> = all[4..].iter().map(|(_, l)| l.message.clone()).collect();
    assert_eq!(replayed, before);
    assert_eq!(
        all[..4]
            .iter()
            .map(|(_, l)| (l.timestamp, l.tags.clone()))
            .collect::<Vec<_>>(),
        all[4..]
            .iter()
            .map(|(_, l)| (l.timestamp, l.tags.clone()))
            .collect::<Vec<_>>()
    );
}

/// Sentinels and deltas through the real server: status changes mid-batch, negative deltas, raw logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_and_delta_rules() {
    let (intake, sink) = intake().await;
    let mut datums = sample_datums(0, 0, "env:x");
    datums.push(Datum::DictDefine(DictDefine {
        id: 4,
        value: "error".into(),
    }));
    let ts = [
        1_700_000_000_500i64,
        1_700_000_000_100,
        1_700_000_000_100,
        1_600_000_000_000,
    ];
    let status = [Some(2u64), Some(2), Some(4), None];
    for (i, (t, s)) in ts.iter().zip(status).enumerate() {
        datums.push(Datum::Log(Log {
            timestamp: *t,
            status: s.map(Value::Dict),
            service: None,
            tags: Some(Value::Dict(3)),
            content: if i == 2 {
                Content::Raw("raw in between".into())
            } else {
                Content::Pattern {
                    id: 1,
                    values: vec![Value::Str("a".into()).into(), Value::Int(i as i64).into()],
                }
            },
            json: None,
            uuid: None,
        }));
    }
    let mut c = open_v3(&intake).await;
    c.send_ok(0, encode(Generation::V3, Compression::ZSTD, &datums))
        .await;
    let logs = sink.logs();
    assert_eq!(
        logs.iter().map(|(_, l)| l.timestamp).collect::<Vec<_>>(),
        ts
    );
    assert_eq!(
        logs.iter()
            .map(|(_, l)| l.status.as_deref())
            .collect::<Vec<_>>(),
        [Some("info"), Some("info"), Some("error"), None]
    );
    assert_eq!(logs[2].1.message, "raw in between");
    assert_eq!(logs[3].1.message, "user a logged in from 3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_schema_columns() {
    let (intake, sink) = intake().await;
    let dict = |id, v: &str| {
        Datum::DictDefine(DictDefine {
            id,
            value: v.into(),
        })
    };
    let datums = vec![
        dict(10, "http.status"),
        dict(11, "ok"),
        dict(12, "latency"),
        dict(13, "user"),
        dict(14, "raw"),
        dict(15, "level"),
        dict(16, "msg"),
        dict(17, "warn"),
        dict(18, "nothing"),
        Datum::SchemaDefine(SchemaDefine {
            id: 5,
            keys: vec![10, 11, 12, 13, 14, 15, 18],
            message_key: 16,
            kinds: vec![
                JsonKind::Int,
                JsonKind::Bool,
                JsonKind::Float,
                JsonKind::String,
                JsonKind::RawJson,
                JsonKind::DictString,
                JsonKind::Null,
            ],
            message_at: None,
        }),
        Datum::Log(Log {
            timestamp: 5,
            status: None,
            service: None,
            tags: None,
            content: Content::Raw("request done".into()),
            json: Some(JsonContext::Columns {
                schema: 5,
                values: vec![
                    JsonValue::Int(503),
                    JsonValue::Bool(true),
                    JsonValue::Float(0.25),
                    JsonValue::Str("ann".into()),
                    JsonValue::RawJson("[1,{\"x\":2}]".into()),
                    JsonValue::Dict(17),
                    JsonValue::Null,
                ],
            }),
            uuid: None,
        }),
    ];
    let mut c = open_v3(&intake).await;
    c.send_ok(0, encode(Generation::V3, Compression::ZSTD, &datums))
        .await;
    let log = &sink.logs()[0].1;
    let doc = serde_json::Value::Object(log.json.clone().expect("a JSON log"));
    assert_eq!(
        doc,
        serde_json::json!({
            "http": {"status": 503}, "ok": true, "latency": 0.25, "user": "ann", "raw": [1, {"x": 2}],
            "level": "warn", "nothing": null, "msg": "request done"
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_or_missing_api_key_is_refused_before_any_data() {
    let (intake, sink) = intake().await;
    for key in [None, Some(""), Some("nope")] {
        let err = open(&intake, Generation::V3, key, Some("zstd"))
            .await
            .err()
            .expect("refused");
        assert_eq!(err.code(), Code::Unauthenticated, "{key:?}");
    }
    let err = open(&intake, Generation::V2, Some("nope"), None)
        .await
        .err()
        .expect("refused");
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(sink.logs().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_key_gets_permission_denied() {
    let sink = MemorySink::new();
    let config = IntakeConfig {
        denied_api_keys: vec!["revoked".into()],
        api_keys: vec!["revoked".into()],
        ..Default::default()
    };
    let intake = intake_with(config, Arc::new(sink)).await;
    let err = open(&intake, Generation::V3, Some("revoked"), None)
        .await
        .err()
        .expect("refused");
    assert_eq!(err.code(), Code::PermissionDenied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_content_encoding_is_invalid_argument() {
    let (intake, _) = intake().await;
    let err = open(&intake, Generation::V3, Some(KEY), Some("br"))
        .await
        .err()
        .expect("refused");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("br"), "{}", err.message());
}

/// Graceful shutdown: in-flight work is acked, streams end with OK, and the server stops within the grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_streams_with_ok_after_acking() {
    let (intake, sink) = intake().await;
    let mut c = open_v3(&intake).await;
    c.send_ok(0, healthy(2, "env:a")).await;
    c.send(1, healthy(3, "env:a")).await;
    let ack = c
        .next()
        .await
        .expect("no error")
        .expect("ack of batch 1 before the end");
    assert_eq!(ack.batch_id, 1);
    let started = std::time::Instant::now();
    let stop = tokio::spawn(intake.shutdown());
    let (code, _, acks) = c.finish().await;
    assert_eq!(
        code,
        Code::Ok,
        "the intake ends its streams with OK on shutdown"
    );
    assert!(acks.is_empty());
    stop.await.expect("joined").expect("clean shutdown");
    assert!(started.elapsed() < std::time::Duration::from_secs(25));
    assert_eq!(sink.logs().len(), 5);
}

/// The health service reports SERVING for both protocol services.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_serving() {
    let (intake, _) = intake().await;
    let url = format!("http://{}", intake.local_addr());
    let channel = tonic::transport::Endpoint::from_shared(url)
        .expect("url")
        .connect()
        .await
        .expect("connects");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    for service in [
        "datadog.intake.stateful.StatefulIntake",
        "datadog.intake.stateful.StatefulLogsService",
    ] {
        let resp = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health answers")
            .into_inner();
        assert_eq!(
            resp.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{service}"
        );
    }
}
