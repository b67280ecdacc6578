//! A prototype of the negotiated native batch layout proposed in `docs/native-encoding.md`, used by
//! `stencil bench wire` only to estimate what the Datadog-compatible v3 layout leaves on the table. Nothing
//! here is sent on a stream.
//!
//! It takes the very datums the engine produced for a batch (same patterns, same dictionary, same typing) and
//! lays them out by column instead of by row:
//! - one byte per datum says what it is; defines and deletes go, in order, into their own section;
//! - timestamps are zigzag deltas; status, service and tags are "same as the previous log" codes;
//! - the values of one (pattern, hole) pair form a column. Ints and dictionary ids are deltas within the
//!   column. A string is split into its *shape* (the text with each digit run replaced by its width) and the
//!   numbers of its digit runs; a column keeps a table of its shapes, and each digit run is a delta against
//!   the same run of the previous value of that shape. Dates, IPs, block ids and counters become small
//!   deltas, which zstd cannot derive from text.
//!
//! The decoder exists to prove, in the unit tests, that the layout is lossless; the measured size is only
//! credible because of it.

use std::collections::HashMap;

use stencil_codec::datum::{Content, Datum, DynValue, Value};
#[cfg(test)]
use stencil_codec::datum::{DictDefine, Log, PatternDefine};

/// The engine settings of the native profile: a pattern is defined on its first line (a raw first line
/// costs more than a define here, since the define is sent once per stream and values are columns), and
/// the value dictionary is off (per-column shape tables and deltas do its job).
pub fn engine_config() -> stencil_patterns::EngineConfig {
    stencil_patterns::EngineConfig {
        define_after: 1,
        admit_after: u8::MAX,
        merge_slots: false,
        ..stencil_patterns::EngineConfig::default()
    }
}

/// Longest digit run carried as a number (10^18 < 2^63); longer runs are cut into runs of this width.
const MAX_RUN: usize = 18;

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_signed(out: &mut Vec<u8>, v: i64) {
    put_varint(out, ((v << 1) ^ (v >> 63)) as u64);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Splits `s` into its shape and the numbers of its digit runs. In the shape a digit run is `0x00, width`
/// and a literal NUL is `0x00, 0x00`.
fn shape_of(s: &str, numbers: &mut Vec<i64>) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut shape = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b.is_ascii_digit() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() && i - start < MAX_RUN {
                i += 1;
            }
            let run = &bytes[start..i];
            let n = run
                .iter()
                .fold(0i64, |acc, d| acc * 10 + i64::from(d - b'0'));
            numbers.push(n);
            shape.push(0);
            shape.push(run.len() as u8);
        } else {
            if b == 0 {
                shape.push(0);
            }
            shape.push(b);
            i += 1;
        }
    }
    shape
}

/// Most shapes a column remembers; later new shapes are sent in full each time.
const MAX_SHAPES: usize = 1024;

/// What one (pattern, hole) column remembers across batches: the base of each delta and its shapes.
#[derive(Default, Clone)]
struct ColumnState {
    last_int: i64,
    last_dict: i64,
    last_shape: Option<usize>,
    shapes: HashMap<Vec<u8>, usize>,
    last_numbers: Vec<Vec<i64>>,
}

/// One column's sub-streams in the batch being written.
#[derive(Default)]
struct Column {
    kinds: Vec<u8>,
    shape_refs: Vec<u8>,
    shape_defs: Vec<u8>,
    numbers: Vec<u8>,
    ints: Vec<u8>,
    dicts: Vec<u8>,
    other: Vec<u8>,
}

const KIND_INT: u8 = 0;
const KIND_FLOAT: u8 = 1;
const KIND_STR: u8 = 2;
const KIND_DICT: u8 = 3;
const KIND_FALSE: u8 = 4;
const KIND_TRUE: u8 = 5;
const KIND_RAW_JSON: u8 = 6;
const AS_STRING: u8 = 0x80;

