//! The v3 wire schema (`LogDatumSequence`, PROTOCOL.md §6 and §11): canonical datums to wire datums with
//! per-batch delta coding, and back.
//!
//! Delta registers live only here, for the length of one batch. The encoder mirrors the decoder's register
//! rules exactly, so `decode(encode(batch))` gives back the same canonical datums for any input, including
//! timestamps whose difference overflows `int64` (the encoder then resets the timestamp register with a
//! `DeltaEncodingSync`, which every conforming intake honours).

use prost::encoding::{encode_varint, encoded_len_varint, WireType};
use stencil_proto::v3 as pb;
use stencil_proto::v3::dynamic_value::Value as PbValue;
use stencil_proto::v3::log_datum::Data;

use crate::datum::{
    Content, Datum, DictDefine, DynValue, JsonContext, JsonKind, JsonValue, Log, PatternDefine,
    SchemaDefine, Value,
};
use crate::error::{EncodeError, ErrorKind};
use crate::state::StreamState;

const GEN: &str = "v3";

fn refuse(what: &'static str) -> EncodeError {
    EncodeError::NotRepresentable {
        generation: GEN,
        what,
    }
}

/// Per-batch delta registers, shared in meaning by the encoder and the decoder. `None` is "none".
#[derive(Debug, Default, Clone, Copy)]
struct Registers {
    timestamp: Option<i64>,
    pattern: Option<u64>,
    status: Option<u64>,
    service: Option<u64>,
    tags: Option<u64>,
    schema: Option<u64>,
}

/// Encodes canonical datums as the bytes of one v3 `LogDatumSequence`, starting from fresh registers,
/// appended to `out`. On an error, what was appended is garbage; callers drop it.
///
/// The bytes are written straight from the datums with prost's wire primitives rather than by building
/// `stencil_proto` messages and encoding them: that would clone every template, value and text into an
/// owned message and compute each nested message's length once per level above it, which made this step
/// a quarter of the engine benchmark's time. The output is prost's canonical encoding of the same
/// message, field for field (proto3 defaults omitted, scalars packed, fields by number); the
/// round-trip property test decodes it with prost and checks that re-encoding gives the same bytes.
pub(crate) fn encode<D: std::borrow::Borrow<Datum>>(
    datums: &[D],
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let mut regs = Registers::default();
    for datum in datums {
        match datum.borrow() {
            Datum::PatternDefine(p) => {
                if p.id == 0 {
                    return Err(refuse("pattern id 0"));
                }
                regs.pattern = Some(p.id);
                message(out, DATUM, datum::PATTERN_DEFINE, |out| {
                    uint(out, 1, p.id);
                    string(out, 2, &p.template);
                    packed(out, 4, p.pos_list.iter().map(|&x| u64::from(x)));
                    Ok(())
                })?;
            }
            Datum::PatternDelete { id } => delete(out, datum::PATTERN_DELETE, *id)?,
            Datum::DictDefine(d) => {
                if d.id < 2 {
                    return Err(refuse("dictionary id 0 or 1"));
                }
                message(out, DATUM, datum::DICT_DEFINE, |out| {
                    uint(out, 1, d.id);
                    string(out, 2, &d.value);
                    Ok(())
                })?;
            }
            Datum::DictDelete { id } => delete(out, datum::DICT_DELETE, *id)?,
            Datum::SchemaDefine(sd) => {
                if sd.id < 2 {
                    return Err(refuse("JSON schema id 0 or 1"));
                }
                message(out, DATUM, datum::SCHEMA_DEFINE, |out| {
                    uint(out, 1, sd.id);
                    packed(out, 2, sd.keys.iter().copied());
                    uint(out, 3, sd.message_key);
                    if !sd.kinds.is_empty() {
                        len_prefix(out, 4, sd.kinds.len());
                        out.extend(sd.kinds.iter().map(|k| *k as u8));
                    }
                    if let Some(at) = sd.message_at {
                        // Explicit presence: 0 (the message first) is sent too.
                        key(SCHEMA_MESSAGE_INDEX, WireType::Varint, out);
                        varint(u64::from(at), out);
                    }
                    Ok(())
                })?;
            }
            Datum::SchemaDelete { id } => delete(out, datum::SCHEMA_DELETE, *id)?,
            Datum::Log(log) => encode_log(log, &mut regs, out)?,
        }
    }
    Ok(())
}

