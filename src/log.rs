//! `EventLog`: the lock-free, sequence-numbered ring every event passes through.
//!
//! One log serves fan-out (each I/O thread reads it from its own cursor), and later replay
//! and the admin page's recent-events view.
//!
//! Retention is the trimmer's job, not the publisher's: a background thread
//! ([`crate::retention`]) empties the slots of events past the retention limits with
//! [`EventLog::trim_through`], and the ring is sized with slack beyond them, so a publisher
//! normally installs into an empty slot. It never reads, or frees, the event it replaces:
//! that value's memory was last touched by the readers on other cores, and fetching it on
//! the publish path was most of publishing's cost with a reader keeping up.
//!
//! # Algorithm
//!
//! A power-of-two array of slots; sequence number `s` lives in slot `s & mask`. Each stored
//! value knows its own sequence number ([`Sequenced`]), so a slot needs no separate stamp:
//!
//! * **append**: `s = tail.fetch_add(1)`, build the value for `s`, then install it in its
//!   slot: a compare-and-swap from empty when the trimmer has kept up; otherwise (no trimmer,
//!   or one that fell a lap behind) *unless the slot already holds a newer value* (a publisher
//!   that was descheduled for a whole lap must not overwrite a successor; its value is
//!   already lost to readers, who see a lap). Publishers never wait for readers, for the
//!   trimmer or for each other.
//! * **trim_through(t)**: raise `head` (the oldest readable sequence) to `t + 1`, *then* empty
//!   the slots of `t` and older (never a newer value that reused the slot).
//! * **read(c)**: look at slot `c & mask`: a value with sequence `c` is ready; a newer one
//!   means the ring lapped this reader, which has lost the events in between and must say
//!   so. An older one, or none, means either `c` is claimed but not yet installed (the
//!   reader stops and comes back) or `c` was trimmed: `head` tells which. Because `head`
//!   rises before a slot is emptied, a reader that finds the slot emptied also finds `head`
//!   past it.
//!
//! Memory: a slot is an `EpochCell` (in `sync.rs`). A reader pins
//! crossbeam-epoch just long enough to take a reference to the value; an emptied slot's
//! own reference is released once every reader pinned before the trim has unpinned, and
//! released by the trimmer itself ([`EventLog::reclaim`]), so readers and publishers do not
//! spend their time freeing trimmed events (a reader that still holds its own reference
//! to a value by then, from [`EventLog::read`], frees it as it lets go). Installing into
//! an empty slot needs neither: one compare-and-swap on the slot's pointer.
//!
//! A publisher preempted between claiming and installing holds readers at its sequence
//! number until it runs again (the classic multi-producer ring trade-off); it never holds
//! other publishers. The window is a few dozen nanoseconds because values are built before
//! the claim wherever possible (see [`crate::event::Staged`]).

use std::sync::Arc;

use crossbeam_utils::CachePadded;

use crate::sync::{self, AtomicU64, EpochCell, Ordering, Reclaimer, Unlinked};

/// A value that carries the sequence number it was stored under.
pub trait Sequenced {
    /// The sequence number given to [`EventLog::append_with`]'s builder.
    fn seq(&self) -> u64;
}

/// What [`EventLog::read`] found at a sequence number.
#[derive(Debug, PartialEq, Eq)]
pub enum Read<R> {
    /// The value was there; this is what the reader's closure returned.
    Ready(R),
    /// Not yet published: come back after the next wake-up.
    Pending,
    /// The ring overwrote it. The oldest sequence number that may still be read is
    /// `resume_at`; everything in between is lost to this reader.
    Lapped {
        /// Where the reader should continue.
        resume_at: u64,
    },
}

/// The lock-free event log. Sequence numbers start at 1, so 0 can mean "nothing yet".
pub struct EventLog<T: Send + Sync + 'static> {
    slots: Box<[EpochCell<T>]>,
    mask: u64,
    /// The next sequence number to claim.
    tail: CachePadded<AtomicU64>,
    /// The oldest sequence number not trimmed.
    head: CachePadded<AtomicU64>,
    /// Releases trimmed values on the trimmer's thread.
    reclaimer: Reclaimer<T>,
}

