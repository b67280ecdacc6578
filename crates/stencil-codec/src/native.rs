//! The `native/3` batch layout (`docs/native-encoding.md`): the same canonical datums as v3, laid out by
//! column and coded against state that lives as long as the stream.
//!
//! The v3 row layout frames every value as its own protobuf message and codes nothing but the timestamp
//! against the log before it. This layout, used only when both ends negotiated it, writes a batch as a few
//! sections whose lengths follow from the batch itself (nothing but the datum count is framed):
//!
//! ```text
//! batch   := varint(n_datums) kinds defs times meta pids raw columns
//! runs    := (value, count ≥ 1) pairs whose counts add up to the section's number of entries
//! kinds   := runs of datum kinds (raw line, raw bytes, pattern log, the four defines and deletes)
//! defs    := the define and delete payloads, in datum order
//! times   := runs of zigzag(timestamp - previous log's timestamp on this stream), one entry per log
//! meta    := until every log is covered: the count of logs whose metadata is unchanged, then (if logs
//!            are left) a log that changes it: a mask of the changed fields (status, service, tags,
//!            1..=7), then each changed field as 0 (none) or dictionary id + 1
//! pids    := per pattern log, its pattern id
//! raw     := per raw log, the text and `\n` (raw line), or varint(len) and the text (raw bytes)
//! columns := for each (pattern, hole) in order of first use in this batch, its values in log order:
//!            runs of their tags, then their bodies, then their digit runs by position
//! ```
//!
//! A column value is a tag (a kind byte, bit 7 `render_as_string`, and a reference) and a payload: ints
//! and dictionary ids are
//! zigzag deltas against the column's previous one; a string is a back-reference into the column's recent
//! exact values, or a *shape* (the text with each digit run replaced by its width, itself named by index
//! once seen) plus each digit run as a delta against the same run of the shape's previous value. Dates,
//! counters and block ids inside strings become small numbers; repeated strings become one small index.
//!
//! `native/2` differed from `native/1` only in `kinds`, `times` and `meta`, which were one byte (or more)
//! per entry: in a batch of raw lines each section was a run of one byte that cost a zstd sequence, so
//! `native/1` lost a few bytes per batch to a plain zstd stream exactly where it had nothing to gain.
//! `native/3` does the same inside the columns: `native/2` wrote each value's kind byte and reference
//! before its payload, and a value's digit runs one after another.
//!
//! Every table is bounded by constants both ends share, and the decoder counts its bytes
//! ([`NativeDecoder::state_bytes`]) so that the intake can charge them against the stream's state limit.
//! Each read is bounds-checked; every malformed input is an [`ErrorKind`], never a panic.

use std::hash::BuildHasher;

use foldhash::{HashMap, HashMapExt};

use crate::datum::{Content, Datum, DictDefine, DynValue, Log, PatternDefine, Value};
use crate::error::{EncodeError, ErrorKind, Space};
use crate::state::StreamState;

/// The extension's name in the negotiation header.
pub const NAME: &str = "native/3";

// Datum kinds.
const D_RAW_LINE: u8 = 0;
const D_RAW_BYTES: u8 = 1;
const D_PATTERN: u8 = 2;
const D_PATTERN_DEFINE: u8 = 3;
const D_PATTERN_DELETE: u8 = 4;
const D_DICT_DEFINE: u8 = 5;
const D_DICT_DELETE: u8 = 6;

// Value kinds (bit 7 = render_as_string).
const V_INT: u8 = 0;
const V_FLOAT: u8 = 1;
const V_DICT: u8 = 2;
const V_FALSE: u8 = 3;
const V_TRUE: u8 = 4;
const V_RAW_JSON: u8 = 5;
/// A string by its shape and digit runs.
const V_SHAPED: u8 = 6;
/// A string equal to an entry of the column's recent exact values.
const V_EXACT: u8 = 7;
/// A string sent as it is (too long for the tables).
const V_LITERAL: u8 = 8;
const AS_STRING: u8 = 0x80;

/// Longest digit run carried as a number (10^18 < 2^63); longer runs are cut into runs of this width.
const MAX_RUN: usize = 18;
/// Shapes a column remembers.
const MAX_SHAPES: usize = 64;
/// Recent exact values a column remembers (a ring).
const MAX_EXACT: usize = 32;
/// Longest string kept in a column's tables; longer ones are literals.
const MAX_TABLED: usize = 128;
/// Longest shape: a tabled value whose every byte is a NUL (each written as two bytes).
const MAX_SHAPE: usize = 2 * MAX_TABLED;
/// Most holes a pattern may have in this layout (the decoder refuses more before allocating).
const MAX_HOLES: usize = 4096;
/// Most (pattern, hole) columns a stream remembers. Columns go with their pattern's delete, but a peer
/// need not send deletes (plain v3 does not), so without a bound, a stream of ever-new templates could
/// grow both ends' column tables without end. At the end of a batch after which more columns exist,
/// both ends forget them all (the same batch, so the same moment); the next values are sent as if the
/// stream were new.
pub const MAX_COLUMNS: usize = 8192;

fn refuse(what: &'static str) -> EncodeError {
    EncodeError::NotRepresentable {
        generation: NAME,
        what,
    }
}

