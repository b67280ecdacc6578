//! Bounded stores with O(1) amortised CLOCK eviction, shared by every namespace of the engine (patterns,
//! dictionary namespaces, schemas).
//!
//! Each entry has a count and a byte cost. Inserting past either cap first evicts unpinned entries, sweeping
//! a clock hand that gives each recently used entry a second chance, down to 90 % of the caps, so deletes
//! come in small groups. Entries pinned for the current record are never evicted; if only pinned entries
//! remain, the insert is refused and the caller falls back (raw log, inline value): nothing is lost.

/// A count and byte cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Maximum entries.
    pub count: usize,
    /// Maximum bytes (the sum of entry costs).
    pub bytes: usize,
}

impl Budget {
    /// A budget of `count` entries and `bytes` bytes.
    pub const fn new(count: usize, bytes: usize) -> Self {
        Budget { count, bytes }
    }
}

#[derive(Debug)]
struct Slot<T> {
    value: T,
    cost: usize,
    referenced: bool,
    pin: u64,
}

/// A slab of entries under a [`Budget`], addressed by slot index.
#[derive(Debug)]
pub struct Store<T> {
    slots: Vec<Option<Slot<T>>>,
    free: Vec<usize>,
    hand: usize,
    count: usize,
    bytes: usize,
    budget: Budget,
}

impl<T> Store<T> {
    /// An empty store.
    pub fn new(budget: Budget) -> Self {
        Store {
            slots: Vec::new(),
            free: Vec::new(),
            hand: 0,
            count: 0,
            bytes: 0,
            budget,
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The budget.
    pub fn budget(&self) -> Budget {
        self.budget
    }

    /// The entry at `slot`.
    pub fn get(&self, slot: usize) -> Option<&T> {
        self.slots.get(slot)?.as_ref().map(|s| &s.value)
    }

    /// The entry at `slot`, mutably.
    pub fn get_mut(&mut self, slot: usize) -> Option<&mut T> {
        self.slots.get_mut(slot)?.as_mut().map(|s| &mut s.value)
    }

    /// Marks an entry used (second chance) and pins it for record `epoch`.
    pub fn touch(&mut self, slot: usize, epoch: u64) {
        if let Some(Some(s)) = self.slots.get_mut(slot) {
            s.referenced = true;
            s.pin = epoch;
        }
    }

    /// Changes an entry's cost (a pattern that widened). May exceed the cap until the next insert.
    pub fn recost(&mut self, slot: usize, cost: usize) {
        if let Some(Some(s)) = self.slots.get_mut(slot) {
            self.bytes = self.bytes - s.cost + cost;
            s.cost = cost;
        }
    }

    /// Inserts a value pinned for `epoch`, evicting unpinned entries if needed (handed to `evicted`).
    /// Returns the slot, or gives the value back when the caps cannot be met.
    pub fn insert(
        &mut self,
        value: T,
        cost: usize,
        epoch: u64,
        evicted: &mut impl FnMut(T),
    ) -> Result<usize, T> {
        if cost > self.budget.bytes || self.budget.count == 0 {
            return Err(value);
        }
        if self.count + 1 > self.budget.count || self.bytes + cost > self.budget.bytes {
            let low_count = (self.budget.count * 9 / 10).min(self.budget.count - 1);
            let low_bytes = (self.budget.bytes / 10 * 9).min(self.budget.bytes - cost);
            if !self.evict_to(low_count, low_bytes, epoch, evicted) {
                return Err(value);
            }
        }
        let slot = Slot {
            value,
            cost,
            referenced: false,
            pin: epoch,
        };
        self.count += 1;
        self.bytes += cost;
        Ok(match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(slot);
                i
            }
            None => {
                self.slots.push(Some(slot));
                self.slots.len() - 1
            }
        })
    }

    /// Removes the entry at `slot`.
    pub fn remove(&mut self, slot: usize) -> Option<T> {
        let s = self.slots.get_mut(slot)?.take()?;
        self.count -= 1;
        self.bytes -= s.cost;
        self.free.push(slot);
        Some(s.value)
    }

    /// Sweeps the clock until count ≤ `count` and bytes ≤ `bytes`, skipping entries pinned for `epoch`.
    /// Returns false if that is impossible (everything left is pinned).
    fn evict_to(
        &mut self,
        count: usize,
        bytes: usize,
        epoch: u64,
        evicted: &mut impl FnMut(T),
    ) -> bool {
        let n = self.slots.len();
        let mut steps = 0;
        // Two full turns: one to clear reference bits, one to evict.
        while (self.count > count || self.bytes > bytes) && steps < 2 * n + 2 {
            steps += 1;
            if n == 0 {
                break;
            }
            let i = self.hand % n;
            self.hand = (i + 1) % n;
            let victim = match &mut self.slots[i] {
                Some(s) if s.pin == epoch => false,
                Some(s) if s.referenced => {
                    s.referenced = false;
                    false
                }
                Some(_) => true,
                None => false,
            };
            if victim {
                if let Some(v) = self.remove(i) {
                    evicted(v);
                }
            }
        }
        self.count <= count && self.bytes <= bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_hold_and_pinned_entries_survive() {
        let mut s = Store::new(Budget::new(10, 1_000));
        let mut gone = Vec::new();
        for i in 0..100u64 {
            s.insert(i, 10, i, &mut |v| gone.push(v)).expect("room");
            assert!(s.len() <= 10 && s.bytes() <= 1_000);
        }
        assert_eq!(gone.len() + s.len(), 100);
        // Everything pinned for epoch 7: a new insert is refused, nothing evicted.
        let mut t = Store::new(Budget::new(2, 100));
        t.insert(1u8, 1, 7, &mut |_| panic!("nothing to evict"))
            .expect("room");
        t.insert(2u8, 1, 7, &mut |_| panic!("nothing to evict"))
            .expect("room");
        assert_eq!(t.insert(3u8, 1, 7, &mut |_| panic!("pinned")), Err(3));
        // Too big for the byte cap at all.
        assert_eq!(t.insert(4u8, 101, 8, &mut |_| {}), Err(4));
    }

    #[test]
    fn recently_used_entries_get_a_second_chance() {
        let mut s = Store::new(Budget::new(3, 1_000));
        let a = s.insert("a", 1, 1, &mut |_| {}).expect("a");
        s.insert("b", 1, 2, &mut |_| {}).expect("b");
        s.insert("c", 1, 3, &mut |_| {}).expect("c");
        s.touch(a, 4);
        let mut gone = Vec::new();
        s.insert("d", 1, 5, &mut |v| gone.push(v)).expect("d");
        assert!(!gone.contains(&"a"), "a was used recently: {gone:?}");
        assert!(s.get(a).is_some());
    }
}
