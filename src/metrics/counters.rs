//! Per-thread atomic counters and their sum.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crossbeam_utils::CachePadded;
use serde::Serialize;

/// The counters one I/O thread writes. Every field is written by that thread only, so
/// relaxed increments never contend; readers sum across threads.
#[derive(Default, Debug)]
pub struct ThreadCounters {
    /// Event frames completely written to a socket (`events.delivered`).
    pub delivered: AtomicU64,
    /// Events a connection's queue refused or discarded (`events.dropped`).
    pub dropped: AtomicU64,
    /// Open WebSocket subscribers on this thread (`ws.connected_clients`).
    pub ws_clients: AtomicI64,
    /// Open Server-Sent Events subscribers on this thread.
    pub sse_clients: AtomicI64,
    /// Open connections of any kind on this thread.
    pub connections: AtomicI64,
    /// Connections evicted because their socket made no write progress (`ws.evicted`,
    /// reason `write_stall`).
    pub evicted_write_stall: AtomicU64,
    /// Connections evicted after repeated write errors (reason `write_errors`).
    pub evicted_write_errors: AtomicU64,
    /// Connections closed by the `disconnect` overflow policy (reason `slow_consumer`).
    pub evicted_slow_consumer: AtomicU64,
    /// Events lost by subscriptions under the `priority` policy, per lane (`control`,
    /// `critical`, `important`, `bulk`); part of `dropped`.
    pub dropped_by_lane: [AtomicU64; 4],
    /// `dropped`, by reason: indexed by [`DropReason`].
    pub dropped_by_reason: [AtomicU64; 3],
    /// Bytes written to sockets (every protocol, headers and control frames included).
    pub bytes_out: AtomicU64,
    /// Events queued to resuming subscribers from the log (replay).
    pub replayed: AtomicU64,
    /// Resume requests, by outcome: indexed by [`ResumeOutcome`].
    pub resumes: [AtomicU64; 4],
    /// `gap` notices sent (a resume from before retention, or a replay the trimmer overtook).
    pub gap_notices: AtomicU64,
    /// Events sent again to `ack=` subscribers that did not acknowledge them in time.
    pub redelivered: AtomicU64,
    /// Unacknowledged events dead-lettered (redeliveries exhausted, or the connection closed).
    pub unacked_dead_lettered: AtomicU64,
    /// The thread's delivery-latency histogram (µs), as of its last tick.
    pub latency: arc_swap::ArcSwapOption<hdrhistogram::Histogram<u64>>,
}

impl ThreadCounters {
    /// Adds to a counter (relaxed: counts, not synchronisation).
    pub fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Counts `n` dropped events, in the total and under `reason`.
    pub fn drop_events(&self, reason: DropReason, n: u64) {
        Self::add(&self.dropped, n);
        Self::add(&self.dropped_by_reason[reason as usize], n);
    }
}

/// How a resume request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResumeOutcome {
    /// Everything after the client's id is replayed.
    Recovered = 0,
    /// Some of it was past retention: a `gap` notice, then the rest.
    Gap = 1,
    /// The id was from another epoch (a restart): nothing recovered.
    OtherEpoch = 2,
    /// The id is newer than any event of this run: nothing recovered.
    UnknownId = 3,
}

/// Resume requests by outcome.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Resumes {
    /// Everything recovered.
    pub recovered: u64,
    /// Recovered after a gap.
    pub gap: u64,
    /// From another epoch.
    pub other_epoch: u64,
    /// An id this run never gave.
    pub unknown_id: u64,
}

/// Why an event did not reach a subscriber.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// The subscription's queue was full (its overflow policy refused or evicted it).
    QueueFull = 0,
    /// The I/O thread fell a whole log behind (`--retention-events`) and never routed it.
    Retention = 1,
    /// Still queued when the connection closed.
    Closed = 2,
}

/// `events.dropped` by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DroppedByReason {
    /// The queue was full.
    pub queue_full: u64,
    /// The log's retention lapped the I/O thread.
    pub retention: u64,
    /// Queued when the connection closed.
    pub closed: u64,
}

/// HTTP responses by status code, counted where they are queued (`101` = WebSocket
/// upgrades).
#[derive(Debug, Default)]
pub struct HttpCounters {
    by_status: [AtomicU64; HTTP_STATUSES.len() + 1],
}

/// The codes the server answers with; anything else is counted as `other`.
const HTTP_STATUSES: [u16; 14] = [
    101, 200, 400, 404, 405, 408, 411, 413, 414, 426, 429, 431, 500, 503,
];

impl HttpCounters {
    /// Counts one response with `status`.
    pub fn count(&self, status: u16) {
        let i = HTTP_STATUSES
            .iter()
            .position(|&s| s == status)
            .unwrap_or(HTTP_STATUSES.len());
        self.by_status[i].fetch_add(1, Ordering::Relaxed);
    }

