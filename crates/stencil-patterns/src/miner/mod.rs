//! Template mining: a bounded online clusterer over typed tokens (PATTERNS.md §3.2).
//!
//! Lines are bucketed by a key made of their token count, their structural skeleton (punctuation and
//! keys exactly; whitespace by kind; words and values only as positions that may vary, except that an
//! empty `key=` value is a kind of its own) and their first two non-whitespace symbols. In a bucket, a line is compatible with a cluster when every structural token
//! matches; similarity is the share of compared positions that agree: a word equal to the cluster's static
//! word, or a value where the cluster has a slot. The most similar cluster at or above the threshold wins
//! (ties: most static positions, then the lowest id) and widens: each differing word, value or whitespace
//! run becomes a slot. Slots never revert, a cluster keeps its id for life, and ids are never reused.
//!
//! Variable length (PATTERNS.md §3.2 step 5): a line that fits no cluster of its bucket is aligned with
//! up to 8 recent clusters that start with the same two symbols and hold within 10 tokens of it (longest
//! common subsequence of tokens). If at least 80 % of a cluster's static words align and the differences
//! form at most 3 gaps, each gap becomes a *span*: a slot that covers any run of tokens, whitespace
//! included, so `bytes` + span + `sent` rebuilds both `bytes sent` and `bytes (1.16 KB) sent`. Beyond the
//! spec, a gap must change the length, hold a value (and at most one word) on each non-empty side, and no
//! `key=` (see `Miner::merge_into`); without these, events that differ by a trailing clause merged
//! (HDFS GA fell from 0.998 to 0.851). The spec's ±6 tokens cannot merge Proxifier's `0 bytes sent, …,
//! lifetime 00:01` with `… 18846 bytes (18.4 KB) received, lifetime <1 sec` (9 apart), hence 10. A
//! cluster with spans leaves its bucket; later lines reach it by their first two symbols and are aligned
//! segment by segment.

//!
//! Sibling merges (beyond the spec): a line that fits no cluster of its bucket, and differs from two or
//! more of them in the same single word position, opens a slot there in the oldest, which absorbs the
//! others; a third distinct word is what tells a variable from two events (see `siblings`).
//!
//! The parts: `cluster` (a learned pattern and the token comparisons), `index` (bucket keys and
//! first-symbols lists), `fixed` (fixed-length similarity), `siblings` (sibling merges) and `spans`
//! (variable-length alignment and merging). Both searches choose their cluster with one rule,
//! `Selection`.

mod cluster;
mod fixed;
mod index;
mod siblings;
mod spans;

use stencil_codec::datum::Datum;

use crate::budget::{Budget, Store};
use crate::token::{Class, Role, Token};
pub use cluster::Cluster;
use cluster::{same_text, CTok};
use index::{push_recent, Recent};
use rustc_hash::FxHashMap;

/// Miner settings.
#[derive(Debug, Clone, Copy)]
pub struct MinerConfig {
    /// Minimum similarity to join a cluster (0–1).
    pub similarity: f64,
    /// Clusters compared per line at most.
    pub max_candidates: usize,
    /// Distinct first-symbol prefixes per skeleton before new ones share a wildcard prefix.
    pub max_children: u32,
    /// Most slots a pattern may have.
    pub max_slots: usize,
    /// Pattern budget.
    pub budget: Budget,
    /// Merge lines of different lengths into span slots (§3.2 step 5).
    pub variable_length: bool,
    /// Distinct words at which a sibling merge opens a position (below 2: no sibling merges).
    pub sibling_words: usize,
    /// Other static words the siblings need.
    pub sibling_context: usize,
}

/// Longest line (in tokens) that is aligned for a variable-length merge.
pub(super) const SPAN_MAX_TOKENS: usize = 128;
/// Clusters tried per line for a variable-length match, and for a merge.
pub(super) const SPAN_CANDIDATES: usize = 8;
/// Token-count difference allowed between a line and a cluster it merges with.
pub(super) const SPAN_MAX_LEN_DIFF: usize = 10;
/// Spans per cluster at most.
pub(super) const SPAN_MAX: usize = 3;

