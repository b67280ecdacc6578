//! Generated wire types for the stateful-encoding logs protocol.
//!
//! This crate exists so that every other crate shares one copy of the generated code. It holds no logic:
//! the rules that give these messages meaning (delta registers, sentinels, reconstruction) live in
//! `stencil-codec`.
//!
//! - [`stateful`]: the envelope (`StatefulBatch`, `BatchStatus`) and, with the `grpc` feature, both gRPC
//!   services, in package `datadog.intake.stateful`, so that the method paths are exactly the ones
//!   Datadog peers use. Without the feature the crate is prost messages only (what `stencil-codec` and
//!   `stencil-patterns` use: no network or runtime crate below them).
//! - [`v3`]: the `LogDatumSequence` schema of `StatefulIntake/StatefulStream`.
//! - [`v2`]: the `DatumSequence` schema of `StatefulLogsService/LogsStream` (public agent-payload schema).

#![allow(clippy::all, missing_docs)]

/// Envelope messages and the v2 and v3 gRPC services (package `datadog.intake.stateful`).
pub mod stateful {
    include!(concat!(env!("OUT_DIR"), "/datadog.intake.stateful.rs"));
}

/// v3 datum messages (proto package `datadog.intake.stateful.v3`).
pub mod v3 {
    include!(concat!(env!("OUT_DIR"), "/datadog.intake.stateful.v3.rs"));
}

/// v2 datum messages (proto package `datadog.intake.stateful.v2`).
pub mod v2 {
    include!(concat!(env!("OUT_DIR"), "/datadog.intake.stateful.v2.rs"));
}

/// Full gRPC method path of the v3 stream.
pub const V3_METHOD_PATH: &str = "/datadog.intake.stateful.StatefulIntake/StatefulStream";
/// Full gRPC method path of the v2 stream.
pub const V2_METHOD_PATH: &str = "/datadog.intake.stateful.StatefulLogsService/LogsStream";

/// Encoded `FileDescriptorSet` of every proto file, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/stencil_descriptor.bin"));
