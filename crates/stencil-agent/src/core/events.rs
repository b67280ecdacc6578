//! What goes into the core and what comes out: events (with the stream epoch they concern), effects
//! for the driver to carry out in order, notices for it to log, and the states and counters it
//! publishes.

use stencil_codec::Extensions;

use super::timers::Timer;
use crate::payload::{Checkpoint, Payload};

/// A stream incarnation number; it only increases.
pub type Epoch = u64;

/// gRPC status codes the core reasons about.
pub mod code {
    /// OK.
    pub const OK: i32 = 0;
    /// CANCELLED.
    pub const CANCELLED: i32 = 1;
    /// INVALID_ARGUMENT.
    pub const INVALID_ARGUMENT: i32 = 3;
    /// PERMISSION_DENIED.
    pub const PERMISSION_DENIED: i32 = 7;
    /// RESOURCE_EXHAUSTED.
    pub const RESOURCE_EXHAUSTED: i32 = 8;
    /// FAILED_PRECONDITION.
    pub const FAILED_PRECONDITION: i32 = 9;
    /// OUT_OF_RANGE.
    pub const OUT_OF_RANGE: i32 = 11;
    /// UNIMPLEMENTED.
    pub const UNIMPLEMENTED: i32 = 12;
    /// UNAUTHENTICATED.
    pub const UNAUTHENTICATED: i32 = 16;
}

/// Why the worker is paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pause {
    /// The API key was refused.
    Auth,
    /// The intake does not speak our protocol.
    Protocol,
}

/// Worker states (TRANSPORT.md §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Built, not started.
    Idle,
    /// A stream is opening.
    Connecting,
    /// Sending and acking.
    Active,
    /// Lifetime over: waiting for outstanding acks before rotating.
    Draining,
    /// Waiting before the next attempt.
    Backoff,
    /// Not retrying until the recheck timer or a key reload.
    Paused(Pause),
    /// Stop requested: sending the rest and waiting for acks within the grace period.
    ShuttingDown,
    /// Half-closed; waiting for the trailer.
    Closing,
    /// Done.
    Stopped,
}

impl State {
    /// A short label for metrics and health.
    pub fn name(&self) -> &'static str {
        match self {
            State::Idle => "idle",
            State::Connecting => "connecting",
            State::Active => "active",
            State::Draining => "draining",
            State::Backoff => "backoff",
            State::Paused(Pause::Auth) => "paused_auth",
            State::Paused(Pause::Protocol) => "paused_protocol",
            State::ShuttingDown => "shutting_down",
            State::Closing => "closing",
            State::Stopped => "stopped",
        }
    }
}

/// How a stream ended or failed to open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The gRPC status code, or `None` for a transport error (reset, TLS, socket).
    pub code: Option<i32>,
    /// The status message.
    pub message: String,
}

impl Failure {
    /// A clean end (`OK`).
    pub fn ok() -> Self {
        Failure {
            code: Some(code::OK),
            message: String::new(),
        }
    }
}

/// Inputs of the core.
#[derive(Debug, Clone)]
pub enum Event {
    /// Begin connecting.
    Start,
    /// Shut down gracefully.
    Stop,
    /// No more payloads will come.
    InputClosed,
    /// A payload from the batcher (offer only when [`Core::wants_input`](crate::Core::wants_input)).
    Payload(Payload),
    /// The stream of this epoch opened.
    Opened(Epoch),
    /// The stream of this epoch could not open.
    OpenFailed(Epoch, Failure),
    /// The response headers of this epoch's stream arrived, echoing these extensions (empty when the
    /// intake did not echo). They may arrive late, or never: the stream sends v3 until then.
    Echo(Epoch, Extensions),
    /// An ack: (epoch, batch id, status).
    Ack(Epoch, u32, i32),
    /// The stream of this epoch ended (`code` OK = clean end).
    Ended(Epoch, Failure),
    /// A timer fired (the core checks that it is still due).
    Timer(Timer),
    /// The API key changed.
    ApiKeyReloaded,
}

/// Outputs of the core, for the driver to carry out in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Open a stream for this epoch.
    Open(Epoch),
    /// Send a batch on the epoch's stream.
    Send {
        /// The epoch.
        epoch: Epoch,
        /// The batch id.
        batch_id: u32,
        /// `StatefulBatch.data`.
        data: bytes::Bytes,
    },
    /// Half-close the epoch's stream (no more batches) and let it finish.
    HalfClose(Epoch),
    /// Cancel the epoch's stream.
    Cancel(Epoch),
    /// Hand these checkpoints to the registry (an acked payload, in production order).
    Release {
        /// The payload's production number.
        seq: u64,
        /// Its checkpoints.
        checkpoints: Vec<Checkpoint>,
        /// Logs acked.
        logs: usize,
    },
    /// Logs given up on (poison), with the intake's reason; their checkpoints are released too.
    Dropped {
        /// The payload's production number.
        seq: u64,
        /// Its checkpoints.
        checkpoints: Vec<Checkpoint>,
        /// Logs dropped.
        logs: usize,
        /// Why.
        reason: String,
    },
    /// The worker's state changed.
    State(State),
    /// Something the operator should hear about, for the driver to log.
    Notice(Notice),
}

/// What the core has to say (the driver logs it; the core has no logger).
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    /// A stream failed or could not open (a warning: the worker backs off, pauses or rotates).
    StreamFailed {
        /// The gRPC status code, or `None` for a transport error.
        code: Option<i32>,
        /// The status message.
        message: String,
        /// The state the worker was in.
        state: &'static str,
    },
    /// The intake echoed extensions this agent could not set up; the stream stays on plain v3.
    ExtensionsUnavailable(String),
    /// Encoding with the extensions failed (a bug): the stream is replaced, and later ones use plain v3.
    ExtensionEncodingFailed(String),
    /// A payload referenced this many ids that no define resolves (a bug); its logs are sent raw.
    Dangling(usize),
    /// The snapshot (batch 0) keeps being rejected: the worker pauses until the recheck.
    SnapshotRejected,
    /// A log the intake rejects even alone is sent again as raw text.
    SentRaw {
        /// The intake's reason.
        reason: String,
    },
}

/// Counters, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CoreStats {
    /// Batches sent (snapshots included).
    pub batches_sent: u64,
    /// Bytes of `data` sent.
    pub bytes_sent: u64,
    /// Payloads released after their ack.
    pub released: u64,
    /// Payloads resent on a new epoch.
    pub replayed: u64,
    /// References no define resolved (must stay 0).
    pub dangling: u64,
    /// Stream failures.
    pub failures: u64,
    /// Soft rotations (lifetime, drained, server end, state size).
    pub rotations: u64,
    /// Rotations because the stream's intake-side state reached `max_stream_entries` or
    /// `max_stream_state_bytes`.
    pub state_rotations: u64,
    /// Logs dropped by the poison ladder.
    pub dropped_logs: u64,
    /// Steps down the poison ladder (split, degrade, raw rebuild).
    pub poison_steps: u64,
    /// Batches sent with the negotiated extensions.
    pub ext_batches: u64,
    /// Bytes of those batches.
    pub ext_bytes: u64,
    /// Streams on which the intake echoed the extensions.
    pub ext_streams: u64,
    /// JSON logs whose schema places the message, sent as their text because the stream did not agree
    /// to `json-order` (`ship --json-documents` to an intake without it).
    pub json_as_text: u64,
}
