//! Retention: which events the log keeps, enforced off the publish path.
//!
//! The log keeps the newest events within three bounds, whichever bites first:
//! `--retention-events` (count), `--retention-bytes` (their encoded frames) and
//! `--retention-age`. One thread (`firehose-retention`) runs a [`Trimmer`] every
//! [`BUSY_EVERY`] to [`IDLE_EVERY`], sooner the faster events arrive ([`pause_after`]): it notes each new
//! event's size and publish time, and trims the oldest past any bound with
//! [`EventLog::trim_through`], which also frees them, here rather than on a publisher's
//! or an I/O thread ([`EventLog::reclaim`]).
//!
//! The log's ring has room for twice `--retention-events`, so a publisher finds its slot
//! already emptied unless the trimmer is more than a whole retention behind. Even then
//! nothing waits: the publisher replaces the old event itself, as it would with no
//! trimmer at all.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::event::Published;
use crate::log::{EventLog, Read};

/// How often the trimmer runs while nothing arrives (age-based trimming still happens).
pub const IDLE_EVERY: Duration = Duration::from_millis(20);
/// How often it runs while events arrive.
pub const BUSY_EVERY: Duration = Duration::from_millis(1);

/// The bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most events kept.
    pub events: usize,
    /// Most bytes kept (each event's encoded frame, which holds its JSON too).
    pub bytes: usize,
    /// Events older than this are trimmed (`None`: no age limit).
    pub age: Option<Duration>,
}

/// What one [`Trimmer::run`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Trimmed {
    /// New events noted.
    pub noted: u64,
    /// Events trimmed.
    pub trimmed: u64,
}

/// The retention state: the retained events' sizes and times, oldest first.
#[derive(Debug)]
pub struct Trimmer {
    limits: Limits,
    /// The next sequence number to note.
    next: u64,
    /// (sequence, bytes, published) of each noted, untrimmed event.
    window: VecDeque<(u64, usize, Instant)>,
    bytes: usize,
}

impl Trimmer {
    /// A trimmer for `limits`, starting at the oldest event the log holds: events
    /// published before its thread started are retained within the limits too.
    pub fn new(limits: Limits, log: &EventLog<Published>) -> Self {
        Self {
            limits,
            next: log.head(),
            window: VecDeque::new(),
            bytes: 0,
        }
    }

    /// Bytes retained, as far as noted.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Notes the events published since the last run, then trims past the limits.
    pub fn run(&mut self, log: &EventLog<Published>, now: Instant) -> Trimmed {
        let mut done = Trimmed::default();
        let tail = log.next_seq();
        // One pin for the whole run of peeks, not one each.
        log.pinned(|| {
            while self.next < tail {
                match log.peek(self.next, |e| (e.frame_len(), e.published_at())) {
                    Read::Ready((bytes, at)) => {
                        self.window.push_back((self.next, bytes, at));
                        self.bytes += bytes;
                        self.next += 1;
                        done.noted += 1;
                    }
                    // Claimed but not installed yet: note it next time.
                    Read::Pending => break,
                    // Replaced by a publisher while this thread lagged: gone already.
                    Read::Lapped { resume_at } => self.next = resume_at,
                }
            }
        });
        let mut last = None;
        while let Some(&(seq, bytes, at)) = self.window.front() {
            let over = self.window.len() > self.limits.events
                || self.bytes > self.limits.bytes
                || self
                    .limits
                    .age
                    .is_some_and(|age| now.saturating_duration_since(at) > age);
            if !over {
                break;
            }
            self.window.pop_front();
            self.bytes -= bytes;
            last = Some(seq);
            done.trimmed += 1;
        }
        match last {
            Some(last) => {
                log.trim_through(last);
            }
            // Release what earlier runs trimmed, which waited for readers to move on.
            None => {
                log.reclaim();
            }
        }
        done
    }
}

/// The retention thread's loop: runs the trimmer until `stopping()` says so.
pub fn run(log: &EventLog<Published>, limits: Limits, stopping: impl Fn() -> bool) {
    let mut trimmer = Trimmer::new(limits, log);
    let mut last = Instant::now();
    while !stopping() {
        let now = Instant::now();
        let done = trimmer.run(log, now);
        let pause = pause_after(done, now.duration_since(last), now.elapsed(), limits.events);
        last = now;
        if !pause.is_zero() {
            std::thread::park_timeout(pause);
        }
    }
}

