//! `Bus`: the one publish path. In-process callers, `POST /publish` and WebSocket
//! `publish` messages all end here.
//!
//! Publishing validates and encodes the event (before any shared state is touched), appends
//! it to the [`EventLog`], and wakes those I/O threads that announced they were going to
//! sleep. It never blocks, takes no lock, and its cost does not depend on how many
//! subscribers exist: routing to them is the I/O threads' work, done on their own time.

use std::sync::Arc;

use crate::event::{Encoded, Event, EventError, Staged};
use crate::log::EventLog;
use crate::wake::Sleeper;

/// A cheap, cloneable handle for publishing. `Send + Sync`: use it from any thread.
#[derive(Clone)]
pub struct Bus {
    inner: Arc<Inner>,
}

struct Inner {
    log: EventLog<Encoded>,
    sleepers: Box<[Sleeper]>,
    max_event_bytes: usize,
}

impl Bus {
    /// A bus over a log retaining `retention` events, waking `sleepers` after each publish.
    pub fn new(retention: usize, max_event_bytes: usize, sleepers: Vec<Sleeper>) -> Self {
        Self {
            inner: Arc::new(Inner {
                log: EventLog::with_capacity(retention),
                sleepers: sleepers.into_boxed_slice(),
                max_event_bytes,
            }),
        }
    }

    /// Publishes one event; returns its id.
    pub fn publish(&self, event: &Event) -> Result<u64, EventError> {
        let staged = Staged::new(event, self.inner.max_event_bytes)?;
        let id = self.inner.log.append_with(|id| staged.seal(id));
        self.notify();
        Ok(id)
    }

    /// Publishes several events, all or none: every event is checked before the first is
    /// appended. Returns their ids in order (increasing; contiguous unless another thread
    /// published at the same time). Wakes the I/O threads once.
    pub fn publish_all(&self, events: &[Event]) -> Result<Vec<u64>, EventError> {
        let staged = events
            .iter()
            .map(|e| Staged::new(e, self.inner.max_event_bytes))
            .collect::<Result<Vec<_>, _>>()?;
        let ids = staged
            .into_iter()
            .map(|s| self.inner.log.append_with(|id| s.seal(id)))
            .collect();
        self.notify();
        Ok(ids)
    }

    /// The id of the newest event (0 before the first).
    pub fn last_id(&self) -> u64 {
        self.inner.log.last_seq()
    }

    /// The log, for readers (I/O threads, replay).
    pub fn log(&self) -> &EventLog<Encoded> {
        &self.inner.log
    }

    /// The sleeper of I/O thread `i` (publishers wake it through its idle flag).
    pub fn sleeper(&self, i: usize) -> &Sleeper {
        &self.inner.sleepers[i]
    }

    fn notify(&self) {
        for s in self.inner.sleepers.iter() {
            s.notify();
        }
    }
}
