//! Whole batches: the encoder an agent uses and the per-stream decoder an intake uses.
//!
//! [`BatchEncoder`] turns canonical datums into `StatefulBatch.data` (delta-code → serialize → compress).
//! It is a pure function of its input: the same datums always give the same bytes, which makes golden tests
//! and "encode once per epoch" caching possible.
//!
//! [`StreamDecoder`] owns one stream's state. For each batch it checks the batch id sequence, decompresses
//! with a hard cap, decodes, undoes the deltas, applies the state datums in order and rebuilds every log.
//! The first error poisons the decoder: the intake must end the stream with the error's gRPC status, and
//! the state is gone with it (PROTOCOL.md §14).

use std::sync::Arc;

use prost::Message;
use stencil_proto::stateful::StatefulBatch;

use crate::budget::{MemoryBudget, Reservation};
use crate::compression::Compression;
use crate::datum::Datum;
use crate::error::{DecodeError, EncodeError, ErrorKind};
use crate::extensions::{ExtDecoder, Extensions};
use crate::reconstruct::{output_bytes, LogRecord};
use crate::state::{Limits, StreamState};
use crate::{v2, v3, Generation};

/// Encodes canonical datums into batch payloads for one generation and codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchEncoder {
    generation: Generation,
    compression: Compression,
}

/// One encoded payload, ready to be put in a `StatefulBatch` with any batch id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedBatch {
    /// `StatefulBatch.data`: the compressed, serialized datum sequence.
    pub data: Vec<u8>,
    /// Size of the serialized sequence before compression.
    pub uncompressed_len: usize,
}

impl EncodedBatch {
    /// Wraps the payload in a `StatefulBatch`.
    pub fn to_batch(&self, batch_id: u32) -> StatefulBatch {
        StatefulBatch {
            batch_id,
            data: self.data.clone().into(),
        }
    }

    /// Size of the serialized `StatefulBatch` carrying this payload (what gRPC frames, excluding its
    /// 5-byte message prefix).
    pub fn batch_len(&self, batch_id: u32) -> usize {
        StatefulBatch {
            batch_id,
            data: Default::default(),
        }
        .encoded_len()
            + if self.data.is_empty() {
                0
            } else {
                1 + prost::length_delimiter_len(self.data.len()) + self.data.len()
            }
    }
}

impl BatchEncoder {
    /// An encoder for `generation` whose payloads are compressed with `compression`.
    pub fn new(generation: Generation, compression: Compression) -> Self {
        BatchEncoder {
            generation,
            compression,
        }
    }

    /// The generation.
    pub fn generation(&self) -> Generation {
        self.generation
    }

    /// The codec.
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// The `dd-content-encoding` header that matches this encoder's payloads.
    pub fn content_encoding(&self) -> &'static str {
        self.compression.content_encoding()
    }

    /// Delta-codes and serializes `datums` (fresh registers) without compressing.
    pub fn serialize(&self, datums: &[Datum]) -> Result<Vec<u8>, EncodeError> {
        Ok(match self.generation {
            Generation::V3 => {
                let mut out = Vec::with_capacity(64 * datums.len());
                v3::encode(datums, &mut out)?;
                out
            }
            Generation::V2 => v2::encode(datums)?.encode_to_vec(),
        })
    }

    /// Delta-codes, serializes and compresses `datums` into one payload.
    pub fn encode(&self, datums: &[Datum]) -> Result<EncodedBatch, EncodeError> {
        if datums.is_empty() {
            // An empty `data` is an empty sequence under every codec (PROTOCOL.md §5): an empty
            // snapshot costs no bytes at all.
            return Ok(EncodedBatch {
                data: Vec::new(),
                uncompressed_len: 0,
            });
        }
        let raw = self.serialize(datums)?;
        Ok(EncodedBatch {
            data: self.compression.compress(&raw)?,
            uncompressed_len: raw.len(),
        })
    }
}

/// The result of one accepted batch.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedBatch {
    /// The batch id.
    pub batch_id: u32,
    /// Every log of the batch, rebuilt, in order.
    pub logs: Vec<LogRecord>,
    /// The canonical datums of the batch, in order (only with [`StreamDecoder::keep_datums`]).
    pub datums: Vec<Datum>,
    /// Bytes of `data` after decompression.
    pub decompressed_len: usize,
    /// Approximate bytes of reconstructed output (the quantity limited by `max_output_bytes`).
    pub output_bytes: usize,
}

/// Where the stream's batch ids stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sequence {
    Start,
    After(u32),
    Failed,
}

