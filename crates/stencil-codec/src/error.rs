//! Typed errors. Rejection is part of the API: every "must reject" case of PROTOCOL.md §14 has its own
//! [`ErrorKind`], a stable metric label ([`ErrorKind::reason`]) and the gRPC status it maps to
//! ([`ErrorKind::grpc_code`]). Nothing in the decoder panics on input.

use std::fmt;

/// The id spaces of stream state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Space {
    /// Pattern ids.
    Pattern,
    /// Dictionary ids.
    Dictionary,
    /// JSON schema ids.
    Schema,
}

impl fmt::Display for Space {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Space::Pattern => "pattern",
            Space::Dictionary => "dictionary",
            Space::Schema => "JSON schema",
        })
    }
}

/// The gRPC status codes the codec's errors map to. The numbers are the gRPC wire codes, so an intake can
/// convert with `tonic::Code::from_i32(code as i32)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum GrpcCode {
    /// Code 3: the batch is malformed or inconsistent.
    InvalidArgument = 3,
    /// Code 8: a deterministic limit was exceeded.
    ResourceExhausted = 8,
    /// Code 14: overload; the client retries, here or elsewhere (PROTOCOL.md §13).
    Unavailable = 14,
    /// Code 13: an internal invariant failed.
    Internal = 13,
}

