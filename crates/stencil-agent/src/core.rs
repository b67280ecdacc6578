//! The stream worker's sans-I/O core (TRANSPORT.md §4–§8, §15): a deterministic state machine. Events go
//! in with the current time; effects come out. It owns the in-flight tracker, the snapshot and planner,
//! ack checking, error classification, backoff and the poison escape hatch. It has no tasks, sockets,
//! clock or randomness of its own (the RNG is seeded by the caller), so every transition can be tested
//! with a fake clock.

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use stencil_codec::datum::Datum;
use stencil_codec::BatchEncoder;

use crate::payload::{Checkpoint, Payload, Ref};
use crate::snapshot::Snapshot;
use stencil_codec::{ExtEncoder, Extensions};

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

/// Timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// Connect timeout.
    Connect,
    /// Stream lifetime.
    Lifetime,
    /// Drain timeout.
    Drain,
    /// Stability window.
    Stability,
    /// Backoff delay.
    Backoff,
    /// Pause recheck.
    Recheck,
    /// Shutdown grace.
    Grace,
    /// Trailer wait after half-close.
    Close,
    /// How long data batches wait for the intake's first answer (its echo or an ack) on a new stream.
    Echo,
}

const TIMERS: [Timer; 9] = [
    Timer::Connect,
    Timer::Lifetime,
    Timer::Drain,
    Timer::Stability,
    Timer::Backoff,
    Timer::Recheck,
    Timer::Grace,
    Timer::Close,
    Timer::Echo,
];

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
}

