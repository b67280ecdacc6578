//! The agent's metrics that must be visible before anything happens: a drop or a skipped file is
//! what an operator alerts on, so these series are described and exported at 0 from the start, not
//! only after the first incident.

use metrics::{describe_counter, describe_gauge, Unit};

use crate::sources::Source;

/// Logs dropped, by reason: `too_large` (over the batch size even alone), `poison` (rejected by the
/// intake even alone and as raw text) (counter).
pub const LOGS_DROPPED: &str = "stencil_agent_logs_dropped_total";
/// Files that could not be opened or read, by reason: `permission_denied`, `vanished`, `io_error`
/// (counter).
pub const FILES_SKIPPED: &str = "stencil_agent_files_skipped_total";

/// Lines read, by source (counter).
pub const SOURCE_LINES: &str = "stencil_agent_source_lines_total";
/// Bytes read (terminators included), by source (counter).
pub const SOURCE_BYTES: &str = "stencil_agent_source_bytes_total";
/// Events dropped by a processing rule, by source and rule (counter).
pub const SOURCE_EXCLUDED: &str = "stencil_agent_source_events_excluded_total";
/// Files followed now, by source and pipeline (gauge).
pub const SOURCE_FILES_WATCHED: &str = "stencil_agent_source_files_watched";
/// Bytes written to followed files but not read yet, by source and pipeline (gauge).
pub const SOURCE_LAG_BYTES: &str = "stencil_agent_source_lag_bytes";

/// Describes the per-source series and exports them at 0 for every source.
pub fn describe_sources(sources: &[Source]) {
    describe_counter!(SOURCE_LINES, Unit::Count, "Lines read, by source");
    describe_counter!(
        SOURCE_BYTES,
        Unit::Bytes,
        "Bytes read (line terminators included), by source"
    );
    describe_counter!(
        SOURCE_EXCLUDED,
        Unit::Count,
        "Events dropped by an exclude_at_match or include_at_match rule, by source and rule"
    );
    describe_gauge!(
        SOURCE_FILES_WATCHED,
        Unit::Count,
        "Files followed now, by source and pipeline"
    );
    describe_gauge!(
        SOURCE_LAG_BYTES,
        Unit::Bytes,
        "Bytes written to followed files but not read yet, by source and pipeline"
    );
    for s in sources {
        metrics::counter!(SOURCE_LINES, "source" => s.name.clone()).absolute(0);
        metrics::counter!(SOURCE_BYTES, "source" => s.name.clone()).absolute(0);
        for rule in &s.rules {
            if !matches!(rule, crate::processing::Rule::MaskSequences { .. }) {
                metrics::counter!(SOURCE_EXCLUDED, "source" => s.name.clone(), "rule" => rule.name().to_owned())
                    .absolute(0);
            }
        }
    }
}

