//! Rebuilding logs from canonical datums and stream state (PROTOCOL.md §11.3–§11.6).
//!
//! This is the intake's last step, and the place where losslessness is decided: a structured message is
//! its template with every value rendered back into its hole, and a JSON log is its context columns set at
//! their key paths with the message re-inserted. Every reference is resolved against the stream's tables;
//! a miss is a typed error, never a panic or a silent gap.

use std::fmt::Write as _;
use std::str::FromStr;
use std::sync::Arc;

use serde_json::{Map, Value as Json};

use crate::datum::{Content, JsonContext, JsonValue, Log, Value};
use crate::error::ErrorKind;
use crate::json::{build_document, insert_at, parse_raw_json, split_key_path};
use crate::state::StreamState;
use crate::Generation;

/// One rebuilt log, as an intake hands it to a sink.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRecord {
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// The status (e.g. `info`), if any.
    pub status: Option<Arc<str>>,
    /// The service, if any. In v2 it comes from the `service:` tag.
    pub service: Option<Arc<str>>,
    /// The comma-joined tag string, if any. See [`LogRecord::tags`].
    pub tags: Option<Arc<str>>,
    /// The message text, exactly as the agent read it.
    pub message: String,
    /// For JSON logs: the whole document, message re-inserted at its key. Key order is not significant.
    pub json: Option<Map<String, Json>>,
    /// The tracking id, if the agent set one.
    pub uuid: Option<String>,
    /// For a log sent as a pattern and values: the pattern (its template with `<*>` holes, and a hash
    /// of that text that is the same on every stream and every run). `None` for raw logs.
    pub pattern: Option<PatternRef>,
}

/// A pattern as intakes report it: log-pattern analytics at ingestion time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternRef {
    /// The template with each hole shown as `<*>` (`user <*> logged in from <*>`).
    pub text: Arc<str>,
    /// FNV-1a (64 bits) of `text`: stable across streams, agents and restarts for the same template.
    pub hash: u64,
}

impl PatternRef {
    /// The shown form of `template` with holes at the byte offsets `holes` (ascending).
    pub fn of(template: &str, holes: &[usize]) -> PatternRef {
        let mut text = String::with_capacity(template.len() + 3 * holes.len());
        let mut cursor = 0;
        for &at in holes {
            text.push_str(&template[cursor..at]);
            text.push_str("<*>");
            cursor = at;
        }
        text.push_str(&template[cursor..]);
        let hash = pattern_hash(&text);
        PatternRef {
            text: Arc::from(text),
            hash,
        }
    }

    /// The hash as 16 lower-case hex digits.
    pub fn hash_hex(&self) -> String {
        format!("{:016x}", self.hash)
    }
}

/// FNV-1a, 64 bits: a fixed, documented function, so the same template text hashes the same everywhere.
pub fn pattern_hash(text: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl LogRecord {
    /// The individual tags (the tag string split on `,`; nothing when there are no tags).
    pub fn tags(&self) -> impl Iterator<Item = &str> {
        self.tags
            .as_deref()
            .unwrap_or("")
            .split(',')
            .filter(|t| !t.is_empty())
    }

    /// The value of the first tag `key:value` with this key.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags()
            .find_map(|t| t.strip_prefix(key).and_then(|rest| rest.strip_prefix(':')))
    }
}

/// A log's text as the agent read it, escapes kept: the message; for a JSON log, its document
/// serialized compactly in member order (the agent sends a JSON log structurally only when that is
/// exact).
pub fn record_text(record: &LogRecord) -> String {
    match &record.json {
        Some(doc) => serde_json::to_string(doc).unwrap_or_else(|_| record.message.clone()),
        None => record.message.clone(),
    }
}

/// The exact bytes a Stencil agent read for this log: [`record_text`]; for a log tagged
/// [`crate::escape::ESCAPED_TAG`], the unescaped bytes.
pub fn original_bytes(record: &LogRecord) -> Result<Vec<u8>, crate::escape::BadEscape> {
    let text = record_text(record);
    if record.tags().any(|t| t == crate::escape::ESCAPED_TAG) {
        crate::escape::unescape(&text)
    } else {
        Ok(text.into_bytes())
    }
}

/// Canonical float text: the shortest decimal that round-trips, in ECMAScript Number-to-String form
/// (`159.6`, `1e+21`, `1e-7`). Non-finite values are [`ErrorKind::NonFiniteFloat`].
pub fn float_text(f: f64) -> Result<String, ErrorKind> {
    if !f.is_finite() {
        return Err(ErrorKind::NonFiniteFloat);
    }
    Ok(ryu_js::Buffer::new().format_finite(f).to_string())
}

