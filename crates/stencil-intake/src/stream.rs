//! One stream's batch handler: decode, hand to the sink, ack.
//!
//! This is the intake's core, kept free of tonic's streaming types so that a fuzz target and unit tests can
//! drive it with arbitrary batches. Batches are handled strictly one after another; the ack for a batch
//! exists only after its logs were accepted by the sink.

use std::sync::Arc;
use std::time::Instant;

use stencil_codec::{Compression, DecodeError, Extensions, Limits, MemoryBudget, StreamDecoder};
use stencil_proto::stateful::{batch_status, BatchStatus, StatefulBatch};
use tonic::{Code, Status};

use crate::metrics as m;
use crate::sink::{Sink, StreamInfo};

/// Handles the batches of one stream, in order.
pub struct StreamHandler {
    decoder: Option<StreamDecoder>,
    sink: Arc<dyn Sink>,
    info: StreamInfo,
}

/// The gRPC status for a rejected batch: the code PROTOCOL.md §14 gives, and a message naming the batch
/// and the reason.
pub fn rejection_status(err: &DecodeError) -> Status {
    Status::new(Code::from_i32(err.grpc_code() as i32), err.to_string())
}

impl StreamHandler {
    /// A handler for a new stream with empty state.
    pub fn new(
        info: StreamInfo,
        compression: Compression,
        limits: Limits,
        sink: Arc<dyn Sink>,
    ) -> Self {
        StreamHandler {
            decoder: Some(StreamDecoder::new(info.generation, compression, limits)),
            sink,
            info,
        }
    }

    /// Accepts the extension batches of what the intake echoed (nothing changes when `echoed` is empty
    /// except that an extension batch is refused with a clear message).
    pub fn with_extensions(mut self, echoed: Extensions, max_window_log: u32) -> Self {
        if !echoed.is_empty() {
            self.decoder = self
                .decoder
                .take()
                .map(|d| d.with_extensions(echoed, max_window_log));
        }
        self
    }

    /// Holds the stream's memory against the process-wide `budget`.
    pub fn with_budget(mut self, budget: Arc<MemoryBudget>) -> Self {
        self.decoder = self.decoder.take().map(|d| d.with_budget(budget));
        self
    }

    /// The stream's identity.
    pub fn info(&self) -> &StreamInfo {
        &self.info
    }

    /// (entries, bytes) of the stream's state.
    pub fn state_size(&self) -> (usize, usize) {
        self.decoder.as_ref().map_or((0, 0), |d| {
            let (dict, patterns, schemas) = d.state().entries();
            (dict + patterns + schemas, d.state_bytes())
        })
    }

    /// Decodes one batch, writes its logs to the sink and returns the ack. An error is the status that
    /// must end the stream; no later batch may be handled after it.
    pub async fn handle(&mut self, batch: StatefulBatch) -> Result<BatchStatus, Status> {
        let started = Instant::now();
        let generation = self.info.generation.name();
        let Some(mut decoder) = self.decoder.take() else {
            return Err(Status::internal("the stream already failed"));
        };
        let sink = self.sink.clone();
        let info = self.info.clone();
        let batch_id = batch.batch_id;
        let compressed = batch.data.len();
        // Decoding and sink writes are CPU and disk work: keep them off the async workers.
        let joined = tokio::task::spawn_blocking(move || {
            let outcome = match decoder.decode_batch(&batch) {
                Ok(decoded) => {
                    let written = sink.write_batch(&info, &decoded.logs);
                    let counts = (decoded.logs.len(), decoded.decompressed_len);
                    drop(decoded);
                    decoder.release_batch();
                    match written {
                        Ok(()) => Ok(counts),
                        Err(e) => Err(Outcome::Sink(e.to_string())),
                    }
                }
                Err(e) => Err(Outcome::Rejected(e)),
            };
            (decoder, outcome)
        })
        .await;
        let (decoder, outcome) = joined
            .map_err(|e| Status::internal(format!("batch {batch_id}: handler panicked: {e}")))?;
        match outcome {
            Ok((logs, decompressed)) => {
                let wire = decoder.wire_name();
                self.decoder = Some(decoder);
                metrics::counter!(m::BATCHES, "generation" => generation, "wire" => wire)
                    .increment(1);
                metrics::counter!(m::LOGS, "generation" => generation).increment(logs as u64);
                metrics::counter!(m::BYTES, "stage" => "compressed", "wire" => wire)
                    .increment(compressed as u64);
                metrics::counter!(m::BYTES, "stage" => "decompressed")
                    .increment(decompressed as u64);
                metrics::histogram!(m::ACK_LATENCY).record(started.elapsed().as_secs_f64());
                Ok(BatchStatus {
                    batch_id,
                    status: batch_status::Status::Ok as i32,
                })
            }
            Err(Outcome::Rejected(e)) => {
                metrics::counter!(m::REJECTIONS, "reason" => e.kind.reason()).increment(1);
                tracing::warn!(stream = self.info.id, generation, error = %e, "batch rejected; ending the stream");
                Err(rejection_status(&e))
            }
            Err(Outcome::Sink(e)) => {
                metrics::counter!(m::SINK_ERRORS).increment(1);
                tracing::error!(stream = self.info.id, batch_id, error = %e, "sink write failed; batch not acked");
                Err(Status::unavailable(format!(
                    "batch {batch_id} not acked: sink write failed: {e}. Retry on a new stream."
                )))
            }
        }
    }
}

enum Outcome {
    Rejected(DecodeError),
    Sink(String),
}
