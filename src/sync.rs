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
/// removal defers the release of the cell's own reference past every reader pinned before
/// it: a replacement ([`store_unless`](Self::store_unless)) through crossbeam-epoch's
/// deferred drop, a trim ([`take_unless`](Self::take_unless)) through a [`Reclaimer`], so
/// that the trimmer frees what it trims.
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
    /// whether it took one. The cell's reference moves to `into`, to be released by a
    /// [`Reclaimer`] once no reader can still be taking one.
    pub(crate) fn take_unless(
        &self,
        _pinned: &Pinned,
        keep_current: impl Fn(&T) -> bool,
        into: &mut Unlinked<T>,
    ) -> bool {
        let mut current = self.ptr.load(std::sync::atomic::Ordering::Acquire);
        loop {
            // SAFETY: as in `store_unless`: loaded while `_pinned` is held, so null or a value
            // whose cell reference is released no sooner than `_pinned` is dropped (a
            // `Reclaimer` releases only after a grace period that began after the unlink).
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
                    // Owned by `into` now: this exchange alone unlinked it.
                    into.values.push(Retired(old.cast_const()));
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

    pub(crate) fn take_unless(
        &self,
        _pinned: &Pinned,
        keep_current: impl Fn(&T) -> bool,
        into: &mut Unlinked<T>,
    ) -> bool {
        let mut guard = self.inner.lock().unwrap();
        if guard.as_deref().is_none_or(&keep_current) {
            return false;
        }
        into.values.extend(guard.take());
        true
    }

    pub(crate) fn load_full(&self) -> Option<Arc<T>> {
        self.inner.lock().unwrap().clone()
    }

    pub(crate) fn peek<R>(&self, f: impl FnOnce(Option<&T>) -> R) -> R {
        f(self.inner.lock().unwrap().as_deref())
    }
}

/// This thread pinned in crossbeam-epoch while held (nothing under loom, whose cells are
/// mutexes). Pinning once for a run of cell operations spares each its own pin.
pub(crate) struct Pinned {
    #[cfg(not(loom))]
    _guard: crossbeam_epoch::Guard,
}

/// Pins this thread until the returned value is dropped.
pub(crate) fn pin() -> Pinned {
    Pinned {
        #[cfg(not(loom))]
        _guard: crossbeam_epoch::pin(),
    }
}

/// Cell references [`EpochCell::take_unless`] unlinked, not yet released. Dropping it
/// without handing it to [`Reclaimer::retire`] leaks them: never a premature release.
pub(crate) struct Unlinked<T: Send + Sync + 'static> {
    #[cfg(not(loom))]
    values: Vec<Retired<T>>,
    #[cfg(loom)]
    values: Vec<Arc<T>>,
}

impl<T: Send + Sync + 'static> Unlinked<T> {
    /// Room for `n` without reallocating.
    pub(crate) fn with_capacity(n: usize) -> Self {
        Self {
            values: Vec::with_capacity(n),
        }
    }

    /// How many it holds.
    pub(crate) fn len(&self) -> usize {
        self.values.len()
    }
}

/// Releases unlinked values on the thread that asks ([`release`](Self::release): the
/// trimmer), never on a reader's or a publisher's.
///
/// Handing each removed value to crossbeam-epoch as its own deferred drop let whichever
/// thread collected next run the drops: readers (the I/O threads, which pin per event)
/// and publishers alike, dozens of frees at a time. And a trimmer that pinned per value
/// cost so much that, under a sustained in-process burst, it fell a lap behind and the
/// publishers replaced (and freed) the old values themselves, most of a publish
/// (README, *Publish*). Here the trimmer defers one small function per batch, which only
/// moves the batch to a ready list once the grace period has passed, and frees the
/// ready batches itself.
pub(crate) struct Reclaimer<T: Send + Sync + 'static> {
    #[cfg(not(loom))]
    ready: Arc<Ready<T>>,
    #[cfg(loom)]
    ready: std::marker::PhantomData<fn() -> T>,
    /// Values retired and not yet released.
    pending: AtomicUsize,
}

