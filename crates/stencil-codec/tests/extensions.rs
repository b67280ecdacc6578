//! The negotiated extensions (`stream-zstd`, `native/3`) end to end in the codec: every batch an
//! [`ExtEncoder`] writes rebuilds to exactly the logs plain v3 rebuilds for the same datums, in both of
//! the encoder's forms, and every malformed extension batch is refused with `INVALID_ARGUMENT`.

use proptest::prelude::*;
use stencil_codec::datum::{Content, Datum, DictDefine, DynValue, Log, PatternDefine, Value};
use stencil_codec::extensions::{Extensions, MARKER};
use stencil_codec::stream::StreamCompressor;
use stencil_codec::{
    BatchEncoder, Compression, ExtEncoder, Generation, GrpcCode, Limits, LogRecord, Mode,
    StreamDecoder,
};

const CAP: u32 = 20;

fn log(ts: i64, content: Content, meta: u64) -> Datum {
    Datum::Log(Log {
        timestamp: ts,
        status: Some(Value::Dict(2)),
        service: meta.is_multiple_of(2).then_some(Value::Dict(3)),
        tags: Some(Value::Dict(meta)),
        content,
        json: None,
        uuid: None,
    })
}

fn s(v: &str) -> DynValue {
    DynValue::new(Value::Str(v.into()))
}

/// A stream's batches: dictionary and patterns, widening, deletes, every value kind, raw logs, long and
/// repeated strings, digit runs with leading zeros, NUL, and metadata that changes.
fn batches(words: bool) -> Vec<Vec<Datum>> {
    let mut out = Vec::new();
    let mut first = vec![
        Datum::DictDefine(DictDefine {
            id: 2,
            value: "info".into(),
        }),
        Datum::DictDefine(DictDefine {
            id: 3,
            value: "svc".into(),
        }),
        Datum::DictDefine(DictDefine {
            id: 4,
            value: "filename:/var/log/a.log".into(),
        }),
        Datum::DictDefine(DictDefine {
            id: 5,
            value: "filename:/var/log/b.log".into(),
        }),
        Datum::PatternDefine(PatternDefine {
            id: 10,
            template: "GET  took ms from ".into(),
            pos_list: vec![4, 10, 18],
        }),
        Datum::PatternDefine(PatternDefine {
            id: 11,
            template: "block  of  size  ok".into(),
            pos_list: vec![6, 10, 16, 19],
        }),
    ];
    let mut ts = 1_700_000_000_000i64;
    let mut rng = 7u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for b in 0..40 {
        let mut batch = std::mem::take(&mut first);
        if b == 20 {
            // Widening: the same id, one more hole.
            batch.push(Datum::PatternDefine(PatternDefine {
                id: 11,
                template: "block  of  size  ok ".into(),
                pos_list: vec![6, 10, 16, 19, 20],
            }));
        }
        if b == 30 {
            batch.push(Datum::PatternDelete { id: 10 });
            batch.push(Datum::PatternDefine(PatternDefine {
                id: 10,
                template: "user  left".into(),
                pos_list: vec![5],
            }));
        }
        for i in 0..25u64 {
            ts += (next() % 50) as i64 - 5;
            let r = next();
            let meta = 4 + (i / 10) % 2;
            let content = match (i % 5, words) {
                (0, _) => Content::Raw(format!(
                    "raw line {} with some words {}",
                    r % 1000,
                    "x".repeat((r % 7) as usize)
                )),
                (1, _) if b >= 30 => Content::Pattern {
                    id: 10,
                    values: vec![s(&format!("u{:05}", r % 50))],
                },
                (1, true) => Content::Pattern {
                    id: 10,
                    values: vec![
                        s(&format!(
                            "/api/{}",
                            ["alpha", "beta", "gamma\u{0}", "δέλτα"][(r % 4) as usize]
                        )),
                        DynValue {
                            value: Value::Float((r % 1000) as f64 / 8.0),
                            render_as_string: r % 3 == 0,
                        },
                        s(&"long value ".repeat(20)),
                    ],
                },
                (1, false) => Content::Pattern {
                    id: 10,
                    values: vec![
                        s(&format!("/api/v1/items/{:07}", i * 3 + b)),
                        DynValue::new(Value::Int((r % 300) as i64 - 100)),
                        s(&format!("10.0.{}.{}", r % 3, r % 250)),
                    ],
                },
                (4, _) => Content::Pattern {
                    id: 10,
                    values: if b >= 30 {
                        vec![s("")]
                    } else {
                        vec![s(""), DynValue::new(Value::Int(0)), s("")]
                    },
                },
                _ => {
                    let mut values = vec![
                        s(&format!(
                            "blk_{}",
                            (r % 100_000_000_000_000_000_000u128 as u64)
                        )),
                        DynValue::new(Value::Dict(2 + r % 2)),
                        DynValue::new(Value::Bool(r % 2 == 0)),
                        s(if words {
                            ["retry", "ok", "fail"][(r % 3) as usize]
                        } else {
                            "ok"
                        }),
                    ];
                    if b >= 20 {
                        values.push(DynValue::new(Value::RawJson(format!(
                            "{{\"n\":{}}}",
                            r % 9
                        ))));
                    }
                    Content::Pattern { id: 11, values }
                }
            };
            batch.push(log(ts, content, meta));
        }
        if b == 35 {
            batch.push(Datum::DictDelete { id: 5 });
            batch.push(Datum::DictDefine(DictDefine {
                id: 5,
                value: "filename:/var/log/c,d.log".into(),
            }));
        }
        out.push(batch);
    }
    out
}

