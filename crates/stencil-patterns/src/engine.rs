//! The engine: one instance per stream (pipeline), turning records into datums.
//!
//! For each record it emits, in order: deletes caused by making room, then at most one `PatternDefine`
//! (a new pattern, or a widened one re-sent under the same id), then dictionary defines (values, status,
//! service, tags), then exactly one `Log`. Any record the engine cannot encode structurally goes raw: the
//! output always rebuilds the input byte for byte (see [`stencil_codec::escape`] for invalid UTF-8).

use std::borrow::Cow;

use stencil_codec::datum::{
    Content, Datum, DynValue, JsonContext, JsonValue, Log, PatternDefine, Value,
};
use stencil_codec::escape::{escape, ESCAPED_TAG};

use crate::budget::Budget;
use crate::dict::Namespace;
use crate::json::{self, Leaf};
use crate::miner::{Miner, MinerConfig};
use crate::schema::Schemas;
use crate::token::{Class, Token, Tokenizer};
use crate::values::{dict_eligible, stable_hash, type_value, Doorkeeper, Typed};

/// Engine settings. One configuration serves every source.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Minimum similarity for a line to join a pattern (default 0.85).
    pub similarity: f64,
    /// A new pattern is defined on its `define_after`-th line; earlier lines go raw (default 2; 1 =
    /// define at once). The empty line's pattern is always defined at once.
    pub define_after: u32,
    /// Patterns compared per line at most (default 32).
    pub max_candidates: usize,
    /// Distinct leading words per line shape before new ones share a wildcard bucket (default 100).
    pub max_children: u32,
    /// Longer lines go raw (default 16 KiB).
    pub max_pattern_line_bytes: usize,
    /// Lines with more tokens go raw (default 512).
    pub max_tokens: usize,
    /// Patterns with more slots are not created (default 255).
    pub max_slots: usize,
    /// Pattern budget, pending ones included (default 4,096 / 8 MiB).
    pub patterns: Budget,
    /// Status, service and tagset entries (default 4,096 / 2 MiB).
    pub meta: Budget,
    /// Admitted values (default 16,384 / 4 MiB).
    pub values: Budget,
    /// JSON schemas (default 1,024 / 1 MiB).
    pub schemas: Budget,
    /// JSON key paths (default 4,096 / 1 MiB).
    pub keys: Budget,
    /// Send JSON objects structurally when that is byte-exact (default true).
    pub json: bool,
    /// With `json`, also the objects whose message is not their last member, with the message's place
    /// in their schema (default false). The place is the `json-order` extension of Stencil's intake
    /// (docs/extensions.md); the agent sends those logs as raw text on a stream that did not agree to it.
    pub json_order: bool,
    /// Doorkeeper slots (default 65,536).
    pub doorkeeper_slots: usize,
    /// Sightings before a value is admitted to the dictionary (default 2). The doorkeeper's count stops
    /// at 255, so 255 admits only values seen that often (without losing their slot meanwhile).
    pub admit_after: u8,
    /// Shortest value admitted (default 2 bytes).
    pub dict_min_len: usize,
    /// Longest value admitted (default 128 bytes).
    pub dict_max_len: usize,
    /// Adjacent volatile slots (numbers, dates, ids) separated only by short punctuation share one hole
    /// and one string value (default true: fewer values frame and compress better in the v3 row
    /// layout). See `Cluster::holes`.
    pub merge_slots: bool,
    /// Lines of different lengths may share a pattern through span slots (PATTERNS.md §3.2 step 5;
    /// default true). See the [`crate::miner`] module.
    pub variable_length: bool,
    /// Distinct words one position must have taken, in patterns that agree everywhere else, before it
    /// becomes a slot however short the line (default 3; below 2, never). See the miner's sibling
    /// merges.
    pub sibling_words: usize,
    /// Static words those patterns need besides that position (default 3): in shorter lines
    /// (`Connection closed`, `Connection reset`) one word is the whole event.
    pub sibling_context: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            similarity: 0.85,
            define_after: 2,
            max_candidates: 32,
            max_children: 100,
            max_pattern_line_bytes: 16 << 10,
            max_tokens: 512,
            max_slots: 255,
            patterns: Budget::new(4096, 8 << 20),
            meta: Budget::new(4096, 2 << 20),
            values: Budget::new(16_384, 4 << 20),
            schemas: Budget::new(1024, 1 << 20),
            keys: Budget::new(4096, 1 << 20),
            json: true,
            json_order: false,
            doorkeeper_slots: 65_536,
            admit_after: 2,
            dict_min_len: 2,
            dict_max_len: 128,
            merge_slots: true,
            variable_length: true,
            sibling_words: 3,
            sibling_context: 3,
        }
    }
}

