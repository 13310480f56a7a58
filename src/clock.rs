//! Publish times small enough to travel with every queued frame: microseconds since the
//! process's first look at this clock, as a `u32` that wraps every 71 minutes. An age is
//! the wrapping difference of two ticks, right for any age under 71 minutes — far beyond
//! any queue's life (queues are bounded, and stalled connections are evicted).

use std::sync::OnceLock;
use std::time::Instant;

static BASE: OnceLock<Instant> = OnceLock::new();

fn base() -> Instant {
    *BASE.get_or_init(Instant::now)
}

/// The tick of `at` (never 0, which means "not stamped").
pub fn tick(at: Instant) -> u32 {
    (at.saturating_duration_since(base()).as_micros() as u32).max(1)
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
}
