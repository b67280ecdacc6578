//! The loss check shared by tests and benchmarks: records through the engine, the v3 encoder (or the
//! default wire's extension encoder) and the real stream decoder, back to bytes.

use stencil_codec::{
    BatchEncoder, Compression, DecodeError, EncodeError, ExtEncoder, Extensions, Generation,
    Limits, LogRecord, StreamDecoder, Unplacer,
};

use crate::{Engine, EngineConfig, Meta};

/// Where a round trip failed: each is a loss the engine or the codec must never cause.
#[derive(Debug, thiserror::Error)]
pub enum RoundTripError {
    /// The v3 encoder refused what the engine emitted.
    #[error("batch {batch}: {error}")]
    Encode {
        /// The batch (0 = the opening snapshot).
        batch: usize,
        /// The encoder's error.
        error: EncodeError,
    },
    /// The stream decoder refused a batch.
    #[error("batch {batch}: {error}")]
    Decode {
        /// The batch.
        batch: usize,
        /// The decoder's error.
        error: DecodeError,
    },
    /// A rebuilt record's escaped text does not unescape.
    #[error(transparent)]
    Escape(#[from] stencil_codec::escape::BadEscape),
}

/// The original bytes of a rebuilt record.
pub fn record_bytes(r: &LogRecord) -> Result<Vec<u8>, RoundTripError> {
    Ok(stencil_codec::original_bytes(r)?)
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
) -> Result<RoundTrip, RoundTripError> {
    round_trip_on(records, config, batch, Extensions::default())
}

/// [`round_trip`] on a stream that agreed `wire` (none: plain v3), encoded as the agent encodes it
/// ([`ExtEncoder`]: each source structured or raw, JSON logs included; with the engine's `json_order`
/// on a stream without `json-order`, placed JSON logs as their text through an [`Unplacer`]) and
/// decoded by a decoder that echoed the same extensions.
pub fn round_trip_on(
    records: &[&[u8]],
    config: EngineConfig,
    batch: usize,
    wire: Extensions,
) -> Result<RoundTrip, RoundTripError> {
    let mut unplacer = (config.json_order && !wire.json_order).then(Unplacer::new);
    let mut engine = Engine::new(config);
    let encoder = BatchEncoder::new(Generation::V3, Compression::ZSTD);
    let mut ext = if wire.is_empty() {
        None
    } else {
        Some(
            ExtEncoder::new(wire, Compression::ZSTD, &[])
                .map_err(|error| RoundTripError::Encode { batch: 1, error })?,
        )
    };
    let mut decoder = StreamDecoder::new(Generation::V3, Compression::ZSTD, Limits::default());
    if !wire.is_empty() {
        decoder = decoder.with_extensions(wire, stencil_codec::stream::MAX_WINDOW_LOG);
    }
    decoder
        .decode(0, &[])
        .map_err(|error| RoundTripError::Decode { batch: 0, error })?;
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
        let unplaced = match unplacer.as_mut() {
            Some(u) => u.rewrite(&datums).map_err(|e| RoundTripError::Encode {
                batch: n + 1,
                error: EncodeError::Rendering(e),
            })?,
            None => None,
        };
        let sent = unplaced.as_deref().unwrap_or(&datums);
        let data = match ext.as_mut() {
            Some(ext) => ext.encode(sent),
            None => encoder.encode(sent).map(|p| p.data),
        }
        .map_err(|error| RoundTripError::Encode {
            batch: n + 1,
            error,
        })?;
        out.payload_bytes += data.len();
        let decoded =
            decoder
                .decode(n as u32 + 1, &data)
                .map_err(|error| RoundTripError::Decode {
                    batch: n + 1,
                    error,
                })?;
        for log in &decoded.logs {
            out.rebuilt.push(record_bytes(log)?);
        }
    }
    out.patterns = engine.state_size().0;
    Ok(out)
}