impl EngineConfig {
    /// Bytes the default budgets add up to (patterns 8 MiB, meta 2, values 4, schemas 1, keys 1).
    pub const DEFAULT_STATE_BYTES: usize = 16 << 20;

    /// The defaults with every state budget scaled so that their bytes add up to `bytes`: entry counts
    /// and doorkeeper slots scale alike (at least 16 entries per budget, 1,024 slots). This is the one
    /// knob a user needs to bound an engine's memory.
    pub fn with_state_budget(bytes: usize) -> Self {
        let d = EngineConfig::default();
        let scale = |n: usize, floor: usize| {
            ((n as u128 * bytes as u128) / Self::DEFAULT_STATE_BYTES as u128).max(floor as u128)
                as usize
        };
        let budget = |b: Budget| Budget::new(scale(b.count, 16), scale(b.bytes, 1024));
        EngineConfig {
            patterns: budget(d.patterns),
            meta: budget(d.meta),
            values: budget(d.values),
            schemas: budget(d.schemas),
            keys: budget(d.keys),
            doorkeeper_slots: scale(d.doorkeeper_slots, 1024),
            ..d
        }
    }
}

impl EngineConfig {
    /// These settings as Stencil's default wire uses them (`stencil ship --wire auto`, whose native
    /// layout and stream context do the rest): a pattern is defined on its first line (a define costs
    /// less than a raw first line in a compressed stream), only values seen 255 times enter the value
    /// dictionary (the native columns and their recent-value rings do most of its job; turning it off
    /// entirely cost 3 % more bytes on `bench cardinality`'s `low` level), slots are not merged, and JSON
    /// logs take the text path, unless `json_documents`: then they go as documents with their message
    /// anywhere (`json-order`). Sent as documents they cost more bytes (BENCHMARKS.md).
    pub fn for_default_wire(self, json_documents: bool) -> Self {
        EngineConfig {
            define_after: 1,
            admit_after: u8::MAX,
            merge_slots: false,
            json: json_documents,
            json_order: json_documents,
            ..self
        }
    }
}

/// A record's metadata.
#[derive(Debug, Clone, Copy, Default)]
pub struct Meta<'a> {
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// Status (e.g. `info`).
    pub status: Option<&'a str>,
    /// Service.
    pub service: Option<&'a str>,
    /// Tags (`key:value`). Order and duplicates do not matter: the tagset is canonicalised.
    pub tags: &'a [&'a str],
}

/// What happened to one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoded {
    /// The pattern the line belongs to (also for a raw line of a pending pattern), if any.
    pub pattern: Option<u64>,
    /// True when the Log is structured (pattern + values), false when raw.
    pub structured: bool,
}

/// Counters, for metrics and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Records encoded.
    pub records: u64,
    /// Records sent structured.
    pub structured: u64,
    /// `PatternDefine`s emitted (widenings included).
    pub pattern_defines: u64,
    /// `DictEntryDefine`s emitted.
    pub dict_defines: u64,
    /// Deletes emitted.
    pub deletes: u64,
    /// Records whose text was escaped because it was not valid UTF-8.
    pub escaped: u64,
    /// JSON records sent structurally (schema + columns).
    pub json: u64,
}

/// The pattern engine of one stream.
#[derive(Debug)]
pub struct Engine {
    config: EngineConfig,
    miner: Miner,
    meta: Namespace,
    values: Namespace,
    schemas: Schemas,
    doorkeeper: Doorkeeper,
    next_dict_id: u64,
    epoch: u64,
    tokenizer: Tokenizer,
    tokens: Vec<Token>,
    deletes: Vec<Datum>,
    defines: Vec<Datum>,
    schema_defines: Vec<Datum>,
    stats: Stats,
    /// The last tag set and its canonical form: a source's logs carry the same tags, so the sort and
    /// join are done once per change, not once per log.
    last_tags: (Vec<String>, bool, Option<String>),
}

