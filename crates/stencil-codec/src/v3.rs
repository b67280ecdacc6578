//! The v3 wire schema (`LogDatumSequence`, PROTOCOL.md §6 and §11): canonical datums to wire datums with
//! per-batch delta coding, and back.
//!
//! Delta registers live only here, for the length of one batch. The encoder mirrors the decoder's register
//! rules exactly, so `decode(encode(batch))` gives back the same canonical datums for any input, including
//! timestamps whose difference overflows `int64` (the encoder then resets the timestamp register with a
//! `DeltaEncodingSync`, which every conforming intake honours).

use prost::Message;
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

/// Encodes canonical datums as one v3 `LogDatumSequence`, starting from fresh registers.
pub(crate) fn encode<D: std::borrow::Borrow<Datum>>(
    datums: &[D],
) -> Result<pb::LogDatumSequence, EncodeError> {
    let mut regs = Registers::default();
    let mut out = Vec::with_capacity(datums.len() + 1);
    for datum in datums {
        let data = match datum.borrow() {
            Datum::PatternDefine(p) => {
                if p.id == 0 {
                    return Err(refuse("pattern id 0"));
                }
                regs.pattern = Some(p.id);
                Data::PatternDefine(pb::PatternDefine {
                    pattern_id: p.id,
                    template: p.template.clone(),
                    pos_list: p.pos_list.clone(),
                })
            }
            Datum::PatternDelete { id } => {
                Data::PatternDelete(pb::PatternDelete { pattern_id: *id })
            }
            Datum::DictDefine(d) => {
                if d.id < 2 {
                    return Err(refuse("dictionary id 0 or 1"));
                }
                Data::DictEntryDefine(pb::DictEntryDefine {
                    id: d.id,
                    value: d.value.clone(),
                })
            }
            Datum::DictDelete { id } => Data::DictEntryDelete(pb::DictEntryDelete { id: *id }),
            Datum::SchemaDefine(s) => {
                if s.id < 2 {
                    return Err(refuse("JSON schema id 0 or 1"));
                }
                Data::JsonSchemaDefine(pb::JsonSchemaDefine {
                    schema_id: s.id,
                    keys: s.keys.clone(),
                    message_key_id: s.message_key,
                    value_kinds: s.kinds.iter().map(|k| *k as u8).collect(),
                })
            }
            Datum::SchemaDelete { id } => {
                Data::JsonSchemaDelete(pb::JsonSchemaDelete { schema_id: *id })
            }
            Datum::Log(log) => encode_log(log, &mut regs, &mut out)?,
        };
        out.push(pb::LogDatum { data: Some(data) });
    }
    Ok(pb::LogDatumSequence { data: out })
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

fn encode_log(
    log: &Log,
    regs: &mut Registers,
    out: &mut Vec<pb::LogDatum>,
) -> Result<Data, EncodeError> {
    let status = meta_id(&log.status, "a status that is not a dictionary id >= 2")?;
    let service = meta_id(&log.service, "a service that is not a dictionary id >= 2")?;
    let tags = meta_id(&log.tags, "tags that are not a dictionary id >= 2")?;

    let timestamp = match regs.timestamp {
        None => log.timestamp,
        Some(prev) => match log.timestamp.checked_sub(prev) {
            Some(delta) => delta,
            None => {
                // The difference does not fit in int64: reset the timestamp register, keep the others.
                out.push(pb::LogDatum {
                    data: Some(Data::DeltaEncodingSync(pb::DeltaEncodingSync {
                        timestamp: 0,
                        pattern_id: regs.pattern.unwrap_or(0),
                        tags: regs.tags.unwrap_or(0),
                        status: regs.status.unwrap_or(0),
                        service: regs.service.unwrap_or(0),
                        json_schema_id: regs.schema.unwrap_or(0),
                    })),
                });
                log.timestamp
            }
        },
    };
    regs.timestamp = Some(log.timestamp);

    let mut wire = pb::Log {
        timestamp,
        status: delta_id(status, &mut regs.status),
        service: delta_id(service, &mut regs.service),
        tags: delta_id(tags, &mut regs.tags),
        uuid: log.uuid.clone(),
        ..Default::default()
    };
    match &log.content {
        Content::Raw(text) => {
            if text.is_empty() {
                return Err(refuse("an empty raw log (use a pattern)"));
            }
            wire.raw_log = text.clone();
        }
        Content::Pattern { id, values } => {
            if *id == 0 {
                return Err(refuse("pattern id 0"));
            }
            wire.pattern_id = if regs.pattern == Some(*id) { 0 } else { *id };
            regs.pattern = Some(*id);
            wire.dynamic_values = values.iter().map(encode_value).collect::<Result<_, _>>()?;
        }
    }
    let schema = match &log.json {
        None => 1,
        Some(JsonContext::Columns { schema, values }) => {
            if *schema < 2 {
                return Err(refuse("JSON schema id 0 or 1"));
            }
            encode_columns(values, &mut wire)?;
            *schema
        }
        Some(JsonContext::KeyList { .. } | JsonContext::Legacy { .. }) => {
            return Err(refuse("a v2 JSON key list or legacy JSON context"))
        }
    };
    wire.json_schema_id = delta_id(schema, &mut regs.schema);
    Ok(Data::Log(wire))
}

fn encode_value(v: &DynValue) -> Result<pb::DynamicValue, EncodeError> {
    let value = match &v.value {
        Value::Int(i) => PbValue::IntValue(*i),
        Value::Float(f) if f.is_finite() => PbValue::FloatValue(*f),
        Value::Float(_) => return Err(refuse("a non-finite float")),
        Value::Str(s) => PbValue::StringValue(s.clone()),
        Value::Dict(id) if *id >= 2 => PbValue::DictIndex(*id),
        Value::Dict(_) => return Err(refuse("dictionary index 0 or 1")),
        Value::Bool(b) => PbValue::BoolValue(*b),
        Value::RawJson(s) => PbValue::RawJsonValue(s.clone().into_bytes()),
    };
    Ok(pb::DynamicValue {
        value: Some(value),
        render_as_string: v.render_as_string,
    })
}

fn encode_columns(values: &[JsonValue], wire: &mut pb::Log) -> Result<(), EncodeError> {
    let mut bools = 0usize;
    for v in values {
        match v {
            JsonValue::Null => {}
            JsonValue::Bool(b) => {
                if bools.is_multiple_of(8) {
                    wire.json_context_bool_values.push(0);
                }
                if *b {
                    if let Some(last) = wire.json_context_bool_values.last_mut() {
                        *last |= 1 << (bools % 8);
                    }
                }
                bools += 1;
            }
            JsonValue::Int(i) => wire.json_context_int_values.push(*i),
            JsonValue::Float(f) if f.is_finite() => wire.json_context_float_values.push(*f),
            JsonValue::Float(_) => return Err(refuse("a non-finite float")),
            JsonValue::Dict(id) if *id >= 2 => wire.json_context_dict_values.push(*id),
            JsonValue::Dict(_) => return Err(refuse("dictionary index 0 or 1")),
            JsonValue::Str(s) => wire.json_context_string_values.push(s.clone()),
            JsonValue::RawJson(s) => wire.json_context_raw_values.push(s.clone().into_bytes()),
        }
    }
    Ok(())
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
pub(crate) fn for_each_element<M: Message + Default>(
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
            Data::JsonSchemaDefine(s) => Datum::SchemaDefine(SchemaDefine {
                id: s.schema_id,
                keys: s.keys,
                message_key: s.message_key_id,
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
            }),
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
