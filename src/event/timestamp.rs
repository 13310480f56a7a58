//! An event's publish time, read once: the monotonic `Instant` that latency is measured
//! from, and the wall-clock `timestamp` field (RFC 3339, microseconds, UTC) derived from it.
//!
//! Reading both clocks and formatting the date with `humantime` took a third of
//! encoding an event (`cargo bench --bench encode`, `perf`). Here each thread keeps an
//! anchor: a monotonic reading and the wall-clock time at that reading, refreshed once
//! the anchor is [`REANCHOR`] old. Between refreshes the wall time is the anchor plus the
//! monotonic time elapsed. The only error is how far the two clocks drift apart within
//! one interval: NTP slews them by at most 500 ppm, so 0.5 µs, below the printed
//! precision. A clock step shows within one interval.
//!
//! Where the CPU's time-stamp counter can stand in for the monotonic clock
//! (`src/event/tsc.rs`), the time elapsed since the anchor is the counter's, scaled by a rate
//! the thread measures against `Instant` between its first anchor and its latest one, so
//! a publish reads no clock at all. The scaled time is off by the rate's error over at
//! most one interval. Each reading pair is taken within 2,000 ticks, so the measured
//! rate is off by at most 2,000 ticks over the thread's age in ticks (at 3 GHz, 0.07 %
//! when the thread is a millisecond old, under 1 ppm after a second), and the real clock
//! is slewed by NTP at most 500 ppm: over one millisecond, at most 1.2 µs early on and
//! 0.5 µs after, about the printed precision. A thread's first interval reads
//! `Instant::now`.
//!
//! The publish path only reads the time ([`now`]: a [`Stamp`], the `Instant`, its
//! [`crate::clock`] tick and the wall-clock microseconds, the tick and the wall time
//! derived from the anchor's without further `Instant` arithmetic); the text is written
//! when the event is encoded, on whichever thread does that first ([`format()`]). The
//! date and time to the second are formatted once a second per thread and reused; only
//! the microseconds are written per event.

use std::cell::Cell;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::tsc;
use crate::clock::Moment;

/// The longest a thread's anchor is used before it reads the wall clock again.
pub const REANCHOR: Duration = Duration::from_millis(1);

/// The most counter ticks a pair of readings (counter, `Instant`, counter) may span to
/// measure the counter's rate from: 2 µs at 1 GHz, under 1 µs at today's rates, where
/// such a pair takes about 35 ns. A pair taken across a preemption is not used.
const TIGHT_TICKS: u64 = 2_000;

/// `2026-11-24T05:30:00.123456Z`.
pub const LEN: usize = 27;
/// `2026-11-24T05:30:00.`: the part that changes once a second.
const SECOND_LEN: usize = 20;

#[derive(Clone, Copy)]
struct Anchor {
    /// The monotonic reading.
    mono: Instant,
    /// Nanoseconds from the [`crate::clock`] base to `mono`.
    clock_ns: u64,
    /// Microseconds since the Unix epoch at `mono`.
    wall_us: u64,
    /// The counter at `mono`.
    tsc: u64,
    /// Nanoseconds per counter tick, times 2^32; 0 reads `Instant::now` instead.
    ns_per_tick: u64,
    /// [`REANCHOR`] in counter ticks.
    reanchor_ticks: u64,
}

impl Anchor {
    /// A fresh anchor: the real clocks now, and the counter's rate where it is used.
    fn read() -> Self {
        let (mono, tsc, rate) = if tsc::usable() {
            let (reading, tight) = Reading::take();
            let rate = if tight {
                rate_since_first(reading)
            } else {
                None
            };
            (reading.mono, reading.tsc, rate)
        } else {
            (Instant::now(), 0, None)
        };
        let ns_per_tick = rate.unwrap_or(0);
        Self {
            mono,
            clock_ns: Moment::at(mono).since_base_ns(),
            wall_us: unix_micros(SystemTime::now()),
            tsc,
            ns_per_tick,
            reanchor_ticks: rate
                .map_or(0, |r| ((REANCHOR.as_nanos() << 32) / u128::from(r)) as u64),
        }
    }

