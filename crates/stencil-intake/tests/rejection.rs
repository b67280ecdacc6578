//! Rejections and limits against the real server: one test per case. Each asserts the status code and
//! that a healthy stream opened in parallel keeps working afterwards.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use stencil_codec::datum::*;
use stencil_codec::{Compression, Generation, Limits};
use stencil_intake::{IntakeConfig, MemorySink, RunningIntake};
use tonic::Code;

/// Opens a healthy stream, sends `bad` batches on another stream, checks the status, then checks that the
/// healthy stream still works. Returns the status message.
async fn rejects(
    intake: &RunningIntake,
    generation: Generation,
    encoding: Option<&str>,
    bad: Vec<(u32, Vec<u8>)>,
    code: Code,
) -> String {
    let mut healthy_stream = open_v3(intake).await;
    healthy_stream.send_ok(0, healthy(1, "env:healthy")).await;

    let mut bad_stream = open(intake, generation, Some(KEY), encoding)
        .await
        .expect("opens");
    for (id, data) in bad {
        bad_stream.send(id, data).await;
    }
    let (got, message, _) = bad_stream.finish().await;
    assert_eq!(got, code, "status message: {message}");

    healthy_stream.send_ok(1, healthy(2, "env:healthy")).await;
    message
}

fn v3(datums: &[Datum]) -> Vec<u8> {
    encode(Generation::V3, Compression::ZSTD, datums)
}

