//! `Bus`: the one publish path. In-process callers, `POST /publish` and WebSocket
//! `publish` messages all end here. It also registers in-process subscribers
//! ([`crate::sink`]) and holds the [dead-letter queue](crate::dlq).
//!
//! Publishing validates and encodes the event (before any shared state is touched), appends
//! it to the [`EventLog`], and wakes those I/O threads that announced they were going to
//! sleep. It never blocks, takes no lock, and its cost does not depend on how many
//! subscribers exist: routing to them is the I/O threads' work, done on their own time.

use std::fmt::Display;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use crate::dlq::{DeadLetterQueue, Limits};
use crate::event::{Event, EventError, Filter, Published, Staged, TraceId};
use crate::log::EventLog;
use crate::sink::{self, Delivery, Hub, SinkSettings, SinkStats, SubscribeError};
use crate::trace::{self, Attr, SpanName, Tracer};
use crate::wake::Sleeper;

/// Counts the subscribers an `event.publish` span reports (set by the server).
type SubscriberCount = Box<dyn Fn() -> u64 + Send + Sync>;

/// A cheap, cloneable handle for publishing. `Send + Sync`: use it from any thread.
#[derive(Clone)]
pub struct Bus {
    inner: Arc<Inner>,
}

struct Inner {
    log: EventLog<Published>,
    /// This run's epoch: event ids mean something only within it ([`crate::resume`]).
    epoch: u64,
    sleepers: Box<[Sleeper]>,
    max_event_bytes: usize,
    hub: Arc<Hub>,
    tracer: Arc<Tracer>,
    ws_subscribers: OnceLock<SubscriberCount>,
}

/// What an `event.publish` span reports, kept for a sampled event before the event
/// moves into the log.
struct SpanFacts {
    trace_id: TraceId,
    start: Instant,
    event_type: String,
    source: String,
}

impl SpanFacts {
    #[cold]
    fn of(staged: &Staged) -> Self {
        Self {
            trace_id: staged.trace_id(),
            start: staged.published_at(),
            event_type: staged.event().event_type.clone(),
            source: staged.event().source.clone(),
        }
    }
}

impl Bus {
    /// A bus over a log retaining `retention` events, waking `sleepers` after each publish,
    /// with default in-process subscriber settings and dead-letter queue bounds.
    pub fn new(retention: usize, max_event_bytes: usize, sleepers: Vec<Sleeper>) -> Self {
        Self::with_sinks(
            retention,
            max_event_bytes,
            sleepers,
            SinkSettings::default(),
            Limits::default(),
            Arc::new(Tracer::off()),
        )
    }

