//! Stencil's negotiated wire extensions on the v3 stream (`docs/extensions.md`): `stream-zstd` and
//! `native/3`, and the negotiation of `json-order` (a JSON schema field, no batch change; its fallback
//! for streams without it is [`crate::json_order`]).
//!
//! A Datadog intake never sees them: the agent asks with the request header `stencil-extensions`, and only
//! an intake that echoes the header in its response headers gets extension batches. The agent never waits
//! for the echo: it sends plain v3 until it has seen it, then switches at a batch it names by a marker
//! ([`MARKER`]) at the start of that batch's `data`. From that batch on, every batch of the stream is an
//! extension batch:
//!
//! ```text
//! first extension batch := MARKER, flags (bit 0 stream-zstd, bit 1 native/3), window log, body
//! later batches         := body
//! body                  := stream-zstd ? one flushed block of the stream's zstd frame : dd-content-encoding
//! plaintext             := layout byte (0 = v3 LogDatumSequence, 1 = native/3 batch), then the layout
//! ```
//!
//! [`Extensions`] parses and formats the header; [`ExtEncoder`] is the agent's per-stream encoder (with
//! the choice between structure and raw text, below); [`ExtDecoder`] is the intake's per-stream decoder.
//!
//! # Structure only where it pays
//!
//! Columns and templates win on strongly templated logs and lose on short, varied ones, whose words zstd's
//! context already matches across lines. Each source of the stream (the service and tags of its logs: a
//! file, in the agent) is sent either structured or as raw text into the same compressed stream. A
//! *shadow* layout and zstd context, fed the same batches and never sent, sends every source the other
//! way; each source is charged its share of both, and once its other form has been clearly cheaper for a
//! while, it switches (`docs/extensions.md` has the rule). The intake needs no hint: a raw log is a raw
//! log.

use std::fmt;

use foldhash::{HashMap, HashMapExt};

use crate::compression::Compression;
use crate::datum::{Content, Datum, JsonContext, Log};
use crate::error::{EncodeError, ErrorKind};
use crate::native::{NativeDecoder, NativeEncoder};
use crate::state::{Limits, StreamState};
use crate::stream::{StreamCompressor, StreamDecompressor, DEFAULT_WINDOW_LOG, MIN_WINDOW_LOG};
use crate::Generation;

/// The request and response header that carries the negotiation.
pub const HEADER: &str = "stencil-extensions";
/// The name of the stream-scoped zstd extension.
pub const STREAM_ZSTD: &str = "stream-zstd";
/// The name of the extension that places a JSON log's message among its columns
/// ([`crate::datum::SchemaDefine::message_at`], [`crate::json_order`]). It changes no batch layout: it
/// tells the agent that the intake honours that field.
pub const JSON_ORDER: &str = "json-order";
/// The `data` prefix of the first extension batch of a stream (never the start of a zstd frame, a gzip
/// member or a v3 sequence an agent writes).
pub const MARKER: [u8; 4] = [0xFF, b'S', b'T', b'X'];

/// The default zstd level of `stream-zstd` contexts. The context compresses each batch against everything
/// before it, and lazy matching (level 6) finds 6–11 % more of that than level 1 on raw text, where
/// level 3 finds 2 %; the agent's CPU is dominated by the pattern engine, not by this (BENCHMARKS.md,
/// "The default wire"). The intake decodes any level.
pub const STREAM_LEVEL: i32 = 6;

const FLAG_STREAM_ZSTD: u8 = 1;
const FLAG_NATIVE: u8 = 2;
const LAYOUT_V3: u8 = 0;
const LAYOUT_NATIVE: u8 = 1;

/// A set of extensions, as asked for or agreed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Extensions {
    /// `stream-zstd` with this window log, if any.
    pub stream_zstd: Option<u32>,
    /// `native/3`.
    pub native: bool,
    /// `json-order`.
    pub json_order: bool,
}

impl Extensions {
    /// Every extension, with zstd's level-1 window (what `stencil ship` asks for).
    pub const ALL: Extensions = Extensions {
        stream_zstd: Some(DEFAULT_WINDOW_LOG),
        native: true,
        json_order: true,
    };

