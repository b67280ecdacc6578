//! Payloads: the unit of logs that is acked, checkpointed and resent as a whole (TRANSPORT.md §3).
//!
//! A payload keeps its datums canonical and immutable. It records the wire datums (defines and logs in
//! entry order; deletes never go on the wire), the state changes (defines and deletes, for the snapshot),
//! the ids its logs reference, the checkpoints it releases once acked, and its canonical encoding, made
//! once when the payload is built.

use std::collections::BTreeSet;
use std::sync::Arc;

use stencil_codec::datum::{Content, Datum, DynValue, JsonContext, JsonValue, Value};
use stencil_codec::{BatchEncoder, EncodeError, EncodedBatch, Space};

/// A source's resumable position, released to the checkpoint registry once its payload is acked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The source (for files, a fingerprint-based identity).
    pub source: Arc<str>,
    /// The offset just past the last byte whose log is in the payload.
    pub offset: u64,
}

/// An id a log references, in its space.
pub type Ref = (SpaceKey, u64);

/// [`Space`] as an ordered key (patterns, then dictionary, then schemas: the snapshot's group order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SpaceKey {
    /// Pattern ids.
    Pattern,
    /// Dictionary ids.
    Dictionary,
    /// Schema ids.
    Schema,
}

impl From<SpaceKey> for Space {
    fn from(s: SpaceKey) -> Space {
        match s {
            SpaceKey::Pattern => Space::Pattern,
            SpaceKey::Dictionary => Space::Dictionary,
            SpaceKey::Schema => Space::Schema,
        }
    }
}

/// One batch of logs, ready to send on any stream.
#[derive(Debug, Clone)]
pub struct Payload {
    /// Production order, from 1; payloads are sent, acked and released in this order.
    pub seq: u64,
    /// Defines and logs, in entry order. (A `Vec` behind the `Arc`, not a slice: turning the
    /// batch's vector into `Arc<[Datum]>` copied every datum once more.)
    pub wire: Arc<Vec<Datum>>,
    /// Defines and deletes, in entry order.
    pub changes: Arc<Vec<Datum>>,
    /// Every id the logs reference.
    pub refs: Arc<BTreeSet<Ref>>,
    /// Latest checkpoint per source.
    pub checkpoints: Vec<Checkpoint>,
    /// Logs in the payload.
    pub logs: usize,
    /// Raw bytes of those logs, counted once per log.
    pub raw_bytes: usize,
    /// The canonical v3 encoding (no prefix); `None` when it was left to send time (see
    /// [`Payload::build_lazy`]).
    pub encoded: Option<Arc<EncodedBatch>>,
    /// Bytes counted against the in-flight limit: the encoding's length, or an estimate.
    pub size: usize,
    /// About how much memory the payload holds (its datums, and its encoding when it has one): what
    /// the in-flight memory limit counts. A batch of new templates holds several times its wire size.
    pub memory: usize,
}

impl Payload {
    /// Builds a payload from datums (deletes are kept as state changes only) and encodes it once.
    pub fn build(
        seq: u64,
        datums: Vec<Datum>,
        checkpoints: Vec<Checkpoint>,
        raw_bytes: usize,
        encoder: &BatchEncoder,
    ) -> Result<Payload, EncodeError> {
        let mut payload = Payload::build_lazy(seq, datums, checkpoints, raw_bytes);
        let encoded = encoder.encode(&payload.wire)?;
        payload.size = encoded.data.len();
        payload.memory += encoded.data.len();
        payload.encoded = Some(Arc::new(encoded));
        Ok(payload)
    }

    /// Builds a payload without its v3 encoding: for streams that negotiate the extensions, which
    /// encode each batch at send time, the v3 encoding would be made for nothing. A stream that stays on
    /// v3 encodes it when it sends it. The in-flight size is an estimate from the raw bytes.
    pub fn build_lazy(
        seq: u64,
        datums: Vec<Datum>,
        checkpoints: Vec<Checkpoint>,
        raw_bytes: usize,
    ) -> Payload {
        // The batch's vector becomes the wire in place (deletes are rare and move out), so that a
        // batch's datums are allocated once.
        let mut wire = datums;
        let mut changes = Vec::new();
        let mut refs = BTreeSet::new();
        let mut logs = 0;
        let mut memory = 256;
        wire.retain(|d| {
            memory += datum_memory(d);
            match d {
                Datum::Log(_) => {
                    logs += 1;
                    references(d, &mut refs);
                    true
                }
                // Defines go to both; deletes only to the changes.
                _ => {
                    changes.push(d.clone());
                    !matches!(
                        d,
                        Datum::PatternDelete { .. }
                            | Datum::DictDelete { .. }
                            | Datum::SchemaDelete { .. }
                    )
                }
            }
        });
        // A schema defined in this payload brings its keys along as references.
        for d in &wire {
            if let Datum::SchemaDefine(s) = d {
                if refs.contains(&(SpaceKey::Schema, s.id)) {
                    refs.extend(
                        s.keys
                            .iter()
                            .chain([&s.message_key])
                            .map(|k| (SpaceKey::Dictionary, *k)),
                    );
                }
            }
        }
        Payload {
            seq,
            size: estimated_size(raw_bytes, wire.len()),
            wire: wire.into(),
            changes: changes.into(),
            // A B-tree holds about 11 entries of 16 bytes in each 200-byte node.
            memory: memory + refs.len() * 24,
            refs: Arc::new(refs),
            checkpoints,
            logs,
            raw_bytes,
            encoded: None,
        }
    }
}