/// Field numbers of `LogDatum`'s `data` oneof.
mod datum {
    pub const DICT_DEFINE: u32 = 1;
    pub const PATTERN_DEFINE: u32 = 2;
    pub const SCHEMA_DEFINE: u32 = 3;
    pub const LOG: u32 = 4;
    pub const SYNC: u32 = 5;
    pub const DICT_DELETE: u32 = 6;
    pub const PATTERN_DELETE: u32 = 7;
    pub const SCHEMA_DELETE: u32 = 8;
}

/// `LogDatumSequence.data`: every datum is an element of field 1.
const DATUM: u32 = 1;
/// `JsonSchemaDefine.stencil_message_index`, the `json-order` extension's field.
const SCHEMA_MESSAGE_INDEX: u32 = 100;

/// Writes `outer` (a `LogDatum` element) holding the message `field` whose fields `body` writes. Lengths
/// are not known before the body is written: one byte is held for each, and the body is moved up when
/// its length needs more (a body of 128 bytes or more: one copy of it per level, no second pass).
fn message(
    out: &mut Vec<u8>,
    outer: u32,
    field: u32,
    body: impl FnOnce(&mut Vec<u8>) -> Result<(), EncodeError>,
) -> Result<(), EncodeError> {
    nested(out, outer, |out| nested(out, field, body))
}

/// A delete datum (pattern, dictionary entry or schema): a message whose only field is the id.
fn delete(out: &mut Vec<u8>, field: u32, id: u64) -> Result<(), EncodeError> {
    message(out, DATUM, field, |out| {
        uint(out, 1, id);
        Ok(())
    })
}

/// Writes field `tag` as a length-delimited message whose fields `body` writes (see [`message`]).
fn nested(
    out: &mut Vec<u8>,
    tag: u32,
    body: impl FnOnce(&mut Vec<u8>) -> Result<(), EncodeError>,
) -> Result<(), EncodeError> {
    key(tag, WireType::LengthDelimited, out);
    let at = out.len();
    out.push(0);
    body(out)?;
    let len = out.len() - at - 1;
    if len < 0x80 {
        // The commonest case: the byte held is the length.
        out[at] = len as u8;
        return Ok(());
    }
    // Make room for the longer length: the body moves up by `width - 1` bytes.
    let width = encoded_len_varint(len as u64);
    out.splice(at + 1..at + 1, std::iter::repeat_n(0, width - 1));
    let mut prefix = &mut out[at..at + width];
    encode_varint(len as u64, &mut prefix);
    Ok(())
}

/// A varint: `prost`'s writer, with the one-byte case (most keys, ids, lengths and deltas) inline.
#[inline(always)]
fn varint(value: u64, out: &mut Vec<u8>) {
    if value < 0x80 {
        out.push(value as u8);
    } else {
        encode_varint(value, out);
    }
}

/// A field's key (its tag and wire type).
#[inline(always)]
fn key(tag: u32, wire_type: WireType, out: &mut Vec<u8>) {
    varint(u64::from(tag << 3 | wire_type as u32), out);
}

/// A `uint64` (or `uint32`, `bool`) field, omitted when 0 as proto3 requires.
fn uint(out: &mut Vec<u8>, tag: u32, value: u64) {
    if value != 0 {
        key(tag, WireType::Varint, out);
        varint(value, out);
    }
}

/// A key and a length: the head of a length-delimited field.
fn len_prefix(out: &mut Vec<u8>, tag: u32, len: usize) {
    key(tag, WireType::LengthDelimited, out);
    varint(len as u64, out);
}

/// A `string` field, omitted when empty.
fn string(out: &mut Vec<u8>, tag: u32, value: &str) {
    if !value.is_empty() {
        len_prefix(out, tag, value.len());
        out.extend_from_slice(value.as_bytes());
    }
}

/// A packed repeated varint field, omitted when empty.
fn packed(out: &mut Vec<u8>, tag: u32, values: impl Iterator<Item = u64> + Clone) {
    let len: usize = values.clone().map(encoded_len_varint).sum();
    if len > 0 {
        len_prefix(out, tag, len);
        for v in values {
            varint(v, out);
        }
    }
}

