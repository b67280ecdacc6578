//! The snapshot and the planner (TRANSPORT.md §5): what the intake must hold before the first tracked
//! payload, and what each payload must carry in front of it on the current stream.
//!
//! The snapshot is the union of the state changes of every acked payload, in ordered maps, so batch 0 and
//! every prefix come out in a deterministic order: patterns, then dictionary entries, then schemas, each
//! by ascending id. Each id has a reference count over the tracked payloads; a delete of a protected id
//! is parked until the last payload referencing it is acked. A define is never dropped.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use stencil_codec::datum::Datum;

use crate::payload::{Payload, Ref, SpaceKey};

/// The snapshot with its reference counts and parked deletes.
#[derive(Debug, Default)]
pub struct Snapshot {
    entries: BTreeMap<Ref, Datum>,
    refcounts: HashMap<Ref, u32>,
    parked: BTreeSet<Ref>,
}

/// The id a define or delete is about.
pub fn target(d: &Datum) -> Option<Ref> {
    Some(match d {
        Datum::PatternDefine(p) => (SpaceKey::Pattern, p.id),
        Datum::PatternDelete { id } => (SpaceKey::Pattern, *id),
        Datum::DictDefine(e) => (SpaceKey::Dictionary, e.id),
        Datum::DictDelete { id } => (SpaceKey::Dictionary, *id),
        Datum::SchemaDefine(s) => (SpaceKey::Schema, s.id),
        Datum::SchemaDelete { id } => (SpaceKey::Schema, *id),
        Datum::Log(_) => return None,
    })
}

impl Snapshot {
    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// True while a tracked payload references `r`.
    pub fn protected(&self, r: &Ref) -> bool {
        self.refcounts.get(r).is_some_and(|&n| n > 0)
    }

    /// The payload's references plus the keys of referenced schemas known to the snapshot.
    pub fn expand(&self, refs: &BTreeSet<Ref>) -> BTreeSet<Ref> {
        let mut out = refs.clone();
        for r in refs {
            if let Some(Datum::SchemaDefine(s)) = self.entries.get(r) {
                out.extend(
                    s.keys
                        .iter()
                        .chain([&s.message_key])
                        .map(|k| (SpaceKey::Dictionary, *k)),
                );
            }
        }
        out
    }

    /// Every define held, in group order.
    pub fn defines(&self) -> impl Iterator<Item = &Datum> {
        self.entries.values()
    }

    /// Releases references without applying anything (a payload replaced by others).
    pub fn release(&mut self, refs: &BTreeSet<Ref>) {
        self.ack(refs, &[]);
    }

    /// Counts a newly tracked payload's references.
    pub fn protect(&mut self, refs: &BTreeSet<Ref>) {
        for r in refs {
            *self.refcounts.entry(*r).or_insert(0) += 1;
        }
    }

    /// Applies an acked payload: its references are released, its state changes applied in order, and
    /// parked deletes that are no longer protected are carried out (ascending id).
    pub fn ack(&mut self, refs: &BTreeSet<Ref>, changes: &[Datum]) {
        for r in refs {
            if let Some(n) = self.refcounts.get_mut(r) {
                *n -= 1;
                if *n == 0 {
                    self.refcounts.remove(r);
                }
            }
        }
        for d in changes {
            let Some(r) = target(d) else { continue };
            match d {
                Datum::PatternDelete { .. }
                | Datum::DictDelete { .. }
                | Datum::SchemaDelete { .. } => {
                    if self.protected(&r) {
                        self.parked.insert(r);
                    } else {
                        self.entries.remove(&r);
                    }
                }
                _ => {
                    self.parked.remove(&r);
                    self.entries.insert(r, d.clone());
                }
            }
        }
        let ready: Vec<Ref> = self
            .parked
            .iter()
            .filter(|r| !self.protected(r))
            .copied()
            .collect();
        for r in ready {
            self.parked.remove(&r);
            self.entries.remove(&r);
        }
    }

    /// Batch 0: every protected entry (or every entry when `full`), in group order, plus the ids it
    /// carries (the stream's known set).
    pub fn batch0(&self, full: bool) -> (Vec<Datum>, BTreeSet<Ref>) {
        let mut known = BTreeSet::new();
        let datums = self
            .entries
            .iter()
            .filter(|(r, _)| full || self.protected(r))
            .map(|(r, d)| {
                known.insert(*r);
                d.clone()
            })
            .collect();
        (datums, known)
    }

    /// The defines `payload` needs in front of it on a stream that knows `known`, in group order, and
    /// the number of references nothing resolves (dangling; must stay 0).
    pub fn plan(&self, known: &BTreeMap<Ref, usize>, payload: &Payload) -> (Vec<Datum>, usize) {
        let mut running: BTreeSet<Ref> = BTreeSet::new();
        let mut prefix: BTreeMap<Ref, Datum> = BTreeMap::new();
        let mut dangling = 0;
        // One buffer for every log's references (a set per log was an allocation per log).
        let mut refs: Vec<Ref> = Vec::new();
        for d in payload.wire.iter() {
            if let Some(r) = target(d) {
                running.insert(r);
                continue;
            }
            refs.clear();
            crate::payload::references(d, &mut refs);
            refs.sort_unstable();
            refs.dedup();
            for &r in &refs {
                if known.contains_key(&r) || running.contains(&r) || prefix.contains_key(&r) {
                    continue;
                }
                match self.entries.get(&r) {
                    Some(define) => {
                        if let Datum::SchemaDefine(s) = define {
                            for k in s.keys.iter().chain([&s.message_key]) {
                                let kr = (SpaceKey::Dictionary, *k);
                                if !known.contains_key(&kr) && !running.contains(&kr) {
                                    match self.entries.get(&kr) {
                                        Some(kd) => {
                                            prefix.insert(kr, kd.clone());
                                        }
                                        None => dangling += 1,
                                    }
                                }
                            }
                        }
                        prefix.insert(r, define.clone());
                    }
                    None => dangling += 1,
                }
            }
        }
        (prefix.into_values().collect(), dangling)
    }
}
