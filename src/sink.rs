//! In-process subscribers: handlers an embedder registers with
//! [`Bus::subscribe`](crate::Bus::subscribe), run off the I/O threads, each with an invoke
//! timeout and a bounded backlog, and the dead-letter queue for whatever they cannot take.
//!
//! ```text
//!  EventLog ──► dispatcher thread ──► sink "audit": bounded queue ──► worker ──► handler
//!               (one for all sinks:   sink "mailer": bounded queue ──► worker ──► handler
//!                route by filter,          │ full                        │ error, panic,
//!                watch invoke time)        ▼                             ▼ timeout
//!                                      DeadLetterQueue ◄──────────────────┘
//! ```
//!
//! * The **dispatcher** reads the log from its own cursor, like an I/O thread, and hands
//!   each matching event (a shared handle, not a copy) to each sink's queue. It is started
//!   by the first `subscribe`, so an engine without sinks has no such thread and its
//!   publishers never wake one.
//! * Each sink has its own **worker** thread, so a stuck handler holds up only its own
//!   sink. Its queue holds `queue_capacity` events; an event that finds it full goes to the
//!   dead-letter queue ("backlog full"), so nothing is lost without a trace.
//! * A handler that returns an error or panics sends the event to the dead-letter queue
//!   with that text. One still running after the **invoke timeout** is reported there by
//!   the dispatcher's watchdog ("timeout after 250 ms") while it runs on; a thread cannot
//!   be killed safely, so whatever it returns later is ignored. Delivery to a sink is
//!   therefore at-least-once: a retry may hand it an event a timed-out call did process.
//!
//! The queue and the "current call" record are shared by two threads each (dispatcher and
//! worker) and touched once per event, never on the publish path; they use a channel and
//! a small mutex rather than bespoke lock-free code.

use std::fmt::Display;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::bus::Bus;
use crate::dlq::{DeadLetter, DeadLetterQueue, Redeliver};
use crate::event::{Encoded, Filter};
use crate::log::Read;
use crate::trace::{attrs, publish_span_id, random_span_id, Attr, SpanName, Tracer};
use crate::wake::{Sleeper, Wake};

/// Longest subscriber name, in bytes.
pub const MAX_NAME_LEN: usize = 128;
/// Events the dispatcher routes between looks at the watchdog.
const BATCH: usize = 1024;
/// How often the watchdog looks while some sink has work (the timeout's precision).
const WATCH_TICK: Duration = Duration::from_millis(5);

/// What a handler is given.
pub struct Delivery<'a> {
    /// The event, with its id, type and JSON.
    pub event: &'a Encoded,
    /// 0 on first delivery; n when this is the n-th retry from the dead-letter queue.
    pub retry_count: u32,
}

/// Settings shared by every in-process subscriber.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SinkSettings {
    /// How long one handler call may run before its event goes to the dead-letter queue.
    pub invoke_timeout: Duration,
    /// Events each subscriber may have waiting.
    pub queue_capacity: usize,
}

impl Default for SinkSettings {
    fn default() -> Self {
        Self {
            invoke_timeout: Duration::from_millis(250),
            queue_capacity: 2_000,
        }
    }
}

/// Why [`Bus::subscribe`](crate::Bus::subscribe) refused.
#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    /// Names identify subscribers in the dead-letter queue and for retries.
    #[error("a subscriber named {0:?} already exists; give each subscriber its own name")]
    Duplicate(String),
    /// Empty or over-long name.
    #[error("a subscriber name must be 1 to 128 bytes, not {0}")]
    Name(usize),
    /// The engine is stopping.
    #[error("the engine is shutting down; no new subscribers")]
    ShuttingDown,
    /// The OS refused a thread.
    #[error("cannot start a thread for subscriber {0:?}: {1}")]
    Spawn(String, std::io::Error),
}

/// One subscriber's counters (`/health`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SinkStats {
    /// Its name.
    pub name: String,
    /// Its filter, as patterns.
    pub types: Vec<String>,
    /// Calls that returned `Ok`.
    pub delivered: u64,
    /// Calls that returned an error or panicked.
    pub failed: u64,
    /// Calls still running at the invoke timeout.
    pub timed_out: u64,
    /// Events that found the queue full.
    pub overflowed: u64,
    /// Events waiting or in a call now.
    pub backlog: usize,
}

