//! Fuzz target: drives a `StreamDecoder` that negotiated the wire extensions (`stream-zstd`,
//! `native/3`) with arbitrary batches.
//!
//! Byte 0 picks which extensions were echoed (`json-order` too) and whether the first batch is forced to
//! carry the marker; the rest is cut into batches by one-byte length prefixes (255 takes all remaining
//! bytes). Half of the inputs also start from a valid extension stream (a few batches a real encoder
//! wrote), so that the native decoder and the stream context are reached with state. The decoder must
//! never panic, must refuse everything after its first error, and must answer INVALID_ARGUMENT or
//! RESOURCE_EXHAUSTED.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;
use stencil_codec::datum::{Content, Datum, DynValue, Log, PatternDefine, Value};
use stencil_codec::extensions::{Extensions, MARKER};
use stencil_codec::{Compression, ExtEncoder, Generation, Limits, StreamDecoder};

fn seed_batches(agreed: Extensions) -> Vec<Vec<u8>> {
    let Ok(mut enc) = ExtEncoder::new(agreed, Compression::ZSTD, &[]) else {
        return Vec::new();
    };
    (0..3)
        .filter_map(|b| {
            let mut datums = Vec::new();
            if b == 0 {
                datums.push(Datum::PatternDefine(PatternDefine {
                    id: 7,
                    template: "x  y".into(),
                    pos_list: vec![2, 4],
                }));
            }
            for i in 0..5 {
                datums.push(Datum::Log(Log {
                    timestamp: i,
                    status: None,
                    service: None,
                    tags: None,
                    content: Content::Pattern {
                        id: 7,
                        values: vec![
                            DynValue::new(Value::Str(format!("id-{i:04}"))),
                            DynValue::new(Value::Int(i * 3)),
                        ],
                    },
                    json: None,
                    uuid: None,
                }));
            }
            enc.encode(&datums).ok()
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    let echoed = Extensions {
        stream_zstd: (head & 1 != 0).then_some(10 + u32::from(head >> 4 & 7)),
        native: head & 2 != 0,
        json_order: head & 0x80 != 0,
    };
    let limits = Limits {
        max_decompressed_bytes: 1 << 20,
        max_output_bytes: 1 << 20,
        max_state_bytes: 1 << 22,
        ..Limits::default()
    };
    let mut decoder =
        StreamDecoder::new(Generation::V3, Compression::ZSTD, limits).with_extensions(echoed, 20);
    let mut batches: Vec<Vec<u8>> = Vec::new();
    if head & 4 != 0 && !echoed.is_empty() {
        batches.push(Vec::new()); // batch 0
        batches.extend(seed_batches(echoed));
    }
    let force_marker = head & 8 != 0;
    for batch in common::split_batches(rest) {
        let mut b = Vec::new();
        if force_marker && batches.is_empty() {
            b.extend_from_slice(&MARKER);
        }
        b.extend_from_slice(batch);
        batches.push(b);
    }
    common::drive(&mut decoder, 0, batches.iter().map(Vec::as_slice), true);
});
