//! Stencil's negotiated wire extensions on the v3 stream (`docs/extensions.md`): `stream-zstd` and
//! `native/3`.
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
//! context already matches across lines. The encoder keeps a *shadow* zstd context fed the batch's raw
//! lines, exactly what a plain zstd stream would have sent. While the real bytes of the structured
//! batches stay within the shadow's, the stream stays structured; once the recent structured batches
//! cost more than the shadow's raw lines, the stream sends every log as raw text into the same compressed
//! stream (one way: a new stream, at rotation or reconnect, starts structured again). The intake needs no
//! hint: a raw log is a raw log.

use std::fmt;

use prost::Message;

use crate::compression::Compression;
use crate::datum::{Content, Datum, Log};
use crate::error::{EncodeError, ErrorKind};
use crate::native::{NativeDecoder, NativeEncoder};
use crate::state::{Limits, StreamState};
use crate::stream::{StreamCompressor, StreamDecompressor, DEFAULT_WINDOW_LOG, MIN_WINDOW_LOG};
use crate::Generation;

/// The request and response header that carries the negotiation.
pub const HEADER: &str = "stencil-extensions";
/// The name of the stream-scoped zstd extension.
pub const STREAM_ZSTD: &str = "stream-zstd";
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
}

impl Extensions {
    /// Both extensions, with zstd's level-1 window (what `stencil ship` asks for).
    pub const ALL: Extensions = Extensions {
        stream_zstd: Some(DEFAULT_WINDOW_LOG),
        native: true,
    };

    /// No extension: plain v3.
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
        }
        Ok(())
    }
}

/// Which form the encoder gives the stream's logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Every log as its raw text: structure did not pay on this stream.
    Raw,
    /// Pattern logs as patterns and values.
    Structured,
}

/// Logs a stream must have carried before the mode may change.
const PROBATION_LOGS: usize = 50;
/// The other form is taken once its recent bytes are below the real ones by this factor.
const SWITCH_WHEN: f64 = 0.97;
/// The same, after the stream has switched once.
const SWITCH_AGAIN_WHEN: f64 = 0.9;
/// Weight of the past in the recent-bytes averages (per batch).
const DECAY: f64 = 0.9;
/// Logs after which, without a switch, the form is final for the stream and the shadow stops.
const EVALUATION_LOGS: usize = 20_000;

/// Renders each log of a batch as text, in datum order (a pattern may be widened mid-batch).
fn render_texts(
    render: &mut StreamState,
    datums: &[Datum],
) -> Result<Vec<Option<String>>, EncodeError> {
    let mut texts = Vec::with_capacity(datums.len());
    for d in datums {
        let mut text = None;
        match d {
            Datum::PatternDefine(p) => render.define_pattern(p).map_err(render_error)?,
            Datum::PatternDelete { id } => render.delete_pattern(*id),
            Datum::DictDefine(e) => render.define_dict(e).map_err(render_error)?,
            Datum::DictDelete { id } => render.delete_dict(*id),
            Datum::SchemaDefine(d) => render.define_schema(d).map_err(render_error)?,
            Datum::SchemaDelete { id } => render.delete_schema(*id),
            Datum::Log(log) if log.json.is_none() => {
                if let Content::Pattern { .. } = log.content {
                    text = Some(render.message_text(&log.content).map_err(render_error)?);
                }
            }
            _ => {}
        }
        texts.push(text);
    }
    Ok(texts)
}

/// One way of sending the stream's logs: its layout state, its zstd context, and for the raw form the
/// pattern defines it holds back.
struct Form {
    native: Option<NativeEncoder>,
    ctx: Option<StreamCompressor>,
    /// `Some` for the raw form: the patterns defined but not sent.
    unsent: Option<std::collections::BTreeMap<u64, crate::datum::PatternDefine>>,
    /// The raw form's datums of the batch being encoded, kept empty between batches so that its
    /// capacity (a batch of datums, about 220 KiB per 1,000 logs) is allocated once, not per batch.
    scratch: Vec<Datum>,
    /// The batch's layout before compression, reused the same way.
    plain: Vec<u8>,
}