/// Why a batch (or a stream header) was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// `dd-content-encoding` names a codec we do not know.
    #[error("unsupported dd-content-encoding {0:?}: use zstd, gzip or identity")]
    UnsupportedContentEncoding(String),
    /// The payload is not valid data for the stream's codec (corrupt, truncated, trailing garbage).
    #[error("corrupt {codec} payload: {detail}")]
    CorruptPayload {
        /// The stream's codec.
        codec: &'static str,
        /// What the decompressor said.
        detail: String,
    },
    /// The payload inflates past the decompressed-size limit.
    #[error("decompressed payload exceeds the limit of {limit} bytes (decompression bomb)")]
    DecompressionBomb {
        /// The limit in bytes.
        limit: usize,
    },
    /// The decompressed bytes are not a valid datum sequence.
    #[error("protobuf does not decode: {0}")]
    MalformedProtobuf(String),
    /// A `string` field, raw JSON value or raw JSON column is not UTF-8.
    #[error("invalid UTF-8 where a string is required: {0}")]
    InvalidUtf8(String),
    /// The batch id is not the next one on the stream.
    #[error("batch id {got} is out of sequence: expected {expected}")]
    BatchOutOfSequence {
        /// What the stream expected, e.g. `0` or `0 or 1`.
        expected: String,
        /// The id received.
        got: u32,
    },
    /// A datum with no known member set.
    #[error("a datum has no known member set")]
    EmptyDatum,
    /// A v2 `Log` with neither `structured` nor `raw`.
    #[error("a v2 log has neither structured nor raw content")]
    LogWithoutContent,
    /// A define of a reserved id.
    #[error("{space} id {id} is reserved and cannot be defined")]
    ReservedId {
        /// The id space.
        space: Space,
        /// The id.
        id: u64,
    },
    /// A reference to an id that is not defined on this stream.
    #[error("{space} id {id} is not defined on this stream")]
    UnknownId {
        /// The id space.
        space: Space,
        /// The id.
        id: u64,
    },
    /// Sentinel 0 ("same as previous") while the register is empty.
    #[error("{field} is 0 (same as previous) but no previous value exists in this batch")]
    SentinelWithoutPrevious {
        /// The field name.
        field: &'static str,
    },
    /// `pos_list` decreases.
    #[error("pattern {pattern_id}: pos_list decreases at index {index}")]
    PosListDecreasing {
        /// The pattern id.
        pattern_id: u64,
        /// The first offending index.
        index: usize,
    },
    /// A `pos_list` entry is beyond the template length (in code points).
    #[error("pattern {pattern_id}: pos_list entry {pos} is beyond the template length of {len} code points")]
    PosListOutOfRange {
        /// The pattern id.
        pattern_id: u64,
        /// The offending entry.
        pos: u32,
        /// The template length in code points.
        len: usize,
    },
    /// A v2 `param_count` that differs from `len(pos_list)`.
    #[error(
        "pattern {pattern_id}: param_count {param_count} differs from len(pos_list) {pos_len}"
    )]
    ParamCountMismatch {
        /// The pattern id.
        pattern_id: u64,
        /// The declared count.
        param_count: u32,
        /// The real count.
        pos_len: usize,
    },
    /// A structured log whose value count differs from its pattern's hole count.
    #[error("pattern {pattern_id} has {expected} wildcards but the log carries {got} values")]
    ValueCountMismatch {
        /// The pattern id.
        pattern_id: u64,
        /// Holes in the pattern.
        expected: usize,
        /// Values in the log.
        got: usize,
    },
    /// A raw log with dynamic values.
    #[error("a raw log carries {0} dynamic values")]
    ValuesOnRawLog(usize),
    /// A schema whose kinds length differs from its keys length.
    #[error("JSON schema {schema_id}: {kinds} value kinds for {keys} keys")]
    KindsLengthMismatch {
        /// The schema id.
        schema_id: u64,
        /// Number of kind bytes.
        kinds: usize,
        /// Number of keys.
        keys: usize,
    },
    /// A schema whose message index (`json-order`) is past its last column.
    #[error("JSON schema {schema_id}: the message goes after {index} columns, but it has {keys}")]
    MessageIndexOutOfRange {
        /// The schema id.
        schema_id: u64,
        /// The index received.
        index: u64,
        /// Number of keys.
        keys: usize,
    },
    /// A kind byte of 0 or 8 and above.
    #[error("JSON schema {schema_id}: invalid value kind {kind}")]
    InvalidJsonKind {
        /// The schema id.
        schema_id: u64,
        /// The byte.
        kind: u8,
    },
    /// JSON columns not consumed exactly by the schema.
    #[error("JSON columns do not match schema {schema_id}: {detail}")]
    JsonColumnsMismatch {
        /// The schema id.
        schema_id: u64,
        /// Which column is off.
        detail: String,
    },
    /// JSON columns on a log without a schema.
    #[error("JSON columns present on a log without a JSON schema")]
    ColumnsWithoutSchema,
    /// v2: the context value count differs from the key count.
    #[error("v2 JSON context has {keys} keys but {values} values")]
    ContextCountMismatch {
        /// Keys in the key list.
        keys: usize,
        /// Values in the log.
        values: usize,
    },
    /// A `DynamicValue` with no member set.
    #[error("a dynamic value has no member set")]
    EmptyDynamicValue,
    /// A NaN or infinite float.
    #[error("a float value is not finite")]
    NonFiniteFloat,
    /// A raw JSON value that is not exactly one JSON value.
    #[error("raw JSON is not exactly one JSON value: {0}")]
    InvalidRawJson(String),
    /// A JSON key path collides with another or runs through a non-object value.
    #[error("JSON path conflict at {0:?}")]
    JsonPathConflict(String),
    /// A JSON key path nests deeper than [`crate::json::MAX_KEY_PATH_DEPTH`].
    #[error("JSON key path deeper than {limit} levels")]
    JsonPathTooDeep {
        /// The limit.
        limit: usize,
    },
    /// Timestamp arithmetic overflowed `int64`.
    #[error("timestamp overflows int64")]
    TimestampOverflow,
    /// Per-stream state over a limit.
    #[error("stream state over its limit: {what} (limit {limit})")]
    StateLimit {
        /// Which limit.
        what: &'static str,
        /// The limit.
        limit: usize,
    },
    /// Reconstructed output of one batch over its limit.
    #[error("reconstructed output of the batch exceeds the limit of {limit} bytes")]
    OutputLimit {
        /// The limit.
        limit: usize,
    },
    /// The process-wide memory budget cannot hold this batch now: overload, not a fault of the batch.
    #[error(
        "the intake is over its memory budget of {limit} bytes; retry later or on another intake"
    )]
    MemoryBudget {
        /// The budget in bytes.
        limit: usize,
    },
    /// The decoder already rejected a batch; its state is gone and the stream must end.
    #[error("the stream already failed; open a new stream")]
    StreamFailed,
}