    /// [`new`](Self::new) with the in-process subscribers' settings, the dead-letter
    /// queue's bounds and the tracer that samples and records spans.
    pub fn with_sinks(
        retention: usize,
        max_event_bytes: usize,
        sleepers: Vec<Sleeper>,
        sinks: SinkSettings,
        dlq: Limits,
        tracer: Arc<Tracer>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                log: EventLog::with_capacity(retention),
                epoch: crate::resume::new_epoch(),
                sleepers: sleepers.into_boxed_slice(),
                max_event_bytes,
                hub: Hub::new(
                    sinks,
                    Arc::new(DeadLetterQueue::new(dlq)),
                    Arc::clone(&tracer),
                ),
                tracer,
                ws_subscribers: OnceLock::new(),
            }),
        }
    }

    /// The tracer (sampling and the span buffer).
    pub fn tracer(&self) -> &Arc<Tracer> {
        &self.inner.tracer
    }

    /// Tells the bus how to count WebSocket subscribers, for `event.publish` spans'
    /// `subscriber_count` (the server sets this once; later calls are ignored).
    pub fn set_ws_subscriber_count(&self, count: impl Fn() -> u64 + Send + Sync + 'static) {
        let _ = self.inner.ws_subscribers.set(Box::new(count));
    }

    /// Registers an in-process subscriber: `handler` is called, on the subscriber's own
    /// thread, with every event published from now on whose type `filter` matches. An
    /// error, a panic or a call longer than the invoke timeout sends the event to the
    /// [dead-letter queue](Self::dlq) under `name`, as does an event that finds the
    /// subscriber's backlog full. See [`crate::sink`].
    ///
    /// ```
    /// use firehose::{Bus, Event, Filter};
    /// let bus = Bus::new(1024, 64 * 1024, Vec::new());
    /// bus.subscribe("audit", Filter::parse_list("billing.*")?, |d| {
    ///     if d.event.event_type() == "billing.refused" {
    ///         return Err("the ledger refused it");
    ///     }
    ///     Ok(())
    /// })?;
    /// bus.publish(Event::new("billing.refused", "example"))?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn subscribe<F, E>(
        &self,
        name: &str,
        filter: Filter,
        handler: F,
    ) -> Result<(), SubscribeError>
    where
        F: FnMut(&Delivery<'_>) -> Result<(), E> + Send + 'static,
        E: Display,
    {
        self.inner
            .hub
            .subscribe(self, name, filter, sink::boxed(handler))
    }

    /// Removes the in-process subscriber `name`; it finishes what is queued. Returns
    /// whether it existed.
    pub fn unsubscribe(&self, name: &str) -> bool {
        self.inner.hub.unsubscribe(name)
    }

    /// Each in-process subscriber's counters.
    pub fn subscribers(&self) -> Vec<SinkStats> {
        self.inner.hub.stats()
    }

    /// Events the in-process subscribers never saw because the log's retention lapped
    /// their dispatcher (reported on stderr too).
    pub fn subscribers_lost(&self) -> u64 {
        self.inner.hub.lost()
    }

    /// The dead-letter queue.
    pub fn dlq(&self) -> &Arc<DeadLetterQueue> {
        self.inner.hub.dlq()
    }

    #[cfg(test)]
    pub(crate) fn inner_hub(&self) -> &Arc<Hub> {
        &self.inner.hub
    }

    /// Stops the in-process subscribers, letting each finish its queue until `deadline`.
    pub fn close_subscribers(&self, deadline: Instant) {
        self.inner.hub.shutdown(deadline);
    }

    /// Publishes one event; returns its id. The event is checked here (an error means it
    /// was not published) and moved into the log as it is: the first thread that needs
    /// its bytes encodes it ([`crate::event::Published`]).
    pub fn publish(&self, event: Event) -> Result<u64, EventError> {
        let staged = self.stage(event)?;
        let traced = staged.is_sampled().then(|| SpanFacts::of(&staged));
        let id = self.inner.log.append_with(|id| staged.seal(id));
        self.notify();
        if let Some(facts) = traced {
            self.publish_span(id, facts);
        }
        Ok(id)
    }

    /// Inlined for the reason [`Staged::new`] is.
    #[inline(always)]
    fn stage(&self, event: Event) -> Result<Staged, EventError> {
        let mut staged = Staged::new(event, self.inner.max_event_bytes)?;
        staged.set_sampled(self.inner.tracer.sampled(staged.trace_id()));
        Ok(staged)
    }

    /// Records `event.publish` for a sampled event (off the common path: only sampled
    /// events get here).
    #[cold]
    fn publish_span(&self, id: u64, facts: SpanFacts) {
        let SpanFacts {
            trace_id,
            start,
            event_type,
            source,
        } = facts;
        let ws = self.inner.ws_subscribers.get().map_or(0, |count| count());
        let subscribers = ws + self.inner.hub.count() as u64;
        self.inner.tracer.record(
            SpanName::EventPublish,
            trace_id,
            (trace::publish_span_id(id), 0),
            start,
            trace::attrs([
                ("event_id", Attr::from(id)),
                ("event_type", Attr::from(event_type.as_str())),
                ("source", Attr::from(source.as_str())),
                ("subscriber_count", Attr::from(subscribers)),
            ]),
        );
    }

    /// Publishes several events, all or none: every event is checked before the first is
    /// appended. Returns their ids in order (increasing; contiguous unless another thread
    /// published at the same time). Wakes the I/O threads once.
    /// A refused event is named by its position ([`EventError::InBatch`]) when there are
    /// several.
    pub fn publish_all(&self, events: Vec<Event>) -> Result<Vec<u64>, EventError> {
        let len = events.len();
        let staged = events
            .into_iter()
            .enumerate()
            .map(|(index, e)| self.stage(e).map_err(|e| e.at(index, len)))
            .collect::<Result<Vec<_>, _>>()?;
        let mut traced = Vec::new();
        let ids: Vec<u64> = staged
            .into_iter()
            .map(|s| {
                let facts = s.is_sampled().then(|| SpanFacts::of(&s));
                let id = self.inner.log.append_with(|id| s.seal(id));
                if let Some(facts) = facts {
                    traced.push((id, facts));
                }
                id
            })
            .collect();
        self.notify();
        for (id, facts) in traced {
            self.publish_span(id, facts);
        }
        Ok(ids)
    }

    /// The id of the newest event (0 before the first).
    pub fn last_id(&self) -> u64 {
        self.inner.log.last_seq()
    }

    /// This run's epoch: a resume position from another epoch recovers nothing.
    pub fn epoch(&self) -> u64 {
        self.inner.epoch
    }

    /// The log, for readers (I/O threads, replay).
    pub fn log(&self) -> &EventLog<Published> {
        &self.inner.log
    }

    /// The sleeper of I/O thread `i` (publishers wake it through its idle flag).
    pub fn sleeper(&self, i: usize) -> &Sleeper {
        &self.inner.sleepers[i]
    }

    fn notify(&self) {
        crate::wake::notify_all(
            self.inner
                .sleepers
                .iter()
                .chain(std::iter::once(&self.inner.hub.sleeper)),
        );
    }
}
