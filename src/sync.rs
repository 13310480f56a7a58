//! The atomics the lock-free structures use, switched to loom's models under `--cfg loom`.
//!
//! Every shared-memory primitive in [`crate::log`], [`crate::seglog`] and [`crate::wake`]
//! comes from here, so
//! `RUSTFLAGS="--cfg loom" cargo test --release --test loom` explores their interleavings.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};

use std::sync::Arc;

/// An atomic `Option<Arc<T>>` cell whose removed values are released once no reader can
/// still be taking a reference to them: the storage of one [`crate::log`] slot.
///
/// In normal builds it is one `AtomicPtr` (from `Arc::into_raw`) and crossbeam-epoch:
/// installing into an empty cell is a single compare-and-swap that touches nothing else
/// (the publish path); a reader pins the epoch only while it takes its own reference
/// ([`load_full`](Self::load_full)), so a long piece of work on the value holds no pin; a
/// removal defers the cell's own reference past every reader pinned before it.
/// [`ArcCell`] (arc-swap) did the same job but paid for each install by walking every
/// thread's debt list, a third of an in-process publish (README, *Publish*).
///
/// Under loom the cell is modelled by a loom mutex, as [`ArcCell`] is: a faithful model of
/// a linearizable cell, which is what the log's sequence protocol relies on. The memory
/// reclamation is crossbeam-epoch's; `tests/structures.rs` stresses this cell through the
/// log with readers, installers and a trimmer on separate threads, checking every value
/// it reads.
pub(crate) struct EpochCell<T: Send + Sync + 'static> {
    #[cfg(not(loom))]
    ptr: std::sync::atomic::AtomicPtr<T>,
    #[cfg(loom)]
    inner: loom::sync::Mutex<Option<Arc<T>>>,
}

/// The cell's reference to a removed value, on its way to crossbeam-epoch's deferred drop.
#[cfg(not(loom))]
struct Retired<T>(*const T);

// SAFETY: a `Retired` holds one strong reference of an `Arc<T>` (from `Arc::into_raw`),
// and `Arc<T>` is `Send` when `T: Send + Sync`: dropping it on whichever thread runs the
// deferred function is moving that `Arc` across threads.
#[cfg(not(loom))]
#[allow(unsafe_code)]
unsafe impl<T: Send + Sync> Send for Retired<T> {}

