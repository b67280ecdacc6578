//! The tonic services for both generations, and the per-stream task that drives a [`StreamHandler`].
//!
//! Opening a stream checks, in order: the API key (`UNAUTHENTICATED` / `PERMISSION_DENIED`), the
//! `dd-content-encoding` header (`INVALID_ARGUMENT`), and the concurrent stream limit (`UNAVAILABLE`), all
//! before a single batch is read. The stream task then reads batches one at a time and sends one ack per
//! batch, in order; it ends the RPC with `OK` on the client's half-close, on idle timeout and on shutdown,
//! and with the rejection status on bad input (acks for earlier batches go first).

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use stencil_codec::extensions::{self, Extensions};
use stencil_codec::{Compression, Generation, MemoryBudget};
use stencil_proto::stateful::stateful_intake_server::StatefulIntake;
use stencil_proto::stateful::stateful_logs_service_server::StatefulLogsService;
use stencil_proto::stateful::{BatchStatus, StatefulBatch};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataMap;
use tonic::{Code, Request, Response, Status, Streaming};

use crate::config::IntakeConfig;
use crate::conn::{Connections, StreamOnConn};
use crate::metrics as m;
use crate::sink::{Sink, StreamInfo};
use crate::stream::StreamHandler;
use crate::throttle::Throttle;

/// The response stream of both RPCs.
pub type AckStream = Pin<Box<dyn Stream<Item = Result<BatchStatus, Status>> + Send + 'static>>;

/// Shared by both services.
pub(crate) struct Shared {
    pub(crate) config: IntakeConfig,
    pub(crate) sink: Arc<dyn Sink>,
    pub(crate) open_streams: AtomicUsize,
    pub(crate) next_stream: AtomicU64,
    pub(crate) shutdown: CancellationToken,
    /// Rate limit of the authentication refusal warnings.
    pub(crate) auth_log: Throttle,
    /// The open connections, which a stream keeps from being closed as idle.
    pub(crate) conns: Arc<Connections>,
    /// The memory every stream's decoder holds against.
    pub(crate) budget: Arc<MemoryBudget>,
}

/// Implements `StatefulIntake` (v3) and `StatefulLogsService` (v2).
#[derive(Clone)]
pub struct IntakeService {
    pub(crate) shared: Arc<Shared>,
}

/// Checks `dd-api-key` against the configuration. Keys are compared in constant time, and every
/// configured key is compared, so the timing tells nothing about how much of a key was right.
fn authenticate(config: &IntakeConfig, metadata: &MetadataMap) -> Result<(), Status> {
    let key = metadata
        .get("dd-api-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if key.is_empty() {
        return Err(Status::unauthenticated(
            "missing dd-api-key header: set the agent's API key",
        ));
    }
    if matches_any(&config.denied_api_keys, key) {
        return Err(Status::permission_denied(
            "this API key is not allowed to send to this intake",
        ));
    }
    let reloadable = config.reloadable_keys.as_ref().map(|k| k.current());
    let open = config.api_keys.is_empty() && reloadable.is_none();
    // Both sets are always compared, so that the timing does not tell which one holds the key.
    let known = matches_any(&config.api_keys, key)
        | reloadable.as_deref().is_some_and(|k| matches_any(k, key));
    if !open && !known {
        return Err(Status::unauthenticated(
            "unknown dd-api-key: check the agent's API key",
        ));
    }
    Ok(())
}

/// Whether `key` is one of `keys`, comparing with every one in constant time.
fn matches_any(keys: &[String], key: &str) -> bool {
    use subtle::ConstantTimeEq;
    keys.iter()
        .fold(subtle::Choice::from(0), |found, k| {
            found | k.as_bytes().ct_eq(key.as_bytes())
        })
        .into()
}

/// Logs an authentication refusal, at most once per 10 s with how many were not logged: a scanner
/// must not flood the intake's own log, and an operator must still see that keys are wrong.
fn log_auth_refusal(shared: &Shared, status: &Status, peer: Option<std::net::SocketAddr>) {
    if let Some(not_logged) = shared.auth_log.allow() {
        tracing::warn!(
            peer = ?peer,
            code = ?status.code(),
            reason = status.message(),
            refusals_not_logged = not_logged,
            "refused a stream: authentication failed"
        );
    }
}