impl Column {
    fn push(&mut self, st: &mut ColumnState, v: &DynValue, scratch: &mut Vec<i64>) {
        let flag = if v.render_as_string { AS_STRING } else { 0 };
        let kind = match &v.value {
            Value::Int(i) => {
                put_signed(&mut self.ints, i.wrapping_sub(st.last_int));
                st.last_int = *i;
                KIND_INT
            }
            Value::Float(f) => {
                self.other.extend_from_slice(&f.to_le_bytes());
                KIND_FLOAT
            }
            Value::Dict(id) => {
                put_signed(&mut self.dicts, (*id as i64).wrapping_sub(st.last_dict));
                st.last_dict = *id as i64;
                KIND_DICT
            }
            Value::Bool(false) => KIND_FALSE,
            Value::Bool(true) => KIND_TRUE,
            Value::RawJson(s) => {
                put_bytes(&mut self.other, s.as_bytes());
                KIND_RAW_JSON
            }
            Value::Str(s) => {
                scratch.clear();
                let shape = shape_of(s, scratch);
                let index = match st.shapes.get(&shape) {
                    Some(&k) if st.last_shape == Some(k) => {
                        put_varint(&mut self.shape_refs, 1);
                        Some(k)
                    }
                    Some(&k) => {
                        put_varint(&mut self.shape_refs, k as u64 + 2);
                        Some(k)
                    }
                    None => {
                        put_varint(&mut self.shape_refs, 0);
                        put_bytes(&mut self.shape_defs, &shape);
                        if st.last_numbers.len() < MAX_SHAPES {
                            let k = st.last_numbers.len();
                            st.shapes.insert(shape, k);
                            st.last_numbers.push(vec![0; scratch.len()]);
                            Some(k)
                        } else {
                            None
                        }
                    }
                };
                st.last_shape = index;
                match index {
                    Some(k) => {
                        for (prev, n) in st.last_numbers[k].iter_mut().zip(scratch.iter()) {
                            put_signed(&mut self.numbers, n - *prev);
                            *prev = *n;
                        }
                    }
                    None => {
                        for n in scratch.iter() {
                            put_signed(&mut self.numbers, *n);
                        }
                    }
                }
                KIND_STR
            }
        };
        self.kinds.push(kind | flag);
    }

    fn streams(&self) -> [&[u8]; 7] {
        [
            &self.kinds,
            &self.shape_refs,
            &self.shape_defs,
            &self.numbers,
            &self.ints,
            &self.dicts,
            &self.other,
        ]
    }
}

const D_RAW: u8 = 0;
const D_PATTERN: u8 = 1;
const D_PATTERN_DEFINE: u8 = 2;
const D_PATTERN_DELETE: u8 = 3;
const D_DICT_DEFINE: u8 = 4;
const D_DICT_DELETE: u8 = 5;

/// Metadata code: 0 = same as the previous log, 1 = none, `id + 2` = that dictionary id.
fn meta_code(out: &mut Vec<u8>, value: &Option<Value>, prev: &mut Option<u64>) {
    let id = match value {
        Some(Value::Dict(id)) => Some(*id),
        _ => None,
    };
    if id == *prev {
        put_varint(out, 0);
    } else {
        put_varint(out, id.map_or(1, |i| i + 2));
    }
    *prev = id;
}

fn meta_in_scope(value: &Option<Value>) -> bool {
    matches!(value, None | Some(Value::Dict(_)))
}

/// True when every datum of the batch is something the prototype lays out: no JSON schemas or contexts, no
/// uuids, metadata as dictionary ids, and one value per hole of a known pattern.
fn in_scope(datums: &[Datum], holes: &HashMap<u64, usize>) -> bool {
    let mut holes = holes.clone();
    datums.iter().all(|d| match d {
        Datum::PatternDefine(p) => {
            holes.insert(p.id, p.pos_list.len());
            true
        }
        Datum::SchemaDefine(_) | Datum::SchemaDelete { .. } => false,
        Datum::Log(log) => {
            log.json.is_none()
                && log.uuid.is_none()
                && meta_in_scope(&log.status)
                && meta_in_scope(&log.service)
                && meta_in_scope(&log.tags)
                && match &log.content {
                    Content::Raw(_) => true,
                    Content::Pattern { id, values } => holes.get(id) == Some(&values.len()),
                }
        }
        _ => true,
    })
}

/// The prototype's stream state on the sending side: like the v3 stream state, it lives as long as the
/// stream, so deltas, shapes and metadata carry over from one batch to the next.
#[derive(Default)]
pub struct NativeEncoder {
    holes: HashMap<u64, usize>,
    columns: HashMap<(u64, usize), ColumnState>,
    last_ts: i64,
    prev_meta: [Option<u64>; 3],
}

