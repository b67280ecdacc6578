//! Template mining: a bounded online clusterer over typed tokens (PATTERNS.md §3.2).
//!
//! Lines are bucketed by a key made of their token count, their structural skeleton (punctuation and
//! keys exactly; whitespace by kind; words and values only as positions that may vary) and their first two
//! non-whitespace symbols. In a bucket, a line is compatible with a cluster when every structural token
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

use std::hash::{BuildHasher, Hasher};

use rustc_hash::{FxBuildHasher, FxHashMap};
use stencil_codec::datum::Datum;

use crate::budget::{Budget, Store};
use crate::token::{Class, Role, Token};

/// One position of a cluster's template.
#[derive(Debug, Clone, Copy)]
struct CTok {
    start: u32,
    end: u32,
    class: Class,
    slot: bool,
    /// A span slot: covers any number of line tokens (zero included). Its class is `Opaque`.
    span: bool,
}

impl CTok {
    fn slot(at: u32, class: Class) -> Self {
        CTok {
            start: at,
            end: at,
            class,
            slot: true,
            span: false,
        }
    }
}

/// Can the cluster token `ct` stand for the line token `t`? Structural tokens must be equal (whitespace
/// only in kind), words and values may sit where the cluster has a word or value.
#[inline]
fn compatible(c: &Cluster, ct: &CTok, line: &str, t: &Token) -> bool {
    compatible_kind(ct, t) && (!structural_text(t) || same_text(c, ct, line, t))
}

/// [`compatible`] short of comparing text: what can be told from classes alone.
#[inline]
fn compatible_kind(ct: &CTok, t: &Token) -> bool {
    !ct.span
        && match t.class.role() {
            Role::Structural if t.class == Class::Ws => ct.class == Class::Ws,
            Role::Structural => !ct.slot && ct.class == t.class,
            _ => ct.class.role() != Role::Structural,
        }
}

/// A structural token other than whitespace: compatible only with the same text.
#[inline]
fn structural_text(t: &Token) -> bool {
    t.class.role() == Role::Structural && t.class != Class::Ws
}

/// True when the cluster's static token `ct` has the same bytes as the line's token `t` (byte slices:
/// token bounds are always character boundaries, so no UTF-8 checks are needed on this hot path).
#[inline]
fn same_text(c: &Cluster, ct: &CTok, line: &str, t: &Token) -> bool {
    let (a, b) = (c.text.as_bytes(), line.as_bytes());
    ct.end - ct.start == t.end - t.start
        && matches!(
            (a.get(ct.start as usize..ct.end as usize), b.get(t.start as usize..t.end as usize)),
            (Some(x), Some(y)) if x == y
        )
}

/// A learned pattern.
#[derive(Debug)]
pub struct Cluster {
    /// The pattern id (assigned at creation, kept for life).
    pub id: u64,
    key: u64,
    text: String,
    toks: Vec<CTok>,
    /// True once a `PatternDefine` was emitted (and not deleted since).
    pub defined: bool,
    /// True when the cluster widened after its last define.
    pub dirty: bool,
    /// Lines matched, creation included.
    pub matches: u32,
    slots: usize,
    /// Span slots (0 for a fixed-length cluster, which lives in its bucket).
    spans: usize,
    /// Hash of the first two symbols ([`Miner::key`]), whatever the bucket: where variable-length lines
    /// look for it.
    prefix: u64,
    /// The skeleton and the prefix its bucket key was made of (`WILDCARD` when the skeleton had too
    /// many prefixes already): the prefix index entry this cluster holds.
    skeleton: u64,
    key_prefix: u64,
    /// Static words ([`Cluster::static_words`]) and their signature ([`signature_bit`]), for a quick
    /// bound before aligning.
    words: u32,
    word_sig: u64,
    /// Non-structural positions (the similarity's denominator for any line that fits the skeleton).
    variable: u32,
    /// The wire holes of the last define ([`Cluster::holes`]), kept so that each line need not recompute
    /// them; replaced whenever the pattern is (re)defined.
    pub wire_holes: Vec<(usize, usize)>,
}

