//! Round-trip harness: engine → datums → v3 batches → the real decoder → bytes, compared with the input.

#![allow(dead_code)]

use stencil_codec::datum::Datum;
use stencil_codec::escape::{unescape, ESCAPED_TAG};
use stencil_codec::{BatchEncoder, Compression, Generation, Limits, LogRecord, StreamDecoder};
use stencil_patterns::{Engine, EngineConfig, Meta};

/// Splits file bytes into lines without their `\n`; the flag says whether the last line had one.
pub fn split_lines(bytes: &[u8]) -> (Vec<&[u8]>, bool) {
    if bytes.is_empty() {
        return (Vec::new(), true);
    }
    let final_newline = bytes.ends_with(b"\n");
    let body = if final_newline {
        &bytes[..bytes.len() - 1]
    } else {
        bytes
    };
    (body.split(|&b| b == b'\n').collect(), final_newline)
}

/// The original bytes of a rebuilt record.
pub fn record_bytes(r: &LogRecord) -> Vec<u8> {
    if r.tags().any(|t| t == ESCAPED_TAG) {
        unescape(&r.message).expect("valid escape")
    } else {
        r.message.clone().into_bytes()
    }
}

/// Encodes `lines` with a fresh engine in batches of `batch`, decodes them with a fresh v3 decoder, and
/// returns the rebuilt records plus every datum emitted.
pub fn round_trip(
    lines: &[&[u8]],
    config: EngineConfig,
    batch: usize,
) -> (Vec<Vec<u8>>, Vec<Datum>) {
    let mut engine = Engine::new(config);
    let encoder = BatchEncoder::new(Generation::V3, Compression::ZSTD);
    let mut decoder = StreamDecoder::new(Generation::V3, Compression::ZSTD, Limits::default());
    decoder.decode(0, &[]).expect("empty snapshot");
    let mut rebuilt = Vec::with_capacity(lines.len());
    let mut all = Vec::new();
    for (n, chunk) in lines.chunks(batch.max(1)).enumerate() {
        let mut datums = Vec::new();
        for (i, line) in chunk.iter().enumerate() {
            let meta = Meta {
                timestamp: 1_700_000_000_000 + (n * batch + i) as i64,
                ..Meta::default()
            };
            engine.encode(line, &meta, &mut datums);
        }
        let payload = encoder.encode(&datums).expect("encodable");
        let decoded = decoder
            .decode(n as u32 + 1, &payload.data)
            .unwrap_or_else(|e| panic!("batch {n}: {e}"));
        rebuilt.extend(decoded.logs.iter().map(record_bytes));
        all.extend(datums);
    }
    (rebuilt, all)
}

/// Asserts that every line comes back byte for byte.
pub fn assert_lossless(
    lines: &[&[u8]],
    config: EngineConfig,
    batch: usize,
    what: &str,
) -> Vec<Datum> {
    let (rebuilt, datums) = round_trip(lines, config, batch);
    assert_eq!(rebuilt.len(), lines.len(), "{what}: one record per line");
    for (i, (got, want)) in rebuilt.iter().zip(lines).enumerate() {
        assert_eq!(got.as_slice(), *want, "{what}: line {} differs", i + 1);
    }
    datums
}
