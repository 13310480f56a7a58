//! `SegLog`: a lock-free, unbounded FIFO made of fixed-size segments linked together — the
//! storage under the dead-letter queue.
//!
//! Appends go to the tail, removals come off the head, and readers walk a snapshot; no
//! operation waits for another. Unlike the [`EventLog`](crate::log::EventLog) ring, nothing
//! is overwritten: an entry leaves only when someone removes it (the owner's bound evicts
//! the oldest, a retry takes them all), so the owner decides what is kept and counts what
//! goes.
//!
//! # Algorithm
//!
//! Entry `s` (numbered from 1) lives in slot `s - base` of the segment whose
//! `base <= s < base + segment_len`. Segments are reference-counted and linked by `next`.
//!
//! * **push**: `s = tail.fetch_add(1)`; walk from the newest-segment hint (or from the head
//!   segment, if the hint is already past `s`) to `s`'s segment, creating missing segments
//!   with a compare-and-swap on `next` (a loser drops its copy and follows the winner); store
//!   the value in its slot. Each slot is written by exactly one pusher.
//! * **pop**: read `head`; if its slot holds a value, claim it with a compare-and-swap
//!   `head → head + 1`; the one winner takes the value out of the slot. A slot that is
//!   claimed but not yet written stops the pop (it returns `None` rather than wait): the
//!   head never passes an entry that is still being written, so no entry is ever skipped.
//! * **read**: load the head segment and walk forward, skipping slots that are empty
//!   (removed, or not yet written).
//!
//! Because the head never passes an unwritten slot, the head segment's `base` is never
//! beyond any pusher's `s`, so a pusher always finds its segment. A removed entry is
//! freed at once (its slot is emptied); a segment is freed when the head has moved past it
//! and no reader still walks it. The loom model in `tests/loom.rs` checks the protocol.

use std::sync::Arc;

use crossbeam_utils::CachePadded;

use crate::sync::{ArcCell, AtomicU64, AtomicUsize, Ordering};

/// Entries per segment unless [`SegLog::with_segment_len`] says otherwise.
pub const DEFAULT_SEGMENT_LEN: usize = 256;

struct Segment<T> {
    base: u64,
    slots: Box<[ArcCell<T>]>,
    next: ArcCell<Segment<T>>,
}

impl<T> Segment<T> {
    fn new(base: u64, len: usize) -> Self {
        Self {
            base,
            slots: (0..len).map(|_| ArcCell::empty()).collect(),
            next: ArcCell::empty(),
        }
    }
}

impl<T> Drop for Segment<T> {
    /// Frees the run of segments only this one still holds, one by one: a reader that
    /// held an old segment while the head moved far ahead may release a long chain, and
    /// dropping it recursively would overflow the stack.
    fn drop(&mut self) {
        let mut next = self.next.take();
        while let Some(seg) = next {
            next = match Arc::into_inner(seg) {
                Some(seg) => seg.next.take(),
                None => None,
            };
        }
    }
}

/// The lock-free segmented log. Entry numbers start at 1 and increase by one per push.
pub struct SegLog<T> {
    segment_len: u64,
    /// The next number to claim.
    tail: CachePadded<AtomicU64>,
    /// The oldest number not yet removed.
    head: CachePadded<AtomicU64>,
    /// A segment at or before the head's (never after).
    head_seg: ArcCell<Segment<T>>,
    /// A recent segment: where pushes start looking.
    tail_seg: ArcCell<Segment<T>>,
    /// Entries claimed and not yet removed (counted before the value is stored, so it never
    /// dips below the true number).
    len: CachePadded<AtomicUsize>,
}

impl<T> Default for SegLog<T> {
    fn default() -> Self {
        Self::with_segment_len(DEFAULT_SEGMENT_LEN)
    }
}

impl<T> SegLog<T> {
    /// An empty log whose segments hold `segment_len` entries (at least 1).
    pub fn with_segment_len(segment_len: usize) -> Self {
        let segment_len = segment_len.max(1);
        let first = Arc::new(Segment::new(1, segment_len));
        Self {
            segment_len: segment_len as u64,
            tail: CachePadded::new(AtomicU64::new(1)),
            head: CachePadded::new(AtomicU64::new(1)),
            head_seg: ArcCell::new(Arc::clone(&first)),
            tail_seg: ArcCell::new(first),
            len: CachePadded::new(AtomicUsize::new(0)),
        }
    }

    /// Appends the value `build` makes for its entry number; returns that number.
    /// Never blocks.
    pub fn push_with(&self, build: impl FnOnce(u64) -> T) -> u64 {
        self.push_shared_with(build).0
    }

    /// [`push_with`](Self::push_with), also returning the stored value.
    pub fn push_shared_with(&self, build: impl FnOnce(u64) -> T) -> (u64, Arc<T>) {
        let seq = self.tail.fetch_add(1, Ordering::AcqRel);
        self.len.fetch_add(1, Ordering::AcqRel);
        let value = Arc::new(build(seq));
        let hint = self.hint(&self.tail_seg);
        let start = if hint.base <= seq {
            hint
        } else {
            // The hint moved past us while we were descheduled; the head cannot have.
            self.hint(&self.head_seg)
        };
        let seg = self
            .walk(start, seq, true)
            .expect("push creates missing segments");
        seg.slots[(seq - seg.base) as usize].store(Arc::clone(&value));
        let base = seg.base;
        self.tail_seg
            .store_unless(seg, |current| current.base >= base);
        (seq, value)
    }