/// Batches past their grace period. Whoever drops the last reference releases what is
/// left (the log, or a deferred function that ran after it was dropped).
#[cfg(not(loom))]
struct Ready<T: Send + Sync + 'static>(std::sync::Mutex<Vec<Vec<Retired<T>>>>);

#[cfg(not(loom))]
impl<T: Send + Sync + 'static> Ready<T> {
    fn take(&self) -> Vec<Vec<Retired<T>>> {
        std::mem::take(
            &mut *self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

#[cfg(not(loom))]
#[allow(unsafe_code)]
impl<T: Send + Sync + 'static> Ready<T> {
    /// Releases `batches`' references; returns how many.
    fn release(batches: Vec<Vec<Retired<T>>>) -> usize {
        let mut n = 0;
        for retired in batches.into_iter().flatten() {
            // SAFETY: a batch reaches `Ready` only from the function `Reclaimer::retire`
            // deferred, which crossbeam-epoch runs after every thread pinned when the
            // batch's values were unlinked has unpinned, so no reader is still taking a
            // reference; each value was unlinked by one exchange (`take_unless`), so this
            // is the cell's one reference, released once.
            drop(unsafe { Arc::from_raw(retired.0) });
            n += 1;
        }
        n
    }
}

#[cfg(not(loom))]
impl<T: Send + Sync + 'static> Drop for Ready<T> {
    fn drop(&mut self) {
        Self::release(self.take());
    }
}

impl<T: Send + Sync + 'static> Default for Reclaimer<T> {
    fn default() -> Self {
        Self {
            #[cfg(not(loom))]
            ready: Arc::new(Ready(std::sync::Mutex::new(Vec::new()))),
            #[cfg(loom)]
            ready: std::marker::PhantomData,
            pending: AtomicUsize::new(0),
        }
    }
}

impl<T: Send + Sync + 'static> Reclaimer<T> {
    /// Values retired and not yet released.
    pub(crate) fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    /// Hands `batch` over: it is released by a later [`release`](Self::release), once no
    /// thread pinned now is still pinned.
    #[cfg(not(loom))]
    #[allow(unsafe_code)]
    pub(crate) fn retire(&self, pinned: &Pinned, batch: Unlinked<T>) {
        if batch.values.is_empty() {
            return;
        }
        self.pending
            .fetch_add(batch.values.len(), Ordering::Relaxed);
        let ready = Arc::clone(&self.ready);
        let values = batch.values;
        // SAFETY: the function only moves the batch (raw pointers, `Send`: see `Retired`)
        // and an `Arc` to the ready list, so it may run on any thread, at any later time,
        // even after the log is gone (`Ready`'s drop releases what it then receives).
        unsafe {
            pinned._guard.defer_unchecked(move || {
                ready
                    .0
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(values);
            });
        }
    }

    /// Under loom the cells are mutexes, so nothing can still be reading: release now.
    #[cfg(loom)]
    pub(crate) fn retire(&self, _pinned: &Pinned, batch: Unlinked<T>) {
        drop(batch);
    }

    /// Advances crossbeam-epoch as far as it can go now (which runs the deferred
    /// functions of batches past their grace period) and releases the ready batches on
    /// this thread. Returns how many values it released.
    pub(crate) fn release(&self) -> usize {
        #[cfg(not(loom))]
        {
            if self.pending() == 0 {
                return 0;
            }
            // A batch is ready once the epoch has moved twice since it was retired: two
            // tries, each of which moves it at most once.
            for _ in 0..2 {
                crossbeam_epoch::pin().flush();
            }
            let released = Ready::release(self.ready.take());
            self.pending.fetch_sub(released, Ordering::Relaxed);
            released
        }
        #[cfg(loom)]
        0
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
