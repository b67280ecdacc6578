//! Property tests: arbitrary, valid canonical datum sequences survive encode → decode unchanged, for both
//! generations and all three codecs, and the rebuilt logs match an independent reference rendering.
//!
//! Proptest supplies the raw material (arbitrary strings including non-BMP and control characters, any
//! i64, finite floats, templates); a seeded builder turns it into a valid multi-batch stream: lazy defines
//! before first use, deletes, pattern updates, every value kind, JSON contexts and metadata.

use proptest::prelude::*;
use serde_json::{Map, Value as Json};
use stencil_codec::datum::*;
use stencil_codec::{float_text, BatchEncoder, Compression, Generation, Limits, StreamDecoder};

/// splitmix64: a tiny deterministic RNG for structural choices.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

#[derive(Debug, Clone)]
struct Material {
    strings: Vec<String>,
    ints: Vec<i64>,
    floats: Vec<f64>,
    templates: Vec<(String, Vec<u32>)>,
    seed: u64,
    logs: usize,
}

fn template() -> impl Strategy<Value = (String, Vec<u32>)> {
    // Template text never holds characters >= U+10000 (PROTOCOL §11.3).
    let bmp = prop::char::ranges(vec!['\0'..='\u{D7FF}', '\u{E000}'..='\u{FFFF}'].into());
    (
        prop::collection::vec(
            prop_oneof![4 => prop::char::range(' ', '~'), 1 => bmp],
            0..24,
        ),
        0usize..5,
    )
        .prop_flat_map(|(chars, holes)| {
            let len = chars.len() as u32;
            (
                Just(chars.into_iter().collect::<String>()),
                prop::collection::vec(0..=len, holes),
            )
                .prop_map(|(t, mut pos)| {
                    pos.sort_unstable();
                    (t, pos)
                })
        })
}

fn material() -> impl Strategy<Value = Material> {
    (
        prop::collection::vec(any::<String>(), 1..12),
        prop::collection::vec(any::<i64>(), 1..8),
        prop::collection::vec(
            prop::num::f64::NORMAL | prop::num::f64::SUBNORMAL | prop::num::f64::ZERO,
            1..6,
        ),
        prop::collection::vec(template(), 1..6),
        any::<u64>(),
        0usize..60,
    )
        .prop_map(|(strings, ints, floats, templates, seed, logs)| Material {
            strings,
            ints,
            floats,
            templates,
            seed,
            logs,
        })
}

const RAW_JSON: [&str; 6] = [
    "{}",
    "[1,2,{\"a\":null}]",
    "\"s\\u00e9\"",
    "null",
    "12.50",
    "16363125235853554000",
];
const KEYS: [&str; 6] = ["k0", "k1", "n.v", "n.w", "k\\.dot", "k5"];

/// Builds a valid stream of batches and the datums each batch must decode to.
struct Builder<'a> {
    m: &'a Material,
    rng: Rng,
    gen: Generation,
    dict: Vec<String>,       // dictionary value by index; id = DICT_BASE + index
    pattern_tpl: Vec<usize>, // pattern id index -> template index (updates change it)
    known: std::collections::HashSet<(u8, u64)>,
    batch: Vec<Datum>,
}

const DICT_BASE: u64 = 2;
const PATTERN_BASE: u64 = 1;

impl<'a> Builder<'a> {
    fn new(m: &'a Material, gen: Generation) -> Self {
        let mut dict: Vec<String> = m.strings.clone();
        dict.extend(KEYS.iter().map(|k| k.to_string()));
        dict.push("msg".into());
        dict.push("a,b,c".into());
        Builder {
            m,
            rng: Rng(m.seed),
            gen,
            dict,
            pattern_tpl: (0..m.templates.len()).collect(),
            known: Default::default(),
            batch: Vec::new(),
        }
    }

    fn dict_id(&mut self, index: usize) -> u64 {
        let id = DICT_BASE + index as u64;
        if self.known.insert((0, id)) {
            self.batch.push(Datum::DictDefine(DictDefine {
                id,
                value: self.dict[index].clone(),
            }));
        }
        id
    }

    fn key_id(&mut self, key: &str) -> u64 {
        let index = self
            .dict
            .iter()
            .position(|v| v == key)
            .expect("key in dictionary");
        self.dict_id(index)
    }

    fn pattern_id(&mut self, index: usize) -> u64 {
        let id = PATTERN_BASE + index as u64;
        if self.known.insert((1, id)) {
            let (template, pos_list) = self.m.templates[self.pattern_tpl[index]].clone();
            self.batch.push(Datum::PatternDefine(PatternDefine {
                id,
                template,
                pos_list,
            }));
        }
        id
    }

    fn string(&mut self) -> String {
        self.rng.pick(&self.m.strings).clone()
    }