fn malformed(detail: &str) -> ErrorKind {
    ErrorKind::MalformedProtobuf(format!("native/3: {detail}"))
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_signed(out: &mut Vec<u8>, v: i64) {
    put_varint(out, zigzag(v));
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// Writes `values` as runs: each run is the value and how many times it repeats. Kinds, timestamp
/// deltas and metadata rarely change within a batch, so a whole section is often one run: a few bytes
/// that the stream's context matches, where one byte per log cost a zstd sequence per section.
fn put_runs(out: &mut Vec<u8>, values: impl Iterator<Item = u64>) {
    let mut run: Option<(u64, u64)> = None;
    for v in values {
        run = match run {
            Some((value, count)) if value == v => Some((value, count + 1)),
            Some((value, count)) => {
                put_varint(out, value);
                put_varint(out, count);
                Some((v, 1))
            }
            None => Some((v, 1)),
        };
    }
    if let Some((value, count)) = run {
        put_varint(out, value);
        put_varint(out, count);
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Splits `s` into its shape and the numbers of its digit runs. In the shape a digit run is `0x00, width`
/// and a literal NUL is `0x00, 0x00`.
fn shape_of(s: &[u8], shape: &mut Vec<u8>, numbers: &mut Vec<i64>) {
    shape.clear();
    numbers.clear();
    let mut i = 0;
    while i < s.len() {
        let b = s[i];
        if b.is_ascii_digit() {
            let start = i;
            while i < s.len() && s[i].is_ascii_digit() && i - start < MAX_RUN {
                i += 1;
            }
            let n = s[start..i]
                .iter()
                .fold(0i64, |acc, d| acc * 10 + i64::from(d - b'0'));
            numbers.push(n);
            shape.push(0);
            shape.push((i - start) as u8);
        } else {
            if b == 0 {
                shape.push(0);
            }
            shape.push(b);
            i += 1;
        }
    }
}

/// What one (pattern, hole) column remembers across batches. Both ends keep the same.
#[derive(Debug, Default, Clone)]
struct ColumnState {
    last_int: i64,
    last_dict: i64,
    last_shape: Option<usize>,
    /// Shapes by index, with the digit runs of the shape's last value.
    shapes: Shapes,
    /// Recent exact values, a ring of `MAX_EXACT`.
    exact: Vec<String>,
    /// The encoder's hash of each ring entry, to find a value without comparing every entry (the
    /// decoder leaves it empty).
    exact_hashes: Vec<u64>,
    next_exact: usize,
    bytes: usize,
}

impl ColumnState {
    fn remember_exact(&mut self, s: &str) -> usize {
        let slot = self.next_exact;
        self.next_exact = (self.next_exact + 1) % MAX_EXACT;
        if slot < self.exact.len() {
            self.bytes = self.bytes - self.exact[slot].len() + s.len();
            // The slot's buffer is reused: no allocation when the new value fits it.
            let entry = &mut self.exact[slot];
            entry.clear();
            entry.push_str(s);
        } else {
            self.bytes += s.len() + 24;
            self.exact.push(s.to_owned());
        }
        slot
    }

    fn add_shape(&mut self, shape: &[u8], runs: usize) -> Option<usize> {
        if self.shapes.len() >= MAX_SHAPES {
            return None;
        }
        self.bytes += shape.len() + 8 * runs + 48;
        Some(self.shapes.push(shape, runs))
    }
}

/// A column's shape table, its shapes and their digit runs each back to back in one buffer: a stream
/// holds thousands of columns of up to [`MAX_SHAPES`] shapes, and two allocations per shape (with their
/// headers and rounding) took about three times the bytes of the shapes themselves.
#[derive(Debug, Default, Clone)]
struct Shapes {
    /// Every shape's bytes, in table order.
    bytes: Vec<u8>,
    /// The digit runs of each shape's last value, in table order.
    runs: Vec<i64>,
    /// Where each shape ends in `bytes` and its runs end in `runs`.
    ends: Vec<(u32, u32)>,
}

impl Shapes {
    fn len(&self) -> usize {
        self.ends.len()
    }

    /// Where shape `k`'s bytes and runs lie.
    fn spans(&self, k: usize) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
        let (b0, r0) = match k.checked_sub(1) {
            Some(j) => self.ends[j],
            None => (0, 0),
        };
        let (b1, r1) = self.ends[k];
        (b0 as usize..b1 as usize, r0 as usize..r1 as usize)
    }

    fn shape(&self, k: usize) -> &[u8] {
        &self.bytes[self.spans(k).0]
    }

    fn runs_mut(&mut self, k: usize) -> &mut [i64] {
        let span = self.spans(k).1;
        &mut self.runs[span]
    }

    fn run_count(&self, k: usize) -> usize {
        self.spans(k).1.len()
    }

    fn find(&self, shape: &[u8]) -> Option<usize> {
        (0..self.len()).find(|&k| self.shape(k) == shape)
    }

    /// Appends a shape whose values have `runs` digit runs (all 0 so far); returns its index. Shapes
    /// are at most a tabled value's length and a table holds [`MAX_SHAPES`], so the offsets fit `u32`.
    fn push(&mut self, shape: &[u8], runs: usize) -> usize {
        self.bytes.extend_from_slice(shape);
        self.runs.resize(self.runs.len() + runs, 0);
        self.ends
            .push((self.bytes.len() as u32, self.runs.len() as u32));
        self.ends.len() - 1
    }
}

/// Stream-scoped state shared in meaning by both ends: timestamps, metadata and columns.
#[derive(Debug, Default, Clone)]
struct Shared {
    last_ts: i64,
    meta: [Option<u64>; 3],
    /// Boxed: a column's state is about 130 bytes and a stream holds thousands, so the table's slots
    /// (and the doubling of its resize) stay small.
    columns: HashMap<(u64, usize), Box<ColumnState>>,
}

impl Shared {
    /// Drops the columns of patterns deleted in the batch and not defined again, and every column when
    /// there are more than [`MAX_COLUMNS`] (run at the batch's end, on both ends). Returns whether any
    /// column was dropped.
    fn forget(&mut self, deleted: &[u64], defined: impl Fn(u64) -> bool) -> bool {
        let before = self.columns.len();
        let gone: foldhash::HashSet<u64> =
            deleted.iter().copied().filter(|id| !defined(*id)).collect();
        if !gone.is_empty() {
            self.columns.retain(|(pid, _), _| !gone.contains(pid));
        }
        if self.columns.len() > MAX_COLUMNS {
            self.columns.clear();
        }
        self.columns.len() < before
    }
}

/// The agent's end of `native/3` for one stream.
#[derive(Debug, Default, Clone)]
pub struct NativeEncoder {
    shared: Shared,
    holes: HashMap<u64, usize>,
    shape_buf: Vec<u8>,
    numbers: Vec<i64>,
}

fn meta_id(v: &Option<Value>) -> Result<Option<u64>, EncodeError> {
    match v {
        None => Ok(None),
        Some(Value::Dict(id)) if *id < u64::MAX => Ok(Some(*id)),
        Some(_) => Err(refuse("metadata that is not a dictionary id")),
    }
}

impl NativeEncoder {
    /// A fresh encoder (a new stream).
    pub fn new() -> Self {
        NativeEncoder::default()
    }

    /// A fresh encoder (no column state) that knows the patterns `other` knows: for a shadow form that
    /// starts mid-stream, whose logs use patterns defined before it.
    pub fn knowing_patterns_of(other: &NativeEncoder) -> Self {
        NativeEncoder {
            holes: other.holes.clone(),
            ..NativeEncoder::default()
        }
    }

    /// Learns the patterns a stream already knows from batches sent before this layout took over (their
    /// defines and deletes, in order); nothing is written.
    pub fn prime(&mut self, datums: &[Datum]) {
        for d in datums {
            match d {
                Datum::PatternDefine(p) => {
                    self.holes.insert(p.id, p.pos_list.len());
                }
                Datum::PatternDelete { id } => {
                    self.holes.remove(id);
                }
                _ => {}
            }
        }
    }

    /// Checks that every datum fits this layout (no JSON schemas or contexts, no uuids, metadata as
    /// dictionary ids, one value per hole of a known pattern). Nothing is changed.
    pub fn supports<D: std::borrow::Borrow<Datum>>(&self, datums: &[D]) -> bool {
        let mut overlay: HashMap<u64, Option<usize>> = HashMap::new();
        datums.iter().all(|d| match d.borrow() {
            Datum::PatternDefine(p) => {
                overlay.insert(p.id, Some(p.pos_list.len()));
                p.pos_list.len() <= MAX_HOLES
            }
            Datum::PatternDelete { id } => {
                overlay.insert(*id, None);
                true
            }
            Datum::DictDefine(_) | Datum::DictDelete { .. } => true,
            Datum::SchemaDefine(_) | Datum::SchemaDelete { .. } => false,
            Datum::Log(log) => {
                log.json.is_none()
                    && log.uuid.is_none()
                    && meta_id(&log.status).is_ok()
                    && meta_id(&log.service).is_ok()
                    && meta_id(&log.tags).is_ok()
                    && match &log.content {
                        Content::Raw(_) => true,
                        Content::Pattern { id, values } => {
                            let holes = match overlay.get(id) {
                                Some(h) => *h,
                                None => self.holes.get(id).copied(),
                            };
                            holes == Some(values.len())
                        }
                    }
            }
        })
    }

    /// Lays out one batch, appending it to `out`. Call [`NativeEncoder::supports`] first: on an error the
    /// stream's state may be partly updated, and the stream must not be used again.
    pub fn encode<D: std::borrow::Borrow<Datum>>(
        &mut self,
        datums: &[D],
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        let mut kinds = Vec::with_capacity(datums.len());
        let mut times: Vec<u64> = Vec::with_capacity(datums.len());
        let (mut defs, mut meta, mut pids, mut raw) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        // Logs since the last metadata change (the `meta` section codes the gaps between changes).
        let mut unchanged = 0u64;
        let mut columns: Vec<ColumnOut> = Vec::new();
        let mut index: HashMap<(u64, usize), usize> = HashMap::new();
        let mut deleted = Vec::new();
        let mut last_define = 0u64;
        for d in datums {
            match d.borrow() {
                Datum::PatternDefine(p) => {
                    kinds.push(D_PATTERN_DEFINE);
                    put_signed(&mut defs, p.id.wrapping_sub(last_define) as i64);
                    last_define = p.id;
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
                    deleted.push(*id);
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
                Datum::SchemaDefine(_) | Datum::SchemaDelete { .. } => {
                    return Err(refuse("JSON schemas"))
                }
                Datum::Log(log) => {
                    if log.json.is_some() || log.uuid.is_some() {
                        return Err(refuse("JSON contexts and uuids"));
                    }
                    times.push(zigzag(log.timestamp.wrapping_sub(self.shared.last_ts)));
                    self.shared.last_ts = log.timestamp;
                    let ids = [
                        meta_id(&log.status)?,
                        meta_id(&log.service)?,
                        meta_id(&log.tags)?,
                    ];
                    let mask = (0..3).fold(0u8, |m, i| {
                        if ids[i] == self.shared.meta[i] {
                            m
                        } else {
                            m | 1 << i
                        }
                    });
                    if mask == 0 {
                        unchanged += 1;
                    } else {
                        put_varint(&mut meta, unchanged);
                        unchanged = 0;
                        meta.push(mask);
                        for (i, id) in ids.iter().enumerate() {
                            if mask & 1 << i != 0 {
                                put_varint(&mut meta, id.map_or(0, |id| id + 1));
                                self.shared.meta[i] = *id;
                            }
                        }
                    }
                    match &log.content {
                        Content::Raw(text) => {
                            if text.contains('\n') {
                                kinds.push(D_RAW_BYTES);
                                put_bytes(&mut raw, text.as_bytes());
                            } else {
                                kinds.push(D_RAW_LINE);
                                raw.extend_from_slice(text.as_bytes());
                                raw.push(b'\n');
                            }
                        }
                        Content::Pattern { id, values } => {
                            if self.holes.get(id) != Some(&values.len()) {
                                return Err(refuse("a log whose pattern is unknown or differs"));
                            }
                            kinds.push(D_PATTERN);
                            put_varint(&mut pids, *id);
                            for (hole, v) in values.iter().enumerate() {
                                let next = columns.len();
                                let c = *index.entry((*id, hole)).or_insert(next);
                                if c == next {
                                    columns.push(ColumnOut::default());
                                }
                                self.push_value(&mut columns[c], (*id, hole), v);
                            }
                        }
                    }
                }
            }
        }
        let holes = &self.holes;
        self.shared.forget(&deleted, |id| holes.contains_key(&id));
        put_varint(&mut meta, unchanged);
        put_varint(out, datums.len() as u64);
        put_runs(out, kinds.iter().map(|&k| u64::from(k)));
        out.extend_from_slice(&defs);
        put_runs(out, times.iter().copied());
        for section in [&meta, &pids, &raw] {
            out.extend_from_slice(section);
        }
        for c in &columns {
            c.write(out);
        }
        Ok(())
    }

    fn push_value(&mut self, col: &mut ColumnOut, key: (u64, usize), v: &DynValue) {
        let flag = if v.render_as_string { AS_STRING } else { 0 };
        let st = self.shared.columns.entry(key).or_default();
        match &v.value {
            Value::Int(i) => {
                col.tags.push(tag(V_INT | flag, 0));
                put_signed(&mut col.body, i.wrapping_sub(st.last_int));
                st.last_int = *i;
            }
            Value::Float(f) => {
                col.tags.push(tag(V_FLOAT | flag, 0));
                col.body.extend_from_slice(&f.to_le_bytes());
            }
            Value::Dict(id) => {
                col.tags.push(tag(V_DICT | flag, 0));
                put_signed(&mut col.body, (*id as i64).wrapping_sub(st.last_dict));
                st.last_dict = *id as i64;
            }
            Value::Bool(b) => col
                .tags
                .push(tag(if *b { V_TRUE } else { V_FALSE } | flag, 0)),
            Value::RawJson(s) => {
                col.tags.push(tag(V_RAW_JSON | flag, 0));
                put_bytes(&mut col.body, s.as_bytes());
            }
            Value::Str(s) => {
                if s.len() > MAX_TABLED {
                    col.tags.push(tag(V_LITERAL | flag, 0));
                    put_bytes(&mut col.body, s.as_bytes());
                    return;
                }
                // The ring holds each value once (a value found in it is sent as a reference, not
                // remembered again), so the first entry with the value's hash and text is its slot.
                let hash = foldhash::fast::FixedState::with_seed(0).hash_one(s.as_str());
                let found = st
                    .exact_hashes
                    .iter()
                    .enumerate()
                    .find(|&(i, &h)| h == hash && st.exact.get(i) == Some(s));
                if let Some((slot, _)) = found {
                    col.tags.push(tag(V_EXACT | flag, slot as u64));
                    return;
                }
                let slot = st.remember_exact(s);
                if slot < st.exact_hashes.len() {
                    st.exact_hashes[slot] = hash;
                } else {
                    st.exact_hashes.push(hash);
                }
                shape_of(s.as_bytes(), &mut self.shape_buf, &mut self.numbers);
                let known = st.shapes.find(&self.shape_buf);
                let index = match known {
                    Some(k) if st.last_shape == Some(k) => {
                        col.tags.push(tag(V_SHAPED | flag, SAME_SHAPE));
                        Some(k)
                    }
                    Some(k) => {
                        col.tags.push(tag(V_SHAPED | flag, k as u64 + FIRST_SHAPE));
                        Some(k)
                    }
                    None => {
                        col.tags.push(tag(V_SHAPED | flag, NEW_SHAPE));
                        put_bytes(&mut col.body, &self.shape_buf);
                        st.add_shape(&self.shape_buf, self.numbers.len())
                    }
                };
                st.last_shape = index;
                match index {
                    Some(k) => {
                        let prevs = st.shapes.runs_mut(k).iter_mut();
                        for (run, (prev, n)) in prevs.zip(&self.numbers).enumerate() {
                            put_signed(col.digits(run), n.wrapping_sub(*prev));
                            *prev = *n;
                        }
                    }
                    None => {
                        for (run, n) in self.numbers.iter().enumerate() {
                            put_signed(col.digits(run), *n);
                        }
                    }
                }
            }
        }
    }
}

/// A value's tag in its column's `tags` runs: the kind byte, and above it the exact value's slot or the
/// shape reference (0 for the others).
fn tag(kind: u8, sub: u64) -> u64 {
    u64::from(kind) | sub << 8
}

/// Shape references of a shaped value: a new shape (its bytes follow in the body), the shape of the
/// column's previous shaped value, or shape `k` of the table as `k + FIRST_SHAPE`.
const NEW_SHAPE: u64 = 0;
const SAME_SHAPE: u64 = 1;
const FIRST_SHAPE: u64 = 2;

/// One column's share of a batch while it is laid out: the tags of its values (written as runs, so a
/// column whose values all have one kind and shape costs a few bytes, not one per value), their
/// bodies, and their digit runs grouped by position (every value's first run, then every second run…),
/// so that the runs that rarely change (a date's year and month) sit together as zeros.
#[derive(Default)]
struct ColumnOut {
    tags: Vec<u64>,
    body: Vec<u8>,
    digits: Vec<Vec<u8>>,
}

impl ColumnOut {
    fn digits(&mut self, run: usize) -> &mut Vec<u8> {
        if self.digits.len() <= run {
            self.digits.resize_with(run + 1, Vec::new);
        }
        &mut self.digits[run]
    }

    fn write(&self, out: &mut Vec<u8>) {
        put_runs(out, self.tags.iter().copied());
        out.extend_from_slice(&self.body);
        for d in &self.digits {
            out.extend_from_slice(d);
        }
    }
}

/// A cursor over one section of a batch.
struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn new(data: &'a [u8]) -> Self {
        Reader { data, at: 0 }
    }

    fn varint(&mut self) -> Result<u64, ErrorKind> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self
                .data
                .get(self.at)
                .ok_or_else(|| malformed("truncated varint"))?;
            self.at += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(malformed("varint longer than 10 bytes"))
    }

    fn signed(&mut self) -> Result<i64, ErrorKind> {
        let v = self.varint()?;
        Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
    }

    fn len(&mut self) -> Result<usize, ErrorKind> {
        usize::try_from(self.varint()?).map_err(|_| malformed("length overflows"))
    }

    /// Reads runs (value, count) until they add up to `total` values, handing each value to `each`.
    fn runs(
        &mut self,
        total: usize,
        mut each: impl FnMut(u64) -> Result<(), ErrorKind>,
    ) -> Result<(), ErrorKind> {
        let mut left = total;
        while left > 0 {
            let value = self.varint()?;
            let count = self.len()?;
            if count == 0 || count > left {
                return Err(malformed("a run of 0, or past the section's end"));
            }
            left -= count;
            for _ in 0..count {
                each(value)?;
            }
        }
        Ok(())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ErrorKind> {
        let end = self
            .at
            .checked_add(n)
            .ok_or_else(|| malformed("length overflows"))?;
        let s = self
            .data
            .get(self.at..end)
            .ok_or_else(|| malformed("a section is shorter than its contents"))?;
        self.at = end;
        Ok(s)
    }

    fn bytes(&mut self) -> Result<&'a [u8], ErrorKind> {
        let n = self.len()?;
        self.take(n)
    }

    fn string(&mut self) -> Result<String, ErrorKind> {
        utf8(self.bytes()?)
    }

    fn byte(&mut self) -> Result<u8, ErrorKind> {
        Ok(self.take(1)?[0])
    }

    fn line(&mut self) -> Result<&'a [u8], ErrorKind> {
        let rest = &self.data[self.at..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| malformed("a raw line has no end"))?;
        self.at += n + 1;
        Ok(&rest[..n])
    }

    fn rest(&self) -> &'a [u8] {
        &self.data[self.at..]
    }
}