    /// Removes and returns the oldest entry, or `None` when the log is empty or its oldest
    /// entry is still being written. Never blocks.
    pub fn pop(&self) -> Option<Arc<T>> {
        loop {
            let head = self.head.load(Ordering::Acquire);
            if head >= self.tail.load(Ordering::Acquire) {
                return None;
            }
            let hint = self.hint(&self.head_seg);
            if hint.base > head {
                // Others popped past `head` (and moved the hint) since we read it.
                continue;
            }
            let seg = self.walk(hint, head, false)?;
            let slot = &seg.slots[(head - seg.base) as usize];
            slot.load_full()?;
            if self
                .head
                .compare_exchange(head, head + 1, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                continue;
            }
            // This thread alone claimed `head`, and only a claim empties a slot.
            let value = slot.take().expect("a claimed slot keeps its value");
            self.len.fetch_sub(1, Ordering::AcqRel);
            let base = seg.base;
            self.head_seg
                .store_unless(seg, |current| current.base >= base);
            return Some(value);
        }
    }

    /// Entries claimed and not yet removed (an entry being pushed counts).
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// Whether [`len`](Self::len) is 0.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The number the next push will get; everything below was claimed.
    pub fn next_seq(&self) -> u64 {
        self.tail.load(Ordering::Acquire)
    }

    /// Calls `f` on each entry present, oldest first, until it returns `false`. A snapshot:
    /// entries pushed or removed meanwhile may or may not be seen; none is seen twice.
    pub fn for_each(&self, mut f: impl FnMut(u64, &Arc<T>) -> bool) {
        let mut seg = self.hint(&self.head_seg);
        let end = self.tail.load(Ordering::Acquire);
        let mut seq = self.head.load(Ordering::Acquire).max(seg.base);
        while seq < end {
            let Some(found) = self.walk(seg, seq, false) else {
                return;
            };
            seg = found;
            if let Some(v) = seg.slots[(seq - seg.base) as usize].load_full() {
                if !f(seq, &v) {
                    return;
                }
            }
            seq += 1;
        }
    }

    /// The oldest entry present, if any.
    pub fn first(&self) -> Option<Arc<T>> {
        let mut first = None;
        self.for_each(|_, v| {
            first = Some(Arc::clone(v));
            false
        });
        first
    }

    fn hint(&self, cell: &ArcCell<Segment<T>>) -> Arc<Segment<T>> {
        cell.load_full().expect("segment hints are never empty")
    }

    /// From `seg` (whose base is at most `seq`) to the segment holding `seq`. With `create`,
    /// missing segments are added; without, a missing one means `seq` is not written yet.
    fn walk(&self, mut seg: Arc<Segment<T>>, seq: u64, create: bool) -> Option<Arc<Segment<T>>> {
        debug_assert!(seg.base <= seq);
        while seq >= seg.base + self.segment_len {
            seg = match seg.next.load_full() {
                Some(next) => next,
                None if create => {
                    let new = Arc::new(Segment::new(
                        seg.base + self.segment_len,
                        self.segment_len as usize,
                    ));
                    // Only if still empty: a concurrent pusher may have linked one first.
                    seg.next.store_unless(new, |_| true);
                    seg.next.load_full().expect("just linked")
                }
                None => return None,
            };
        }
        Some(seg)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn fifo_across_segments() {
        let log = SegLog::with_segment_len(3);
        for i in 0..10u64 {
            assert_eq!(log.push_with(|s| (s, i)), i + 1);
        }
        assert_eq!(log.len(), 10);
        let mut seen = Vec::new();
        log.for_each(|s, v| {
            seen.push((s, v.1));
            true
        });
        assert_eq!(seen, (0..10).map(|i| (i + 1, i)).collect::<Vec<_>>());
        for i in 0..4 {
            assert_eq!(log.pop().unwrap().1, i);
        }
        assert_eq!(log.first().unwrap().1, 4);
        log.push_with(|s| (s, 10));
        let rest: Vec<u64> = std::iter::from_fn(|| log.pop()).map(|v| v.1).collect();
        assert_eq!(rest, (4..=10).collect::<Vec<_>>());
        assert!(log.is_empty() && log.pop().is_none() && log.first().is_none());
    }

    #[test]
    fn popped_entries_are_freed_and_long_chains_drop() {
        let log = SegLog::with_segment_len(1);
        let value = Arc::new(());
        for _ in 0..100_000 {
            let v = Arc::clone(&value);
            log.push_with(|_| v);
        }
        for _ in 0..1000 {
            log.pop();
        }
        assert_eq!(Arc::strong_count(&value), 1 + 99_000);
        drop(log);
        assert_eq!(Arc::strong_count(&value), 1);
    }
}