/// ZigZag of a `sint64`.
fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// Wire value of a metadata field (status, service, tags) before delta coding: a dictionary id, or 1.
fn meta_id(value: &Option<Value>, what: &'static str) -> Result<u64, EncodeError> {
    match value {
        None => Ok(1),
        Some(Value::Dict(id)) if *id >= 2 => Ok(*id),
        Some(_) => Err(refuse(what)),
    }
}

/// Delta-codes one sentinel field: 0 when equal to the register, else the value (which becomes the register).
fn delta_id(value: u64, reg: &mut Option<u64>) -> u64 {
    if *reg == Some(value) {
        0
    } else {
        *reg = Some(value);
        value
    }
}

fn encode_log(log: &Log, regs: &mut Registers, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let status = meta_id(&log.status, "a status that is not a dictionary id >= 2")?;
    let service = meta_id(&log.service, "a service that is not a dictionary id >= 2")?;
    let tags = meta_id(&log.tags, "tags that are not a dictionary id >= 2")?;
    let schema = match &log.json {
        None => 1,
        Some(JsonContext::Columns { schema, values }) => {
            if *schema < 2 {
                return Err(refuse("JSON schema id 0 or 1"));
            }
            check_columns(values)?;
            *schema
        }
        Some(JsonContext::KeyList { .. } | JsonContext::Legacy { .. }) => {
            return Err(refuse("a v2 JSON key list or legacy JSON context"))
        }
    };
    match &log.content {
        Content::Raw(text) if text.is_empty() => {
            return Err(refuse("an empty raw log (use a pattern)"))
        }
        Content::Pattern { id: 0, .. } => return Err(refuse("pattern id 0")),
        Content::Pattern { values, .. } => {
            if let Some(why) = values.iter().find_map(|v| refusal(&v.value)) {
                return Err(refuse(why));
            }
        }
        Content::Raw(_) => {}
    }

    let timestamp = match regs.timestamp {
        None => log.timestamp,
        Some(prev) => match log.timestamp.checked_sub(prev) {
            Some(delta) => delta,
            None => {
                // The difference does not fit in int64: reset the timestamp register, keep the others.
                message(out, DATUM, datum::SYNC, |out| {
                    uint(out, 2, regs.pattern.unwrap_or(0));
                    uint(out, 3, regs.tags.unwrap_or(0));
                    uint(out, 4, regs.status.unwrap_or(0));
                    uint(out, 5, regs.service.unwrap_or(0));
                    uint(out, 6, regs.schema.unwrap_or(0));
                    Ok(())
                })?;
                log.timestamp
            }
        },
    };
    regs.timestamp = Some(log.timestamp);
    message(out, DATUM, datum::LOG, |out| {
        uint(out, 1, zigzag(timestamp));
        uint(out, 2, delta_id(status, &mut regs.status));
        uint(out, 3, delta_id(service, &mut regs.service));
        uint(out, 4, delta_id(tags, &mut regs.tags));
        match &log.content {
            Content::Raw(text) => string(out, 7, text),
            Content::Pattern { id, values } => {
                uint(out, 5, if regs.pattern == Some(*id) { 0 } else { *id });
                regs.pattern = Some(*id);
                for v in values {
                    nested(out, 6, |out| {
                        encode_value(v, out);
                        Ok(())
                    })?;
                }
            }
        }
        uint(out, 8, delta_id(schema, &mut regs.schema));
        if let Some(JsonContext::Columns { values, .. }) = &log.json {
            encode_columns(values, out);
        }
        if let Some(uuid) = &log.uuid {
            len_prefix(out, 100, uuid.len());
            out.extend_from_slice(uuid.as_bytes());
        }
        Ok(())
    })
}

/// Why v3 cannot carry a dynamic value, if it cannot.
fn refusal(v: &Value) -> Option<&'static str> {
    match v {
        Value::Float(f) if !f.is_finite() => Some("a non-finite float"),
        Value::Dict(id) if *id < 2 => Some("dictionary index 0 or 1"),
        _ => None,
    }
}