    /// Now, from this anchor, or `None` once it is [`REANCHOR`] old.
    #[inline]
    fn extrapolate(&self) -> Option<Stamp> {
        let mono = self.mono;
        if self.ns_per_tick != 0 {
            let ticks = tsc::read().wrapping_sub(self.tsc);
            if ticks >= self.reanchor_ticks {
                return None;
            }
            let ns = scale(ticks, self.ns_per_tick);
            return Some(self.stamp(mono + Duration::from_nanos(ns), ns));
        }
        let now = Instant::now();
        let since = now.checked_duration_since(mono).filter(|s| *s < REANCHOR)?;
        Some(self.stamp(now, since.as_nanos() as u64))
    }

    /// The stamp at `at`, `ns` nanoseconds after the anchor.
    fn stamp(&self, at: Instant, ns: u64) -> Stamp {
        Stamp {
            at,
            moment: Moment::from_base_ns(self.clock_ns + ns),
            wall_us: self.wall_us + ns / 1_000,
        }
    }
}

/// The counter and `Instant` read together.
#[derive(Clone, Copy, Debug)]
struct Reading {
    tsc: u64,
    mono: Instant,
}

impl Reading {
    /// A reading, and whether it was taken within [`TIGHT_TICKS`] (three tries).
    fn take() -> (Self, bool) {
        let mut reading = None;
        for _ in 0..3 {
            let before = tsc::read();
            let mono = Instant::now();
            let after = tsc::read();
            let span = after.wrapping_sub(before);
            let taken = Self {
                tsc: before.wrapping_add(span / 2),
                mono,
            };
            if span <= TIGHT_TICKS {
                return (taken, true);
            }
            reading = Some(taken);
        }
        (reading.expect("three tries were made"), false)
    }
}

/// The counter's rate from the thread's first tight reading to `reading` (also tight), as
/// [`ns_per_tick`] gives it. The first reading, or one where the counter went back (a
/// suspend, a migration), restarts the measurement from `reading`.
fn rate_since_first(reading: Reading) -> Option<u64> {
    FIRST.with(|first| match first.get() {
        Some(earlier) if reading.tsc >= earlier.tsc => ns_per_tick(earlier, reading),
        _ => {
            first.set(Some(reading));
            None
        }
    })
}

/// The counter's rate between two tight readings, as nanoseconds per tick times 2^32;
/// `None` when they are under [`REANCHOR`] apart, out of order, or the rate is not
/// between 1/16 and 16 ns per tick (a counter from 62.5 MHz to 16 GHz).
fn ns_per_tick(first: Reading, last: Reading) -> Option<u64> {
    let ns = last.mono.checked_duration_since(first.mono)?.as_nanos();
    let ticks = last.tsc.checked_sub(first.tsc)?;
    if ns < REANCHOR.as_nanos() || ticks == 0 {
        return None;
    }
    let rate = (ns << 32) / u128::from(ticks);
    ((1u128 << 28)..=(1u128 << 36))
        .contains(&rate)
        .then_some(rate as u64)
}

/// `ticks` at `ns_per_tick` (times 2^32), in nanoseconds.
#[inline]
fn scale(ticks: u64, ns_per_tick: u64) -> u64 {
    ((u128::from(ticks) * u128::from(ns_per_tick)) >> 32) as u64
}

/// An event's publish time, read once by [`now`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// The monotonic reading: latency and spans are measured from it.
    pub at: Instant,
    /// `at` in 8 bytes, as the log keeps it ([`Moment`]); its tick is what queued frames
    /// carry.
    pub moment: Moment,
    /// Microseconds since the Unix epoch at `at` (the `timestamp` field, [`format()`]).
    pub wall_us: u64,
}

/// The second a thread last formatted, and its text.
#[derive(Clone, Copy)]
struct SecondText {
    second: u64,
    text: [u8; SECOND_LEN],
}