/// Decodes the batches of one stream, in order, against that stream's own state.
#[derive(Debug)]
pub struct StreamDecoder {
    state: StreamState,
    ext: Option<ExtDecoder>,
    compression: Compression,
    sequence: Sequence,
    keep_datums: bool,
    budget: Option<Arc<MemoryBudget>>,
    /// The state's bytes, held against the budget while the stream lives.
    state_held: Reservation,
    /// The last batch's rebuilt logs, held until [`StreamDecoder::release_batch`].
    batch_held: Reservation,
}

impl StreamDecoder {
    /// A decoder for a new stream: empty state, expecting the first batch.
    pub fn new(generation: Generation, compression: Compression, limits: Limits) -> Self {
        StreamDecoder {
            state: StreamState::new(generation, limits),
            ext: None,
            compression,
            sequence: Sequence::Start,
            keep_datums: false,
            budget: None,
            state_held: Reservation::default(),
            batch_held: Reservation::default(),
        }
    }

    /// Holds this stream's memory against `budget`, shared with the other streams of the process: its
    /// state while it lives, and each batch's decompression buffer and rebuilt logs while it is decoded
    /// (see [`crate::budget`]).
    pub fn with_budget(mut self, budget: Arc<MemoryBudget>) -> Self {
        self.state_held = Reservation::new(Some(budget.clone()));
        self.batch_held = Reservation::new(Some(budget.clone()));
        self.budget = Some(budget);
        self
    }

    /// Also return each batch's canonical datums in [`DecodedBatch::datums`] (for tests and tools).
    pub fn keep_datums(mut self, keep: bool) -> Self {
        self.keep_datums = keep;
        self
    }

    /// Accept the extension batches of `echoed` (what the intake echoed in its response headers), with
    /// `stream-zstd` windows up to `2^max_window_log`. Without this call, a batch that starts with the
    /// extension marker is refused.
    pub fn with_extensions(mut self, echoed: Extensions, max_window_log: u32) -> Self {
        self.ext = Some(ExtDecoder::new(echoed, max_window_log));
        self
    }