/// Appends `n` in decimal, zero-padded to `width` digits (`n` < 10^width, width ≤ 18: checked by the
/// caller).
fn push_digits(out: &mut Vec<u8>, mut n: u64, width: usize) {
    let start = out.len();
    out.resize(start + width, b'0');
    for d in out[start..].iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
}

fn utf8(b: &[u8]) -> Result<String, ErrorKind> {
    String::from_utf8(b.to_vec()).map_err(|e| ErrorKind::InvalidUtf8(e.to_string()))
}

/// Number of digit runs in a shape, or an error when the shape is malformed.
fn runs_in(shape: &[u8]) -> Result<usize, ErrorKind> {
    let (mut n, mut i) = (0, 0);
    while i < shape.len() {
        if shape[i] == 0 {
            let width = *shape
                .get(i + 1)
                .ok_or_else(|| malformed("truncated shape"))?;
            if usize::from(width) > MAX_RUN {
                return Err(malformed("a digit run wider than 18"));
            }
            if width != 0 {
                n += 1;
            }
            i += 2;
        } else {
            i += 1;
        }
    }
    Ok(n)
}

/// The intake's end of `native/3` for one stream.
#[derive(Debug, Default, Clone)]
pub struct NativeDecoder {
    shared: Shared,
}

/// A log whose values are still in their columns (first pass of the decoder).
struct Pending {
    timestamp: i64,
    meta: [Option<u64>; 3],
    content: PendingContent,
}

