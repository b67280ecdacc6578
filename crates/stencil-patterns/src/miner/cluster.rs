//! A learned pattern as the miner holds it: its static text, one [`CTok`] per position (static, slot
//! or span), and the figures the searches filter on without reading it. Also the token comparisons
//! every search shares (which line token a cluster position can stand for).

use std::hash::BuildHasher;

use rustc_hash::FxBuildHasher;

use super::index::signature_bit;
use crate::token::{Class, Role, Token};

/// One position of a cluster's template.
#[derive(Debug, Clone, Copy)]
pub(super) struct CTok {
    pub(super) start: u32,
    pub(super) end: u32,
    pub(super) class: Class,
    pub(super) slot: bool,
    /// A span slot: covers any number of line tokens (zero included). Its class is `Opaque`.
    pub(super) span: bool,
    /// A slot that a sibling merge opened (see `siblings`): any word there is as good as the one it
    /// replaced, so the similarity counts a word in it as equal, not only a value.
    pub(super) open: bool,
}

impl CTok {
    pub(super) fn slot(at: u32, class: Class) -> Self {
        CTok {
            start: at,
            end: at,
            class,
            slot: true,
            span: false,
            open: false,
        }
    }
}

/// Can the cluster token `ct` stand for the line token `t`? Structural tokens must be equal (whitespace
/// only in kind), words and values may sit where the cluster has a word or value.
#[inline]
pub(super) fn compatible(c: &Cluster, ct: &CTok, line: &str, t: &Token) -> bool {
    compatible_kind(ct, t) && (!structural_text(t) || same_text(c, ct, line, t))
}

/// [`compatible`] short of comparing text: what can be told from classes alone.
#[inline]
pub(super) fn compatible_kind(ct: &CTok, t: &Token) -> bool {
    !ct.span
        && match t.class.role() {
            Role::Structural if t.class == Class::Ws => ct.class == Class::Ws,
            Role::Structural => !ct.slot && ct.class == t.class,
            _ => ct.class.role() != Role::Structural,
        }
}

/// A structural token other than whitespace: compatible only with the same text.
#[inline]
pub(super) fn structural_text(t: &Token) -> bool {
    t.class.role() == Role::Structural && t.class != Class::Ws
}

/// True when the cluster's static token `ct` has the same bytes as the line's token `t` (byte slices:
/// token bounds are always character boundaries, so no UTF-8 checks are needed on this hot path).
#[inline]
pub(super) fn same_text(c: &Cluster, ct: &CTok, line: &str, t: &Token) -> bool {
    let (a, b) = (c.text.as_bytes(), line.as_bytes());
    if ct.end - ct.start != t.end - t.start {
        return false;
    }
    if t.end - t.start == 1 {
        // Punctuation, the commonest comparison: one byte, without a call to `memcmp`.
        return matches!(
            (a.get(ct.start as usize), b.get(t.start as usize)),
            (Some(x), Some(y)) if x == y
        );
    }
    let len = (t.end - t.start) as usize;
    if len <= 8 {
        // A short word: one 8-byte load from each side where both texts have 8 bytes there, the bytes
        // past the word masked off (no call to `memcmp`).
        let load = |text: &[u8], at: u32| {
            text.get(at as usize..at as usize + 8)
                .and_then(|w| <[u8; 8]>::try_from(w).ok())
                .map(u64::from_le_bytes)
        };
        if let (Some(x), Some(y)) = (load(a, ct.start), load(b, t.start)) {
            // The low `len` bytes, in two shifts below 64 each: 0 for an empty token (an empty `key=`
            // value, which keeps no byte), all of them for 8.
            let mask = ((1u64 << (4 * len)) << (4 * len)).wrapping_sub(1);
            return (x ^ y) & mask == 0;
        }
    }
    matches!(
        (a.get(ct.start as usize..ct.end as usize), b.get(t.start as usize..t.end as usize)),
        (Some(x), Some(y)) if x == y
    )
}

/// A learned pattern.
#[derive(Debug)]
pub struct Cluster {
    /// The pattern id (assigned at creation, kept for life).
    pub id: u64,
    pub(super) key: u64,
    pub(super) text: String,
    pub(super) toks: Vec<CTok>,
    /// True once a `PatternDefine` was emitted (and not deleted since).
    pub defined: bool,
    /// True when the cluster widened after its last define.
    pub dirty: bool,
    /// Lines matched, creation included.
    pub matches: u32,
    pub(super) slots: usize,
    /// Span slots (0 for a fixed-length cluster, which lives in its bucket).
    pub(super) spans: usize,
    /// Hash of the first two symbols (see `Miner::key`), whatever the bucket: where variable-length lines
    /// look for it.
    pub(super) prefix: u64,
    /// The skeleton and the prefix its bucket key was made of (`WILDCARD` when the skeleton had too
    /// many prefixes already): the prefix index entry this cluster holds.
    pub(super) skeleton: u64,
    pub(super) key_prefix: u64,
    /// Static words ([`Cluster::static_words`]) and their signature ([`signature_bit`]), for a quick
    /// bound before aligning.
    pub(super) words: u32,
    pub(super) word_sig: u64,
    /// Non-structural positions (the similarity's denominator for any line that fits the skeleton).
    pub(super) variable: u32,
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
    pub(super) fn static_words(&self) -> impl Iterator<Item = &CTok> {
        self.toks
            .iter()
            .filter(|t| !t.slot && t.class.role() == Role::Mined)
    }

    pub(super) fn cost(&self) -> usize {
        // Wire holes are at most one per token, and word hashes too, so the token term bounds them.
        self.text.len() + self.toks.len() * (std::mem::size_of::<CTok>() + 24) + 96
    }

    /// Recomputes the static word count and signature after the tokens changed.
    pub(super) fn index_words(&mut self) {
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