/// Describes the series and sets every label to 0.
pub fn describe() {
    describe_counter!(
        LOGS_DROPPED,
        Unit::Count,
        "Logs dropped, by reason (too_large, poison); each drop is also a warning"
    );
    describe_counter!(
        FILES_SKIPPED,
        Unit::Count,
        "Files that could not be opened or read, by reason; each is warned about and retried"
    );
    // Every other family of the agent, so that each has its `# HELP` line.
    for (name, unit, help) in [
        (
            "stencil_agent_logs_acked_total",
            Unit::Count,
            "Logs whose payload the intake acked, by pipeline",
        ),
        (
            "stencil_agent_batches_sent_total",
            Unit::Count,
            "Batches sent (snapshots included), by pipeline",
        ),
        (
            "stencil_agent_batch_wire_bytes_total",
            Unit::Bytes,
            "Bytes of batch data sent, by pipeline",
        ),
        (
            "stencil_agent_payloads_acked_total",
            Unit::Count,
            "Payloads released after their ack, by pipeline",
        ),
        (
            "stencil_agent_payloads_replayed_total",
            Unit::Count,
            "Payloads resent on a new stream, by pipeline",
        ),
        (
            "stencil_agent_dangling_references_total",
            Unit::Count,
            "References no define resolved (must stay 0), by pipeline",
        ),
        (
            "stencil_agent_stream_failures_total",
            Unit::Count,
            "Streams that failed, by pipeline",
        ),
        (
            "stencil_agent_stream_rotations_total",
            Unit::Count,
            "Soft stream rotations (lifetime, drained, server end, state size), by pipeline",
        ),
        (
            "stencil_agent_state_rotations_total",
            Unit::Count,
            "Rotations because the intake-side state of a stream reached its cap, by pipeline",
        ),
        (
            "stencil_agent_extension_batches_total",
            Unit::Count,
            "Batches sent with the negotiated wire extensions, by pipeline",
        ),
        (
            "stencil_agent_extension_wire_bytes_total",
            Unit::Bytes,
            "Bytes of the batches sent with the extensions, by pipeline",
        ),
        (
            "stencil_agent_extension_streams_total",
            Unit::Count,
            "Streams on which the intake echoed the extensions, by pipeline",
        ),
        (
            "stencil_agent_json_documents_as_text_total",
            Unit::Count,
            "JSON logs sent as their text because the stream's intake did not agree to json-order (ship --json-documents), by pipeline",
        ),
        (
            "stencil_agent_poison_steps_total",
            Unit::Count,
            "Steps down the poison ladder (split, degrade, raw rebuild), by pipeline",
        ),
        (
            "stencil_agent_batcher_flushes_total",
            Unit::Count,
            "Payloads cut by the batcher, by reason",
        ),
        (
            "stencil_agent_lines_split_total",
            Unit::Count,
            "Lines longer than the line cap, split into parts",
        ),
        (
            "stencil_agent_registry_flushes_total",
            Unit::Count,
            "Checkpoint registry writes",
        ),
        (
            "stencil_agent_registry_flush_errors_total",
            Unit::Count,
            "Checkpoint registry writes that failed",
        ),
        (
            "stencil_agent_rotated_leftovers_total",
            Unit::Count,
            "Rotated files found at start with lines past their checkpoint",
        ),
        (
            "stencil_agent_tcp_connections_refused_total",
            Unit::Count,
            "TCP connections closed at once because too many were open",
        ),
        (
            "stencil_agent_endpoint_failures_total",
            Unit::Count,
            "Streams that failed on an endpoint, by endpoint",
        ),
    ] {
        describe_counter!(name, unit, help);
    }
    for (name, unit, help) in [
        (
            "stencil_agent_stream_state",
            Unit::Count,
            "1 for the stream state each pipeline is in, 0 for the others",
        ),
        (
            "stencil_agent_inflight_payloads",
            Unit::Count,
            "Payloads sent and not acked yet, by pipeline",
        ),
        (
            "stencil_agent_inflight_bytes",
            Unit::Bytes,
            "Bytes of the payloads not acked yet, by pipeline",
        ),
        (
            "stencil_agent_stream_error_count",
            Unit::Count,
            "Consecutive stream failures (the backoff step), by pipeline",
        ),
        (
            "stencil_agent_stream_sources",
            Unit::Count,
            "Sources (files, sockets) of the current stream by form: raw text or structured (0 on plain v3), by pipeline",
        ),
        (
            "stencil_agent_endpoint_up",
            Unit::Count,
            "1 when an endpoint is in use, 0 while it is left out after a failure",
        ),
        (
            "stencil_agent_endpoint_streams",
            Unit::Count,
            "Streams open on each endpoint",
        ),
    ] {
        describe_gauge!(name, unit, help);
    }
    for reason in ["too_large", "poison"] {
        metrics::counter!(LOGS_DROPPED, "reason" => reason).absolute(0);
    }
    for reason in ["permission_denied", "vanished", "io_error"] {
        metrics::counter!(FILES_SKIPPED, "reason" => reason).absolute(0);
    }
}