impl Cluster {
    /// The wire's holes as token ranges `[start, end)`. Without `merge`, one range per slot. With it,
    /// slots of volatile classes (numbers, dates, ids that are never dictionary hits) separated only by
    /// short glue (at most 2 bytes of static punctuation or whitespace) share one hole, whose value is
    /// the exact text of the whole range: fewer values, less framing. Other classes stay separate, so
    /// their values can still become dictionary hits (merging those too saved 6 % on the 2k Loghub
    /// samples but cost 5 % on the same logs repeated five times).
    pub fn holes(&self, merge: bool) -> Vec<(usize, usize)> {
        let mut holes: Vec<(usize, usize)> = Vec::with_capacity(self.slots);
        for (i, t) in self.toks.iter().enumerate() {
            if !t.slot {
                continue;
            }
            if merge {
                if let Some(last) = holes.last_mut() {
                    let glue = &self.toks[last.1..i];
                    let glue_bytes: u32 = glue.iter().map(|g| g.end - g.start).sum();
                    let only_punct = glue.iter().all(|g| {
                        !g.slot
                            && self.text[g.start as usize..g.end as usize]
                                .bytes()
                                .all(|b| b.is_ascii_punctuation() || b == b' ')
                    });
                    let volatile = |c: Class| {
                        matches!(
                            c,
                            Class::Int
                                | Class::Float
                                | Class::DateTime
                                | Class::Uuid
                                | Class::Hex
                                | Class::Duration
                                | Class::Size
                        )
                    };
                    let pair = volatile(self.toks[last.1 - 1].class) && volatile(t.class);
                    if glue_bytes <= 2 && only_punct && pair {
                        last.1 = i + 1;
                        continue;
                    }
                }
            }
            holes.push((i, i + 1));
        }
        holes
    }

    /// The template with `holes` (token ranges from [`Cluster::holes`]) omitted, and `pos_list` in code
    /// points.
    pub fn template_with(&self, holes: &[(usize, usize)]) -> (String, Vec<u32>) {
        let mut template = String::with_capacity(self.text.len());
        let mut pos = Vec::with_capacity(holes.len());
        let mut cp = 0u32;
        let mut next = holes.iter().peekable();
        let mut i = 0;
        while i < self.toks.len() {
            if let Some(&&(start, end)) = next.peek() {
                if start == i {
                    pos.push(cp);
                    i = end;
                    next.next();
                    continue;
                }
            }
            let t = &self.toks[i];
            let s = &self.text[t.start as usize..t.end as usize];
            cp += s.chars().count() as u32;
            template.push_str(s);
            i += 1;
        }
        (template, pos)
    }

    /// Number of slots.
    pub fn slot_count(&self) -> usize {
        self.slots
    }

    /// Static words: the positions that must mostly align for a variable-length merge.
    fn static_words(&self) -> impl Iterator<Item = &CTok> {
        self.toks
            .iter()
            .filter(|t| !t.slot && t.class.role() == Role::Mined)
    }

    fn cost(&self) -> usize {
        // Wire holes are at most one per token, and word hashes too, so the token term bounds them.
        self.text.len() + self.toks.len() * (std::mem::size_of::<CTok>() + 24) + 96
    }

    /// Recomputes the static word count and signature after the tokens changed.
    fn index_words(&mut self) {
        let (mut words, mut sig) = (0u32, 0u64);
        for t in self.static_words() {
            words += 1;
            sig |=
                signature_bit(FxBuildHasher.hash_one(&self.text[t.start as usize..t.end as usize]));
        }
        self.words = words;
        self.word_sig = sig;
    }
}

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
}

/// Longest line (in tokens) that is aligned for a variable-length merge.
const SPAN_MAX_TOKENS: usize = 128;
/// Clusters tried per line for a variable-length match, and for a merge.
const SPAN_CANDIDATES: usize = 8;
/// Token-count difference allowed between a line and a cluster it merges with.
const SPAN_MAX_LEN_DIFF: usize = 10;
/// Spans per cluster at most.
const SPAN_MAX: usize = 3;
/// Clusters remembered per first-symbols list (the most recent; older ones are never candidates).
const PREFIX_LIST_MAX: usize = 64;

