//! Variable-length matching and merging (PATTERNS.md §3.2 step 5): a line that fits no cluster of its
//! bucket is aligned with recent clusters that start with the same two symbols. Clusters with spans are
//! matched run by run ([`Miner::align_spans`]); otherwise a longest common subsequence of tokens may
//! merge the line into a cluster, each difference becoming a span, under the rules in the miner's
//! module doc.

use std::hash::BuildHasher;

use rustc_hash::FxBuildHasher;

use super::cluster::{compatible, compatible_kind, same_text, CTok, Cluster};
use super::index::{push_recent, signature_bit, Recent, PREFIX_LIST_MAX};
use super::{Miner, Selection, SPAN_CANDIDATES, SPAN_MAX, SPAN_MAX_LEN_DIFF};
use crate::token::{Class, Role, Token};

impl Miner {
    /// The line token that cluster token `i` stands for (spans aside).
    pub(super) fn line_index(align: &[(u32, u32)], i: usize) -> usize {
        align.get(i).map_or(i, |a| a.0 as usize)
    }

    /// The best cluster with spans among the recent ones with the line's first symbols, with
    /// `self.align` set for it.
    pub(super) fn match_spans(
        &mut self,
        prefix: u64,
        line: &str,
        tokens: &[Token],
    ) -> Option<usize> {
        let list = self.spans_by_prefix.get(&prefix)?;
        let mut best = Selection::new(self.config.similarity);
        let mut align = std::mem::take(&mut self.align);
        let mut best_align = Vec::new();
        for r in list.iter().rev().take(SPAN_CANDIDATES) {
            let slot = r.slot as usize;
            let Some(c) = self.store.get(slot).filter(|c| c.id == r.id && c.spans > 0) else {
                continue;
            };
            let score = Self::align_spans(c, line, tokens, &mut align);
            if best.offer(slot, c, score) {
                // Keep the alignment that goes with the best.
                std::mem::swap(&mut best_align, &mut align);
            }
            if best.perfect() {
                break;
            }
        }
        self.align = best_align;
        best.slot()
    }

    /// Aligns a line with a cluster that has spans: the tokens between spans must fit in order, the
    /// first run at the line's start and the last at its end (unless a span is there); a run after a
    /// span starts at the first place where it fits and its first static word is equal. Fills `align`
    /// and returns (similarity, static positions) as [`Miner::similarity`] does, spans left out.
    pub(super) fn align_spans(
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
    pub(super) fn merge_variable(
        &mut self,
        prefix: u64,
        line: &str,
        tokens: &[Token],
    ) -> Option<usize> {
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
    pub(super) fn merge_into(&mut self, slot: usize, line: &str, tokens: &[Token]) -> bool {
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
}
