//! The poison ladder (TRANSPORT.md §8): what the worker does when the intake keeps rejecting the oldest
//! unacked payload. Step by step, and each step only after `poison_threshold` rejections: a full snapshot
//! on the next stream, then splitting the payload in two (repeated on the failing half), then sending a
//! single log as raw text rebuilt here, then dropping it (counted, with the intake's reason, and its
//! checkpoints released so that the source moves on). One bad log never stops a pipeline for good.

use stencil_codec::datum::Datum;

use crate::payload::{Checkpoint, Payload};

use super::{code, Core, Effect, Notice};

impl Core {
    /// The poison ladder (TRANSPORT.md §8): the oldest unacked batch is the suspect. Every
    /// `poison_threshold` rejections move it one step: a full snapshot on the next stream (skipped for
    /// `RESOURCE_EXHAUSTED`), then splitting it in two (repeated on the failing half), then sending a
    /// single log as raw text rebuilt here, then dropping it (counted, with the intake's message, its
    /// checkpoints released). Returns true when the snapshot itself keeps failing (pause).
    pub(super) fn poison(&mut self, code: i32, message: &str, out: &mut Vec<Effect>) -> bool {
        let threshold = self.config.poison_threshold.max(1);
        if self.inflight.sent() == 0 {
            // Batch 0 is the suspect: fall back to the lazy snapshot, then pause.
            self.snapshot_rejections += 1;
            if self.snapshot_rejections >= threshold {
                self.full_snapshot = false;
            }
            return self.snapshot_rejections >= 2 * threshold;
        }
        let Some(head) = self.inflight.head_mut() else {
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
            out.push(Effect::Notice(Notice::SentRaw {
                reason: message.to_owned(),
            }));
        } else {
            self.drop_head(message, out);
        }
        false
    }

    /// Splits the head payload after its middle log (entries stay in order). The first half carries the
    /// state changes and no checkpoint; the second half releases the original checkpoints.
    fn split_head(&mut self) {
        let Some(t) = self.inflight.take_head() else {
            return;
        };
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
                self.inflight.push_front(second, 1, &mut self.snapshot);
                self.inflight.push_front(first, 1, &mut self.snapshot);
            }
            _ => {
                // Re-encoding what already encoded once cannot fail; keep the payload if it does.
                self.inflight.restore_head(t);
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
            self.known.contains_key(&r)
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
    pub(super) fn degrade(&mut self, i: usize) {
        let p = self.inflight.payload(i);
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
            self.inflight.replace(i, payload, &mut self.snapshot);
        }
    }

    /// Replaces a single-log head payload by the same log as raw text. False when that is impossible
    /// (the log is then dropped).
    fn raw_head(&mut self) -> bool {
        let Some(head) = self.inflight.head() else {
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
        let Some(t) = self.inflight.take_head() else {
            return false;
        };
        self.snapshot.release(&t.refs);
        self.inflight.push_front(payload, 3, &mut self.snapshot);
        true
    }

    fn drop_head(&mut self, message: &str, out: &mut Vec<Effect>) {
        let Some(t) = self.inflight.take_head() else {
            return;
        };
        self.snapshot.ack(&t.refs, &t.payload.changes);
        self.stats.dropped_logs += t.payload.logs as u64;
        out.push(Effect::Dropped {
            seq: t.payload.seq,
            checkpoints: t.payload.checkpoints,
            logs: t.payload.logs,
            reason: message.to_owned(),
        });
    }
}