// The one place firehose uses `unsafe`: `benches/publish.rs` measured arc-swap's install
// at a third of an in-process publish (README, *Publish*). Invariant: a non-null pointer
// in `ptr` came from `Arc::into_raw` and owns one strong reference, released only by
// `retire` after the pointer is unlinked, or by `drop`.
#[cfg(not(loom))]
#[allow(unsafe_code)]
impl<T: Send + Sync + 'static> EpochCell<T> {
    pub(crate) fn empty() -> Self {
        Self {
            ptr: std::sync::atomic::AtomicPtr::new(std::ptr::null_mut()),
        }
    }

    /// Stores `value` if the cell is empty; hands it back otherwise. No pin, no other
    /// memory touched: a publisher never reads or frees an old value.
    pub(crate) fn store_if_empty(&self, value: Arc<T>) -> Result<(), Arc<T>> {
        let new = Arc::into_raw(value).cast_mut();
        match self.ptr.compare_exchange(
            std::ptr::null_mut(),
            new,
            std::sync::atomic::Ordering::AcqRel,
            std::sync::atomic::Ordering::Relaxed,
        ) {
            Ok(_) => Ok(()),
            // SAFETY: the exchange failed, so `new` was never shared: this is the
            // reference `into_raw` just gave up, taken back once.
            Err(_) => Err(unsafe { Arc::from_raw(new) }),
        }
    }

    /// Stores `value` unless the current value is one `keep_current` says must stay.
    /// Returns whether it was stored (the value it replaced is retired).
    pub(crate) fn store_unless(&self, value: Arc<T>, keep_current: impl Fn(&T) -> bool) -> bool {
        let guard = crossbeam_epoch::pin();
        let mut current = self.ptr.load(std::sync::atomic::Ordering::Acquire);
        loop {
            // SAFETY: `current` was loaded from the cell under `guard`: null, or a value
            // whose cell reference is released no sooner than `guard` unpins (`retire`).
            if unsafe { current.as_ref() }.is_some_and(&keep_current) {
                return false;
            }
            let new = Arc::into_raw(Arc::clone(&value)).cast_mut();
            match self.ptr.compare_exchange(
                current,
                new,
                std::sync::atomic::Ordering::AcqRel,
                std::sync::atomic::Ordering::Acquire,
            ) {
                Ok(old) => {
                    retire(&guard, old);
                    return true;
                }
                Err(actual) => {
                    // SAFETY: not shared (the exchange failed): give the clone back.
                    drop(unsafe { Arc::from_raw(new) });
                    current = actual;
                }
            }
        }
    }

    /// Empties the cell unless its value is one `keep_current` says must stay; returns
    /// whether it took one (its reference is released once no reader can be taking one).
    pub(crate) fn take_unless(&self, keep_current: impl Fn(&T) -> bool) -> bool {
        let guard = crossbeam_epoch::pin();
        let mut current = self.ptr.load(std::sync::atomic::Ordering::Acquire);
        loop {
            // SAFETY: as in `store_unless`: loaded under `guard`.
            match unsafe { current.as_ref() } {
                None => return false,
                Some(v) if keep_current(v) => return false,
                Some(_) => {}
            }
            match self.ptr.compare_exchange(
                current,
                std::ptr::null_mut(),
                std::sync::atomic::Ordering::AcqRel,
                std::sync::atomic::Ordering::Acquire,
            ) {
                Ok(old) => {
                    retire(&guard, old);
                    return true;
                }
                Err(actual) => current = actual,
            }
        }
    }

    /// Runs `f` on the current value while pinned, without taking a reference: two
    /// fewer atomic updates than [`load_full`](Self::load_full), but values removed
    /// meanwhile (by any cell) are not released until `f` returns, so `f` must be short.
    pub(crate) fn peek<R>(&self, f: impl FnOnce(Option<&T>) -> R) -> R {
        let _guard = crossbeam_epoch::pin();
        let current = self.ptr.load(std::sync::atomic::Ordering::Acquire);
        // SAFETY: as in `load_full`: loaded under `_guard` after the installing exchange,
        // so null or a built value whose cell reference is released no sooner than
        // `_guard` unpins, which is after `f` returns.
        f(unsafe { current.as_ref() })
    }

    /// The current value, with a reference of its own; pinned only while taking it.
    pub(crate) fn load_full(&self) -> Option<Arc<T>> {
        let _guard = crossbeam_epoch::pin();
        let current = self.ptr.load(std::sync::atomic::Ordering::Acquire);
        if current.is_null() {
            return None;
        }
        // SAFETY: the Acquire load pairs with the installing exchange (AcqRel), so the
        // value is fully built; the cell's reference to it is released only by `retire`
        // after it is unlinked, deferred past every guard pinned before that, `_guard`
        // included, so the count is at least one while we add ours and take it.
        unsafe {
            Arc::increment_strong_count(current);
            Some(Arc::from_raw(current))
        }
    }
}

/// Releases the cell's reference to `old` (just unlinked by the caller's exchange) once
/// every thread pinned now has unpinned.
#[cfg(not(loom))]
#[allow(unsafe_code)]
fn retire<T: Send + Sync + 'static>(guard: &crossbeam_epoch::Guard, old: *mut T) {
    if old.is_null() {
        return;
    }
    let retired = Retired(old.cast_const());
    // SAFETY: `old` is unlinked, so no new reader can load it; a reader that loaded it
    // is pinned until it holds its own reference, and the deferred function runs after
    // every such pin ends. It runs once, so the cell's one reference is released once.
    unsafe {
        guard.defer_unchecked(move || {
            let retired = retired;
            drop(Arc::from_raw(retired.0));
        })
    }
}

#[cfg(not(loom))]
#[allow(unsafe_code)]
impl<T: Send + Sync + 'static> Drop for EpochCell<T> {
    fn drop(&mut self) {
        let p = *self.ptr.get_mut();
        if !p.is_null() {
            // SAFETY: `&mut self`: no reader can be taking a reference; this releases the
            // cell's own.
            drop(unsafe { Arc::from_raw(p) });
        }
    }
}

