//! Loom models of the lock-free protocols. Run with:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test --release --test loom
//! ```
//!
//! Without `--cfg loom` this file compiles to nothing.
#![cfg(loom)]

use std::sync::Arc;

use firehose::log::{EventLog, Read, Sequenced};
use firehose::seglog::SegLog;
use firehose::wake::{notify_all, IdleFlag, Sleeper, Wake};
use loom::sync::atomic::{AtomicBool, Ordering};

#[derive(Debug)]
struct Item(u64);

impl Sequenced for Item {
    fn seq(&self) -> u64 {
        self.0
    }
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    b.check(f);
}

/// Three publishers race into a two-slot ring (so it wraps) while a reader follows.
/// The reader sees every id at most once, in increasing order, never a wrong value; it
/// never waits forever (a lapped publisher cannot leave an older value over a newer one);
/// and afterwards the newest values are all readable.
#[test]
fn log_readers_see_increasing_ids_or_laps_never_wrong_values() {
    model(|| {
        let log = Arc::new(EventLog::<Item>::with_capacity(2));
        let publishers: Vec<_> = (0..3)
            .map(|_| {
                let log = Arc::clone(&log);
                loom::thread::spawn(move || {
                    log.append_with(Item);
                })
            })
            .collect();
        let mut cursor = 1;
        let mut seen = Vec::new();
        while cursor <= 3 {
            match log.read(cursor, |v| v.0) {
                Read::Ready(v) => {
                    assert_eq!(v, cursor);
                    seen.push(v);
                    cursor += 1;
                }
                Read::Lapped { resume_at } => {
                    assert!(resume_at > cursor);
                    cursor = resume_at;
                }
                Read::Pending => loom::thread::yield_now(),
            }
        }
        assert!(seen.windows(2).all(|w| w[0] < w[1]));
        for p in publishers {
            p.join().unwrap();
        }
        assert_eq!(log.next_seq(), 4);
        // The two newest (2 and 3) are retained, whatever order they were installed in.
        for s in 2..=3 {
            assert_eq!(log.read(s, |v| v.0), Read::Ready(s));
        }
    });
}

/// Publishers race a trimmer (which empties slots off the publish path) and a reader, in
/// a two-slot ring. The reader never reads a wrong value, never waits forever on a trimmed
/// slot (the trimmer raises `head` before emptying it), and the untrimmed newest value
/// stays readable; a trimmed one reads as lapped.
#[test]
fn log_trimming_races_publishers_and_readers_safely() {
    model(|| {
        let log = Arc::new(EventLog::<Item>::with_capacity(2));
        let publishers: Vec<_> = (0..2)
            .map(|_| {
                let log = Arc::clone(&log);
                loom::thread::spawn(move || {
                    log.append_with(Item);
                })
            })
            .collect();
        let trimmer = {
            let log = Arc::clone(&log);
            loom::thread::spawn(move || {
                log.trim_through(1);
            })
        };
        let mut cursor = 1;
        while cursor <= 2 {
            match log.read(cursor, |v| v.0) {
                Read::Ready(v) => {
                    assert_eq!(v, cursor);
                    cursor += 1;
                }
                Read::Lapped { resume_at } => {
                    assert!(resume_at > cursor);
                    cursor = resume_at;
                }
                Read::Pending => loom::thread::yield_now(),
            }
        }
        for p in publishers {
            p.join().unwrap();
        }
        trimmer.join().unwrap();
        log.append_with(Item);
        // 3 reused 1's slot: whether or not 1 was trimmed, 2 and 3 are readable.
        for s in 2..=3 {
            assert_eq!(log.read(s, |v| v.0), Read::Ready(s));
        }
        assert!(matches!(log.read(1, |v| v.0), Read::Lapped { .. }));
    });
}

/// The I/O thread announces idle and looks for work; a publisher publishes and checks the
/// flag. In every interleaving the thread either sees the event or is woken.
///
/// Publication is modelled as a *relaxed* store and the thread's look as a relaxed load:
/// weaker than the log's real (arc-swap) accesses, so the fences in `IdleFlag` alone must
/// carry the guarantee. (Going through the log's loom mutex would synchronise the two sides
/// by itself and hide a missing fence.)
#[test]
fn idle_flag_never_loses_a_wake_up() {
    model(|| {
        let published = Arc::new(AtomicBool::new(false));
        let flag = Arc::new(IdleFlag::new());
        let woken = Arc::new(AtomicBool::new(false));
        let publisher = {
            let (published, flag, woken) = (
                Arc::clone(&published),
                Arc::clone(&flag),
                Arc::clone(&woken),
            );
            loom::thread::spawn(move || {
                published.store(true, Ordering::Relaxed);
                if flag.take_idle() {
                    woken.store(true, Ordering::Relaxed);
                }
            })
        };
        flag.announce_idle();
        let saw = published.load(Ordering::Relaxed);
        if saw {
            flag.announce_busy();
        }
        publisher.join().unwrap();
        assert!(
            saw || woken.load(Ordering::Relaxed),
            "slept through an event with no wake-up"
        );
    });
}

