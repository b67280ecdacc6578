//! Per-stream state tables: the dictionary, patterns and JSON schemas (PROTOCOL.md §9).
//!
//! Every stream starts with empty tables and owns them alone. Defines insert or overwrite, deletes remove
//! (unknown ids are ignored). Each define is validated when it is applied, so a reference that resolves is
//! always usable. The tables count their entries and bytes against [`Limits`], so that one stream cannot
//! grow an intake's memory without bound.

use foldhash::{HashMap, HashMapExt};
use std::sync::Arc;

use crate::datum::{Datum, DictDefine, JsonKind, PatternDefine, SchemaDefine};
use crate::error::{ErrorKind, Space};
use crate::Generation;

/// Decoder limits (PROTOCOL.md §15). The defaults are the Stencil intake's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Maximum decompressed `data` per batch, in bytes (default 64 MiB).
    pub max_decompressed_bytes: usize,
    /// Maximum reconstructed output per batch: message, JSON and metadata bytes (default 128 MiB).
    pub max_output_bytes: usize,
    /// Maximum dictionary entries per stream (default 1,000,000).
    pub max_dict_entries: usize,
    /// Maximum patterns per stream (default 100,000).
    pub max_patterns: usize,
    /// Maximum JSON schemas per stream (default 100,000).
    pub max_schemas: usize,
    /// Maximum state bytes per stream, the sum of define payload sizes (default 64 MiB).
    pub max_state_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_decompressed_bytes: 64 << 20,
            max_output_bytes: 128 << 20,
            max_dict_entries: 1_000_000,
            max_patterns: 100_000,
            max_schemas: 100_000,
            max_state_bytes: 64 << 20,
        }
    }
}

/// A validated pattern, with the byte offset of every hole precomputed.
#[derive(Debug, Clone)]
pub(crate) struct Pattern {
    pub(crate) template: String,
    pub(crate) byte_pos: Vec<usize>,
    /// The template with each hole shown as `<*>`, and its stable hash, for records that report it.
    pub(crate) shown: crate::reconstruct::PatternRef,
    cost: usize,
}

/// A validated JSON schema.
#[derive(Debug, Clone)]
pub(crate) struct Schema {
    pub(crate) keys: Vec<u64>,
    pub(crate) message_key: u64,
    pub(crate) kinds: Vec<JsonKind>,
    /// Columns set before the message (`None`: all of them).
    pub(crate) message_at: Option<u32>,
}

impl Schema {
    fn cost(&self) -> usize {
        8 + 8 * self.keys.len() + 8 + self.kinds.len()
    }
}

/// The state of one stream. Build one per stream with [`StreamState::new`].
#[derive(Debug, Clone)]
pub struct StreamState {
    generation: Generation,
    limits: Limits,
    dict: HashMap<u64, Arc<str>>,
    patterns: HashMap<u64, Pattern>,
    schemas: HashMap<u64, Schema>,
    bytes: usize,
}

impl StreamState {
    /// Empty tables for a stream of `generation`.
    pub fn new(generation: Generation, limits: Limits) -> Self {
        StreamState {
            generation,
            limits,
            dict: HashMap::new(),
            patterns: HashMap::new(),
            schemas: HashMap::new(),
            bytes: 0,
        }
    }

