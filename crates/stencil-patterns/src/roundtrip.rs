//! The loss check shared by tests and benchmarks: records through the engine, the v3 encoder and the real
//! stream decoder, back to bytes.

use stencil_codec::{BatchEncoder, Compression, Generation, Limits, LogRecord, StreamDecoder};

use crate::{Engine, EngineConfig, Meta};

/// The original bytes of a rebuilt record.
pub fn record_bytes(r: &LogRecord) -> Result<Vec<u8>, String> {
    stencil_codec::original_bytes(r).map_err(|e| e.to_string())
}

/// What a round trip produced.
#[derive(Debug, Default)]
pub struct RoundTrip {
    /// Each record, rebuilt, in order.
    pub rebuilt: Vec<Vec<u8>>,
    /// Sum of the compressed payload sizes (zstd level 1), defines included.
    pub payload_bytes: usize,
    /// Patterns held by the engine at the end.
    pub patterns: usize,
}

/// Encodes `records` with a fresh engine in batches of `batch`, sends each batch through the v3 encoder
/// (zstd 1) and a fresh stream decoder, and returns the rebuilt records. Any codec error is returned.
pub fn round_trip(
    records: &[&[u8]],
    config: EngineConfig,
    batch: usize,
) -> Result<RoundTrip, String> {
    let mut engine = Engine::new(config);
    let encoder = BatchEncoder::new(Generation::V3, Compression::ZSTD);
    let mut decoder = StreamDecoder::new(Generation::V3, Compression::ZSTD, Limits::default());
    decoder.decode(0, &[]).map_err(|e| e.to_string())?;
    let mut out = RoundTrip {
        rebuilt: Vec::with_capacity(records.len()),
        ..RoundTrip::default()
    };
    let batch = batch.max(1);
    let mut datums = Vec::new();
    for (n, chunk) in records.chunks(batch).enumerate() {
        datums.clear();
        for (i, record) in chunk.iter().enumerate() {
            let meta = Meta {
                timestamp: 1_700_000_000_000 + (n * batch + i) as i64,
                ..Meta::default()
            };
            engine.encode(record, &meta, &mut datums);
        }
        let payload = encoder
            .encode(&datums)
            .map_err(|e| format!("batch {n}: {e}"))?;
        out.payload_bytes += payload.data.len();
        let decoded = decoder
            .decode(n as u32 + 1, &payload.data)
            .map_err(|e| format!("batch {n}: {e}"))?;
        for log in &decoded.logs {
            out.rebuilt.push(record_bytes(log)?);
        }
    }
    out.patterns = engine.state_size().0;
    Ok(out)
}
