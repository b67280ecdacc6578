//! The in-flight tracker (TRANSPORT.md §5): every payload the worker holds, in production order, until
//! its ack. The sent ones form a prefix of the queue; a new stream unsends them all, so they replay in
//! order. It keeps the accounting back-pressure needs (payloads, encoded bytes, memory) and pins, in the
//! snapshot, the defines each payload references, so that nothing it needs is evicted before its ack.

use std::collections::{BTreeSet, VecDeque};
use std::time::Instant;

use crate::payload::{Payload, Ref};
use crate::snapshot::Snapshot;

use super::{CoreConfig, Epoch};

/// One payload held until its ack.
#[derive(Debug)]
pub(super) struct Tracked {
    pub(super) payload: Payload,
    /// The defines it needs, pinned in the snapshot while it is held.
    pub(super) refs: BTreeSet<Ref>,
    size: usize,
    /// The stream (and time) it was sent on, if it was.
    pub(super) sent: Option<(Epoch, Instant)>,
    /// Rejections at the current poison-ladder step.
    pub(super) rejections: u32,
    /// Poison-ladder step reached (0 none, 1 full snapshot tried, 3 sent raw).
    pub(super) step: u8,
}

/// The payloads in flight, oldest first.
#[derive(Debug, Default)]
pub(super) struct Inflight {
    queue: VecDeque<Tracked>,
    /// How many of the oldest are sent on the current stream.
    sent: usize,
    /// Encoded bytes held.
    bytes: usize,
    /// Memory held ([`Payload::memory`]).
    memory: usize,
}

impl Inflight {
    pub(super) fn len(&self) -> usize {
        self.queue.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Encoded bytes held.
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Payloads sent on the current stream and not yet acked.
    pub(super) fn sent(&self) -> usize {
        self.sent
    }

    /// True when another payload fits the limits (one always fits an empty tracker, so that a payload
    /// larger than the limits still goes).
    pub(super) fn has_room(&self, config: &CoreConfig) -> bool {
        self.queue.is_empty()
            || (self.queue.len() < config.max_inflight_payloads
                && self.bytes < config.max_inflight_bytes
                && self.memory < config.max_inflight_memory)
    }

    fn track(payload: Payload, step: u8, snapshot: &mut Snapshot) -> Tracked {
        let refs = snapshot.expand(&payload.refs);
        snapshot.protect(&refs);
        Tracked {
            size: payload.size,
            payload,
            refs,
            sent: None,
            rejections: 0,
            step,
        }
    }

    fn count(&mut self, t: &Tracked) {
        self.bytes += t.size;
        self.memory += t.payload.memory;
    }

    fn uncount(&mut self, t: &Tracked) {
        self.bytes -= t.size;
        self.memory -= t.payload.memory;
    }

    /// A new payload, after the others.
    pub(super) fn push_back(&mut self, payload: Payload, snapshot: &mut Snapshot) {
        let t = Self::track(payload, 0, snapshot);
        self.count(&t);
        self.queue.push_back(t);
    }

    /// A payload to send first (a part of a split head), at poison-ladder `step`.
    pub(super) fn push_front(&mut self, payload: Payload, step: u8, snapshot: &mut Snapshot) {
        let t = Self::track(payload, step, snapshot);
        self.count(&t);
        self.queue.push_front(t);
    }

    /// Removes the oldest payload (its refs stay pinned: the caller acks or releases them).
    pub(super) fn take_head(&mut self) -> Option<Tracked> {
        let t = self.queue.pop_front()?;
        if t.sent.is_some() {
            self.sent -= 1;
        }
        self.uncount(&t);
        Some(t)
    }

    /// Puts back what [`Inflight::take_head`] took.
    pub(super) fn restore_head(&mut self, t: Tracked) {
        if t.sent.is_some() {
            self.sent += 1;
        }
        self.count(&t);
        self.queue.push_front(t);
    }

    pub(super) fn head(&self) -> Option<&Tracked> {
        self.queue.front()
    }

    pub(super) fn head_mut(&mut self) -> Option<&mut Tracked> {
        self.queue.front_mut()
    }

    /// The position of the oldest payload not sent on the current stream.
    pub(super) fn next_unsent(&self) -> Option<usize> {
        (self.sent < self.queue.len()).then_some(self.sent)
    }

    pub(super) fn payload(&self, i: usize) -> &Payload {
        &self.queue[i].payload
    }

    /// Payload `i` (the next unsent) went out on `epoch`.
    pub(super) fn mark_sent(&mut self, i: usize, epoch: Epoch, now: Instant) {
        debug_assert_eq!(i, self.sent, "payloads are sent in order");
        self.queue[i].sent = Some((epoch, now));
        self.sent += 1;
    }

    /// A new stream: every payload is to be sent again, in order. Returns how many had been sent.
    pub(super) fn unsend_all(&mut self) -> u64 {
        let mut replayed = 0;
        for t in self.queue.iter_mut() {
            if t.sent.take().is_some() {
                replayed += 1;
            }
        }
        self.sent = 0;
        replayed
    }

    /// Replaces payload `i` by `payload` (the same logs, re-encoded), moving its pins.
    pub(super) fn replace(&mut self, i: usize, payload: Payload, snapshot: &mut Snapshot) {
        let refs = snapshot.expand(&payload.refs);
        snapshot.protect(&refs);
        let t = &mut self.queue[i];
        let old = std::mem::replace(&mut t.refs, refs);
        snapshot.release(&old);
        self.bytes = self.bytes - t.size + payload.size;
        self.memory = self.memory - t.payload.memory + payload.memory;
        t.size = payload.size;
        t.payload = payload;
    }
}
