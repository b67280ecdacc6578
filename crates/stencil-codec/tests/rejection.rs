//! Rejection tests: one per "must reject" case of PROTOCOL.md §14 that the codec owns. Each asserts the
//! error kind and its gRPC status, and that the decoder refuses everything afterwards.

mod common;

use common::{decoder, run_v2, run_v3, v2 as w2, v3 as w3, Pb};
use stencil_codec::{Compression, ErrorKind, Generation, GrpcCode, Limits, Space, StreamDecoder};

/// The first log of a batch with every register explicit.
fn full_log() -> Pb {
    Pb::new()
        .sint(1, 1)
        .varint(2, 1)
        .varint(3, 1)
        .varint(4, 1)
        .varint(8, 1)
}

fn v3_err(batches: &[Vec<u8>]) -> ErrorKind {
    run_v3(batches).expect_err("must be rejected").kind
}

fn assert_invalid(kind: ErrorKind) {
    assert_eq!(kind.grpc_code(), GrpcCode::InvalidArgument, "{kind}");
}

#[test]
fn unknown_pattern_id() {
    let k = v3_err(&[w3::seq(&[w3::log(full_log().varint(5, 4))])]);
    assert_eq!(
        k,
        ErrorKind::UnknownId {
            space: Space::Pattern,
            id: 4
        }
    );
    assert_invalid(k);
}

#[test]
fn unknown_dictionary_ids_in_every_place() {
    let pattern = w3::pattern(1, "", &[0]);
    // As a Log field.
    let k = v3_err(&[w3::seq(&[w3::log(
        Pb::new()
            .sint(1, 1)
            .varint(2, 9)
            .varint(3, 1)
            .varint(4, 1)
            .varint(8, 1)
            .str(7, "x"),
    )])]);
    assert_eq!(
        k,
        ErrorKind::UnknownId {
            space: Space::Dictionary,
            id: 9
        }
    );
    // As a dict_index value.
    let k = v3_err(&[w3::seq(&[
        pattern.clone(),
        w3::log(full_log().msg(6, w3::d(8))),
    ])]);
    assert_eq!(
        k,
        ErrorKind::UnknownId {
            space: Space::Dictionary,
            id: 8
        }
    );
    // As a schema key.
    let k = v3_err(&[w3::seq(&[w3::dict(2, "msg"), w3::schema(2, &[3], 2, &[1])])]);
    assert_eq!(
        k,
        ErrorKind::UnknownId {
            space: Space::Dictionary,
            id: 3
        }
    );
    // As a DICT_STRING column.
    let k = v3_err(&[w3::seq(&[
        w3::dict(2, "msg"),
        w3::dict(3, "k"),
        w3::schema(2, &[3], 2, &[5]),
        w3::log(
            Pb::new()
                .sint(1, 1)
                .varint(2, 1)
                .varint(3, 1)
                .varint(4, 1)
                .str(7, "m")
                .varint(8, 2)
                .packed(11, &[77]),
        ),
    ])]);
    assert_eq!(
        k,
        ErrorKind::UnknownId {
            space: Space::Dictionary,
            id: 77
        }
    );
    assert_invalid(k);
}

#[test]
fn unknown_schema_id() {
    let k = v3_err(&[w3::seq(&[w3::log(
        Pb::new()
            .sint(1, 1)
            .varint(2, 1)
            .varint(3, 1)
            .varint(4, 1)
            .str(7, "m")
            .varint(8, 6),
    )])]);
    assert_eq!(
        k,
        ErrorKind::UnknownId {
            space: Space::Schema,
            id: 6
        }
    );
}

#[test]
fn pos_list_out_of_range_and_decreasing() {
    let k = v3_err(&[w3::seq(&[w3::pattern(1, "ab😀", &[4])])]);
    assert_eq!(
        k,
        ErrorKind::PosListOutOfRange {
            pattern_id: 1,
            pos: 4,
            len: 3
        }
    );
    assert_invalid(k);
    let k = v3_err(&[w3::seq(&[w3::pattern(1, "abc", &[2, 1])])]);
    assert_eq!(
        k,
        ErrorKind::PosListDecreasing {
            pattern_id: 1,
            index: 1
        }
    );
}

