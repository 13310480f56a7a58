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

/// An atomic `Option<Arc<T>>` cell: the storage of one log slot.
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

    /// Runs `f` on the current value without taking a reference count.
    pub(crate) fn with<R>(&self, f: impl FnOnce(Option<&T>) -> R) -> R {
        #[cfg(not(loom))]
        {
            let guard = self.inner.load();
            f(guard.as_deref())
        }
        #[cfg(loom)]
        {
            let guard = self.inner.lock().unwrap();
            f(guard.as_deref())
        }
    }

    /// Stores `new` if the cell is empty; hands it back otherwise. Unlike
    /// [`store_unless`](Self::store_unless) it never looks at a current value, so it touches
    /// no memory but the cell's own.
    pub(crate) fn store_if_empty(&self, new: Arc<T>) -> Result<(), Arc<T>> {
        #[cfg(not(loom))]
        {
            let previous = self
                .inner
                .compare_and_swap(std::ptr::null::<T>(), Some(Arc::clone(&new)));
            match &*previous {
                None => Ok(()),
                Some(_) => Err(new),
            }
        }
        #[cfg(loom)]
        {
            let mut guard = self.inner.lock().unwrap();
            if guard.is_some() {
                return Err(new);
            }
            *guard = Some(new);
            Ok(())
        }
    }

    /// Empties the cell unless its value is one `keep_current` says must stay; returns
    /// what it took.
    pub(crate) fn take_unless(&self, keep_current: impl Fn(&T) -> bool) -> Option<Arc<T>> {
        #[cfg(not(loom))]
        {
            let mut current = self.inner.load();
            loop {
                if current.as_deref().is_none_or(&keep_current) {
                    return None;
                }
                let previous = self.inner.compare_and_swap(&*current, None);
                let swapped = match (previous.as_ref(), current.as_ref()) {
                    (Some(p), Some(c)) => Arc::ptr_eq(p, c),
                    _ => false,
                };
                if swapped {
                    return arc_swap::Guard::into_inner(previous);
                }
                current = previous;
            }
        }
        #[cfg(loom)]
        {
            let mut guard = self.inner.lock().unwrap();
            if guard.as_deref().is_none_or(&keep_current) {
                return None;
            }
            guard.take()
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