impl Engine {
    /// A fresh engine (empty state; pattern ids from 1, dictionary ids from 2).
    pub fn new(config: EngineConfig) -> Self {
        let miner = Miner::new(MinerConfig {
            similarity: config.similarity,
            max_candidates: config.max_candidates,
            max_children: config.max_children,
            max_slots: config.max_slots,
            budget: config.patterns,
            variable_length: config.variable_length,
            sibling_words: config.sibling_words,
            sibling_context: config.sibling_context,
        });
        Engine {
            miner,
            meta: Namespace::new(config.meta),
            values: Namespace::new(config.values),
            schemas: Schemas::new(config.schemas, config.keys),
            doorkeeper: Doorkeeper::new(config.doorkeeper_slots),
            next_dict_id: 2,
            epoch: 0,
            tokenizer: Tokenizer::new(),
            tokens: Vec::with_capacity(64),
            deletes: Vec::new(),
            defines: Vec::new(),
            schema_defines: Vec::new(),
            stats: Stats::default(),
            last_tags: (Vec::new(), false, None),
            config,
        }
    }

    /// The patterns the last [`Engine::encode`] merged away, as (absorbed id, surviving id): the lines
    /// sent under the first now belong to the second's pattern (a word position that took a third
    /// value became a slot; see the miner's sibling merges). Empty for most records.
    pub fn merges(&self) -> &[(u64, u64)] {
        self.miner.merges()
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// State held: (patterns, dictionary entries, bytes).
    pub fn state_size(&self) -> (usize, usize, usize) {
        let (patterns, pattern_bytes) = self.miner.size();
        let (_, keys, schema_bytes) = self.schemas.size();
        (
            patterns,
            self.meta.len() + self.values.len() + keys,
            pattern_bytes
                + self.meta.bytes()
                + self.values.bytes()
                + schema_bytes
                + self.doorkeeper.bytes(),
        )
    }

    /// Encodes one record (its exact bytes, without the line terminator) and appends its datums to `out`.
    pub fn encode(&mut self, record: &[u8], meta: &Meta<'_>, out: &mut Vec<Datum>) -> Encoded {
        self.epoch += 1;
        self.stats.records += 1;
        self.deletes.clear();
        self.defines.clear();
        self.schema_defines.clear();
        let text = escape(record);
        let escaped = matches!(text, Cow::Owned(_));
        self.stats.escaped += u64::from(escaped);

        let mut pattern_define = None;
        let structural = if self.config.json && !escaped {
            self.json(&text, &mut pattern_define)
        } else {
            None
        };
        let (content, pattern, json) = match structural {
            Some(found) => found,
            None => {
                let (content, pattern) = self.content(&text, &mut pattern_define);
                (content, pattern, None)
            }
        };
        let status = meta.status.and_then(|s| self.meta_id(s));
        let service = meta.service.and_then(|s| self.meta_id(s));
        let tags = self.tags_id(meta.tags, escaped);

        self.stats.deletes += self.deletes.len() as u64;
        self.stats.dict_defines += self.defines.len() as u64;
        out.append(&mut self.deletes);
        self.stats.dict_defines += self
            .schema_defines
            .iter()
            .filter(|d| matches!(d, Datum::DictDefine(_)))
            .count() as u64;
        self.stats.json += u64::from(json.is_some());
        out.append(&mut self.schema_defines);
        if let Some(define) = pattern_define {
            self.stats.pattern_defines += 1;
            out.push(Datum::PatternDefine(define));
        }
        out.append(&mut self.defines);
        let structured = matches!(content, Content::Pattern { .. });
        self.stats.structured += u64::from(structured);
        out.push(Datum::Log(Log {
            timestamp: meta.timestamp,
            status: status.map(Value::Dict),
            service: service.map(Value::Dict),
            tags: tags.map(Value::Dict),
            content,
            json,
            uuid: None,
        }));
        Encoded {
            pattern,
            structured,
        }
    }

    fn meta_id(&mut self, text: &str) -> Option<u64> {
        self.meta.intern(
            text,
            self.epoch,
            &mut self.next_dict_id,
            &mut self.defines,
            &mut self.deletes,
        )
    }

    /// Canonical tagset: sorted byte-wise, duplicates and empty tags removed, joined with `,`.
    fn tags_id(&mut self, tags: &[&str], escaped: bool) -> Option<u64> {
        let (last, last_escaped, _) = &self.last_tags;
        let same = *last_escaped == escaped
            && last.len() == tags.len()
            && last.iter().zip(tags).all(|(a, b)| a == b);
        if !same {
            self.last_tags = (
                tags.iter().map(|t| (*t).to_owned()).collect(),
                escaped,
                canonical_tags(tags, escaped),
            );
        }
        // The id is looked up every time: the entry may have been evicted since.
        let joined = self.last_tags.2.take()?;
        let id = self.meta_id(&joined);
        self.last_tags.2 = Some(joined);
        id
    }

    /// The structural encoding of a JSON record: message content, pattern id and columns.
    fn json(
        &mut self,
        text: &str,
        define: &mut Option<PatternDefine>,
    ) -> Option<(Content, Option<u64>, Option<JsonContext>)> {
        if !text.starts_with('{') {
            return None;
        }
        let plan = json::plan(text, self.config.json_order)?;
        let schema = self.schemas.schema_for(
            &plan,
            self.epoch,
            &mut self.next_dict_id,
            &mut self.schema_defines,
            &mut self.deletes,
        )?;
        let (content, pattern) = self.content(&plan.message, define);
        let values = plan
            .columns
            .into_iter()
            .map(|(_, leaf)| match leaf {
                Leaf::Null => JsonValue::Null,
                Leaf::Bool(b) => JsonValue::Bool(b),
                Leaf::Int(i) => JsonValue::Int(i),
                Leaf::Float(f) => JsonValue::Float(f),
                Leaf::Str(s) => JsonValue::Str(s),
                Leaf::Raw(r) => JsonValue::RawJson(r),
            })
            .collect();
        Some((
            content,
            pattern,
            Some(JsonContext::Columns { schema, values }),
        ))
    }

    /// The Log content for `text`, and its pattern id.
    fn content(
        &mut self,
        text: &str,
        define: &mut Option<PatternDefine>,
    ) -> (Content, Option<u64>) {
        let raw = |text: &str| Content::Raw(text.to_owned());
        if text.len() > self.config.max_pattern_line_bytes {
            return (raw(text), None);
        }
        let mut tokens = std::mem::take(&mut self.tokens);
        self.tokenizer.tokenize(text, &mut tokens);
        let result = self.structured(text, &tokens, define);
        self.tokens = tokens;
        match result {
            Some((content, id)) => (content, Some(id)),
            None => (raw(text), None),
        }
    }

    fn structured(
        &mut self,
        text: &str,
        tokens: &[Token],
        define: &mut Option<PatternDefine>,
    ) -> Option<(Content, u64)> {
        if tokens.len() > self.config.max_tokens {
            return None;
        }
        let mined = self
            .miner
            .mine(text, tokens, self.epoch, &mut self.deletes)?;
        let define_after = if text.is_empty() {
            1
        } else {
            self.config.define_after.max(1)
        };
        let cluster = self.miner.cluster_mut(mined.slot)?;
        if !cluster.defined && cluster.matches < define_after {
            return Some((Content::Raw(text.to_owned()), mined.id));
        }
        if !cluster.defined || cluster.dirty {
            cluster.wire_holes = cluster.holes(self.config.merge_slots);
            let (template, pos_list) = cluster.template_with(&cluster.wire_holes);
            cluster.defined = true;
            cluster.dirty = false;
            *define = Some(PatternDefine {
                id: cluster.id,
                template,
                pos_list,
            });
        }
        // The holes of the version last defined (taken out while `self.value` needs `&mut self`), as
        // ranges of the line's tokens.
        let holes = std::mem::take(&mut self.miner.cluster_mut(mined.slot)?.wire_holes);
        let align = self.miner.take_alignment();
        let mut values = Vec::with_capacity(holes.len());
        let mut complete = true;
        for &(start, end) in &holes {
            // The hole's tokens in the line (the same indexes unless the pattern has spans).
            let (start, end) = if align.is_empty() {
                (start, end)
            } else {
                let first = align.get(start).map_or(0, |a| a.0 as usize);
                let last = align.get(end - 1).map_or(0, |a| a.1 as usize);
                (first, last.max(first))
            };
            let value = if end == start + 1 {
                let t = tokens[start];
                self.value(t.text(text), t.class)
            } else {
                // Several tokens, or none (an empty span): the exact bytes in between.
                let from = tokens.get(start).map_or(text.len(), |t| t.start as usize);
                let to = if end > start {
                    tokens[end - 1].end as usize
                } else {
                    from
                };
                match text.get(from..to) {
                    Some(s) => Value::Str(s.to_owned()),
                    None => {
                        complete = false;
                        break;
                    }
                }
            };
            values.push(DynValue::new(value));
        }
        self.miner.restore_alignment(align);
        if let Some(c) = self.miner.cluster_mut(mined.slot) {
            c.wire_holes = holes;
        }
        if !complete {
            return None;
        }
        Some((
            Content::Pattern {
                id: mined.id,
                values,
            },
            mined.id,
        ))
    }

    /// The typed value for one slot's text: int, float, dictionary reference or inline string.
    fn value(&mut self, text: &str, class: Class) -> Value {
        match type_value(text, class) {
            Typed::Int(i) => return Value::Int(i),
            Typed::Float(f) => return Value::Float(f),
            Typed::Text => {}
        }
        if dict_eligible(
            text,
            class,
            self.config.dict_min_len,
            self.config.dict_max_len,
        ) {
            if let Some(id) = self.values.lookup(text, self.epoch) {
                return Value::Dict(id);
            }
            let hash = stable_hash(text);
            if self.doorkeeper.see(hash) >= self.config.admit_after {
                self.doorkeeper.forget(hash);
                if let Some(id) = self.values.insert(
                    text,
                    self.epoch,
                    &mut self.next_dict_id,
                    &mut self.defines,
                    &mut self.deletes,
                ) {
                    return Value::Dict(id);
                }
            }
        }
        Value::Str(text.to_owned())
    }
}

/// Canonical tagset: sorted byte-wise, duplicates and empty tags removed, joined with `,` (`None` when
/// nothing is left).
fn canonical_tags(tags: &[&str], escaped: bool) -> Option<String> {
    let mut sorted: Vec<&str> = tags.iter().copied().filter(|t| !t.is_empty()).collect();
    if escaped {
        sorted.push(ESCAPED_TAG);
    }
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_unstable();
    sorted.dedup();
    Some(sorted.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_budget_scales_every_budget() {
        let d = EngineConfig::default();
        let total = |c: &EngineConfig| {
            c.patterns.bytes + c.meta.bytes + c.values.bytes + c.schemas.bytes + c.keys.bytes
        };
        assert_eq!(total(&d), EngineConfig::DEFAULT_STATE_BYTES);
        let same = EngineConfig::with_state_budget(EngineConfig::DEFAULT_STATE_BYTES);
        assert_eq!(same.patterns, d.patterns);
        assert_eq!(same.doorkeeper_slots, d.doorkeeper_slots);
        let quarter = EngineConfig::with_state_budget(4 << 20);
        assert_eq!(total(&quarter), 4 << 20);
        assert_eq!(quarter.patterns.count, 1024);
        assert_eq!(quarter.doorkeeper_slots, 16_384);
        let tiny = EngineConfig::with_state_budget(0);
        assert_eq!(tiny.values.count, 16);
        assert_eq!(tiny.values.bytes, 1024);
    }

    #[test]
    fn a_tag_set_is_canonical_whichever_order_and_however_often_it_changes() {
        let mut engine = Engine::new(EngineConfig::default());
        let mut datums = Vec::new();
        let mut tag_ids = Vec::new();
        let sets: [&[&str]; 4] = [
            &["env:prod", "team:core"],
            &["team:core", "env:prod", "env:prod"],
            &["env:dev"],
            &["env:prod", "team:core"],
        ];
        for tags in sets {
            datums.clear();
            let meta = Meta {
                tags,
                ..Meta::default()
            };
            engine.encode(b"GET /health 200", &meta, &mut datums);
            for d in &datums {
                match d {
                    Datum::DictDefine(e) if e.value.contains(':') => {
                        assert!(
                            e.value == "env:prod,team:core" || e.value == "env:dev",
                            "{}",
                            e.value
                        )
                    }
                    Datum::Log(log) => tag_ids.push(log.tags.clone()),
                    _ => {}
                }
            }
        }
        assert_eq!(tag_ids[0], tag_ids[1], "the same set in another order");
        assert_ne!(tag_ids[1], tag_ids[2]);
        assert_eq!(tag_ids[0], tag_ids[3], "back to the first set");
    }
}