/// How long to wait after a run that did `done`, `since` after the previous run began,
/// and took `ran_for`. The ring has `slack` slots beyond the retained events (it holds
/// twice `--retention-events`), so the trimmer only has to come back before the
/// publishers fill a quarter of them: at 1,000 ev/s that is [`IDLE_EVERY`], not a wake-up
/// per event on a core the I/O thread may share. The run's own time counts against that,
/// so under a burst the trimmer does not sleep at all: sleeping while the publishers
/// filled the slack made them replace, and free, old events themselves (README,
/// *Publish*). It waits at least [`BUSY_EVERY`] when it does wait.
pub fn pause_after(done: Trimmed, since: Duration, ran_for: Duration, slack: usize) -> Duration {
    if done.noted == 0 && done.trimmed == 0 {
        return IDLE_EVERY;
    }
    let quarter = (slack / 4).max(1) as u128;
    let fill = since.as_nanos() * quarter / u128::from(done.noted.max(1));
    let left = fill.saturating_sub(ran_for.as_nanos());
    if left < BUSY_EVERY.as_nanos() {
        // Back at once: the publishers are filling the slack about as fast as this trims.
        return Duration::ZERO;
    }
    Duration::from_nanos(left.min(IDLE_EVERY.as_nanos()) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, Staged};

    fn append(log: &EventLog<Published>, payload_len: usize) -> u64 {
        let ev = Event::new("t.x", "test")
            .with_payload(&"x".repeat(payload_len))
            .unwrap();
        let staged = Staged::new(ev, 1 << 20).unwrap();
        log.append_with(|seq| staged.seal(seq))
    }

    fn retained(log: &EventLog<Published>) -> Vec<u64> {
        (1..log.next_seq())
            .filter(|&s| matches!(log.read(s, |_| ()), Read::Ready(())))
            .collect()
    }

    #[test]
    fn events_published_before_the_trimmer_started_are_trimmed_too() {
        let log = EventLog::with_capacity(64);
        for _ in 0..20 {
            append(&log, 10);
        }
        let limits = Limits {
            events: 5,
            bytes: usize::MAX,
            age: None,
        };
        let mut t = Trimmer::new(limits, &log);
        assert_eq!(t.run(&log, Instant::now()).trimmed, 15);
        assert_eq!(retained(&log), [16, 17, 18, 19, 20]);
    }

    #[test]
    fn pause_shrinks_with_the_rate() {
        let (ms, us) = (Duration::from_millis, Duration::from_micros);
        let done = |noted| Trimmed { noted, trimmed: 0 };
        let quick = us(10);
        assert_eq!(
            pause_after(Trimmed::default(), ms(20), quick, 65_536),
            IDLE_EVERY
        );
        // 1,000 ev/s: a quarter of the slack is 16 s away.
        assert_eq!(pause_after(done(20), ms(20), quick, 65_536), IDLE_EVERY);
        // 2 M ev/s: 16,384 slots fill in 8.192 ms, less the run's own time.
        assert_eq!(pause_after(done(2_000), ms(1), quick, 65_536), us(8_182));
        assert_eq!(pause_after(done(2_000), ms(1), ms(2), 65_536), us(6_192));
        // Faster: at least the least pause while there is time to spare...
        assert_eq!(pause_after(done(8_192), ms(1), ms(1), 65_536), BUSY_EVERY);
        // ...and none when less is left, or the run took about as long as the slack lasts.
        assert_eq!(
            pause_after(done(20_000), ms(1), quick, 65_536),
            Duration::ZERO
        );
        assert_eq!(
            pause_after(done(100_000), ms(1), quick, 65_536),
            Duration::ZERO
        );
        assert_eq!(
            pause_after(done(10_000), ms(1), ms(1), 65_536),
            Duration::ZERO
        );
        assert_eq!(pause_after(done(5), ms(1), quick, 0), Duration::ZERO);
    }

    #[test]
    fn trims_by_count_bytes_and_age() {
        let log = EventLog::with_capacity(64);
        let limits = Limits {
            events: 5,
            bytes: usize::MAX,
            age: None,
        };
        let mut t = Trimmer::new(limits, &log);
        for _ in 0..8 {
            append(&log, 10);
        }
        let now = Instant::now();
        assert_eq!(
            t.run(&log, now),
            Trimmed {
                noted: 8,
                trimmed: 3
            }
        );
        assert_eq!(retained(&log), [4, 5, 6, 7, 8]);
        assert_eq!(log.head(), 4);
        assert_eq!(log.read(2, |_| ()), Read::Lapped { resume_at: 4 });

        // Ids of one digit from here, so the frames are the same size.
        let log = EventLog::with_capacity(64);
        let frame = {
            let mut one = Trimmer::new(limits, &log);
            append(&log, 1000);
            one.run(&log, now);
            one.bytes()
        };
        let mut t = Trimmer::new(
            Limits {
                events: 100,
                bytes: 3 * frame,
                age: None,
            },
            &log,
        );
        for _ in 0..5 {
            append(&log, 1000);
        }
        t.run(&log, now);
        assert_eq!(t.bytes(), 3 * frame);
        assert_eq!(
            retained(&log),
            [4, 5, 6],
            "trimming through 3 trims all before it, noted or not"
        );

        let log = EventLog::with_capacity(64);
        let mut t = Trimmer::new(
            Limits {
                events: 100,
                bytes: usize::MAX,
                age: Some(Duration::from_secs(60)),
            },
            &log,
        );
        append(&log, 1);
        append(&log, 1);
        assert_eq!(t.run(&log, Instant::now()).trimmed, 0);
        let later = Instant::now() + Duration::from_secs(61);
        assert_eq!(t.run(&log, later).trimmed, 2);
        assert!(retained(&log).is_empty());
        assert_eq!(log.read(1, |_| ()), Read::Lapped { resume_at: 3 });
        assert_eq!(log.read(3, |_| ()), Read::Pending, "not published yet");
    }
}