enum PendingContent {
    Raw(String),
    Pattern { id: u64, holes: usize },
}

enum Step {
    Define(Datum),
    Log(Pending),
}

impl NativeDecoder {
    /// A fresh decoder (a new stream).
    pub fn new() -> Self {
        NativeDecoder::default()
    }

    /// Bytes held by the column tables (the intake charges them to the stream's state limit).
    pub fn state_bytes(&self) -> usize {
        self.shared
            .columns
            .values()
            .map(|c| c.bytes + 64)
            .sum::<usize>()
    }

    /// Decodes one batch and hands each datum, in order, to `apply` (which applies it to `state`).
    /// The pattern holes come from `state` and from this batch's defines.
    pub fn decode(
        &mut self,
        data: &[u8],
        state: &mut StreamState,
        apply: &mut dyn FnMut(&mut StreamState, Datum) -> Result<(), ErrorKind>,
    ) -> Result<(), ErrorKind> {
        let mut r = Reader::new(data);
        let n = r.len()?;
        // Every datum is held until the batch is read, a hundred bytes or so each: bound their number by
        // what the output limit allows, as if each were a log, before holding any.
        let limit = state.limits().max_output_bytes;
        if n > limit / crate::reconstruct::RECORD_OVERHEAD {
            return Err(ErrorKind::OutputLimit { limit });
        }
        // Every datum takes at least one byte somewhere in the batch (a raw line its `\n`, a pattern log
        // its id, a define its payload).
        if n > data.len() {
            return Err(malformed("more datums than the batch has bytes"));
        }
        let mut kinds = Vec::with_capacity(n);
        r.runs(n, |kind| {
            let kind = u8::try_from(kind).map_err(|_| malformed("a datum kind over 255"))?;
            kinds.push(kind);
            Ok(())
        })?;
        let kinds = &kinds[..];
        let mut steps = Vec::with_capacity(n.min(1 << 16));
        let mut columns: Vec<((u64, usize), usize)> = Vec::new(); // (key, values in this batch)
        let mut index: HashMap<(u64, usize), usize> = HashMap::new();
        let mut deleted = Vec::new();
        let mut last_define = 0u64;
        // The sections follow one another, and their lengths follow from the datums: defines first.
        let mut logs = Vec::new();
        for &kind in kinds {
            match kind {
                D_PATTERN_DEFINE => {
                    let id = last_define.wrapping_add(r.signed()? as u64);
                    last_define = id;
                    let template = r.string()?;
                    let holes = r.len()?;
                    if holes > MAX_HOLES {
                        return Err(malformed("a pattern with more than 4096 holes"));
                    }
                    let mut pos_list = Vec::with_capacity(holes);
                    let mut p = 0u32;
                    for _ in 0..holes {
                        let delta = u32::try_from(r.varint()?)
                            .map_err(|_| malformed("a hole position overflows"))?;
                        p = p.wrapping_add(delta);
                        pos_list.push(p);
                    }
                    steps.push(Step::Define(Datum::PatternDefine(PatternDefine {
                        id,
                        template,
                        pos_list,
                    })));
                }
                D_PATTERN_DELETE => {
                    let id = r.varint()?;
                    deleted.push(id);
                    steps.push(Step::Define(Datum::PatternDelete { id }));
                }
                D_DICT_DEFINE => {
                    let id = r.varint()?;
                    let value = r.string()?;
                    steps.push(Step::Define(Datum::DictDefine(DictDefine { id, value })));
                }
                D_DICT_DELETE => steps.push(Step::Define(Datum::DictDelete { id: r.varint()? })),
                D_RAW_LINE | D_RAW_BYTES | D_PATTERN => {
                    logs.push(steps.len());
                    steps.push(Step::Log(Pending {
                        timestamp: 0,
                        meta: [None; 3],
                        content: PendingContent::Raw(String::new()),
                    }));
                }
                k => return Err(malformed(&format!("unknown datum kind {k}"))),
            }
        }
        // Timestamps.
        let mut at = logs.iter();
        let shared = &mut self.shared;
        r.runs(logs.len(), |z| {
            let delta = ((z >> 1) as i64) ^ -((z & 1) as i64);
            shared.last_ts = shared.last_ts.wrapping_add(delta);
            if let Some(Step::Log(p)) = at.next().map(|&i| &mut steps[i]) {
                p.timestamp = shared.last_ts;
            }
            Ok(())
        })?;
        // Metadata: the count of unchanged logs, then a change (mask and fields), until every log has
        // its metadata; the section ends with a count (0 when the last log changed it).
        let mut at = logs.iter();
        loop {
            let unchanged = r.len()?;
            if unchanged > at.len() {
                return Err(malformed("more unchanged metadata than logs"));
            }
            for &i in at.by_ref().take(unchanged) {
                if let Step::Log(p) = &mut steps[i] {
                    p.meta = self.shared.meta;
                }
            }
            let Some(&i) = at.next() else { break };
            let mask = r.byte()?;
            if mask == 0 || mask > 7 {
                return Err(malformed("a metadata mask of 0 or over 7"));
            }
            for f in 0..3 {
                if mask & 1 << f != 0 {
                    self.shared.meta[f] = r.varint()?.checked_sub(1);
                }
            }
            if let Step::Log(p) = &mut steps[i] {
                p.meta = self.shared.meta;
            }
        }
        // Pattern ids, with the hole count in force at each log. A value can take no byte of its own (a
        // run of tags covers it), so the values a batch announces are bounded by what holding them costs,
        // against the output limit, before any is held.
        let mut holes_now: HashMap<u64, Option<usize>> = HashMap::new();
        let mut announced = 0usize;
        for (k, &kind) in kinds.iter().enumerate() {
            match (&mut steps[k], kind) {
                (Step::Define(Datum::PatternDefine(p)), _) => {
                    holes_now.insert(p.id, Some(p.pos_list.len()));
                }
                (Step::Define(Datum::PatternDelete { id }), _) => {
                    holes_now.insert(*id, None);
                }
                (Step::Log(p), D_PATTERN) => {
                    let id = r.varint()?;
                    let holes = match holes_now.get(&id) {
                        Some(h) => *h,
                        None => state.pattern_holes(id),
                    }
                    .ok_or(ErrorKind::UnknownId {
                        space: Space::Pattern,
                        id,
                    })?;
                    announced = announced.saturating_add(holes);
                    if announced > limit / VALUE_COST {
                        return Err(ErrorKind::OutputLimit { limit });
                    }
                    for hole in 0..holes {
                        let next = columns.len();
                        let c = *index.entry((id, hole)).or_insert(next);
                        if c == next {
                            columns.push(((id, hole), 0));
                        }
                        columns[c].1 += 1;
                    }
                    p.content = PendingContent::Pattern { id, holes };
                }
                _ => {}
            }
        }
        // Raw texts.
        for (k, &kind) in kinds.iter().enumerate() {
            if let (Step::Log(p), D_RAW_LINE | D_RAW_BYTES) = (&mut steps[k], kind) {
                let text = if kind == D_RAW_LINE {
                    utf8(r.line()?)?
                } else {
                    r.string()?
                };
                p.content = PendingContent::Raw(text);
            }
        }
        // Columns, each whole, in order of first use.
        let mut values: Vec<std::vec::IntoIter<DynValue>> = Vec::with_capacity(columns.len());
        for (key, count) in &columns {
            let st = self.shared.columns.entry(*key).or_default();
            values.push(read_column(st, &mut r, *count)?.into_iter());
        }
        if !r.rest().is_empty() {
            return Err(malformed("bytes left after the last column"));
        }
        // Assemble and apply, in datum order.
        for step in steps {
            let datum = match step {
                Step::Define(d) => d,
                Step::Log(p) => {
                    let content = match p.content {
                        PendingContent::Raw(text) => Content::Raw(text),
                        PendingContent::Pattern { id, holes } => {
                            let mut vals = Vec::with_capacity(holes);
                            for hole in 0..holes {
                                let c = index.get(&(id, hole)).copied().unwrap_or(usize::MAX);
                                let v = values
                                    .get_mut(c)
                                    .and_then(Iterator::next)
                                    .ok_or_else(|| malformed("a column ran out of values"))?;
                                vals.push(v);
                            }
                            Content::Pattern { id, values: vals }
                        }
                    };
                    Datum::Log(Log {
                        timestamp: p.timestamp,
                        status: p.meta[0].map(Value::Dict),
                        service: p.meta[1].map(Value::Dict),
                        tags: p.meta[2].map(Value::Dict),
                        content,
                        json: None,
                        uuid: None,
                    })
                }
            };
            apply(state, datum)?;
        }
        let st = &*state;
        self.shared
            .forget(&deleted, |id| st.pattern_holes(id).is_some());
        Ok(())
    }
}

