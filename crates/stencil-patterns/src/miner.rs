//! Template mining: a bounded online clusterer over typed tokens (PATTERNS.md §3.2).
//!
//! Lines are bucketed by a key made of their token count, their structural skeleton (punctuation and
//! keys exactly; whitespace by kind; words and values only as positions that may vary) and their first two
//! non-whitespace symbols. In a bucket, a line is compatible with a cluster when every structural token
//! matches; similarity is the share of compared positions that agree: a word equal to the cluster's static
//! word, or a value where the cluster has a slot. The most similar cluster at or above the threshold wins
//! (ties: most static positions, then the lowest id) and widens: each differing word, value or whitespace
//! run becomes a slot. Slots never revert, a cluster keeps its id for life, and ids are never reused.

use std::hash::{BuildHasher, Hasher};

use rustc_hash::{FxBuildHasher, FxHashMap, FxHashSet};
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

    fn cost(&self) -> usize {
        // Wire holes are at most one per token, so the token term bounds them too.
        self.text.len() + self.toks.len() * (std::mem::size_of::<CTok>() + 16) + 96
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
    prefixes: FxHashSet<(u64, u64)>,
    prefix_counts: FxHashMap<u64, u32>,
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
            prefixes: FxHashSet::default(),
            prefix_counts: FxHashMap::default(),
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

    fn key(&mut self, line: &str, tokens: &[Token]) -> u64 {
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
        if !self.prefixes.contains(&(skeleton, prefix)) {
            let count = self.prefix_counts.entry(skeleton).or_insert(0);
            if *count >= self.config.max_children {
                prefix = WILDCARD;
            } else {
                *count += 1;
                self.prefixes.insert((skeleton, prefix));
            }
        }
        skeleton ^ prefix.rotate_left(17)
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
    /// goes raw). Evicted clusters that were on the wire push a `PatternDelete` to `deletes`.
    pub fn mine(
        &mut self,
        line: &str,
        tokens: &[Token],
        epoch: u64,
        deletes: &mut Vec<Datum>,
    ) -> Option<Mined> {
        let key = self.key(line, tokens);
        let mut best: Option<(usize, f64, usize, u64)> = None;
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
                let better = match best {
                    None => true,
                    Some((_, bs, bst, bid)) => {
                        sim > bs || (sim == bs && (statics > bst || (statics == bst && c.id < bid)))
                    }
                };
                if better {
                    best = Some((slot, sim, statics, c.id));
                }
            }
        }
        if let Some((slot, ..)) = best {
            if self.widen(slot, line, tokens) {
                self.store.touch(slot, epoch);
                let id = self.store.get(slot).map(|c| c.id)?;
                return Some(Mined { slot, id });
            }
        }
        self.create(key, line, tokens, epoch, deletes)
    }

    /// Turns differing static words into slots. False if that would exceed `max_slots`.
    fn widen(&mut self, slot: usize, line: &str, tokens: &[Token]) -> bool {
        let max_slots = self.config.max_slots;
        let Some(c) = self.store.get_mut(slot) else {
            return false;
        };
        let mut new_slots = Vec::new();
        for (i, (ct, t)) in c.toks.iter().zip(tokens).enumerate() {
            if (t.class.role() != Role::Structural || t.class == Class::Ws)
                && !ct.slot
                && (ct.class != t.class || !same_text(c, ct, line, t))
            {
                new_slots.push(i);
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
        true
    }

    fn create(
        &mut self,
        key: u64,
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
        let cluster = Cluster {
            id,
            key,
            text,
            toks,
            defined: false,
            dirty: false,
            matches: 1,
            slots,
            wire_holes: Vec::new(),
            variable,
        };
        let cost = cluster.cost();
        let mut evicted_keys = Vec::new();
        let slot = self
            .store
            .insert(cluster, cost, epoch, &mut |gone: Cluster| {
                if gone.defined {
                    deletes.push(Datum::PatternDelete { id: gone.id });
                }
                evicted_keys.push(gone.key);
            })
            .ok()?;
        self.next_id += 1;
        // Drop bucket entries of evicted clusters: their slots are free or now hold another cluster.
        for k in evicted_keys {
            if let Some(b) = self.buckets.get_mut(&k) {
                let store = &self.store;
                b.retain(|&s| s != slot && store.get(s).is_some_and(|c| c.key == k));
                if b.is_empty() {
                    self.buckets.remove(&k);
                }
            }
        }
        self.buckets.entry(key).or_default().push(slot);
        Some(Mined { slot, id })
    }
}
