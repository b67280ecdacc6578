//! The stream worker's sans-I/O core (TRANSPORT.md §4–§8, §15): a deterministic state machine. Events go
//! in with the current time; effects come out, logging included ([`Notice`]), so the core has no tasks,
//! sockets, clock, logger or randomness of its own (the jitter is seeded by the caller), and every
//! transition can be tested with a fake clock.
//!
//! This module is the stream lifecycle: opening, the echo, sending with the planner, acks, rotation,
//! failures and shutdown. Its parts live beside it: [`timers`] (the clocks and jitter), `inflight`
//! (the payloads held until their ack) and `poison` (the ladder for payloads the intake keeps
//! rejecting).

mod inflight;
mod poison;
pub mod timers;

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use stencil_codec::datum::Datum;
use stencil_codec::BatchEncoder;

use crate::payload::{Checkpoint, Payload, Ref};
use crate::snapshot::Snapshot;
use inflight::Inflight;
use stencil_codec::{ExtEncoder, Extensions};
pub use timers::Timer;
use timers::{Jitter, Timers};

/// A stream incarnation number; it only increases.
pub type Epoch = u64;

/// gRPC status codes the core reasons about.
pub mod code {
    /// OK.
    pub const OK: i32 = 0;
    /// CANCELLED.
    pub const CANCELLED: i32 = 1;
    /// INVALID_ARGUMENT.
    pub const INVALID_ARGUMENT: i32 = 3;
    /// PERMISSION_DENIED.
    pub const PERMISSION_DENIED: i32 = 7;
    /// RESOURCE_EXHAUSTED.
    pub const RESOURCE_EXHAUSTED: i32 = 8;
    /// FAILED_PRECONDITION.
    pub const FAILED_PRECONDITION: i32 = 9;
    /// OUT_OF_RANGE.
    pub const OUT_OF_RANGE: i32 = 11;
    /// UNIMPLEMENTED.
    pub const UNIMPLEMENTED: i32 = 12;
    /// UNAUTHENTICATED.
    pub const UNAUTHENTICATED: i32 = 16;
}

/// Timings and limits (TRANSPORT.md §13 defaults).
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Stream lifetime before rotation.
    pub lifetime: Duration,
    /// ± jitter on the lifetime (0.10 = ±10 %).
    pub lifetime_jitter: f64,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// How long a draining stream waits for its acks.
    pub drain_timeout: Duration,
    /// How long a half-closed stream waits for its trailer.
    pub close_timeout: Duration,
    /// Uptime (with an ack) after which the error count resets.
    pub stability_window: Duration,
    /// First backoff step.
    pub backoff_base: Duration,
    /// Backoff cap.
    pub backoff_max: Duration,
    /// Retry interval while paused.
    pub recheck_interval: Duration,
    /// Shutdown grace period.
    pub grace_period: Duration,
    /// Most payloads in flight.
    pub max_inflight_payloads: usize,
    /// Most encoded bytes in flight.
    pub max_inflight_bytes: usize,
    /// Most memory held by payloads in flight ([`Payload::memory`]): new templates make payloads hold
    /// several times their wire size.
    pub max_inflight_memory: usize,
    /// Rejections of the same payload per poison-ladder step.
    pub poison_threshold: u32,
    /// Largest encoded batch 0; past it, batch 0 carries the longest ordered prefix that fits and the
    /// rest travels as payload prefixes.
    pub max_batch_bytes: usize,
    /// Wire extensions to ask for (`stencil-extensions`); used on a stream only once the intake echoes
    /// them. Empty (the default) = plain v3.
    pub extensions: Extensions,
    /// The zstd level of the `stream-zstd` context, once agreed.
    pub stream_level: i32,
    /// With extensions asked, how long a new stream's data batches may wait for the intake's first
    /// answer (batch 0 never waits). Response headers come at the latest with the first ack, so this
    /// bounds the wait only for an intake that neither sends headers early nor acks batch 0.
    pub echo_wait: Duration,
    /// v3 keeps deletes off the wire, so an intake's state for a stream grows until the stream ends.
    /// Past this many defines sent on one stream, it is rotated (like a lifetime rotation) so that the
    /// intake never reaches its own limits (100,000 patterns per stream by default).
    pub max_stream_entries: usize,
    /// The same, in define bytes (the intake's default limit is 64 MiB per stream).
    pub max_stream_state_bytes: usize,
    /// Index of the worker's pipeline: the `pipeline` label of its metrics, so that the series of
    /// several pipelines add up instead of overwriting each other.
    pub pipeline: usize,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            lifetime: Duration::from_secs(900),
            lifetime_jitter: 0.10,
            connect_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(5),
            close_timeout: Duration::from_secs(5),
            stability_window: Duration::from_secs(30),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(120),
            recheck_interval: Duration::from_secs(300),
            grace_period: Duration::from_secs(30),
            max_inflight_payloads: 50,
            max_inflight_bytes: 32 << 20,
            max_inflight_memory: 16 << 20,
            poison_threshold: 3,
            max_batch_bytes: 4 << 20,
            extensions: Extensions::default(),
            stream_level: stencil_codec::extensions::STREAM_LEVEL,
            echo_wait: Duration::from_secs(1),
            max_stream_entries: 10_000,
            max_stream_state_bytes: 8 << 20,
            pipeline: 0,
        }
    }
}