/// What holding one announced value costs the decoder (its tag, its partial and its value), charged
/// against the batch's output limit.
const VALUE_COST: usize = 96;

/// A value of a column once its tag and body are read; shaped values wait for their digit runs.
enum Partial {
    Done(Value),
    Exact(usize),
    /// A shape of the column's table (by index) or one that did not fit it, and where this value's
    /// digit runs start among the column's numbers.
    Shaped {
        index: Option<usize>,
        unlisted: Option<Vec<u8>>,
        runs: usize,
        first: usize,
    },
}

/// Reads one column of `count` values: tags, bodies, digit runs by position, then the values in order
/// (exact references resolve against the ring as the encoder saw it, value by value).
fn read_column(
    st: &mut ColumnState,
    r: &mut Reader<'_>,
    count: usize,
) -> Result<Vec<DynValue>, ErrorKind> {
    let mut tags = Vec::with_capacity(count.min(1 << 16));
    r.runs(count, |t| {
        tags.push(t);
        Ok(())
    })?;
    let mut partials = Vec::with_capacity(tags.len());
    let mut numbers_len = 0usize;
    let mut max_runs = 0usize;
    for &t in &tags {
        let kind = (t & 0xff) as u8;
        let sub = t >> 8;
        if sub != 0 && !matches!(kind & !AS_STRING, V_EXACT | V_SHAPED) {
            return Err(malformed(
                "a tag with a reference on a kind that takes none",
            ));
        }
        let partial = match kind & !AS_STRING {
            V_INT => {
                st.last_int = st.last_int.wrapping_add(r.signed()?);
                Partial::Done(Value::Int(st.last_int))
            }
            V_FLOAT => {
                let b: [u8; 8] = r
                    .take(8)?
                    .try_into()
                    .map_err(|_| malformed("a float is not 8 bytes"))?;
                let f = f64::from_le_bytes(b);
                if !f.is_finite() {
                    return Err(ErrorKind::NonFiniteFloat);
                }
                Partial::Done(Value::Float(f))
            }
            V_DICT => {
                st.last_dict = st.last_dict.wrapping_add(r.signed()?);
                Partial::Done(Value::Dict(st.last_dict as u64))
            }
            V_FALSE => Partial::Done(Value::Bool(false)),
            V_TRUE => Partial::Done(Value::Bool(true)),
            V_RAW_JSON => Partial::Done(Value::RawJson(r.string()?)),
            V_LITERAL => Partial::Done(Value::Str(r.string()?)),
            V_EXACT => Partial::Exact(
                usize::try_from(sub).map_err(|_| malformed("an exact value's slot"))?,
            ),
            V_SHAPED => {
                // A shape new to the table that did not fit it is used once, from here.
                let (index, unlisted, runs) = match sub {
                    NEW_SHAPE => {
                        let shape = r.bytes()?.to_vec();
                        if shape.len() > MAX_SHAPE {
                            return Err(malformed("a shape longer than any tabled value's"));
                        }
                        let runs = runs_in(&shape)?;
                        if st.shapes.len() >= MAX_SHAPES {
                            (None, Some(shape), runs)
                        } else {
                            (st.add_shape(&shape, runs), None, runs)
                        }
                    }
                    reference => {
                        let k = if reference == SAME_SHAPE {
                            st.last_shape
                                .ok_or_else(|| malformed("'same shape' without a previous shape"))?
                        } else {
                            usize::try_from(reference - FIRST_SHAPE)
                                .ok()
                                .filter(|&k| k < st.shapes.len())
                                .ok_or_else(|| malformed("a reference to a shape never sent"))?
                        };
                        (Some(k), None, st.shapes.run_count(k))
                    }
                };
                st.last_shape = index;
                let first = numbers_len;
                numbers_len = numbers_len.saturating_add(runs);
                max_runs = max_runs.max(runs);
                Partial::Shaped {
                    index,
                    unlisted,
                    runs,
                    first,
                }
            }
            k => return Err(malformed(&format!("unknown value kind {k}"))),
        };
        partials.push(partial);
    }
    // Digit runs by position: every shaped value's first run, then every second run… Each is a delta
    // against the same run of the previous value of its shape (absolute for a shape off the table).
    // Every run takes at least a byte, so their number is bounded by the batch before it is held.
    if numbers_len > r.rest().len() {
        return Err(malformed("more digit runs than the batch has bytes"));
    }
    let mut numbers = vec![0i64; numbers_len];
    for run in 0..max_runs {
        for p in &partials {
            if let Partial::Shaped {
                index, runs, first, ..
            } = p
            {
                if run >= *runs {
                    continue;
                }
                let delta = r.signed()?;
                numbers[first + run] = match index {
                    Some(k) => {
                        let prev = &mut st.shapes.runs_mut(*k)[run];
                        *prev = prev.wrapping_add(delta);
                        *prev
                    }
                    None => delta,
                };
            }
        }
    }
    let mut out = Vec::with_capacity(partials.len());
    for (p, t) in partials.into_iter().zip(&tags) {
        let value = match p {
            Partial::Done(v) => v,
            Partial::Exact(slot) => Value::Str(
                st.exact
                    .get(slot)
                    .ok_or_else(|| malformed("a reference to an exact value never sent"))?
                    .clone(),
            ),
            Partial::Shaped {
                index,
                unlisted,
                runs,
                first,
            } => {
                let shape = match (index, &unlisted) {
                    (Some(k), _) => st.shapes.shape(k),
                    (None, Some(shape)) => shape.as_slice(),
                    (None, None) => return Err(malformed("shape index")),
                };
                let s = render_shape(shape, &numbers[first..first + runs])?;
                if s.len() <= MAX_TABLED {
                    st.remember_exact(&s);
                }
                Value::Str(s)
            }
        };
        out.push(DynValue {
            value,
            render_as_string: (*t as u8) & AS_STRING != 0,
        });
    }
    Ok(out)
}