impl NativeEncoder {
    /// Lays out one batch. `None` (and no state change) when a datum is outside the prototype's scope (see
    /// [`in_scope`]): the benchmark then counts that batch in v3.
    pub fn encode(&mut self, datums: &[Datum]) -> Option<Vec<u8>> {
        if !in_scope(datums, &self.holes) {
            return None;
        }
        let (mut kinds, mut defs, mut ts, mut meta, mut pids, mut raw) = (
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
        );
        let mut columns: Vec<Column> = Vec::new();
        let mut index: HashMap<(u64, usize), usize> = HashMap::new();
        let mut scratch = Vec::new();
        for d in datums {
            match d {
                Datum::PatternDefine(p) => {
                    kinds.push(D_PATTERN_DEFINE);
                    put_varint(&mut defs, p.id);
                    put_bytes(&mut defs, p.template.as_bytes());
                    put_varint(&mut defs, p.pos_list.len() as u64);
                    let mut prev = 0u32;
                    for &pos in &p.pos_list {
                        put_varint(&mut defs, u64::from(pos.wrapping_sub(prev)));
                        prev = pos;
                    }
                    self.holes.insert(p.id, p.pos_list.len());
                }
                Datum::PatternDelete { id } => {
                    kinds.push(D_PATTERN_DELETE);
                    put_varint(&mut defs, *id);
                    self.holes.remove(id);
                    self.columns.retain(|(pid, _), _| pid != id);
                }
                Datum::DictDefine(e) => {
                    kinds.push(D_DICT_DEFINE);
                    put_varint(&mut defs, e.id);
                    put_bytes(&mut defs, e.value.as_bytes());
                }
                Datum::DictDelete { id } => {
                    kinds.push(D_DICT_DELETE);
                    put_varint(&mut defs, *id);
                }
                Datum::SchemaDefine(_) | Datum::SchemaDelete { .. } => return None,
                Datum::Log(log) => {
                    put_signed(&mut ts, log.timestamp.wrapping_sub(self.last_ts));
                    self.last_ts = log.timestamp;
                    meta_code(&mut meta, &log.status, &mut self.prev_meta[0]);
                    meta_code(&mut meta, &log.service, &mut self.prev_meta[1]);
                    meta_code(&mut meta, &log.tags, &mut self.prev_meta[2]);
                    match &log.content {
                        Content::Raw(text) => {
                            kinds.push(D_RAW);
                            put_bytes(&mut raw, text.as_bytes());
                        }
                        Content::Pattern { id, values } => {
                            kinds.push(D_PATTERN);
                            put_varint(&mut pids, *id);
                            for (hole, v) in values.iter().enumerate() {
                                let next = columns.len();
                                let c = *index.entry((*id, hole)).or_insert(next);
                                if c == next {
                                    columns.push(Column::default());
                                }
                                let st = self.columns.entry((*id, hole)).or_default();
                                columns[c].push(st, v, &mut scratch);
                            }
                        }
                    }
                }
            }
        }
        let sections = [&kinds, &defs, &ts, &meta, &pids, &raw];
        let mut out = Vec::new();
        put_varint(&mut out, columns.len() as u64);
        for section in sections {
            put_varint(&mut out, section.len() as u64);
        }
        for c in &columns {
            // A presence mask, then the length of each non-empty sub-stream.
            let streams = c.streams();
            let mask =
                streams
                    .iter()
                    .enumerate()
                    .fold(0u8, |m, (i, st)| if st.is_empty() { m } else { m | 1 << i });
            out.push(mask);
            for st in streams.iter().filter(|st| !st.is_empty()) {
                put_varint(&mut out, st.len() as u64);
            }
        }
        for section in sections {
            out.extend_from_slice(section);
        }
        for c in &columns {
            for st in c.streams() {
                out.extend_from_slice(st);
            }
        }
        Some(out)
    }
}

/// A cursor over one section.
#[cfg(test)]
struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

#[cfg(test)]
impl<'a> Reader<'a> {
    fn new(data: &'a [u8]) -> Self {
        Reader { data, at: 0 }
    }
    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.data.get(self.at).ok_or("truncated varint")?;
            self.at += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err("varint too long".into())
    }
    fn signed(&mut self) -> Result<i64, String> {
        let v = self.varint()?;
        Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).ok_or("length overflow")?;
        let s = self.data.get(self.at..end).ok_or("truncated section")?;
        self.at = end;
        Ok(s)
    }
    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = self.varint()? as usize;
        self.take(n)
    }
    fn string(&mut self) -> Result<String, String> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|e| e.to_string())
    }
    fn byte(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
}

/// What one column remembers on the receiving side.
#[cfg(test)]
#[derive(Default)]
struct ColumnMemory {
    last_int: i64,
    last_dict: i64,
    last_shape: Option<usize>,
    shapes: Vec<Vec<u8>>,
    last_numbers: Vec<Vec<i64>>,
}

