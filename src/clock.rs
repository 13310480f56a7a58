//! Publish times small enough to travel with every queued frame: microseconds since the
//! process's first look at this clock, as a `u32` that wraps every 71 minutes. An age is
//! the wrapping difference of two ticks, right for any age under 71 minutes — far beyond
//! any queue's life (queues are bounded, and stalled connections are evicted).

use std::num::NonZeroU64;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

static BASE: OnceLock<Instant> = OnceLock::new();

fn base() -> Instant {
    *BASE.get_or_init(Instant::now)
}

/// An `Instant` in 8 bytes: nanoseconds since this clock's base, never zero, so an
/// `Option<Moment>` is 8 bytes where an `Option<Instant>` is 16. A connection's deadlines
/// and timestamps use it, as every connection carries them (`firehose bench --idle`).
/// Instants before the base read as the base; it is taken before the first connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Moment(NonZeroU64);

impl Moment {
    /// `at`, to the nanosecond.
    pub fn at(at: Instant) -> Self {
        let ns = at.saturating_duration_since(base()).as_nanos();
        Self::from_base_ns(u64::try_from(ns).unwrap_or(u64::MAX))
    }

    /// `ns` nanoseconds after this clock's base (0 reads as 1).
    pub fn from_base_ns(ns: u64) -> Self {
        Moment(NonZeroU64::new(ns).unwrap_or(NonZeroU64::MIN))
    }

    /// Its [`tick`], without reading the base again.
    pub fn tick(self) -> u32 {
        tick_at_ns(self.0.get())
    }

    /// Nanoseconds since this clock's base.
    pub fn since_base_ns(self) -> u64 {
        self.0.get()
    }

    /// Back to an `Instant`.
    pub fn instant(self) -> Instant {
        base() + Duration::from_nanos(self.0.get())
    }
}

/// The tick of `at` (never 0, which means "not stamped").
pub fn tick(at: Instant) -> u32 {
    Moment::at(at).tick()
}

/// The tick `ns` nanoseconds after this clock's base.
pub fn tick_at_ns(ns: u64) -> u32 {
    ((ns / 1_000) as u32).max(1)
}

/// Microseconds from tick `then` to `now`.
pub fn age_us(then: u32, now: u32) -> u32 {
    now.wrapping_sub(then)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_survive_the_wrap() {
        assert_eq!(age_us(u32::MAX - 5, 10), 16);
        assert_eq!(age_us(100, 350), 250);
        let t = tick(Instant::now());
        assert!(t >= 1);
    }

    #[test]
    fn a_moment_is_an_instant_in_eight_bytes() {
        assert_eq!(std::mem::size_of::<Option<Moment>>(), 8);
        let now = Instant::now();
        let later = now + Duration::from_secs(3600);
        assert_eq!(Moment::at(later).instant(), later);
        assert!(Moment::at(now) < Moment::at(later));
        assert_eq!(Moment::at(later).tick(), tick(later));
        // Before the base: the base itself (1 ns after it, as zero is taken).
        let early = base().checked_sub(Duration::from_secs(1));
        if let Some(early) = early {
            assert_eq!(
                Moment::at(early).instant(),
                base() + Duration::from_nanos(1)
            );
        }
    }
}