/// Why the worker is paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pause {
    /// The API key was refused.
    Auth,
    /// The intake does not speak our protocol.
    Protocol,
}

/// Worker states (TRANSPORT.md §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Built, not started.
    Idle,
    /// A stream is opening.
    Connecting,
    /// Sending and acking.
    Active,
    /// Lifetime over: waiting for outstanding acks before rotating.
    Draining,
    /// Waiting before the next attempt.
    Backoff,
    /// Not retrying until the recheck timer or a key reload.
    Paused(Pause),
    /// Stop requested: sending the rest and waiting for acks within the grace period.
    ShuttingDown,
    /// Half-closed; waiting for the trailer.
    Closing,
    /// Done.
    Stopped,
}

impl State {
    /// A short label for metrics and health.
    pub fn name(&self) -> &'static str {
        match self {
            State::Idle => "idle",
            State::Connecting => "connecting",
            State::Active => "active",
            State::Draining => "draining",
            State::Backoff => "backoff",
            State::Paused(Pause::Auth) => "paused_auth",
            State::Paused(Pause::Protocol) => "paused_protocol",
            State::ShuttingDown => "shutting_down",
            State::Closing => "closing",
            State::Stopped => "stopped",
        }
    }
}

/// How a stream ended or failed to open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The gRPC status code, or `None` for a transport error (reset, TLS, socket).
    pub code: Option<i32>,
    /// The status message.
    pub message: String,
}

impl Failure {
    /// A clean end (`OK`).
    pub fn ok() -> Self {
        Failure {
            code: Some(code::OK),
            message: String::new(),
        }
    }
}

/// Inputs of the core.
#[derive(Debug, Clone)]
pub enum Event {
    /// Begin connecting.
    Start,
    /// Shut down gracefully.
    Stop,
    /// No more payloads will come.
    InputClosed,
    /// A payload from the batcher (offer only when [`Core::wants_input`]).
    Payload(Payload),
    /// The stream of this epoch opened.
    Opened(Epoch),
    /// The stream of this epoch could not open.
    OpenFailed(Epoch, Failure),
    /// The response headers of this epoch's stream arrived, echoing these extensions (empty when the
    /// intake did not echo). They may arrive late, or never: the stream sends v3 until then.
    Echo(Epoch, Extensions),
    /// An ack: (epoch, batch id, status).
    Ack(Epoch, u32, i32),
    /// The stream of this epoch ended (`code` OK = clean end).
    Ended(Epoch, Failure),
    /// A timer fired (the core checks that it is still due).
    Timer(Timer),
    /// The API key changed.
    ApiKeyReloaded,
}