    fn value(&mut self) -> Value {
        let v3 = self.gen == Generation::V3;
        match self.rng.below(if v3 { 6 } else { 4 }) {
            0 => Value::Int(*self.rng.pick(&self.m.ints)),
            1 => Value::Float(*self.rng.pick(&self.m.floats)),
            2 => Value::Str(self.string()),
            3 => {
                let i = self.rng.below(self.m.strings.len());
                Value::Dict(self.dict_id(i))
            }
            4 => Value::Bool(self.rng.chance(50)),
            _ => Value::RawJson(self.rng.pick(&RAW_JSON).to_string()),
        }
    }

    fn meta(&mut self) -> Option<Value> {
        if self.rng.chance(25) {
            return None;
        }
        if self.gen == Generation::V2 && self.rng.chance(30) {
            let s = self.string();
            return (!s.is_empty()).then_some(Value::Str(s));
        }
        // Few distinct values so that the "same as previous" sentinel is exercised often.
        let i = self.rng.below(self.m.strings.len().min(3));
        Some(Value::Dict(self.dict_id(i)))
    }

    fn timestamp(&mut self, prev: i64) -> i64 {
        match self.rng.below(8) {
            0 => *self.rng.pick(&self.m.ints),
            1 => [
                999_999_999_999,
                1_000_000_000_000,
                -1_000_000_000_000,
                0,
                i64::MIN,
                i64::MAX,
            ][self.rng.below(6)],
            _ => prev.saturating_add((self.rng.below(2001) as i64) - 500),
        }
    }

    fn json_columns(&mut self) -> (Vec<Datum>, JsonContext) {
        let mut defines = Vec::new();
        let n = self.rng.below(KEYS.len() + 1);
        let mut keys = Vec::new();
        let mut kinds = Vec::new();
        let mut values = Vec::new();
        let mut used = Vec::new();
        for _ in 0..n {
            let k = *self.rng.pick(&KEYS);
            // "n.v" and "n.w" share the parent object "n", which is fine; never repeat a key.
            if used.contains(&k) {
                continue;
            }
            used.push(k);
            keys.push(self.key_id(k));
            let v = match self.rng.below(7) {
                0 => JsonValue::Null,
                1 => JsonValue::Bool(self.rng.chance(50)),
                2 => JsonValue::Int(*self.rng.pick(&self.m.ints)),
                3 => JsonValue::Float(*self.rng.pick(&self.m.floats)),
                4 => {
                    let i = self.rng.below(self.m.strings.len());
                    JsonValue::Dict(self.dict_id(i))
                }
                5 => JsonValue::Str(self.string()),
                _ => JsonValue::RawJson(self.rng.pick(&RAW_JSON).to_string()),
            };
            kinds.push(v.kind());
            values.push(v);
        }
        let message_key = self.key_id("msg");
        // One schema id per distinct shape would be realistic; a fresh id per log exercises defines.
        let schema = 2 + self.rng.below(4) as u64;
        // The message's place (`json-order`): absent (last), or after any number of the columns.
        let message_at = if self.rng.chance(50) {
            None
        } else {
            Some(self.rng.below(keys.len() + 1) as u32)
        };
        let define = SchemaDefine {
            id: schema,
            keys,
            message_key,
            kinds,
            message_at,
        };
        defines.push(Datum::SchemaDefine(define));
        (defines, JsonContext::Columns { schema, values })
    }

    fn log(&mut self, prev_ts: i64) -> Log {
        let timestamp = self.timestamp(prev_ts);
        let status = self.meta();
        let service = if self.gen == Generation::V3 {
            self.meta()
        } else {
            None
        };
        let tags = self.meta();
        let raw = self.rng.chance(25);
        let content = if raw {
            let s = self.string();
            if s.is_empty() && self.gen == Generation::V3 {
                Content::Raw("x".into())
            } else {
                Content::Raw(s)
            }
        } else {
            let index = self.rng.below(self.m.templates.len());
            if self.rng.chance(10) && self.known.contains(&(1, PATTERN_BASE + index as u64)) {
                // Update the pattern: redefine the id with another template.
                let t = self.rng.below(self.m.templates.len());
                self.pattern_tpl[index] = t;
                let (template, pos_list) = self.m.templates[t].clone();
                self.batch.push(Datum::PatternDefine(PatternDefine {
                    id: PATTERN_BASE + index as u64,
                    template,
                    pos_list,
                }));
            }
            let id = self.pattern_id(index);
            let holes = self.m.templates[self.pattern_tpl[index]].1.len();
            let values = (0..holes)
                .map(|_| {
                    let value = self.value();
                    let render_as_string = self.gen == Generation::V3
                        && matches!(value, Value::Int(_) | Value::Float(_) | Value::Bool(_))
                        && self.rng.chance(30);
                    DynValue {
                        value,
                        render_as_string,
                    }
                })
                .collect();
            Content::Pattern { id, values }
        };
        let json = if raw && self.gen == Generation::V2 || !self.rng.chance(30) {
            None
        } else if self.gen == Generation::V3 {
            let (defines, ctx) = self.json_columns();
            for d in defines {
                // Redefining a schema with the same id is an update; the decoder must follow it.
                if let Datum::SchemaDefine(s) = &d {
                    self.known.insert((2, s.id));
                }
                self.batch.push(d);
            }
            Some(ctx)
        } else {
            let key_list = self.key_id("a,b,c");
            let message_key = if self.rng.chance(50) {
                Some(Value::Str("msg".into()))
            } else {
                None
            };
            let values = (0..3).map(|_| self.value()).collect();
            Some(JsonContext::KeyList {
                key_list,
                message_key,
                values,
            })
        };
        let uuid = self.rng.chance(10).then(|| self.string());
        Log {
            timestamp,
            status,
            service,
            tags,
            content,
            json,
            uuid,
        }
    }

