//! The stream worker's sans-I/O core (TRANSPORT.md §4–§8, §15): a deterministic state machine. Events go
//! in with the current time; effects come out, logging included ([`Notice`]), so the core has no tasks,
//! sockets, clock, logger or randomness of its own (the jitter is seeded by the caller), and every
//! transition can be tested with a fake clock.
//!
//! This module is the stream lifecycle: opening, the echo, sending with the planner, acks, rotation,
//! failures and shutdown. Its parts live beside it: [`timers`] (the clocks and jitter), `inflight`
//! (the payloads held until their ack) and `poison` (the ladder for payloads the intake keeps
//! rejecting).

mod config;
mod events;
mod inflight;
mod poison;
pub mod timers;

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use stencil_codec::datum::Datum;
use stencil_codec::{BatchEncoder, Unplacer};

use crate::payload::{Payload, Ref};
use crate::snapshot::Snapshot;
pub use config::CoreConfig;
pub use events::{code, CoreStats, Effect, Epoch, Event, Failure, Notice, Pause, State};
use inflight::Inflight;
use stencil_codec::{ExtEncoder, Extensions};
pub use timers::Timer;
use timers::{Jitter, Timers};

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
    /// The defines the intake holds for the current stream, each with its size.
    known: BTreeMap<Ref, usize>,
    /// Their bytes summed (what the intake holds for the stream, against `max_stream_state_bytes`).
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
    /// While the current stream has not agreed to `json-order` (and the agent asks for it): what turns
    /// the JSON logs whose schema places their message into their text, and keeps such schemas off the
    /// stream ([`stencil_codec::json_order`]).
    unplacer: Option<Unplacer>,
    /// Schema defines the unplacer kept out of batch 0. They come from the snapshot, so a later payload
    /// that needs them gets them in front (they are not in `known`). A schema withheld from a data
    /// payload is in `known` (later payloads of the stream that reference it may still be in flight,
    /// and the snapshot does not hold it yet), so a stream that withheld one stays without `json-order`
    /// even if the echo comes later.
    withheld_at_open: u64,
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
            known: BTreeMap::new(),
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
            unplacer: None,
            withheld_at_open: 0,
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
        self.unplacer = self.config.extensions.json_order.then(Unplacer::new);
        if let Some(unplaced) = self.unplace(&datums) {
            datums = unplaced;
        }
        self.withheld_at_open = self.unplacer.as_ref().map_or(0, Unplacer::withheld);
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
        self.known = datums
            .iter()
            .filter_map(|d| Some((crate::snapshot::target(d)?, define_bytes(d))))
            .collect();
        self.known_bytes = self.known.values().sum();
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
        let withheld = self.unplacer.as_ref().map_or(0, Unplacer::withheld);
        if agreed.json_order && withheld == self.withheld_at_open {
            // From now on the stream's JSON schemas may place their message; those kept out of batch
            // 0 are sent with the first log that needs them.
            self.unplacer = None;
        }
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

    /// How many sources of the current stream go as raw text and how many structured, (raw,
    /// structured); (0, 0) on plain v3, where every log the engine structured stays so.
    pub fn source_forms(&self) -> (usize, usize) {
        self.ext.as_ref().map_or((0, 0), ExtEncoder::source_forms)
    }

    /// The wire of the current stream (`v3` until an echo was seen).
    pub fn wire_name(&self) -> &'static str {
        self.ext.as_ref().map_or("v3", |x| x.agreed().wire_name())
    }

    /// `datums` (one batch's worth, in order) as the current stream may carry them: `None` when as they
    /// are. Rendering a log the engine made cannot fail; if it did, the datums go as they are (an
    /// intake without `json-order` then puts the message last: the same document, other member order).
    fn unplace(&mut self, datums: &[Datum]) -> Option<Vec<Datum>> {
        let unplacer = self.unplacer.as_mut()?;
        let before = unplacer.as_text();
        let rewritten = unplacer.rewrite(datums);
        self.stats.json_as_text += unplacer.as_text() - before;
        match rewritten {
            Ok(rewritten) => rewritten,
            Err(err) => {
                tracing::warn!(error = %err, "a JSON log could not be rendered for a stream without json-order");
                None
            }
        }
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
            // On a stream without `json-order`, logs whose schema places the message go as text (the
            // stream's known set still counts the schemas kept off it: see `withheld_at_open`).
            let unplaced_prefix = self.unplace(&prefix);
            let unplaced = match self.unplacer.is_some() {
                // The payload's datums are shared (an `Arc`), not copied.
                true => self.unplace(&std::sync::Arc::clone(&self.inflight.payload(i).wire)),
                false => None,
            };
            let payload = self.inflight.payload(i);
            let wire: &[Datum] = unplaced.as_deref().unwrap_or(&payload.wire);
            let planned = prefix;
            let prefix = unplaced_prefix.unwrap_or_else(|| planned.clone());
            let data = if let Some(ext) = self.ext.as_mut() {
                // Our intake frees what the engine evicted: the payload's pattern deletes go at the end
                // of its batch (ids are never reused, so nothing after them refers to them), and both
                // ends drop those patterns' native columns. Plain v3 keeps deletes off the wire.
                let deletes = payload
                    .changes
                    .iter()
                    .filter(|d| matches!(d, Datum::PatternDelete { .. }));
                let encoded = if prefix.is_empty() && deletes.clone().next().is_none() {
                    ext.encode(wire)
                } else {
                    let mut all = prefix.clone();
                    all.extend(wire.iter().cloned());
                    all.extend(deletes.cloned());
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
                match (&payload.encoded, &unplaced) {
                    (Some(e), None) => bytes::Bytes::from(e.data.clone()),
                    _ => self.encode(wire),
                }
            } else {
                let mut all = prefix.clone();
                all.extend(wire.iter().cloned());
                self.encode(&all)
            };
            for d in planned.iter().chain(payload.wire.iter()) {
                if let Some(r) = crate::snapshot::target(d) {
                    if let std::collections::btree_map::Entry::Vacant(e) = self.known.entry(r) {
                        self.known_bytes += *e.insert(define_bytes(d));
                    }
                }
            }
            if self.ext.is_some() {
                // An extension stream carries the payload's pattern deletes, and the intake drops those
                // patterns: they no longer count towards the rotation above. (Without this, a stream of
                // ever-new templates rotated every few thousand logs although the intake held little,
                // and each new stream started its zstd contexts, columns and form trial afresh.)
                for d in payload.changes.iter() {
                    if let Datum::PatternDelete { id } = d {
                        if let Some(bytes) =
                            self.known.remove(&(crate::payload::SpaceKey::Pattern, *id))
                        {
                            self.known_bytes -= bytes;
                        }
                    }
                }
            }
            self.sent_on_stream += 1;
            if let (Some(record), None) = (self.before_echo.as_mut(), self.ext.as_ref()) {
                record.extend(
                    prefix
                        .iter()
                        .chain(wire.iter())
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
