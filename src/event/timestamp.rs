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
//! The publish path only reads the time ([`now`]: the `Instant` and the wall-clock
//! microseconds); the text is written when the event is encoded, on whichever thread
//! does that first ([`format()`]). The date and time to the second are formatted once a
//! second per thread and reused; only the microseconds are written per event.

use std::cell::Cell;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The longest a thread's anchor is used before it reads the wall clock again.
pub const REANCHOR: Duration = Duration::from_millis(1);

/// `2026-11-24T05:30:00.123456Z`.
pub const LEN: usize = 27;
/// `2026-11-24T05:30:00.`: the part that changes once a second.
const SECOND_LEN: usize = 20;

#[derive(Clone, Copy)]
struct Anchor {
    /// `None` until the thread's first reading.
    mono: Option<Instant>,
    /// Microseconds since the Unix epoch at `mono`.
    wall_us: u64,
}

/// The second a thread last formatted, and its text.
#[derive(Clone, Copy)]
struct SecondText {
    second: u64,
    text: [u8; SECOND_LEN],
}

thread_local! {
    static ANCHOR: Cell<Anchor> = const { Cell::new(Anchor { mono: None, wall_us: 0 }) };
    static SECOND: Cell<SecondText> =
        const { Cell::new(SecondText { second: u64::MAX, text: [0; SECOND_LEN] }) };
}

/// Now, as a monotonic `Instant` and as microseconds since the Unix epoch on the wall
/// clock. The publish path reads this; [`format()`] writes the text later, on whichever
/// thread encodes the event.
pub fn now() -> (Instant, u64) {
    let mono = Instant::now();
    ANCHOR.with(|cell| {
        let mut a = cell.get();
        let since = match a.mono {
            Some(at) if mono.saturating_duration_since(at) < REANCHOR => {
                mono.saturating_duration_since(at)
            }
            _ => {
                a.mono = Some(mono);
                a.wall_us = unix_micros(SystemTime::now());
                cell.set(a);
                Duration::ZERO
            }
        };
        (mono, a.wall_us + since.as_micros() as u64)
    })
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

    fn text(t: &[u8; LEN]) -> &str {
        std::str::from_utf8(t).unwrap()
    }

    #[test]
    fn the_text_parses_and_is_close_to_the_wall_clock() {
        for _ in 0..3 {
            let before = SystemTime::now();
            let t = format(now().1);
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
        let (m1, w1) = now();
        let (m2, w2) = now();
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