/// The logs without the pattern each reports: the raw form sends text, so the same log has no pattern
/// there; what must match is what was rebuilt.
fn rebuilt(logs: Vec<LogRecord>) -> impl Iterator<Item = LogRecord> {
    logs.into_iter().map(|mut r| {
        r.pattern = None;
        r
    })
}

fn v3_records(batches: &[Vec<Datum>]) -> Vec<LogRecord> {
    let enc = BatchEncoder::new(Generation::V3, Compression::ZSTD);
    let mut dec = StreamDecoder::new(Generation::V3, Compression::ZSTD, Limits::default());
    dec.decode(0, &[]).expect("snapshot");
    let mut out = Vec::new();
    for (i, b) in batches.iter().enumerate() {
        let payload = enc.encode(b).expect("v3 encode");
        out.extend(rebuilt(
            dec.decode(i as u32 + 1, &payload.data)
                .expect("v3 decode")
                .logs,
        ));
    }
    out
}

/// Sends `v3_first` batches in plain v3, then the rest through an [`ExtEncoder`] that learned the
/// earlier state; returns the rebuilt logs and the modes used.
fn ext_records(
    batches: &[Vec<Datum>],
    agreed: Extensions,
    v3_first: usize,
) -> (Vec<LogRecord>, Vec<Mode>) {
    let enc = BatchEncoder::new(Generation::V3, Compression::ZSTD);
    let mut dec = StreamDecoder::new(Generation::V3, Compression::ZSTD, Limits::default())
        .with_extensions(agreed, CAP);
    dec.decode(0, &[]).expect("snapshot");
    let prior: Vec<Datum> = batches[..v3_first]
        .iter()
        .flatten()
        .filter(|d| d.is_state_change())
        .cloned()
        .collect();
    let mut ext = ExtEncoder::new(agreed, Compression::ZSTD, &prior).expect("encoder");
    let mut out = Vec::new();
    let mut modes = Vec::new();
    for (i, b) in batches.iter().enumerate() {
        let data = if i < v3_first {
            enc.encode(b).expect("v3").data
        } else {
            modes.push(ext.mode());
            ext.encode(b).expect("ext encode")
        };
        if i == v3_first {
            assert!(data.starts_with(&MARKER), "the switch batch is marked");
        }
        let decoded = dec
            .decode(i as u32 + 1, &data)
            .unwrap_or_else(|e| panic!("batch {i}: {e}"));
        out.extend(rebuilt(decoded.logs));
    }
    (out, modes)
}

#[test]
fn every_combination_rebuilds_what_v3_rebuilds() {
    for words in [false, true] {
        let bs = batches(words);
        let want = v3_records(&bs);
        for agreed in [
            Extensions::ALL,
            Extensions {
                stream_zstd: Some(19),
                native: false,
                ..Extensions::default()
            },
            Extensions {
                stream_zstd: None,
                native: true,
                ..Extensions::default()
            },
            Extensions {
                stream_zstd: Some(10),
                native: true,
                ..Extensions::default()
            },
        ] {
            for v3_first in [0, 3] {
                let (got, _) = ext_records(&bs, agreed, v3_first);
                assert_eq!(
                    got, want,
                    "{agreed:?}, {v3_first} v3 batches first, words {words}"
                );
            }
        }
    }
}