    /// The wire the stream uses now: `v3`, or the extensions its agent switched to.
    pub fn wire_name(&self) -> &'static str {
        match &self.ext {
            Some(ext) => ext.wire_name(),
            None => "v3",
        }
    }

    /// Bytes of stream state: the tables' define payloads plus the extensions' contexts and columns.
    pub fn state_bytes(&self) -> usize {
        self.state.bytes() + self.ext.as_ref().map_or(0, ExtDecoder::memory)
    }

    /// The stream's state tables.
    pub fn state(&self) -> &StreamState {
        &self.state
    }

    /// The stream's generation.
    pub fn generation(&self) -> Generation {
        self.state.generation()
    }

    /// Decodes one `StatefulBatch`. See [`StreamDecoder::decode`].
    pub fn decode_batch(&mut self, batch: &StatefulBatch) -> Result<DecodedBatch, DecodeError> {
        self.decode(batch.batch_id, &batch.data)
    }

    /// Decodes the batch `batch_id` whose `data` is `data`.
    ///
    /// On success the batch has been applied to the stream state and every log is rebuilt; the intake may
    /// hand the logs to its sink and then ack. On error nothing of the batch should be acked, the stream
    /// must end with [`DecodeError::grpc_code`], and every later call fails with
    /// [`ErrorKind::StreamFailed`].
    pub fn decode(&mut self, batch_id: u32, data: &[u8]) -> Result<DecodedBatch, DecodeError> {
        let result = self.decode_inner(batch_id, data);
        if result.is_err() {
            self.sequence = Sequence::Failed;
        }
        result.map_err(|kind| DecodeError {
            batch_id: Some(batch_id),
            kind,
        })
    }

    fn check_sequence(&mut self, batch_id: u32) -> Result<(), ErrorKind> {
        let ok = match self.sequence {
            Sequence::Failed => return Err(ErrorKind::StreamFailed),
            Sequence::Start => {
                batch_id == 0 || (batch_id == 1 && self.generation() == Generation::V2)
            }
            Sequence::After(prev) => prev.checked_add(1) == Some(batch_id),
        };
        if !ok {
            let expected = match self.sequence {
                Sequence::Start if self.generation() == Generation::V2 => "0 or 1".to_string(),
                Sequence::Start => "0".to_string(),
                Sequence::After(prev) => prev.checked_add(1).map_or_else(
                    || "a new stream (ids never wrap)".to_string(),
                    |n| n.to_string(),
                ),
                Sequence::Failed => unreachable!("handled above"),
            };
            return Err(ErrorKind::BatchOutOfSequence {
                expected,
                got: batch_id,
            });
        }
        self.sequence = Sequence::After(batch_id);
        Ok(())
    }

    fn decode_inner(&mut self, batch_id: u32, data: &[u8]) -> Result<DecodedBatch, ErrorKind> {
        self.check_sequence(batch_id)?;
        let limits = self.state.limits().clone();
        let over_budget = |budget: &Option<Arc<MemoryBudget>>| ErrorKind::MemoryBudget {
            limit: budget.as_ref().map_or(0, |b| b.limit()),
        };
        // The decompression buffer is reserved before it is filled: up to the per-batch cap, or what
        // the process budget has left.
        let mut held = Reservation::new(self.budget.clone());
        let cap = held.grow_up_to(limits.max_decompressed_bytes);
        if cap == 0 && limits.max_decompressed_bytes > 0 {
            return Err(over_budget(&self.budget));
        }
        let budget_bound = |e: ErrorKind| match e {
            ErrorKind::DecompressionBomb { .. } if cap < limits.max_decompressed_bytes => {
                over_budget(&self.budget)
            }
            e => e,
        };
        let body = match self.ext.as_mut() {
            Some(ext) => ext.begin(data)?,
            None if data.starts_with(&crate::extensions::MARKER) => {
                return Err(ErrorKind::CorruptPayload {
                    codec: "stencil-extensions",
                    detail: "an extension batch on a stream that negotiated no extension".into(),
                })
            }
            None => None,
        };
        let plain = match (body, self.ext.as_mut()) {
            (Some(body), Some(ext)) => ext
                .decompress(body, self.compression, cap)
                .map_err(budget_bound)?,
            _ => self
                .compression
                .decompress(data, cap)
                .map_err(budget_bound)?,
        };
        held.resize(plain.len());

        let mut logs = Vec::new();
        let mut datums = Vec::new();
        let mut output = 0usize;
        let keep = self.keep_datums;
        let budget = &self.budget;
        let mut apply = |state: &mut StreamState, datum: Datum| -> Result<(), ErrorKind> {
            if let Datum::Log(log) = &datum {
                let record = state.reconstruct(log)?;
                output += output_bytes(&record);
                if output > limits.max_output_bytes {
                    return Err(ErrorKind::OutputLimit {
                        limit: limits.max_output_bytes,
                    });
                }
                // The rebuilt output is held too, reserved in steps as it grows.
                let need = plain.len() + output;
                if need > held.held() && !held.resize(need.max(held.held() + OUTPUT_STEP)) {
                    return Err(over_budget(budget));
                }
                logs.push(record);
            } else {
                state.apply_definition(&datum)?;
            }
            if keep {
                datums.push(datum);
            }
            Ok(())
        };
        match self.ext.as_mut() {
            Some(ext) if body.is_some() => ext.decode(&plain, &mut self.state, &mut apply)?,
            _ => match self.state.generation() {
                Generation::V3 => v3::decode(&plain, &mut self.state, &mut apply)?,
                Generation::V2 => v2::decode(&plain, &mut self.state, &mut apply)?,
            },
        }
        let state_bytes = self.state_bytes();
        if self.ext.is_some() && state_bytes > limits.max_state_bytes {
            return Err(ErrorKind::StateLimit {
                what: "state bytes (tables, stream-zstd context and native columns)",
                limit: limits.max_state_bytes,
            });
        }
        if !self.state_held.resize(state_bytes) {
            return Err(over_budget(&self.budget));
        }
        let decompressed_len = plain.len();
        drop(plain);
        held.resize(output);
        self.batch_held = held;
        Ok(DecodedBatch {
            batch_id,
            logs,
            datums,
            decompressed_len,
            output_bytes: output,
        })
    }

    /// Gives back the memory the last batch's logs were holding against the budget: call it once the
    /// sink has them. (The next batch gives it back anyway.)
    pub fn release_batch(&mut self) {
        self.batch_held.resize(0);
    }
}

/// How much more output a batch reserves at a time.
const OUTPUT_STEP: usize = 256 << 10;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_len_matches_the_serialized_envelope() {
        for len in [0usize, 1, 127, 128, 20_000] {
            let payload = EncodedBatch {
                data: vec![7; len],
                uncompressed_len: len,
            };
            for id in [0u32, 1, 300, u32::MAX] {
                assert_eq!(
                    payload.batch_len(id),
                    payload.to_batch(id).encoded_len(),
                    "len {len} id {id}"
                );
            }
        }
    }
}