    /// No extension of the batches (`json-order` alone changes none): plain v3.
    pub fn is_empty(&self) -> bool {
        self.stream_zstd.is_none() && !self.native
    }

    /// Parses a header value (`native/3, stream-zstd;window-log=19`). Unknown names and parameters are
    /// ignored, so that either side can grow new ones; a malformed window log drops `stream-zstd`.
    pub fn parse(value: &str) -> Extensions {
        let mut out = Extensions::default();
        for item in value.split(',') {
            let mut parts = item.split(';').map(str::trim);
            match parts.next() {
                Some(STREAM_ZSTD) => {
                    let mut window = Some(DEFAULT_WINDOW_LOG);
                    for p in parts {
                        if let Some(v) = p.strip_prefix("window-log=") {
                            window = v.parse::<u32>().ok().filter(|w| *w >= MIN_WINDOW_LOG);
                        }
                    }
                    out.stream_zstd = window;
                }
                Some(crate::native::NAME) => out.native = true,
                Some(JSON_ORDER) => out.json_order = true,
                _ => {}
            }
        }
        out
    }

    /// What an intake that supports both, with windows up to `max_window_log`, answers to `asked`.
    pub fn answer(asked: Extensions, max_window_log: u32) -> Extensions {
        Extensions {
            stream_zstd: asked.stream_zstd.map(|w| w.min(max_window_log)),
            native: asked.native,
            json_order: asked.json_order,
        }
    }

    /// The agreed set: what was asked, limited to what the echo confirms (window: the smaller).
    pub fn agreed(asked: Extensions, echo: Extensions) -> Extensions {
        Extensions {
            stream_zstd: match (asked.stream_zstd, echo.stream_zstd) {
                (Some(a), Some(e)) => Some(a.min(e)),
                _ => None,
            },
            native: asked.native && echo.native,
            json_order: asked.json_order && echo.json_order,
        }
    }

    fn flags(&self) -> u8 {
        (if self.stream_zstd.is_some() {
            FLAG_STREAM_ZSTD
        } else {
            0
        }) | if self.native { FLAG_NATIVE } else { 0 }
    }

    /// A short name for summaries and metrics: `v3`, `v3+stream-zstd`, `native/3`,
    /// `native/3+stream-zstd`.
    pub fn wire_name(&self) -> &'static str {
        match (self.native, self.stream_zstd.is_some()) {
            (false, false) => "v3",
            (false, true) => "v3+stream-zstd",
            (true, false) => "native/3",
            (true, true) => "native/3+stream-zstd",
        }
    }
}

impl fmt::Display for Extensions {
    /// The header value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        if self.native {
            f.write_str(crate::native::NAME)?;
            first = false;
        }
        if let Some(w) = self.stream_zstd {
            if !first {
                f.write_str(", ")?;
            }
            write!(f, "{STREAM_ZSTD};window-log={w}")?;
            first = false;
        }
        if self.json_order {
            if !first {
                f.write_str(", ")?;
            }
            f.write_str(JSON_ORDER)?;
        }
        Ok(())
    }
}

/// Which form a source's logs take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Every log as its raw text: structure did not pay on this source.
    Raw,
    /// Pattern logs as patterns and values.
    Structured,
}

impl Mode {
    fn other(self) -> Mode {
        match self {
            Mode::Raw => Mode::Structured,
            Mode::Structured => Mode::Raw,
        }
    }
}

/// Logs a source must have carried before its mode may change.
const PROBATION_LOGS: usize = 50;
/// The other form is taken once its recent bytes are below the real ones by this factor.
const SWITCH_WHEN: f64 = 0.97;
/// The same, after the source has switched once.
const SWITCH_AGAIN_WHEN: f64 = 0.9;
/// Weight of the past in the recent-bytes averages (per batch).
const DECAY: f64 = 0.9;
/// Logs after which, without a switch, a source's mode is final for the stream. A source not seen for
/// as many of the stream's logs no longer keeps the shadow running.
const EVALUATION_LOGS: usize = 20_000;
/// A settled source is weighed again once its cost per log exceeds the one it settled at by this
/// factor.
const REWEIGH_WHEN: f64 = 1.25;
/// Sources remembered per stream; past it, those idle for [`EVALUATION_LOGS`] are forgotten (and, if
/// still too many, all: each then starts again from the stream's overall choice).
const MAX_SOURCES: usize = 4096;