fn float_json(f: f64) -> Result<Json, ErrorKind> {
    let text = float_text(f)?;
    serde_json::Number::from_str(&text)
        .map(Json::Number)
        .map_err(|e| ErrorKind::InvalidRawJson(e.to_string()))
}

impl StreamState {
    /// Appends the text of one value (PROTOCOL.md §11.3, "Rendering a DynamicValue into text").
    pub fn render_value(&self, value: &Value, out: &mut String) -> Result<(), ErrorKind> {
        match value {
            Value::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Value::Float(f) => {
                if !f.is_finite() {
                    return Err(ErrorKind::NonFiniteFloat);
                }
                out.push_str(ryu_js::Buffer::new().format_finite(*f));
            }
            Value::Str(s) | Value::RawJson(s) => out.push_str(s),
            Value::Dict(id) => out.push_str(self.dict_value(*id)?),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        }
        Ok(())
    }

    fn meta_text(&self, value: &Option<Value>) -> Result<Option<Arc<str>>, ErrorKind> {
        Ok(match value {
            None => None,
            Some(Value::Dict(id)) => Some(self.dict_value(*id)?.clone()),
            Some(v) => {
                let mut s = String::new();
                self.render_value(v, &mut s)?;
                Some(Arc::from(s))
            }
        })
    }

    /// Rebuilds the message text of a log.
    pub fn message_text(&self, content: &Content) -> Result<String, ErrorKind> {
        match content {
            Content::Raw(text) => Ok(text.clone()),
            Content::Pattern { id, values } => {
                let pattern = self.pattern(*id)?;
                if values.len() != pattern.byte_pos.len() {
                    return Err(ErrorKind::ValueCountMismatch {
                        pattern_id: *id,
                        expected: pattern.byte_pos.len(),
                        got: values.len(),
                    });
                }
                let mut out = String::with_capacity(pattern.template.len() + 16 * values.len());
                let mut cursor = 0;
                for (value, &at) in values.iter().zip(&pattern.byte_pos) {
                    out.push_str(&pattern.template[cursor..at]);
                    self.render_value(&value.value, &mut out)?;
                    cursor = at;
                }
                out.push_str(&pattern.template[cursor..]);
                Ok(out)
            }
        }
    }

    /// Rebuilds one log: message text, JSON document, timestamp, status, service, tags and uuid.
    pub fn reconstruct(&self, log: &Log) -> Result<LogRecord, ErrorKind> {
        let message = self.message_text(&log.content)?;
        let tags = self.meta_text(&log.tags)?.filter(|t| !t.is_empty());
        let mut service = self.meta_text(&log.service)?;
        if service.is_none() && self.generation() == Generation::V2 {
            if let Some(tags) = &tags {
                service = tags
                    .split(',')
                    .find_map(|t| t.strip_prefix("service:"))
                    .map(Arc::from);
            }
        }
        let json = match &log.json {
            None => None,
            Some(ctx) => Some(self.json_document(ctx, &message)?),
        };
        let pattern = match &log.content {
            Content::Pattern { id, .. } => Some(self.pattern(*id)?.shown.clone()),
            Content::Raw(_) => None,
        };
        Ok(LogRecord {
            timestamp: log.timestamp,
            status: self.meta_text(&log.status)?,
            service,
            tags,
            message,
            json,
            uuid: log.uuid.clone(),
            pattern,
        })
    }