/// Number of digit runs in a shape.
#[cfg(test)]
fn runs_in(shape: &[u8]) -> usize {
    let (mut n, mut i) = (0, 0);
    while i < shape.len() {
        if shape[i] == 0 {
            if shape.get(i + 1).copied().unwrap_or(0) != 0 {
                n += 1;
            }
            i += 2;
        } else {
            i += 1;
        }
    }
    n
}

#[cfg(test)]
fn read_value(st: &mut ColumnMemory, streams: &mut [Reader<'_>]) -> Result<DynValue, String> {
    let tag = streams[0].byte()?;
    let value = match tag & !AS_STRING {
        KIND_INT => {
            st.last_int = st.last_int.wrapping_add(streams[4].signed()?);
            Value::Int(st.last_int)
        }
        KIND_FLOAT => {
            let b: [u8; 8] = streams[6].take(8)?.try_into().map_err(|_| "float")?;
            Value::Float(f64::from_le_bytes(b))
        }
        KIND_DICT => {
            st.last_dict = st.last_dict.wrapping_add(streams[5].signed()?);
            Value::Dict(st.last_dict as u64)
        }
        KIND_FALSE => Value::Bool(false),
        KIND_TRUE => Value::Bool(true),
        KIND_RAW_JSON => Value::RawJson(streams[6].string()?),
        KIND_STR => {
            let (shape, index) = match streams[1].varint()? {
                0 => {
                    let shape = streams[2].bytes()?.to_vec();
                    if st.shapes.len() < MAX_SHAPES {
                        st.last_numbers.push(vec![0; runs_in(&shape)]);
                        st.shapes.push(shape.clone());
                        (shape, Some(st.shapes.len() - 1))
                    } else {
                        (shape, None)
                    }
                }
                1 => {
                    let k = st.last_shape.ok_or("no previous shape")?;
                    (st.shapes[k].clone(), Some(k))
                }
                k => {
                    let k = (k - 2) as usize;
                    (st.shapes.get(k).ok_or("unknown shape")?.clone(), Some(k))
                }
            };
            st.last_shape = index;
            let mut text = Vec::new();
            let (mut run, mut i) = (0, 0);
            while i < shape.len() {
                if shape[i] == 0 {
                    let width = *shape.get(i + 1).ok_or("truncated shape")? as usize;
                    if width == 0 {
                        text.push(0);
                    } else {
                        let delta = streams[3].signed()?;
                        let n = match index {
                            Some(k) => {
                                let prev = &mut st.last_numbers[k][run];
                                *prev = prev.wrapping_add(delta);
                                *prev
                            }
                            None => delta,
                        };
                        text.extend_from_slice(format!("{n:0width$}").as_bytes());
                        run += 1;
                    }
                    i += 2;
                } else {
                    text.push(shape[i]);
                    i += 1;
                }
            }
            Value::Str(String::from_utf8(text).map_err(|e| e.to_string())?)
        }
        k => return Err(format!("unknown value kind {k}")),
    };
    Ok(DynValue {
        value,
        render_as_string: tag & AS_STRING != 0,
    })
}

#[cfg(test)]
fn meta_value(r: &mut Reader<'_>, prev: &mut Option<u64>) -> Result<Option<Value>, String> {
    match r.varint()? {
        0 => {}
        1 => *prev = None,
        id => *prev = Some(id - 2),
    }
    Ok(prev.map(Value::Dict))
}

/// The receiving side of the prototype, used by the tests to prove the layout lossless.
#[cfg(test)]
#[derive(Default)]
pub struct NativeDecoder {
    holes: HashMap<u64, usize>,
    columns: HashMap<(u64, usize), ColumnMemory>,
    last_ts: i64,
    prev_meta: [Option<u64>; 3],
}

#[cfg(test)]
impl NativeDecoder {
    /// Reads back what [`NativeEncoder::encode`] wrote for the same batch.
    pub fn decode(&mut self, bytes: &[u8]) -> Result<Vec<Datum>, String> {
        let mut head = Reader::new(bytes);
        let n_columns = head.varint()? as usize;
        let mut lens = Vec::new();
        for _ in 0..6 {
            lens.push(head.varint()? as usize);
        }
        for _ in 0..n_columns {
            let mask = head.byte()?;
            for i in 0..7 {
                lens.push(if mask & 1 << i != 0 {
                    head.varint()? as usize
                } else {
                    0
                });
            }
        }
        let mut sections = Vec::new();
        for len in lens {
            sections.push(Reader::new(head.take(len)?));
        }
        let mut column_streams = sections.split_off(6);
        let [mut kinds, mut defs, mut ts, mut meta, mut pids, mut raw]: [Reader<'_>; 6] =
            sections.try_into().map_err(|_| "sections")?;
        let mut index: HashMap<(u64, usize), usize> = HashMap::new();
        let mut out = Vec::new();
        while kinds.at < kinds.data.len() {
            let kind = kinds.byte()?;
            let datum = match kind {
                D_PATTERN_DEFINE => {
                    let id = defs.varint()?;
                    let template = defs.string()?;
                    let n = defs.varint()? as usize;
                    let mut pos_list = Vec::with_capacity(n.min(1024));
                    let mut p = 0u32;
                    for _ in 0..n {
                        p = p.wrapping_add(defs.varint()? as u32);
                        pos_list.push(p);
                    }
                    self.holes.insert(id, n);
                    Datum::PatternDefine(PatternDefine {
                        id,
                        template,
                        pos_list,
                    })
                }
                D_PATTERN_DELETE => {
                    let id = defs.varint()?;
                    self.holes.remove(&id);
                    self.columns.retain(|(pid, _), _| *pid != id);
                    Datum::PatternDelete { id }
                }
                D_DICT_DEFINE => Datum::DictDefine(DictDefine {
                    id: defs.varint()?,
                    value: defs.string()?,
                }),
                D_DICT_DELETE => Datum::DictDelete { id: defs.varint()? },
                D_RAW | D_PATTERN => {
                    self.last_ts = self.last_ts.wrapping_add(ts.signed()?);
                    let status = meta_value(&mut meta, &mut self.prev_meta[0])?;
                    let service = meta_value(&mut meta, &mut self.prev_meta[1])?;
                    let tags = meta_value(&mut meta, &mut self.prev_meta[2])?;
                    let content = if kind == D_RAW {
                        Content::Raw(raw.string()?)
                    } else {
                        let id = pids.varint()?;
                        let n = *self.holes.get(&id).ok_or("unknown pattern")?;
                        let mut values = Vec::with_capacity(n.min(1024));
                        for hole in 0..n {
                            let next = index.len();
                            let c = *index.entry((id, hole)).or_insert(next);
                            let streams = column_streams
                                .get_mut(c * 7..c * 7 + 7)
                                .ok_or("missing column")?;
                            let st = self.columns.entry((id, hole)).or_default();
                            values.push(read_value(st, streams)?);
                        }
                        Content::Pattern { id, values }
                    };
                    Datum::Log(Log {
                        timestamp: self.last_ts,
                        status,
                        service,
                        tags,
                        content,
                        json: None,
                        uuid: None,
                    })
                }
                k => return Err(format!("unknown datum kind {k}")),
            };
            out.push(datum);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stencil_patterns::{Engine, EngineConfig, Meta};

    fn corpus_lines() -> Vec<Vec<u8>> {
        let mut lines: Vec<Vec<u8>> = [
            "2005-06-03-15.42.50.675872 R02-M1-N0-C:J12-U11 RAS KERNEL INFO 63543 double-hummer alignment exceptions",
            "2005-06-03-15.42.53.276129 R02-M1-N0-C:J12-U11 RAS KERNEL INFO 1 double-hummer alignment exceptions",
            "081109 203615 148 INFO dfs.DataNode$PacketResponder: PacketResponder 1 for block blk_-1608999687919862906 terminating",
            "081109 203615 149 INFO dfs.DataNode$PacketResponder: PacketResponder 2 for block blk_38865049064139660 terminating",
            "Received disconnect from 10.0.0.1: 11: Bye Bye [preauth]",
            "Received disconnect from 10.0.0.22: 11: Bye Bye [preauth]",
            "digits longer than a run: 12345678901234567890123 and 007 and NUL \u{0} here",
            "digits longer than a run: 99999999999999999999999999 and 000 and NUL \u{0} here",
            "ratio 0.25 took 12ms",
            "ratio 0.5 took 7ms",
            "",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
        let sample =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/sample.log");
        let bytes = std::fs::read(sample).expect("examples/sample.log");
        lines.extend(
            crate::cmd::bench::split_lines(&bytes)
                .into_iter()
                // JSON documents are outside the prototype's scope (see `encode`).
                .filter(|l| !l.starts_with(b"{"))
                .map(<[u8]>::to_vec),
        );
        lines
    }

    #[test]
    fn prototype_layout_round_trips_engine_batches() {
        for config in [EngineConfig::default(), engine_config()] {
            round_trip_with(config);
        }
    }

    fn round_trip_with(config: EngineConfig) {
        let lines = corpus_lines();
        let mut engine = Engine::new(config);
        let tags = ["filename:/var/log/x.log", "env:bench"];
        let mut encoder = NativeEncoder::default();
        let mut decoder = NativeDecoder::default();
        for (n, chunk) in lines.chunks(7).enumerate() {
            let mut datums = Vec::new();
            for (i, l) in chunk.iter().enumerate() {
                let meta = Meta {
                    timestamp: 1_700_000_000_000 + (n * 7 + i) as i64 * 3 - (i as i64 % 2) * 5,
                    status: Some("info"),
                    service: Some("svc"),
                    tags: if i % 3 == 0 { &tags } else { &[] },
                };
                engine.encode(l, &meta, &mut datums);
            }
            let bytes = encoder.encode(&datums).expect("in scope");
            let back = decoder.decode(&bytes).expect("decodes");
            assert_eq!(back, datums, "batch {n}");
        }
    }

    /// Every line of the 12 Loghub files, with the benchmark's settings (STENCIL_CORPUS, as the other corpus
    /// tests; skipped without it).
    #[test]
    fn prototype_layout_round_trips_the_corpus() {
        let Some(dir) = std::env::var_os("STENCIL_CORPUS") else {
            eprintln!("SKIPPED: set STENCIL_CORPUS=../shared/corpus");
            return;
        };
        let loghub = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(dir)
            .join("loghub-2k");
        let mut files = 0;
        for entry in std::fs::read_dir(&loghub).expect("loghub-2k readable") {
            let system = entry.expect("entry").path();
            let Some(name) = system.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let Ok(bytes) = std::fs::read(system.join(format!("{name}_2k.log"))) else {
                continue;
            };
            files += 1;
            let mut engine = Engine::new(engine_config());
            let (mut encoder, mut decoder) = (NativeEncoder::default(), NativeDecoder::default());
            let lines = crate::cmd::bench::split_lines(&bytes);
            for (n, chunk) in lines.chunks(100).enumerate() {
                let mut datums = Vec::new();
                for (i, l) in chunk.iter().enumerate() {
                    let meta = Meta {
                        timestamp: 1_700_000_000_000 + (n * 100 + i) as i64 * 7,
                        ..Meta::default()
                    };
                    engine.encode(l, &meta, &mut datums);
                }
                let bytes = encoder.encode(&datums).expect("in scope");
                assert_eq!(
                    decoder.decode(&bytes).expect("decodes"),
                    datums,
                    "{name} batch {n}"
                );
            }
        }
        assert_eq!(files, 12, "the 12 Loghub systems");
    }

    #[test]
    fn damaged_batches_are_errors_not_panics() {
        let lines = corpus_lines();
        let mut engine = Engine::new(engine_config());
        let mut datums = Vec::new();
        for l in &lines {
            engine.encode(l, &Meta::default(), &mut datums);
        }
        let bytes = NativeEncoder::default().encode(&datums).expect("in scope");
        for cut in 0..bytes.len() {
            // Must return, whatever it returns; a cut inside the header or a section is an error.
            let _ = NativeDecoder::default().decode(&bytes[..cut]);
        }
        assert!(NativeDecoder::default()
            .decode(&bytes[..bytes.len() - 1])
            .is_err());
        let mut flipped = 0;
        for i in 0..bytes.len() {
            for bit in [0x01u8, 0x80] {
                let mut damaged = bytes.clone();
                damaged[i] ^= bit;
                if NativeDecoder::default().decode(&damaged).as_ref() != Ok(&datums) {
                    flipped += 1;
                }
            }
        }
        assert!(flipped > bytes.len(), "most bit flips change the result");
    }

    #[test]
    fn shapes_keep_widths_and_nul() {
        let mut numbers = Vec::new();
        let shape = shape_of("a007-\u{0}x", &mut numbers);
        assert_eq!(numbers, vec![7]);
        assert_eq!(shape, b"a\x00\x03-\x00\x00x".to_vec());
    }

    #[test]
    fn out_of_scope_batches_are_refused() {
        let mut log = Log::raw(1, "x");
        log.uuid = Some("u".into());
        assert!(NativeEncoder::default()
            .encode(&[Datum::Log(log)])
            .is_none());
    }
}