/// A `DynamicValue`'s fields: the `value` oneof (always written when set, even when 0), then
/// `render_as_string`.
fn encode_value(v: &DynValue, out: &mut Vec<u8>) {
    match &v.value {
        Value::Int(i) => {
            key(1, WireType::Varint, out);
            varint(*i as u64, out);
        }
        Value::Float(f) => {
            key(2, WireType::SixtyFourBit, out);
            out.extend_from_slice(&f.to_le_bytes());
        }
        Value::Str(s) => {
            len_prefix(out, 3, s.len());
            out.extend_from_slice(s.as_bytes());
        }
        Value::Dict(id) => {
            key(4, WireType::Varint, out);
            varint(*id, out);
        }
        Value::Bool(b) => {
            key(6, WireType::Varint, out);
            varint(u64::from(*b), out);
        }
        Value::RawJson(s) => {
            len_prefix(out, 7, s.len());
            out.extend_from_slice(s.as_bytes());
        }
    }
    uint(out, 5, u64::from(v.render_as_string));
}

/// Refuses JSON columns v3 cannot carry (before anything of the log is written).
fn check_columns(values: &[JsonValue]) -> Result<(), EncodeError> {
    for v in values {
        match v {
            JsonValue::Float(f) if !f.is_finite() => return Err(refuse("a non-finite float")),
            JsonValue::Dict(id) if *id < 2 => return Err(refuse("dictionary index 0 or 1")),
            _ => {}
        }
    }
    Ok(())
}

/// The JSON columns of a log (fields 9 to 14): each kind's values in log order, bools bit-packed.
fn encode_columns(values: &[JsonValue], out: &mut Vec<u8>) {
    packed(
        out,
        9,
        values.iter().filter_map(|v| match v {
            JsonValue::Int(i) => Some(zigzag(*i)),
            _ => None,
        }),
    );
    let floats = values
        .iter()
        .filter(|v| matches!(v, JsonValue::Float(_)))
        .count();
    if floats > 0 {
        len_prefix(out, 10, floats * 8);
        for v in values {
            if let JsonValue::Float(f) = v {
                out.extend_from_slice(&f.to_le_bytes());
            }
        }
    }
    packed(
        out,
        11,
        values.iter().filter_map(|v| match v {
            JsonValue::Dict(id) => Some(*id),
            _ => None,
        }),
    );
    for v in values {
        if let JsonValue::RawJson(s) = v {
            len_prefix(out, 12, s.len());
            out.extend_from_slice(s.as_bytes());
        }
    }
    for v in values {
        if let JsonValue::Str(s) = v {
            len_prefix(out, 13, s.len());
            out.extend_from_slice(s.as_bytes());
        }
    }
    let bools = values
        .iter()
        .filter(|v| matches!(v, JsonValue::Bool(_)))
        .count();
    if bools > 0 {
        len_prefix(out, 14, bools.div_ceil(8));
        let mut byte = 0u8;
        let mut n = 0usize;
        for v in values {
            if let JsonValue::Bool(b) = v {
                byte |= u8::from(*b) << (n % 8);
                n += 1;
                if n.is_multiple_of(8) {
                    out.push(byte);
                    byte = 0;
                }
            }
        }
        if !n.is_multiple_of(8) {
            out.push(byte);
        }
    }
}

/// Maps a prost error to a reason: invalid UTF-8 in a `string` field has its own kind. prost's
/// `DecodeError` exposes no kind, only its description, hence the text match.
pub(crate) fn protobuf_error(e: prost::DecodeError) -> ErrorKind {
    let text = e.to_string();
    if text.contains("UTF-8") {
        ErrorKind::InvalidUtf8(text)
    } else {
        ErrorKind::MalformedProtobuf(text)
    }
}