    /// The stream's generation.
    pub fn generation(&self) -> Generation {
        self.generation
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Entries held: (dictionary, patterns, schemas).
    pub fn entries(&self) -> (usize, usize, usize) {
        (self.dict.len(), self.patterns.len(), self.schemas.len())
    }

    /// Bytes held, the sum of define payload sizes (the quantity limited by `max_state_bytes`).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The value of a dictionary id.
    pub fn dict_value(&self, id: u64) -> Result<&Arc<str>, ErrorKind> {
        self.dict.get(&id).ok_or(ErrorKind::UnknownId {
            space: Space::Dictionary,
            id,
        })
    }

    /// The hole count of a defined pattern.
    pub fn pattern_holes(&self, id: u64) -> Option<usize> {
        self.patterns.get(&id).map(|p| p.byte_pos.len())
    }

    pub(crate) fn pattern(&self, id: u64) -> Result<&Pattern, ErrorKind> {
        self.patterns.get(&id).ok_or(ErrorKind::UnknownId {
            space: Space::Pattern,
            id,
        })
    }

    /// True when JSON schema `id` places its message among its columns (`json-order`).
    pub fn places_message(&self, id: u64) -> Result<bool, ErrorKind> {
        Ok(self.schema(id)?.message_at.is_some())
    }

    pub(crate) fn schema(&self, id: u64) -> Result<&Schema, ErrorKind> {
        self.schemas.get(&id).ok_or(ErrorKind::UnknownId {
            space: Space::Schema,
            id,
        })
    }

    fn charge(&mut self, add: usize, remove: usize) -> Result<(), ErrorKind> {
        let bytes = (self.bytes + add).saturating_sub(remove);
        if bytes > self.limits.max_state_bytes {
            return Err(ErrorKind::StateLimit {
                what: "state bytes",
                limit: self.limits.max_state_bytes,
            });
        }
        self.bytes = bytes;
        Ok(())
    }

    fn check_count(
        len: usize,
        replacing: bool,
        max: usize,
        what: &'static str,
    ) -> Result<(), ErrorKind> {
        if !replacing && len >= max {
            return Err(ErrorKind::StateLimit { what, limit: max });
        }
        Ok(())
    }

    /// Defines or redefines a dictionary entry.
    pub fn define_dict(&mut self, d: &DictDefine) -> Result<(), ErrorKind> {
        if self.generation == Generation::V3 && d.id < 2 {
            return Err(ErrorKind::ReservedId {
                space: Space::Dictionary,
                id: d.id,
            });
        }
        let old = self.dict.get(&d.id).map(|v| v.len() + 8);
        Self::check_count(
            self.dict.len(),
            old.is_some(),
            self.limits.max_dict_entries,
            "dictionary entries",
        )?;
        self.charge(d.value.len() + 8, old.unwrap_or(0))?;
        self.dict.insert(d.id, Arc::from(d.value.as_str()));
        Ok(())
    }

    /// Defines or redefines a pattern, validating its `pos_list`.
    pub fn define_pattern(&mut self, p: &PatternDefine) -> Result<(), ErrorKind> {
        if p.id == 0 {
            return Err(ErrorKind::ReservedId {
                space: Space::Pattern,
                id: 0,
            });
        }
        let byte_pos = hole_byte_offsets(p)?;
        let shown = crate::reconstruct::PatternRef::of(&p.template, &byte_pos);
        let cost = 8 + p.template.len() + 4 * p.pos_list.len() + shown.text.len();
        let old = self.patterns.get(&p.id).map(|x| x.cost);
        Self::check_count(
            self.patterns.len(),
            old.is_some(),
            self.limits.max_patterns,
            "patterns",
        )?;
        self.charge(cost, old.unwrap_or(0))?;
        self.patterns.insert(
            p.id,
            Pattern {
                template: p.template.clone(),
                byte_pos,
                shown,
                cost,
            },
        );
        Ok(())
    }

    /// Defines or redefines a JSON schema. Its keys and message key must be defined dictionary ids.
    pub fn define_schema(&mut self, s: &SchemaDefine) -> Result<(), ErrorKind> {
        if s.id < 2 {
            return Err(ErrorKind::ReservedId {
                space: Space::Schema,
                id: s.id,
            });
        }
        if s.kinds.len() != s.keys.len() {
            return Err(ErrorKind::KindsLengthMismatch {
                schema_id: s.id,
                kinds: s.kinds.len(),
                keys: s.keys.len(),
            });
        }
        if let Some(at) = s.message_at.filter(|&at| at as usize > s.keys.len()) {
            return Err(ErrorKind::MessageIndexOutOfRange {
                schema_id: s.id,
                index: u64::from(at),
                keys: s.keys.len(),
            });
        }
        for &key in s.keys.iter().chain(std::iter::once(&s.message_key)) {
            self.dict_value(key)?;
        }
        let schema = Schema {
            keys: s.keys.clone(),
            message_key: s.message_key,
            kinds: s.kinds.clone(),
            message_at: s.message_at,
        };
        let old = self.schemas.get(&s.id).map(Schema::cost);
        Self::check_count(
            self.schemas.len(),
            old.is_some(),
            self.limits.max_schemas,
            "JSON schemas",
        )?;
        self.charge(schema.cost(), old.unwrap_or(0))?;
        self.schemas.insert(s.id, schema);
        Ok(())
    }

    /// Deletes a dictionary entry; unknown ids are ignored.
    pub fn delete_dict(&mut self, id: u64) {
        if let Some(v) = self.dict.remove(&id) {
            self.bytes = self.bytes.saturating_sub(v.len() + 8);
        }
    }

    /// Deletes a pattern; unknown ids are ignored.
    pub fn delete_pattern(&mut self, id: u64) {
        if let Some(p) = self.patterns.remove(&id) {
            self.bytes = self.bytes.saturating_sub(p.cost);
        }
    }

    /// Deletes a JSON schema; unknown ids are ignored.
    pub fn delete_schema(&mut self, id: u64) {
        if let Some(s) = self.schemas.remove(&id) {
            self.bytes = self.bytes.saturating_sub(s.cost());
        }
    }

    /// Applies a define or a delete of any space. A log changes nothing: `Ok(false)`, so that the
    /// caller handles it.
    pub fn apply_definition(&mut self, datum: &Datum) -> Result<bool, ErrorKind> {
        match datum {
            Datum::PatternDefine(p) => self.define_pattern(p)?,
            Datum::PatternDelete { id } => self.delete_pattern(*id),
            Datum::DictDefine(d) => self.define_dict(d)?,
            Datum::DictDelete { id } => self.delete_dict(*id),
            Datum::SchemaDefine(s) => self.define_schema(s)?,
            Datum::SchemaDelete { id } => self.delete_schema(*id),
            Datum::Log(_) => return Ok(false),
        }
        Ok(true)
    }
}

/// Validates `pos_list` (non-decreasing, within the template) and converts it to byte offsets.
fn hole_byte_offsets(p: &PatternDefine) -> Result<Vec<usize>, ErrorKind> {
    let mut out = Vec::with_capacity(p.pos_list.len());
    let mut chars = p.template.char_indices();
    let mut cp = 0u32; // code points consumed so far
    let mut byte = 0usize; // byte offset of code point `cp`
    for (index, &pos) in p.pos_list.iter().enumerate() {
        if pos < cp {
            return Err(ErrorKind::PosListDecreasing {
                pattern_id: p.id,
                index,
            });
        }
        while cp < pos {
            match chars.next() {
                Some((_, c)) => {
                    byte += c.len_utf8();
                    cp += 1;
                }
                None => {
                    return Err(ErrorKind::PosListOutOfRange {
                        pattern_id: p.id,
                        pos,
                        len: p.template.chars().count(),
                    })
                }
            }
        }
        out.push(byte);
    }
    Ok(out)
}
