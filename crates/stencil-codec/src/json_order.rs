//! The `json-order` extension's fallback: what a stream that did not agree to it gets instead.
//!
//! A JSON schema may say where its message goes among the columns ([`SchemaDefine::message_at`](crate::datum::SchemaDefine::message_at)), so that
//! a record whose message is not its last member still comes back byte for byte. Only Stencil's intake
//! knows that field, and only an intake that echoed `json-order` is sent it. Every other stream (a
//! Datadog intake, an older Stencil, the batches sent before the echo) gets such a log as its raw text
//! and never sees the schema: [`Unplacer`] follows what the stream was sent, renders each of those logs
//! from that state exactly as an intake would (the document in its members' order, which is the record
//! the agent read), and leaves every other datum alone. Nothing is lost either way.

use crate::datum::{Content, Datum, Log};
use crate::error::ErrorKind;
use crate::state::{Limits, StreamState};
use crate::Generation;

/// Rewrites the batches of one stream that did not agree to `json-order`. Feed it every batch of the
/// stream, in order, with nothing left out: it keeps the stream's state to render from.
#[derive(Debug)]
pub struct Unplacer {
    state: StreamState,
    withheld: u64,
    as_text: u64,
}

impl Default for Unplacer {
    fn default() -> Self {
        // The agent's own engine bounds this state (it mirrors what the engine defined): no limit of
        // the intake's applies.
        let unbounded = Limits {
            max_dict_entries: usize::MAX,
            max_patterns: usize::MAX,
            max_schemas: usize::MAX,
            max_state_bytes: usize::MAX,
            ..Limits::default()
        };
        Unplacer {
            state: StreamState::new(Generation::V3, unbounded),
            withheld: 0,
            as_text: 0,
        }
    }
}

impl Unplacer {
    /// A fresh stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many schema defines [`Unplacer::rewrite`] has kept off the stream so far.
    pub fn withheld(&self) -> u64 {
        self.withheld
    }

    /// How many logs [`Unplacer::rewrite`] has turned into their text so far.
    pub fn as_text(&self) -> u64 {
        self.as_text
    }

    /// The datums to send for `datums` (all of one batch, in order): `None` when they go as they are,
    /// else a copy without the schema defines that place their message, and with each log of such a
    /// schema as its raw text, metadata kept.
    pub fn rewrite(&mut self, datums: &[Datum]) -> Result<Option<Vec<Datum>>, ErrorKind> {
        let mut out: Option<Vec<Datum>> = None;
        for (i, d) in datums.iter().enumerate() {
            let replaced = match d {
                Datum::SchemaDefine(s) => {
                    self.state.define_schema(s)?;
                    self.withheld += u64::from(s.message_at.is_some());
                    s.message_at.map(|_| None)
                }
                Datum::Log(log) => self.placed(log)?.map(Some),
                other => {
                    self.state.apply_definition(other)?;
                    None
                }
            };
            match (replaced, &mut out) {
                (None, Some(out)) => out.push(d.clone()),
                (None, None) => {}
                (Some(new), out) => {
                    let out = out.get_or_insert_with(|| datums[..i].to_vec());
                    out.extend(new);
                }
            }
        }
        Ok(out)
    }

    /// `log` as raw text when its schema places the message, `None` otherwise.
    fn placed(&mut self, log: &Log) -> Result<Option<Datum>, ErrorKind> {
        let Some(crate::datum::JsonContext::Columns { schema, .. }) = &log.json else {
            return Ok(None);
        };
        if !self.state.places_message(*schema)? {
            return Ok(None);
        }
        let record = self.state.reconstruct(log)?;
        self.as_text += 1;
        Ok(Some(Datum::Log(Log {
            content: Content::Raw(crate::reconstruct::record_text(&record)),
            json: None,
            ..log.clone()
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datum::{DictDefine, DynValue, JsonContext, JsonKind, JsonValue, PatternDefine};
    use crate::datum::{SchemaDefine, Value};

    fn dict(id: u64, value: &str) -> Datum {
        Datum::DictDefine(DictDefine {
            id,
            value: value.into(),
        })
    }

    fn json_log(schema: u64, level: &str, user: &str) -> Datum {
        Datum::Log(Log {
            timestamp: 7,
            status: Some(Value::Dict(4)),
            service: None,
            tags: None,
            content: Content::Pattern {
                id: 1,
                values: vec![DynValue::new(Value::Str(user.into()))],
            },
            json: Some(JsonContext::Columns {
                schema,
                values: vec![JsonValue::Str(level.into()), JsonValue::Int(3)],
            }),
            uuid: None,
        })
    }

    fn schema(id: u64, message_at: Option<u32>) -> Datum {
        Datum::SchemaDefine(SchemaDefine {
            id,
            keys: vec![2, 3],
            message_key: 5,
            kinds: vec![JsonKind::String, JsonKind::Int],
            message_at,
        })
    }

    /// A placed log becomes the record's text (its message where it was), its schema define stays off
    /// the wire, and everything else, later batches included, goes as it was.
    #[test]
    fn placed_logs_go_as_their_text_and_their_schema_stays_home() {
        let mut u = Unplacer::new();
        let first = vec![
            dict(2, "level"),
            dict(3, "n"),
            dict(4, "info"),
            dict(5, "msg"),
            Datum::PatternDefine(PatternDefine {
                id: 1,
                template: "user  in".into(),
                pos_list: vec![5],
            }),
            schema(6, Some(1)),
            schema(7, None),
            json_log(6, "warn", "bob"),
            json_log(7, "info", "al"),
        ];
        let out = u.rewrite(&first).expect("renders").expect("rewritten");
        assert_eq!(out.len(), first.len() - 1);
        assert_eq!((u.withheld(), u.as_text()), (1, 1));
        assert_eq!(&out[..5], &first[..5]);
        assert_eq!(out[5], first[6]);
        let Datum::Log(raw) = &out[6] else {
            panic!("a log: {:?}", out[6]);
        };
        assert_eq!(
            raw.content,
            Content::Raw(r#"{"level":"warn","msg":"user bob in","n":3}"#.into())
        );
        assert_eq!(
            (raw.json.is_none(), raw.status.clone()),
            (true, Some(Value::Dict(4)))
        );
        assert_eq!(out[7], first[8]);
        // A later batch: the placed log is rewritten from the state kept, the other left alone.
        let later = vec![json_log(7, "info", "cy")];
        assert_eq!(u.rewrite(&later).expect("renders"), None);
        let placed = vec![json_log(6, "error", "dee")];
        let out = u.rewrite(&placed).expect("renders").expect("rewritten");
        assert!(
            matches!(&out[0], Datum::Log(l) if l.content == Content::Raw(r#"{"level":"error","msg":"user dee in","n":3}"#.into()))
        );
    }
}