    fn maybe_delete(&mut self) {
        if !self.rng.chance(5) || self.known.is_empty() {
            return;
        }
        let mut known: Vec<_> = self.known.iter().copied().collect();
        known.sort_unstable();
        let (space, id) = *self.rng.pick(&known);
        self.known.remove(&(space, id));
        self.batch.push(match space {
            0 => Datum::DictDelete { id },
            1 => Datum::PatternDelete { id },
            _ => Datum::SchemaDelete { id },
        });
    }

    /// Batches of datums: batch 0 (a snapshot of a few defines), then data batches.
    fn build(mut self) -> Vec<Vec<Datum>> {
        let mut batches = Vec::new();
        for i in 0..self.rng.below(3) {
            self.pattern_id(i % self.m.templates.len());
        }
        batches.push(std::mem::take(&mut self.batch));
        let mut ts = 1_700_000_000_000;
        let mut left = self.m.logs;
        while left > 0 {
            let n = 1 + self.rng.below(left.min(12));
            for _ in 0..n {
                self.maybe_delete();
                let log = self.log(ts);
                ts = log.timestamp;
                self.batch.push(Datum::Log(log));
            }
            left -= n;
            batches.push(std::mem::take(&mut self.batch));
        }
        batches
    }
}

/// Independent reference rendering of a log's message text.
fn reference_text(
    log: &Log,
    patterns: &std::collections::HashMap<u64, PatternDefine>,
    dict: &std::collections::HashMap<u64, String>,
) -> String {
    let render = |v: &Value| match v {
        Value::Int(i) => i.to_string(),
        Value::Float(f) => float_text(*f).expect("finite"),
        Value::Str(s) | Value::RawJson(s) => s.clone(),
        Value::Dict(id) => dict[id].clone(),
        Value::Bool(b) => b.to_string(),
    };
    match &log.content {
        Content::Raw(s) => s.clone(),
        Content::Pattern { id, values } => {
            let p = &patterns[id];
            let chars: Vec<char> = p.template.chars().collect();
            let mut out = String::new();
            let mut cursor = 0usize;
            for (v, &pos) in values.iter().zip(&p.pos_list) {
                out.extend(&chars[cursor..pos as usize]);
                out.push_str(&render(&v.value));
                cursor = pos as usize;
            }
            out.extend(&chars[cursor..]);
            out
        }
    }
}

fn reference_json(
    log: &Log,
    text: &str,
    schemas: &std::collections::HashMap<u64, SchemaDefine>,
    dict: &std::collections::HashMap<u64, String>,
) -> Option<Json> {
    let JsonContext::Columns { schema, values } = log.json.as_ref()? else {
        return None;
    };
    let s = &schemas[schema];
    let mut root = Map::new();
    let message_at = s.message_at.map_or(s.keys.len(), |at| at as usize);
    for (i, (key, v)) in s.keys.iter().zip(values).enumerate() {
        if i == message_at {
            root.insert(dict[&s.message_key].clone(), Json::String(text.into()));
        }
        let json = match v {
            JsonValue::Null => Json::Null,
            JsonValue::Bool(b) => Json::Bool(*b),
            JsonValue::Int(i) => Json::from(*i),
            JsonValue::Float(f) => {
                serde_json::from_str(&float_text(*f).expect("finite")).expect("number")
            }
            JsonValue::Dict(id) => Json::String(dict[id].clone()),
            JsonValue::Str(s) => Json::String(s.clone()),
            JsonValue::RawJson(s) => serde_json::from_str(s).expect("valid raw JSON"),
        };
        match dict[key].as_str() {
            "n.v" | "n.w" => {
                let (_, leaf) = dict[key].split_once('.').expect("nested");
                let n = root.entry("n").or_insert_with(|| Json::Object(Map::new()));
                n.as_object_mut().expect("object").insert(leaf.into(), json);
            }
            "k\\.dot" => {
                root.insert("k.dot".into(), json);
            }
            k => {
                root.insert(k.into(), json);
            }
        }
    }
    if message_at >= s.keys.len() {
        root.insert(dict[&s.message_key].clone(), Json::String(text.into()));
    }
    Some(Json::Object(root))
}

