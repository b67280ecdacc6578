//! The v2 wire schema (`DatumSequence`, the public agent-payload schema; PROTOCOL.md §7 and §11.2): canonical
//! datums to wire datums with per-batch delta coding, and back.
//!
//! Differences from v3 that shape this module: tags are a `TagSet` that is "same as previous" when absent;
//! status is a plain `DynamicValue` (not delta-coded); the service is a plain `DynamicValue` too (field 7,
//! from newer agents; older ones send a `service:` tag), and there is no JSON schema (a dictionary entry
//! holds the key list). Newer agents' `DynamicValue` also carries bools, raw JSON and `render_as_string`,
//! as in v3. An intake reads a non-first
//! timestamp of magnitude ≥ 10¹² as absolute (early v2 agents did not delta-code), so this encoder never
//! emits such a delta: it sends the absolute value, after a `DeltaEncodingSync` reset when needed.

use stencil_proto::v2 as pb;
use stencil_proto::v2::datum::Data;
use stencil_proto::v2::dynamic_value::Value as PbValue;
use stencil_proto::v2::log::Content as PbContent;

use crate::datum::{Content, Datum, DictDefine, DynValue, JsonContext, Log, PatternDefine, Value};
use crate::error::{EncodeError, ErrorKind};
use crate::state::StreamState;
use crate::v3::for_each_element;

const GEN: &str = "v2";

/// Deltas at or above this magnitude are read as absolute timestamps by v2 intakes.
pub const ABSOLUTE_TIMESTAMP_THRESHOLD: u64 = 1_000_000_000_000;

fn refuse(what: &'static str) -> EncodeError {
    EncodeError::NotRepresentable {
        generation: GEN,
        what,
    }
}

/// Per-batch registers. `tags` holds the normalized previous tags (`None` = none or empty).
#[derive(Debug, Default, Clone)]
struct Registers {
    timestamp: Option<i64>,
    pattern: Option<u64>,
    tags: Option<Value>,
}

/// An empty tag string and no tags are the same thing in v2.
fn normalize_tags(tags: Option<Value>) -> Option<Value> {
    tags.filter(|t| !matches!(t, Value::Str(s) if s.is_empty()))
}

/// Encodes canonical datums as one v2 `DatumSequence`, starting from fresh registers.
pub(crate) fn encode(datums: &[Datum]) -> Result<pb::DatumSequence, EncodeError> {
    let mut regs = Registers::default();
    let mut out = Vec::with_capacity(datums.len() + 1);
    for datum in datums {
        let data = match datum {
            Datum::PatternDefine(p) => {
                if p.id == 0 {
                    return Err(refuse("pattern id 0"));
                }
                regs.pattern = Some(p.id);
                Data::PatternDefine(pb::PatternDefine {
                    pattern_id: p.id,
                    template: p.template.clone(),
                    param_count: u32::try_from(p.pos_list.len())
                        .map_err(|_| refuse("over 2^32 wildcards"))?,
                    pos_list: p.pos_list.clone(),
                })
            }
            Datum::PatternDelete { id } => {
                Data::PatternDelete(pb::PatternDelete { pattern_id: *id })
            }
            Datum::DictDefine(d) => Data::DictEntryDefine(pb::DictEntryDefine {
                id: d.id,
                value: d.value.clone(),
            }),
            Datum::DictDelete { id } => Data::DictEntryDelete(pb::DictEntryDelete { id: *id }),
            Datum::SchemaDefine(_) | Datum::SchemaDelete { .. } => {
                return Err(refuse("JSON schemas"))
            }
            Datum::Log(log) => encode_log(log, &mut regs, &mut out)?,
        };
        out.push(pb::Datum { data: Some(data) });
    }
    Ok(pb::DatumSequence { data: out })
}

fn tag_set(v: &Value) -> Result<pb::TagSet, EncodeError> {
    Ok(pb::TagSet {
        tagset: Some(encode_value(v)?),
    })
}

