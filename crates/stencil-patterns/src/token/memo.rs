//! Why the tokenizer remembers chunks: classifying a chunk that is neither all letters nor all digits
//! runs the typed tests (URL, e-mail, UUID, MAC, IP, date, number, unit, path, host:port, id), about
//! 270 instructions a chunk on the Loghub samples, and a stream repeats most such chunks: its hosts,
//! paths, addresses, class names and levels come back line after line. One pass over each file with a
//! fresh memo finds 79 % of them in it on the Loghub samples, 83 % on `lnav-formats` and 75 % on the
//! fail2ban samples; the misses are mostly times, ids and counters, new on every line.
//!
//! How a chunk is cut ([`Cut`]) depends on its bytes alone, so a chunk seen before is cut as it was
//! then: the memo cannot change a token. It is direct-mapped (one slot per hash, the newest chunk wins
//! the slot), holds chunks of at most 32 bytes as four zero-padded words (a chunk never holds a NUL,
//! which is a delimiter, so padding cannot make two chunks equal), and costs a hash and four compares
//! per lookup. A chunk it does not hold is classified as without it.

use super::{chunk, cut, push_cut, Cut, Token};

/// Slots (a power of two).
const SLOTS: usize = 1024;
/// Longest chunk remembered, in bytes (four words).
const MAX_LEN: usize = 32;

#[derive(Debug, Clone, Copy)]
struct Slot {
    /// The chunk's bytes, zero-padded; all zero when the slot is empty (no chunk is).
    key: [u64; 4],
    cut: Cut,
}

/// Recent chunks and their cuts.
#[derive(Debug)]
pub(super) struct Memo {
    /// Empty when disabled.
    slots: Box<[Slot]>,
}

impl Memo {
    /// An empty memo of [`SLOTS`] slots.
    pub(super) fn new() -> Self {
        let empty = Slot {
            key: [0; 4],
            cut: Cut::Split,
        };
        Memo {
            slots: vec![empty; SLOTS].into_boxed_slice(),
        }
    }

    /// A memo that remembers nothing (no allocation): every chunk is classified.
    pub(super) fn disabled() -> Self {
        Memo {
            slots: Box::new([]),
        }
    }

    /// Pushes the tokens of the chunk `line[start..end]` (byte categories `seen`), as
    /// [`super::chunk`] does, classifying it only when it is not remembered.
    #[inline]
    pub(super) fn chunk(
        &mut self,
        line: &str,
        start: usize,
        end: usize,
        seen: u16,
        out: &mut Vec<Token>,
    ) {
        let w = &line.as_bytes()[start..end];
        // A disabled memo has no slot at all; a long chunk is classified as without a memo.
        if self.slots.is_empty() || w.len() > MAX_LEN {
            return chunk(line, start, end, seen, out);
        }
        let key = words(w);
        let hash =
            (key[0] ^ key[1].rotate_left(16) ^ key[2].rotate_left(32) ^ key[3].rotate_left(48))
                .wrapping_mul(0x9e37_79b9_7f4a_7c15);
        // `hash >> 54` is below `SLOTS`, the length of an enabled memo.
        let Some(slot) = self
            .slots
            .get_mut((hash >> (64 - SLOTS.trailing_zeros())) as usize)
        else {
            return chunk(line, start, end, seen, out);
        };
        if slot.key != key {
            slot.key = key;
            slot.cut = cut(line, start, end, seen);
        }
        push_cut(line, start, end, slot.cut, out);
    }
}

/// `w` (at most [`MAX_LEN`] bytes) as four little-endian words, zero-padded.
#[inline]
fn words(w: &[u8]) -> [u64; 4] {
    let mut key = [0u64; 4];
    for (k, part) in key.iter_mut().zip(w.chunks(8)) {
        *k = match <[u8; 8]>::try_from(part) {
            Ok(full) => u64::from_le_bytes(full),
            Err(_) => {
                let mut padded = [0u8; 8];
                padded[..part.len()].copy_from_slice(part);
                u64::from_le_bytes(padded)
            }
        };
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The memo's size, as `Tokenizer::new` documents it: 40 KiB.
    #[test]
    fn the_memo_holds_40_kib() {
        assert_eq!(std::mem::size_of::<Slot>() * SLOTS, 40 << 10);
        assert_eq!(Memo::new().slots.len(), SLOTS);
        assert!(Memo::disabled().slots.is_empty());
    }

    /// A chunk's words are its bytes, zero-padded.
    #[test]
    fn words_are_the_bytes_zero_padded() {
        let line = b"ab 0123456789abcdef0123456789ABCDEF";
        for (start, len) in [(0, 2), (3, 8), (3, 13), (3, 32), (30, 5), (33, 2)] {
            let mut want = [0u8; 32];
            want[..len].copy_from_slice(&line[start..start + len]);
            let want: Vec<u64> = want
                .chunks(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
                .collect();
            assert_eq!(
                words(&line[start..start + len]).to_vec(),
                want,
                "{start}+{len}"
            );
        }
    }
}