#[test]
fn both_forms_occur_and_rebuild_exactly() {
    // Counters and ids pay for structure; random text does not. Whatever the encoder picks, the logs are
    // the same; across the two streams both forms are used.
    let mut seen = std::collections::HashSet::new();
    for words in [false, true] {
        let bs = batches(words);
        let (got, modes) = ext_records(&bs, Extensions::ALL, 0);
        assert_eq!(got, v3_records(&bs));
        seen.extend(modes);
    }
    let text: Vec<Vec<Datum>> = (0..30)
        .map(|b| {
            let mut batch = Vec::new();
            if b == 0 {
                batch.push(Datum::PatternDefine(PatternDefine {
                    id: 1,
                    template: "msg ".into(),
                    pos_list: vec![4],
                }));
            }
            for i in 0..20u64 {
                let text = format!(
                    "{:x}{:x} the quick brown fox {}",
                    (b * 131 + i) * 2_654_435_761 % 1_000_003,
                    i * 7919,
                    "jumps ".repeat((i % 4) as usize)
                );
                batch.push(Datum::Log(Log {
                    timestamp: b as i64 * 1000 + i as i64,
                    status: None,
                    service: None,
                    tags: None,
                    content: Content::Pattern {
                        id: 1,
                        values: vec![s(&text)],
                    },
                    json: None,
                    uuid: None,
                }));
            }
            batch
        })
        .collect();
    let (got, modes) = ext_records(&text, Extensions::ALL, 0);
    assert_eq!(got, v3_records(&text));
    seen.extend(modes);
    assert!(
        seen.contains(&Mode::Raw) && seen.contains(&Mode::Structured),
        "modes seen: {seen:?}"
    );
}

fn code(dec: &mut StreamDecoder, id: u32, data: &[u8]) -> GrpcCode {
    dec.decode(id, data).expect_err("refused").grpc_code()
}

fn fresh(agreed: Extensions) -> StreamDecoder {
    let mut d = StreamDecoder::new(Generation::V3, Compression::ZSTD, Limits::default())
        .with_extensions(agreed, CAP);
    d.decode(0, &[]).expect("snapshot");
    d
}

#[test]
fn malformed_extension_batches_are_invalid_argument() {
    let bs = batches(false);
    let mut ext = ExtEncoder::new(Extensions::ALL, Compression::ZSTD, &[]).expect("encoder");
    let first = ext.encode(&bs[0]).expect("first");
    let second = ext.encode(&bs[1]).expect("second");

    // Without negotiation, a marked batch is refused (and nothing is mistaken for v3).
    let mut plain = StreamDecoder::new(Generation::V3, Compression::ZSTD, Limits::default());
    plain.decode(0, &[]).expect("snapshot");
    assert_eq!(code(&mut plain, 1, &first), GrpcCode::InvalidArgument);

    // More extensions than echoed.
    let mut only_zstd = fresh(Extensions {
        stream_zstd: Some(19),
        native: false,
        ..Extensions::default()
    });
    assert_eq!(code(&mut only_zstd, 1, &first), GrpcCode::InvalidArgument);

    // A window over the cap.
    let mut wide = ExtEncoder::new(
        Extensions {
            stream_zstd: Some(CAP + 2),
            native: true,
            ..Extensions::default()
        },
        Compression::ZSTD,
        &[],
    )
    .expect("encoder");
    let data = wide.encode(&bs[0]).expect("wide");
    let mut dec = fresh(Extensions {
        stream_zstd: Some(CAP + 2),
        native: true,
        ..Extensions::default()
    });
    assert_eq!(code(&mut dec, 1, &data), GrpcCode::InvalidArgument);

    // A truncated flush block: the earlier batch is accepted, the cut one refused.
    for cut in [1, second.len() / 2, second.len() - 1] {
        let mut dec = fresh(Extensions::ALL);
        dec.decode(1, &first).expect("earlier batch accepted");
        assert_eq!(
            code(&mut dec, 2, &second[..cut]),
            GrpcCode::InvalidArgument,
            "cut {cut}"
        );
    }

    // A native batch whose sections do not add up: one byte too many inside a valid zstd block.
    let mut ctx = StreamCompressor::new(1, 19).expect("ctx");
    let mut data = MARKER.to_vec();
    data.extend([3, 19]);
    data.extend(
        ctx.compress_batch(&[1, 1, 0, b'x', b'\n', 0, 0, 0xAA])
            .expect("zstd"),
    );
    let mut dec = fresh(Extensions::ALL);
    assert_eq!(code(&mut dec, 1, &data), GrpcCode::InvalidArgument);

    // A native batch on a stream that agreed stream-zstd only.
    let mut ctx = StreamCompressor::new(1, 19).expect("ctx");
    let mut data = MARKER.to_vec();
    data.extend([1, 19]);
    data.extend(ctx.compress_batch(&[1, 0]).expect("zstd"));
    let mut dec = fresh(Extensions {
        stream_zstd: Some(19),
        native: true,
        ..Extensions::default()
    });
    assert_eq!(code(&mut dec, 1, &data), GrpcCode::InvalidArgument);
}