fn encode_log(
    log: &Log,
    regs: &mut Registers,
    out: &mut Vec<pb::Datum>,
) -> Result<Data, EncodeError> {
    let timestamp = match regs.timestamp {
        None => log.timestamp,
        Some(prev) => match log.timestamp.checked_sub(prev) {
            Some(delta) if delta.unsigned_abs() < ABSOLUTE_TIMESTAMP_THRESHOLD => delta,
            _ if log.timestamp.unsigned_abs() >= ABSOLUTE_TIMESTAMP_THRESHOLD => log.timestamp,
            _ => {
                // Neither a delta nor the absolute value would be read right: reset the register first.
                out.push(pb::Datum {
                    data: Some(Data::DeltaEncodingSync(pb::DeltaEncodingSync {
                        timestamp: 0,
                        pattern_id: regs.pattern.unwrap_or(0),
                        tags: regs.tags.as_ref().map(tag_set).transpose()?,
                    })),
                });
                log.timestamp
            }
        },
    };
    regs.timestamp = Some(log.timestamp);

    let tags = normalize_tags(log.tags.clone());
    let wire_tags = if tags == regs.tags {
        None
    } else {
        let set = match &tags {
            Some(v) => tag_set(v)?,
            None => tag_set(&Value::Str(String::new()))?,
        };
        regs.tags = tags;
        Some(set)
    };

    let content = match &log.content {
        Content::Raw(text) => {
            if log.json.is_some() {
                return Err(refuse("JSON context on a raw log"));
            }
            PbContent::Raw(text.clone())
        }
        Content::Pattern { id, values } => {
            if *id == 0 {
                return Err(refuse("pattern id 0"));
            }
            let pattern_id = if regs.pattern == Some(*id) { 0 } else { *id };
            regs.pattern = Some(*id);
            let mut s = pb::StructuredLog {
                pattern_id,
                dynamic_values: values.iter().map(encode_dyn).collect::<Result<_, _>>()?,
                ..Default::default()
            };
            match &log.json {
                None => {}
                Some(JsonContext::KeyList {
                    key_list,
                    message_key,
                    values,
                }) => {
                    if *key_list == 0 {
                        return Err(refuse(
                            "key list dictionary id 0 (it means no JSON context)",
                        ));
                    }
                    s.json_context_schema_id = *key_list;
                    s.json_message_key = message_key.as_ref().map(encode_value).transpose()?;
                    s.json_context_values =
                        values.iter().map(encode_value).collect::<Result<_, _>>()?;
                }
                Some(JsonContext::Legacy {
                    object,
                    message_key,
                }) => {
                    s.json_context = object.clone();
                    s.json_message_key = message_key.as_ref().map(encode_value).transpose()?;
                }
                Some(JsonContext::Columns { .. }) => return Err(refuse("v3 JSON schema columns")),
            }
            PbContent::Structured(s)
        }
    };
    Ok(Data::Logs(pb::Log {
        timestamp,
        content: Some(content),
        tags: wire_tags,
        uuid: log.uuid.clone(),
        status: log.status.as_ref().map(encode_value).transpose()?,
        service: log.service.as_ref().map(encode_value).transpose()?,
    }))
}

fn encode_dyn(v: &DynValue) -> Result<pb::DynamicValue, EncodeError> {
    Ok(pb::DynamicValue {
        render_as_string: v.render_as_string,
        ..encode_value(&v.value)?
    })
}

fn encode_value(v: &Value) -> Result<pb::DynamicValue, EncodeError> {
    let value = match v {
        Value::Int(i) => PbValue::IntValue(*i),
        Value::Float(f) if f.is_finite() => PbValue::FloatValue(*f),
        Value::Float(_) => return Err(refuse("a non-finite float")),
        Value::Str(s) => PbValue::StringValue(s.clone()),
        Value::Dict(id) => PbValue::DictIndex(*id),
        Value::Bool(b) => PbValue::BoolValue(*b),
        Value::RawJson(j) => PbValue::RawJsonValue(j.clone().into_bytes()),
    };
    Ok(pb::DynamicValue {
        value: Some(value),
        render_as_string: false,
    })
}

fn decode_value(v: pb::DynamicValue) -> Result<Value, ErrorKind> {
    Ok(decode_dyn(v)?.value)
}

fn decode_dyn(v: pb::DynamicValue) -> Result<DynValue, ErrorKind> {
    let value = match v.value.ok_or(ErrorKind::EmptyDynamicValue)? {
        PbValue::IntValue(i) => Value::Int(i),
        PbValue::FloatValue(f) if f.is_finite() => Value::Float(f),
        PbValue::FloatValue(_) => return Err(ErrorKind::NonFiniteFloat),
        PbValue::StringValue(s) => Value::Str(s),
        PbValue::DictIndex(id) => Value::Dict(id),
        PbValue::BoolValue(b) => Value::Bool(b),
        PbValue::RawJsonValue(bytes) => Value::RawJson(crate::v3::raw_json(bytes)?),
    };
    Ok(DynValue {
        value,
        render_as_string: v.render_as_string,
    })
}