impl<T: Sequenced + Send + Sync + 'static> EventLog<T> {
    /// A log retaining the last `capacity` values, rounded up to a power of two (at least 2).
    pub fn with_capacity(capacity: usize) -> Self {
        let capacity = capacity.max(2).next_power_of_two();
        let slots = (0..capacity).map(|_| EpochCell::empty()).collect();
        Self {
            slots,
            mask: capacity as u64 - 1,
            tail: CachePadded::new(AtomicU64::new(1)),
            head: CachePadded::new(AtomicU64::new(1)),
            reclaimer: Reclaimer::default(),
        }
    }

    /// How many values the log retains.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Claims the next sequence number, builds the value for it and publishes it.
    /// Never blocks; returns the sequence number.
    pub fn append_with(&self, build: impl FnOnce(u64) -> T) -> u64 {
        let seq = self.tail.fetch_add(1, Ordering::AcqRel);
        let value = Arc::new(build(seq));
        debug_assert_eq!(
            value.seq(),
            seq,
            "the builder must keep the sequence number"
        );
        if let Err(value) = self.slot(seq).store_if_empty(value) {
            // Not trimmed (no trimmer, or it is a lap behind): replace what is there.
            self.slot(seq)
                .store_unless(value, |current| current.seq() > seq);
        }
        seq
    }

    /// Trims every value up to and including sequence `last`: they can no longer be read
    /// (readers are told they were lapped). The log's references to them are released by
    /// a later call on this thread ([`reclaim`](Self::reclaim), which this runs too), once
    /// no reader can still be taking one; each value is freed with its last reference.
    /// Returns how many values this call removed.
    pub fn trim_through(&self, last: u64) -> usize {
        let last = last.min(self.last_seq());
        let first = self.head.fetch_max(last + 1, Ordering::SeqCst);
        // A trimmer more than a lap behind finds only newer values in the older slots.
        let first = first.max((last + 1).saturating_sub(self.capacity() as u64));
        let mut unlinked = Unlinked::with_capacity((last + 1).saturating_sub(first) as usize);
        let pinned = sync::pin();
        for s in first..=last {
            self.slot(s)
                .take_unless(&pinned, |v| v.seq() > s, &mut unlinked);
        }
        let taken = unlinked.len();
        self.reclaimer.retire(&pinned, unlinked);
        drop(pinned);
        self.reclaim();
        taken
    }

    /// Releases, on this thread, the log's references to trimmed values that no reader
    /// can still be taking. [`trim_through`](Self::trim_through) does this too; a trimmer
    /// calls it when there is nothing new to trim, so the last trims are released.
    /// Returns how many it released.
    pub fn reclaim(&self) -> usize {
        self.reclaimer.release()
    }

    /// Trimmed values whose references are not yet released ([`reclaim`](Self::reclaim)).
    pub fn unreclaimed(&self) -> usize {
        self.reclaimer.pending()
    }

    /// The oldest sequence number that may still be read (1 before anything is trimmed).
    pub fn head(&self) -> u64 {
        let tail = self.next_seq();
        self.head
            .load(Ordering::SeqCst)
            .max(tail.saturating_sub(self.capacity() as u64))
            .max(1)
    }

    /// The sequence number the next append will get. Everything below it is claimed
    /// (possibly still being installed).
    pub fn next_seq(&self) -> u64 {
        self.tail.load(Ordering::Acquire)
    }

    /// The highest sequence number claimed so far (0 when the log is empty).
    pub fn last_seq(&self) -> u64 {
        self.next_seq() - 1
    }

    /// Looks at sequence number `seq` and, when it is ready, runs `f` on it. The value is
    /// held by a reference of the reader's own, not a pin, so `f` may take its time (an I/O
    /// thread routes the event to every subscriber in it).
    pub fn read<R>(&self, seq: u64, f: impl FnOnce(&T) -> R) -> Read<R> {
        let value = self.slot(seq).load_full();
        self.look(seq, value.as_deref(), f)
    }

    /// [`read`](Self::read) for a quick look: `f` runs pinned instead of on a reference of
    /// the reader's own, which saves two atomic updates of the value's count but holds back
    /// the release of trimmed values while it runs, so `f` must be short. The trimmer notes
    /// each event's size and time this way.
    pub fn peek<R>(&self, seq: u64, f: impl FnOnce(&T) -> R) -> Read<R> {
        self.slot(seq).peek(|value| self.look(seq, value, f))
    }

    /// Runs `f` with this thread pinned once, so each [`peek`](Self::peek) inside it
    /// skips its own pin: for a thread that peeks at many values in a row (the trimmer).
    /// Like a peek's closure, `f` holds back the release of trimmed values while it runs.
    pub fn pinned<R>(&self, f: impl FnOnce() -> R) -> R {
        let _pinned = sync::pin();
        f()
    }

    /// What slot `seq & mask` holding `value` means for sequence number `seq`.
    fn look<R>(&self, seq: u64, value: Option<&T>, f: impl FnOnce(&T) -> R) -> Read<R> {
        match value {
            Some(v) if v.seq() == seq => Read::Ready(f(v)),
            // A newer value: the ring lapped this reader. Nothing newer there: not
            // installed yet, unless it was trimmed.
            Some(v) if v.seq() > seq => self.lapped(seq),
            _ if seq < self.head.load(Ordering::SeqCst) => self.lapped(seq),
            _ => Read::Pending,
        }
    }

    fn lapped<R>(&self, seq: u64) -> Read<R> {
        Read::Lapped {
            resume_at: self.head().max(seq + 1),
        }
    }

    fn slot(&self, seq: u64) -> &EpochCell<T> {
        &self.slots[(seq & self.mask) as usize]
    }
}
