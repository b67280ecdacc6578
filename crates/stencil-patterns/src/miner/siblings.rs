//! Sibling merges: one word position that keeps changing is a variable, however short the line.
//!
//! The similarity threshold cannot tell `session closed for user cyrus` from `… user news` (4 of 5
//! words agree, 0.80) apart from `… by client SPP` and `… by client WindowsUpdateAgent`, where the
//! word names another event. What tells them apart is how many words the position takes: two could be
//! two events, a third one different is a name, an account or a host (the idea behind Brain's
//! frequency-based grouping, applied online). So when a line fits no cluster of its bucket, and at
//! least `sibling_words` − 1 of the clusters it is compared with (2 by default) differ from it in the
//! same single word position and agree everywhere else, the oldest of them takes a slot at that
//! position and absorbs the others: they leave the miner (a `PatternDelete` if the peer knows them),
//! and later lines of theirs come to it. The slot is *open*: a word in it counts as equal in the
//! similarity, where an ordinary slot counts only a value so (PATTERNS.md §3.2 keeps a template at
//! least `similarity` static; an open slot is the one exception, and the other positions must still
//! hold `sibling_context` static words).
//!
//! Lines already sent under an absorbed id keep it (the wire is not rewritten). The miner reports each
//! absorption ([`Miner::merges`]) so that a reader of the engine's output, such as the grouping-accuracy
//! benchmark, can count those lines with the survivor, as an offline parser's final grouping would.

use stencil_codec::datum::Datum;

use super::cluster::{same_text, Cluster};
use super::Miner;
use crate::token::{Class, Role, Token};

impl Miner {
    /// The position of the one word where `c` and the line differ (another static word, or a slot
    /// that has held only values), when everything else agrees (structure exactly, whitespace in kind,
    /// each other position the same word or a value in a slot) and `c` has at least `context` other
    /// static words.
    fn one_word_apart(
        c: &Cluster,
        line: &str,
        tokens: &[Token],
        context_min: usize,
    ) -> Option<usize> {
        if c.toks.len() != tokens.len() || c.spans > 0 {
            return None;
        }
        let mut apart = None;
        let mut context = 0usize;
        for (i, (ct, t)) in c.toks.iter().zip(tokens).enumerate() {
            match t.class.role() {
                Role::Structural if t.class == Class::Ws => {
                    if ct.class != Class::Ws {
                        return None;
                    }
                }
                Role::Structural => {
                    if ct.slot || ct.class != t.class || !same_text(c, ct, line, t) {
                        return None;
                    }
                }
                role => {
                    if ct.class.role() == Role::Structural {
                        return None;
                    }
                    // A slot takes a value, and an open one a word too; a word in a slot that has
                    // held only values is a difference (`user test9`, then `user chen`).
                    let fits = if ct.slot {
                        role != Role::Mined || ct.open
                    } else {
                        ct.class == t.class && same_text(c, ct, line, t)
                    };
                    if fits {
                        context += usize::from(!ct.slot && role == Role::Mined);
                        continue;
                    }
                    // A second difference, or one that is not a word against a word or a slot.
                    if apart.is_some()
                        || role != Role::Mined
                        || (!ct.slot && ct.class.role() != Role::Mined)
                    {
                        return None;
                    }
                    apart = Some(i);
                }
            }
        }
        apart.filter(|_| context >= context_min)
    }

    /// When enough clusters of bucket `key` are one word apart from the line at the same position, the
    /// oldest takes a slot there and absorbs the others (module doc). Returns its slot; the line is
    /// not yet counted in it.
    pub(super) fn merge_siblings(
        &mut self,
        key: u64,
        line: &str,
        tokens: &[Token],
        deletes: &mut Vec<Datum>,
    ) -> Option<usize> {
        let siblings_min = self
            .config
            .sibling_words
            .checked_sub(1)
            .filter(|&n| n > 0)?;
        let context_min = self.config.sibling_context;
        let bucket = self.buckets.get(&key)?;
        // (position, slot, id) of each sibling, among the clusters a line is compared with (the most
        // recent `max_candidates`), so a line that creates a pattern costs no more than one that matches.
        let mut siblings: Vec<(usize, usize, u64)> = bucket
            .iter()
            .rev()
            .take(self.config.max_candidates)
            .filter_map(|&slot| {
                let c = self.store.get(slot)?;
                Self::one_word_apart(c, line, tokens, context_min).map(|p| (p, slot, c.id))
            })
            .collect();
        if siblings.len() < siblings_min {
            return None;
        }
        // The position most siblings share; its oldest cluster survives.
        siblings.sort_unstable_by_key(|&(p, _, id)| (p, id));
        let (position, first, count) = siblings
            .chunk_by(|a, b| a.0 == b.0)
            .map(|run| (run[0].0, run[0], run.len()))
            .max_by_key(|&(p, _, n)| (n, std::cmp::Reverse(p)))?;
        if count < siblings_min {
            return None;
        }
        let survivor = first.1;
        let max_slots = self.config.max_slots;
        let c = self.store.get_mut(survivor)?;
        if c.slots >= max_slots {
            return None;
        }
        let absorbed: Vec<(usize, u64)> = siblings
            .iter()
            .filter(|s| s.0 == position && s.1 != survivor)
            .map(|s| (s.1, s.2))
            .collect();
        // The slot itself is made when the line widens the survivor.
        c.toks[position].open = true;
        let into = c.id;
        for (slot, id) in absorbed {
            if let Some(gone) = self.forget(slot) {
                if gone.defined {
                    deletes.push(Datum::PatternDelete { id });
                }
                self.merges.push((id, into));
            }
        }
        Some(survivor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::miner::MinerConfig;
    use crate::token::tokenize;

    fn miner() -> Miner {
        Miner::new(MinerConfig::small(0.85))
    }

    fn mine(m: &mut Miner, line: &str, deletes: &mut Vec<Datum>) -> u64 {
        let mut tokens = Vec::new();
        tokenize(line, &mut tokens);
        m.mine(line, &tokens, 0, deletes).map_or(0, |x| x.id)
    }

    #[test]
    fn a_third_word_in_one_position_makes_it_a_slot() {
        let mut m = miner();
        let mut deletes = Vec::new();
        let a = mine(&mut m, "session closed for user cyrus", &mut deletes);
        let b = mine(&mut m, "session closed for user news", &mut deletes);
        assert_ne!(a, b, "two words could be two events");
        let c = mine(&mut m, "session closed for user test", &mut deletes);
        assert_eq!(c, a, "the third word joins the oldest");
        assert_eq!(m.merges(), &[(b, a)]);
        assert_eq!(
            mine(&mut m, "session closed for user news", &mut deletes),
            a
        );
        assert_eq!(
            mine(&mut m, "session closed for user root", &mut deletes),
            a
        );
        assert!(m.merges().is_empty(), "merges are reported once");
    }
}