/// A source of logs: its service and tags (in the agent, one input file or socket). Logs whose metadata
/// is not dictionary ids share one source.
type Source = (Option<u64>, Option<u64>);

fn source_of(log: &Log) -> Source {
    let id = |v: &Option<crate::datum::Value>| match v {
        Some(crate::datum::Value::Dict(id)) => Some(*id),
        _ => None,
    };
    (id(&log.service), id(&log.tags))
}

/// What the encoder knows of one source's two forms.
#[derive(Debug, Clone)]
struct Choice {
    mode: Mode,
    /// Decayed (real, shadow) bytes of this source's share of its recent batches.
    recent: (f64, f64),
    /// Logs weighed since the mode last changed.
    logs: usize,
    switches: u32,
    /// The mode held for long enough: it is final for the stream.
    settled: bool,
    /// Just switched to structure: its next batch sends the defines the raw form held back, a cost
    /// paid once that is not weighed against the form.
    fresh: bool,
    /// The stream's log count when the source was last seen.
    last_seen: u64,
    /// Decayed (bytes, logs) of the source's share of what was sent: its cost per log.
    cost: (f64, f64),
    /// Its cost per log when its mode became final.
    settled_cost: f64,
}

impl Choice {
    fn new(mode: Mode, now: u64) -> Self {
        Choice {
            mode,
            recent: (0.0, 0.0),
            logs: 0,
            switches: 0,
            settled: false,
            fresh: false,
            last_seen: now,
            cost: (0.0, 0.0),
            settled_cost: 0.0,
        }
    }

    fn cost_per_log(&self) -> f64 {
        self.cost.0 / self.cost.1.max(1.0)
    }

    fn flip(&mut self) {
        self.mode = self.mode.other();
        self.fresh = self.mode == Mode::Structured;
        self.switches += 1;
        self.logs = 0;
        self.recent = (0.0, 0.0);
    }
}

/// Renders as text each log of a batch that `wanted` names, in datum order (a pattern may be widened
/// mid-batch); every state change is applied. A JSON log's text is its document, serialized compactly in
/// key order: the engine sends a JSON log structurally only when that gives back its line exactly.
fn render_texts(
    render: &mut StreamState,
    datums: &[Datum],
    wanted: &dyn Fn(&Log) -> bool,
) -> Result<Vec<Option<String>>, EncodeError> {
    let mut texts = Vec::with_capacity(datums.len());
    for d in datums {
        let mut text = None;
        match d {
            Datum::Log(log) if wanted(log) => {
                if log.json.is_some() {
                    let record = render.reconstruct(log).map_err(render_error)?;
                    text = Some(crate::reconstruct::record_text(&record));
                } else if let Content::Pattern { .. } = log.content {
                    text = Some(render.message_text(&log.content).map_err(render_error)?);
                }
            }
            Datum::Log(_) => {}
            definition => {
                render.apply_definition(definition).map_err(render_error)?;
            }
        }
        texts.push(text);
    }
    Ok(texts)
}

/// The defines a form holds back until a structured log needs them.
#[derive(Debug, Default, Clone)]
struct Unsent {
    patterns: std::collections::BTreeMap<u64, crate::datum::PatternDefine>,
    schemas: std::collections::BTreeMap<u64, crate::datum::SchemaDefine>,
}

impl Unsent {
    fn is_empty(&self) -> bool {
        self.patterns.is_empty() && self.schemas.is_empty()
    }
}

/// One way of sending the stream's logs: its layout state, its zstd context, and the pattern and schema
/// defines it holds back until a structured log needs them.
struct Form {
    native: Option<NativeEncoder>,
    ctx: Option<StreamCompressor>,
    /// Patterns and JSON schemas defined but not sent: every log of theirs so far went as raw text.
    unsent: Unsent,
    /// The datums this form changes in the batch being encoded (logs turned into raw text, defines
    /// released), kept empty between batches so that its capacity is allocated once, not per batch.
    scratch: Vec<Datum>,
    /// Per datum of the form, the batch's datum or one of `scratch` (see [`Form::mixed_form`]).
    order: Vec<Result<usize, usize>>,
    /// The batch's layout before compression, reused the same way.
    plain: Vec<u8>,
}