/// A cluster that a line fits, while the best one is being chosen.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    slot: usize,
    sim: f64,
    statics: usize,
    id: u64,
}

impl Candidate {
    /// Better than `best`: higher similarity, then more static positions, then the lower id.
    fn beats(&self, best: Option<&Candidate>) -> bool {
        best.is_none_or(|b| {
            self.sim > b.sim
                || (self.sim == b.sim
                    && (self.statics > b.statics || (self.statics == b.statics && self.id < b.id)))
        })
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
    next_id: u64,
}

const WILDCARD: u64 = 0x9e37_79b9_7f4a_7c15;

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

    /// The bucket key of a line, the hash of its first two symbols, and what the key was made of
    /// (skeleton, prefix).
    fn key(&self, line: &str, tokens: &[Token]) -> (u64, u64, (u64, u64)) {
        let mut skeleton = FxBuildHasher.build_hasher();
        skeleton.write_usize(tokens.len());
        let mut prefix = FxBuildHasher.build_hasher();
        let mut symbols = 0;
        for t in tokens {
            match t.class.role() {
                // Whitespace runs of different lengths may share a pattern (syslog pads `Jun  9`).
                Role::Structural if t.class == Class::Ws => skeleton.write_u8(3),
                Role::Structural => {
                    skeleton.write_u8(0);
                    skeleton.write(t.text(line).as_bytes());
                }
                // Words and values may share a position (`user webmaster`, `user test9`; an IP in one line, a
                // host name in the next): only the kind of position goes into the key.
                Role::Mined | Role::Dynamic => skeleton.write_u8(1),
            }
            if symbols < 2 && t.class != Class::Ws {
                symbols += 1;
                let text = t.text(line);
                if t.class.role() == Role::Dynamic || text.bytes().any(|b| b.is_ascii_digit()) {
                    prefix.write_u64(WILDCARD);
                } else {
                    prefix.write(text.as_bytes());
                }
            }
        }
        let skeleton = skeleton.finish();
        let mut prefix = prefix.finish();
        let first_symbols = prefix;
        // A prefix gets a bucket of its own (registered when a cluster is created in it) while the
        // skeleton has fewer than `max_children`; past that, new prefixes share the wildcard bucket.
        if !self.prefixes.contains_key(&(skeleton, prefix))
            && self.prefix_counts.get(&skeleton).copied().unwrap_or(0) >= self.config.max_children
        {
            prefix = WILDCARD;
        }
        (
            skeleton ^ prefix.rotate_left(17),
            first_symbols,
            (skeleton, prefix),
        )
    }

    /// Counts a new cluster in its (skeleton, prefix) index entry.
    fn hold_prefix(&mut self, made_of: (u64, u64)) {
        if made_of.1 == WILDCARD {
            return;
        }
        let held = self.prefixes.entry(made_of).or_insert(0);
        if *held == 0 {
            *self.prefix_counts.entry(made_of.0).or_insert(0) += 1;
        }
        *held += 1;
    }

    /// Releases an evicted cluster's (skeleton, prefix) entry; the last one removes it.
    fn release_prefix(&mut self, made_of: (u64, u64)) {
        let Some(held) = self.prefixes.get_mut(&made_of) else {
            return;
        };
        *held -= 1;
        if *held == 0 {
            self.prefixes.remove(&made_of);
            if let Some(count) = self.prefix_counts.get_mut(&made_of.0) {
                *count -= 1;
                if *count == 0 {
                    self.prefix_counts.remove(&made_of.0);
                }
            }
        }
    }

    /// Entries of the prefix index (for memory accounting and tests).
    pub fn prefix_entries(&self) -> usize {
        self.prefixes.len() + self.prefix_counts.len()
    }