/// Outputs of the core, for the driver to carry out in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Open a stream for this epoch.
    Open(Epoch),
    /// Send a batch on the epoch's stream.
    Send {
        /// The epoch.
        epoch: Epoch,
        /// The batch id.
        batch_id: u32,
        /// `StatefulBatch.data`.
        data: bytes::Bytes,
    },
    /// Half-close the epoch's stream (no more batches) and let it finish.
    HalfClose(Epoch),
    /// Cancel the epoch's stream.
    Cancel(Epoch),
    /// Hand these checkpoints to the registry (an acked payload, in production order).
    Release {
        /// The payload's production number.
        seq: u64,
        /// Its checkpoints.
        checkpoints: Vec<Checkpoint>,
        /// Logs acked.
        logs: usize,
    },
    /// Logs given up on (poison), with the intake's reason; their checkpoints are released too.
    Dropped {
        /// The payload's production number.
        seq: u64,
        /// Its checkpoints.
        checkpoints: Vec<Checkpoint>,
        /// Logs dropped.
        logs: usize,
        /// Why.
        reason: String,
    },
    /// The worker's state changed.
    State(State),
    /// Something the operator should hear about, for the driver to log.
    Notice(Notice),
}

/// What the core has to say (the driver logs it; the core has no logger).
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    /// A stream failed or could not open (a warning: the worker backs off, pauses or rotates).
    StreamFailed {
        /// The gRPC status code, or `None` for a transport error.
        code: Option<i32>,
        /// The status message.
        message: String,
        /// The state the worker was in.
        state: &'static str,
    },
    /// The intake echoed extensions this agent could not set up; the stream stays on plain v3.
    ExtensionsUnavailable(String),
    /// Encoding with the extensions failed (a bug): the stream is replaced, and later ones use plain v3.
    ExtensionEncodingFailed(String),
    /// A payload referenced this many ids that no define resolves (a bug); its logs are sent raw.
    Dangling(usize),
    /// The snapshot (batch 0) keeps being rejected: the worker pauses until the recheck.
    SnapshotRejected,
    /// A log the intake rejects even alone is sent again as raw text.
    SentRaw {
        /// The intake's reason.
        reason: String,
    },
}

/// Counters, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CoreStats {
    /// Batches sent (snapshots included).
    pub batches_sent: u64,
    /// Bytes of `data` sent.
    pub bytes_sent: u64,
    /// Payloads released after their ack.
    pub released: u64,
    /// Payloads resent on a new epoch.
    pub replayed: u64,
    /// References no define resolved (must stay 0).
    pub dangling: u64,
    /// Stream failures.
    pub failures: u64,
    /// Soft rotations (lifetime, drained, server end, state size).
    pub rotations: u64,
    /// Rotations because the stream's intake-side state reached `max_stream_entries` or
    /// `max_stream_state_bytes`.
    pub state_rotations: u64,
    /// Logs dropped by the poison ladder.
    pub dropped_logs: u64,
    /// Steps down the poison ladder (split, degrade, raw rebuild).
    pub poison_steps: u64,
    /// Batches sent with the negotiated extensions.
    pub ext_batches: u64,
    /// Bytes of those batches.
    pub ext_bytes: u64,
    /// Streams on which the intake echoed the extensions.
    pub ext_streams: u64,
}

/// The worker core.
#[derive(Debug)]
pub struct Core {
    config: CoreConfig,
    encoder: BatchEncoder,
    state: State,
    epoch: Epoch,
    first_stream: bool,
    jitter: Jitter,
    inflight: Inflight,
    next_id: u32,
    expected: VecDeque<u32>,
    known: BTreeSet<Ref>,
    /// Bytes of the defines the current stream has carried (what the intake holds for it).
    known_bytes: usize,
    /// Data payloads sent on the current stream.
    sent_on_stream: u64,
    snapshot: Snapshot,
    timers: Timers,
    error_count: u32,
    data_acks: u32,
    stable: bool,
    input_closed: bool,
    full_snapshot: bool,
    snapshot_rejections: u32,
    stats: CoreStats,
    /// The current stream's extension encoder, once the intake echoed the extensions.
    ext: Option<ExtEncoder>,
    /// The state datums sent on the current stream in plain v3, kept until the echo (or the first ack
    /// without one) so that the extension encoder starts from the stream's state.
    before_echo: Option<Vec<Datum>>,
}