impl Form {
    fn new(agreed: Extensions, level: i32) -> std::io::Result<Self> {
        Ok(Form {
            native: agreed.native.then(NativeEncoder::new),
            ctx: agreed
                .stream_zstd
                .map(|w| StreamCompressor::new(level, w))
                .transpose()?,
            unsent: Default::default(),
            scratch: Vec::new(),
            order: Vec::new(),
            plain: Vec::new(),
        })
    }

    /// The form of a batch: the logs `raw` names as their text (taken from `texts`), pattern and JSON
    /// schema defines held back until a log of theirs goes structured. What changes is built into
    /// `owned`; `order` says, per datum of the form, whether it is the batch's datum `i` as it is
    /// (`Ok(i)`) or `owned[j]` (`Err(j)`), so that the datums that stay are not copied.
    fn mixed_form(
        unsent: &mut Unsent,
        datums: &[Datum],
        texts: &mut [Option<String>],
        raw: &dyn Fn(&Log) -> bool,
        owned: &mut Vec<Datum>,
        order: &mut Vec<Result<usize, usize>>,
    ) {
        order.reserve(datums.len());
        let mut own = |d: Datum, order: &mut Vec<Result<usize, usize>>| {
            order.push(Err(owned.len()));
            owned.push(d);
        };
        for (i, (d, text)) in datums.iter().zip(texts.iter_mut()).enumerate() {
            match d {
                Datum::PatternDefine(p) => {
                    unsent.patterns.insert(p.id, p.clone());
                }
                Datum::PatternDelete { id } => {
                    if unsent.patterns.remove(id).is_none() {
                        order.push(Ok(i));
                    }
                }
                Datum::SchemaDefine(d) => {
                    unsent.schemas.insert(d.id, d.clone());
                }
                Datum::SchemaDelete { id } => {
                    if unsent.schemas.remove(id).is_none() {
                        order.push(Ok(i));
                    }
                }
                Datum::Log(log) => match &log.content {
                    // The log's metadata, its text as raw content (its values are not copied: they
                    // are not sent). Each log's text goes to one form only: the other sends it
                    // structured.
                    _ if raw(log) && text.as_ref().is_some_and(|t| !t.is_empty()) => own(
                        Datum::Log(Log {
                            timestamp: log.timestamp,
                            status: log.status.clone(),
                            service: log.service.clone(),
                            tags: log.tags.clone(),
                            content: Content::Raw(text.take().unwrap_or_default()),
                            json: None,
                            uuid: log.uuid.clone(),
                        }),
                        order,
                    ),
                    content => {
                        if let Content::Pattern { id, .. } = content {
                            if let Some(p) = unsent.patterns.remove(id) {
                                own(Datum::PatternDefine(p), order);
                            }
                        }
                        if let Some(JsonContext::Columns { schema, .. }) = &log.json {
                            if let Some(d) = unsent.schemas.remove(schema) {
                                own(Datum::SchemaDefine(d), order);
                            }
                        }
                        order.push(Ok(i));
                    }
                },
                _ => order.push(Ok(i)),
            }
        }
    }

    /// Lays out and compresses one batch in this form, the logs `raw` names as text.
    fn encode(
        &mut self,
        datums: &[Datum],
        texts: &mut [Option<String>],
        compression: Compression,
        raw: &dyn Fn(&Log) -> bool,
    ) -> Result<Vec<u8>, EncodeError> {
        let Form {
            native,
            ctx,
            unsent,
            scratch,
            order,
            plain,
        } = self;
        // A batch with nothing to hold back or render goes as it is.
        let as_is = unsent.is_empty()
            && datums.iter().zip(texts.iter()).all(|(d, t)| match d {
                Datum::Log(log) => t.is_none() || !raw(log),
                _ => true,
            });
        // Empty unless an earlier batch failed half-way.
        scratch.clear();
        order.clear();
        let form: Vec<&Datum> = if as_is {
            datums.iter().collect()
        } else {
            Form::mixed_form(unsent, datums, texts, raw, scratch, order);
            order
                .iter()
                .map(|o| match *o {
                    Ok(i) => &datums[i],
                    Err(j) => &scratch[j],
                })
                .collect()
        };
        plain.clear();
        match native.as_mut() {
            Some(n) if n.supports(&form) => {
                plain.push(LAYOUT_NATIVE);
                n.encode(&form, plain)?;
            }
            _ => {
                plain.push(LAYOUT_V3);
                crate::v3::encode(&form, plain)?;
            }
        }
        drop(form);
        scratch.clear();
        Ok(match ctx.as_mut() {
            Some(ctx) => ctx.compress_batch(plain)?,
            None => compression.compress(plain)?,
        })
    }
}

