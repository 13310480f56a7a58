//! `DeadLetterQueue`: where events that could not be delivered wait for an operator.
//!
//! An in-process subscriber whose handler fails or overruns its invoke timeout (see
//! [`crate::sink`]), or whose backlog is full, leaves the event here with the reason, the
//! time and the subscriber's name. Operators look with `GET /dlq/summary` and
//! `GET /dlq/entries`, and send everything again with `POST /dlq/retry`: each entry goes
//! back to the subscriber that failed it (never to anyone else, so nobody gets a
//! duplicate); one that fails again comes back with `retry_count + 1`.
//!
//! Storage is a [`SegLog`]: enqueueing never blocks, whatever readers or a retry are doing.
//! The queue is bounded by entries and bytes (`0` = unbounded); past a bound the oldest
//! entries are evicted and counted ([`Summary::evicted`]), never dropped silently. A bound
//! may be overshot by the entries being enqueued at that instant, at most one per thread.

use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use crate::event::Encoded;
use crate::seglog::SegLog;
use crate::sync::{ArcCell, AtomicU64, Ordering};

/// One undeliverable event.
#[derive(Clone)]
pub struct DeadLetter {
    /// The entry's number in the queue (increasing; not the event id).
    pub entry_id: u64,
    /// The event, sharing the log's encoding.
    pub event: Encoded,
    /// The subscriber that failed it.
    pub subscriber: Arc<str>,
    /// Why, for a human: "timeout after 250 ms", the handler's error text, …
    pub error: String,
    /// When it was enqueued.
    pub timestamp: SystemTime,
    /// How many times it was retried before this failure.
    pub retry_count: u32,
}

impl DeadLetter {
    /// Bytes this entry holds on to: the event's frame, the strings and the entry itself.
    pub fn weight(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.event.frame().len()
            + self.error.len()
            + self.subscriber.len()
    }
}

/// How big the queue may grow (`0` = unbounded).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most entries.
    pub max_entries: usize,
    /// Most bytes (see [`DeadLetter::weight`]).
    pub max_bytes: usize,
}

impl Default for Limits {
    /// 100,000 entries, 256 MiB: the `firehose serve` defaults.
    fn default() -> Self {
        Self {
            max_entries: 100_000,
            max_bytes: 256 * 1024 * 1024,
        }
    }
}

/// The queue at a glance (`GET /dlq/summary`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// Entries waiting.
    pub depth: usize,
    /// Their bytes.
    pub bytes: u64,
    /// When the oldest waiting entry was enqueued.
    pub oldest: Option<SystemTime>,
    /// When the newest waiting entry was enqueued.
    pub newest: Option<SystemTime>,
    /// Entries ever enqueued (retries that failed again included).
    pub enqueued: u64,
    /// Entries evicted by the bounds.
    pub evicted: u64,
    /// Entries handed back to their subscribers by retries.
    pub retried: u64,
}

/// Where a retry sends an entry: back to the subscriber that failed it.
pub trait Redeliver: Send + Sync {
    /// Hands `letter` to `letter.subscriber` again, or says why it cannot (the subscriber
    /// is gone, its backlog is full).
    fn redeliver(&self, letter: &DeadLetter) -> Result<(), String>;
}

/// What [`DeadLetterQueue::retry`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetryOutcome {
    /// Entries handed to their subscribers.
    pub retried: u64,
    /// Entries that could not be handed over, back in the queue unchanged.
    pub requeued: u64,
    /// Why those could not be handed over, with how many each reason kept back.
    pub not_retried: std::collections::BTreeMap<String, u64>,
}

/// The dead-letter queue. Share it in an `Arc`; every method takes `&self`.
pub struct DeadLetterQueue {
    log: SegLog<DeadLetter>,
    limits: Limits,
    bytes: AtomicU64,
    newest: ArcCell<DeadLetter>,
    enqueued: AtomicU64,
    evicted: AtomicU64,
    retried: AtomicU64,
    redeliver: OnceLock<Box<dyn Redeliver>>,
}

impl DeadLetterQueue {
    /// An empty queue bounded by `limits`.
    pub fn new(limits: Limits) -> Self {
        Self {
            log: SegLog::default(),
            limits,
            bytes: AtomicU64::new(0),
            newest: ArcCell::empty(),
            enqueued: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            redeliver: OnceLock::new(),
        }
    }