#[test]
fn every_cut_and_bit_flip_of_a_native_batch_is_handled() {
    let bs = batches(true);
    let agreed = Extensions {
        stream_zstd: None,
        native: true,
        ..Extensions::default()
    };
    let mut ext = ExtEncoder::new(agreed, Compression::Identity, &[]).expect("encoder");
    let data = ext.encode(&bs[0]).expect("encode");
    for cut in 0..data.len() {
        let mut dec = StreamDecoder::new(Generation::V3, Compression::Identity, Limits::default())
            .with_extensions(agreed, CAP);
        dec.decode(0, &[]).expect("snapshot");
        let _ = dec.decode(1, &data[..cut]);
    }
    for i in 6..data.len() {
        let mut damaged = data.clone();
        damaged[i] ^= 0x41;
        let mut dec = StreamDecoder::new(Generation::V3, Compression::Identity, Limits::default())
            .with_extensions(agreed, CAP);
        dec.decode(0, &[]).expect("snapshot");
        let _ = dec.decode(1, &damaged);
    }
}

#[test]
fn header_parsing_and_answers() {
    let asked = Extensions::parse("native/3, stream-zstd;window-log=23, future/9");
    assert_eq!(
        asked,
        Extensions {
            stream_zstd: Some(23),
            native: true,
            ..Extensions::default()
        }
    );
    let answer = Extensions::answer(asked, 20);
    assert_eq!(answer.to_string(), "native/3, stream-zstd;window-log=20");
    // `json-order` is asked for, echoed and agreed like the others, and alone is no batch extension.
    assert_eq!(
        Extensions::ALL.to_string(),
        "native/3, stream-zstd;window-log=19, json-order"
    );
    let order = Extensions::parse("json-order");
    assert!(order.json_order && order.is_empty());
    assert!(Extensions::agreed(Extensions::ALL, order).json_order);
    assert!(!Extensions::agreed(Extensions::ALL, answer).json_order);
    assert!(Extensions::answer(Extensions::ALL, 20).json_order);
    assert_eq!(
        Extensions::agreed(Extensions::ALL, Extensions::parse(&answer.to_string())),
        Extensions {
            stream_zstd: Some(19),
            native: true,
            ..Extensions::default()
        }
    );
    assert!(Extensions::parse("").is_empty());
    assert_eq!(
        Extensions::parse("stream-zstd;window-log=3").stream_zstd,
        None
    );
    assert!(Extensions::agreed(Extensions::ALL, Extensions::default()).is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn arbitrary_values_round_trip(values in proptest::collection::vec(("[ -~]{0,40}|[0-9]{1,25}|\\PC{0,12}", any::<i64>()), 1..60)) {
        let mut batch = vec![Datum::PatternDefine(PatternDefine { id: 5, template: "a  b ".into(), pos_list: vec![2, 5] })];
        for (i, (text, n)) in values.iter().enumerate() {
            batch.push(Datum::Log(Log { timestamp: *n / 3, status: None, service: None, tags: None, content: Content::Pattern { id: 5, values: vec![s(text), DynValue::new(Value::Int(*n))] }, json: None, uuid: None }));
            if i % 7 == 0 && !text.is_empty() {
                batch.push(Datum::Log(Log::raw(*n, text.clone())));
            }
        }
        let bs: Vec<Vec<Datum>> = batch.chunks(9).enumerate().map(|(i, c)| {
            let mut v = c.to_vec();
            if i > 0 && !matches!(v[0], Datum::PatternDefine(_)) { v.retain(|_| true); }
            v
        }).collect();
        let want = v3_records(&bs);
        let (got, _) = ext_records(&bs, Extensions::ALL, 0);
        prop_assert_eq!(got, want);
    }
}

/// Mutation-based robustness in the regular test run (the libFuzzer target `decode_extensions` goes
/// deeper, but its instrumented build does not fit CI's time): valid extension streams with random bit
/// flips, cuts, insertions and reordered batches. The decoder never panics, refuses only with
/// `INVALID_ARGUMENT` or `RESOURCE_EXHAUSTED`, and refuses everything after its first error.
#[test]
fn mutated_extension_streams_are_refused_cleanly() {
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for (words, agreed) in [
        (false, Extensions::ALL),
        (true, Extensions::ALL),
        (
            true,
            Extensions {
                stream_zstd: None,
                native: true,
                ..Extensions::default()
            },
        ),
        (
            false,
            Extensions {
                stream_zstd: Some(19),
                native: false,
                ..Extensions::default()
            },
        ),
    ] {
        let compression = if agreed.stream_zstd.is_some() {
            Compression::ZSTD
        } else {
            Compression::Identity
        };
        let bs = batches(words);
        let mut enc = ExtEncoder::new(agreed, compression, &[]).expect("encoder");
        let valid: Vec<Vec<u8>> = bs[..8]
            .iter()
            .map(|b| enc.encode(b).expect("encode"))
            .collect();
        for _ in 0..400 {
            let mut stream = valid.clone();
            for _ in 0..1 + next() % 3 {
                let i = (next() % stream.len() as u64) as usize;
                let b = &mut stream[i];
                match next() % 5 {
                    0 if !b.is_empty() => {
                        let at = (next() % b.len() as u64) as usize;
                        b[at] ^= 1 << (next() % 8);
                    }
                    1 => b.truncate((next() % (b.len() as u64 + 1)) as usize),
                    2 => {
                        let at = (next() % (b.len() as u64 + 1)) as usize;
                        b.insert(at, next() as u8);
                    }
                    3 => {
                        let j = (next() % stream.len() as u64) as usize;
                        stream.swap(i, j);
                    }
                    _ => {
                        let at = (next() % (b.len() as u64 + 1)) as usize;
                        b.splice(at..at, MARKER);
                    }
                }
            }
            let mut dec = StreamDecoder::new(Generation::V3, compression, Limits::default())
                .with_extensions(agreed, CAP);
            dec.decode(0, &[]).expect("snapshot");
            let mut failed = false;
            for (i, b) in stream.iter().enumerate() {
                match dec.decode(i as u32 + 1, b) {
                    Ok(_) => assert!(!failed, "a failed stream accepted a batch"),
                    Err(e) if failed => assert_eq!(e.kind, stencil_codec::ErrorKind::StreamFailed),
                    Err(e) => {
                        assert!(
                            matches!(
                                e.grpc_code(),
                                GrpcCode::InvalidArgument | GrpcCode::ResourceExhausted
                            ),
                            "{e}"
                        );
                        failed = true;
                    }
                }
            }
        }
    }
}

/// native/3 remembers at most `MAX_COLUMNS` (pattern, hole) columns: both ends forget them all at the
/// end of the batch that passes the bound, and the stream goes on exactly. (Without the bound, a stream
/// of ever-new templates grew both ends' tables without end: 270 MiB in `bench cardinality`.)
#[test]
fn the_column_table_is_bounded_and_both_ends_forget_together() {
    use stencil_codec::native::{NativeDecoder, NativeEncoder, MAX_COLUMNS};
    use stencil_codec::StreamState;
    let patterns = MAX_COLUMNS / 2 + 100;
    let mut enc = NativeEncoder::new();
    let mut dec = NativeDecoder::new();
    let mut state = StreamState::new(Generation::V3, Limits::default());
    for b in 0..4u64 {
        let mut batch = Vec::new();
        for p in 0..patterns as u64 {
            let id = 100 + p;
            if b == 0 {
                batch.push(Datum::PatternDefine(PatternDefine {
                    id,
                    template: format!("job {p} took  ms, queue "),
                    pos_list: vec![
                        format!("job {p} took ").len() as u32,
                        format!("job {p} took  ms, queue ").len() as u32,
                    ],
                }));
            }
            batch.push(Datum::Log(stencil_codec::datum::Log {
                timestamp: (b * 100_000 + p) as i64,
                status: None,
                service: None,
                tags: None,
                content: Content::Pattern {
                    id,
                    values: vec![
                        // Counters that grow per batch (delta-coded against the column) and strings
                        // whose shape repeats.
                        DynValue::new(Value::Int((b * 1_000 + p) as i64)),
                        s(&format!("q-{:04}", (p * 7 + b) % 10_000)),
                    ],
                },
                json: None,
                uuid: None,
            }));
        }
        let mut data = Vec::new();
        enc.encode(&batch, &mut data).expect("encodes");
        let mut got = Vec::new();
        dec.decode(&data, &mut state, &mut |st, d| {
            if let Datum::PatternDefine(p) = &d {
                st.define_pattern(p)?;
            }
            got.push(d);
            Ok(())
        })
        .unwrap_or_else(|e| panic!("batch {b}: {e}"));
        assert!(got == batch, "batch {b} decodes to what was encoded");
    }
}

/// Both ends of a `native/3` layout for one stream, without compression.
struct NativeStream {
    enc: stencil_codec::native::NativeEncoder,
    dec: stencil_codec::native::NativeDecoder,
    state: stencil_codec::StreamState,
}

impl NativeStream {
    fn new() -> Self {
        NativeStream {
            enc: stencil_codec::native::NativeEncoder::new(),
            dec: stencil_codec::native::NativeDecoder::new(),
            state: stencil_codec::StreamState::new(Generation::V3, Limits::default()),
        }
    }

    /// Lays out `batch`, decodes it, checks that it came back, and returns its length.
    fn round(&mut self, batch: &[Datum]) -> usize {
        let mut data = Vec::new();
        self.enc.encode(batch, &mut data).expect("encodes");
        let mut got = Vec::new();
        self.dec
            .decode(&data, &mut self.state, &mut |st, d| {
                if let Datum::PatternDefine(p) = &d {
                    st.define_pattern(p)?;
                }
                got.push(d);
                Ok(())
            })
            .expect("decodes");
        assert!(got == batch, "the batch decodes to what was encoded");
        data.len()
    }
}

/// native/3 codes datum kinds, timestamp deltas and metadata as runs: a batch of raw lines with the same
/// metadata and a steady clock spends a few bytes on them whatever its size (native/1 spent three bytes
/// per log, which a zstd stream of the raw lines did not), and metadata that changes anywhere in a batch,
/// the last log included, comes back exactly.
#[test]
fn kinds_times_and_metadata_are_run_coded() {
    let raw_batch = |n: i64, start: i64, tags: &dyn Fn(i64) -> u64| -> Vec<Datum> {
        (0..n)
            .map(|i| log(start + i * 7, Content::Raw(format!("line {i}")), tags(i)))
            .collect()
    };
    let text_bytes = |batch: &[Datum]| -> usize {
        batch
            .iter()
            .map(|d| match d {
                Datum::Log(Log {
                    content: Content::Raw(t),
                    ..
                }) => t.len() + 1,
                _ => 0,
            })
            .sum()
    };
    let mut stream = NativeStream::new();
    let mut round = |batch: &[Datum]| stream.round(batch);
    // The first batch sets the metadata; the second changes nothing but the clock.
    round(&raw_batch(10, 1_000, &|_| 8));
    for n in [10, 1000] {
        let batch = raw_batch(n, 2_000_000 * n, &|_| 8);
        let overhead = round(&batch) - text_bytes(&batch);
        assert!(
            overhead <= 16,
            "{n} raw lines cost {overhead} bytes beyond their text"
        );
    }
    // Metadata changing at the first, in the middle, and at the last log; a clock that jumps.
    let batch: Vec<Datum> = raw_batch(9, 9_000_000, &|i| match i {
        0 => 4,
        4 | 5 => 6,
        8 => 10,
        _ => 4,
    })
    .into_iter()
    .enumerate()
    .map(|(i, d)| match d {
        Datum::Log(l) if i == 6 => Datum::Log(Log {
            timestamp: l.timestamp - 50_000,
            ..l
        }),
        d => d,
    })
    .collect();
    round(&batch);
    round(&raw_batch(3, 10_000_000, &|_| 10));
}

/// native/3 writes a column's value tags as runs and its digit runs by position: a column whose values
/// all repeat a recent one costs no byte per value (native/2 spent two), and columns mixing exact
/// repeats, one shape, more shapes than the table holds, and long literals come back exactly.
#[test]
fn column_tags_are_runs_and_digit_runs_go_by_position() {
    let mut stream = NativeStream::new();
    let mut round = |batch: &[Datum]| stream.round(batch);
    let define = |id: u64, holes: u32| {
        Datum::PatternDefine(PatternDefine {
            id,
            template: "x".repeat(holes as usize),
            pos_list: (0..holes).collect(),
        })
    };
    let logs = |id: u64, n: u64, values: &dyn Fn(u64) -> Vec<DynValue>| -> Vec<Datum> {
        (0..n)
            .map(|i| {
                Datum::Log(Log {
                    content: Content::Pattern {
                        id,
                        values: values(i),
                    },
                    ..Log::raw(i as i64, "")
                })
            })
            .collect()
    };
    // A column of one repeated value: the pattern ids (a byte per log) and a few bytes more.
    let mut batch = vec![define(1, 1)];
    batch.extend(logs(1, 1000, &|_| vec![s("ok")]));
    round(&batch);
    let n = round(&logs(1, 1000, &|_| vec![s("ok")]));
    assert!(n <= 1000 + 16, "1000 repeated values cost {n} bytes");
    // Mixed columns, over two batches so that state carries across.
    let mixed = |i: u64| {
        let letters: String = (0..1 + i % 70)
            .map(|k| char::from(b'a' + (k % 26) as u8))
            .collect();
        vec![
            s(&format!(
                "2015-10-18 18:{:02}:{:02},{:03}",
                i / 60 % 60,
                i % 60,
                i * 7 % 1000
            )),
            s(if i.is_multiple_of(3) { "ok" } else { "fail" }),
            s(&format!("{letters}{}-{:05}", i % 7, i * 13)),
            s(&format!("{}", i % 5)),
            if i.is_multiple_of(11) {
                s(&"long ".repeat(40))
            } else {
                DynValue::new(Value::Int(i as i64 * 3))
            },
        ]
    };
    let mut batch = vec![define(2, 5)];
    batch.extend(logs(2, 300, &mixed));
    round(&batch);
    round(&logs(2, 300, &|i| mixed(i + 300)));
}

/// A stream's first datums: the status and service `log` uses (ids 2 and 3), `tags` from id 4 on, and
/// pattern 10 of [`templated_log`].
fn opening(batch: &mut Vec<Datum>, tags: &[&str]) {
    for (id, value) in [(2, "info"), (3, "svc")]
        .into_iter()
        .chain((4..).zip(tags.iter().copied()))
    {
        batch.push(Datum::DictDefine(DictDefine {
            id,
            value: value.into(),
        }));
    }
    batch.push(Datum::PatternDefine(PatternDefine {
        id: 10,
        template: "job  done in  ms".into(),
        pos_list: vec![4, 13],
    }));
}

/// Log `n` of pattern 10 (`job  done in  ms`, defined by [`opening`]): structure pays.
fn templated_log(n: u64) -> Content {
    Content::Pattern {
        id: 10,
        values: vec![
            DynValue::new(Value::Int(n as i64)),
            DynValue::new(Value::Int((n * 7 % 50) as i64)),
        ],
    }
}

/// Log `n` with a template of its own, `id`, whose define goes into `batch` (what an engine makes of
/// unique text); its words repeat across lines, so raw text in one zstd context is cheaper.
fn unique_log(n: u64, id: u64, batch: &mut Vec<Datum>) -> Content {
    let words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"];
    let template = format!(
        "{} {} {} request  from {}",
        words[(n % 6) as usize],
        words[(n / 6 % 6) as usize],
        words[(n / 36 % 6) as usize],
        words[(n / 216 % 6) as usize],
    );
    let hole = template.find("  ").map_or(0, |p| p + 1) as u32;
    batch.push(Datum::PatternDefine(PatternDefine {
        id,
        template,
        pos_list: vec![hole],
    }));
    Content::Pattern {
        id,
        values: vec![s(&format!("r{:x}", n * 2_654_435_761 % 1_000_003))],
    }
}

/// The form is chosen per source (service and tags: a file, in the agent), not per stream: on one stream
/// carrying a templated source and a source of unique lines, in alternate batches, the first goes
/// structured and the second raw, and every log comes back exactly. (With one form per stream, a
/// pipeline reading an access log and an application log sent one of them the expensive way.)
#[test]
fn each_source_takes_its_own_form() {
    let templated = 4u64;
    let unique = 5u64;
    let mut batches = Vec::new();
    let mut next_pattern = 100u64;
    for b in 0..60u64 {
        let mut batch = Vec::new();
        if b == 0 {
            opening(&mut batch, &["filename:/a.log", "filename:/b.log"]);
        }
        // Batches alternate between the sources, as an agent reads each file in runs of lines.
        for i in 0..40u64 {
            let n = b * 40 + i;
            let (content, tags) = if b % 2 == 0 {
                (templated_log(n), templated)
            } else {
                next_pattern += 1;
                (unique_log(n, next_pattern, &mut batch), unique)
            };
            batch.push(log(n as i64, content, tags));
        }
        batches.push(batch);
    }
    let mut enc = ExtEncoder::new(Extensions::ALL, Compression::ZSTD, &[]).expect("encoder");
    let mut dec = StreamDecoder::new(Generation::V3, Compression::ZSTD, Limits::default())
        .with_extensions(Extensions::ALL, CAP);
    dec.decode(0, &[]).expect("snapshot");
    let mut got = Vec::new();
    for (i, b) in batches.iter().enumerate() {
        let data = enc.encode(b).expect("encodes");
        got.extend(rebuilt(
            dec.decode(i as u32 + 1, &data)
                .unwrap_or_else(|e| panic!("batch {i}: {e}"))
                .logs,
        ));
    }
    assert_eq!(got, v3_records(&batches));
    assert_eq!(
        // `log` gives even tags the service 3.
        enc.mode_of(Some(3), Some(templated)),
        Some(Mode::Structured),
        "{enc:?}"
    );
    assert_eq!(enc.mode_of(None, Some(unique)), Some(Mode::Raw), "{enc:?}");
    assert_eq!(enc.source_forms(), (1, 1), "one raw source, one structured");
}

/// A source's form is final once it has held for a while, but not blind: when what the source costs per
/// log grows by a quarter (its logs changed), it is weighed again. Here a source settles structured on
/// templated logs, then turns to unique lines, and ends raw, every log rebuilt exactly.
#[test]
fn a_settled_source_whose_logs_change_is_weighed_again() {
    let mut enc = ExtEncoder::new(Extensions::ALL, Compression::ZSTD, &[]).expect("encoder");
    let mut dec = StreamDecoder::new(Generation::V3, Compression::ZSTD, Limits::default())
        .with_extensions(Extensions::ALL, CAP);
    dec.decode(0, &[]).expect("snapshot");
    let mut next_pattern = 100u64;
    let mut all = Vec::new();
    let mut got = Vec::new();
    let mut modes = Vec::new();
    for b in 0..80u64 {
        let mut batch = Vec::new();
        if b == 0 {
            opening(&mut batch, &["filename:/a.log"]);
        }
        for i in 0..500u64 {
            let n = b * 500 + i;
            let content = if b < 50 {
                templated_log(n)
            } else {
                next_pattern += 1;
                unique_log(n, next_pattern, &mut batch)
            };
            batch.push(log(n as i64, content, 4));
        }
        let data = enc.encode(&batch).expect("encodes");
        got.extend(rebuilt(
            dec.decode(b as u32 + 1, &data)
                .unwrap_or_else(|e| panic!("batch {b}: {e}"))
                .logs,
        ));
        modes.push(enc.mode_of(Some(3), Some(4)));
        all.push(batch);
    }
    assert_eq!(got, v3_records(&all));
    assert_eq!(modes[49], Some(Mode::Structured), "{modes:?}");
    assert_eq!(modes[79], Some(Mode::Raw), "{modes:?}");
}