/// The agent's encoder for one stream once extensions are agreed.
pub struct ExtEncoder {
    agreed: Extensions,
    compression: Compression,
    /// Templates and dictionary, to render logs as text (with native/3 only).
    render: Option<StreamState>,
    /// What goes on the wire: each source's logs in its mode.
    real: Form,
    /// The other form of every source, fed the same batches but never sent: what each source would
    /// cost the other way. Runs while a recently seen source is not settled.
    shadow: Option<Form>,
    sources: HashMap<Source, Choice>,
    /// Decayed (raw, structured) bytes over all sources: the mode a new source starts in.
    overall: (f64, f64),
    /// Logs the stream has carried (counted with native/3, where sources are tracked).
    logs_seen: u64,
    started: bool,
    level: i32,
}

impl fmt::Debug for ExtEncoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExtEncoder")
            .field("agreed", &self.agreed)
            .field("mode", &self.mode())
            .field("sources", &self.sources.len())
            .finish_non_exhaustive()
    }
}

impl ExtEncoder {
    /// An encoder for a stream. `compression` compresses the bodies when `stream-zstd` is not agreed; the
    /// stream contexts use [`STREAM_LEVEL`]. `prior` holds the state datums (defines
    /// and deletes) the stream carried in plain v3 before the switch, in order.
    pub fn new(
        agreed: Extensions,
        compression: Compression,
        prior: &[Datum],
    ) -> Result<Self, EncodeError> {
        Self::with_level(agreed, compression, prior, STREAM_LEVEL)
    }

    /// [`ExtEncoder::new`] with the zstd `level` of the stream contexts (clamped to zstd's range).
    pub fn with_level(
        agreed: Extensions,
        compression: Compression,
        prior: &[Datum],
        level: i32,
    ) -> Result<Self, EncodeError> {
        let level = level.clamp(1, 19);
        let mut encoder = ExtEncoder {
            agreed,
            compression,
            render: agreed
                .native
                .then(|| StreamState::new(Generation::V3, Limits::default())),
            real: Form::new(agreed, level)?,
            // With native/3 both forms start; the first batch picks the real one.
            shadow: agreed
                .native
                .then(|| Form::new(agreed, level))
                .transpose()?,
            sources: HashMap::new(),
            overall: (0.0, 0.0),
            logs_seen: 0,
            started: false,
            level,
        };
        if let Some(render) = encoder.render.as_mut() {
            render_texts(render, prior, &|_| false)?;
        }
        for form in std::iter::once(&mut encoder.real).chain(encoder.shadow.as_mut()) {
            if let Some(native) = form.native.as_mut() {
                native.prime(prior);
            }
        }
        Ok(encoder)
    }

    /// The agreed extensions.
    pub fn agreed(&self) -> Extensions {
        self.agreed
    }

    /// The mode a new source of the stream starts in (raw once raw text has cost less over all
    /// sources so far; each source then goes its own way).
    pub fn mode(&self) -> Mode {
        if self.agreed.native && self.overall.0 < self.overall.1 {
            Mode::Raw
        } else {
            Mode::Structured
        }
    }

    /// How many of the stream's recent sources go as raw text and how many structured: (raw, structured).
    pub fn source_forms(&self) -> (usize, usize) {
        let raw = self
            .sources
            .values()
            .filter(|c| c.mode == Mode::Raw)
            .count();
        (raw, self.sources.len() - raw)
    }

    /// The mode of `source`'s logs.
    pub fn mode_of(&self, service: Option<u64>, tags: Option<u64>) -> Option<Mode> {
        self.sources.get(&(service, tags)).map(|c| c.mode)
    }