impl Form {
    fn new(agreed: Extensions, level: i32, mode: Mode) -> std::io::Result<Self> {
        Ok(Form {
            native: agreed.native.then(NativeEncoder::new),
            ctx: agreed
                .stream_zstd
                .map(|w| StreamCompressor::new(level, w))
                .transpose()?,
            unsent: (mode == Mode::Raw).then(Default::default),
            scratch: Vec::new(),
            plain: Vec::new(),
        })
    }

    fn mode(&self) -> Mode {
        if self.unsent.is_some() {
            Mode::Raw
        } else {
            Mode::Structured
        }
    }

    /// The raw form of a batch: pattern logs as their text (`texts`), pattern defines held back until
    /// structure is taken (a log that stays structured, a JSON one, brings its define along).
    fn raw_form(
        unsent: &mut std::collections::BTreeMap<u64, crate::datum::PatternDefine>,
        datums: &[Datum],
        texts: &[Option<String>],
        out: &mut Vec<Datum>,
    ) {
        out.reserve(datums.len());
        for (d, text) in datums.iter().zip(texts) {
            match d {
                Datum::PatternDefine(p) => {
                    unsent.insert(p.id, p.clone());
                }
                Datum::PatternDelete { id } => {
                    if unsent.remove(id).is_none() {
                        out.push(d.clone());
                    }
                }
                Datum::Log(log) => match (&log.content, text) {
                    // The log's metadata, its text as raw content (its values are not cloned: they
                    // are not sent).
                    (_, Some(text)) if !text.is_empty() => out.push(Datum::Log(Log {
                        timestamp: log.timestamp,
                        status: log.status.clone(),
                        service: log.service.clone(),
                        tags: log.tags.clone(),
                        content: Content::Raw(text.clone()),
                        json: None,
                        uuid: log.uuid.clone(),
                    })),
                    (Content::Pattern { id, .. }, _) => {
                        if let Some(p) = unsent.remove(id) {
                            out.push(Datum::PatternDefine(p));
                        }
                        out.push(d.clone());
                    }
                    _ => out.push(d.clone()),
                },
                _ => out.push(d.clone()),
            }
        }
    }