#[test]
fn wrong_number_of_values() {
    let k = v3_err(&[w3::seq(&[
        w3::pattern(1, "a b", &[1, 2]),
        w3::log(full_log().msg(6, w3::s("x"))),
    ])]);
    assert_eq!(
        k,
        ErrorKind::ValueCountMismatch {
            pattern_id: 1,
            expected: 2,
            got: 1
        }
    );
    assert_invalid(k);
    let k = v3_err(&[w3::seq(&[w3::log(
        full_log().str(7, "raw").msg(6, w3::s("x")),
    )])]);
    assert_eq!(k, ErrorKind::ValuesOnRawLog(1));
}

#[test]
fn v2_value_count_rules() {
    let bad = Pb::new().msg(
        1,
        Pb::new()
            .varint(1, 1)
            .str(2, "ab")
            .varint(3, 2)
            .packed(4, &[1]),
    );
    let k = run_v2(&[w2::seq(&[bad])]).expect_err("param_count").kind;
    assert_eq!(
        k,
        ErrorKind::ParamCountMismatch {
            pattern_id: 1,
            param_count: 2,
            pos_len: 1
        }
    );
    let k = run_v2(&[w2::seq(&[
        w2::pattern(1, "a", &[]),
        w2::dict(4, "x,y"),
        w2::log(
            Pb::new()
                .sint(1, 1)
                .msg(2, Pb::new().varint(1, 1).varint(5, 4).msg(6, w3::i(1))),
        ),
    ])])
    .expect_err("context count")
    .kind;
    assert_eq!(k, ErrorKind::ContextCountMismatch { keys: 2, values: 1 });
    let k = run_v2(&[w2::seq(&[w2::log(Pb::new().sint(1, 1))])])
        .expect_err("no content")
        .kind;
    assert_eq!(k, ErrorKind::LogWithoutContent);
}

#[test]
fn invalid_utf8_where_a_string_is_required() {
    let bad_dict = Pb::new().msg(1, Pb::new().varint(1, 2).bytes(2, &[b'a', 0xff, 0xfe]));
    let k = v3_err(&[w3::seq(&[bad_dict])]);
    assert!(matches!(k, ErrorKind::InvalidUtf8(_)), "{k:?}");
    assert_invalid(k);
    let bad_raw_log = w3::log(Pb::new().sint(1, 1).bytes(7, &[0xc3, 0x28]));
    assert!(matches!(
        v3_err(&[w3::seq(&[bad_raw_log])]),
        ErrorKind::InvalidUtf8(_)
    ));
    let bad_raw_json = w3::log(full_log().msg(6, Pb::new().bytes(7, &[b'"', 0xff, b'"'])));
    assert!(matches!(
        v3_err(&[w3::seq(&[w3::pattern(1, "", &[0]), bad_raw_json])]),
        ErrorKind::InvalidUtf8(_)
    ));
}

#[test]
fn raw_json_must_be_exactly_one_value() {
    for text in [&b"{"[..], b"1 2", b"", b"{\"a\":1}x"] {
        let log = w3::log(full_log().msg(6, Pb::new().bytes(7, text)));
        let k = v3_err(&[w3::seq(&[w3::pattern(1, "", &[0]), log])]);
        assert!(matches!(k, ErrorKind::InvalidRawJson(_)), "{text:?}: {k:?}");
    }
}

#[test]
fn truncated_or_garbage_protobuf() {
    let mut truncated = w3::seq(&[w3::dict(2, "hello world")]);
    truncated.truncate(truncated.len() - 3);
    assert!(matches!(
        v3_err(&[truncated]),
        ErrorKind::MalformedProtobuf(_)
    ));
    let k = v3_err(&[vec![
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
    ]]);
    assert!(matches!(k, ErrorKind::MalformedProtobuf(_)), "{k:?}");
    assert_invalid(k);
}

#[test]
fn corrupt_compressed_payloads() {
    for c in [Compression::ZSTD, Compression::GZIP] {
        let mut dec = decoder(Generation::V3, c);
        let err = dec
            .decode(0, b"definitely not compressed")
            .expect_err("corrupt");
        assert!(
            matches!(err.kind, ErrorKind::CorruptPayload { .. }),
            "{c:?}: {err}"
        );
        assert_eq!(err.grpc_code(), GrpcCode::InvalidArgument);
        assert_eq!(err.batch_id, Some(0));
    }
    // The right bytes under the wrong codec.
    let gz = Compression::GZIP
        .compress(&w3::seq(&[w3::dict(2, "x")]))
        .expect("gzip");
    let err = decoder(Generation::V3, Compression::ZSTD)
        .decode(0, &gz)
        .expect_err("wrong codec");
    assert!(matches!(err.kind, ErrorKind::CorruptPayload { .. }));
}