/// `notify_all`'s one fence for several flags: two I/O threads announce idle and look for
/// work while a publisher publishes and notifies both. Each thread either sees the event
/// or is woken.
#[test]
fn one_fence_for_several_flags_loses_no_wake_up() {
    struct SetOnWake(Arc<AtomicBool>);
    impl Wake for SetOnWake {
        fn wake(&self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    model(|| {
        let published = Arc::new(AtomicBool::new(false));
        let woken = [
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        ];
        let sleepers: Arc<[Sleeper; 2]> =
            Arc::new(woken.clone().map(|w| Sleeper::new(Box::new(SetOnWake(w)))));
        let publisher = {
            let (published, sleepers) = (Arc::clone(&published), Arc::clone(&sleepers));
            loom::thread::spawn(move || {
                published.store(true, Ordering::Relaxed);
                notify_all(sleepers.iter());
            })
        };
        let other = {
            let (published, sleepers) = (Arc::clone(&published), Arc::clone(&sleepers));
            loom::thread::spawn(move || {
                sleepers[1].flag.announce_idle();
                published.load(Ordering::Relaxed)
            })
        };
        sleepers[0].flag.announce_idle();
        let saw = published.load(Ordering::Relaxed);
        publisher.join().unwrap();
        let other_saw = other.join().unwrap();
        assert!(
            saw || woken[0].load(Ordering::Relaxed),
            "thread 0 slept through it"
        );
        assert!(
            other_saw || woken[1].load(Ordering::Relaxed),
            "thread 1 slept through it"
        );
    });
}

/// Two publishers and one idle announcement: at most one of them wakes the thread.
#[test]
fn idle_flag_wakes_once_per_sleep() {
    model(|| {
        let flag = Arc::new(IdleFlag::new());
        flag.announce_idle();
        let wakers: Vec<_> = (0..2)
            .map(|_| {
                let flag = Arc::clone(&flag);
                loom::thread::spawn(move || flag.take_idle())
            })
            .collect();
        let woke: usize = wakers
            .into_iter()
            .map(|h| usize::from(h.join().unwrap()))
            .sum();
        assert_eq!(woke, 1);
    });
}

/// Two pushers race to link the same new segment (one entry per segment: both need the
/// segment after the first) while a popper drains. Every entry is popped exactly once, in
/// number order, with the value its pusher stored; the log ends empty.
#[test]
fn seglog_pushers_link_segments_and_the_popper_sees_each_entry_once() {
    model(|| {
        let log = Arc::new(SegLog::<(u64, u64)>::with_segment_len(1));
        log.push_with(|seq| (seq, 9));
        let pushers: Vec<_> = (0..2)
            .map(|p| {
                let log = Arc::clone(&log);
                loom::thread::spawn(move || {
                    log.push_with(|seq| (seq, p));
                })
            })
            .collect();
        let mut popped = Vec::new();
        while popped.len() < 3 {
            match log.pop() {
                Some(v) => popped.push(v.0),
                None => loom::thread::yield_now(),
            }
        }
        for p in pushers {
            p.join().unwrap();
        }
        assert_eq!(popped, vec![1, 2, 3]);
        assert!(log.is_empty() && log.pop().is_none());
    });
}

/// Two poppers race over entries a pusher is still writing, one segment per entry so the
/// head-segment hint moves under a popper's feet: each entry goes to exactly one popper,
/// and none is skipped while its slot is still empty.
#[test]
fn seglog_concurrent_pops_take_each_entry_once() {
    model(|| {
        let log = Arc::new(SegLog::<u64>::with_segment_len(1));
        log.push_with(|s| s);
        log.push_with(|s| s);
        let pusher = {
            let log = Arc::clone(&log);
            loom::thread::spawn(move || {
                log.push_with(|s| s);
            })
        };
        let popper = {
            let log = Arc::clone(&log);
            loom::thread::spawn(move || {
                let a = log.pop().map(|v| *v);
                let b = log.pop().map(|v| *v);
                a.into_iter().chain(b).collect::<Vec<_>>()
            })
        };
        let mine = log.pop().map(|v| *v);
        let theirs = popper.join().unwrap();
        pusher.join().unwrap();
        assert!(theirs.windows(2).all(|w| w[0] < w[1]));
        let mut all: Vec<u64> = mine.into_iter().chain(theirs).collect();
        all.extend(std::iter::from_fn(|| log.pop().map(|v| *v)));
        all.sort_unstable();
        assert_eq!(all, vec![1, 2, 3]);
    });
}