#[cfg(loom)]
impl<T: Send + Sync + 'static> EpochCell<T> {
    pub(crate) fn empty() -> Self {
        Self {
            inner: loom::sync::Mutex::new(None),
        }
    }

    pub(crate) fn store_if_empty(&self, value: Arc<T>) -> Result<(), Arc<T>> {
        let mut guard = self.inner.lock().unwrap();
        if guard.is_some() {
            return Err(value);
        }
        *guard = Some(value);
        Ok(())
    }

    pub(crate) fn store_unless(&self, value: Arc<T>, keep_current: impl Fn(&T) -> bool) -> bool {
        let mut guard = self.inner.lock().unwrap();
        if guard.as_deref().is_some_and(&keep_current) {
            return false;
        }
        *guard = Some(value);
        true
    }

    pub(crate) fn take_unless(&self, keep_current: impl Fn(&T) -> bool) -> bool {
        let mut guard = self.inner.lock().unwrap();
        if guard.as_deref().is_none_or(&keep_current) {
            return false;
        }
        guard.take().is_some()
    }

    pub(crate) fn load_full(&self) -> Option<Arc<T>> {
        self.inner.lock().unwrap().clone()
    }

    pub(crate) fn peek<R>(&self, f: impl FnOnce(Option<&T>) -> R) -> R {
        f(self.inner.lock().unwrap().as_deref())
    }
}

/// An atomic `Option<Arc<T>>` cell: the storage of the dead-letter queue's segmented log
/// ([`crate::seglog`]) and its newest entry.
///
/// In normal builds this is [`arc_swap::ArcSwapOption`]: loads take no lock and never block
/// a store. arc-swap has no loom support, so under loom the cell is modelled by a loom
/// mutex. That is a faithful model of a linearizable cell, which is the only property the
/// log's sequence protocol relies on; arc-swap's own internals are that crate's to prove.
pub(crate) struct ArcCell<T> {
    #[cfg(not(loom))]
    inner: arc_swap::ArcSwapOption<T>,
    #[cfg(loom)]
    inner: loom::sync::Mutex<Option<Arc<T>>>,
}

impl<T> ArcCell<T> {
    pub(crate) fn empty() -> Self {
        Self {
            #[cfg(not(loom))]
            inner: arc_swap::ArcSwapOption::empty(),
            #[cfg(loom)]
            inner: loom::sync::Mutex::new(None),
        }
    }

    /// A cell holding `value`.
    pub(crate) fn new(value: Arc<T>) -> Self {
        Self {
            #[cfg(not(loom))]
            inner: arc_swap::ArcSwapOption::new(Some(value)),
            #[cfg(loom)]
            inner: loom::sync::Mutex::new(Some(value)),
        }
    }

    /// The current value, with its own reference count.
    pub(crate) fn load_full(&self) -> Option<Arc<T>> {
        #[cfg(not(loom))]
        {
            self.inner.load_full()
        }
        #[cfg(loom)]
        {
            self.inner.lock().unwrap().clone()
        }
    }

    /// Stores `value` unconditionally.
    pub(crate) fn store(&self, value: Arc<T>) {
        #[cfg(not(loom))]
        self.inner.store(Some(value));
        #[cfg(loom)]
        {
            *self.inner.lock().unwrap() = Some(value);
        }
    }

    /// Empties the cell, returning what it held.
    pub(crate) fn take(&self) -> Option<Arc<T>> {
        #[cfg(not(loom))]
        {
            self.inner.swap(None)
        }
        #[cfg(loom)]
        {
            self.inner.lock().unwrap().take()
        }
    }

    /// Stores `new` unless the current value is one `keep_current` says must stay.
    /// Returns whether `new` was stored.
    pub(crate) fn store_unless(&self, new: Arc<T>, keep_current: impl Fn(&T) -> bool) -> bool {
        #[cfg(not(loom))]
        {
            let mut current = self.inner.load();
            loop {
                if current.as_deref().is_some_and(&keep_current) {
                    return false;
                }
                let previous = self
                    .inner
                    .compare_and_swap(&*current, Some(Arc::clone(&new)));
                let swapped = match (previous.as_ref(), current.as_ref()) {
                    (Some(p), Some(c)) => Arc::ptr_eq(p, c),
                    (None, None) => true,
                    _ => false,
                };
                if swapped {
                    return true;
                }
                current = previous;
            }
        }
        #[cfg(loom)]
        {
            let mut guard = self.inner.lock().unwrap();
            if guard.as_deref().is_some_and(&keep_current) {
                return false;
            }
            *guard = Some(new);
            true
        }
    }
}
