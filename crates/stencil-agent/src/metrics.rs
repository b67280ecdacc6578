//! The agent's metrics that must be visible before anything happens: a drop or a skipped file is
//! what an operator alerts on, so these series are described and exported at 0 from the start, not
//! only after the first incident.

use metrics::{describe_counter, Unit};

/// Logs dropped, by reason: `too_large` (over the batch size even alone), `poison` (rejected by the
/// intake even alone and as raw text) (counter).
pub const LOGS_DROPPED: &str = "stencil_agent_logs_dropped_total";
/// Files that could not be opened or read, by reason: `permission_denied`, `vanished`, `io_error`
/// (counter).
pub const FILES_SKIPPED: &str = "stencil_agent_files_skipped_total";

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
    for reason in ["too_large", "poison"] {
        metrics::counter!(LOGS_DROPPED, "reason" => reason).absolute(0);
    }
    for reason in ["permission_denied", "vanished", "io_error"] {
        metrics::counter!(FILES_SKIPPED, "reason" => reason).absolute(0);
    }
}