    /// Encodes the stream's next batch. The first call writes the marker.
    pub fn encode(&mut self, datums: &[Datum]) -> Result<Vec<u8>, EncodeError> {
        // The batch's logs per source (none without native/3, where every log is structured).
        let mut counts: HashMap<Source, usize> = HashMap::new();
        if self.agreed.native {
            for d in datums {
                if let Datum::Log(log) = d {
                    *counts.entry(source_of(log)).or_default() += 1;
                }
            }
        }
        let total = counts.values().sum::<usize>();
        let (start, now) = (self.mode(), self.logs_seen);
        let mut unsettled = false;
        for source in counts.keys() {
            let c = self
                .sources
                .entry(*source)
                .or_insert_with(|| Choice::new(start, now));
            c.last_seen = now;
            unsettled |= !c.settled;
        }
        if unsettled && self.shadow.is_none() {
            self.shadow = Some(self.fresh_shadow()?);
        }
        let sources = &self.sources;
        // With `json-order` the agent sends JSON logs as documents on purpose (`ship
        // --json-documents`): both forms keep them so, whichever way their source goes.
        let documents = self.agreed.json_order;
        let pinned = |log: &Log| documents && log.json.is_some();
        let mode_raw = |log: &Log| sources.get(&source_of(log)).map(|c| c.mode) == Some(Mode::Raw);
        let raw = |log: &Log| !pinned(log) && mode_raw(log);
        // The shadow sends every source the other way.
        let shadow_raw = |log: &Log| !pinned(log) && !mode_raw(log);
        let shadowed = self.shadow.is_some();
        let mut texts = match self.render.as_mut() {
            Some(render) => render_texts(render, datums, &|log| shadowed || raw(log))?,
            None => vec![None; datums.len()],
        };
        let mut body = self
            .real
            .encode(datums, &mut texts, self.compression, &raw)?;
        if let Some(shadow) = self.shadow.as_mut() {
            let mut other = shadow.encode(datums, &mut texts, self.compression, &shadow_raw)?;
            let trial = !self.started && other.len() < body.len();
            if trial {
                // Both forms start from empty contexts: the first batch is an exact trial, and its
                // sources take the cheaper form (the raw one keeps the defines it held back).
                std::mem::swap(&mut self.real, shadow);
                std::mem::swap(&mut body, &mut other);
            }
            // Each source of the batch is charged its share of both forms' bytes, by its logs: exact
            // when a batch holds one source's logs (an agent reads a file in runs of lines), an
            // average when it mixes them.
            self.overall = (self.overall.0 * DECAY, self.overall.1 * DECAY);
            for (source, n) in &counts {
                let share = *n as f64 / total as f64;
                let (real, shadow) = (body.len() as f64 * share, other.len() as f64 * share);
                self.weigh(*source, *n, real, shadow, trial);
            }
            self.stop_shadow_when_settled();
        }
        self.watch_settled(&counts, total, body.len());
        self.logs_seen += total as u64;
        self.forget_idle_sources();
        let mut data = Vec::with_capacity(body.len() + 6);
        if !self.started {
            self.started = true;
            data.extend_from_slice(&MARKER);
            data.push(self.agreed.flags());
            data.push(self.agreed.stream_zstd.unwrap_or(0) as u8);
        }
        data.extend_from_slice(&body);
        Ok(data)
    }

    /// A shadow started mid-stream (a source appeared after the others settled): it knows the patterns
    /// the real form sent and holds back those it held back, so that its logs fit the native layout and
    /// it costs each source's other form from here.
    fn fresh_shadow(&self) -> Result<Form, EncodeError> {
        let mut shadow = Form::new(self.agreed, self.level)?;
        if let (Some(n), Some(real)) = (shadow.native.as_mut(), self.real.native.as_ref()) {
            *n = NativeEncoder::knowing_patterns_of(real);
        }
        shadow.unsent = self.real.unsent.clone();
        Ok(shadow)
    }

