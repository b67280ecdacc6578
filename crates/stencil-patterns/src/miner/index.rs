//! The miner's indexes, which decide what a line is compared with: the bucket key (token count,
//! structural skeleton, first two symbols), the per-skeleton prefix registry that caps how many
//! buckets a skeleton gets (past it, new prefixes share a wildcard bucket), and the first-symbols lists
//! of recent clusters that variable-length lines are aligned with. Every entry lives as long as a
//! cluster holds it, so the indexes are bounded by the pattern budget.

use std::hash::{BuildHasher, Hasher};

use rustc_hash::FxBuildHasher;

use super::cluster::Cluster;
use super::Miner;
use crate::token::{Class, Role, Token};

/// The prefix of lines whose first symbols hold a value (and of skeletons out of prefixes).
pub(super) const WILDCARD: u64 = 0x9e37_79b9_7f4a_7c15;
/// Clusters remembered per first-symbols list (the most recent; older ones are never candidates).
pub(super) const PREFIX_LIST_MAX: usize = 64;

impl Miner {
    /// The bucket key of a line, the hash of its first two symbols, and what the key was made of
    /// (skeleton, prefix).
    pub(super) fn key(&self, line: &str, tokens: &[Token]) -> (u64, u64, (u64, u64)) {
        let mut skeleton = FxBuildHasher.build_hasher();
        skeleton.write_usize(tokens.len());
        let mut prefix = FxBuildHasher.build_hasher();
        for t in tokens {
            match t.class.role() {
                // Whitespace runs of different lengths may share a pattern (syslog pads `Jun  9`).
                Role::Structural if t.class == Class::Ws => skeleton.write_u8(3),
                Role::Structural => {
                    let text = t.text(line).as_bytes();
                    match text {
                        // Punctuation, the commonest: one byte, hashed without the slice path.
                        [b] => skeleton.write_u16(u16::from(*b) << 8),
                        _ => {
                            skeleton.write_u8(0);
                            skeleton.write(text);
                        }
                    }
                }
                // Words and values may share a position (`user webmaster`, `user test9`; an IP in one line, a
                // host name in the next): only the kind of position goes into the key.
                // Except a request target's segment of words: a value there is another endpoint.
                Role::Mined if t.class == Class::Segment => skeleton.write_u8(2),
                // An empty `key=` value says the thing is absent (`rhost=` against `rhost=10.0.0.1`):
                // another shape of event, as Drain sees it without masks.
                Role::Dynamic if t.class == Class::KvValue && t.start == t.end => {
                    skeleton.write_u8(4)
                }
                Role::Mined | Role::Dynamic => skeleton.write_u8(1),
            }
        }
        // The first two symbols (tokens other than whitespace).
        for t in tokens.iter().filter(|t| t.class != Class::Ws).take(2) {
            let text = t.text(line);
            if t.class.role() == Role::Dynamic || text.bytes().any(|b| b.is_ascii_digit()) {
                prefix.write_u64(WILDCARD);
            } else {
                prefix.write(text.as_bytes());
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
    pub(super) fn hold_prefix(&mut self, made_of: (u64, u64)) {
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
    pub(super) fn release_prefix(&mut self, made_of: (u64, u64)) {
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
}

/// A first-symbols list entry: the cluster, and what the variable-length search filters on without
/// reading it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Recent {
    pub(super) slot: u32,
    pub(super) id: u64,
    /// Tokens other than spans (saturating).
    pub(super) fixed: u16,
    /// Static words (saturating).
    pub(super) statics: u16,
    /// Has spans.
    pub(super) spans: bool,
    /// One bit per static word ([`signature_bit`]).
    pub(super) sig: u64,
}

impl Recent {
    pub(super) fn of(slot: usize, c: &Cluster) -> Self {
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
pub(super) fn signature_bit(hash: u64) -> u64 {
    1 << (hash >> 58)
}

/// Appends to a first-symbols list, dropping its older half once it holds [`PREFIX_LIST_MAX`].
pub(super) fn push_recent(list: &mut Vec<Recent>, entry: Recent) {
    if list.len() >= PREFIX_LIST_MAX {
        list.drain(..PREFIX_LIST_MAX / 2);
    }
    list.push(entry);
}