/// Walks a datum sequence (`repeated Datum data = 1`, in both generations) one element at a time.
///
/// Decoding the whole sequence message first would materialize every datum before the first is checked:
/// a 4-byte empty log becomes a few hundred bytes of struct, so 64 MiB of decompressed data could hold
/// 16 M of them (gigabytes). One at a time, each datum is checked, applied and counted against the
/// output limit before the next is read. Unknown fields are skipped, as protobuf requires.
pub(crate) fn for_each_element<M: prost::Message + Default>(
    mut bytes: &[u8],
    mut each: impl FnMut(M) -> Result<(), ErrorKind>,
) -> Result<(), ErrorKind> {
    use prost::encoding::{decode_key, decode_varint, skip_field, DecodeContext, WireType};
    let malformed = |what: &str| ErrorKind::MalformedProtobuf(format!("datum sequence: {what}"));
    while !bytes.is_empty() {
        let (tag, wire_type) = decode_key(&mut bytes).map_err(protobuf_error)?;
        if tag != 1 {
            skip_field(wire_type, tag, &mut bytes, DecodeContext::default())
                .map_err(protobuf_error)?;
            continue;
        }
        if wire_type != WireType::LengthDelimited {
            return Err(malformed("field 1 is not length-delimited"));
        }
        let len = decode_varint(&mut bytes).map_err(protobuf_error)?;
        let len = usize::try_from(len)
            .ok()
            .filter(|&n| n <= bytes.len())
            .ok_or_else(|| malformed("a datum runs past the end"))?;
        let (element, rest) = bytes.split_at(len);
        bytes = rest;
        each(M::decode(element).map_err(protobuf_error)?)?;
    }
    Ok(())
}

/// Validates a `bytes` field that must hold exactly one JSON value in UTF-8.
pub(crate) fn raw_json(bytes: Vec<u8>) -> Result<String, ErrorKind> {
    let text = String::from_utf8(bytes)
        .map_err(|e| ErrorKind::InvalidUtf8(format!("raw JSON value: {e}")))?;
    serde_json::from_str::<serde::de::IgnoredAny>(&text)
        .map_err(|e| ErrorKind::InvalidRawJson(e.to_string()))?;
    Ok(text)
}

/// Decodes one v3 sequence, handing each canonical datum, in order, to `apply` together with the state.
/// Registers are fresh for the batch; the state persists across batches.
pub(crate) fn decode(
    bytes: &[u8],
    state: &mut StreamState,
    apply: &mut dyn FnMut(&mut StreamState, Datum) -> Result<(), ErrorKind>,
) -> Result<(), ErrorKind> {
    let mut regs = Registers::default();
    for_each_element(bytes, |datum: pb::LogDatum| {
        let canonical = match datum.data.ok_or(ErrorKind::EmptyDatum)? {
            Data::DictEntryDefine(d) => Datum::DictDefine(DictDefine {
                id: d.id,
                value: d.value,
            }),
            Data::PatternDefine(p) => {
                regs.pattern = Some(p.pattern_id);
                Datum::PatternDefine(PatternDefine {
                    id: p.pattern_id,
                    template: p.template,
                    pos_list: p.pos_list,
                })
            }
            Data::JsonSchemaDefine(s) => {
                let message_at = s
                    .stencil_message_index
                    .map(|at| {
                        u32::try_from(at)
                            .ok()
                            .filter(|&at| at as usize <= s.keys.len())
                            .ok_or(ErrorKind::MessageIndexOutOfRange {
                                schema_id: s.schema_id,
                                index: at,
                                keys: s.keys.len(),
                            })
                    })
                    .transpose()?;
                Datum::SchemaDefine(SchemaDefine {
                    id: s.schema_id,
                    keys: s.keys,
                    message_key: s.message_key_id,
                    message_at,
                    kinds: s
                        .value_kinds
                        .iter()
                        .map(|&b| {
                            JsonKind::from_byte(b).ok_or(ErrorKind::InvalidJsonKind {
                                schema_id: s.schema_id,
                                kind: b,
                            })
                        })
                        .collect::<Result<_, _>>()?,
                })
            }
            Data::Log(log) => Datum::Log(decode_log(log, &mut regs, state)?),
            Data::DeltaEncodingSync(s) => {
                regs.timestamp = match s.timestamp {
                    0 => None,
                    t => Some(i64::try_from(t).map_err(|_| ErrorKind::TimestampOverflow)?),
                };
                let reg = |v: u64| (v != 0).then_some(v);
                regs.pattern = reg(s.pattern_id);
                regs.tags = reg(s.tags);
                regs.status = reg(s.status);
                regs.service = reg(s.service);
                regs.schema = reg(s.json_schema_id);
                return Ok(());
            }
            Data::DictEntryDelete(d) => Datum::DictDelete { id: d.id },
            Data::PatternDelete(p) => Datum::PatternDelete { id: p.pattern_id },
            Data::JsonSchemaDelete(s) => Datum::SchemaDelete { id: s.schema_id },
        };
        apply(state, canonical)
    })
}

