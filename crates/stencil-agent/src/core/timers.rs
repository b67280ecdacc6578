//! The worker's clocks, kept as data (TRANSPORT.md §6, §13): which timers are armed and when they fire,
//! and the seeded jitter that spreads lifetimes and backoff delays. The core never reads a clock; the
//! driver feeds it `now` and fires [`Timer`]s when `Timers::next` says so, so a fake clock drives every
//! transition in tests.

use std::time::{Duration, Instant};

/// Timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// Connect timeout.
    Connect,
    /// Stream lifetime.
    Lifetime,
    /// Drain timeout.
    Drain,
    /// Stability window.
    Stability,
    /// Backoff delay.
    Backoff,
    /// Pause recheck.
    Recheck,
    /// Shutdown grace.
    Grace,
    /// Trailer wait after half-close.
    Close,
    /// How long data batches wait for the intake's first answer (its echo or an ack) on a new stream.
    Echo,
}

impl Timer {
    /// Every timer, in the order of its slot.
    pub const ALL: [Timer; 9] = [
        Timer::Connect,
        Timer::Lifetime,
        Timer::Drain,
        Timer::Stability,
        Timer::Backoff,
        Timer::Recheck,
        Timer::Grace,
        Timer::Close,
        Timer::Echo,
    ];
}

/// When each timer fires, if armed.
#[derive(Debug, Clone, Default)]
pub(super) struct Timers {
    at: [Option<Instant>; Timer::ALL.len()],
}

impl Timers {
    pub(super) fn arm(&mut self, timer: Timer, at: Instant) {
        self.at[timer as usize] = Some(at);
    }

    pub(super) fn disarm(&mut self, timer: Timer) {
        self.at[timer as usize] = None;
    }

    /// Disarms `timer` and says whether it was armed.
    pub(super) fn take(&mut self, timer: Timer) -> bool {
        self.at[timer as usize].take().is_some()
    }

    pub(super) fn is_armed(&self, timer: Timer) -> bool {
        self.at[timer as usize].is_some()
    }

    pub(super) fn get(&self, timer: Timer) -> Option<Instant> {
        self.at[timer as usize]
    }

    /// Disarms `timer` if it is due at `now`, and says so (a stale fire is ignored).
    pub(super) fn fire(&mut self, timer: Timer, now: Instant) -> bool {
        let due = self.get(timer).is_some_and(|at| at <= now);
        if due {
            self.disarm(timer);
        }
        due
    }

    /// Disarms every timer.
    pub(super) fn clear(&mut self) {
        self.at = Default::default();
    }

    /// The earliest armed timer.
    pub(super) fn next(&self) -> Option<(Instant, Timer)> {
        Timer::ALL
            .iter()
            .zip(self.at.iter())
            .filter_map(|(k, t)| t.map(|at| (at, *k)))
            .min_by_key(|(at, _)| *at)
    }
}

/// A seeded generator of jitter (splitmix64): the same seed gives the same delays.
#[derive(Debug, Clone)]
pub(super) struct Jitter(u64);

impl Jitter {
    pub(super) fn new(seed: u64) -> Self {
        Jitter(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    /// Uniform in [0, 1).
    pub(super) fn unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// The backoff delay after `errors` consecutive errors: uniform in [d/2, d], d = min(max, base · 2ⁿ)
    /// with n capped at 7.
    pub(super) fn backoff(&mut self, errors: u32, base: Duration, max: Duration) -> Duration {
        let d = base.saturating_mul(1 << errors.min(7)).min(max);
        d.mul_f64(0.5 + 0.5 * self.unit())
    }

    /// A stream's lifetime: the first stream's is drawn from [0.5, 1.1] of `lifetime` (so that agents
    /// started together do not rotate together), later ones within ±`jitter`.
    pub(super) fn lifetime(&mut self, lifetime: Duration, jitter: f64, first: bool) -> Duration {
        let factor = if first {
            0.5 + 0.6 * self.unit()
        } else {
            1.0 - jitter + 2.0 * jitter * self.unit()
        };
        lifetime.mul_f64(factor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_is_the_earliest_armed_timer_and_stale_fires_are_ignored() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        assert_eq!(t.next(), None);
        t.arm(Timer::Lifetime, t0 + Duration::from_secs(9));
        t.arm(Timer::Connect, t0 + Duration::from_secs(3));
        assert_eq!(
            t.next(),
            Some((t0 + Duration::from_secs(3), Timer::Connect))
        );
        assert!(!t.fire(Timer::Connect, t0), "not due yet");
        assert!(t.fire(Timer::Connect, t0 + Duration::from_secs(3)));
        assert!(
            !t.fire(Timer::Connect, t0 + Duration::from_secs(4)),
            "fired once"
        );
        assert_eq!(t.next().map(|(_, k)| k), Some(Timer::Lifetime));
        t.clear();
        assert_eq!(t.next(), None);
    }

    #[test]
    fn backoff_doubles_within_its_bounds_and_is_reproducible() {
        let (base, max) = (Duration::from_secs(1), Duration::from_secs(120));
        let mut a = Jitter::new(7);
        let mut b = Jitter::new(7);
        for n in 0..12 {
            let d = a.backoff(n, base, max);
            assert_eq!(d, b.backoff(n, base, max));
            let cap = base.saturating_mul(1 << n.min(7)).min(max);
            assert!(
                d >= cap / 2 && d <= cap,
                "{n}: {d:?} not in [{:?}, {cap:?}]",
                cap / 2
            );
        }
    }
}