    /// `(code, count)` for every status seen so far; the code is `"other"` for codes
    /// outside the list.
    pub fn snapshot(&self) -> Vec<(String, u64)> {
        self.by_status
            .iter()
            .enumerate()
            .map(|(i, c)| (HTTP_STATUSES.get(i), c.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .map(|(code, n)| (code.map_or_else(|| "other".into(), u16::to_string), n))
            .collect()
    }
}

/// All threads' counters.
#[derive(Debug)]
pub struct Counters {
    threads: Box<[CachePadded<ThreadCounters>]>,
}

/// A point-in-time sum of the counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    /// Events accepted into the log (`events.published`).
    pub published: u64,
    /// Event frames written to subscribers.
    pub delivered: u64,
    /// Events dropped for some subscriber.
    pub dropped: u64,
    /// Open WebSocket subscribers.
    pub ws_connected_clients: u64,
    /// Open Server-Sent Events subscribers.
    pub sse_connected_clients: u64,
    /// Open connections of any kind.
    pub connections: u64,
    /// Evictions by reason.
    pub evicted: Evicted,
    /// Losses of `priority`-policy subscriptions, by lane.
    pub dropped_by_lane: DroppedByLane,
    /// `dropped`, by reason.
    pub dropped_by_reason: DroppedByReason,
    /// Bytes written to sockets.
    pub bytes_out: u64,
    /// Events replayed to resuming subscribers.
    pub replayed: u64,
    /// Resume requests by outcome.
    pub resumes: Resumes,
    /// `gap` notices sent.
    pub gap_notices: u64,
    /// Redeliveries to `ack=` subscribers.
    pub redelivered: u64,
    /// Unacknowledged events dead-lettered.
    pub unacked_dead_lettered: u64,
}

/// Events lost by `priority`-policy subscriptions, per lane (`control` is never dropped).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DroppedByLane {
    /// Lane `control`.
    pub control: u64,
    /// Lane `critical`.
    pub critical: u64,
    /// Lane `important`.
    pub important: u64,
    /// Lane `bulk`.
    pub bulk: u64,
}

/// Evicted connections, by reason (`ws.evicted`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Evicted {
    /// No write progress for the write-stall timeout.
    pub write_stall: u64,
    /// Too many consecutive write errors.
    pub write_errors: u64,
    /// The `disconnect` overflow policy.
    pub slow_consumer: u64,
}

impl Counters {
    /// Counters for `threads` I/O threads.
    pub fn new(threads: usize) -> Self {
        Self {
            threads: (0..threads)
                .map(|_| CachePadded::new(ThreadCounters::default()))
                .collect(),
        }
    }

    /// Every thread's delivery latency (µs since publish), merged.
    pub fn latency(&self) -> hdrhistogram::Histogram<u64> {
        let mut all = super::latency::new_histogram();
        for t in self.threads.iter() {
            if let Some(h) = t.latency.load_full() {
                // Same bounds everywhere: adding cannot fail.
                let _ = all.add(&*h);
            }
        }
        all
    }

    /// Thread `i`'s counters.
    pub fn thread(&self, i: usize) -> &ThreadCounters {
        &self.threads[i]
    }

    /// Open WebSocket subscribers, all threads.
    pub fn ws_connected_clients(&self) -> u64 {
        let n: i64 = self
            .threads
            .iter()
            .map(|t| t.ws_clients.load(Ordering::Relaxed))
            .sum();
        n.max(0) as u64
    }

    /// Sums every thread. `published` comes from the log, which numbers every event.
    pub fn snapshot(&self, published: u64) -> Snapshot {
        let mut s = Snapshot {
            published,
            ..Snapshot::default()
        };
        let (mut conns, mut sse) = (0i64, 0i64);
        for t in self.threads.iter() {
            s.delivered += t.delivered.load(Ordering::Relaxed);
            s.dropped += t.dropped.load(Ordering::Relaxed);
            s.evicted.write_stall += t.evicted_write_stall.load(Ordering::Relaxed);
            s.evicted.write_errors += t.evicted_write_errors.load(Ordering::Relaxed);
            s.evicted.slow_consumer += t.evicted_slow_consumer.load(Ordering::Relaxed);
            let lane = |i: usize| t.dropped_by_lane[i].load(Ordering::Relaxed);
            s.dropped_by_lane.control += lane(0);
            s.dropped_by_lane.critical += lane(1);
            s.dropped_by_lane.important += lane(2);
            s.dropped_by_lane.bulk += lane(3);
            let reason = |i: usize| t.dropped_by_reason[i].load(Ordering::Relaxed);
            s.dropped_by_reason.queue_full += reason(DropReason::QueueFull as usize);
            s.dropped_by_reason.retention += reason(DropReason::Retention as usize);
            s.dropped_by_reason.closed += reason(DropReason::Closed as usize);
            s.bytes_out += t.bytes_out.load(Ordering::Relaxed);
            s.replayed += t.replayed.load(Ordering::Relaxed);
            s.gap_notices += t.gap_notices.load(Ordering::Relaxed);
            s.redelivered += t.redelivered.load(Ordering::Relaxed);
            s.unacked_dead_lettered += t.unacked_dead_lettered.load(Ordering::Relaxed);
            let resumes = |o: ResumeOutcome| t.resumes[o as usize].load(Ordering::Relaxed);
            s.resumes.recovered += resumes(ResumeOutcome::Recovered);
            s.resumes.gap += resumes(ResumeOutcome::Gap);
            s.resumes.other_epoch += resumes(ResumeOutcome::OtherEpoch);
            s.resumes.unknown_id += resumes(ResumeOutcome::UnknownId);
            conns += t.connections.load(Ordering::Relaxed);
            sse += t.sse_clients.load(Ordering::Relaxed);
        }
        s.ws_connected_clients = self.ws_connected_clients();
        s.connections = conns.max(0) as u64;
        s.sse_connected_clients = sse.max(0) as u64;
        s
    }
}