#[test]
fn decompression_bomb() {
    let limits = Limits {
        max_decompressed_bytes: 1 << 20,
        ..Limits::default()
    };
    let bomb = Compression::ZSTD
        .compress(&vec![0u8; 64 << 20])
        .expect("compress");
    assert!(
        bomb.len() < 64 << 10,
        "a small payload: {} bytes",
        bomb.len()
    );
    for c in [Compression::ZSTD, Compression::GZIP] {
        let payload = if c == Compression::ZSTD {
            bomb.clone()
        } else {
            c.compress(&vec![0u8; 8 << 20]).expect("gzip")
        };
        let mut dec = StreamDecoder::new(Generation::V3, c, limits.clone());
        let err = dec.decode(0, &payload).expect_err("bomb");
        assert_eq!(err.kind, ErrorKind::DecompressionBomb { limit: 1 << 20 });
        assert_eq!(err.grpc_code(), GrpcCode::ResourceExhausted);
    }
}

#[test]
fn batch_ids_out_of_sequence() {
    let mut dec = decoder(Generation::V3, Compression::Identity);
    let err = dec.decode(1, &[]).expect_err("v3 starts at 0");
    assert!(matches!(
        err.kind,
        ErrorKind::BatchOutOfSequence { got: 1, .. }
    ));
    assert_invalid(err.kind);
    for ids in [[0u32, 2], [0, 0], [0, 5]] {
        let mut dec = decoder(Generation::V3, Compression::Identity);
        dec.decode(ids[0], &[]).expect("first");
        let err = dec.decode(ids[1], &[]).expect_err("gap, repeat or jump");
        assert!(
            matches!(err.kind, ErrorKind::BatchOutOfSequence { .. }),
            "{ids:?}"
        );
    }
    let mut dec = decoder(Generation::V2, Compression::Identity);
    assert!(matches!(
        dec.decode(2, &[]).expect_err("v2 starts at 0 or 1").kind,
        ErrorKind::BatchOutOfSequence { .. }
    ));
}

#[test]
fn reserved_ids_cannot_be_defined() {
    assert_eq!(
        v3_err(&[w3::seq(&[w3::dict(1, "x")])]),
        ErrorKind::ReservedId {
            space: Space::Dictionary,
            id: 1
        }
    );
    assert_eq!(
        v3_err(&[w3::seq(&[w3::dict(0, "x")])]),
        ErrorKind::ReservedId {
            space: Space::Dictionary,
            id: 0
        }
    );
    assert_eq!(
        v3_err(&[w3::seq(&[w3::pattern(0, "x", &[])])]),
        ErrorKind::ReservedId {
            space: Space::Pattern,
            id: 0
        }
    );
    let k = v3_err(&[w3::seq(&[w3::dict(2, "m"), w3::schema(1, &[], 2, &[])])]);
    assert_eq!(
        k,
        ErrorKind::ReservedId {
            space: Space::Schema,
            id: 1
        }
    );
    assert_invalid(k);
    // v2 reserves no dictionary id.
    assert!(run_v2(&[w2::seq(&[w2::dict(0, "x"), w2::dict(1, "y")])]).is_ok());
}

#[test]
fn sentinel_without_previous() {
    let k = v3_err(&[w3::seq(&[w3::log(
        Pb::new()
            .sint(1, 1)
            .varint(3, 1)
            .varint(4, 1)
            .varint(8, 1)
            .str(7, "x"),
    )])]);
    assert_eq!(k, ErrorKind::SentinelWithoutPrevious { field: "status" });
    assert_invalid(k);
    let k = v3_err(&[w3::seq(&[w3::log(full_log())])]);
    assert_eq!(
        k,
        ErrorKind::SentinelWithoutPrevious {
            field: "pattern_id"
        }
    );
    // Registers reset per batch: a sentinel cannot refer to the previous batch.
    let b0 = w3::seq(&[w3::log(full_log().str(7, "x"))]);
    let b1 = w3::seq(&[w3::log(Pb::new().sint(1, 1).str(7, "y"))]);
    assert_eq!(
        v3_err(&[b0, b1]),
        ErrorKind::SentinelWithoutPrevious { field: "status" }
    );
}