    /// The bounds.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Sets where [`retry`](Self::retry) sends entries (the engine's subscriber registry).
    /// Only the first call has an effect.
    pub fn set_redeliver(&self, target: Box<dyn Redeliver>) {
        let _ = self.redeliver.set(target);
    }

    /// Records that `subscriber` could not take `event`, because of `error`. Never blocks;
    /// returns the entry's number.
    pub fn enqueue(&self, event: Encoded, subscriber: &str, error: impl Into<String>) -> u64 {
        self.enqueue_retried(event, subscriber.into(), error.into(), 0)
    }

    /// [`enqueue`](Self::enqueue) for an entry that has been retried `retry_count` times.
    pub fn enqueue_retried(
        &self,
        event: Encoded,
        subscriber: Arc<str>,
        error: String,
        retry_count: u32,
    ) -> u64 {
        let id = self.push(DeadLetter {
            entry_id: 0,
            event,
            subscriber,
            error,
            timestamp: SystemTime::now(),
            retry_count,
        });
        self.enqueued.fetch_add(1, Ordering::Relaxed);
        id
    }

    /// Appends `letter` under a new entry number and applies the bounds.
    fn push(&self, letter: DeadLetter) -> u64 {
        let (id, stored) = self.log.push_shared_with(|entry_id| {
            let letter = DeadLetter { entry_id, ..letter };
            // Counted before it is visible, so a concurrent pop never subtracts first.
            self.bytes
                .fetch_add(letter.weight() as u64, Ordering::AcqRel);
            letter
        });
        self.newest
            .store_unless(stored, |current| current.entry_id > id);
        self.enforce_limits();
        id
    }

    fn over_limits(&self) -> bool {
        let Limits {
            max_entries,
            max_bytes,
        } = self.limits;
        (max_entries > 0 && self.log.len() > max_entries)
            || (max_bytes > 0 && self.bytes.load(Ordering::Acquire) > max_bytes as u64)
    }