impl Core {
    /// A core in `Idle`; `seed` drives the lifetime and backoff jitter.
    pub fn new(config: CoreConfig, encoder: BatchEncoder, seed: u64) -> Self {
        Core {
            config,
            encoder,
            state: State::Idle,
            epoch: 0,
            first_stream: true,
            jitter: Jitter::new(seed),
            inflight: Inflight::default(),
            next_id: 1,
            expected: VecDeque::new(),
            known: BTreeSet::new(),
            known_bytes: 0,
            sent_on_stream: 0,
            snapshot: Snapshot::default(),
            timers: Timers::default(),
            error_count: 0,
            data_acks: 0,
            stable: false,
            input_closed: false,
            full_snapshot: false,
            snapshot_rejections: 0,
            stats: CoreStats::default(),
            ext: None,
            before_echo: None,
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The current epoch.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// The configuration.
    pub fn config(&self) -> &CoreConfig {
        &self.config
    }

    /// Counters since the core was created.
    pub fn stats(&self) -> CoreStats {
        self.stats
    }

    /// Consecutive error count.
    pub fn error_count(&self) -> u32 {
        self.error_count
    }

    /// (payloads, encoded bytes) in flight.
    pub fn inflight(&self) -> (usize, usize) {
        (self.inflight.len(), self.inflight.bytes())
    }

    /// True when the core can take another payload (back-pressure otherwise).
    pub fn wants_input(&self) -> bool {
        !self.input_closed
            && !matches!(self.state, State::Closing | State::Stopped)
            && self.inflight.has_room(&self.config)
    }

    /// The earliest armed timer.
    pub fn next_deadline(&self) -> Option<(Instant, Timer)> {
        self.timers.next()
    }

    /// When `timer` fires, if armed.
    pub fn deadline(&self, timer: Timer) -> Option<Instant> {
        self.timers.get(timer)
    }

    fn arm(&mut self, timer: Timer, at: Instant) {
        self.timers.arm(timer, at);
    }

    fn disarm(&mut self, timer: Timer) {
        self.timers.disarm(timer);
    }

    /// The backoff delay for the current error count: uniform in [d/2, d], d = min(max, base · 2ⁿ).
    pub fn backoff_delay(&mut self) -> Duration {
        self.jitter.backoff(
            self.error_count,
            self.config.backoff_base,
            self.config.backoff_max,
        )
    }

    fn set_state(&mut self, state: State, out: &mut Vec<Effect>) {
        if self.state != state {
            self.state = state;
            out.push(Effect::State(state));
        }
    }

    /// Handles one event at time `now` and returns the effects, in order.
    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<Effect> {
        let mut out = Vec::new();
        match event {
            Event::Start => {
                if self.state == State::Idle {
                    self.open(now, &mut out);
                }
            }
            Event::Stop => self.stop(now, &mut out),
            Event::InputClosed => {
                self.input_closed = true;
                self.maybe_close(now, &mut out);
            }
            Event::Payload(p) => self.admit(p, now, &mut out),
            Event::Opened(e) => self.opened(e, now, &mut out),
            Event::Echo(e, echo) => self.echo(e, echo, now, &mut out),
            Event::OpenFailed(e, f) => {
                if e == self.epoch && self.state == State::Connecting {
                    self.fail(f, now, &mut out);
                }
            }
            Event::Ack(e, id, status) => {
                if e == self.epoch
                    && matches!(
                        self.state,
                        State::Active | State::Draining | State::ShuttingDown | State::Closing
                    )
                {
                    self.ack(id, status, now, &mut out);
                }
            }
            Event::Ended(e, f) => {
                if e == self.epoch {
                    self.ended(f, now, &mut out);
                }
            }
            Event::Timer(t) => {
                if self.timers.fire(t, now) {
                    self.timer(t, now, &mut out);
                }
            }
            Event::ApiKeyReloaded => {
                if matches!(self.state, State::Paused(_)) {
                    self.disarm(Timer::Recheck);
                    self.open(now, &mut out);
                }
            }
        }
        out
    }

    fn open(&mut self, now: Instant, out: &mut Vec<Effect>) {
        self.epoch += 1;
        for t in Timer::ALL {
            if !matches!(t, Timer::Grace) {
                self.disarm(t);
            }
        }
        self.arm(Timer::Connect, now + self.config.connect_timeout);
        out.push(Effect::Open(self.epoch));
        self.set_state(State::Connecting, out);
    }

    fn opened(&mut self, e: Epoch, now: Instant, out: &mut Vec<Effect>) {
        if e != self.epoch || self.state != State::Connecting {
            out.push(Effect::Cancel(e)); // a late stream is never leaked
            return;
        }
        self.disarm(Timer::Connect);
        // A new stream starts in plain v3 with fresh contexts; replays are re-encoded, not resent.
        self.ext = None;
        self.before_echo = (!self.config.extensions.is_empty()).then(Vec::new);
        if self.before_echo.is_some() {
            self.arm(Timer::Echo, now + self.config.echo_wait);
        }
        // Reset the tracker: every sent payload becomes buffered again, in order.
        self.stats.replayed += self.inflight.unsend_all();
        self.next_id = 1;
        self.expected = VecDeque::from([0]);
        let (mut datums, _) = self.snapshot.batch0(self.full_snapshot);
        let mut data = self.encode(&datums);
        if data.len() > self.config.max_batch_bytes {
            // The longest ordered prefix that fits (binary search on the datum count).
            let (mut lo, mut hi) = (0, datums.len());
            while lo < hi {
                let mid = (lo + hi).div_ceil(2);
                if self.encode(&datums[..mid]).len() <= self.config.max_batch_bytes {
                    lo = mid;
                } else {
                    hi = mid - 1;
                }
            }
            datums.truncate(lo);
            data = self.encode(&datums);
        }
        self.known = datums.iter().filter_map(crate::snapshot::target).collect();
        self.known_bytes = datums.iter().map(define_bytes).sum();
        self.sent_on_stream = 0;
        if let Some(record) = self.before_echo.as_mut() {
            record.extend(datums.iter().filter(|d| d.is_state_change()).cloned());
        }
        self.send(0, data, out);
        let lifetime = self.jitter.lifetime(
            self.config.lifetime,
            self.config.lifetime_jitter,
            self.first_stream,
        );
        self.first_stream = false;
        self.arm(Timer::Lifetime, now + lifetime);
        self.arm(Timer::Stability, now + self.config.stability_window);
        self.data_acks = 0;
        self.stable = false;
        self.set_state(State::Active, out);
        self.pump(now, out);
    }

    /// The intake echoed `echo`: later batches of this stream use what both sides agree on. The switch
    /// happens at the next batch sent, which carries the extension marker.
    fn echo(&mut self, e: Epoch, echo: Extensions, now: Instant, out: &mut Vec<Effect>) {
        if e != self.epoch || self.ext.is_some() || !matches!(self.state, State::Active) {
            return;
        }
        let held = self.timers.take(Timer::Echo);
        let agreed = Extensions::agreed(self.config.extensions, echo);
        if let (Some(prior), false) = (self.before_echo.take(), agreed.is_empty()) {
            match ExtEncoder::with_level(
                agreed,
                self.encoder.compression(),
                &prior,
                self.config.stream_level,
            ) {
                Ok(ext) => {
                    self.stats.ext_streams += 1;
                    self.ext = Some(ext);
                }
                Err(err) => out.push(Effect::Notice(Notice::ExtensionsUnavailable(
                    err.to_string(),
                ))),
            }
        }
        if held {
            // Data batches waited for this answer; send them, in whichever wire it allows.
            self.pump(now, out);
        }
    }

    /// The wire of the current stream (`v3` until an echo was seen).
    pub fn wire_name(&self) -> &'static str {
        self.ext.as_ref().map_or("v3", |x| x.agreed().wire_name())
    }

    fn encode(&self, datums: &[Datum]) -> bytes::Bytes {
        // Encoding canonical datums cannot fail for v3 payloads the engine produced; an error here means
        // a bug, and sending an empty batch would lose defines, so it aborts loudly.
        match self.encoder.encode(datums) {
            Ok(e) => bytes::Bytes::from(e.data),
            Err(err) => panic!("stencil-agent: encoding a batch failed: {err}"),
        }
    }

    fn send(&mut self, batch_id: u32, data: bytes::Bytes, out: &mut Vec<Effect>) {
        self.stats.batches_sent += 1;
        self.stats.bytes_sent += data.len() as u64;
        out.push(Effect::Send {
            epoch: self.epoch,
            batch_id,
            data,
        });
    }

    /// Sends buffered payloads, each with the defines its stream lacks.
    fn pump(&mut self, now: Instant, out: &mut Vec<Effect>) {
        if !matches!(self.state, State::Active | State::ShuttingDown) {
            return;
        }
        if self.timers.is_armed(Timer::Echo) {
            // A new stream's data batches wait (briefly) for the intake's first answer.
            return;
        }
        while let Some(i) = self.inflight.next_unsent() {
            // The intake holds every define this stream carried: rotate before it reaches its limits
            // (after at least one payload, so that a new stream always makes progress).
            if self.state == State::Active
                && self.sent_on_stream > 0
                && (self.known.len() >= self.config.max_stream_entries
                    || self.known_bytes >= self.config.max_stream_state_bytes)
            {
                self.stats.state_rotations += 1;
                return self.timer(Timer::Lifetime, now, out);
            }
            let (mut prefix, dangling) = self.snapshot.plan(&self.known, self.inflight.payload(i));
            if dangling > 0 {
                // Cannot happen while no define is dropped. If it does, never send an unresolved
                // reference: count it and send the affected logs as raw text.
                self.stats.dangling += dangling as u64;
                out.push(Effect::Notice(Notice::Dangling(dangling)));
                self.degrade(i);
                prefix = self.snapshot.plan(&self.known, self.inflight.payload(i)).0;
            }
            let payload = self.inflight.payload(i);
            let data = if let Some(ext) = self.ext.as_mut() {
                let encoded = if prefix.is_empty() {
                    ext.encode(&payload.wire)
                } else {
                    let mut all = prefix.clone();
                    all.extend(payload.wire.iter().cloned());
                    ext.encode(&all)
                };
                match encoded {
                    Ok(data) => {
                        self.stats.ext_batches += 1;
                        self.stats.ext_bytes += data.len() as u64;
                        bytes::Bytes::from(data)
                    }
                    Err(err) => {
                        // Cannot happen for datums the engine made. The stream may already carry
                        // extension batches, so end it; later streams stay on plain v3.
                        out.push(Effect::Notice(Notice::ExtensionEncodingFailed(
                            err.to_string(),
                        )));
                        self.config.extensions = Extensions::default();
                        self.ext = None;
                        return self.fail(
                            Failure {
                                code: None,
                                message: format!("extension encoding failed: {err}"),
                            },
                            now,
                            out,
                        );
                    }
                }
            } else if prefix.is_empty() {
                match &payload.encoded {
                    Some(e) => bytes::Bytes::from(e.data.clone()),
                    None => self.encode(&payload.wire),
                }
            } else {
                let mut all = prefix.clone();
                all.extend(payload.wire.iter().cloned());
                self.encode(&all)
            };
            for d in prefix.iter().chain(payload.wire.iter()) {
                if let Some(r) = crate::snapshot::target(d) {
                    if self.known.insert(r) {
                        self.known_bytes += define_bytes(d);
                    }
                }
            }
            self.sent_on_stream += 1;
            if let (Some(record), None) = (self.before_echo.as_mut(), self.ext.as_ref()) {
                record.extend(
                    prefix
                        .iter()
                        .chain(payload.wire.iter())
                        .filter(|d| d.is_state_change())
                        .cloned(),
                );
            }
            let id = self.next_id;
            self.next_id = self.next_id.saturating_add(1);
            self.expected.push_back(id);
            self.inflight.mark_sent(i, self.epoch, now);
            self.send(id, data, out);
        }
    }

    fn admit(&mut self, p: Payload, now: Instant, out: &mut Vec<Effect>) {
        self.inflight.push_back(p, &mut self.snapshot);
        self.pump(now, out);
    }

    fn ack(&mut self, id: u32, status: i32, now: Instant, out: &mut Vec<Effect>) {
        // Response headers come at the latest with the first ack: without an echo by then, the intake
        // does not speak the extensions, and this stream stays plain v3.
        self.before_echo = None;
        if self.timers.take(Timer::Echo) {
            self.pump(now, out);
        }
        if status != 1 {
            let message = format!("batch {id} acked with status {status} (a NACK)");
            return self.fail(
                Failure {
                    code: Some(code::INVALID_ARGUMENT),
                    message,
                },
                now,
                out,
            );
        }
        if self.expected.front() == Some(&0) && id == 1 {
            self.expected.pop_front(); // the snapshot's ack is optional
        }
        if self.expected.front() != Some(&id) {
            let message = format!("ack for batch {id}, expected {:?}", self.expected.front());
            return self.fail(
                Failure {
                    code: None,
                    message,
                },
                now,
                out,
            );
        }
        self.expected.pop_front();
        if id == 0 {
            self.snapshot_rejections = 0;
            self.full_snapshot = false;
            return;
        }
        let Some(t) = self.inflight.take_head() else {
            return self.fail(
                Failure {
                    code: None,
                    message: format!("ack for batch {id} with nothing in flight"),
                },
                now,
                out,
            );
        };
        self.snapshot.ack(&t.refs, &t.payload.changes);
        self.stats.released += 1;
        self.data_acks += 1;
        if self.stable {
            self.error_count = 0;
        }
        out.push(Effect::Release {
            seq: t.payload.seq,
            checkpoints: t.payload.checkpoints,
            logs: t.payload.logs,
        });
        if self.state == State::Draining && self.inflight.sent() == 0 {
            self.disarm(Timer::Drain);
            self.stats.rotations += 1;
            out.push(Effect::HalfClose(self.epoch));
            self.open(now, out);
        } else {
            self.maybe_close(now, out);
        }
    }

    fn maybe_close(&mut self, now: Instant, out: &mut Vec<Effect>) {
        if self.state == State::ShuttingDown && self.input_closed && self.inflight.is_empty() {
            self.disarm(Timer::Grace);
            out.push(Effect::HalfClose(self.epoch));
            self.arm(Timer::Close, now + self.config.close_timeout);
            self.set_state(State::Closing, out);
        }
    }

    fn ended(&mut self, f: Failure, now: Instant, out: &mut Vec<Effect>) {
        match self.state {
            State::Closing => {
                self.disarm(Timer::Close);
                self.set_state(State::Stopped, out);
            }
            State::Active | State::Draining if f.code == Some(code::OK) && self.data_acks > 0 => {
                // The intake ended the stream cleanly after acking: a soft rotation, no backoff.
                self.stats.rotations += 1;
                self.open(now, out);
            }
            State::Active | State::Draining | State::ShuttingDown | State::Connecting => {
                self.fail(f, now, out)
            }
            _ => {}
        }
    }

    fn timer(&mut self, t: Timer, now: Instant, out: &mut Vec<Effect>) {
        match (t, self.state) {
            (Timer::Connect, State::Connecting) => self.fail(
                Failure {
                    code: None,
                    message: "connect timeout".into(),
                },
                now,
                out,
            ),
            (Timer::Lifetime, State::Active) => {
                if self.inflight.sent() == 0 {
                    self.stats.rotations += 1;
                    out.push(Effect::HalfClose(self.epoch));
                    self.open(now, out);
                } else {
                    self.arm(Timer::Drain, now + self.config.drain_timeout);
                    self.set_state(State::Draining, out);
                }
            }
            (Timer::Drain, State::Draining) => {
                self.stats.rotations += 1;
                out.push(Effect::Cancel(self.epoch));
                self.open(now, out);
            }
            (Timer::Echo, State::Active | State::Draining | State::ShuttingDown) => {
                self.pump(now, out)
            }
            (Timer::Stability, State::Active | State::Draining | State::ShuttingDown) => {
                if self.data_acks > 0 {
                    self.error_count = 0;
                }
                self.stable = true;
            }
            (Timer::Backoff, State::Backoff) | (Timer::Recheck, State::Paused(_)) => {
                self.open(now, out)
            }
            (Timer::Grace, State::ShuttingDown) => {
                out.push(Effect::HalfClose(self.epoch));
                self.arm(Timer::Close, now + self.config.close_timeout);
                self.set_state(State::Closing, out);
            }
            (Timer::Close, State::Closing) => {
                out.push(Effect::Cancel(self.epoch));
                self.set_state(State::Stopped, out);
            }
            _ => {}
        }
    }

    fn stop(&mut self, now: Instant, out: &mut Vec<Effect>) {
        match self.state {
            State::Idle | State::Backoff | State::Paused(_) => {
                self.timers.clear();
                self.set_state(State::Stopped, out);
            }
            State::Connecting => {
                self.timers.clear();
                out.push(Effect::Cancel(self.epoch));
                self.set_state(State::Stopped, out);
            }
            State::Active | State::Draining => {
                self.disarm(Timer::Lifetime);
                self.disarm(Timer::Drain);
                self.arm(Timer::Grace, now + self.config.grace_period);
                self.set_state(State::ShuttingDown, out);
                self.pump(now, out);
                self.maybe_close(now, out);
            }
            State::ShuttingDown | State::Closing | State::Stopped => {}
        }
    }

    fn fail(&mut self, f: Failure, now: Instant, out: &mut Vec<Effect>) {
        self.stats.failures += 1;
        match self.state {
            State::ShuttingDown | State::Closing => {
                out.push(Effect::Cancel(self.epoch));
                self.timers.clear();
                self.set_state(State::Stopped, out);
                return;
            }
            State::Stopped | State::Idle => return,
            _ => {}
        }
        out.push(Effect::Cancel(self.epoch));
        self.disarm(Timer::Lifetime);
        self.disarm(Timer::Drain);
        self.disarm(Timer::Stability);
        self.disarm(Timer::Connect);
        out.push(Effect::Notice(Notice::StreamFailed {
            code: f.code,
            message: f.message.clone(),
            state: self.state.name(),
        }));
        match f.code {
            Some(code::UNAUTHENTICATED | code::PERMISSION_DENIED) => {
                self.arm(Timer::Recheck, now + self.config.recheck_interval);
                self.set_state(State::Paused(Pause::Auth), out);
                return;
            }
            Some(code::UNIMPLEMENTED | code::FAILED_PRECONDITION) => {
                self.arm(Timer::Recheck, now + self.config.recheck_interval);
                self.set_state(State::Paused(Pause::Protocol), out);
                return;
            }
            Some(c @ (code::INVALID_ARGUMENT | code::OUT_OF_RANGE | code::RESOURCE_EXHAUSTED)) => {
                self.error_count = (self.error_count + 1).min(7);
                if self.poison(c, &f.message, out) {
                    out.push(Effect::Notice(Notice::SnapshotRejected));
                    self.arm(Timer::Recheck, now + self.config.recheck_interval);
                    self.set_state(State::Paused(Pause::Protocol), out);
                    return;
                }
            }
            _ => self.error_count = (self.error_count + 1).min(7),
        }
        let delay = self.backoff_delay();
        self.arm(Timer::Backoff, now + delay);
        self.set_state(State::Backoff, out);
    }
}

/// About what a define costs the intake to hold (its payload; 0 for anything else).
fn define_bytes(d: &Datum) -> usize {
    match d {
        Datum::PatternDefine(p) => p.template.len() + 4 * p.pos_list.len() + 16,
        Datum::DictDefine(e) => e.value.len() + 16,
        Datum::SchemaDefine(s) => 9 * s.keys.len() + 24,
        _ => 0,
    }
}
