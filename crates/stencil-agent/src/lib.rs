//! `stencil-agent`: the agent side of the stateful-encoding logs protocol, from payloads to acked
//! checkpoints (TRANSPORT.md).
//!
//! - [`batcher`]: entries to payloads (count, bytes and age triggers; size guard).
//! - [`payload`]: payloads (canonical datums, references, checkpoints, the canonical encoding).
//! - [`snapshot`]: the snapshot, reference counts, parked deletes and the prefix planner.
//! - [`core`]: the stream worker's deterministic state machine (events in, effects out).
//! - [`driver`]: the tokio driver that runs a core over a tonic bidi stream.
//! - [`files`] and [`ship`]: one pass over files or stdin, end to end (`stencil ship --once`).
//! - [`tail`]: following files through rotation and truncation.
//! - [`registry`]: the persisted checkpoint registry (atomic writes, resume after a crash).
//! - [`checkpoint`]: the coalescing mailbox towards the checkpoint registry.
//! - [`source`]: what a configured source reads and attaches; [`multiline`] and [`processing`]: its
//!   `multi_line` joining, processing rules and status detection.

pub mod batcher;
pub mod checkpoint;
pub mod core;
pub mod driver;
pub mod endpoints;
pub mod files;
pub mod glob;
pub mod metrics;
pub mod multiline;
pub mod payload;
pub mod processing;
pub mod registry;
pub mod ship;
pub mod snapshot;
pub mod source;
pub mod stdin;
pub mod tail;
pub mod tcp;

pub use batcher::{BatchConfig, Batcher, Entry, Flush};
pub use checkpoint::Mailbox;
pub use core::{Core, CoreConfig, CoreStats, Effect, Epoch, Event, Failure, State, Timer};
pub use driver::{channel, spawn, tls_channel, Headers, Worker, WorkerReport};
pub use endpoints::{EndpointStatus, Endpoints};
pub use payload::{Checkpoint, Payload};
pub use source::{Source, SourceInput, StartPosition};