    fn json_document(
        &self,
        ctx: &JsonContext,
        message: &str,
    ) -> Result<Map<String, Json>, ErrorKind> {
        let mut root = Map::new();
        match ctx {
            JsonContext::Columns { schema, values } => {
                let s = self.schema(*schema)?;
                if values.len() != s.keys.len() {
                    return Err(ErrorKind::JsonColumnsMismatch {
                        schema_id: *schema,
                        detail: format!("{} values for {} keys", values.len(), s.keys.len()),
                    });
                }
                // The message goes in after `message_at` columns, so that the document's members keep
                // their order (`json-order`); after all of them by default.
                let columns =
                    s.keys
                        .iter()
                        .zip(&s.kinds)
                        .zip(values)
                        .map(|((key, kind), value)| {
                            if value.kind() != *kind {
                                return Err(ErrorKind::JsonColumnsMismatch {
                                    schema_id: *schema,
                                    detail: format!(
                                        "a {:?} value where the schema says {kind:?}",
                                        value.kind()
                                    ),
                                });
                            }
                            Ok((
                                split_key_path(self.dict_value(*key)?)?,
                                self.json_value(value)?,
                            ))
                        });
                root = build_document(
                    columns,
                    &split_key_path(self.dict_value(s.message_key)?)?,
                    message,
                    s.message_at.map(|at| at as usize),
                )?;
            }
            JsonContext::KeyList {
                key_list,
                message_key,
                values,
            } => {
                let list = self.dict_value(*key_list)?;
                let keys: Vec<&str> = if list.is_empty() {
                    Vec::new()
                } else {
                    list.split(',').collect()
                };
                if keys.len() != values.len() {
                    return Err(ErrorKind::ContextCountMismatch {
                        keys: keys.len(),
                        values: values.len(),
                    });
                }
                for (key, value) in keys.into_iter().zip(values) {
                    let json = match value {
                        Value::Int(i) => Json::from(*i),
                        Value::Float(f) => float_json(*f)?,
                        Value::Bool(b) => Json::Bool(*b),
                        Value::RawJson(text) => parse_raw_json(text)?,
                        Value::Str(_) | Value::Dict(_) => {
                            let mut s = String::new();
                            self.render_value(value, &mut s)?;
                            Json::String(s)
                        }
                    };
                    insert_at(&mut root, &[key.to_owned()], json)?;
                }
                self.insert_message(&mut root, message_key, message)?;
            }
            JsonContext::Legacy {
                object,
                message_key,
            } => {
                // PROTOCOL.md §11.5: never reject only because the deprecated field is set; merge it when
                // it is a JSON object, ignore it otherwise.
                if let Ok(Json::Object(map)) = serde_json::from_slice::<Json>(object) {
                    root = map;
                }
                self.insert_message(&mut root, message_key, message)?;
            }
        }
        Ok(root)
    }

    fn insert_message(
        &self,
        root: &mut Map<String, Json>,
        key: &Option<Value>,
        message: &str,
    ) -> Result<(), ErrorKind> {
        let key = match key {
            None => "message".to_owned(),
            Some(v) => {
                let mut s = String::new();
                self.render_value(v, &mut s)?;
                s
            }
        };
        insert_at(root, &[key], Json::String(message.to_owned()))
    }

    fn json_value(&self, value: &JsonValue) -> Result<Json, ErrorKind> {
        Ok(match value {
            JsonValue::Null => Json::Null,
            JsonValue::Bool(b) => Json::Bool(*b),
            JsonValue::Int(i) => Json::from(*i),
            JsonValue::Float(f) => float_json(*f)?,
            JsonValue::Dict(id) => Json::String(self.dict_value(*id)?.to_string()),
            JsonValue::Str(s) => Json::String(s.clone()),
            JsonValue::RawJson(text) => parse_raw_json(text)?,
        })
    }
}

/// What holding one record costs beyond its text: the struct, its allocations' headers, and the
/// per-record work a sink does (a JSON Lines record adds its keys and timestamp). Without it, a batch of
/// empty logs (4 wire bytes each) would rebuild into gigabytes while counting as 0 output bytes.
pub const RECORD_OVERHEAD: usize = std::mem::size_of::<LogRecord>() + 96;

/// What one record costs, for the per-batch amplification limit: [`RECORD_OVERHEAD`], message,
/// metadata, and the JSON document's serialized length.
pub(crate) fn output_bytes(record: &LogRecord) -> usize {
    let meta = [&record.status, &record.service, &record.tags]
        .iter()
        .map(|m| m.as_ref().map_or(0, |s| s.len()))
        .sum::<usize>();
    let json = record.json.as_ref().map_or(0, |m| {
        // JSON logs count their serialized document (plain text logs skip this cost entirely).
        serde_json::to_vec(m).map_or(0, |v| v.len())
    });
    RECORD_OVERHEAD + record.message.len() + meta + json
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_are_shown_with_holes_and_hashed_stably() {
        let p = PatternRef::of("user  logged in from ", &[5, 21]);
        assert_eq!(&*p.text, "user <*> logged in from <*>");
        // FNV-1a of the text: the same on every run and machine.
        assert_eq!(p.hash, pattern_hash("user <*> logged in from <*>"));
        assert_eq!(pattern_hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(pattern_hash("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(p.hash_hex().len(), 16);
    }

    #[test]
    fn ecmascript_float_text() {
        for (f, s) in [
            (159.6, "159.6"),
            (1e21, "1e+21"),
            (1e-7, "1e-7"),
            (5.0, "5"),
            (-0.5, "-0.5"),
            (123456789012.0, "123456789012"),
        ] {
            assert_eq!(float_text(f).expect("finite"), s);
        }
        assert_eq!(float_text(f64::NAN), Err(ErrorKind::NonFiniteFloat));
        assert_eq!(float_text(f64::INFINITY), Err(ErrorKind::NonFiniteFloat));
    }
}