#[test]
fn empty_datum_and_empty_dynamic_value() {
    assert_eq!(v3_err(&[w3::seq(&[Pb::new()])]), ErrorKind::EmptyDatum);
    // A member number we do not know is an empty oneof too.
    assert_eq!(
        v3_err(&[w3::seq(&[Pb::new().msg(42, Pb::new())])]),
        ErrorKind::EmptyDatum
    );
    let k = v3_err(&[w3::seq(&[
        w3::pattern(1, "", &[0]),
        w3::log(full_log().msg(6, Pb::new().varint(5, 1))),
    ])]);
    assert_eq!(k, ErrorKind::EmptyDynamicValue);
    assert_invalid(k);
}

#[test]
fn non_finite_floats() {
    for f in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let k = v3_err(&[w3::seq(&[
            w3::pattern(1, "", &[0]),
            w3::log(full_log().msg(6, Pb::new().double(2, f))),
        ])]);
        assert_eq!(k, ErrorKind::NonFiniteFloat);
    }
}

fn json_log(schema_kinds: &[u8], columns: Pb) -> Vec<u8> {
    let keys: Vec<u64> = (0..schema_kinds.len() as u64).map(|i| 10 + i).collect();
    let mut datums: Vec<Pb> = keys
        .iter()
        .map(|&id| w3::dict(id, &format!("k{id}")))
        .collect();
    datums.push(w3::dict(2, "msg"));
    datums.push(w3::schema(3, &keys, 2, schema_kinds));
    let log = Pb(Pb::new()
        .sint(1, 1)
        .varint(2, 1)
        .varint(3, 1)
        .varint(4, 1)
        .str(7, "m")
        .varint(8, 3)
        .0
        .into_iter()
        .chain(columns.0)
        .collect());
    datums.push(w3::log(log));
    w3::seq(&datums)
}

#[test]
fn json_kind_and_column_rules() {
    assert!(run_v3(&[json_log(
        &[3, 2, 2],
        Pb::new().packed_sint(9, &[1]).bytes(14, &[0b11])
    )])
    .is_ok());
    // Kinds length differs from keys length.
    let k = v3_err(&[w3::seq(&[
        w3::dict(2, "m"),
        w3::schema(3, &[2, 2], 2, &[1]),
    ])]);
    assert_eq!(
        k,
        ErrorKind::KindsLengthMismatch {
            schema_id: 3,
            kinds: 1,
            keys: 2
        }
    );
    // `json-order`: the message goes after at most every column (field 100, explicit presence).
    let with_index = |index: u64| {
        w3::seq(&[
            w3::dict(2, "m"),
            w3::dict(4, "k"),
            Pb::new().msg(
                3,
                Pb::new()
                    .varint(1, 3)
                    .packed(2, &[4])
                    .varint(3, 2)
                    .bytes(4, &[1])
                    .varint(100, index),
            ),
        ])
    };
    for index in [0, 1] {
        assert!(run_v3(&[with_index(index)]).is_ok(), "{index}");
    }
    for index in [2, u64::from(u32::MAX) + 1] {
        assert_eq!(
            v3_err(&[with_index(index)]),
            ErrorKind::MessageIndexOutOfRange {
                schema_id: 3,
                index,
                keys: 1
            }
        );
    }
    // Kind bytes 0 and 8.
    for bad in [0u8, 8] {
        let k = v3_err(&[json_log(&[bad], Pb::new())]);
        assert_eq!(
            k,
            ErrorKind::InvalidJsonKind {
                schema_id: 3,
                kind: bad
            }
        );
    }
    // Columns not consumed exactly: an extra int, a missing int, a bool byte too many.
    for cols in [
        Pb::new().packed_sint(9, &[1, 2]),
        Pb::new(),
        Pb::new().packed_sint(9, &[1]).bytes(14, &[1, 0]),
    ] {
        let k = v3_err(&[json_log(&[3, 2], cols.clone())]);
        assert!(
            matches!(k, ErrorKind::JsonColumnsMismatch { schema_id: 3, .. }),
            "{k:?}"
        );
        assert_invalid(k);
    }
    // Columns without a schema.
    let k = v3_err(&[w3::seq(&[w3::log(
        full_log().str(7, "x").packed_sint(9, &[1]),
    )])]);
    assert_eq!(k, ErrorKind::ColumnsWithoutSchema);
}