/// Resolves one sentinel field: 0 = the register (none is an error), anything else sets the register.
fn resolve_id(value: u64, reg: &mut Option<u64>, field: &'static str) -> Result<u64, ErrorKind> {
    if value == 0 {
        return reg.ok_or(ErrorKind::SentinelWithoutPrevious { field });
    }
    *reg = Some(value);
    Ok(value)
}

fn meta_value(id: u64) -> Option<Value> {
    (id != 1).then_some(Value::Dict(id))
}

fn decode_log(log: pb::Log, regs: &mut Registers, state: &StreamState) -> Result<Log, ErrorKind> {
    let timestamp = match regs.timestamp {
        None => log.timestamp,
        Some(prev) => prev
            .checked_add(log.timestamp)
            .ok_or(ErrorKind::TimestampOverflow)?,
    };
    regs.timestamp = Some(timestamp);
    let status = meta_value(resolve_id(log.status, &mut regs.status, "status")?);
    let service = meta_value(resolve_id(log.service, &mut regs.service, "service")?);
    let tags = meta_value(resolve_id(log.tags, &mut regs.tags, "tags")?);

    let content = if !log.raw_log.is_empty() {
        if !log.dynamic_values.is_empty() {
            return Err(ErrorKind::ValuesOnRawLog(log.dynamic_values.len()));
        }
        Content::Raw(log.raw_log)
    } else {
        let id = match log.pattern_id {
            0 => regs.pattern.ok_or(ErrorKind::SentinelWithoutPrevious {
                field: "pattern_id",
            })?,
            id => {
                regs.pattern = Some(id);
                id
            }
        };
        let values = log
            .dynamic_values
            .into_iter()
            .map(decode_value)
            .collect::<Result<Vec<_>, _>>()?;
        Content::Pattern { id, values }
    };

    let schema = resolve_id(log.json_schema_id, &mut regs.schema, "json_schema_id")?;
    let json = if schema == 1 {
        let empty = log.json_context_int_values.is_empty()
            && log.json_context_float_values.is_empty()
            && log.json_context_dict_values.is_empty()
            && log.json_context_raw_values.is_empty()
            && log.json_context_string_values.is_empty()
            && log.json_context_bool_values.is_empty();
        if !empty {
            return Err(ErrorKind::ColumnsWithoutSchema);
        }
        None
    } else {
        let kinds = &state.schema(schema)?.kinds;
        Some(JsonContext::Columns {
            schema,
            values: decode_columns(
                schema,
                kinds,
                log.json_context_int_values,
                log.json_context_float_values,
                log.json_context_dict_values,
                log.json_context_raw_values,
                log.json_context_string_values,
                &log.json_context_bool_values,
            )?,
        })
    };
    Ok(Log {
        timestamp,
        status,
        service,
        tags,
        content,
        json,
        uuid: log.uuid,
    })
}

fn decode_value(v: pb::DynamicValue) -> Result<DynValue, ErrorKind> {
    let value = match v.value.ok_or(ErrorKind::EmptyDynamicValue)? {
        PbValue::IntValue(i) => Value::Int(i),
        PbValue::FloatValue(f) if f.is_finite() => Value::Float(f),
        PbValue::FloatValue(_) => return Err(ErrorKind::NonFiniteFloat),
        PbValue::StringValue(s) => Value::Str(s),
        PbValue::DictIndex(id) => Value::Dict(id),
        PbValue::BoolValue(b) => Value::Bool(b),
        PbValue::RawJsonValue(bytes) => Value::RawJson(raw_json(bytes)?),
    };
    Ok(DynValue {
        value,
        render_as_string: v.render_as_string,
    })
}

