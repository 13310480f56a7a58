//! `IdleFlag`: how publishers wake a sleeping I/O thread at most once per burst.
//!
//! An I/O thread that finds no work announces it is about to sleep, looks at the log one
//! last time, and only then blocks in `poll`. A publisher, after installing its event, wakes
//! the thread only if the thread announced it is idle, and clears the flag as it does so,
//! so a burst of a million events costs one wake-up syscall, not a million.
//!
//! The two sides form the classic store-buffering pattern (each writes its own location,
//! then reads the other's); a `SeqCst` fence on each side guarantees that at least one of
//! them sees the other: either the thread's last look finds the event, or the publisher
//! finds the flag set and wakes the thread. The loom model in `tests/loom.rs` checks this.

use crossbeam_utils::CachePadded;

use crate::sync::{fence, AtomicBool, Ordering};

/// One I/O thread's "I may be asleep" flag.
#[derive(Default)]
pub struct IdleFlag {
    idle: CachePadded<AtomicBool>,
}

impl IdleFlag {
    /// A flag that says "busy".
    pub fn new() -> Self {
        Self::default()
    }

    /// The I/O thread's side, before its last look for work. After this returns the thread
    /// must check the log once more, and only sleep if it finds nothing.
    pub fn announce_idle(&self) {
        self.idle.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }

    /// The I/O thread's side, when it found work after announcing or has just woken up.
    pub fn announce_busy(&self) {
        self.idle.store(false, Ordering::Relaxed);
    }

    /// The publisher's side, after installing an event: `true` means the thread may be
    /// asleep and this caller, alone among concurrent publishers, must wake it.
    pub fn take_idle(&self) -> bool {
        fence(Ordering::SeqCst);
        self.take_idle_after_fence()
    }

    /// [`take_idle`](Self::take_idle) without its fence, for a publisher that has run one
    /// `SeqCst` fence since installing its event and checks several threads' flags after
    /// it ([`notify_all`]).
    fn take_idle_after_fence(&self) -> bool {
        // A plain load first keeps the cache line shared while the thread is busy.
        self.idle.load(Ordering::Relaxed) && self.idle.swap(false, Ordering::AcqRel)
    }
}

/// Whatever interrupts an I/O thread's `poll` (a `mio::Waker` in the server).
pub trait Wake: Send + Sync {
    /// Interrupts the sleep. Errors are the implementation's to handle.
    fn wake(&self);
}

/// A thread publishers may have to wake: its idle flag and its waker.
pub struct Sleeper {
    /// The thread's "I may be asleep" flag.
    pub flag: IdleFlag,
    waker: Box<dyn Wake>,
}

impl Sleeper {
    /// A sleeper woken through `waker`.
    pub fn new(waker: Box<dyn Wake>) -> Self {
        Self {
            flag: IdleFlag::new(),
            waker,
        }
    }

    /// Wakes the thread unconditionally (shutdown).
    pub fn wake_now(&self) {
        self.waker.wake();
    }

    /// Wakes the thread if it announced it may be asleep.
    pub fn notify(&self) {
        if self.flag.take_idle() {
            self.waker.wake();
        }
    }
}

/// [`Sleeper::notify`] for every one of `sleepers`, with one fence for all of them: a
/// fence drains the publisher's store buffer, and was most of what waking cost a publish
/// when each sleeper ran its own.
pub fn notify_all<'a>(sleepers: impl IntoIterator<Item = &'a Sleeper>) {
    fence(Ordering::SeqCst);
    for s in sleepers {
        if s.flag.take_idle_after_fence() {
            s.waker.wake();
        }
    }
}