    /// Similarity of `line` to `c`: `None` if incompatible, else (similarity, static positions).
    ///
    /// Structural tokens must be equal (whitespace may differ in length). Every other position compares a
    /// word or value: it counts in the denominator when either side is a word, and as equal when the
    /// cluster holds the same static word.
    ///
    /// `None` as well as soon as the similarity is sure to end below `min` (the same lines are rejected as
    /// by comparing the final value, only sooner): every non-structural position is compared, so after
    /// `misses` mismatches it can reach at most `(variable - misses) / variable`.
    fn similarity(c: &Cluster, line: &str, tokens: &[Token], min: f64) -> Option<(f64, usize)> {
        if c.toks.len() != tokens.len() {
            return None;
        }
        let variable = c.variable as usize;
        let hopeless = |misses: usize| {
            variable > 0 && ((variable - misses.min(variable)) as f64 / variable as f64) < min
        };
        let mut misses = 0usize;
        let (mut compared, mut equal, mut statics) = (0usize, 0usize, 0usize);
        for (ct, t) in c.toks.iter().zip(tokens) {
            let cls = t.class;
            match cls.role() {
                Role::Structural if cls == Class::Ws => {
                    if ct.class != Class::Ws {
                        return None;
                    }
                }
                Role::Structural => {
                    if ct.slot || ct.class != cls || !same_text(c, ct, line, t) {
                        return None;
                    }
                }
                role => {
                    if ct.class.role() == Role::Structural {
                        return None;
                    }
                    let cluster_word = !ct.slot;
                    let before = equal;
                    if cluster_word || role == Role::Mined {
                        compared += 1;
                    } else {
                        // A value where the cluster has a slot: both sides agree that it varies.
                        compared += 1;
                        equal += 1;
                    }
                    if cluster_word {
                        statics += 1;
                        if ct.class == cls && same_text(c, ct, line, t) {
                            equal += 1;
                        }
                    }
                    if equal == before {
                        misses += 1;
                        if hopeless(misses) {
                            return None;
                        }
                    }
                }
            }
        }
        let sim = if compared == 0 {
            1.0
        } else {
            equal as f64 / compared as f64
        };
        Some((sim, statics))
    }