thread_local! {
    /// `None` until the thread's first reading.
    static ANCHOR: Cell<Option<Anchor>> = const { Cell::new(None) };
    /// The thread's first tight reading: the counter's rate is measured from it.
    static FIRST: Cell<Option<Reading>> = const { Cell::new(None) };
    static SECOND: Cell<SecondText> =
        const { Cell::new(SecondText { second: u64::MAX, text: [0; SECOND_LEN] }) };
}

/// Now: the monotonic `Instant`, its clock tick and the wall-clock microseconds. The
/// publish path reads this; [`format()`] writes the text later, on whichever thread
/// encodes the event. Inlined, apart from the re-anchoring, into the publish path (see
/// [`Staged::new`](super::Staged::new)).
#[inline(always)]
pub fn now() -> Stamp {
    ANCHOR.with(
        |cell| match cell.get().and_then(|anchored| anchored.extrapolate()) {
            Some(stamp) => stamp,
            None => reanchor(cell),
        },
    )
}

/// A fresh anchor for this thread, and the stamp it gives.
#[cold]
fn reanchor(cell: &Cell<Option<Anchor>>) -> Stamp {
    let fresh = Anchor::read();
    cell.set(Some(fresh));
    fresh.stamp(fresh.mono, 0)
}

/// The `timestamp` text for `wall_us` microseconds since the Unix epoch (from [`now`]).
/// The date and time to the second are formatted once a second per thread.
pub fn format(wall_us: u64) -> [u8; LEN] {
    let second = wall_us / 1_000_000;
    let text = SECOND.with(|cell| {
        let mut s = cell.get();
        if s.second != second {
            s = SecondText {
                second,
                text: second_text(second),
            };
            cell.set(s);
        }
        s.text
    });
    let mut out = [0u8; LEN];
    out[..SECOND_LEN].copy_from_slice(&text);
    let mut micros = wall_us % 1_000_000;
    for digit in out[SECOND_LEN..LEN - 1].iter_mut().rev() {
        *digit = b'0' + (micros % 10) as u8;
        micros /= 10;
    }
    out[LEN - 1] = b'Z';
    out
}

/// Microseconds since the Unix epoch (a clock set before 1970 reads as 1970).
fn unix_micros(t: SystemTime) -> u64 {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
}

