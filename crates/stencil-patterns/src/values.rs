//! Typing dynamic values (PATTERNS.md §4, compat profile) and the doorkeeper that decides which strings
//! earn a dictionary entry (§4.1).
//!
//! A value is an int only when its decimal rendering gives back the same text, and a float only when the
//! shared canonical float text (the one the intake renders with) does; everything else stays a string.
//! Strings are admitted to the dictionary on their second sighting, counted by a bounded, aging table.

use std::hash::BuildHasher;

use stencil_codec::float_text;

use crate::token::Class;

/// A typed scalar for compat datums.
#[derive(Debug, Clone, PartialEq)]
pub enum Typed {
    /// An integer whose canonical text is the token.
    Int(i64),
    /// A float whose canonical text is the token.
    Float(f64),
    /// Anything else.
    Text,
}

/// Types the text of one slot.
pub fn type_value(text: &str, class: Class) -> Typed {
    let b = text.as_bytes();
    match class {
        Class::Int | Class::KvValue | Class::Id if is_canonical_int(b) => match text.parse::<i64>()
        {
            Ok(i) => Typed::Int(i),
            Err(_) => Typed::Text,
        },
        Class::Float | Class::KvValue
            if b.contains(&b'.') && !b.contains(&b'e') && !b.contains(&b'E') =>
        {
            match text.parse::<f64>() {
                Ok(f) if f.is_finite() && float_text(f).is_ok_and(|t| t == text) => Typed::Float(f),
                _ => Typed::Text,
            }
        }
        _ => Typed::Text,
    }
}

/// `0` or `-?[1-9][0-9]*`: the only integer texts that re-format to themselves (`-0` does not).
fn is_canonical_int(b: &[u8]) -> bool {
    let body = b.strip_prefix(b"-").unwrap_or(b);
    match body {
        [b'0'] => b.len() == 1,
        [first, rest @ ..] => {
            (b'1'..=b'9').contains(first) && rest.iter().all(u8::is_ascii_digit) && body.len() <= 19
        }
        [] => false,
    }
}

/// Whether a string may ever become a dictionary entry: 2–128 bytes, and not a kind whose values are
/// unique by nature (UUIDs, long hex, timestamps).
pub fn dict_eligible(text: &str, class: Class, min: usize, max: usize) -> bool {
    (min..=max).contains(&text.len())
        && !matches!(class, Class::Uuid | Class::DateTime)
        && !(class == Class::Hex && text.len() >= 16)
}

/// Fixed-key hashing: the same text hashes the same in every run and on every machine.
pub fn stable_hash(text: &str) -> u64 {
    rustc_hash::FxBuildHasher.hash_one(text)
}

/// A bounded, aging count of recent sightings: a direct-mapped table of hashes and counts. A new string
/// takes over its slot, so old candidates age out as new ones arrive; memory is fixed.
///
/// Each slot is one word: the hash with its low byte replaced by the count (0 for an empty slot). The
/// table has at least 256 slots, so the low byte is part of every slot's index and two hashes in one
/// slot differ in the rest if they differ at all; half the bytes of a (hash, count) pair keep more of
/// the table in cache.
#[derive(Debug)]
pub struct Doorkeeper {
    table: Vec<u64>,
    mask: usize,
}

/// The count's bits in a slot.
const COUNT: u64 = 0xff;

impl Doorkeeper {
    /// A table of `slots` entries (rounded up to a power of two, at least 256).
    pub fn new(slots: usize) -> Self {
        let n = slots.max(COUNT as usize + 1).next_power_of_two();
        Doorkeeper {
            table: vec![0; n],
            mask: n - 1,
        }
    }

    /// Records a sighting of `hash` and returns how many times it has been seen (saturating).
    pub fn see(&mut self, hash: u64) -> u8 {
        let slot = &mut self.table[(hash as usize) & self.mask];
        let count = (*slot & COUNT) as u8;
        let count = if *slot & !COUNT == hash & !COUNT && count > 0 {
            count.saturating_add(1)
        } else {
            1
        };
        *slot = (hash & !COUNT) | u64::from(count);
        count
    }

    /// Forgets `hash` (after admission, so that a later eviction needs two fresh sightings).
    pub fn forget(&mut self, hash: u64) {
        let slot = &mut self.table[(hash as usize) & self.mask];
        if *slot & !COUNT == hash & !COUNT {
            *slot = 0;
        }
    }

    /// Bytes used.
    pub fn bytes(&self) -> usize {
        self.table.len() * std::mem::size_of::<u64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_exact_renderings_are_typed() {
        assert_eq!(type_value("446", Class::Int), Typed::Int(446));
        assert_eq!(type_value("-17", Class::Int), Typed::Int(-17));
        assert_eq!(type_value("0", Class::Int), Typed::Int(0));
        assert_eq!(type_value("99.99", Class::Float), Typed::Float(99.99));
        for text in [
            "00123",
            "+5",
            "-0",
            "1e3",
            "1.0",
            "10.30",
            "9223372036854775808",
            "1,000",
        ] {
            let class = if text.contains('.') {
                Class::Float
            } else {
                Class::Int
            };
            assert_eq!(type_value(text, class), Typed::Text, "{text}");
        }
        assert_eq!(
            type_value("9223372036854775807", Class::Int),
            Typed::Int(i64::MAX)
        );
    }

    #[test]
    fn eligibility() {
        assert!(!dict_eligible("a", Class::Word, 2, 128));
        assert!(dict_eligible("ab", Class::Word, 2, 128));
        assert!(dict_eligible(&"x".repeat(128), Class::Word, 2, 128));
        assert!(!dict_eligible(&"x".repeat(129), Class::Word, 2, 128));
        assert!(!dict_eligible(
            "123e4567-e89b-12d3-a456-426614174000",
            Class::Uuid,
            2,
            128
        ));
        assert!(!dict_eligible("deadbeefdeadbeef", Class::Hex, 2, 128));
        assert!(!dict_eligible("2024-01-15", Class::DateTime, 2, 128));
    }

    #[test]
    fn doorkeeper_counts_and_ages() {
        let mut d = Doorkeeper::new(4);
        assert_eq!(d.bytes(), 256 * 8, "at least 256 slots");
        assert_eq!(d.see(1), 1);
        assert_eq!(d.see(1), 2);
        assert_eq!(d.see(257), 1, "257 collides with 1 and takes its slot");
        assert_eq!(d.see(1), 1, "1 aged out");
        d.forget(1);
        assert_eq!(d.see(1), 1);
        for _ in 0..300 {
            d.see(2);
        }
        assert_eq!(d.see(2), 255, "the count saturates");
        assert_eq!(d.see(258), 1, "and is not taken for another hash's");
    }
}
