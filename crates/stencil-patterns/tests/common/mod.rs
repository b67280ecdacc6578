//! Round-trip harness: engine → datums → v3 batches → the real decoder → bytes, compared with the input.

#![allow(dead_code)]

use stencil_codec::datum::Datum;
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

/// Encodes `lines` through the engine and the real codec and returns the rebuilt records.
pub fn round_trip(lines: &[&[u8]], config: EngineConfig, batch: usize) -> Vec<Vec<u8>> {
    stencil_patterns::roundtrip::round_trip(lines, config, batch).unwrap_or_else(|e| panic!("round trip failed: {e}")).rebuilt
}

/// Asserts that every line comes back byte for byte.
pub fn assert_lossless(
    lines: &[&[u8]],
    config: EngineConfig,
    batch: usize,
    what: &str,
) -> Vec<Datum> {
    let rebuilt = round_trip(lines, config.clone(), batch);
    assert_eq!(rebuilt.len(), lines.len(), "{what}: one record per line");
    for (i, (got, want)) in rebuilt.iter().zip(lines).enumerate() {
        assert_eq!(got.as_slice(), *want, "{what}: line {} differs", i + 1);
    }
    encode_all(lines, config)
}

/// Every datum a fresh engine emits for `lines`.
pub fn encode_all(lines: &[&[u8]], config: EngineConfig) -> Vec<Datum> {
    let mut engine = Engine::new(config);
    let mut out = Vec::new();
    for line in lines {
        engine.encode(line, &Meta::default(), &mut out);
    }
    out
}