/// `YYYY-MM-DDTHH:MM:SS.` for `second` since the epoch.
fn second_text(second: u64) -> [u8; SECOND_LEN] {
    let at = UNIX_EPOCH + Duration::from_secs(second);
    // `2026-11-24T05:30:00Z`: always 20 ASCII bytes for years 1970..=9999.
    let text = humantime::format_rfc3339_seconds(at).to_string();
    let mut out = [b'0'; SECOND_LEN];
    let date_time = &text.as_bytes()[..text.len().min(SECOND_LEN - 1)];
    out[..date_time.len()].copy_from_slice(date_time);
    out[SECOND_LEN - 1] = b'.';
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock;

    fn text(t: &[u8; LEN]) -> &str {
        std::str::from_utf8(t).unwrap()
    }

    #[test]
    fn the_text_parses_and_is_close_to_the_wall_clock() {
        for _ in 0..3 {
            let before = SystemTime::now();
            let t = format(now().wall_us);
            let after = SystemTime::now();
            let parsed = humantime::parse_rfc3339(text(&t)).unwrap();
            // Truncation to the microsecond, plus the drift bound.
            let slack = Duration::from_micros(2);
            assert!(parsed + slack >= before, "{} before {before:?}", text(&t));
            assert!(parsed <= after + slack, "{} after {after:?}", text(&t));
            assert!(text(&t).ends_with('Z') && t[10] == b'T' && t[19] == b'.');
            std::thread::sleep(REANCHOR);
        }
    }

    #[test]
    fn readings_within_an_anchor_follow_the_monotonic_clock() {
        let Stamp {
            at: m1,
            wall_us: w1,
            ..
        } = now();
        let Stamp {
            at: m2,
            wall_us: w2,
            ..
        } = now();
        let (t1, t2) = (format(w1), format(w2));
        let wall = |t: &[u8; LEN]| unix_micros(humantime::parse_rfc3339(text(t)).unwrap());
        let mono_us = m2.duration_since(m1).as_micros() as u64;
        // Same anchor or a fresh one: either way within the drift bound and truncation.
        assert!(
            wall(&t2).abs_diff(wall(&t1) + mono_us) <= 2,
            "{t1:?} {t2:?}"
        );
    }

    #[test]
    fn the_tick_is_the_instants_across_reanchors() {
        let until = Instant::now() + REANCHOR * 5;
        let mut stamps = 0;
        while Instant::now() < until {
            let s = now();
            assert_eq!(s.moment.tick(), clock::tick(s.at), "{s:?}");
            // The moment is the instant, to the nanosecond once the clock's base is set.
            let off = s.moment.instant().max(s.at) - s.moment.instant().min(s.at);
            assert!(off < Duration::from_micros(1), "{s:?}");
            stamps += 1;
        }
        assert!(stamps > 5);
    }

    #[test]
    fn stamps_follow_the_monotonic_clock_across_reanchors() {
        // Long enough for the counter's rate to be measured and used where it can be.
        let until = Instant::now() + REANCHOR * 30;
        let slack = Duration::from_micros(20);
        let mut worst = Duration::ZERO;
        while Instant::now() < until {
            let before = Instant::now();
            let s = now();
            let after = Instant::now();
            assert!(s.at + slack >= before, "{s:?} before {before:?}");
            assert!(s.at <= after + slack, "{s:?} after {after:?}");
            worst = worst.max(before.saturating_duration_since(s.at));
            worst = worst.max(s.at.saturating_duration_since(after));
        }
        if tsc::usable() {
            let rate = ANCHOR.with(|a| a.get().map_or(0, |a| a.ns_per_tick));
            assert_ne!(rate, 0, "the counter is usable but was not used");
        }
        assert!(worst <= slack, "{worst:?}");
    }

    #[test]
    fn the_counters_rate_needs_an_interval_and_a_plausible_counter() {
        let t0 = Instant::now();
        let at = |tsc, after| Reading {
            tsc,
            mono: t0 + after,
        };
        let ms = Duration::from_millis(1);
        // 3 GHz: a third of a nanosecond per tick.
        let rate = ns_per_tick(at(1_000, Duration::ZERO), at(3_001_000, ms)).unwrap();
        assert_eq!(rate, (1u64 << 32) / 3);
        assert_eq!(scale(3_000_000, rate), 999_999);
        assert_eq!(scale(0, rate), 0);
        // Under one interval apart, out of order, no ticks, or an implausible rate.
        assert_eq!(
            ns_per_tick(at(0, Duration::ZERO), at(3_000_000, ms / 2)),
            None
        );
        assert_eq!(ns_per_tick(at(5, ms), at(3_000_000, Duration::ZERO)), None);
        assert_eq!(ns_per_tick(at(5, Duration::ZERO), at(5, ms)), None);
        assert_eq!(ns_per_tick(at(3_000_000, Duration::ZERO), at(5, ms)), None);
        assert_eq!(ns_per_tick(at(0, Duration::ZERO), at(10, ms)), None);
        assert_eq!(ns_per_tick(at(0, Duration::ZERO), at(1 << 40, ms)), None);
        // The bounds: 16 GHz and 62.5 MHz.
        assert!(ns_per_tick(at(0, Duration::ZERO), at(16_000_000, ms)).is_some());
        assert!(ns_per_tick(at(0, Duration::ZERO), at(62_500, ms)).is_some());
    }

    #[test]
    fn seconds_are_formatted_as_humantime_does() {
        for second in [0, 59, 86_399, 951_782_400, 1_795_000_000, 4_102_444_799] {
            let at = UNIX_EPOCH + Duration::from_secs(second);
            let expected = humantime::format_rfc3339_micros(at).to_string();
            assert_eq!(
                std::str::from_utf8(&second_text(second)).unwrap(),
                &expected[..SECOND_LEN]
            );
        }
    }
}