    fn enforce_limits(&self) {
        while self.over_limits() {
            if self.pop().is_none() {
                // The oldest is still being written by another thread; it will look again.
                return;
            }
            self.evicted.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn pop(&self) -> Option<Arc<DeadLetter>> {
        let letter = self.log.pop()?;
        self.bytes
            .fetch_sub(letter.weight() as u64, Ordering::AcqRel);
        Some(letter)
    }

    /// Entries waiting.
    pub fn depth(&self) -> usize {
        self.log.len()
    }

    /// The queue at a glance.
    pub fn summary(&self) -> Summary {
        let depth = self.depth();
        let oldest = self.log.first().map(|l| l.timestamp);
        // The newest entry leaves last (removal is oldest-first), so while any entry waits
        // the newest one enqueued is still waiting.
        let newest = oldest.and(self.newest.load_full()).map(|l| l.timestamp);
        Summary {
            depth,
            bytes: self.bytes.load(Ordering::Acquire),
            oldest,
            newest,
            enqueued: self.enqueued.load(Ordering::Relaxed),
            evicted: self.evicted.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
        }
    }

    /// Every waiting entry, oldest first (a snapshot).
    pub fn entries(&self) -> Vec<Arc<DeadLetter>> {
        let mut all = Vec::with_capacity(self.depth());
        self.log.for_each(|_, l| {
            all.push(Arc::clone(l));
            true
        });
        all
    }

    /// The newest `limit` waiting entries, newest first.
    pub fn newest(&self, limit: usize) -> Vec<Arc<DeadLetter>> {
        if limit == 0 {
            return Vec::new();
        }
        let mut ring = std::collections::VecDeque::with_capacity(limit.min(self.depth()));
        self.log.for_each(|_, l| {
            if ring.len() == limit {
                ring.pop_front();
            }
            ring.push_back(Arc::clone(l));
            true
        });
        ring.into_iter().rev().collect()
    }

    /// Takes every waiting entry (those enqueued up to now) out of the queue, oldest first.
    pub fn drain(&self) -> Vec<Arc<DeadLetter>> {
        let end = self.log.next_seq();
        let mut out = Vec::new();
        while let Some(l) = self.pop() {
            let past = l.entry_id >= end;
            out.push(l);
            if past {
                break;
            }
        }
        out
    }

    /// Sends every waiting entry back to the subscriber that failed it (see
    /// [`set_redeliver`](Self::set_redeliver)). One that is handed over and fails again
    /// comes back from the subscriber with `retry_count + 1` and the new reason. One that
    /// cannot be handed over (the subscriber is gone, or its backlog is full) was not
    /// retried: it goes back unchanged, keeping its reason, time and count, and the outcome
    /// says why.
    pub fn retry(&self) -> RetryOutcome {
        let mut outcome = RetryOutcome::default();
        for letter in self.drain() {
            let handed = match self.redeliver.get() {
                Some(target) => target.redeliver(&letter),
                None => Err("no subscriber registry to retry through".into()),
            };
            match handed {
                Ok(()) => outcome.retried += 1,
                Err(why) => {
                    outcome.requeued += 1;
                    *outcome.not_retried.entry(why).or_default() += 1;
                    // Back as it was: a new entry number, everything else kept.
                    self.push(DeadLetter::clone(&letter));
                }
            }
        }
        self.retried.fetch_add(outcome.retried, Ordering::Relaxed);
        outcome
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::event::{Event, Staged};

    fn event(id: u64) -> Encoded {
        Staged::new(Event::new("t", "s"), 1024)
            .unwrap()
            .seal(id)
            .encoded()
            .clone()
    }

    #[test]
    fn bounds_evict_oldest_and_count() {
        let q = DeadLetterQueue::new(Limits {
            max_entries: 3,
            max_bytes: 0,
        });
        for id in 1..=5 {
            q.enqueue(event(id), "sink", "boom");
        }
        let s = q.summary();
        assert_eq!((s.depth, s.enqueued, s.evicted), (3, 5, 2));
        let ids: Vec<u64> = q.entries().iter().map(|l| l.event.id()).collect();
        assert_eq!(ids, vec![3, 4, 5]);
        let newest: Vec<u64> = q.newest(2).iter().map(|l| l.event.id()).collect();
        assert_eq!(newest, vec![5, 4]);
        assert!(s.oldest.unwrap() <= s.newest.unwrap());
    }

    #[test]
    fn byte_bound_counts_weights() {
        let one = DeadLetter {
            entry_id: 0,
            event: event(1),
            subscriber: "sink".into(),
            error: "boom".into(),
            timestamp: SystemTime::now(),
            retry_count: 0,
        }
        .weight();
        let q = DeadLetterQueue::new(Limits {
            max_entries: 0,
            max_bytes: one * 2,
        });
        for id in 1..=4 {
            q.enqueue(event(id), "sink", "boom");
        }
        let s = q.summary();
        assert_eq!((s.depth, s.evicted, s.bytes), (2, 2, one as u64 * 2));
        q.drain();
        let s = q.summary();
        assert_eq!((s.depth, s.bytes, s.oldest, s.newest), (0, 0, None, None));
    }

    struct Refuse;
    impl Redeliver for Refuse {
        fn redeliver(&self, _: &DeadLetter) -> Result<(), String> {
            Err("gone".into())
        }
    }

    #[test]
    fn retry_that_cannot_hand_over_keeps_the_entry_unchanged() {
        let q = DeadLetterQueue::new(Limits::default());
        q.enqueue(event(7), "sink", "boom");
        let before = q.entries()[0].timestamp;
        let o = q.retry();
        assert_eq!((o.retried, o.requeued), (0, 1));
        assert_eq!(o.not_retried["no subscriber registry to retry through"], 1);
        q.set_redeliver(Box::new(Refuse));
        let o = q.retry();
        assert_eq!(o.not_retried["gone"], 1);
        let e = q.entries();
        assert_eq!(e.len(), 1);
        assert_eq!((e[0].event.id(), e[0].retry_count), (7, 0));
        assert_eq!((e[0].error.as_str(), e[0].timestamp), ("boom", before));
        assert_eq!(q.summary().enqueued, 1, "a requeue is not a new failure");
    }
}
