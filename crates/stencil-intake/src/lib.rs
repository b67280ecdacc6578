//! `stencil-intake`: a conforming, hardened gRPC receiver for both generations of the stateful-encoding
//! logs protocol.
//!
//! - [`server`]: start ([`bind`], [`start`]) and stop ([`RunningIntake::shutdown`]) the server: v3 and v2
//!   on one port, plus gRPC health and reflection.
//! - [`service`]: authentication, stream admission and the per-stream task (acks in order, one per batch).
//! - [`stream`]: the batch handler (decode with `stencil-codec`, write to the sink, then ack).
//! - [`sink`]: where rebuilt logs go: JSON Lines, per-source files, stdout, memory.
//! - [`config`]: keys and limits with their defaults.
//! - [`metrics`]: the Prometheus series.
//! - [`patterns`]: per-pattern counts of stored logs (`--patterns-report`, `/patterns`).

pub mod config;
mod conn;
pub mod metrics;
pub mod patterns;
pub mod server;
pub mod service;
pub mod sink;
pub mod stream;
mod throttle;

pub use config::{ApiKeys, IntakeConfig, TlsFiles};
pub use patterns::{PatternStats, PatternsSink};
pub use server::{bind, start, IntakeError, RunningIntake};
pub use sink::{
    FilesSink, JsonLinesSink, Layout, MemorySink, NatsConfig, NatsSink, Sink, SinkError, StreamInfo,
};