#[test]
fn json_path_conflicts() {
    let datums = vec![
        w3::dict(10, "a"),
        w3::dict(11, "a.b"),
        w3::dict(2, "msg"),
        w3::schema(3, &[10, 11], 2, &[3, 3]),
        w3::log(
            Pb::new()
                .sint(1, 1)
                .varint(2, 1)
                .varint(3, 1)
                .varint(4, 1)
                .str(7, "m")
                .varint(8, 3)
                .packed_sint(9, &[1, 2]),
        ),
    ];
    assert_eq!(
        v3_err(&[w3::seq(&datums)]),
        ErrorKind::JsonPathConflict("a.b".into())
    );
    // The message key colliding with a column is a duplicate path.
    let datums = vec![
        w3::dict(10, "msg"),
        w3::schema(3, &[10], 10, &[1]),
        w3::log(
            Pb::new()
                .sint(1, 1)
                .varint(2, 1)
                .varint(3, 1)
                .varint(4, 1)
                .str(7, "m")
                .varint(8, 3),
        ),
    ];
    assert_eq!(
        v3_err(&[w3::seq(&datums)]),
        ErrorKind::JsonPathConflict("msg".into())
    );
}

#[test]
fn timestamp_overflow() {
    let k = v3_err(&[w3::seq(&[
        w3::log(
            Pb::new()
                .sint(1, i64::MAX)
                .varint(2, 1)
                .varint(3, 1)
                .varint(4, 1)
                .varint(8, 1)
                .str(7, "a"),
        ),
        w3::log(Pb::new().sint(1, 1).str(7, "b")),
    ])]);
    assert_eq!(k, ErrorKind::TimestampOverflow);
    assert_invalid(k);
}

#[test]
fn state_limits() {
    let small = Limits {
        max_dict_entries: 2,
        max_state_bytes: 100,
        ..Limits::default()
    };
    let mut dec = StreamDecoder::new(Generation::V3, Compression::Identity, small.clone());
    let err = dec
        .decode(
            0,
            &w3::seq(&[
                w3::dict(2, "a"),
                w3::dict(3, "b"),
                w3::dict(2, "redefine is fine"),
                w3::dict(4, "c"),
            ]),
        )
        .expect_err("entries");
    assert_eq!(
        err.kind,
        ErrorKind::StateLimit {
            what: "dictionary entries",
            limit: 2
        }
    );
    assert_eq!(err.grpc_code(), GrpcCode::ResourceExhausted);
    let mut dec = StreamDecoder::new(Generation::V3, Compression::Identity, small);
    let err = dec
        .decode(0, &w3::seq(&[w3::pattern(1, &"x".repeat(200), &[])]))
        .expect_err("bytes");
    assert_eq!(
        err.kind,
        ErrorKind::StateLimit {
            what: "state bytes",
            limit: 100
        }
    );
}

#[test]
fn output_limit_stops_amplification() {
    // A 10 kB dictionary value referenced by many tiny logs amplifies far past the limit.
    let limits = Limits {
        max_output_bytes: 100_000,
        ..Limits::default()
    };
    let mut datums = vec![
        w3::pattern(1, "", &[0]),
        w3::dict(2, &"y".repeat(10_000)),
        w3::log(full_log().varint(5, 1).msg(6, w3::d(2))),
    ];
    for _ in 0..20 {
        datums.push(w3::log(Pb::new().msg(6, w3::d(2))));
    }
    let mut dec = StreamDecoder::new(Generation::V3, Compression::Identity, limits);
    let err = dec.decode(0, &w3::seq(&datums)).expect_err("amplification");
    assert_eq!(err.kind, ErrorKind::OutputLimit { limit: 100_000 });
    assert_eq!(err.grpc_code(), GrpcCode::ResourceExhausted);
}

#[test]
fn a_failed_stream_refuses_everything_after() {
    let mut dec = decoder(Generation::V3, Compression::Identity);
    dec.decode(0, &w3::seq(&[w3::dict(1, "reserved")]))
        .expect_err("rejected");
    let err = dec.decode(1, &[]).expect_err("poisoned");
    assert_eq!(err.kind, ErrorKind::StreamFailed);
}

#[test]
fn unsupported_content_encoding() {
    let k = Compression::from_content_encoding(Some("snappy")).expect_err("unknown codec");
    assert_eq!(k, ErrorKind::UnsupportedContentEncoding("snappy".into()));
    assert_invalid(k);
}

#[test]
fn every_reason_label_is_snake_case() {
    let kinds = [
        ErrorKind::EmptyDatum,
        ErrorKind::TimestampOverflow,
        ErrorKind::DecompressionBomb { limit: 1 },
        ErrorKind::UnknownId {
            space: Space::Pattern,
            id: 1,
        },
    ];
    for k in kinds {
        assert!(
            k.reason()
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '_'),
            "{}",
            k.reason()
        );
    }
}