    /// Finds or creates the cluster of a line. `None` when the pattern budget cannot make room (the line
    /// goes raw). Evicted clusters that were on the wire push a `PatternDelete` to `deletes`. When the
    /// cluster has spans, [`Miner::alignment`] maps its tokens to the line's.
    pub fn mine(
        &mut self,
        line: &str,
        tokens: &[Token],
        epoch: u64,
        deletes: &mut Vec<Datum>,
    ) -> Option<Mined> {
        self.align.clear();
        let (key, prefix, made_of) = self.key(line, tokens);
        let mut best: Option<Candidate> = None;
        if let Some(bucket) = self.buckets.get(&key) {
            for &slot in bucket.iter().rev().take(self.config.max_candidates) {
                let Some(c) = self.store.get(slot) else {
                    continue;
                };
                let Some((sim, statics)) =
                    Self::similarity(c, line, tokens, self.config.similarity)
                else {
                    continue;
                };
                if sim < self.config.similarity {
                    continue;
                }
                let candidate = Candidate {
                    slot,
                    sim,
                    statics,
                    id: c.id,
                };
                if candidate.beats(best.as_ref()) {
                    best = Some(candidate);
                }
            }
        }
        if let Some(Candidate { slot, .. }) = best {
            if self.widen(slot, line, tokens) {
                return self.matched(slot, epoch);
            }
        }
        if self.config.variable_length && tokens.len() <= SPAN_MAX_TOKENS {
            if let Some(slot) = self.match_spans(prefix, line, tokens) {
                if self.widen(slot, line, tokens) {
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

    /// The line token that cluster token `i` stands for (spans aside).
    fn line_index(align: &[(u32, u32)], i: usize) -> usize {
        align.get(i).map_or(i, |a| a.0 as usize)
    }

    /// Turns differing static words into slots. False if that would exceed `max_slots`.
    fn widen(&mut self, slot: usize, line: &str, tokens: &[Token]) -> bool {
        let max_slots = self.config.max_slots;
        let align = &self.align;
        let Some(c) = self.store.get_mut(slot) else {
            return false;
        };
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

    /// The best cluster with spans among the recent ones with the line's first symbols, with
    /// `self.align` set for it.
    fn match_spans(&mut self, prefix: u64, line: &str, tokens: &[Token]) -> Option<usize> {
        let list = self.spans_by_prefix.get(&prefix)?;
        let mut best: Option<Candidate> = None;
        let mut align = std::mem::take(&mut self.align);
        let mut best_align = Vec::new();
        for r in list.iter().rev().take(SPAN_CANDIDATES) {
            let slot = r.slot as usize;
            let Some(c) = self.store.get(slot).filter(|c| c.id == r.id && c.spans > 0) else {
                continue;
            };
            let Some((sim, statics)) = Self::align_spans(c, line, tokens, &mut align) else {
                continue;
            };
            if sim < self.config.similarity {
                continue;
            }
            let candidate = Candidate {
                slot,
                sim,
                statics,
                id: c.id,
            };
            if candidate.beats(best.as_ref()) {
                best = Some(candidate);
                std::mem::swap(&mut best_align, &mut align);
            }
            if best.as_ref().is_some_and(|b| b.sim >= 1.0) {
                break;
            }
        }
        self.align = best_align;
        best.map(|b| b.slot)
    }

    /// Aligns a line with a cluster that has spans: the tokens between spans must fit in order, the
    /// first run at the line's start and the last at its end (unless a span is there); a run after a
    /// span starts at the first place where it fits and its first static word is equal. Fills `align`
    /// and returns (similarity, static positions) as [`Miner::similarity`] does, spans left out.
    fn align_spans(
        c: &Cluster,
        line: &str,
        tokens: &[Token],
        align: &mut Vec<(u32, u32)>,
    ) -> Option<(f64, usize)> {
        align.clear();
        let (toks, n) = (&c.toks, tokens.len());
        let fits = |from: usize, to: usize, at: usize| -> bool {
            let mut anchored = false;
            (from..to).all(|k| {
                let (ct, t) = (&toks[k], &tokens[at + k - from]);
                if !compatible(c, ct, line, t) {
                    return false;
                }
                if !anchored && !ct.slot && ct.class.role() == Role::Mined {
                    anchored = true;
                    return ct.class == t.class && same_text(c, ct, line, t);
                }
                true
            })
        };
        let mut p = 0usize;
        let mut i = 0usize;
        while i < toks.len() {
            if toks[i].span {
                let from = i + 1;
                let to = toks[from..]
                    .iter()
                    .position(|t| t.span)
                    .map_or(toks.len(), |k| from + k);
                let len = to - from;
                let at = if to == toks.len() {
                    // The last run ends the line; a span at the very end takes the rest.
                    let at = n.checked_sub(len)?;
                    if at < p || !fits(from, to, at) {
                        return None;
                    }
                    at
                } else {
                    (p..=n.checked_sub(len)?).find(|&at| fits(from, to, at))?
                };
                align.push((p as u32, at as u32));
                p = at;
                i = from;
                continue;
            }
            let t = tokens.get(p)?;
            if !compatible(c, &toks[i], line, t) {
                return None;
            }
            align.push((p as u32, p as u32 + 1));
            p += 1;
            i += 1;
        }
        if p != n {
            return None;
        }
        let (mut compared, mut equal, mut statics) = (0usize, 0usize, 0usize);
        for (ct, &(a, b)) in toks.iter().zip(align.iter()) {
            if ct.span || b != a + 1 {
                continue;
            }
            let t = &tokens[a as usize];
            let role = t.class.role();
            if role == Role::Structural {
                continue;
            }
            compared += 1;
            if ct.slot {
                equal += usize::from(role != Role::Mined);
            } else {
                statics += 1;
                equal += usize::from(ct.class == t.class && same_text(c, ct, line, t));
            }
        }
        let sim = if compared == 0 {
            1.0
        } else {
            equal as f64 / compared as f64
        };
        Some((sim, statics))
    }

    /// Merges the line into a recent cluster with the same first symbols and a length within
    /// [`SPAN_MAX_LEN_DIFF`], turning each difference into a span (§3.2 step 5). Sets `self.align`.
    fn merge_variable(&mut self, prefix: u64, line: &str, tokens: &[Token]) -> Option<usize> {
        // The signature of the line's words, to skip clusters whose static words cannot align before
        // paying for the table.
        let line_sig = tokens
            .iter()
            .filter(|t| t.class.role() == Role::Mined)
            .fold(0u64, |sig, t| {
                sig | signature_bit(FxBuildHasher.hash_one(t.text(line)))
            });
        let n = tokens.len();
        let candidates: Vec<usize> = self
            .by_prefix
            .get(&prefix)?
            .iter()
            .rev()
            .take(PREFIX_LIST_MAX / 2)
            // From the list entry alone (no cluster is read): the length, and the signature bits of
            // static words that the line lacks (each at least one word that cannot align, so this
            // never rejects a cluster the 80 % rule would accept).
            .filter(|r| {
                let fixed = usize::from(r.fixed);
                let missing = (r.sig & !line_sig).count_ones() as usize;
                // Spans take any length: only a fixed-length cluster is bounded from above.
                n + SPAN_MAX_LEN_DIFF >= fixed
                    && (r.spans || n <= fixed + SPAN_MAX_LEN_DIFF)
                    && r.statics > 0
                    && missing * 5 <= usize::from(r.statics)
            })
            .take(SPAN_CANDIDATES)
            .filter(|r| {
                self.store
                    .get(r.slot as usize)
                    .is_some_and(|c| c.id == r.id)
            })
            .map(|r| r.slot as usize)
            .collect();
        if candidates.is_empty() {
            return None;
        }
        self.line_hashes.clear();
        self.line_hashes
            .extend(tokens.iter().map(|t| FxBuildHasher.hash_one(t.text(line))));
        candidates
            .into_iter()
            .find(|&slot| self.merge_into(slot, line, tokens))
    }

    /// Aligns the line with cluster `slot` (longest common subsequence of compatible tokens) and, if
    /// enough static words align and the differences form few enough gaps, rebuilds the cluster with a
    /// span per gap.
    fn merge_into(&mut self, slot: usize, line: &str, tokens: &[Token]) -> bool {
        let Some(c) = self.store.get(slot) else {
            return false;
        };
        let (m, n) = (c.toks.len(), tokens.len());
        let w = n + 1;
        // Which tokens may align. The table compares text by hash (a byte comparison per cell cost
        // a fifth of the engine's time on unique-heavy logs); the pairs chosen are checked byte for byte.
        // Stricter than `compatible`: a slot takes values of its own kind (or any word when it holds
        // words), and a static word only the same word.
        let kinds_ok = |ct: &CTok, t: &Token| {
            compatible_kind(ct, t)
                && match t.class.role() {
                    Role::Structural => true,
                    _ if ct.slot => {
                        ct.class == t.class
                            || (ct.class.role() == Role::Mined && t.class.role() == Role::Mined)
                    }
                    _ => ct.class == t.class,
                }
        };
        let needs_text = |ct: &CTok, t: &Token| !ct.slot && t.class != Class::Ws;
        self.cluster_hashes.clear();
        self.cluster_hashes.extend(
            c.toks
                .iter()
                .map(|ct| FxBuildHasher.hash_one(&c.text[ct.start as usize..ct.end as usize])),
        );
        let (ch, lh) = (&self.cluster_hashes, &self.line_hashes);
        let pairs_ok = |i: usize, j: usize| {
            let (ct, t) = (&c.toks[i], &tokens[j]);
            kinds_ok(ct, t) && (!needs_text(ct, t) || ch[i] == lh[j])
        };
        self.lcs.clear();
        self.lcs.resize((m + 1) * w, 0);
        let lcs = &mut self.lcs;
        for i in (0..m).rev() {
            for j in (0..n).rev() {
                lcs[i * w + j] = if pairs_ok(i, j) {
                    lcs[(i + 1) * w + j + 1] + 1
                } else {
                    lcs[(i + 1) * w + j].max(lcs[i * w + j + 1])
                };
            }
        }
        let mut pairs: Vec<(usize, usize)> = Vec::with_capacity(m.min(n));
        let (mut i, mut j) = (0, 0);
        while i < m && j < n {
            if pairs_ok(i, j) && lcs[i * w + j] == lcs[(i + 1) * w + j + 1] + 1 {
                let (ct, t) = (&c.toks[i], &tokens[j]);
                if needs_text(ct, t) && !same_text(c, ct, line, t) {
                    return false; // a hash collision: no merge
                }
                pairs.push((i, j));
                i += 1;
                j += 1;
            } else if lcs[(i + 1) * w + j] >= lcs[i * w + j + 1] {
                i += 1;
            } else {
                j += 1;
            }
        }
        // Gaps: the runs between aligned pairs (and before the first, after the last) that are not
        // empty on both sides. A gap must change the length (an equal-length substitution is the fixed
        // miner's business, judged by its similarity), may not hold a `key=`, and each of its sides
        // that is not empty holds a value or a span and at most one word: a span is a value written
        // with a varying number of tokens, perhaps with a unit (`0 bytes` / `1190 bytes (1.16 KB)`,
        // `00:01` / `<1 sec`), not words that come and go (`by (uid=0)` / `by LOGIN(uid=0)`, `corrected`
        // / `corrected over 282 seconds` are two events each).
        let mut gaps = 0;
        let mut prev = (0usize, 0usize);
        for &(pi, pj) in pairs.iter().chain(std::iter::once(&(m, n))) {
            if pi > prev.0 || pj > prev.1 {
                gaps += 1;
                let cluster_side = &c.toks[prev.0..pi];
                let line_side = &tokens[prev.1..pj];
                let valued = |classes: &mut dyn Iterator<Item = (Class, bool)>| {
                    let (mut any, mut words) = (false, 0);
                    for (class, span) in classes {
                        if class == Class::Key {
                            return None;
                        }
                        any |= span || class.role() == Role::Dynamic;
                        words += usize::from(!span && class.role() == Role::Mined);
                    }
                    (words <= 1).then_some(any)
                };
                let cluster_valued = valued(&mut cluster_side.iter().map(|t| (t.class, t.span)));
                let line_valued = valued(&mut line_side.iter().map(|t| (t.class, false)));
                let (Some(cv), Some(lv)) = (cluster_valued, line_valued) else {
                    return false;
                };
                if (cluster_side.len() == line_side.len() && !cluster_side.iter().any(|t| t.span))
                    || (!cluster_side.is_empty() && !cv)
                    || (!line_side.is_empty() && !lv)
                {
                    return false;
                }
            }
            prev = (pi + 1, pj + 1);
        }
        // At least 80 % of the cluster's static words align.
        let statics = c.static_words().count();
        let aligned = pairs
            .iter()
            .filter(|&&(pi, _)| !c.toks[pi].slot && c.toks[pi].class.role() == Role::Mined)
            .count();
        if gaps == 0 || gaps > SPAN_MAX || statics == 0 || aligned * 5 < statics * 4 {
            return false;
        }
        // The merged cluster: aligned tokens (whitespace of another length becomes a slot), one span per gap.
        let mut text = String::with_capacity(c.text.len());
        let mut toks = Vec::with_capacity(pairs.len() + gaps);
        let mut align = Vec::with_capacity(pairs.len() + gaps);
        let mut prev = (0usize, 0usize);
        for &(pi, pj) in pairs.iter().chain(std::iter::once(&(m, n))) {
            if pi > prev.0 || pj > prev.1 {
                let at = text.len() as u32;
                toks.push(CTok {
                    span: true,
                    ..CTok::slot(at, Class::Opaque)
                });
                align.push((prev.1 as u32, pj as u32));
            }
            if pi == m {
                break;
            }
            let (ct, t) = (c.toks[pi], &tokens[pj]);
            let at = text.len() as u32;
            if ct.slot || (t.class == Class::Ws && !same_text(c, &ct, line, t)) {
                toks.push(CTok::slot(at, ct.class));
            } else {
                text.push_str(&c.text[ct.start as usize..ct.end as usize]);
                toks.push(CTok {
                    start: at,
                    end: text.len() as u32,
                    ..ct
                });
            }
            align.push((pj as u32, pj as u32 + 1));
            prev = (pi + 1, pj + 1);
        }
        let slots = toks.iter().filter(|t| t.slot).count();
        if slots > self.config.max_slots {
            return false;
        }
        let had_spans = c.spans > 0;
        let (key, c_prefix) = (c.key, c.prefix);
        let Some(c) = self.store.get_mut(slot) else {
            return false;
        };
        c.variable = toks
            .iter()
            .filter(|t| t.class.role() != Role::Structural)
            .count() as u32;
        c.spans = toks.iter().filter(|t| t.span).count();
        c.slots = slots;
        c.text = text;
        c.toks = toks;
        c.matches = c.matches.saturating_add(1);
        c.dirty |= c.defined;
        c.index_words();
        let cost = c.cost();
        let entry = Recent::of(slot, c);
        self.store.recost(slot, cost);
        self.align = align;
        // A cluster with spans is found by its first symbols only.
        if let Some(list) = self.by_prefix.get_mut(&c_prefix) {
            for r in list.iter_mut().filter(|r| r.id == entry.id) {
                *r = entry;
            }
        }
        if !had_spans {
            push_recent(self.spans_by_prefix.entry(c_prefix).or_default(), entry);
            if let Some(b) = self.buckets.get_mut(&key) {
                b.retain(|&s| s != slot);
                if b.is_empty() {
                    self.buckets.remove(&key);
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
        for &(_, _, _, gone_made_of) in &evicted {
            self.release_prefix(gone_made_of);
        }
        // Drop index entries of evicted clusters: their slots are free or now hold another cluster.
        let store = &self.store;
        for (k, p, gone, _) in evicted {
            if let Some(b) = self.buckets.get_mut(&k) {
                b.retain(|&s| {
                    s != slot && store.get(s).is_some_and(|c| c.key == k && c.spans == 0)
                });
                if b.is_empty() {
                    self.buckets.remove(&k);
                }
            }
            // By id: no cluster needs reading (entries whose slot was reused fail their id check).
            for index in [&mut self.by_prefix, &mut self.spans_by_prefix] {
                if let Some(b) = index.get_mut(&p) {
                    b.retain(|r| r.id != gone);
                    if b.is_empty() {
                        index.remove(&p);
                    }
                }
            }
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

/// A first-symbols list entry: the cluster, and what the variable-length search filters on without
/// reading it.
#[derive(Debug, Clone, Copy)]
struct Recent {
    slot: u32,
    id: u64,
    /// Tokens other than spans (saturating).
    fixed: u16,
    /// Static words (saturating).
    statics: u16,
    /// Has spans.
    spans: bool,
    /// One bit per static word ([`signature_bit`]).
    sig: u64,
}

impl Recent {
    fn of(slot: usize, c: &Cluster) -> Self {
        Recent {
            slot: slot as u32,
            id: c.id,
            fixed: u16::try_from(c.toks.len() - c.spans).unwrap_or(u16::MAX),
            statics: u16::try_from(c.words).unwrap_or(u16::MAX),
            spans: c.spans > 0,
            sig: c.word_sig,
        }
    }
}

/// The bit of a word hash in a 64-bit signature.
fn signature_bit(hash: u64) -> u64 {
    1 << (hash >> 58)
}

/// Appends to a first-symbols list, dropping its older half once it holds [`PREFIX_LIST_MAX`].
fn push_recent(list: &mut Vec<Recent>, entry: Recent) {
    if list.len() >= PREFIX_LIST_MAX {
        list.drain(..PREFIX_LIST_MAX / 2);
    }
    list.push(entry);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::tokenize;

    /// #16: the prefix index used to keep an entry for every (skeleton, prefix) ever seen, so lines
    /// whose structures all differ grew it without bound (100+ MiB at a 1 MiB state budget). Entries now
    /// live as long as a cluster holds them.
    #[test]
    fn the_prefix_index_is_bounded_by_the_live_clusters() {
        let mut miner = Miner::new(MinerConfig {
            similarity: 0.5,
            max_candidates: 8,
            max_children: 8,
            max_slots: 64,
            budget: Budget {
                count: 100,
                bytes: 1 << 20,
            },
            variable_length: true,
        });
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