fn decode_tag_set(set: pb::TagSet) -> Result<Option<Value>, ErrorKind> {
    Ok(normalize_tags(set.tagset.map(decode_value).transpose()?))
}

/// Decodes one v2 sequence, handing each canonical datum, in order, to `apply` together with the state.
pub(crate) fn decode(
    bytes: &[u8],
    state: &mut StreamState,
    apply: &mut dyn FnMut(&mut StreamState, Datum) -> Result<(), ErrorKind>,
) -> Result<(), ErrorKind> {
    let mut regs = Registers::default();
    for_each_element(bytes, |datum: pb::Datum| {
        let canonical = match datum.data.ok_or(ErrorKind::EmptyDatum)? {
            Data::PatternDefine(p) => {
                if p.param_count as usize != p.pos_list.len() {
                    return Err(ErrorKind::ParamCountMismatch {
                        pattern_id: p.pattern_id,
                        param_count: p.param_count,
                        pos_len: p.pos_list.len(),
                    });
                }
                regs.pattern = Some(p.pattern_id);
                Datum::PatternDefine(PatternDefine {
                    id: p.pattern_id,
                    template: p.template,
                    pos_list: p.pos_list,
                })
            }
            Data::PatternDelete(p) => Datum::PatternDelete { id: p.pattern_id },
            Data::DictEntryDefine(d) => Datum::DictDefine(DictDefine {
                id: d.id,
                value: d.value,
            }),
            Data::DictEntryDelete(d) => Datum::DictDelete { id: d.id },
            Data::DeltaEncodingSync(s) => {
                regs.timestamp = match s.timestamp {
                    0 => None,
                    t => Some(i64::try_from(t).map_err(|_| ErrorKind::TimestampOverflow)?),
                };
                regs.pattern = (s.pattern_id != 0).then_some(s.pattern_id);
                regs.tags = s.tags.map(decode_tag_set).transpose()?.flatten();
                return Ok(());
            }
            Data::Logs(log) => Datum::Log(decode_log(log, &mut regs)?),
        };
        apply(state, canonical)
    })
}

fn decode_log(log: pb::Log, regs: &mut Registers) -> Result<Log, ErrorKind> {
    let timestamp = match regs.timestamp {
        None => log.timestamp,
        Some(_) if log.timestamp.unsigned_abs() >= ABSOLUTE_TIMESTAMP_THRESHOLD => log.timestamp,
        Some(prev) => prev
            .checked_add(log.timestamp)
            .ok_or(ErrorKind::TimestampOverflow)?,
    };
    regs.timestamp = Some(timestamp);
    if let Some(set) = log.tags {
        regs.tags = decode_tag_set(set)?;
    }
    let (content, json) = match log.content.ok_or(ErrorKind::LogWithoutContent)? {
        PbContent::Raw(text) => (Content::Raw(text), None),
        PbContent::Structured(s) => {
            let id = match s.pattern_id {
                0 => regs.pattern.ok_or(ErrorKind::SentinelWithoutPrevious {
                    field: "pattern_id",
                })?,
                id => {
                    regs.pattern = Some(id);
                    id
                }
            };
            let values = s
                .dynamic_values
                .into_iter()
                .map(decode_dyn)
                .collect::<Result<Vec<_>, _>>()?;
            let message_key = s.json_message_key.map(decode_value).transpose()?;
            let json = if s.json_context_schema_id != 0 {
                Some(JsonContext::KeyList {
                    key_list: s.json_context_schema_id,
                    message_key,
                    values: s
                        .json_context_values
                        .into_iter()
                        .map(decode_value)
                        .collect::<Result<_, _>>()?,
                })
            } else if !s.json_context.is_empty() {
                Some(JsonContext::Legacy {
                    object: s.json_context,
                    message_key,
                })
            } else if !s.json_context_values.is_empty() {
                return Err(ErrorKind::ColumnsWithoutSchema);
            } else {
                None
            };
            (Content::Pattern { id, values }, json)
        }
    };
    Ok(Log {
        timestamp,
        status: log.status.map(decode_value).transpose()?,
        service: log.service.map(decode_value).transpose()?,
        tags: regs.tags.clone(),
        content,
        json,
        uuid: log.uuid,
    })
}