fn check(m: &Material, gen: Generation, compression: Compression) -> Result<(), TestCaseError> {
    let batches = Builder::new(m, gen).build();
    let encoder = BatchEncoder::new(gen, compression);
    let mut decoder = StreamDecoder::new(gen, compression, Limits::default()).keep_datums(true);
    let (mut patterns, mut dict, mut schemas) =
        (Default::default(), Default::default(), Default::default());
    let patterns: &mut std::collections::HashMap<u64, PatternDefine> = &mut patterns;
    let dict: &mut std::collections::HashMap<u64, String> = &mut dict;
    let schemas: &mut std::collections::HashMap<u64, SchemaDefine> = &mut schemas;
    for (id, datums) in batches.iter().enumerate() {
        let payload = encoder
            .encode(datums)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        if gen == Generation::V3 && compression == Compression::Identity {
            // The v3 writer emits prost's canonical encoding: prost reads it and writes the same bytes.
            use prost::Message;
            let parsed = stencil_proto::v3::LogDatumSequence::decode(payload.data.as_slice())
                .map_err(|e| {
                    TestCaseError::fail(format!("batch {id}: prost cannot read it: {e}"))
                })?;
            prop_assert_eq!(parsed.encode_to_vec(), payload.data.clone(), "batch {}", id);
        }
        let decoded = decoder
            .decode(id as u32, &payload.data)
            .map_err(|e| TestCaseError::fail(format!("{gen:?}/{compression:?} batch {id}: {e}")))?;
        prop_assert_eq!(&decoded.datums, datums);
        let mut logs = decoded.logs.iter();
        for d in datums {
            match d {
                Datum::PatternDefine(p) => {
                    patterns.insert(p.id, p.clone());
                }
                Datum::DictDefine(e) => {
                    dict.insert(e.id, e.value.clone());
                }
                Datum::SchemaDefine(s) => {
                    schemas.insert(s.id, s.clone());
                }
                Datum::Log(log) => {
                    let got = logs.next().expect("one record per log");
                    let text = reference_text(log, patterns, dict);
                    prop_assert_eq!(&got.message, &text);
                    prop_assert_eq!(got.timestamp, log.timestamp);
                    prop_assert_eq!(&got.uuid, &log.uuid);
                    if let Some(Value::Dict(id)) = &log.status {
                        prop_assert_eq!(got.status.as_deref(), Some(dict[id].as_str()));
                    }
                    if let Some(expected) = reference_json(log, &text, schemas, dict) {
                        // Serialized, so that the members' order counts too (map equality ignores it).
                        prop_assert_eq!(
                            serde_json::to_string(&Json::Object(
                                got.json.clone().expect("JSON log")
                            ))
                            .expect("serializes"),
                            serde_json::to_string(&expected).expect("serializes")
                        );
                    }
                }
                _ => {}
            }
        }
        prop_assert!(logs.next().is_none());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn v3_round_trip_identity(m in material()) { check(&m, Generation::V3, Compression::Identity)?; }
    #[test]
    fn v3_round_trip_zstd(m in material()) { check(&m, Generation::V3, Compression::ZSTD)?; }
    #[test]
    fn v3_round_trip_gzip(m in material()) { check(&m, Generation::V3, Compression::GZIP)?; }
    #[test]
    fn v2_round_trip_identity(m in material()) { check(&m, Generation::V2, Compression::Identity)?; }
    #[test]
    fn v2_round_trip_zstd(m in material()) { check(&m, Generation::V2, Compression::ZSTD)?; }
    #[test]
    fn v2_round_trip_gzip(m in material()) { check(&m, Generation::V2, Compression::GZIP)?; }
}

/// The encoder is a pure function: the same datums give the same bytes.
#[test]
fn encoding_is_deterministic() {
    let m = Material {
        strings: vec!["a".into(), "b".into()],
        ints: vec![1],
        floats: vec![0.5],
        templates: vec![("x  y".into(), vec![2, 2])],
        seed: 7,
        logs: 40,
    };
    for gen in [Generation::V2, Generation::V3] {
        let batches = Builder::new(&m, gen).build();
        let enc = BatchEncoder::new(gen, Compression::ZSTD);
        for b in &batches {
            assert_eq!(
                enc.encode(b).expect("encode"),
                enc.encode(b).expect("encode")
            );
        }
    }
}