/// A cluster that a line fits, while the best one is being chosen.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    slot: usize,
    sim: f64,
    statics: usize,
    id: u64,
}

/// The one rule that picks a line's cluster, for both searches: at or above the similarity threshold,
/// the highest similarity wins, then the most static positions, then the lowest id (the oldest).
#[derive(Debug)]
pub(super) struct Selection {
    threshold: f64,
    best: Option<Candidate>,
}

impl Selection {
    pub(super) fn new(threshold: f64) -> Self {
        Selection {
            threshold,
            best: None,
        }
    }

    /// Offers cluster `c` in `slot` with its score ((similarity, static positions), `None` when the line
    /// does not fit it). True when it is now the best.
    pub(super) fn offer(&mut self, slot: usize, c: &Cluster, score: Option<(f64, usize)>) -> bool {
        let Some((sim, statics)) = score.filter(|(sim, _)| *sim >= self.threshold) else {
            return false;
        };
        let better = self.best.is_none_or(|b| {
            sim > b.sim
                || (sim == b.sim && (statics > b.statics || (statics == b.statics && c.id < b.id)))
        });
        if better {
            self.best = Some(Candidate {
                slot,
                sim,
                statics,
                id: c.id,
            });
        }
        better
    }

    /// True when nothing can beat the best any more (an exact fit).
    pub(super) fn perfect(&self) -> bool {
        self.best.is_some_and(|b| b.sim >= 1.0)
    }

    /// The chosen cluster's slot.
    pub(super) fn slot(&self) -> Option<usize> {
        self.best.map(|b| b.slot)
    }
}

/// The result of mining one line.
#[derive(Debug, Clone, Copy)]
pub struct Mined {
    /// The cluster's slot in the miner.
    pub slot: usize,
    /// The cluster's pattern id.
    pub id: u64,
}

/// The clusters of one engine.
#[derive(Debug)]
pub struct Miner {
    config: MinerConfig,
    store: Store<Cluster>,
    buckets: FxHashMap<u64, Vec<usize>>,
    /// Live clusters per (skeleton, first-symbols prefix) that has a bucket of its own; an entry goes
    /// when its last cluster does, so the index is bounded by the clusters the budget allows.
    prefixes: FxHashMap<(u64, u64), u32>,
    /// Prefixes with a bucket of their own, per skeleton.
    prefix_counts: FxHashMap<u64, u32>,
    /// Every cluster by its first two symbols, oldest first: the candidates of variable-length merges.
    by_prefix: FxHashMap<u64, Vec<Recent>>,
    /// The clusters with spans by their first two symbols, oldest first.
    spans_by_prefix: FxHashMap<u64, Vec<Recent>>,
    /// For the last line mined into a cluster with spans: the line tokens `[start, end)` each cluster
    /// token stands for. Empty when the cluster has none (token `i` is line token `i`).
    align: Vec<(u32, u32)>,
    /// Scratch for the alignment table and the token hashes it compares.
    lcs: Vec<u16>,
    line_hashes: Vec<u64>,
    cluster_hashes: Vec<u64>,
    /// What the last line's sibling merge absorbed ([`Miner::merges`]).
    merges: Vec<(u64, u64)>,
    next_id: u64,
}

impl Miner {
    /// An empty miner; pattern ids start at 1.
    pub fn new(config: MinerConfig) -> Self {
        Miner {
            config,
            store: Store::new(config.budget),
            buckets: FxHashMap::default(),
            prefixes: FxHashMap::default(),
            prefix_counts: FxHashMap::default(),
            by_prefix: FxHashMap::default(),
            spans_by_prefix: FxHashMap::default(),
            align: Vec::new(),
            lcs: Vec::new(),
            line_hashes: Vec::new(),
            cluster_hashes: Vec::new(),
            merges: Vec::new(),
            next_id: 1,
        }
    }

    /// The cluster in `slot`.
    pub fn cluster(&self, slot: usize) -> Option<&Cluster> {
        self.store.get(slot)
    }