/// A shape's text with its digit runs filled in; each number must fit its run's width.
fn render_shape(shape: &[u8], numbers: &[i64]) -> Result<String, ErrorKind> {
    let mut text = Vec::with_capacity(shape.len() + 8);
    let (mut run, mut i) = (0, 0);
    while i < shape.len() {
        if shape[i] == 0 {
            let width = usize::from(shape[i + 1]);
            if width == 0 {
                text.push(0);
            } else {
                let n = *numbers
                    .get(run)
                    .ok_or_else(|| malformed("a shape with more runs than its value"))?;
                if n < 0 || n >= 10i64.pow(width as u32) {
                    return Err(malformed("a digit run does not fit its width"));
                }
                push_digits(&mut text, n as u64, width);
                run += 1;
            }
            i += 2;
        } else {
            text.push(shape[i]);
            i += 1;
        }
    }
    String::from_utf8(text).map_err(|e| ErrorKind::InvalidUtf8(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One column of `count` values whose tags are `tag` and whose bodies are `body`.
    fn column(tag: u64, count: u64, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        put_varint(&mut out, tag);
        put_varint(&mut out, count);
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn a_shape_table_keeps_each_shape_and_its_runs_apart() {
        let mut shapes = Shapes::default();
        assert_eq!(shapes.push(b"ip \0\x01.\0\x01", 2), 0);
        assert_eq!(shapes.push(b"id", 0), 1);
        assert_eq!(shapes.push(b"\0\x03ms", 1), 2);
        shapes.runs_mut(0).copy_from_slice(&[10, 20]);
        shapes.runs_mut(2)[0] = 7;
        assert_eq!(shapes.len(), 3);
        assert_eq!(shapes.shape(1), b"id");
        assert_eq!(shapes.runs_mut(0), &[10, 20]);
        assert_eq!(shapes.run_count(1), 0);
        assert_eq!(shapes.runs_mut(2), &[7]);
        assert_eq!(shapes.find(b"\0\x03ms"), Some(2));
        assert_eq!(shapes.find(b"i"), None);
    }

    #[test]
    fn a_new_shape_longer_than_any_tabled_value_is_refused() {
        let tag = u64::from(V_SHAPED) | NEW_SHAPE << 8;
        let mut body = Vec::new();
        put_bytes(&mut body, &[b'a'; MAX_SHAPE]);
        let data = column(tag, 1, &body);
        let values = read_column(&mut ColumnState::default(), &mut Reader::new(&data), 1)
            .expect("the longest shape a tabled value can have");
        assert!(matches!(&values[0].value, Value::Str(s) if s.len() == MAX_SHAPE));

        let mut body = Vec::new();
        put_bytes(&mut body, &[b'a'; MAX_SHAPE + 1]);
        let data = column(tag, 1, &body);
        let err = read_column(&mut ColumnState::default(), &mut Reader::new(&data), 1)
            .expect_err("no encoder makes such a shape");
        assert!(err.to_string().contains("longer than"), "{err}");
    }
}
