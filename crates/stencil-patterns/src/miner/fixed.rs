//! Fixed-length matching (PATTERNS.md §3.2 steps 3–4): a line against the clusters of its bucket,
//! position by position. This is the common path: most lines of a known event have its token count.

use super::cluster::{same_text, Cluster};
use super::Miner;
use crate::token::{Class, Role, Token};

impl Miner {
    /// Similarity of `line` to `c`: `None` if incompatible, else (similarity, static positions, exact).
    /// `exact` says that every static word and whitespace run of `c` is the line's own, so that taking
    /// the line turns nothing into a slot (what [`Miner::widen`] would otherwise compare again).
    ///
    /// Structural tokens must be equal (whitespace may differ in length). Every other position compares a
    /// word or value and counts in the denominator; it counts as equal when the cluster holds the same
    /// static word, or has a slot and the line a value (or any word, when a sibling merge opened the
    /// slot).
    ///
    /// `None` as well as soon as the similarity is sure to end below `min` (the same lines are rejected as
    /// by comparing the final value, only sooner): every non-structural position is compared, so after
    /// `misses` mismatches it can reach at most `(variable - misses) / variable`.
    // Out of line: inlined into `mine`, its loop shared registers with the rest of the search and
    // spilled more (0.4 % more instructions on `engine_probe`).
    #[inline(never)]
    pub(super) fn similarity(
        c: &Cluster,
        line: &str,
        tokens: &[Token],
        min: f64,
    ) -> Option<(f64, usize, bool)> {
        if c.toks.len() != tokens.len() {
            return None;
        }
        let variable = c.variable as usize;
        let hopeless = |misses: usize| {
            variable > 0 && ((variable - misses.min(variable)) as f64 / variable as f64) < min
        };
        let mut misses = 0usize;
        let (mut compared, mut equal, mut statics) = (0usize, 0usize, 0usize);
        let mut exact = true;
        for (ct, t) in c.toks.iter().zip(tokens) {
            let cls = t.class;
            match cls.role() {
                Role::Structural if cls == Class::Ws => {
                    if ct.class != Class::Ws {
                        return None;
                    }
                    exact = exact && (ct.slot || same_text(c, ct, line, t));
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
                    compared += 1;
                    if !cluster_word && (role != Role::Mined || ct.open) {
                        // A value where the cluster has a slot: both sides agree that it varies. A word
                        // only in a slot that several words have held.
                        equal += 1;
                    }
                    if cluster_word {
                        statics += 1;
                        if ct.class == cls && same_text(c, ct, line, t) {
                            equal += 1;
                        } else {
                            exact = false;
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
        Some((sim, statics, exact))
    }
}