    /// The cluster in `slot`, mutably.
    pub fn cluster_mut(&mut self, slot: usize) -> Option<&mut Cluster> {
        self.store.get_mut(slot)
    }

    /// Patterns held (pending included) and their bytes.
    pub fn size(&self) -> (usize, usize) {
        (self.store.len(), self.store.bytes())
    }

    /// For the last line mined: the line tokens `[start, end)` that each token of its cluster stands for,
    /// empty when token `i` of the cluster is line token `i` (a cluster without spans). Taken out, so
    /// that the caller may use the miner meanwhile; hand it back with [`Miner::restore_alignment`].
    pub fn take_alignment(&mut self) -> Vec<(u32, u32)> {
        std::mem::take(&mut self.align)
    }

    /// Gives back what [`Miner::take_alignment`] took (its buffer is reused).
    pub fn restore_alignment(&mut self, align: Vec<(u32, u32)>) {
        self.align = align;
    }

    /// Finds or creates the cluster of a line. `None` when the pattern budget cannot make room (the line
    /// goes raw). Evicted clusters that were on the wire push a `PatternDelete` to `deletes`. When the
    /// cluster has spans, [`Miner::take_alignment`] maps its tokens to the line's.
    pub fn mine(
        &mut self,
        line: &str,
        tokens: &[Token],
        epoch: u64,
        deletes: &mut Vec<Datum>,
    ) -> Option<Mined> {
        self.align.clear();
        self.merges.clear();
        let (key, prefix, made_of) = self.key(line, tokens);
        let mut best = Selection::new(self.config.similarity);
        let mut best_exact = false;
        if let Some(bucket) = self.buckets.get(&key) {
            for &slot in bucket.iter().rev().take(self.config.max_candidates) {
                if let Some(c) = self.store.get(slot) {
                    let score = Self::similarity(c, line, tokens, self.config.similarity);
                    let exact = score.is_some_and(|(_, _, exact)| exact);
                    if best.offer(slot, c, score.map(|(sim, statics, _)| (sim, statics))) {
                        best_exact = exact;
                    }
                }
            }
        }
        if let Some(slot) = best.slot() {
            if self.widen(slot, line, tokens, best_exact) {
                return self.matched(slot, epoch);
            }
        }
        if let Some(slot) = self.merge_siblings(key, line, tokens, deletes) {
            if self.widen(slot, line, tokens, false) {
                return self.matched(slot, epoch);
            }
        }
        if self.config.variable_length && tokens.len() <= SPAN_MAX_TOKENS {
            if let Some(slot) = self.match_spans(prefix, line, tokens) {
                if self.widen(slot, line, tokens, false) {
                    return self.matched(slot, epoch);
                }
            }
            self.align.clear();
            if let Some(slot) = self.merge_variable(prefix, line, tokens) {
                return self.matched(slot, epoch);
            }
            self.align.clear();
        }
        self.create(key, prefix, made_of, line, tokens, epoch, deletes)
    }

    fn matched(&mut self, slot: usize, epoch: u64) -> Option<Mined> {
        self.store.touch(slot, epoch);
        let id = self.store.get(slot).map(|c| c.id)?;
        Some(Mined { slot, id })
    }

