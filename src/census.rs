//! `Census`: how `GET /connections` sees connections that other threads own.
//!
//! Each I/O thread owns its connections outright, with no lock, so no other thread can
//! look at them. A request for the list asks every thread instead:
//!
//! 1. the HTTP connection's thread calls [`Census::request`], which moves the census
//!    generation on, and wakes the other threads;
//! 2. each thread, at the top of its next loop turn, sees the generation moved
//!    ([`Census::wanted`]), writes a [`Report`] of its connections and publishes it;
//! 3. the request's answer waits (its thread keeps serving everything else) until every
//!    thread's report is at least as new as the request ([`Census::collect`]), or
//!    [`WAIT`] passes, and then it answers with the reports it has, marked `partial`.
//!
//! Nothing is kept up to date while nobody asks: the cost is one relaxed load per loop
//! turn. Several requests at once share the threads' work: a thread reports once for the
//! newest generation it sees.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use crossbeam_utils::CachePadded;

use crate::policy::Policy;

/// How long an answer waits for every thread's report.
pub const WAIT: Duration = Duration::from_secs(1);

/// What a connection speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// A WebSocket subscriber (`/ws/events`).
    WebSocket,
    /// A Server-Sent Events subscriber (`/sse/events`).
    Sse,
}

impl Transport {
    /// The name in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::WebSocket => "websocket",
            Transport::Sse => "sse",
        }
    }
}

/// How a connection is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnState {
    /// Keeping up.
    Ok,
    /// Its queue is above the high-water mark, or the socket takes nothing.
    Backpressure,
    /// Closing: a close handshake or final output is under way.
    Closing,
    /// Catching up from the log after a resume, not yet receiving live events.
    Replaying,
}

impl ConnState {
    /// The name in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnState::Ok => "ok",
            ConnState::Backpressure => "backpressure",
            ConnState::Closing => "closing",
            ConnState::Replaying => "replaying",
        }
    }
}

/// One subscriber connection, as its thread saw it.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    /// The connection id (the one in its `welcome` message).
    pub id: u64,
    /// The peer's address (`None` if the socket no longer knows it).
    pub remote: Option<SocketAddr>,
    /// What it speaks.
    pub transport: Transport,
    /// Its `types` patterns (empty: every event).
    pub filters: Vec<String>,
    /// Its overflow policy.
    pub policy: Policy,
    /// Events waiting in its queue.
    pub queue_depth: usize,
    /// Bytes of the waiting events.
    pub queued_bytes: usize,
    /// The socket's kernel send buffer (`SO_SNDBUF` as the kernel reports it), if known.
    pub send_buffer: Option<usize>,
    /// Events written to it.
    pub delivered: u64,
    /// Events it lost (queue full, or its thread fell behind the log).
    pub dropped: u64,
    /// Since the last bytes were written to it (`None`: nothing yet).
    pub last_message_age: Option<Duration>,
    /// How it is doing.
    pub state: ConnState,
    /// The ids of the last events written to it, newest first (at most
    /// [`crate::outbox::RECENT_IDS`]).
    pub recent: Vec<u64>,
}

/// One thread's connections at one generation.
#[derive(Debug, Default)]
pub struct Report {
    /// The census generation this answers.
    pub generation: u64,
    /// The I/O thread.
    pub thread: usize,
    /// Its subscriber connections.
    pub conns: Vec<ConnInfo>,
    /// Its connections still speaking plain HTTP (not listed one by one).
    pub http_connections: usize,
}

/// The exchange between the threads (see the module docs).
pub struct Census {
    requested: CachePadded<AtomicU64>,
    reports: Box<[ArcSwapOption<Report>]>,
}

impl Census {
    /// A census of `threads` I/O threads.
    pub fn new(threads: usize) -> Self {
        Self {
            requested: CachePadded::new(AtomicU64::new(0)),
            reports: (0..threads).map(|_| ArcSwapOption::empty()).collect(),
        }
    }

    /// Asks every thread for a report; returns the generation to wait for. The caller
    /// wakes the threads.
    pub fn request(&self) -> u64 {
        self.requested.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// The generation a thread that last reported `reported` must report now, if any.
    pub fn wanted(&self, reported: u64) -> Option<u64> {
        let g = self.requested.load(Ordering::Acquire);
        (g > reported).then_some(g)
    }

    /// Publishes thread `report.thread`'s report.
    pub fn publish(&self, report: Report) {
        if let Some(slot) = self.reports.get(report.thread) {
            slot.store(Some(Arc::new(report)));
        }
    }

    /// Every thread's report if all are at least `generation` new.
    pub fn collect(&self, generation: u64) -> Option<Vec<Arc<Report>>> {
        let all = self.latest();
        (all.len() == self.reports.len() && all.iter().all(|r| r.generation >= generation))
            .then_some(all)
    }

    /// Whatever reports exist, however old (the answer after [`WAIT`]).
    pub fn latest(&self) -> Vec<Arc<Report>> {
        self.reports
            .iter()
            .filter_map(ArcSwapOption::load_full)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(thread: usize, generation: u64) -> Report {
        Report {
            generation,
            thread,
            ..Report::default()
        }
    }

    #[test]
    fn an_answer_waits_for_every_thread() {
        let c = Census::new(2);
        assert_eq!(c.wanted(0), None);
        let g = c.request();
        assert_eq!(c.wanted(0), Some(g));
        c.publish(report(0, g));
        assert!(c.collect(g).is_none(), "thread 1 has not reported");
        assert_eq!(c.latest().len(), 1);
        c.publish(report(1, g));
        assert_eq!(c.collect(g).map(|r| r.len()), Some(2));
        assert_eq!(c.wanted(g), None);
    }

    #[test]
    fn a_newer_report_answers_older_requests() {
        let c = Census::new(1);
        let first = c.request();
        let second = c.request();
        assert_eq!(c.wanted(0), Some(second));
        c.publish(report(0, second));
        assert!(c.collect(first).is_some());
        assert!(c.collect(second + 1).is_none());
    }
}
