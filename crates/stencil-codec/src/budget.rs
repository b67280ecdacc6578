//! A memory budget shared by every stream of a process.
//!
//! Per-stream limits bound one stream; they do not bound a thousand of them. An intake gives each
//! [`crate::StreamDecoder`] the same [`MemoryBudget`], and each decoder holds [`Reservation`]s against it:
//! one for its state (tables, stream-zstd context, native columns) while the stream lives, and one for
//! the batch being decoded (its decompression buffer, reserved before decompressing, and its rebuilt
//! output as it grows). Over the budget, the batch fails with [`crate::ErrorKind::MemoryBudget`], which
//! is overload, not a fault of the batch: the intake ends that stream with `UNAVAILABLE` and the agent
//! retries, while streams that fit keep working.
//!
//! Atomics only: no I/O, no clocks, so the codec stays sans-I/O.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Bytes the decoders of a process may hold at once.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: usize,
    used: AtomicUsize,
}

impl MemoryBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(MemoryBudget {
            limit,
            used: AtomicUsize::new(0),
        })
    }

    /// The limit in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Takes up to `want` bytes (at least `min`, else nothing); returns what was taken.
    fn take_up_to(&self, want: usize, min: usize) -> usize {
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            let room = self.limit.saturating_sub(used);
            let take = want.min(room);
            if take < min || take == 0 {
                return 0;
            }
            match self.used.compare_exchange_weak(
                used,
                used + take,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return take,
                Err(now) => used = now,
            }
        }
    }

    fn give_back(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// Bytes held against a budget (or against none), given back when dropped.
#[derive(Debug, Default)]
pub struct Reservation {
    budget: Option<Arc<MemoryBudget>>,
    held: usize,
}

impl Reservation {
    /// An empty reservation against `budget` (`None`: unlimited, nothing is counted).
    pub fn new(budget: Option<Arc<MemoryBudget>>) -> Self {
        Reservation { budget, held: 0 }
    }

    /// Bytes held.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Holds exactly `bytes`: gives back any excess, or takes the difference. `false` (and nothing
    /// changes) when the budget cannot cover it.
    pub fn resize(&mut self, bytes: usize) -> bool {
        let Some(budget) = &self.budget else {
            self.held = bytes;
            return true;
        };
        if bytes <= self.held {
            budget.give_back(self.held - bytes);
        } else {
            let more = bytes - self.held;
            if budget.take_up_to(more, more) != more {
                return false;
            }
        }
        self.held = bytes;
        true
    }

    /// Holds up to `want` more bytes, as many as the budget has left; returns how many were added.
    pub fn grow_up_to(&mut self, want: usize) -> usize {
        let Some(budget) = &self.budget else {
            self.held += want;
            return want;
        };
        let took = budget.take_up_to(want, 1);
        self.held += took;
        took
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(budget) = &self.budget {
            budget.give_back(self.held);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_share_the_budget_and_give_back_on_drop() {
        let budget = MemoryBudget::new(100);
        let mut a = Reservation::new(Some(budget.clone()));
        let mut b = Reservation::new(Some(budget.clone()));
        assert!(a.resize(60));
        assert!(!b.resize(50), "only 40 left");
        assert_eq!(b.held(), 0);
        assert_eq!(b.grow_up_to(50), 40);
        assert_eq!(budget.used(), 100);
        assert_eq!(Reservation::new(Some(budget.clone())).grow_up_to(1), 0);
        assert!(a.resize(10));
        assert_eq!(budget.used(), 50);
        drop(b);
        assert_eq!(budget.used(), 10);
        drop(a);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn without_a_budget_everything_fits() {
        let mut r = Reservation::new(None);
        assert!(r.resize(usize::MAX / 2));
        assert_eq!(r.grow_up_to(7), 7);
    }
}
