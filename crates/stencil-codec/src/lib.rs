//! `stencil-codec`: the sans-I/O core of the stateful-encoding logs protocol, shared by the agent and the
//! intake. No sockets, no clocks, no threads: bytes and datums in, bytes and logs out.
//!
//! # The pieces
//!
//! - [`datum`]: the canonical, immutable datum model (pattern, dictionary and JSON schema defines and
//!   deletes, and logs with typed values and typed JSON columns). Datums always hold absolute values.
//! - [`BatchEncoder`]: datums → per-batch delta coding → protobuf → compression → `StatefulBatch.data`.
//! - [`StreamDecoder`]: `StatefulBatch` → decompression under a cap → protobuf → undo deltas → apply state
//!   datums in order → [`LogRecord`]s. One per stream; it owns that stream's [`StreamState`].
//! - [`Compression`]: the payload codec and its `dd-content-encoding` header.
//! - [`ErrorKind`] / [`DecodeError`]: every rejection of PROTOCOL.md §14, each with its gRPC status.
//!
//! # Example: one batch through both ends
//!
//! ```
//! use stencil_codec::datum::*;
//! use stencil_codec::{BatchEncoder, Compression, Generation, Limits, StreamDecoder};
//!
//! let datums = vec![
//!     Datum::PatternDefine(PatternDefine { id: 1, template: "user  logged in".into(), pos_list: vec![5] }),
//!     Datum::DictDefine(DictDefine { id: 2, value: "info".into() }),
//!     Datum::Log(Log {
//!         timestamp: 1_700_000_000_000,
//!         status: Some(Value::Dict(2)),
//!         service: None,
//!         tags: None,
//!         content: Content::Pattern { id: 1, values: vec![Value::Str("alice".into()).into()] },
//!         json: None,
//!         uuid: None,
//!     }),
//! ];
//! let encoder = BatchEncoder::new(Generation::V3, Compression::default());
//! let payload = encoder.encode(&datums).unwrap();
//!
//! // The intake side: one decoder per stream, batches in order from 0.
//! let mut decoder = StreamDecoder::new(Generation::V3, Compression::default(), Limits::default());
//! decoder.decode(0, &[]).unwrap(); // an empty snapshot
//! let batch = decoder.decode(1, &payload.data).unwrap();
//! assert_eq!(batch.logs[0].message, "user alice logged in");
//! assert_eq!(batch.logs[0].status.as_deref(), Some("info"));
//! ```

pub mod batch;
pub mod budget;
pub mod compression;
pub mod datum;
pub mod error;
pub mod escape;
pub mod extensions;
pub mod json;
pub mod json_order;
pub mod native;
pub mod reconstruct;
pub mod state;
pub mod stream;
mod v2;
mod v3;

pub use batch::{BatchEncoder, DecodedBatch, EncodedBatch, StreamDecoder};
pub use budget::{MemoryBudget, Reservation};
pub use compression::Compression;
pub use error::{DecodeError, EncodeError, ErrorKind, GrpcCode, Space};
pub use extensions::{ExtEncoder, Extensions, Mode};
pub use json_order::Unplacer;
pub use reconstruct::{
    float_text, original_bytes, pattern_hash, record_text, LogRecord, PatternRef, RECORD_OVERHEAD,
};
pub use state::{Limits, StreamState};
pub use v2::ABSOLUTE_TIMESTAMP_THRESHOLD as V2_ABSOLUTE_TIMESTAMP_THRESHOLD;

/// The two schema generations. Only the gRPC method path tells them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Generation {
    /// The public agent-payload schema: `StatefulLogsService/LogsStream`, `DatumSequence`.
    V2,
    /// The newer Datadog Agent schema: `StatefulIntake/StatefulStream`, `LogDatumSequence`.
    V3,
}

impl Generation {
    /// The full gRPC method path.
    pub fn method_path(&self) -> &'static str {
        match self {
            Generation::V2 => stencil_proto::V2_METHOD_PATH,
            Generation::V3 => stencil_proto::V3_METHOD_PATH,
        }
    }

    /// The generation served at a method path, if any.
    pub fn from_method_path(path: &str) -> Option<Generation> {
        [Generation::V2, Generation::V3]
            .into_iter()
            .find(|g| g.method_path() == path)
    }

    /// `v2` or `v3`.
    pub fn name(&self) -> &'static str {
        match self {
            Generation::V2 => "v2",
            Generation::V3 => "v3",
        }
    }
}