type Handler = Box<dyn FnMut(&Delivery<'_>) -> Result<(), String> + Send>;

struct Job {
    event: Encoded,
    retry_count: u32,
}

struct Call {
    started: Instant,
    job: Job,
}

/// A registered subscriber, as the registry holds it. The queue's sending side lives only
/// here, so removing the subscriber from the registry closes its worker's queue.
struct Sink {
    filter: Filter,
    queue: Sender<Job>,
    state: Arc<SinkState>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

/// What the worker shares with the dispatcher and the registry.
struct SinkState {
    name: Arc<str>,
    /// The call in progress; the worker and the watchdog race to take it when it ends.
    call: Mutex<Option<Call>>,
    /// Events queued or in a call.
    pending: AtomicUsize,
    delivered: AtomicU64,
    failed: AtomicU64,
    timed_out: AtomicU64,
    overflowed: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while these locks are held; a poisoned one still holds valid data.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Sink {
    fn stats(&self) -> SinkStats {
        let st = &self.state;
        SinkStats {
            name: st.name.to_string(),
            types: self
                .filter
                .patterns()
                .iter()
                .map(|p| p.to_string())
                .collect(),
            delivered: st.delivered.load(Ordering::Relaxed),
            failed: st.failed.load(Ordering::Relaxed),
            timed_out: st.timed_out.load(Ordering::Relaxed),
            overflowed: st.overflowed.load(Ordering::Relaxed),
            backlog: st.pending.load(Ordering::Relaxed),
        }
    }

    /// Queues `job`, or gives it back with the reason.
    // The refused job comes back whole so the caller can dead-letter it; a rare path.
    #[allow(clippy::result_large_err)]
    fn offer(&self, job: Job) -> Result<(), (Job, String)> {
        let st = &self.state;
        st.pending.fetch_add(1, Ordering::AcqRel);
        let refused = match self.queue.try_send(job) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Full(job)) => {
                st.overflowed.fetch_add(1, Ordering::Relaxed);
                let n = self.queue.capacity().unwrap_or(0);
                (
                    job,
                    format!("backlog full: {n} events already waiting for the handler"),
                )
            }
            Err(TrySendError::Disconnected(job)) => (job, "the subscriber has stopped".into()),
        };
        st.pending.fetch_sub(1, Ordering::AcqRel);
        Err(refused)
    }
}

struct ThreadWaker(Arc<OnceLock<Thread>>);

impl Wake for ThreadWaker {
    fn wake(&self) {
        if let Some(t) = self.0.get() {
            t.unpark();
        }
    }
}

/// The registry of in-process subscribers and their dispatcher. One per [`Bus`].
pub(crate) struct Hub {
    settings: SinkSettings,
    dlq: Arc<DeadLetterQueue>,
    tracer: Arc<Tracer>,
    sinks: ArcSwap<Vec<Arc<Sink>>>,
    /// Serialises subscribe, unsubscribe, the dispatcher's start and shutdown.
    edit: Mutex<Option<JoinHandle<()>>>,
    thread: Arc<OnceLock<Thread>>,
    /// The dispatcher's idle flag; the bus notifies it after each publish.
    pub(crate) sleeper: Sleeper,
    stop: AtomicBool,
    /// Events the dispatcher never saw because the log lapped it.
    lost: AtomicU64,
}

impl Hub {
    pub(crate) fn new(
        settings: SinkSettings,
        dlq: Arc<DeadLetterQueue>,
        tracer: Arc<Tracer>,
    ) -> Arc<Self> {
        let thread = Arc::new(OnceLock::new());
        let hub = Arc::new(Self {
            settings,
            dlq,
            tracer,
            sinks: ArcSwap::from_pointee(Vec::new()),
            edit: Mutex::new(None),
            sleeper: Sleeper::new(Box::new(ThreadWaker(Arc::clone(&thread)))),
            thread,
            stop: AtomicBool::new(false),
            lost: AtomicU64::new(0),
        });
        hub.dlq
            .set_redeliver(Box::new(HubRedeliver(Arc::downgrade(&hub))));
        hub
    }

    pub(crate) fn dlq(&self) -> &Arc<DeadLetterQueue> {
        &self.dlq
    }

    /// How many subscribers are registered.
    pub(crate) fn count(&self) -> usize {
        self.sinks.load().len()
    }

    pub(crate) fn subscribe(
        self: &Arc<Self>,
        bus: &Bus,
        name: &str,
        filter: Filter,
        handler: Handler,
    ) -> Result<(), SubscribeError> {
        if name.is_empty() || name.len() > MAX_NAME_LEN {
            return Err(SubscribeError::Name(name.len()));
        }
        let mut dispatcher = lock(&self.edit);
        if self.stop.load(Ordering::Acquire) {
            return Err(SubscribeError::ShuttingDown);
        }
        let current = self.sinks.load_full();
        if current.iter().any(|s| &*s.state.name == name) {
            return Err(SubscribeError::Duplicate(name.to_owned()));
        }
        if dispatcher.is_none() {
            let (bus, hub) = (bus.clone(), Arc::clone(self));
            // Fixed here, not when the thread first runs: events published between this
            // call's return and the thread's start are this subscriber's too.
            let start = bus.log().next_seq();
            let handle = std::thread::Builder::new()
                .name("firehose-sinks".into())
                .spawn(move || hub.dispatch(&bus, start))
                .map_err(|e| SubscribeError::Spawn(name.to_owned(), e))?;
            let _ = self.thread.set(handle.thread().clone());
            *dispatcher = Some(handle);
        }
        let (tx, rx) = crossbeam_channel::bounded(self.settings.queue_capacity.max(1));
        let state = Arc::new(SinkState {
            name: name.into(),
            call: Mutex::new(None),
            pending: AtomicUsize::new(0),
            delivered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            timed_out: AtomicU64::new(0),
            overflowed: AtomicU64::new(0),
        });
        let worker = {
            let (state, dlq) = (Arc::clone(&state), Arc::clone(&self.dlq));
            let tracer = Arc::clone(&self.tracer);
            std::thread::Builder::new()
                .name(format!(
                    "firehose-sink-{}",
                    name.chars().take(32).collect::<String>()
                ))
                .spawn(move || work(&state, &rx, handler, &dlq, &tracer))
                .map_err(|e| SubscribeError::Spawn(name.to_owned(), e))?
        };
        let sink = Arc::new(Sink {
            filter,
            queue: tx,
            state,
            worker: Mutex::new(Some(worker)),
        });
        let mut next = (*current).clone();
        next.push(sink);
        self.sinks.store(Arc::new(next));
        self.sleeper.wake_now();
        Ok(())
    }

    pub(crate) fn unsubscribe(&self, name: &str) -> bool {
        let _guard = lock(&self.edit);
        let current = self.sinks.load_full();
        let next: Vec<_> = current
            .iter()
            .filter(|s| &*s.state.name != name)
            .cloned()
            .collect();
        let removed = next.len() != current.len();
        self.sinks.store(Arc::new(next));
        removed
    }

    pub(crate) fn stats(&self) -> Vec<SinkStats> {
        self.sinks.load().iter().map(|s| s.stats()).collect()
    }

    /// Events the dispatcher lost to the log lapping it.
    pub(crate) fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    /// Stops the dispatcher and lets each worker finish what is queued, waiting until
    /// `deadline`; workers still busy then (a stuck handler) are left to finish alone.
    pub(crate) fn shutdown(&self, deadline: Instant) {
        let dispatcher = {
            let mut guard = lock(&self.edit);
            self.stop.store(true, Ordering::Release);
            guard.take()
        };
        self.sleeper.wake_now();
        if let Some(d) = dispatcher {
            let _ = d.join();
        }
        let sinks = self.sinks.swap(Arc::new(Vec::new()));
        let workers: Vec<_> = sinks
            .iter()
            .filter_map(|s| lock(&s.worker).take())
            .collect();
        // The workers' queues close when the last sink handle goes.
        drop(sinks);
        for w in workers {
            while !w.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
            if w.is_finished() {
                let _ = w.join();
            }
        }
    }

    /// The dispatcher thread: route new events to the sinks' queues, and watch the calls.
    fn dispatch(&self, bus: &Bus, start: u64) {
        let log = bus.log();
        let mut cursor = start;
        let mut lost_reported: Option<Instant> = None;
        while !self.stop.load(Ordering::Acquire) {
            if self.sinks.load().is_empty() {
                // Nobody to route to: skip ahead, then look again (what a subscriber
                // registered after that look must get is published later, at or after the
                // new cursor), and sleep without the idle flag so publishers never pay to
                // wake this thread.
                cursor = log.next_seq();
                if self.sinks.load().is_empty() {
                    std::thread::park();
                    continue;
                }
            }
            let mut progressed = false;
            for _ in 0..BATCH {
                match log.read(cursor, |ev| ev.encoded()) {
                    Read::Ready(event) => {
                        // Loaded after the event: a subscriber registered before this event
                        // was published is in this snapshot, so `subscribe` misses nothing
                        // published after it returns.
                        self.route(&self.sinks.load(), &event);
                        cursor += 1;
                        progressed = true;
                    }
                    Read::Pending => break,
                    Read::Lapped { resume_at } => {
                        let n = resume_at - cursor;
                        self.lost.fetch_add(n, Ordering::Relaxed);
                        if lost_reported.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                            lost_reported = Some(Instant::now());
                            eprintln!("firehose: in-process subscribers missed {n} events: the log's retention was lapped (raise --retention-events)");
                        }
                        cursor = resume_at;
                    }
                }
            }
            let busy = self.watch(&self.sinks.load());
            if progressed {
                continue;
            }
            self.sleeper.flag.announce_idle();
            let more = !matches!(log.read(cursor, |_| ()), Read::Pending);
            if more || self.stop.load(Ordering::Acquire) {
                self.sleeper.flag.announce_busy();
                continue;
            }
            if busy {
                std::thread::park_timeout(WATCH_TICK);
            } else {
                std::thread::park();
            }
            self.sleeper.flag.announce_busy();
        }
    }

    fn route(&self, sinks: &[Arc<Sink>], event: &Encoded) {
        for sink in sinks {
            if !sink.filter.matches(event.event_type()) {
                continue;
            }
            let job = Job {
                event: event.clone(),
                retry_count: 0,
            };
            if let Err((job, why)) = sink.offer(job) {
                self.dlq.enqueue_retried(
                    job.event,
                    Arc::clone(&sink.state.name),
                    why,
                    job.retry_count,
                );
            }
        }
    }

    /// Reports calls past the invoke timeout; returns whether any sink has work.
    fn watch(&self, sinks: &[Arc<Sink>]) -> bool {
        let timeout = self.settings.invoke_timeout;
        let now = Instant::now();
        let mut busy = false;
        for sink in sinks.iter().map(|s| &s.state) {
            busy |= sink.pending.load(Ordering::Acquire) > 0;
            let overdue = {
                let mut call = lock(&sink.call);
                match &*call {
                    Some(c) if now.duration_since(c.started) >= timeout => call.take(),
                    _ => None,
                }
            };
            if let Some(c) = overdue {
                sink.timed_out.fetch_add(1, Ordering::Relaxed);
                self.dlq.enqueue_retried(
                    c.job.event,
                    Arc::clone(&sink.name),
                    format!("timeout after {} ms", timeout.as_millis()),
                    c.job.retry_count,
                );
            }
        }
        busy
    }

    fn redeliver(&self, letter: &DeadLetter) -> Result<(), String> {
        let sinks = self.sinks.load();
        let Some(sink) = sinks.iter().find(|s| s.state.name == letter.subscriber) else {
            return Err(format!(
                "subscriber {:?} is not registered",
                &*letter.subscriber
            ));
        };
        let job = Job {
            event: letter.event.clone(),
            retry_count: letter.retry_count + 1,
        };
        sink.offer(job).map_err(|(_, why)| why)?;
        // The watchdog must time this call too.
        self.sleeper.wake_now();
        Ok(())
    }
}