    /// Weighs the batch's `n` logs of `source`, charged `real` and `shadow` bytes. Flips the source once
    /// its other form has been clearly cheaper for a while. With `trial`, the forms were just swapped:
    /// the source takes the other mode first.
    fn weigh(&mut self, source: Source, n: usize, real: f64, shadow: f64, trial: bool) {
        let Some(c) = self.sources.get_mut(&source) else {
            return;
        };
        if trial {
            c.mode = c.mode.other();
        }
        // Over all sources: (raw, structured), the mode new sources start in.
        match c.mode {
            Mode::Raw => {
                self.overall.0 += real;
                self.overall.1 += shadow;
            }
            Mode::Structured => {
                self.overall.0 += shadow;
                self.overall.1 += real;
            }
        }
        if c.settled {
            return;
        }
        if c.fresh {
            c.fresh = false;
            return;
        }
        c.recent = (c.recent.0 * DECAY + real, c.recent.1 * DECAY + shadow);
        c.logs += n;
        // Each switch makes the next one harder: twice the probation, and a clearer margin.
        let shift = c.switches.min(8);
        if c.logs >= EVALUATION_LOGS << shift {
            // The mode has held for long enough: it is final for this stream, unless what the source
            // costs per log drifts far from now (see `watch_settled`). A new stream (rotation,
            // reconnect) weighs both forms again.
            c.settled = true;
            c.settled_cost = c.cost_per_log();
            return;
        }
        let margin = if c.switches == 0 {
            SWITCH_WHEN
        } else {
            SWITCH_AGAIN_WHEN
        };
        if c.logs >= PROBATION_LOGS << shift && c.recent.1 < c.recent.0 * margin {
            // Raw to structured: the source's held-back defines go with its next structured logs.
            // Structured to raw: its defines were sent. The stream keeps its context (and the intake
            // its columns); only the form of the source's next logs changes.
            c.flip();
        }
    }

    /// Follows what each source of the batch costs per log (its share of the batch's bytes). A settled
    /// source whose cost has grown by a quarter since it settled is weighed again: logs change over a
    /// long stream.
    fn watch_settled(&mut self, counts: &HashMap<Source, usize>, total: usize, sent: usize) {
        for (source, n) in counts {
            let Some(c) = self.sources.get_mut(source) else {
                continue;
            };
            let share = sent as f64 * *n as f64 / total as f64;
            c.cost = (c.cost.0 * DECAY + share, c.cost.1 * DECAY + *n as f64);
            if c.settled && c.cost_per_log() > c.settled_cost * REWEIGH_WHEN {
                c.settled = false;
                c.logs = 0;
                c.recent = (0.0, 0.0);
            }
        }
    }

    /// Stops the shadow once no recently seen source is still being weighed (its CPU is saved; a new
    /// source starts another).
    fn stop_shadow_when_settled(&mut self) {
        let now = self.logs_seen;
        let weighing = self
            .sources
            .values()
            .any(|c| !c.settled && now.saturating_sub(c.last_seen) < EVALUATION_LOGS as u64);
        if !weighing {
            self.shadow = None;
        }
    }

    /// Keeps the source table bounded: past [`MAX_SOURCES`], sources idle for [`EVALUATION_LOGS`] logs
    /// go, then all of them if that is not enough.
    fn forget_idle_sources(&mut self) {
        if self.sources.len() <= MAX_SOURCES {
            return;
        }
        let now = self.logs_seen;
        self.sources
            .retain(|_, c| now.saturating_sub(c.last_seen) < EVALUATION_LOGS as u64);
        if self.sources.len() > MAX_SOURCES {
            self.sources.clear();
        }
    }
}

fn render_error(e: ErrorKind) -> EncodeError {
    EncodeError::Rendering(e)
}

/// The intake's side of the extensions for one stream.
#[derive(Debug)]
pub struct ExtDecoder {
    echoed: Extensions,
    max_window_log: u32,
    /// Set by the marker batch.
    active: Option<Active>,
}

#[derive(Debug)]
struct Active {
    flags: u8,
    ctx: Option<StreamDecompressor>,
    native: NativeDecoder,
}

impl ExtDecoder {
    /// A decoder for a stream whose response echoed `echoed`, accepting windows up to `max_window_log`.
    pub fn new(echoed: Extensions, max_window_log: u32) -> Self {
        ExtDecoder {
            echoed,
            max_window_log,
            active: None,
        }
    }

