//! The canonical datum model shared by both ends and both schema generations.
//!
//! Datums are plain, immutable values with **absolute** meaning: a log carries its real timestamp and the real
//! ids it references, never a delta or a sentinel. Delta coding exists only inside the wire encoders and
//! decoders (`v3`, `v2`), so a datum can be re-encoded on any stream, in any batch, any
//! number of times, and always means the same thing.
//!
//! The model is the union of what v2 and v3 can say. Each generation's encoder refuses, with
//! [`crate::EncodeError::NotRepresentable`], the few things its schema cannot carry (for example JSON schemas
//! in v2, or an empty raw log in v3); see each variant's documentation.

/// One unit of a batch: a state change or a log. Order within a batch is significant.
#[derive(Debug, Clone, PartialEq)]
pub enum Datum {
    /// Define or redefine (update) a pattern.
    PatternDefine(PatternDefine),
    /// Forget a pattern id. Deleting an unknown id is a no-op.
    PatternDelete {
        /// The pattern id.
        id: u64,
    },
    /// Define or redefine a dictionary entry.
    DictDefine(DictDefine),
    /// Forget a dictionary id. Deleting an unknown id is a no-op.
    DictDelete {
        /// The dictionary id.
        id: u64,
    },
    /// Define or redefine a JSON schema (v3 only).
    SchemaDefine(SchemaDefine),
    /// Forget a JSON schema id (v3 only). Deleting an unknown id is a no-op.
    SchemaDelete {
        /// The schema id.
        id: u64,
    },
    /// One log.
    Log(Log),
}

impl Datum {
    /// True for every datum except [`Datum::Log`].
    pub fn is_state_change(&self) -> bool {
        !matches!(self, Datum::Log(_))
    }
}

/// A pattern: static text with holes. The holes are omitted from `template`; `pos_list[i]` is the number of
/// Unicode code points of `template` that precede hole `i` (non-decreasing, at most the template's length).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternDefine {
    /// Pattern id, at least 1 (0 is the "same as last" sentinel on the wire).
    pub id: u64,
    /// Static text, holes omitted. Must not contain characters at or above U+10000 (PROTOCOL §11.3).
    pub template: String,
    /// One insertion offset per hole, in code points.
    pub pos_list: Vec<u32>,
}

/// A dictionary entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DictDefine {
    /// Dictionary id. In v3 at least 2 (0 and 1 are sentinels); in v2 any id.
    pub id: u64,
    /// Any UTF-8 text, empty allowed.
    pub value: String,
}

/// A v3 JSON schema: the key paths of a JSON log's context columns, and where the message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaDefine {
    /// Schema id, at least 2 (0 = same as previous, 1 = none).
    pub id: u64,
    /// Dictionary ids of escaped key paths (see [`crate::json::split_key_path`]), in column order.
    pub keys: Vec<u64>,
    /// Dictionary id of the escaped key path where the message text is re-inserted.
    pub message_key: u64,
    /// One kind per key.
    pub kinds: Vec<JsonKind>,
    /// How many columns, in key order, are set before the message, so that a document keeps its
    /// members' order wherever its message is; `None` sets it after all of them (PROTOCOL.md §11.4). A
    /// Stencil extension, `json-order` (docs/extensions.md).
    pub message_at: Option<u32>,
}

/// The kind of one JSON context column (v3 `JsonValueKind`, carried as one byte per key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum JsonKind {
    /// `null`, consumes nothing.
    Null = 1,
    /// `true` / `false`, one bit of the bool column.
    Bool = 2,
    /// A JSON integer, one element of the int column.
    Int = 3,
    /// A JSON number, one element of the float column.
    Float = 4,
    /// A JSON string held in the dictionary, one element of the dict column.
    DictString = 5,
    /// An inline JSON string, one element of the string column.
    String = 6,
    /// Any JSON value, verbatim, one element of the raw column.
    RawJson = 7,
}

impl JsonKind {
    /// The kind for a wire byte, or `None` for 0 and values of 8 and above.
    pub fn from_byte(b: u8) -> Option<JsonKind> {
        Some(match b {
            1 => JsonKind::Null,
            2 => JsonKind::Bool,
            3 => JsonKind::Int,
            4 => JsonKind::Float,
            5 => JsonKind::DictString,
            6 => JsonKind::String,
            7 => JsonKind::RawJson,
            _ => return None,
        })
    }
}