impl ErrorKind {
    /// The gRPC status an intake ends the stream with (PROTOCOL.md §14).
    pub fn grpc_code(&self) -> GrpcCode {
        match self {
            ErrorKind::DecompressionBomb { .. }
            | ErrorKind::StateLimit { .. }
            | ErrorKind::OutputLimit { .. } => GrpcCode::ResourceExhausted,
            ErrorKind::StreamFailed => GrpcCode::Internal,
            ErrorKind::MemoryBudget { .. } => GrpcCode::Unavailable,
            _ => GrpcCode::InvalidArgument,
        }
    }

    /// A short, stable label for metrics (`reason="..."`).
    pub fn reason(&self) -> &'static str {
        match self {
            ErrorKind::UnsupportedContentEncoding(_) => "unsupported_encoding",
            ErrorKind::CorruptPayload { .. } => "corrupt_payload",
            ErrorKind::DecompressionBomb { .. } => "decompression_bomb",
            ErrorKind::MalformedProtobuf(_) => "malformed_protobuf",
            ErrorKind::InvalidUtf8(_) => "invalid_utf8",
            ErrorKind::BatchOutOfSequence { .. } => "batch_out_of_sequence",
            ErrorKind::EmptyDatum => "empty_datum",
            ErrorKind::LogWithoutContent => "log_without_content",
            ErrorKind::ReservedId { .. } => "reserved_id",
            ErrorKind::UnknownId { .. } => "unknown_id",
            ErrorKind::SentinelWithoutPrevious { .. } => "sentinel_without_previous",
            ErrorKind::PosListDecreasing { .. } | ErrorKind::PosListOutOfRange { .. } => {
                "bad_pos_list"
            }
            ErrorKind::ParamCountMismatch { .. }
            | ErrorKind::ValueCountMismatch { .. }
            | ErrorKind::ValuesOnRawLog(_)
            | ErrorKind::KindsLengthMismatch { .. }
            | ErrorKind::MessageIndexOutOfRange { .. }
            | ErrorKind::JsonColumnsMismatch { .. }
            | ErrorKind::ColumnsWithoutSchema
            | ErrorKind::ContextCountMismatch { .. } => "value_count_mismatch",
            ErrorKind::InvalidJsonKind { .. } => "invalid_json_kind",
            ErrorKind::EmptyDynamicValue => "empty_dynamic_value",
            ErrorKind::NonFiniteFloat => "non_finite_float",
            ErrorKind::InvalidRawJson(_) => "invalid_raw_json",
            ErrorKind::JsonPathConflict(_) => "json_path_conflict",
            ErrorKind::JsonPathTooDeep { .. } => "json_path_too_deep",
            ErrorKind::TimestampOverflow => "timestamp_overflow",
            ErrorKind::StateLimit { .. } => "state_limit",
            ErrorKind::OutputLimit { .. } => "output_limit",
            ErrorKind::StreamFailed => "stream_failed",
            ErrorKind::MemoryBudget { .. } => "memory_budget",
        }
    }
}

/// A rejected batch: the reason, and the batch id when one is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// The batch being decoded, if any.
    pub batch_id: Option<u32>,
    /// Why it was rejected.
    pub kind: ErrorKind,
}

impl DecodeError {
    /// The gRPC status for this error.
    pub fn grpc_code(&self) -> GrpcCode {
        self.kind.grpc_code()
    }
}

impl From<ErrorKind> for DecodeError {
    fn from(kind: ErrorKind) -> Self {
        DecodeError {
            batch_id: None,
            kind,
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.batch_id {
            Some(id) => write!(f, "batch {id} rejected: {}", self.kind),
            None => write!(f, "rejected: {}", self.kind),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Why a batch could not be encoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The datum uses something the chosen generation's schema cannot carry.
    #[error("{generation} cannot carry {what}")]
    NotRepresentable {
        /// `v2` or `v3`.
        generation: &'static str,
        /// What was refused.
        what: &'static str,
    },
    /// The compressor failed (out of memory): fatal for an agent, never a silent drop.
    #[error("compression failed: {0}")]
    Compression(#[from] std::io::Error),
    /// A log could not be rendered as text for the raw form of the wire extensions (its pattern or a
    /// dictionary entry is unknown to the stream): a bug in what the encoder was given.
    #[error("rendering a log as text: {0}")]
    Rendering(ErrorKind),
}