    /// The wire in use: `v3` until the marker, then the extensions it named.
    pub fn wire_name(&self) -> &'static str {
        match &self.active {
            None => "v3",
            Some(a) => Extensions {
                stream_zstd: a.ctx.as_ref().map(StreamDecompressor::window_log),
                native: a.flags & FLAG_NATIVE != 0,
                json_order: false,
            }
            .wire_name(),
        }
    }

    /// Bytes held by the stream context and the column tables.
    pub fn memory(&self) -> usize {
        self.active.as_ref().map_or(0, |a| {
            a.ctx.as_ref().map_or(0, StreamDecompressor::memory) + a.native.state_bytes()
        })
    }

    /// `Some(body)` when `data` is an extension batch (the first one is recognised by its marker);
    /// `None` for a plain v3 batch. A marker on a stream that did not negotiate, or that names more than
    /// was echoed, is refused.
    pub(crate) fn begin<'a>(&mut self, data: &'a [u8]) -> Result<Option<&'a [u8]>, ErrorKind> {
        if self.active.is_some() {
            return Ok(Some(data));
        }
        let Some(rest) = data.strip_prefix(&MARKER[..]) else {
            return Ok(None);
        };
        let refuse = |detail: String| ErrorKind::CorruptPayload {
            codec: "stencil-extensions",
            detail,
        };
        if self.echoed.is_empty() {
            return Err(refuse(
                "an extension batch on a stream that negotiated no extension".into(),
            ));
        }
        let (&flags, rest) = rest
            .split_first()
            .ok_or_else(|| refuse("truncated marker".into()))?;
        let (&window, rest) = rest
            .split_first()
            .ok_or_else(|| refuse("truncated marker".into()))?;
        if flags & !self.echoed.flags() != 0 || flags == 0 {
            return Err(refuse(format!(
                "the batch uses extensions {flags:#04b}, the stream agreed {:#04b}",
                self.echoed.flags()
            )));
        }
        let ctx = if flags & FLAG_STREAM_ZSTD != 0 {
            let window = u32::from(window);
            let cap = self
                .echoed
                .stream_zstd
                .unwrap_or(0)
                .min(self.max_window_log);
            if !(MIN_WINDOW_LOG..=cap).contains(&window) {
                return Err(refuse(format!(
                    "stream-zstd window log {window} is outside {MIN_WINDOW_LOG}..={cap}"
                )));
            }
            Some(StreamDecompressor::new(window)?)
        } else {
            None
        };
        self.active = Some(Active {
            flags,
            ctx,
            native: NativeDecoder::new(),
        });
        Ok(Some(rest))
    }

    /// Decompresses one extension batch body, at most `cap` bytes.
    pub(crate) fn decompress(
        &mut self,
        body: &[u8],
        compression: Compression,
        cap: usize,
    ) -> Result<Vec<u8>, ErrorKind> {
        let Some(active) = self.active.as_mut() else {
            return Err(ErrorKind::StreamFailed);
        };
        match active.ctx.as_mut() {
            Some(ctx) => ctx.decompress_batch(body, cap),
            None => compression.decompress(body, cap),
        }
    }

    /// Decodes one decompressed extension batch, handing each datum to `apply`.
    pub(crate) fn decode(
        &mut self,
        plain: &[u8],
        state: &mut StreamState,
        apply: &mut dyn FnMut(&mut StreamState, Datum) -> Result<(), ErrorKind>,
    ) -> Result<(), ErrorKind> {
        let Some(active) = self.active.as_mut() else {
            return Err(ErrorKind::StreamFailed);
        };
        let (&layout, rest) = plain.split_first().ok_or(ErrorKind::CorruptPayload {
            codec: "stencil-extensions",
            detail: "an empty batch has no layout byte".into(),
        })?;
        match layout {
            LAYOUT_V3 => crate::v3::decode(rest, state, apply),
            LAYOUT_NATIVE if active.flags & FLAG_NATIVE != 0 => {
                active.native.decode(rest, state, apply)
            }
            other => Err(ErrorKind::CorruptPayload {
                codec: "stencil-extensions",
                detail: format!("layout {other} was not negotiated"),
            }),
        }
    }
}
