//! Golden tests: batches built by hand, byte by byte from PROTOCOL.md, decode to the expected logs; and
//! canonical datums encode to exactly those bytes.

mod common;

use common::{run_v2, run_v3, v2 as w2, v3 as w3, Pb};
use serde_json::json;
use stencil_codec::datum::*;
use stencil_codec::{BatchEncoder, Compression, Generation};

fn texts(batch: &stencil_codec::DecodedBatch) -> Vec<&str> {
    batch.logs.iter().map(|l| l.message.as_str()).collect()
}

/// PROTOCOL.md §11.1 worked example, preceded by an empty snapshot.
fn worked_example() -> Vec<u8> {
    w3::seq(&[
        w3::pattern(7, "user  logged in from ", &[5, 21]),
        w3::dict(2, "info"),
        w3::dict(3, "auth"),
        w3::dict(4, "env:prod,hostname:h1,ddsource:sshd"),
        w3::log(
            Pb::new()
                .sint(1, 1_700_000_000_000)
                .varint(2, 2)
                .varint(3, 3)
                .varint(4, 4)
                .msg(6, w3::s("alice"))
                .msg(6, w3::s("10.0.0.1"))
                .varint(8, 1),
        ),
        w3::log(
            Pb::new()
                .sint(1, 250)
                .msg(6, w3::s("bob"))
                .msg(6, w3::s("10.0.0.2")),
        ),
    ])
}

#[test]
fn worked_example_decodes() {
    let batches = run_v3(&[Vec::new(), worked_example()]).expect("valid stream");
    assert!(batches[0].logs.is_empty());
    let logs = &batches[1].logs;
    assert_eq!(
        texts(&batches[1]),
        [
            "user alice logged in from 10.0.0.1",
            "user bob logged in from 10.0.0.2"
        ]
    );
    assert_eq!(
        (logs[0].timestamp, logs[1].timestamp),
        (1_700_000_000_000, 1_700_000_000_250)
    );
    for log in logs {
        assert_eq!(log.status.as_deref(), Some("info"));
        assert_eq!(log.service.as_deref(), Some("auth"));
        assert_eq!(log.tag("ddsource"), Some("sshd"));
        assert_eq!(log.tags().count(), 3);
        assert!(log.json.is_none());
    }
}

#[test]
fn encoder_reproduces_the_worked_example_bytes() {
    let datums = vec![
        Datum::PatternDefine(PatternDefine {
            id: 7,
            template: "user  logged in from ".into(),
            pos_list: vec![5, 21],
        }),
        Datum::DictDefine(DictDefine {
            id: 2,
            value: "info".into(),
        }),
        Datum::DictDefine(DictDefine {
            id: 3,
            value: "auth".into(),
        }),
        Datum::DictDefine(DictDefine {
            id: 4,
            value: "env:prod,hostname:h1,ddsource:sshd".into(),
        }),
        log(1_700_000_000_000, pat(7, &["alice", "10.0.0.1"])),
        log(1_700_000_000_250, pat(7, &["bob", "10.0.0.2"])),
    ];
    let bytes = BatchEncoder::new(Generation::V3, Compression::Identity)
        .serialize(&datums)
        .expect("encodable");
    assert_eq!(bytes, worked_example());
}

fn pat(id: u64, values: &[&str]) -> Content {
    Content::Pattern {
        id,
        values: values
            .iter()
            .map(|v| Value::Str((*v).into()).into())
            .collect(),
    }
}

fn log(timestamp: i64, content: Content) -> Datum {
    Datum::Log(Log {
        timestamp,
        status: Some(Value::Dict(2)),
        service: Some(Value::Dict(3)),
        tags: Some(Value::Dict(4)),
        content,
        json: None,
        uuid: None,
    })
}