/// What a datum holds in the heap, as the allocator sees it: the datum, its value vector, and each
/// string with the allocator's per-block overhead. In-flight payloads are bounded by the sum, so it
/// should be near the truth: the first estimate (twice the raw bytes plus a fixed cost per datum) ran
/// at a third to a half of the real heap on lines of many short values.
fn datum_memory(d: &Datum) -> usize {
    /// The allocator's block header and rounding, per heap block.
    const BLOCK: usize = 16;
    fn text(s: &str) -> usize {
        if s.is_empty() {
            0
        } else {
            s.len().next_multiple_of(8) + BLOCK
        }
    }
    fn value(v: &Value) -> usize {
        match v {
            Value::Str(s) | Value::RawJson(s) => text(s),
            _ => 0,
        }
    }
    fn values(v: &[DynValue]) -> usize {
        std::mem::size_of_val(v) + BLOCK + v.iter().map(|v| value(&v.value)).sum::<usize>()
    }
    std::mem::size_of::<Datum>()
        + match d {
            Datum::Log(log) => {
                let content = match &log.content {
                    Content::Raw(t) => text(t),
                    Content::Pattern { values: v, .. } => values(v),
                };
                let json = match &log.json {
                    Some(JsonContext::Columns { values: v, .. }) => {
                        v.len() * std::mem::size_of::<JsonValue>() + BLOCK
                    }
                    Some(JsonContext::KeyList { values: v, .. }) => {
                        v.len() * std::mem::size_of::<Value>()
                            + BLOCK
                            + v.iter().map(value).sum::<usize>()
                    }
                    Some(JsonContext::Legacy { object, .. }) => object.len() + BLOCK,
                    None => 0,
                };
                content + json + log.uuid.as_deref().map_or(0, text)
            }
            // A define is held twice (in the wire and in the changes).
            Datum::PatternDefine(p) => 2 * (text(&p.template) + 4 * p.pos_list.len() + BLOCK),
            Datum::DictDefine(e) => 2 * text(&e.value),
            Datum::SchemaDefine(s) => 2 * (8 * s.keys.len() + BLOCK),
            _ => 0,
        }
}

/// An upper estimate of a batch's encoded size from its raw bytes and datum count (logs compress; the
/// per-datum framing may not).
pub fn estimated_size(raw_bytes: usize, datums: usize) -> usize {
    raw_bytes / 2 + 16 * datums + 64
}

/// Adds every id a log datum references.
pub fn references(d: &Datum, refs: &mut impl Extend<Ref>) {
    let Datum::Log(log) = d else { return };
    let mut dict = |v: &Option<Value>| {
        if let Some(Value::Dict(id)) = v {
            refs.extend([(SpaceKey::Dictionary, *id)]);
        }
    };
    dict(&log.status);
    dict(&log.service);
    dict(&log.tags);
    if let Content::Pattern { id, values } = &log.content {
        refs.extend([(SpaceKey::Pattern, *id)]);
        for v in values {
            if let Value::Dict(id) = v.value {
                refs.extend([(SpaceKey::Dictionary, id)]);
            }
        }
    }
    if let Some(JsonContext::Columns { schema, values }) = &log.json {
        refs.extend([(SpaceKey::Schema, *schema)]);
        for v in values {
            if let JsonValue::Dict(id) = v {
                refs.extend([(SpaceKey::Dictionary, *id)]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stencil_codec::datum::Log;

    /// A log of `values` short strings, as the engine emits for a line of words and ids.
    fn log(values: usize) -> Datum {
        let mut log = Log::raw(0, "x");
        log.content = Content::Pattern {
            id: 2,
            values: (0..values)
                .map(|i| DynValue::new(Value::Str(format!("value-{i}"))))
                .collect(),
        };
        Datum::Log(log)
    }

    /// The in-flight memory limit counts what a payload really holds: each datum, its value vector and
    /// each value's heap block. (The first estimate, twice the raw bytes plus 256 bytes per datum, put
    /// 1,000 such logs of 100 raw bytes at 456 KB, under their inline size alone.)
    #[test]
    fn memory_counts_values_and_their_strings() {
        let datums: Vec<Datum> = (0..1000).map(|_| log(8)).collect();
        let inline = 1000 * (std::mem::size_of::<Datum>() + 8 * std::mem::size_of::<DynValue>());
        let strings = 1000 * 8 * 16;
        let p = Payload::build_lazy(1, datums, Vec::new(), 100_000);
        assert!(
            p.memory >= inline + strings,
            "{} < {}",
            p.memory,
            inline + strings
        );
        assert!(p.memory < 2 * (inline + strings), "{}", p.memory);
        // More values, more memory; a raw log holds its text.
        let few = Payload::build_lazy(2, vec![log(1)], Vec::new(), 10).memory;
        let many = Payload::build_lazy(3, vec![log(20)], Vec::new(), 10).memory;
        assert!(many > few + 19 * std::mem::size_of::<DynValue>());
        let short = Payload::build_lazy(4, vec![Datum::Log(Log::raw(0, "a"))], Vec::new(), 1);
        let long = Payload::build_lazy(
            5,
            vec![Datum::Log(Log::raw(0, "a".repeat(5000)))],
            Vec::new(),
            5000,
        );
        assert!(long.memory >= short.memory + 4990);
    }
}