struct HubRedeliver(Weak<Hub>);

impl Redeliver for HubRedeliver {
    fn redeliver(&self, letter: &DeadLetter) -> Result<(), String> {
        match self.0.upgrade() {
            Some(hub) => hub.redeliver(letter),
            None => Err("the engine has stopped".into()),
        }
    }
}

/// A sink's worker thread: one call at a time, until its queue closes.
fn work(
    sink: &SinkState,
    queue: &Receiver<Job>,
    mut handler: Handler,
    dlq: &DeadLetterQueue,
    tracer: &Tracer,
) {
    for job in queue.iter() {
        let event = job.event.clone();
        let retry_count = job.retry_count;
        let started = Instant::now();
        *lock(&sink.call) = Some(Call { started, job });
        let result = catch_unwind(AssertUnwindSafe(|| {
            handler(&Delivery {
                event: &event,
                retry_count,
            })
        }));
        // `None`: the watchdog already reported this call as timed out.
        let finished = lock(&sink.call).take();
        if event.sampled() {
            invoke_span(tracer, sink, &event, started, finished.is_some(), &result);
        }
        if finished.is_some() {
            let failure = match result {
                Ok(Ok(())) => None,
                Ok(Err(msg)) if msg.is_empty() => {
                    Some("the handler failed without a message".into())
                }
                Ok(Err(msg)) => Some(msg),
                Err(panic) => Some(format!("the handler panicked: {}", panic_text(&*panic))),
            };
            match failure {
                None => {
                    sink.delivered.fetch_add(1, Ordering::Relaxed);
                }
                Some(why) => {
                    sink.failed.fetch_add(1, Ordering::Relaxed);
                    dlq.enqueue_retried(event, Arc::clone(&sink.name), why, retry_count);
                }
            }
        }
        sink.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Records `subscriber.invoke` for a sampled event; `status` is `ok`, `error`, `panic`
/// or `timeout` (the watchdog already sent it to the DLQ).
#[cold]
fn invoke_span(
    tracer: &Tracer,
    sink: &SinkState,
    event: &Encoded,
    started: Instant,
    in_time: bool,
    result: &std::thread::Result<Result<(), String>>,
) {
    let status = match result {
        _ if !in_time => "timeout",
        Ok(Ok(())) => "ok",
        Ok(Err(_)) => "error",
        Err(_) => "panic",
    };
    tracer.record(
        SpanName::SubscriberInvoke,
        event.trace_id(),
        (random_span_id(), publish_span_id(event.id())),
        started,
        attrs([
            ("subscriber_id", Attr::from(&*sink.name)),
            ("event_type", Attr::from(event.event_type())),
            ("event_id", Attr::from(event.id())),
            ("status", Attr::Static(status)),
        ]),
    );
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".into()
    }
}

/// Wraps a user handler whose error is anything printable.
pub(crate) fn boxed<F, E>(mut handler: F) -> Handler
where
    F: FnMut(&Delivery<'_>) -> Result<(), E> + Send + 'static,
    E: Display,
{
    Box::new(move |d| handler(d).map_err(|e| e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Event;

    /// The dispatcher starts on the first `subscribe`; events published right after it
    /// returns must not be skipped however late the thread first runs, and closing must
    /// end the worker (its queue's only sender is the registry's).
    #[test]
    fn first_subscriber_gets_everything_published_after_subscribe_and_workers_end() {
        for _ in 0..200 {
            let bus = Bus::new(1024, 64 * 1024, Vec::new());
            let n = Arc::new(AtomicU64::new(0));
            let m = Arc::clone(&n);
            bus.subscribe("x", Filter::all(), move |_| {
                m.fetch_add(1, Ordering::Relaxed);
                Ok::<(), String>(())
            })
            .unwrap();
            for _ in 0..8 {
                bus.publish(Event::new("a", "b")).unwrap();
            }
            let t = Instant::now();
            while n.load(Ordering::Relaxed) < 8 && t.elapsed() < Duration::from_secs(10) {
                std::thread::yield_now();
            }
            assert_eq!(n.load(Ordering::Relaxed), 8);
            let hub = Arc::clone(bus.inner_hub());
            let worker = lock(&hub.sinks.load()[0].worker).take().unwrap();
            bus.close_subscribers(Instant::now() + Duration::from_secs(5));
            worker.join().unwrap();
        }
    }
}
