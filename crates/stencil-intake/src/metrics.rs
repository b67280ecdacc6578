//! The intake's Prometheus metrics: names, labels and descriptions in one place.

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

/// Open streams, by generation (gauge).
pub const STREAMS_OPEN: &str = "stencil_intake_streams_open";
/// Streams ended, by generation and close reason (counter).
pub const STREAMS_TOTAL: &str = "stencil_intake_streams_total";
/// Batches accepted and acked, by generation (counter).
pub const BATCHES: &str = "stencil_intake_batches_total";
/// Logs accepted, by generation (counter).
pub const LOGS: &str = "stencil_intake_logs_total";
/// Payload bytes accepted, by stage: `compressed` (as received) or `decompressed` (counter).
pub const BYTES: &str = "stencil_intake_bytes_total";
/// Rejections, by reason (counter).
pub const REJECTIONS: &str = "stencil_intake_rejections_total";
/// Sink write failures (counter).
pub const SINK_ERRORS: &str = "stencil_intake_sink_errors_total";
/// State entries of a stream when it ends (histogram).
pub const STREAM_STATE_ENTRIES: &str = "stencil_intake_stream_state_entries";
/// State bytes of a stream when it ends (histogram).
pub const STREAM_STATE_BYTES: &str = "stencil_intake_stream_state_bytes";
/// Time from receiving a batch to sending its ack (histogram, seconds).
pub const ACK_LATENCY: &str = "stencil_intake_ack_latency_seconds";

/// Open TCP connections (gauge).
pub const CONNECTIONS_OPEN: &str = "stencil_intake_connections_open";
/// Connections refused at accept, by reason: `max_connections`, `accept_error` (counter).
pub const CONNECTIONS_REFUSED: &str = "stencil_intake_connections_refused_total";
/// Connections the intake closed, by reason: `idle` (counter).
pub const CONNECTIONS_CLOSED: &str = "stencil_intake_connections_closed_total";

/// Bytes the decoders hold against the process-wide memory budget (gauge).
pub const MEMORY_BUDGET_USED: &str = "stencil_intake_memory_budget_used_bytes";

/// Registers descriptions with the installed recorder.
pub fn describe() {
    describe_gauge!(STREAMS_OPEN, "Open streams, by generation");
    describe_counter!(
        STREAMS_TOTAL,
        "Streams ended, by generation and close reason"
    );
    describe_counter!(BATCHES, "Batches accepted and acked, by generation");
    describe_counter!(LOGS, "Logs accepted, by generation");
    describe_counter!(
        BYTES,
        Unit::Bytes,
        "Payload bytes accepted, by stage (compressed, decompressed)"
    );
    describe_counter!(REJECTIONS, "Streams ended by a rejection, by reason");
    describe_counter!(
        SINK_ERRORS,
        "Sink writes that failed (the batch was not acked)"
    );
    describe_histogram!(
        STREAM_STATE_ENTRIES,
        "State entries (dictionary + patterns + schemas) of a stream at its end"
    );
    describe_histogram!(
        STREAM_STATE_BYTES,
        Unit::Bytes,
        "State bytes of a stream at its end"
    );
    describe_gauge!(CONNECTIONS_OPEN, "Open TCP connections");
    describe_gauge!(
        MEMORY_BUDGET_USED,
        Unit::Bytes,
        "Bytes the stream decoders hold against the memory budget (state, buffers, rebuilt logs)"
    );
    describe_counter!(
        CONNECTIONS_REFUSED,
        "Connections refused at accept, by reason (max_connections, accept_error)"
    );
    describe_counter!(
        CONNECTIONS_CLOSED,
        "Connections the intake closed, by reason (idle: no stream for connection_idle_timeout)"
    );
    describe_histogram!(
        ACK_LATENCY,
        Unit::Seconds,
        "Time from receiving a batch to acking it"
    );
}