#[allow(clippy::too_many_arguments)]
fn decode_columns(
    schema_id: u64,
    kinds: &[JsonKind],
    ints: Vec<i64>,
    floats: Vec<f64>,
    dicts: Vec<u64>,
    raws: Vec<Vec<u8>>,
    strings: Vec<String>,
    bools: &[u8],
) -> Result<Vec<JsonValue>, ErrorKind> {
    let mismatch = |column: &str| ErrorKind::JsonColumnsMismatch {
        schema_id,
        detail: format!("the {column} column does not match the schema's kinds"),
    };
    let (mut ints, mut floats, mut dicts) =
        (ints.into_iter(), floats.into_iter(), dicts.into_iter());
    let (mut raws, mut strings) = (raws.into_iter(), strings.into_iter());
    let mut bool_index = 0usize;
    let mut values = Vec::with_capacity(kinds.len());
    for kind in kinds {
        values.push(match kind {
            JsonKind::Null => JsonValue::Null,
            JsonKind::Bool => {
                let byte = bools.get(bool_index / 8).ok_or_else(|| mismatch("bool"))?;
                let bit = byte >> (bool_index % 8) & 1 == 1;
                bool_index += 1;
                JsonValue::Bool(bit)
            }
            JsonKind::Int => JsonValue::Int(ints.next().ok_or_else(|| mismatch("int"))?),
            JsonKind::Float => {
                let f = floats.next().ok_or_else(|| mismatch("float"))?;
                if !f.is_finite() {
                    return Err(ErrorKind::NonFiniteFloat);
                }
                JsonValue::Float(f)
            }
            JsonKind::DictString => JsonValue::Dict(dicts.next().ok_or_else(|| mismatch("dict"))?),
            JsonKind::String => JsonValue::Str(strings.next().ok_or_else(|| mismatch("string"))?),
            JsonKind::RawJson => {
                JsonValue::RawJson(raw_json(raws.next().ok_or_else(|| mismatch("raw"))?)?)
            }
        });
    }
    if ints.next().is_some() {
        return Err(mismatch("int"));
    }
    if floats.next().is_some() {
        return Err(mismatch("float"));
    }
    if dicts.next().is_some() {
        return Err(mismatch("dict"));
    }
    if raws.next().is_some() {
        return Err(mismatch("raw"));
    }
    if strings.next().is_some() {
        return Err(mismatch("string"));
    }
    if bools.len() != bool_index.div_ceil(8) {
        return Err(mismatch("bool"));
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// A length that needs one, two and three varint bytes at every nesting level: prost reads the
    /// writer's bytes back to the same datums and writes exactly the same bytes.
    #[test]
    fn lengths_of_every_width_are_prosts_encoding() {
        for len in [1usize, 127, 128, 300, 16_383, 16_384, 20_000] {
            let text = "x".repeat(len);
            let datums = vec![
                Datum::DictDefine(DictDefine {
                    id: 2,
                    value: text.clone(),
                }),
                Datum::PatternDefine(PatternDefine {
                    id: 5,
                    template: text.clone(),
                    pos_list: vec![0, 1],
                }),
                Datum::Log(Log {
                    timestamp: -3,
                    status: Some(Value::Dict(2)),
                    service: None,
                    tags: None,
                    content: Content::Pattern {
                        id: 5,
                        values: vec![
                            DynValue {
                                value: Value::Str(text.clone()),
                                render_as_string: false,
                            },
                            DynValue {
                                value: Value::Int(-1),
                                render_as_string: true,
                            },
                        ],
                    },
                    json: None,
                    uuid: Some(String::new()),
                }),
                Datum::Log(Log {
                    timestamp: i64::MAX,
                    status: None,
                    service: None,
                    tags: None,
                    content: Content::Raw(text.clone()),
                    json: None,
                    uuid: None,
                }),
            ];
            let mut bytes = Vec::new();
            encode(&datums, &mut bytes).expect("representable");
            let parsed = pb::LogDatumSequence::decode(bytes.as_slice()).expect("prost reads it");
            assert_eq!(parsed.encode_to_vec(), bytes, "length {len}");
            // The timestamp difference overflows int64: a sync datum sits between the two logs.
            assert_eq!(parsed.data.len(), 5, "length {len}");
            let mut state =
                StreamState::new(crate::Generation::V3, crate::state::Limits::default());
            let mut back = Vec::new();
            decode(&bytes, &mut state, &mut |_, d| {
                back.push(d);
                Ok(())
            })
            .expect("decodes");
            assert_eq!(back, datums, "length {len}");
        }
    }
}