    /// Lays out and compresses one batch in this form.
    fn encode(
        &mut self,
        datums: &[Datum],
        texts: &[Option<String>],
        compression: Compression,
    ) -> Result<Vec<u8>, EncodeError> {
        let Form {
            native,
            ctx,
            unsent,
            scratch,
            plain,
        } = self;
        let datums: &[Datum] = match unsent.as_mut() {
            Some(unsent) => {
                // Empty unless an earlier batch failed half-way.
                scratch.clear();
                Form::raw_form(unsent, datums, texts, scratch);
                scratch
            }
            None => datums,
        };
        plain.clear();
        match native.as_mut() {
            Some(n) if n.supports(datums) => {
                plain.push(LAYOUT_NATIVE);
                n.encode(datums, plain)?;
            }
            _ => {
                plain.push(LAYOUT_V3);
                crate::v3::encode(datums)?
                    .encode(plain)
                    .map_err(|e| EncodeError::Compression(std::io::Error::other(e.to_string())))?;
            }
        }
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
    /// What goes on the wire.
    real: Form,
    /// The other form, fed the same batches but never sent: what the stream would cost the other way.
    shadow: Option<Form>,
    /// Defines to send before the next batch (the patterns held back while raw, once structure is taken).
    pending: Vec<Datum>,
    logs_seen: usize,
    /// Decayed sums of (real bytes, shadow bytes) of recent batches.
    recent: (f64, f64),
    started: bool,
    switches: u64,
    level: i32,
}

impl fmt::Debug for ExtEncoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExtEncoder")
            .field("agreed", &self.agreed)
            .field("mode", &self.real.mode())
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
            real: Form::new(agreed, level, Mode::Structured)?,
            // With native/3 both forms start; the first batch picks the real one.
            shadow: agreed
                .native
                .then(|| Form::new(agreed, level, Mode::Raw))
                .transpose()?,
            pending: Vec::new(),
            logs_seen: 0,
            recent: (0.0, 0.0),
            started: false,
            switches: 0,
            level,
        };
        if let Some(render) = encoder.render.as_mut() {
            render_texts(render, prior)?;
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

    /// The form the stream's logs take now.
    pub fn mode(&self) -> Mode {
        self.real.mode()
    }

    /// Encodes the stream's next batch. The first call writes the marker.
    pub fn encode(&mut self, datums: &[Datum]) -> Result<Vec<u8>, EncodeError> {
        let texts = match self.render.as_mut() {
            Some(render) => render_texts(render, datums)?,
            None => vec![None; datums.len()],
        };
        // The batch after a switch to structure carries the defines the raw form held back: a cost paid
        // once, not weighed against the form (it made every such switch look wrong at once).
        let switching = !self.pending.is_empty();
        let mut body = if self.pending.is_empty() {
            self.real.encode(datums, &texts, self.compression)?
        } else {
            let mut all = std::mem::take(&mut self.pending);
            let mut all_texts = vec![None; all.len()];
            all.extend_from_slice(datums);
            all_texts.extend(texts.iter().cloned());
            self.real.encode(&all, &all_texts, self.compression)?
        };
        if let Some(shadow) = self.shadow.as_mut() {
            let mut other = shadow.encode(datums, &texts, self.compression)?;
            if !self.started && other.len() < body.len() {
                // Both forms start from empty contexts: the first batch is an exact trial.
                // The raw form keeps the defines it held back: none of them was sent.
                std::mem::swap(&mut self.real, shadow);
                std::mem::swap(&mut body, &mut other);
            }
            if !switching || std::env::var_os("STENCIL_W").is_some() {
                self.weigh(datums, body.len(), other.len());
            }
            self.decide()?;
        }
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

    fn weigh(&mut self, datums: &[Datum], sent: usize, would: usize) {
        self.recent = (
            self.recent.0 * DECAY + sent as f64,
            self.recent.1 * DECAY + would as f64,
        );
        self.logs_seen += datums.iter().filter(|d| matches!(d, Datum::Log(_))).count();
    }

    /// Takes the shadow's form once it has been clearly cheaper for a while. The stream keeps its
    /// context (and the intake its columns); only the form of the next batches changes, and a fresh
    /// shadow of the form left behind starts (it has no history, so a switch back needs clear evidence).
    fn decide(&mut self) -> Result<(), EncodeError> {
        // Each switch makes the next one harder: twice the probation, and a clearer margin.
        let probation = PROBATION_LOGS << self.switches.min(8);
        let margin = if self.switches == 0 {
            SWITCH_WHEN
        } else {
            SWITCH_AGAIN_WHEN
        };
        if self.logs_seen >= EVALUATION_LOGS << self.switches.min(8) {
            // The form has held for long enough: it is final for this stream, and the shadow's CPU is
            // saved. A new stream (rotation, reconnect) weighs both forms again.
            if std::env::var_os("STENCIL_DBG").is_some() {
                eprintln!("final {:?}", self.real.mode());
            }
            self.shadow = None;
            if self.real.mode() == Mode::Structured {
                // Nothing is rendered as text any more.
                self.render = None;
            }
            return Ok(());
        }
        if self.logs_seen < probation || self.recent.1 >= self.recent.0 * margin {
            return Ok(());
        }
        let left = self.real.mode();
        if std::env::var_os("STENCIL_DBG").is_some() {
            eprintln!(
                "switch from {:?} at seen {} recent {:?} sw {}",
                left, self.logs_seen, self.recent, self.switches
            );
        }
        match left {
            Mode::Raw => {
                // Raw to structured: the patterns held back go first, with the next batch.
                let unsent = self.real.unsent.take().unwrap_or_default();
                self.pending = unsent.into_values().map(Datum::PatternDefine).collect();
            }
            Mode::Structured => {
                // Structured to raw: every define so far was sent.
                self.real.unsent = Some(Default::default());
            }
        }
        let mut shadow = Form::new(self.agreed, self.level, left)?;
        if left == Mode::Structured {
            // The form left behind sent every define so far: its shadow knows their patterns (else
            // their logs would not fit the native layout, and structure would look dearer than it is).
            if let (Some(n), Some(real)) = (shadow.native.as_mut(), self.real.native.as_ref()) {
                *n = NativeEncoder::knowing_patterns_of(real);
            }
        }
        self.shadow = Some(shadow);
        self.switches += 1;
        self.logs_seen = 0;
        self.recent = (0.0, 0.0);
        Ok(())
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