    /// Turns differing static words into slots. False if that would exceed `max_slots`. With `exact`
    /// (the similarity found nothing of the cluster that differs from the line) there is nothing to
    /// compare again.
    fn widen(&mut self, slot: usize, line: &str, tokens: &[Token], exact: bool) -> bool {
        let max_slots = self.config.max_slots;
        let align = &self.align;
        let Some(c) = self.store.get_mut(slot) else {
            return false;
        };
        if exact {
            c.matches = c.matches.saturating_add(1);
            return true;
        }
        let differs = |ct: &CTok, t: &Token| {
            !ct.slot
                && (t.class.role() != Role::Structural || t.class == Class::Ws)
                && (ct.class != t.class || !same_text(c, ct, line, t))
        };
        let mut new_slots = Vec::new();
        if align.is_empty() {
            // Token `i` is line token `i` (the common case: no spans).
            for (i, (ct, t)) in c.toks.iter().zip(tokens).enumerate() {
                if differs(ct, t) {
                    new_slots.push(i);
                }
            }
        } else {
            for (i, ct) in c.toks.iter().enumerate() {
                if ct.span {
                    continue;
                }
                let Some(t) = tokens.get(Self::line_index(align, i)) else {
                    return false;
                };
                if differs(ct, t) {
                    new_slots.push(i);
                }
            }
        }
        if c.slots + new_slots.len() > max_slots {
            return false;
        }
        for &i in &new_slots {
            c.toks[i].slot = true;
        }
        c.slots += new_slots.len();
        c.matches = c.matches.saturating_add(1);
        if !new_slots.is_empty() && c.defined {
            c.dirty = true;
        }
        if !new_slots.is_empty() && self.config.variable_length {
            // Words that became slots no longer count for the variable-length search.
            c.index_words();
            let entry = Recent::of(slot, c);
            if let Some(list) = self.by_prefix.get_mut(&c.prefix) {
                for r in list.iter_mut().filter(|r| r.id == entry.id) {
                    *r = entry;
                }
            }
        }
        true
    }

    #[allow(clippy::too_many_arguments)]
    fn create(
        &mut self,
        key: u64,
        prefix: u64,
        made_of: (u64, u64),
        line: &str,
        tokens: &[Token],
        epoch: u64,
        deletes: &mut Vec<Datum>,
    ) -> Option<Mined> {
        let mut text = String::with_capacity(line.len());
        let mut toks = Vec::with_capacity(tokens.len());
        let mut slots = 0;
        for t in tokens {
            let slot = t.class.role() == Role::Dynamic;
            slots += usize::from(slot);
            let start = text.len() as u32;
            if !slot {
                text.push_str(t.text(line));
            }
            toks.push(CTok {
                start,
                end: text.len() as u32,
                class: t.class,
                slot,
                span: false,
                open: false,
            });
        }
        if slots > self.config.max_slots {
            return None;
        }
        let variable = toks
            .iter()
            .filter(|t| t.class.role() != Role::Structural)
            .count() as u32;
        let id = self.next_id;
        let mut cluster = Cluster {
            id,
            key,
            prefix,
            skeleton: made_of.0,
            key_prefix: made_of.1,
            text,
            toks,
            defined: false,
            dirty: false,
            matches: 1,
            slots,
            spans: 0,
            wire_holes: Vec::new(),
            words: 0,
            word_sig: 0,
            variable,
        };
        if self.config.variable_length {
            cluster.index_words();
        }
        let cost = cluster.cost();
        let mut evicted = Vec::new();
        let slot = self
            .store
            .insert(cluster, cost, epoch, &mut |gone: Cluster| {
                if gone.defined {
                    deletes.push(Datum::PatternDelete { id: gone.id });
                }
                evicted.push((
                    gone.key,
                    gone.prefix,
                    gone.id,
                    (gone.skeleton, gone.key_prefix),
                ));
            })
            .ok()?;
        self.next_id += 1;
        self.hold_prefix(made_of);
        for gone in evicted {
            self.unindex(gone, slot);
        }
        self.buckets.entry(key).or_default().push(slot);
        if self.config.variable_length {
            if let Some(c) = self.store.get(slot) {
                let entry = Recent::of(slot, c);
                push_recent(self.by_prefix.entry(prefix).or_default(), entry);
            }
        }
        Some(Mined { slot, id })
    }
}

impl Miner {
    /// Removes the cluster in `slot` from the store and every index (a sibling merge absorbed it).
    fn forget(&mut self, slot: usize) -> Option<Cluster> {
        let gone = self.store.remove(slot)?;
        self.unindex(
            (
                gone.key,
                gone.prefix,
                gone.id,
                (gone.skeleton, gone.key_prefix),
            ),
            usize::MAX,
        );
        Some(gone)
    }

