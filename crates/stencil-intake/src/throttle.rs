//! Rate-limited warnings. A scanner or a flood of refused connections must not flood the intake's own
//! log, and an operator must still see that something is refused, and how often.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Lets one event through per interval and counts the others.
#[derive(Debug)]
pub(crate) struct Throttle {
    started: Instant,
    every: Duration,
    /// Milliseconds after `started` of the last event let through, plus one (0 = none yet).
    last: AtomicU64,
    suppressed: AtomicU64,
}

impl Throttle {
    /// A throttle letting one event through per `every`.
    pub(crate) fn new(every: Duration) -> Self {
        Throttle {
            started: Instant::now(),
            every,
            last: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when this event should be logged, with `n` events suppressed since the last one that
    /// was; `None` when it should not.
    pub(crate) fn allow(&self) -> Option<u64> {
        let now = self.started.elapsed().as_millis() as u64 + 1;
        let last = self.last.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= self.every.as_millis() as u64;
        if due
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_event_per_interval_and_the_rest_are_counted() {
        let t = Throttle::new(Duration::from_millis(200));
        assert_eq!(t.allow(), Some(0));
        assert_eq!(t.allow(), None);
        assert_eq!(t.allow(), None);
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(t.allow(), Some(2));
        assert_eq!(t.allow(), None);
    }
}