/// Batch 0 snapshot, then data batches: registers reset per batch, state persists, pattern 0 follows a
/// define, sentinels 0 and 1, negative deltas, raw logs between structured ones, typed values.
#[test]
fn snapshot_then_data_batches() {
    let snapshot = w3::seq(&[
        w3::pattern(1, "GET  ", &[4, 5]),
        w3::pattern(2, "took ms", &[5]),
        w3::dict(2, "info"),
        w3::dict(3, "web"),
        w3::dict(5, "/index.html"),
    ]);
    let data1 = w3::seq(&[
        // Absolute timestamp (first of the batch), explicit ids, pattern 1 with a dict value and an int.
        w3::log(
            Pb::new()
                .sint(1, 1_000_000)
                .varint(2, 2)
                .varint(3, 3)
                .varint(4, 1)
                .varint(5, 1)
                .msg(6, w3::d(5))
                .msg(6, w3::i(200))
                .varint(8, 1),
        ),
        // Negative delta; sentinels 0 everywhere; pattern 0 = last (1).
        w3::log(Pb::new().sint(1, -40).msg(6, w3::s("/a")).msg(6, w3::i(-1))),
        // A raw log in between: pattern_id ignored, last pattern untouched; status becomes absent (1).
        w3::log(
            Pb::new()
                .sint(1, 0)
                .varint(2, 1)
                .str(7, "free text  with  spaces"),
        ),
        // pattern 0 still means 1; status 0 = previous = absent.
        w3::log(Pb::new().sint(1, 5).msg(6, w3::s("/b")).msg(6, w3::i(404))),
        // A define sets the last pattern id: the next log carries 0 and means 2.
        w3::pattern(3, "x", &[0]),
        w3::pattern(2, "took  ms", &[5]),
        w3::log(Pb::new().sint(1, 1).msg(6, Pb::new().double(2, 12.5))),
    ]);
    let data2 = w3::seq(&[
        // Registers reset: explicit values again. Float, bool, raw JSON values.
        w3::log(
            Pb::new()
                .sint(1, 2_000_000)
                .varint(2, 2)
                .varint(3, 1)
                .varint(4, 1)
                .varint(5, 2)
                .msg(6, Pb::new().varint(6, 1))
                .varint(8, 1),
        ),
        w3::log(
            Pb::new()
                .sint(1, -2_000_000)
                .msg(6, Pb::new().bytes(7, br#"{"k":[1,2]}"#)),
        ),
    ]);
    let batches = run_v3(&[snapshot, data1, data2]).expect("valid stream");
    let b1 = &batches[1];
    assert_eq!(
        texts(b1),
        [
            "GET /index.html 200",
            "GET /a -1",
            "free text  with  spaces",
            "GET /b 404",
            "took 12.5 ms"
        ]
    );
    let ts: Vec<i64> = b1.logs.iter().map(|l| l.timestamp).collect();
    assert_eq!(ts, [1_000_000, 999_960, 999_960, 999_965, 999_966]);
    let status: Vec<_> = b1.logs.iter().map(|l| l.status.as_deref()).collect();
    assert_eq!(status, [Some("info"), Some("info"), None, None, None]);
    assert!(b1
        .logs
        .iter()
        .all(|l| l.service.as_deref() == Some("web") && l.tags.is_none()));

    let b2 = &batches[2];
    assert_eq!(texts(b2), ["took true ms", r#"took {"k":[1,2]} ms"#]);
    assert_eq!((b2.logs[0].timestamp, b2.logs[1].timestamp), (2_000_000, 0));
    assert!(b2.logs[0].service.is_none());
}

#[test]
fn delta_encoding_sync_sets_registers() {
    let batch = w3::seq(&[
        w3::pattern(9, "n=", &[2]),
        w3::dict(2, "warn"),
        w3::sync(
            Pb::new()
                .varint(1, 5_000)
                .varint(2, 9)
                .varint(4, 2)
                .varint(5, 1)
                .varint(3, 1)
                .varint(6, 1),
        ),
        w3::log(Pb::new().sint(1, 7).msg(6, w3::i(1))),
    ]);
    let batches = run_v3(&[batch]).expect("valid");
    let l = &batches[0].logs[0];
    assert_eq!(
        (l.timestamp, l.message.as_str(), l.status.as_deref()),
        (5_007, "n=1", Some("warn"))
    );
}

/// Templates and pos_list count code points: multi-byte characters before and between holes.
#[test]
fn pos_list_counts_code_points() {
    let batch = w3::seq(&[
        w3::pattern(1, "é→ü:  ", &[4, 5, 6]),
        w3::log(
            Pb::new()
                .sint(1, 1)
                .varint(2, 1)
                .varint(3, 1)
                .varint(4, 1)
                .msg(6, w3::s("ä"))
                .msg(6, w3::s("😀"))
                .msg(6, w3::s(""))
                .varint(8, 1),
        ),
    ]);
    let batches = run_v3(&[batch]).expect("valid");
    assert_eq!(batches[0].logs[0].message, "é→ü:ä 😀 ");
}

/// A JSON schema with a column of every kind, nested and escaped key paths, and the message re-inserted.
#[test]
fn json_schema_columns_of_every_kind() {
    let keys = [
        (10, "n"),         // NULL
        (11, "ok"),        // BOOL
        (12, "count"),     // INT
        (13, "ratio"),     // FLOAT
        (14, "level"),     // DICT_STRING
        (15, "user.name"), // STRING, nested
        (16, "data"),      // RAW_JSON object; the message goes into it
        (17, "a\\.b"),     // escaped dot: a literal key "a.b"
        (18, "flag2"),     // second BOOL
        (19, "big"),       // RAW_JSON number too large for int64
    ];
    let mut datums: Vec<Pb> = keys.iter().map(|(id, k)| w3::dict(*id, k)).collect();
    datums.push(w3::dict(20, "data.msg"));
    datums.push(w3::dict(21, "error"));
    datums.push(w3::schema(
        3,
        &keys.map(|(id, _)| id),
        20,
        &[1, 2, 3, 4, 5, 6, 7, 1, 2, 7],
    ));
    datums.push(w3::log(
        Pb::new()
            .sint(1, 42)
            .varint(2, 1)
            .varint(3, 1)
            .varint(4, 1)
            .str(7, "disk full")
            .varint(8, 3)
            .packed_sint(9, &[-7])
            .packed_double(10, &[1e21])
            .packed(11, &[21])
            .bytes(12, b"{}")
            .bytes(12, b"16363125235853554000")
            .str(13, "bob")
            .bytes(14, &[0b10]),
    ));
    let batches = run_v3(&[w3::seq(&datums)]).expect("valid");
    let log = &batches[0].logs[0];
    assert_eq!(log.message, "disk full");
    let doc = serde_json::Value::Object(log.json.clone().expect("a JSON log"));
    let expected: serde_json::Value = serde_json::from_str(
        r#"{"n":null,"ok":false,"count":-7,"ratio":1e+21,"level":"error","user":{"name":"bob"},
            "data":{"msg":"disk full"},"a.b":null,"flag2":true,"big":16363125235853554000}"#,
    )
    .expect("valid JSON");
    assert_eq!(doc, expected);
    assert_eq!(doc["big"].to_string(), "16363125235853554000");
    assert_eq!(doc["ratio"].to_string(), "1e+21");
    assert_eq!(doc, json!(expected));
}

/// v2: snapshot with 0 or none, tags absent = same as previous, status as a value, key-list JSON, service
/// from the tags, early-agent absolute timestamps.
#[test]
fn v2_stream() {
    let snapshot = w2::seq(&[
        w2::pattern(1, "id= ok", &[3]),
        w2::dict(0, "service:api,env:prod"),
        w2::dict(7, "a,b"),
    ]);
    let data = w2::seq(&[
        w2::log(
            Pb::new()
                .sint(1, 1_700_000_000_000)
                .msg(2, Pb::new().varint(1, 1).msg(2, w3::i(5)))
                .msg(4, w2::tagset(w3::d(0)))
                .msg(6, w3::s("info")),
        ),
        // Tags absent = previous; a small delta; a raw log.
        w2::log(Pb::new().sint(1, 10).str(3, "raw line")),
        // An early-agent absolute timestamp (>= 10^12) is read as absolute; tags "" drops them.
        w2::log(
            Pb::new()
                .sint(1, 1_700_000_005_000)
                .msg(
                    2,
                    Pb::new()
                        .msg(2, w3::s("x"))
                        .varint(5, 7)
                        .msg(6, w3::i(1))
                        .msg(6, w3::s("two"))
                        .msg(4, w3::s("msg")),
                )
                .msg(4, w2::tagset(w3::s(""))),
        ),
    ]);
    let batches = run_v2(&[snapshot, data]).expect("valid v2 stream");
    let logs = &batches[1].logs;
    assert_eq!(texts(&batches[1]), ["id=5 ok", "raw line", "id=x ok"]);
    assert_eq!(
        logs.iter().map(|l| l.timestamp).collect::<Vec<_>>(),
        [1_700_000_000_000, 1_700_000_000_010, 1_700_000_005_000]
    );
    assert_eq!(logs[0].service.as_deref(), Some("api"));
    assert_eq!(logs[1].tags.as_deref(), Some("service:api,env:prod"));
    assert_eq!(logs[0].status.as_deref(), Some("info"));
    assert!(logs[1].status.is_none());
    assert!(logs[2].tags.is_none() && logs[2].service.is_none());
    let doc = serde_json::Value::Object(logs[2].json.clone().expect("JSON"));
    assert_eq!(doc, json!({"a": 1, "b": "two", "msg": "id=x ok"}));
}

/// Newer v2 agents (upstream): `Log.service = 7` as its own field, and `DynamicValue` with `bool_value = 6`,
/// `raw_json_value = 7` and `render_as_string = 5`, as in v3.
#[test]
fn v2_newer_fields() {
    let snapshot = w2::seq(&[w2::pattern(1, "ok= n= v=", &[3, 6, 9])]);
    let data = w2::seq(&[w2::log(
        Pb::new()
            .sint(1, 1_700_000_000_000)
            .msg(
                2,
                Pb::new()
                    .varint(1, 1)
                    .msg(2, Pb::new().varint(6, 1))
                    .msg(2, Pb::new().bytes(7, br#"{"a":[1,2]}"#))
                    .msg(2, Pb::new().varint(1, 446).varint(5, 1)),
            )
            .msg(6, w3::s("warn"))
            .msg(7, w3::s("checkout")),
    )]);
    let batches = run_v2(&[snapshot, data]).expect("newer v2 fields decode");
    let log = &batches[1].logs[0];
    assert_eq!(log.message, r#"ok=true n={"a":[1,2]} v=446"#);
    assert_eq!(log.service.as_deref(), Some("checkout"));
    assert_eq!(log.status.as_deref(), Some("warn"));
    // Raw JSON that is not JSON is refused, as in v3.
    let bad = w2::seq(&[w2::log(Pb::new().sint(1, 1).msg(
        2,
        Pb::new().varint(1, 1).msg(2, Pb::new().bytes(7, b"{nope")),
    ))]);
    let snapshot = w2::seq(&[w2::pattern(1, "x", &[1])]);
    assert!(run_v2(&[snapshot, bad]).is_err());
}

#[test]
fn v2_stream_may_start_at_batch_1() {
    let mut dec = common::decoder(Generation::V2, Compression::Identity);
    let b = dec
        .decode(
            1,
            &w2::seq(&[w2::log(Pb::new().sint(1, 5).str(3, "hello"))]),
        )
        .expect("v2 starts at 1");
    assert_eq!(b.logs[0].message, "hello");
}

/// Deletes remove; deleting an unknown id is ignored; a later define restores the id.
#[test]
fn deletes_are_honoured() {
    let b0 = w3::seq(&[
        w3::pattern(1, "a", &[1]),
        w3::dict(2, "v"),
        w3::dict_delete(99),
        w3::pattern_delete(55),
    ]);
    let b1 = w3::seq(&[
        w3::pattern_delete(1),
        w3::pattern(1, "b", &[0]),
        w3::log(
            Pb::new()
                .sint(1, 1)
                .varint(2, 1)
                .varint(3, 1)
                .varint(4, 1)
                .msg(6, w3::d(2))
                .varint(8, 1),
        ),
    ]);
    let batches = run_v3(&[b0, b1]).expect("valid");
    assert_eq!(batches[1].logs[0].message, "vb");
    let b2 = w3::seq(&[
        w3::dict_delete(2),
        w3::log(
            Pb::new()
                .sint(1, 1)
                .varint(2, 1)
                .varint(3, 1)
                .varint(4, 1)
                .varint(5, 1)
                .msg(6, w3::d(2))
                .varint(8, 1),
        ),
    ]);
    let mut dec = common::decoder(Generation::V3, Compression::Identity);
    dec.decode(0, &w3::seq(&[w3::pattern(1, "a", &[1]), w3::dict(2, "v")]))
        .expect("snapshot");
    let err = dec.decode(1, &b2).expect_err("deleted id is unknown");
    assert_eq!(
        err.kind,
        stencil_codec::ErrorKind::UnknownId {
            space: stencil_codec::Space::Dictionary,
            id: 2
        }
    );
}

/// Every codec carries the same hand-built batch.
#[test]
fn all_codecs_decode_the_same_batch() {
    let raw = worked_example();
    for c in [Compression::Identity, Compression::GZIP, Compression::ZSTD] {
        let mut dec = common::decoder(Generation::V3, c);
        let out = dec
            .decode(0, &c.compress(&raw).expect("compress"))
            .expect("decodes");
        assert_eq!(out.logs.len(), 2, "{c:?}");
        assert_eq!(out.decompressed_len, raw.len());
    }
}