    /// Drops the index entries of a cluster that left the store, given as (bucket key, first-symbols
    /// prefix, id, prefix-index entry). Its slot is free, or holds `fresh`, a cluster not indexed yet,
    /// or another cluster (whose bucket entry is kept only in its own bucket).
    fn unindex(&mut self, (key, prefix, id, made_of): (u64, u64, u64, (u64, u64)), fresh: usize) {
        self.release_prefix(made_of);
        let store = &self.store;
        if let Some(b) = self.buckets.get_mut(&key) {
            b.retain(|&s| s != fresh && store.get(s).is_some_and(|c| c.key == key && c.spans == 0));
            if b.is_empty() {
                self.buckets.remove(&key);
            }
        }
        // By id: no cluster needs reading (entries whose slot was reused fail their id check).
        for index in [&mut self.by_prefix, &mut self.spans_by_prefix] {
            if let Some(b) = index.get_mut(&prefix) {
                b.retain(|r| r.id != id);
                if b.is_empty() {
                    index.remove(&prefix);
                }
            }
        }
    }

    /// The absorptions of the last [`Miner::mine`] call, as (absorbed id, surviving id): lines sent
    /// under the first belong to the second's pattern from now on (see `siblings`).
    pub fn merges(&self) -> &[(u64, u64)] {
        &self.merges
    }
}

#[cfg(test)]
impl MinerConfig {
    /// A small miner for unit tests: 100 patterns in 1 MiB, 8 candidates, variable length and sibling
    /// merges on.
    pub(super) fn small(similarity: f64) -> Self {
        MinerConfig {
            similarity,
            max_candidates: 8,
            max_children: 8,
            max_slots: 64,
            budget: Budget {
                count: 100,
                bytes: 1 << 20,
            },
            variable_length: true,
            sibling_words: 3,
            sibling_context: 3,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::tokenize;

    /// Two empty texts are the same, and an empty text is not a word: the short-word compare masks
    /// every byte off an empty token rather than shifting past 64 bits.
    #[test]
    fn same_text_compares_empty_and_short_texts() {
        let mut miner = Miner::new(MinerConfig::small(0.85));
        let line = "connection from host12345 closed";
        let mut tokens = Vec::new();
        tokenize(line, &mut tokens);
        let mined = miner.mine(line, &tokens, 0, &mut Vec::new());
        let c = mined
            .and_then(|m| miner.cluster(m.slot))
            .expect("a cluster");
        let empty = CTok::slot(0, Class::KvValue);
        let at = |start: u32, end: u32| Token {
            start,
            end,
            class: Class::Word,
        };
        assert!(same_text(c, &empty, line, &at(3, 3)));
        assert!(!same_text(c, &empty, line, &at(0, 4)));
        // `connection` (10 bytes) and `from` (4) against the line's own words and another's.
        let (word, from) = (c.toks[0], c.toks[2]);
        assert!(same_text(c, &word, line, &at(0, 10)));
        assert!(same_text(c, &from, line, &at(11, 15)));
        assert!(!same_text(c, &from, "connection frog", &at(11, 15)));
    }

    /// #16: the prefix index used to keep an entry for every (skeleton, prefix) ever seen, so lines
    /// whose structures all differ grew it without bound (100+ MiB at a 1 MiB state budget). Entries now
    /// live as long as a cluster holds them.
    #[test]
    fn the_prefix_index_is_bounded_by_the_live_clusters() {
        let mut miner = Miner::new(MinerConfig::small(0.5));
        let glue = [",", ";", ":", "|", "=", "(", ")", "[", "]", "/", "->", "#"];
        let mut tokens = Vec::new();
        let mut deletes = Vec::new();
        for i in 0..20_000u64 {
            // A structure of its own: the punctuation between words follows the digits of `i`.
            let mut line = String::from("event");
            let mut n = i;
            for w in 0..6 {
                line.push_str(glue[(n % 12) as usize]);
                n /= 12;
                line.push_str(&format!("word{w}"));
            }
            tokens.clear();
            tokenize(&line, &mut tokens);
            miner.mine(&line, &tokens, i, &mut deletes);
        }
        let (clusters, _) = miner.size();
        assert!(clusters <= 100, "{clusters}");
        assert!(
            miner.prefix_entries() <= 2 * clusters,
            "{} index entries for {clusters} clusters",
            miner.prefix_entries()
        );
    }
}