fn log(content: Content) -> Datum {
    Datum::Log(Log {
        timestamp: 1,
        status: None,
        service: None,
        tags: None,
        content,
        json: None,
        uuid: None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_pattern_id() {
    let (intake, _) = intake().await;
    let msg = rejects(
        &intake,
        Generation::V3,
        Some("zstd"),
        vec![(
            0,
            v3(&[log(Content::Pattern {
                id: 9,
                values: vec![],
            })]),
        )],
        Code::InvalidArgument,
    )
    .await;
    assert!(
        msg.contains("batch 0") && msg.contains("pattern id 9"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_dictionary_id() {
    let (intake, _) = intake().await;
    let bad = Datum::Log(Log {
        timestamp: 1,
        status: Some(Value::Dict(77)),
        service: None,
        tags: None,
        content: Content::Raw("x".into()),
        json: None,
        uuid: None,
    });
    let msg = rejects(
        &intake,
        Generation::V3,
        Some("zstd"),
        vec![(0, v3(&[bad]))],
        Code::InvalidArgument,
    )
    .await;
    assert!(msg.contains("dictionary id 77"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_schema_id() {
    let (intake, _) = intake().await;
    let bad = Datum::Log(Log {
        timestamp: 1,
        status: None,
        service: None,
        tags: None,
        content: Content::Raw("x".into()),
        json: Some(JsonContext::Columns {
            schema: 40,
            values: vec![],
        }),
        uuid: None,
    });
    let msg = rejects(
        &intake,
        Generation::V3,
        Some("zstd"),
        vec![(0, v3(&[bad]))],
        Code::InvalidArgument,
    )
    .await;
    assert!(msg.contains("JSON schema id 40"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pos_list_out_of_range() {
    let (intake, _) = intake().await;
    let bad = Datum::PatternDefine(PatternDefine {
        id: 1,
        template: "ab".into(),
        pos_list: vec![3],
    });
    let msg = rejects(
        &intake,
        Generation::V3,
        Some("zstd"),
        vec![(0, v3(&[bad]))],
        Code::InvalidArgument,
    )
    .await;
    assert!(msg.contains("pos_list"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_number_of_values() {
    let (intake, _) = intake().await;
    let define = Datum::PatternDefine(PatternDefine {
        id: 1,
        template: "a b".into(),
        pos_list: vec![1, 2],
    });
    let bad = log(Content::Pattern {
        id: 1,
        values: vec![Value::Int(1).into()],
    });
    let msg = rejects(
        &intake,
        Generation::V3,
        Some("zstd"),
        vec![(0, v3(&[define, bad]))],
        Code::InvalidArgument,
    )
    .await;
    assert!(
        msg.contains("2 wildcards") && msg.contains("1 values"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8() {
    let (intake, _) = intake().await;
    // LogDatumSequence{data: LogDatum{dict_entry_define{id 2, value "\xff"}}}, built by hand, uncompressed.
    let bytes = vec![0x0a, 0x07, 0x0a, 0x05, 0x08, 0x02, 0x12, 0x01, 0xff];
    let msg = rejects(
        &intake,
        Generation::V3,
        Some("identity"),
        vec![(0, bytes)],
        Code::InvalidArgument,
    )
    .await;
    assert!(msg.contains("UTF-8"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_bytes() {
    let (intake, _) = intake().await;
    let msg = rejects(
        &intake,
        Generation::V3,
        Some("identity"),
        vec![(0, vec![0xff; 12])],
        Code::InvalidArgument,
    )
    .await;
    assert!(msg.contains("protobuf"), "{msg}");
    let msg = rejects(
        &intake,
        Generation::V2,
        Some("zstd"),
        vec![(0, b"not zstd at all".to_vec())],
        Code::InvalidArgument,
    )
    .await;
    assert!(msg.contains("corrupt zstd"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_id_out_of_sequence() {
    let (intake, _) = intake().await;
    let msg = rejects(
        &intake,
        Generation::V3,
        Some("zstd"),
        vec![(1, Vec::new())],
        Code::InvalidArgument,
    )
    .await;
    assert!(msg.contains("out of sequence"), "{msg}");
    // A gap: the accepted batch is acked before the status.
    let mut c = open_v3(&intake).await;
    c.send(0, Vec::new()).await;
    c.send(2, Vec::new()).await;
    let (code, _, acks) = c.finish().await;
    assert_eq!((code, acks), (Code::InvalidArgument, vec![0]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn later_batches_are_not_acked_after_a_rejection() {
    let (intake, sink) = intake().await;
    let mut c = open_v3(&intake).await;
    c.send(0, healthy(1, "env:a")).await;
    c.send(1, vec![1, 2, 3]).await;
    c.send(2, healthy(1, "env:a")).await;
    let (code, message, acks) = c.finish().await;
    assert_eq!((code, acks), (Code::InvalidArgument, vec![0]));
    assert!(message.contains("batch 1"), "{message}");
    assert_eq!(sink.logs().len(), 1);
}

async fn limited(config: IntakeConfig) -> RunningIntake {
    intake_with(config, Arc::new(MemorySink::new())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_max_message_bytes() {
    let intake = limited(IntakeConfig {
        max_message_bytes: 4096,
        ..Default::default()
    })
    .await;
    let big = encode(
        Generation::V3,
        Compression::Identity,
        &sample_datums(1, 200, "env:a"),
    );
    assert!(big.len() > 4096);
    let msg = rejects(
        &intake,
        Generation::V3,
        Some("identity"),
        vec![(0, big)],
        Code::ResourceExhausted,
    )
    .await;
    assert!(msg.contains("max_message_bytes"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_decompressed_bytes_bomb() {
    let limits = Limits {
        max_decompressed_bytes: 64 << 10,
        ..Limits::default()
    };
    let intake = limited(IntakeConfig {
        limits,
        ..Default::default()
    })
    .await;
    let bomb = Compression::ZSTD
        .compress(&vec![0u8; 32 << 20])
        .expect("compress");
    assert!(bomb.len() < 4096, "small payload, {} bytes", bomb.len());
    let msg = rejects(
        &intake,
        Generation::V3,
        Some("zstd"),
        vec![(0, bomb)],
        Code::ResourceExhausted,
    )
    .await;
    assert!(msg.contains("decompress"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_state_entries_and_bytes() {
    let limits = Limits {
        max_dict_entries: 10,
        max_state_bytes: 2_000,
        ..Limits::default()
    };
    let intake = limited(IntakeConfig {
        limits,
        ..Default::default()
    })
    .await;
    let many: Vec<Datum> = (2..20)
        .map(|id| {
            Datum::DictDefine(DictDefine {
                id,
                value: "v".into(),
            })
        })
        .collect();
    let msg = rejects(
        &intake,
        Generation::V3,
        Some("zstd"),
        vec![(0, v3(&many))],
        Code::ResourceExhausted,
    )
    .await;
    assert!(msg.contains("dictionary entries"), "{msg}");
    let big = vec![Datum::DictDefine(DictDefine {
        id: 2,
        value: "x".repeat(3_000),
    })];
    let msg = rejects(
        &intake,
        Generation::V3,
        Some("zstd"),
        vec![(0, v3(&big))],
        Code::ResourceExhausted,
    )
    .await;
    assert!(msg.contains("state bytes"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_reconstructed_output() {
    let limits = Limits {
        max_output_bytes: 50_000,
        ..Limits::default()
    };
    let intake = limited(IntakeConfig {
        limits,
        ..Default::default()
    })
    .await;
    let mut datums = vec![
        Datum::PatternDefine(PatternDefine {
            id: 1,
            template: String::new(),
            pos_list: vec![0],
        }),
        Datum::DictDefine(DictDefine {
            id: 2,
            value: "y".repeat(5_000),
        }),
    ];
    datums.extend((0..20).map(|_| {
        log(Content::Pattern {
            id: 1,
            values: vec![Value::Dict(2).into()],
        })
    }));
    let msg = rejects(
        &intake,
        Generation::V3,
        Some("zstd"),
        vec![(0, v3(&datums))],
        Code::ResourceExhausted,
    )
    .await;
    assert!(msg.contains("reconstructed output"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_concurrent_streams() {
    let intake = limited(IntakeConfig {
        max_concurrent_streams: 2,
        ..Default::default()
    })
    .await;
    let mut a = open_v3(&intake).await;
    a.send_ok(0, healthy(1, "env:a")).await;
    let mut b = open_v3(&intake).await;
    b.send_ok(0, healthy(1, "env:b")).await;
    let err = open(&intake, Generation::V3, Some(KEY), Some("zstd"))
        .await
        .err()
        .expect("third stream refused");
    assert_eq!(err.code(), Code::Unavailable);
    assert!(
        err.message().contains("max_concurrent_streams"),
        "{}",
        err.message()
    );
    a.send_ok(1, healthy(1, "env:a")).await;
    // Closing one frees its slot.
    b.half_close();
    assert_eq!(b.finish().await.0, Code::Ok);
    let mut deadline = 50;
    let mut c = loop {
        match open(&intake, Generation::V3, Some(KEY), Some("zstd")).await {
            Ok(c) => break c,
            Err(_) if deadline > 0 => {
                deadline -= 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("slot never freed: {e}"),
        }
    };
    c.send_ok(0, healthy(1, "env:c")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_idle_timeout_ends_with_ok() {
    let intake = limited(IntakeConfig {
        idle_timeout: Duration::from_millis(300),
        ..Default::default()
    })
    .await;
    let mut idle = open_v3(&intake).await;
    idle.send_ok(0, healthy(1, "env:idle")).await;
    let started = std::time::Instant::now();
    let (code, _, acks) = idle.finish().await;
    assert_eq!(code, Code::Ok, "idle streams end gracefully");
    assert!(acks.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(250));
    // A stream that keeps sending is not cut.
    let mut busy = open_v3(&intake).await;
    for id in 0..5 {
        busy.send_ok(id, healthy(1, "env:busy")).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// #16: a schema key path of 21,000 segments in a 100-byte batch used to overflow the stack while the
/// document was built and serialized, aborting the whole intake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_json_key_path_is_rejected_not_a_crash() {
    let (intake, sink) = intake().await;
    let deep = Datum::Log(Log {
        timestamp: 1,
        status: None,
        service: None,
        tags: None,
        content: Content::Raw("x".into()),
        json: Some(JsonContext::Columns {
            schema: 2,
            values: vec![JsonValue::Null],
        }),
        uuid: None,
    });
    let datums = [
        Datum::DictDefine(DictDefine {
            id: 2,
            value: format!("{}k", "k.".repeat(21_000)),
        }),
        Datum::DictDefine(DictDefine {
            id: 3,
            value: "message".into(),
        }),
        Datum::SchemaDefine(SchemaDefine {
            id: 2,
            keys: vec![2],
            message_key: 3,
            kinds: vec![JsonKind::Null],
            message_at: None,
        }),
        deep,
    ];
    let payload = v3(&datums);
    assert!(payload.len() < 200, "{} bytes", payload.len());
    let msg = rejects(
        &intake,
        Generation::V3,
        Some("zstd"),
        vec![(0, payload)],
        Code::InvalidArgument,
    )
    .await;
    assert!(msg.contains("deeper than 64"), "{msg}");
    // A path at the limit is still fine.
    let mut stream = open_v3(&intake).await;
    let mut ok = datums.clone();
    ok[0] = Datum::DictDefine(DictDefine {
        id: 2,
        value: format!("{}k", "k.".repeat(63)),
    });
    stream.send_ok(0, v3(&ok)).await;
    assert!(sink.logs().iter().any(|(_, r)| r.json.is_some()));
}

/// #16: empty logs cost 4 wire bytes each and used to count 0 bytes of output, so one small message
/// rebuilt into gigabytes and was acked. Every record now costs at least its overhead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiny_logs_count_their_record_overhead() {
    let limits = Limits {
        max_output_bytes: 4 << 20,
        ..Limits::default()
    };
    let intake = limited(IntakeConfig {
        limits,
        ..Default::default()
    })
    .await;
    let mut datums = vec![Datum::PatternDefine(PatternDefine {
        id: 1,
        template: String::new(),
        pos_list: vec![],
    })];
    datums.extend((0..100_000).map(|_| {
        log(Content::Pattern {
            id: 1,
            values: vec![],
        })
    }));
    let payload = v3(&datums);
    assert!(payload.len() < 20_000, "{} bytes", payload.len());
    let msg = rejects(
        &intake,
        Generation::V3,
        Some("zstd"),
        vec![(0, payload)],
        Code::ResourceExhausted,
    )
    .await;
    assert!(msg.contains("reconstructed output"), "{msg}");
}

/// #16: a `StatefulBatch` that is not valid protobuf was answered with tonic's `INTERNAL`, which agents
/// retry forever. It is the client's fault: `INVALID_ARGUMENT`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_message_is_invalid_argument() {
    /// Field 1 (`batch_id`, a varint) sent length-delimited: not a `StatefulBatch`.
    #[derive(Clone, PartialEq, prost::Message)]
    struct NotABatch {
        #[prost(string, tag = "1")]
        batch_id: String,
    }
    let (intake, _) = intake().await;
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", intake.local_addr()))
            .expect("url")
            .connect()
            .await
            .expect("connects");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let mut request = tonic::Request::new(tokio_stream::iter(vec![NotABatch {
        batch_id: "zero".into(),
    }]));
    request
        .metadata_mut()
        .insert("dd-api-key", KEY.parse().expect("ascii"));
    request
        .metadata_mut()
        .insert("dd-content-encoding", "zstd".parse().expect("ascii"));
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/datadog.intake.stateful.StatefulIntake/StatefulStream",
    );
    let codec =
        tonic_prost::ProstCodec::<NotABatch, stencil_proto::stateful::BatchStatus>::default();
    let outcome = match grpc.streaming(request, path, codec).await {
        Ok(response) => response.into_inner().message().await.map(|_| ()),
        Err(status) => Err(status),
    };
    let status = outcome.expect_err("the stream must fail");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("does not decode"), "{status:?}");
}

/// #16: the per-stream limits bound one stream, not many. Under a process-wide memory budget,
/// decompression bombs on several streams at once get `UNAVAILABLE` (overload: agents retry) as soon as
/// the budget is used up, instead of each inflating to its own cap, and a healthy stream keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_budget_bounds_concurrent_bombs() {
    let limits = Limits {
        max_decompressed_bytes: 32 << 20,
        ..Limits::default()
    };
    let intake = limited(IntakeConfig {
        limits,
        memory_budget: 8 << 20,
        ..Default::default()
    })
    .await;
    let bomb = Compression::ZSTD
        .compress(&vec![0u8; 30 << 20])
        .expect("compress");
    let mut healthy_stream = open_v3(&intake).await;
    healthy_stream.send_ok(0, healthy(1, "env:healthy")).await;
    let bomb_stream = || async {
        let mut s = open(&intake, Generation::V3, Some(KEY), Some("zstd")).await?;
        s.send(0, bomb.clone()).await;
        let (code, message, _) = s.finish().await;
        Ok::<_, tonic::Status>((code, message))
    };
    let (a, b, c, d) = tokio::join!(bomb_stream(), bomb_stream(), bomb_stream(), bomb_stream());
    for outcome in [a, b, c, d] {
        let (code, message) = match outcome {
            Ok(done) => done,
            // Refused at open because the budget was in use at that moment: also UNAVAILABLE.
            Err(status) => (status.code(), status.message().to_string()),
        };
        assert_eq!(code, Code::Unavailable, "{message}");
        assert!(message.contains("memory budget"), "{message}");
    }
    healthy_stream.send_ok(1, healthy(2, "env:healthy")).await;
    let mut later = open_v3(&intake).await;
    later.send_ok(0, healthy(2, "env:later")).await;
}