/// Holds one slot of the concurrent-stream limit; frees it when dropped.
struct StreamSlot {
    shared: Arc<Shared>,
    generation: &'static str,
    _on_conn: StreamOnConn,
}

impl StreamSlot {
    fn acquire(
        shared: &Arc<Shared>,
        generation: Generation,
        peer: Option<std::net::SocketAddr>,
    ) -> Result<Self, Status> {
        let max = shared.config.max_concurrent_streams;
        let prev = shared.open_streams.fetch_add(1, Ordering::SeqCst);
        if prev >= max {
            shared.open_streams.fetch_sub(1, Ordering::SeqCst);
            metrics::counter!(m::REJECTIONS, "reason" => "max_concurrent_streams").increment(1);
            return Err(Status::unavailable(format!(
                "intake at its limit of {max} concurrent streams (max_concurrent_streams); retry later"
            )));
        }
        metrics::gauge!(m::STREAMS_OPEN, "generation" => generation.name()).increment(1.0);
        Ok(StreamSlot {
            shared: shared.clone(),
            generation: generation.name(),
            _on_conn: shared.conns.stream_opened(peer),
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.shared.open_streams.fetch_sub(1, Ordering::SeqCst);
        metrics::gauge!(m::STREAMS_OPEN, "generation" => self.generation).decrement(1.0);
    }
}

impl IntakeService {
    fn open(
        &self,
        generation: Generation,
        request: Request<Streaming<StatefulBatch>>,
    ) -> Result<Response<AckStream>, Status> {
        let shared = &self.shared;
        if shared.shutdown.is_cancelled() {
            return Err(Status::unavailable(
                "intake is shutting down; retry on another intake",
            ));
        }
        if let Err(status) = authenticate(&shared.config, request.metadata()) {
            log_auth_refusal(shared, &status, request.remote_addr());
            metrics::counter!(m::REJECTIONS, "reason" => if status.code() == Code::PermissionDenied { "permission_denied" } else { "unauthenticated" }).increment(1);
            return Err(status);
        }
        let header = request
            .metadata()
            .get("dd-content-encoding")
            .map(|v| v.to_str().unwrap_or("\u{fffd}"));
        let compression = Compression::from_content_encoding(header).map_err(|kind| {
            metrics::counter!(m::REJECTIONS, "reason" => kind.reason()).increment(1);
            Status::invalid_argument(kind.to_string())
        })?;
        // Wire extensions: only on v3, only when asked, and echoed in the response headers.
        let asked = match (generation, shared.config.extensions) {
            (Generation::V3, true) => request
                .metadata()
                .get(extensions::HEADER)
                .and_then(|v| v.to_str().ok())
                .map(Extensions::parse)
                .unwrap_or_default(),
            _ => Extensions::default(),
        };
        let echoed = Extensions::answer(asked, shared.config.max_window_log);
        if shared.budget.used() >= shared.budget.limit() {
            metrics::counter!(m::REJECTIONS, "reason" => "memory_budget").increment(1);
            return Err(Status::unavailable(format!(
                "intake over its memory budget ({} bytes); retry later or on another intake",
                shared.budget.limit()
            )));
        }
        let slot = StreamSlot::acquire(shared, generation, request.remote_addr())?;
        let info = StreamInfo {
            id: shared.next_stream.fetch_add(1, Ordering::Relaxed),
            generation,
            peer: request.remote_addr(),
        };
        let handler = StreamHandler::new(
            info,
            compression,
            shared.config.limits.clone(),
            shared.sink.clone(),
        )
        .with_extensions(echoed, shared.config.max_window_log)
        .with_budget(shared.budget.clone());
        let (tx, rx) = mpsc::channel(64);
        let inbound = request.into_inner();
        tokio::spawn(run_stream(handler, inbound, tx, slot, self.shared.clone()));
        let mut response: Response<AckStream> = Response::new(Box::pin(ReceiverStream::new(rx)));
        if !echoed.is_empty() {
            if let Ok(value) = echoed.to_string().parse() {
                response.metadata_mut().insert(extensions::HEADER, value);
            }
        }
        Ok(response)
    }
}

/// Why a stream ended (the `reason` label of `stencil_intake_streams_total`).
fn close(generation: &'static str, reason: &'static str) {
    metrics::counter!(m::STREAMS_TOTAL, "generation" => generation, "reason" => reason)
        .increment(1);
}

/// Maps what the gRPC layer reports about an inbound message to the status PROTOCOL.md §14 gives:
/// - an oversized message is `RESOURCE_EXHAUSTED`, with the limit's name;
/// - a `StatefulBatch` that is not valid protobuf is `INVALID_ARGUMENT`. tonic reports it as `INTERNAL`,
///   which agents retry: the same bytes would be resent forever.
fn inbound_error(status: Status, max: usize) -> Status {
    // tonic says a message is over the limit with OUT_OF_RANGE (its only use of that code on this
    // path), and an undecodable message with INTERNAL and its decoder's text: neither has a typed kind.
    if status.code() == Code::OutOfRange {
        metrics::counter!(m::REJECTIONS, "reason" => "max_message_bytes").increment(1);
        Status::resource_exhausted(format!(
            "gRPC message larger than the intake's max_message_bytes ({max} bytes): {}",
            status.message()
        ))
    } else if status.code() == Code::Internal
        && status
            .message()
            .starts_with("failed to decode Protobuf message")
    {
        metrics::counter!(m::REJECTIONS, "reason" => "malformed_message").increment(1);
        Status::invalid_argument(format!(
            "the StatefulBatch message does not decode: {}",
            status.message()
        ))
    } else {
        status
    }
}

async fn run_stream(
    mut handler: StreamHandler,
    mut inbound: Streaming<StatefulBatch>,
    tx: mpsc::Sender<Result<BatchStatus, Status>>,
    slot: StreamSlot,
    shared: Arc<Shared>,
) {
    let generation = slot.generation;
    let idle = shared.config.idle_timeout;
    let reason = loop {
        tokio::select! {
            biased;
            _ = shared.shutdown.cancelled() => break "shutdown",
            _ = tokio::time::sleep(idle) => {
                tracing::info!(stream = handler.info().id, "idle timeout; ending the stream with OK");
                break "idle_timeout";
            }
            next = inbound.message() => match next {
                Ok(Some(batch)) => match handler.handle(batch).await.inspect(|_| {
                    metrics::gauge!(m::MEMORY_BUDGET_USED).set(shared.budget.used() as f64);
                }) {
                    // A client that reads no acks (its HTTP/2 window stays shut) must not hold its slot
                    // forever: waiting to hand over an ack counts as idle time.
                    Ok(ack) => match tokio::time::timeout(idle, tx.send(Ok(ack))).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => break "client_gone",
                        Err(_) => {
                            tracing::info!(stream = handler.info().id, "the client reads no acks; ending the stream");
                            break "client_stalled";
                        }
                    },
                    Err(status) => {
                        let reason = if status.code() == Code::Unavailable { "sink_error" } else { "rejected" };
                        let _ = tokio::time::timeout(idle, tx.send(Err(status))).await;
                        break reason;
                    }
                },
                Ok(None) => break "client_end",
                Err(status) => {
                    let status = inbound_error(status, shared.config.max_message_bytes);
                    let reason = match status.code() {
                        Code::ResourceExhausted | Code::InvalidArgument => "rejected",
                        _ => "cancelled",
                    };
                    let _ = tokio::time::timeout(idle, tx.send(Err(status))).await;
                    break reason;
                }
            }
        }
    };
    let (entries, bytes) = handler.state_size();
    metrics::histogram!(m::STREAM_STATE_ENTRIES).record(entries as f64);
    metrics::histogram!(m::STREAM_STATE_BYTES).record(bytes as f64);
    close(generation, reason);
    tracing::debug!(
        stream = handler.info().id,
        generation,
        reason,
        "stream ended"
    );
    // Dropping `tx` ends the response stream with OK unless an error status was sent.
    drop(slot);
}

#[tonic::async_trait]
impl StatefulIntake for IntakeService {
    type StatefulStreamStream = AckStream;

    async fn stateful_stream(
        &self,
        request: Request<Streaming<StatefulBatch>>,
    ) -> Result<Response<Self::StatefulStreamStream>, Status> {
        self.open(Generation::V3, request)
    }
}

#[tonic::async_trait]
impl StatefulLogsService for IntakeService {
    type LogsStreamStream = AckStream;

    async fn logs_stream(
        &self,
        request: Request<Streaming<StatefulBatch>>,
    ) -> Result<Response<Self::LogsStreamStream>, Status> {
        self.open(Generation::V2, request)
    }
}
