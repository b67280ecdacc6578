//! `stencil-agent`: the agent side of the stateful-encoding logs protocol, from a host's log sources to
//! acked checkpoints (TRANSPORT.md), in the order the data flows:
//!
//! - [`sources`]: what a configured source reads and attaches, and the readers (files, tail, glob,
//!   stdin, TCP);
//! - [`multiline`] and [`processing`]: a source's `multi_line` joining, processing rules and status
//!   detection;
//! - [`pipeline`]: sources → transforms → engine → batcher → stream worker, one pass or following;
//! - [`batcher`]: entries to payloads (count, bytes and age triggers; size guard);
//! - [`payload`]: payloads (canonical datums, references, checkpoints, the canonical encoding);
//! - [`snapshot`]: the snapshot, reference counts, parked deletes and the prefix planner;
//! - [`core`]: the stream worker's deterministic state machine (events in, effects out);
//! - [`driver`]: the tokio driver that runs a core over a tonic bidi stream; [`endpoints`]: which
//!   intake a stream opens on;
//! - [`checkpoint`]: the coalescing mailbox towards the checkpoint [`registry`] (atomic writes, resume
//!   after a crash);
//! - [`metrics`]: the series exported from the start.

pub mod batcher;
pub mod checkpoint;
pub mod core;
pub mod driver;
pub mod endpoints;
pub mod metrics;
pub mod multiline;
pub mod payload;
pub mod pipeline;
pub mod processing;
pub mod registry;
pub mod snapshot;
pub mod sources;

pub use batcher::{BatchConfig, Batcher, Entry, Flush};
pub use checkpoint::Mailbox;
pub use core::{Core, CoreConfig, CoreStats, Effect, Epoch, Event, Failure, State, Timer};
pub use driver::{channel, spawn, tls_channel, Headers, Worker, WorkerReport};
pub use endpoints::{EndpointStatus, Endpoints};
pub use payload::{Checkpoint, Payload};
pub use sources::{Source, SourceInput, StartPosition};