#[derive(Debug)]
struct Tracked {
    payload: Payload,
    refs: BTreeSet<Ref>,
    size: usize,
    sent: Option<(Epoch, Instant)>,
    rejections: u32,
    /// Poison-ladder step reached (0 none, 1 full snapshot tried, 3 sent raw).
    step: u8,
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
    rng: u64,
    tracked: VecDeque<Tracked>,
    sent_count: usize,
    bytes: usize,
    /// Memory held by the tracked payloads.
    memory: usize,
    next_id: u32,
    expected: VecDeque<u32>,
    known: BTreeSet<Ref>,
    /// Bytes of the defines the current stream has carried (what the intake holds for it).
    known_bytes: usize,
    /// Data payloads sent on the current stream.
    sent_on_stream: u64,
    snapshot: Snapshot,
    timers: [Option<Instant>; 9],
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
            rng: seed ^ 0x5DEE_CE66_D1CE_4E5B,
            tracked: VecDeque::new(),
            sent_count: 0,
            bytes: 0,
            memory: 0,
            next_id: 1,
            expected: VecDeque::new(),
            known: BTreeSet::new(),
            known_bytes: 0,
            sent_on_stream: 0,
            snapshot: Snapshot::default(),
            timers: [None; 9],
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
        (self.tracked.len(), self.bytes)
    }

    /// True when the core can take another payload (back-pressure otherwise).
    pub fn wants_input(&self) -> bool {
        !self.input_closed
            && !matches!(self.state, State::Closing | State::Stopped)
            && (self.tracked.is_empty()
                || (self.tracked.len() < self.config.max_inflight_payloads
                    && self.bytes < self.config.max_inflight_bytes
                    && self.memory < self.config.max_inflight_memory))
    }

    /// The earliest armed timer.
    pub fn next_deadline(&self) -> Option<(Instant, Timer)> {
        TIMERS
            .iter()
            .zip(self.timers.iter())
            .filter_map(|(k, t)| t.map(|at| (at, *k)))
            .min_by_key(|(at, _)| *at)
    }

    /// When `timer` fires, if armed.
    pub fn deadline(&self, timer: Timer) -> Option<Instant> {
        self.timers[timer as usize]
    }

    fn arm(&mut self, timer: Timer, at: Instant) {
        self.timers[timer as usize] = Some(at);
    }

    fn disarm(&mut self, timer: Timer) {
        self.timers[timer as usize] = None;
    }

    fn random(&mut self) -> f64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// The backoff delay for the current error count: uniform in [d/2, d], d = min(max, base · 2ⁿ).
    pub fn backoff_delay(&mut self) -> Duration {
        let n = self.error_count.min(7);
        let d = self
            .config
            .backoff_base
            .saturating_mul(1 << n)
            .min(self.config.backoff_max);
        d.mul_f64(0.5 + 0.5 * self.random())
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
                if self.timers[t as usize].is_some_and(|at| at <= now) {
                    self.timers[t as usize] = None;
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
        for t in TIMERS {
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
        for t in self.tracked.iter_mut() {
            if t.sent.take().is_some() {
                self.stats.replayed += 1;
            }
        }
        self.sent_count = 0;
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
        let jitter = if self.first_stream {
            0.5 + 0.6 * self.random()
        } else {
            1.0 - self.config.lifetime_jitter + 2.0 * self.config.lifetime_jitter * self.random()
        };
        self.first_stream = false;
        self.arm(Timer::Lifetime, now + self.config.lifetime.mul_f64(jitter));
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
        let held = self.timers[Timer::Echo as usize].take().is_some();
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
                Err(err) => {
                    tracing::warn!(error = %err, "wire extensions unavailable; staying on v3")
                }
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
        if self.timers[Timer::Echo as usize].is_some() {
            // A new stream's data batches wait (briefly) for the intake's first answer.
            return;
        }
        while self.sent_count < self.tracked.len() {
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
            let i = self.sent_count;
            let (mut prefix, dangling) = self.snapshot.plan(&self.known, &self.tracked[i].payload);
            if dangling > 0 {
                // Cannot happen while no define is dropped. If it does, never send an unresolved
                // reference: count it and send the affected logs as raw text.
                self.stats.dangling += dangling as u64;
                tracing::error!(
                    dangling,
                    "a payload references ids no define resolves; sending its logs raw"
                );
                self.degrade(i);
                prefix = self.snapshot.plan(&self.known, &self.tracked[i].payload).0;
            }
            let payload = &self.tracked[i].payload;
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
                        tracing::error!(error = %err, "extension encoding failed; replacing the stream with plain v3");
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
            self.tracked[i].sent = Some((self.epoch, now));
            self.sent_count += 1;
            self.send(id, data, out);
        }
    }

    fn admit(&mut self, p: Payload, now: Instant, out: &mut Vec<Effect>) {
        let refs = self.snapshot.expand(&p.refs);
        self.snapshot.protect(&refs);
        let size = p.size;
        self.bytes += size;
        self.memory += p.memory;
        self.tracked.push_back(Tracked {
            payload: p,
            refs,
            size,
            sent: None,
            rejections: 0,
            step: 0,
        });
        self.pump(now, out);
    }

    fn ack(&mut self, id: u32, status: i32, now: Instant, out: &mut Vec<Effect>) {
        // Response headers come at the latest with the first ack: without an echo by then, the intake
        // does not speak the extensions, and this stream stays plain v3.
        self.before_echo = None;
        if self.timers[Timer::Echo as usize].take().is_some() {
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
        let Some(t) = self.tracked.pop_front() else {
            return self.fail(
                Failure {
                    code: None,
                    message: format!("ack for batch {id} with nothing in flight"),
                },
                now,
                out,
            );
        };
        self.sent_count -= 1;
        self.bytes -= t.size;
        self.memory -= t.payload.memory;
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
        if self.state == State::Draining && self.sent_count == 0 {
            self.disarm(Timer::Drain);
            self.stats.rotations += 1;
            out.push(Effect::HalfClose(self.epoch));
            self.open(now, out);
        } else {
            self.maybe_close(now, out);
        }
    }

    fn maybe_close(&mut self, now: Instant, out: &mut Vec<Effect>) {
        if self.state == State::ShuttingDown && self.input_closed && self.tracked.is_empty() {
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
                if self.sent_count == 0 {
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
                self.timers = [None; 9];
                self.set_state(State::Stopped, out);
            }
            State::Connecting => {
                self.timers = [None; 9];
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
                self.timers = [None; 9];
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
        tracing::warn!(code = ?f.code, message = %f.message, state = self.state.name(), "stream failed");
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
                    tracing::error!("the snapshot keeps being rejected; pausing");
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

    /// The poison ladder (TRANSPORT.md §8): the oldest unacked batch is the suspect. Every
    /// `poison_threshold` rejections move it one step: a full snapshot on the next stream (skipped for
    /// `RESOURCE_EXHAUSTED`), then splitting it in two (repeated on the failing half), then sending a
    /// single log as raw text rebuilt here, then dropping it (counted, with the intake's message, its
    /// checkpoints released). Returns true when the snapshot itself keeps failing (pause).
    fn poison(&mut self, code: i32, message: &str, out: &mut Vec<Effect>) -> bool {
        let threshold = self.config.poison_threshold.max(1);
        if self.sent_count == 0 {
            // Batch 0 is the suspect: fall back to the lazy snapshot, then pause.
            self.snapshot_rejections += 1;
            if self.snapshot_rejections >= threshold {
                self.full_snapshot = false;
            }
            return self.snapshot_rejections >= 2 * threshold;
        }
        let Some(head) = self.tracked.front_mut() else {
            return false;
        };
        head.rejections += 1;
        if head.rejections < threshold {
            return false;
        }
        head.rejections = 0;
        if head.step == 0 && code != code::RESOURCE_EXHAUSTED {
            head.step = 1;
            self.full_snapshot = true;
            return false;
        }
        self.stats.poison_steps += 1;
        if head.payload.logs > 1 {
            self.split_head();
        } else if head.step < 3 && self.raw_head() {
            tracing::warn!(reason = message, "sending a rejected log as raw text");
        } else {
            self.drop_head(message, out);
        }
        false
    }

    fn take_head(&mut self) -> Option<Tracked> {
        let t = self.tracked.pop_front()?;
        if t.sent.is_some() {
            self.sent_count -= 1;
        }
        self.bytes -= t.size;
        self.memory -= t.payload.memory;
        Some(t)
    }

    fn push_front(&mut self, payload: Payload, step: u8) {
        let refs = self.snapshot.expand(&payload.refs);
        self.snapshot.protect(&refs);
        let size = payload.size;
        self.bytes += size;
        self.memory += payload.memory;
        self.tracked.push_front(Tracked {
            payload,
            refs,
            size,
            sent: None,
            rejections: 0,
            step,
        });
    }

    /// Splits the head payload after its middle log (entries stay in order). The first half carries the
    /// state changes and no checkpoint; the second half releases the original checkpoints.
    fn split_head(&mut self) {
        let Some(t) = self.take_head() else { return };
        let p = &t.payload;
        let mut seen = 0;
        let cut = p
            .wire
            .iter()
            .position(|d| {
                seen += usize::from(matches!(d, Datum::Log(_)));
                seen == p.logs / 2
            })
            .map_or(p.wire.len(), |i| i + 1);
        let build = |datums: &[Datum], cps: Vec<Checkpoint>| {
            Payload::build(p.seq, datums.to_vec(), cps, 0, &self.encoder)
        };
        match (
            build(&p.wire[..cut], Vec::new()),
            build(&p.wire[cut..], p.checkpoints.clone()),
        ) {
            (Ok(mut first), Ok(mut second)) => {
                first.changes = p.changes.clone();
                second.changes = Vec::new().into();
                self.snapshot.release(&t.refs);
                self.push_front(second, 1);
                self.push_front(first, 1);
            }
            _ => {
                // Re-encoding what already encoded once cannot fail; keep the payload if it does.
                self.tracked.push_front(t);
            }
        }
    }

    /// The text of `log` rebuilt from the snapshot and `defines`, as a raw log with the same metadata.
    /// `None` when a reference cannot be resolved or the text is empty (v3 cannot carry it raw).
    fn as_raw(&self, log: &stencil_codec::datum::Log, defines: &[Datum]) -> Option<Datum> {
        let mut state = stencil_codec::StreamState::new(
            stencil_codec::Generation::V3,
            stencil_codec::Limits::default(),
        );
        for d in self.snapshot.defines().chain(defines.iter()) {
            let _ = match d {
                Datum::PatternDefine(p) => state.define_pattern(p),
                Datum::DictDefine(e) => state.define_dict(e),
                Datum::SchemaDefine(s) => state.define_schema(s),
                _ => Ok(()),
            };
        }
        let record = state.reconstruct(log).ok()?;
        let bytes = stencil_codec::original_bytes(&record).ok()?;
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if text.is_empty() {
            return None;
        }
        // Metadata stays only if the stream can resolve it before this log: known, or in the snapshot
        // (the planner prefixes it).
        let resolvable = |id: u64| {
            let r = (crate::payload::SpaceKey::Dictionary, id);
            self.known.contains(&r)
                || self
                    .snapshot
                    .defines()
                    .any(|d| crate::snapshot::target(d) == Some(r))
        };
        let keep = |v: &Option<stencil_codec::datum::Value>| {
            v.clone().filter(|v| match v {
                stencil_codec::datum::Value::Dict(id) => resolvable(*id),
                _ => true,
            })
        };
        Some(Datum::Log(stencil_codec::datum::Log {
            status: keep(&log.status),
            service: keep(&log.service),
            tags: keep(&log.tags),
            content: stencil_codec::datum::Content::Raw(text),
            json: None,
            ..log.clone()
        }))
    }

    /// Rebuilds payload `i` with every log sent raw (logs that cannot be rebuilt are dropped and
    /// counted). Its defines and checkpoints are kept.
    fn degrade(&mut self, i: usize) {
        let p = &self.tracked[i].payload;
        let defines: Vec<Datum> = p
            .wire
            .iter()
            .filter(|d| !matches!(d, Datum::Log(_)))
            .cloned()
            .collect();
        let mut datums = Vec::with_capacity(p.wire.len());
        let mut lost = 0;
        for d in p.wire.iter() {
            match d {
                Datum::Log(log) => match self.as_raw(log, &defines) {
                    Some(raw) => datums.push(raw),
                    None => lost += 1,
                },
                other => datums.push(other.clone()),
            }
        }
        self.stats.dropped_logs += lost;
        let changes = p.changes.clone();
        if let Ok(mut payload) = Payload::build(
            p.seq,
            datums,
            p.checkpoints.clone(),
            p.raw_bytes,
            &self.encoder,
        ) {
            payload.changes = changes;
            let refs = self.snapshot.expand(&payload.refs);
            self.snapshot.protect(&refs);
            let old = std::mem::replace(&mut self.tracked[i].refs, refs);
            self.snapshot.release(&old);
            let size = payload.size;
            self.bytes = self.bytes - self.tracked[i].size + size;
            self.memory = self.memory - self.tracked[i].payload.memory + payload.memory;
            self.tracked[i].size = size;
            self.tracked[i].payload = payload;
        }
    }

    /// Replaces a single-log head payload by the same log as raw text. False when that is impossible
    /// (the log is then dropped).
    fn raw_head(&mut self) -> bool {
        let Some(head) = self.tracked.front() else {
            return false;
        };
        let defines: Vec<Datum> = head
            .payload
            .wire
            .iter()
            .filter(|d| !matches!(d, Datum::Log(_)))
            .cloned()
            .collect();
        let Some(Datum::Log(log)) = head
            .payload
            .wire
            .iter()
            .find(|d| matches!(d, Datum::Log(_)))
        else {
            return false;
        };
        let Some(raw) = self.as_raw(log, &defines) else {
            return false;
        };
        let mut datums = defines;
        datums.push(raw);
        let (seq, cps, raw_bytes) = (
            head.payload.seq,
            head.payload.checkpoints.clone(),
            head.payload.raw_bytes,
        );
        let changes = head.payload.changes.clone();
        let Ok(mut payload) = Payload::build(seq, datums, cps, raw_bytes, &self.encoder) else {
            return false;
        };
        payload.changes = changes;
        let Some(t) = self.take_head() else {
            return false;
        };
        self.snapshot.release(&t.refs);
        self.push_front(payload, 3);
        true
    }

    fn drop_head(&mut self, message: &str, out: &mut Vec<Effect>) {
        let Some(t) = self.take_head() else { return };
        self.snapshot.ack(&t.refs, &t.payload.changes);
        self.stats.dropped_logs += t.payload.logs as u64;
        tracing::error!(
            seq = t.payload.seq,
            logs = t.payload.logs,
            reason = message,
            "dropping a poison payload"
        );
        out.push(Effect::Dropped {
            seq: t.payload.seq,
            checkpoints: t.payload.checkpoints,
            logs: t.payload.logs,
            reason: message.to_owned(),
        });
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