/// One log with absolute values.
#[derive(Debug, Clone, PartialEq)]
pub struct Log {
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// The status (e.g. `info`). v3 carries only [`Value::Dict`]; v2 any value except bool and raw JSON.
    pub status: Option<Value>,
    /// The service. v3 only, as [`Value::Dict`]; v2 carries the service inside the tags (`service:` tag).
    pub service: Option<Value>,
    /// The comma-joined tag string. v3 carries only [`Value::Dict`]. In v2 an empty string means no tags.
    pub tags: Option<Value>,
    /// The message text: raw, or a pattern plus values.
    pub content: Content,
    /// JSON context, for logs that were JSON documents.
    pub json: Option<JsonContext>,
    /// Optional tracking id, passed through untouched.
    pub uuid: Option<String>,
}

impl Log {
    /// A raw log: `text` verbatim at `timestamp`, with no status, service, tags, JSON context or uuid.
    pub fn raw(timestamp: i64, text: impl Into<String>) -> Log {
        Log {
            timestamp,
            status: None,
            service: None,
            tags: None,
            content: Content::Raw(text.into()),
            json: None,
            uuid: None,
        }
    }
}

/// The message text of a log.
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    /// The text verbatim. v3 cannot carry an empty raw log (an empty `raw_log` means "structured"); encode
    /// an empty message with a pattern instead.
    Raw(String),
    /// A pattern and one value per hole.
    Pattern {
        /// The pattern id.
        id: u64,
        /// One value per `pos_list` entry, in hole order.
        values: Vec<DynValue>,
    },
}

/// A typed value that fills one pattern hole.
#[derive(Debug, Clone, PartialEq)]
pub struct DynValue {
    /// The value.
    pub value: Value,
    /// v3 only: in JSON output, render an int, float or bool as a JSON string. No effect on text.
    pub render_as_string: bool,
}

impl DynValue {
    /// A value without the `render_as_string` flag.
    pub fn new(value: Value) -> Self {
        DynValue {
            value,
            render_as_string: false,
        }
    }
}

impl From<Value> for DynValue {
    fn from(value: Value) -> Self {
        DynValue::new(value)
    }
}

/// A typed scalar, as carried by the wire `DynamicValue`.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Rendered in decimal. Use it only when that rendering reproduces the source text.
    Int(i64),
    /// Rendered as the shortest round-trip decimal in ECMAScript form. Must be finite.
    Float(f64),
    /// Inline text.
    Str(String),
    /// A dictionary reference, rendered as the entry's value.
    Dict(u64),
    /// `true` / `false` (v3 only).
    Bool(bool),
    /// JSON text, exactly one JSON value, rendered verbatim (v3 only).
    RawJson(String),
}

/// The JSON context of a log that was a JSON document.
#[derive(Debug, Clone, PartialEq)]
pub enum JsonContext {
    /// v3: a schema and one typed value per schema key, in key order.
    Columns {
        /// The schema id (at least 2).
        schema: u64,
        /// One value per key. Each value's kind must match the schema's kind for that key.
        values: Vec<JsonValue>,
    },
    /// v2: a dictionary entry holding the comma-separated key list, and one value per key.
    KeyList {
        /// Dictionary id of the key list (`"a,b,c"`; empty = zero keys).
        key_list: u64,
        /// Key under which the message is re-inserted (absent = `message`).
        message_key: Option<Value>,
        /// One value per key (int, float, string or dictionary reference).
        values: Vec<Value>,
    },
    /// v2, deprecated: a serialized JSON object of context fields. Stencil never produces it; decoders keep
    /// it so that an intake can merge it.
    Legacy {
        /// The raw `json_context` bytes.
        object: Vec<u8>,
        /// Key under which the message is re-inserted (absent = `message`).
        message_key: Option<Value>,
    },
}

/// One typed JSON context value (v3). Its variant determines its column and its schema kind.
#[derive(Debug, Clone, PartialEq)]
pub enum JsonValue {
    /// `null`.
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A finite number.
    Float(f64),
    /// A string held in the dictionary.
    Dict(u64),
    /// An inline string.
    Str(String),
    /// Exactly one JSON value, verbatim.
    RawJson(String),
}

impl JsonValue {
    /// The schema kind this value needs.
    pub fn kind(&self) -> JsonKind {
        match self {
            JsonValue::Null => JsonKind::Null,
            JsonValue::Bool(_) => JsonKind::Bool,
            JsonValue::Int(_) => JsonKind::Int,
            JsonValue::Float(_) => JsonKind::Float,
            JsonValue::Dict(_) => JsonKind::DictString,
            JsonValue::Str(_) => JsonKind::String,
            JsonValue::RawJson(_) => JsonKind::RawJson,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_bytes() {
        assert_eq!(JsonKind::from_byte(0), None);
        assert_eq!(JsonKind::from_byte(8), None);
        for b in 1..=7u8 {
            assert_eq!(JsonKind::from_byte(b).map(|k| k as u8), Some(b));
        }
    }
}
