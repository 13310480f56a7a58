//! `EventLoop`: one pinned I/O thread. It owns its listening socket and its connections,
//! reads the event log from its own cursor, routes each new event to the matching
//! connections' outboxes, and writes them out in batches.
//!
//! One turn of the loop:
//!
//! 1. route new log entries (at most [`ROUTE_BATCH`] per turn, so reads and writes keep up),
//!    in [runs](crate::run) when enough are waiting, and replay older ones to resuming
//!    connections, as far as their queues have room,
//! 2. flush the connections that got output,
//! 3. announce idle, look at the log once more, and only then block in `poll`,
//! 4. handle readiness: accept, read (bounded per connection per turn), write,
//! 5. every [`TICK`], run timers (handshake, keep-alive, idle, close timeouts).
//!
//! Nothing here is shared with other I/O threads except the log, the counters (each thread
//! has its own cache lines) and the connection count.

use std::io;
use std::num::NonZeroU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use super::connection::{Connection, FlushError, Phase};
use super::router::Router;
use crate::acks::Unacked;
use crate::census::{self, ConnInfo, ConnState, Report, Transport};
use crate::clock::Moment;
use crate::engine::Engine;
use crate::event::Published;
use crate::http::connections::{self, Ask};
use crate::http::response::Response;
use crate::http::session::{HttpSession, HttpStep};
use crate::http::sse::SseSession;
use crate::log::Read;
use crate::metrics::{DropReason, ResumeOutcome, ThreadCounters};
use crate::outbox::{Progress, Push, Stamp};
use crate::policy::Policy;
use crate::resume::{self, LogView, Position, Unrecovered};
use crate::run::{Run, RUN_MAX, RUN_MIN};
use crate::trace::{attrs, publish_span_id, random_span_id, Attr, SpanName};
use crate::ws::message::{self, Framing};
use crate::ws::session::{WsSession, WsStep};

/// The waker's token.
pub(crate) const WAKER: Token = Token(usize::MAX);
const LISTENER: Token = Token(usize::MAX - 1);
/// Timer resolution.
const TICK: Duration = Duration::from_millis(250);
/// Most log entries routed per turn.
const ROUTE_BATCH: usize = 4096;
/// Most reads from one connection per turn before the others get a go.
const READ_BUDGET: usize = 16;
/// Per-thread read buffer; connections keep only what a partial message needs.
const READ_BUF: usize = 64 * 1024;
/// How long shutdown waits for the final close frames to go out (after `--drain-timeout`).
const SHUTDOWN_CLOSE: Duration = Duration::from_millis(500);
/// How often failing accepts are reported while they go on.
const ACCEPT_LOG_EVERY: Duration = Duration::from_secs(10);
/// How often a thread with an answer waiting looks for the other threads' census reports.
const ASK_POLL: Duration = Duration::from_millis(1);

/// A request on this thread waiting for every thread's census report.
struct PendingAsk {
    key: usize,
    ask: Ask,
    generation: u64,
    deadline: Instant,
}

/// One I/O thread's state.
pub struct EventLoop {
    index: usize,
    engine: Arc<Engine>,
    poll: Poll,
    /// `None` once shutdown began: new connections are refused.
    listener: Option<TcpListener>,
    conns: Slab<Connection>,
    router: Router,
    /// The next log sequence number to route.
    cursor: u64,
    read_buf: Box<[u8]>,
    dirty: Vec<usize>,
    /// Connections whose read budget ran out with input possibly left.
    read_again: Vec<usize>,
    /// Accepting failed for lack of resources; retry at the next tick.
    accept_again: bool,
    /// Connections whose `disconnect` policy overflowed during routing.
    overflowed: Vec<usize>,
    /// Connections whose `catch-up` queue was full during routing: they go to replay.
    fell_behind: Vec<usize>,
    /// Events lost to laps, reported once a second.
    lost_log: Throttle,
    /// Failed accepts, reported once every [`ACCEPT_LOG_EVERY`].
    accept_log: Throttle,
    /// Publish → written latency of this thread's deliveries (µs), since start; a copy is
    /// published for the metrics readers every tick it changed.
    latency: Histogram<u64>,
    latency_published: u64,
    /// The newest census generation this thread reported for.
    census_reported: u64,
    asks: Vec<PendingAsk>,
    /// Connections catching up from the log ([`Connection::replay_next`]), not yet routed.
    replaying: Vec<usize>,
    /// Routing in runs (see [`crate::run`]): the run being built, its event type, the
    /// connections that take it whole, and the others its lists hold.
    run: Run,
    run_type: String,
    runners: Vec<usize>,
    run_others: Vec<usize>,
}

/// Where one connection's replay stopped this turn.
enum Replayed {
    /// It reached the live cursor: route it live from now on.
    CaughtUp,
    /// Its queue is full: wait for the socket to take some.
    Full,
    /// The turn's budget ran out: continue next turn.
    Budget,
    /// It is closing (or gone): forget it.
    Over,
}

impl EventLoop {
    /// Sets up thread `index`: registers the listener; the loop starts routing at the
    /// log's current end.
    pub fn new(
        index: usize,
        engine: Arc<Engine>,
        poll: Poll,
        mut listener: TcpListener,
    ) -> io::Result<Self> {
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let cursor = engine.bus.log().next_seq();
        // Room for this thread's share of --max-connections up front: address space only
        // (the kernel backs pages as connections fill them), and it never moves, where
        // doubling left the old array resident until the allocator purged it (half a
        // kilobyte per connection at 10,000; `firehose bench --idle`).
        let share = engine
            .config
            .max_connections
            .div_ceil(engine.config.io_threads.max(1));
        Ok(Self {
            index,
            engine,
            poll,
            listener: Some(listener),
            conns: Slab::with_capacity(share),
            router: Router::default(),
            cursor,
            read_buf: vec![0; READ_BUF].into_boxed_slice(),
            dirty: Vec::new(),
            read_again: Vec::new(),
            accept_again: false,
            overflowed: Vec::new(),
            fell_behind: Vec::new(),
            lost_log: Throttle::default(),
            accept_log: Throttle::default(),
            latency: crate::metrics::latency::new_histogram(),
            latency_published: 0,
            census_reported: 0,
            asks: Vec::new(),
            replaying: Vec::new(),
            run: Run::default(),
            run_type: String::new(),
            runners: Vec::new(),
            run_others: Vec::new(),
        })
    }

    /// Runs until the engine shuts down.
    pub fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut next_tick = Instant::now() + TICK;
        loop {
            self.census();
            let more = self.route();
            let more = self.replay() || more;
            self.flush_dirty();
            if self.engine.is_shutting_down() {
                return self.shutdown();
            }
            let timeout = if more || !self.read_again.is_empty() || self.replay_has_room() {
                Some(Duration::ZERO)
            } else {
                let sleeper = self.engine.bus.sleeper(self.index);
                sleeper.flag.announce_idle();
                if self.log_has_next() || self.engine.is_shutting_down() {
                    sleeper.flag.announce_busy();
                    continue;
                }
                let to_tick = next_tick.saturating_duration_since(Instant::now());
                Some(if self.asks.is_empty() {
                    to_tick
                } else {
                    to_tick.min(ASK_POLL)
                })
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    eprintln!("firehose: I/O thread {} cannot poll: {e}", self.index);
                    return self.shutdown();
                }
            }
            self.engine.bus.sleeper(self.index).flag.announce_busy();
            for key in std::mem::take(&mut self.read_again) {
                self.on_readable(key);
            }
            for ev in events.iter() {
                match ev.token() {
                    WAKER => {}
                    LISTENER => self.accept(),
                    Token(key) => {
                        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                            self.on_readable(key);
                        }
                        if ev.is_writable() {
                            self.mark_dirty(key);
                        }
                    }
                }
            }
            let now = Instant::now();
            if now >= next_tick {
                self.tick(now);
                next_tick = now + TICK;
            }
        }
    }

    fn log_has_next(&self) -> bool {
        !matches!(
            self.engine.bus.log().read(self.cursor, |_| ()),
            Read::Pending
        )
    }

    /// Routes up to [`ROUTE_BATCH`] new events; returns whether more may be waiting.
    fn route(&mut self) -> bool {
        let engine = Arc::clone(&self.engine);
        let log = engine.bus.log();
        let counters = engine.counters.thread(self.index);
        let now = Instant::now();
        let more = self.route_batch(log, counters, now);
        for key in std::mem::take(&mut self.overflowed) {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            let closed = match &mut conn.phase {
                Phase::Ws(ws) => ws.disconnect_slow_consumer(now, &mut conn.outbox),
                Phase::Sse(s) => s.is_open() && self.end_sse(key, "slow consumer", now),
                Phase::Http(_) => false,
            };
            if closed {
                // Counted once, however often it overflowed in this batch.
                ThreadCounters::add(&counters.evicted_slow_consumer, 1);
            }
            self.after_ws(key, WsStep::Continue, now);
            self.mark_dirty(key);
        }
        for key in std::mem::take(&mut self.fell_behind) {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            if let Some(filter) = conn.filter() {
                if conn.routed {
                    self.router.remove(key, filter);
                    conn.routed = false;
                }
                self.replaying.push(key);
            }
        }
        more
    }

    /// Ends Server-Sent Events stream `key` with a `closing` record; returns whether it was
    /// open.
    fn end_sse(&mut self, key: usize, reason: &str, now: Instant) -> bool {
        let Some(conn) = self.conns.get_mut(key) else {
            return false;
        };
        let Phase::Sse(s) = &mut conn.phase else {
            return false;
        };
        if !s.is_open() {
            return false;
        }
        let discarded = s.close(reason, &mut conn.outbox);
        if conn.routed {
            self.router.remove(key, s.filter());
            conn.routed = false;
        }
        conn.replay_next = None;
        conn.finish_by
            .get_or_insert(Moment::at(now + self.engine.config.close_timeout));
        self.engine
            .counters
            .thread(self.index)
            .drop_events(DropReason::Closed, discarded);
        self.mark_dirty(key);
        true
    }

    fn route_batch(
        &mut self,
        log: &crate::log::EventLog<Published>,
        counters: &ThreadCounters,
        now: Instant,
    ) -> bool {
        let epoch = self.engine.bus.epoch();
        let mut routed = 0;
        // Runs are tried while they pay: a run that no connection takes, or that ends
        // short (types interleave), stops them for the rest of the batch, so mixed
        // traffic pays for one try per batch, not one per event.
        let mut runs = true;
        while routed < ROUTE_BATCH {
            if runs && log.next_seq().saturating_sub(self.cursor) >= RUN_MIN as u64 {
                match self.route_run(log, counters, (now, epoch)) {
                    Some(0) => {}
                    Some(n) => {
                        routed += n;
                        continue;
                    }
                    None => runs = false,
                }
            }
            routed += 1;
            let cursor = self.cursor;
            let (router, conns, dirty) = (&self.router, &mut self.conns, &mut self.dirty);
            let overflow = (&mut self.overflowed, &mut self.fell_behind);
            match log.read(cursor, |ev| {
                route_event(ev, router, conns, dirty, overflow, counters, (now, epoch))
            }) {
                Read::Ready(()) => self.cursor += 1,
                Read::Pending => return false,
                Read::Lapped { resume_at } => {
                    self.lost(cursor, resume_at - 1);
                    self.cursor = resume_at;
                }
            }
        }
        true
    }

    /// Routes a [run](crate::run) from the cursor: up to [`RUN_MAX`] consecutive events of
    /// the first one's type, none traced, within
    /// [`RUN_MAX_BYTES`](crate::run::RUN_MAX_BYTES). The connections that take runs get it
    /// whole; every other match gets each event as [`route_event`] would give it. Returns
    /// how many events it routed (0: the first is traced, too large for a run, or not
    /// readable; the caller routes it alone), or `None` when runs do not pay here: no
    /// connection takes this one, or it ended short because another type followed.
    fn route_run(
        &mut self,
        log: &crate::log::EventLog<Published>,
        counters: &ThreadCounters,
        at: (Instant, u64),
    ) -> Option<usize> {
        let first_id = self.cursor;
        let mut run_type = std::mem::take(&mut self.run_type);
        run_type.clear();
        let starts = log.read(first_id, |ev| {
            if !ev.sampled() && Run::may_start(ev.frame_len()) {
                run_type.push_str(ev.event_type());
            }
        });
        if starts != Read::Ready(()) || run_type.is_empty() {
            self.run_type = run_type;
            return Some(0);
        }
        // All three come back empty from the last run (cleared at the end, below).
        let (mut runners, mut others) = (
            std::mem::take(&mut self.runners),
            std::mem::take(&mut self.run_others),
        );
        for key in self.router.all_and_exact(&run_type) {
            match self.conns.get(key) {
                Some(conn) if takes_runs(conn, first_id) => runners.push(key),
                Some(_) => others.push(key),
                None => {}
            }
        }
        let mut run = std::mem::take(&mut self.run);
        let mut other_type = false;
        if !runners.is_empty() {
            let router = &self.router;
            let mut to = Routing {
                conns: &mut self.conns,
                dirty: &mut self.dirty,
                overflow: (&mut self.overflowed, &mut self.fell_behind),
                counters,
                at,
                lost: 0,
            };
            while run.len() < RUN_MAX {
                let id = first_id + run.len() as u64;
                let read = log.read(id, |ev| {
                    if ev.event_type() != run_type {
                        other_type = true;
                        return false;
                    }
                    if ev.sampled() || !run.has_room_for(ev.frame_len()) {
                        return false;
                    }
                    run.push(id, ev.frame(), ev.stamp());
                    for &key in &others {
                        to.push(ev, key);
                    }
                    router.for_each_prefix_match(&run_type, |key| to.push(ev, key));
                    true
                });
                // Anything else (another type, a traced event, the end, a lap) ends the run.
                if read != Read::Ready(true) {
                    break;
                }
            }
            let mut lost = to.lost;
            let n = run.len();
            self.cursor += n as u64;
            if n == 0 {
                // The first event was lapped since it was looked at: the caller reports it.
                runners.clear();
            }
            let frozen = run.freeze();
            let last_id = first_id + n as u64 - 1;
            for &key in &runners {
                let conn = &mut self.conns[key];
                conn.last_routed = last_id;
                let push = conn.outbox.push_run(&frozen);
                lost += push.lost;
                if push.queued > 0 {
                    queued(conn, key, &mut self.dirty, at.0);
                }
            }
            counters.drop_events(DropReason::QueueFull, lost);
        }
        let n = run.len();
        let interleaved = other_type && n < RUN_MIN;
        let pays = !runners.is_empty() && !interleaved;
        // Cleared now, not at the next run: the run holds references to the log's frames.
        run.clear();
        runners.clear();
        others.clear();
        (self.run, self.run_type, self.runners, self.run_others) = (run, run_type, runners, others);
        pays.then_some(n)
    }

    /// This thread fell a whole log behind: every subscriber may have lost `first..=last`.
    fn lost(&mut self, first: u64, last: u64) {
        // Under overload this can happen thousands of times a second: say it once a second.
        let lost = last - first + 1;
        if let Some(n) = self
            .lost_log
            .due(lost, Instant::now(), Duration::from_secs(1))
        {
            eprintln!(
                "firehose: I/O thread {} fell behind the log's retention (--retention-events): {n} events not routed since the last report; subscribers get `dropped` notices",
                self.index
            );
        }
        let keys: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.routed)
            .map(|(k, _)| k)
            .collect();
        let engine = Arc::clone(&self.engine);
        let counters = engine.counters.thread(self.index);
        for key in keys {
            let conn = &mut self.conns[key];
            conn.outbox.record_lost(first, last);
            counters.drop_events(DropReason::Retention, last - first + 1);
            self.mark_dirty(key);
        }
    }

    fn mark_dirty(&mut self, key: usize) {
        if let Some(c) = self.conns.get_mut(key) {
            if !c.dirty {
                c.dirty = true;
                self.dirty.push(key);
            }
        }
    }

    fn flush_dirty(&mut self) {
        // One clock read for the pass: a paced event reaches every subscriber in one pass,
        // and reading the clock per connection was a tenth of this thread's instructions.
        let now = Instant::now();
        let at = Moment::at(now);
        for key in std::mem::take(&mut self.dirty) {
            self.flush(key, now, at);
        }
    }

    /// Writes what connection `key` has waiting; `now` (and `at`, the same moment in the
    /// connection's 8-byte form) dates the pass.
    fn flush(&mut self, key: usize, now: Instant, at: Moment) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.dirty = false;
        let counters = self.engine.counters.thread(self.index);
        match conn.flush(now) {
            Ok(p) => {
                if p.bytes > 0 {
                    conn.last_write = Some(at);
                }
                ThreadCounters::add(&counters.delivered, p.events);
                ThreadCounters::add(&counters.bytes_out, p.bytes);
                if p.sampled != 0 {
                    write_span(&self.engine, conn, &p, now);
                }
                if p.events > 0 && p.first_t != 0 {
                    // One record per write, at the age of its first event: an upper bound
                    // for the rest, and it keeps the histogram off the per-frame cost.
                    let age = crate::clock::age_us(p.first_t, at.tick());
                    let age = u64::from(age).clamp(1, crate::metrics::latency::MAX_US);
                    let _ = self.latency.record_n(age, p.events);
                }
                if conn.is_done() {
                    self.remove(key);
                }
            }
            Err(FlushError::Gone) => self.remove(key),
            // Transient, perhaps (out of buffers): the next tick retries, up to the limit.
            Err(FlushError::Failed(_))
                if conn.failed_writes < self.engine.config.max_failed_writes => {}
            Err(FlushError::Failed(e)) => {
                eprintln!(
                    "firehose: evicting a connection after {} failed writes in a row: {e}",
                    conn.failed_writes
                );
                ThreadCounters::add(&counters.evicted_write_errors, 1);
                self.remove(key);
            }
        }
    }

    fn accept(&mut self) {
        self.accept_again = false;
        loop {
            let Some(listener) = &self.listener else {
                return;
            };
            let (mut stream, _peer) = match listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e)
                    if e.kind() == io::ErrorKind::Interrupted
                        || e.kind() == io::ErrorKind::ConnectionAborted =>
                {
                    continue
                }
                Err(e) => {
                    // Out of descriptors or memory: leave the backlog for the next tick,
                    // and say so now and then, not at every retry.
                    if let Some(n) = self.accept_log.due(1, Instant::now(), ACCEPT_LOG_EVERY) {
                        eprintln!(
                            "firehose: accept failed: {e}; retrying every {TICK:?} ({n} failed since the last report; raise `ulimit -n` or lower --max-connections)"
                        );
                    }
                    self.accept_again = true;
                    return;
                }
            };
            if !self.engine.try_open_connection() {
                let body = format!(
                    "connection limit of {} reached; try again later",
                    self.engine.config.max_connections
                );
                self.engine.http.count(503);
                refuse(&mut stream, &Response::error(503, &body).encode(false));
                continue;
            }
            let _ = stream.set_nodelay(true);
            if let Some(bytes) = self.engine.config.socket_send_buffer {
                // Best effort, like the no-delay flag: the socket works either way, and
                // `/connections` shows the size the kernel applied.
                let _ = socket2::SockRef::from(&stream).set_send_buffer_size(bytes);
            }
            let now = Instant::now();
            let session = HttpSession::new(now, &self.engine);
            let entry = self.conns.vacant_entry();
            let key = entry.key();
            let mut conn = Connection::new(
                stream,
                session,
                self.engine.config.queue_capacity,
                self.engine.config.queue_max_bytes,
            );
            if let Err(e) = self.poll.registry().register(
                &mut conn.stream,
                Token(key),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                eprintln!("firehose: cannot register a connection: {e}");
                self.engine.close_connection();
                continue;
            }
            entry.insert(conn);
            self.engine
                .counters
                .thread(self.index)
                .connections
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    fn on_readable(&mut self, key: usize) {
        let mut buf = std::mem::take(&mut self.read_buf);
        self.read_into(key, &mut buf);
        self.read_buf = buf;
    }

    fn read_into(&mut self, key: usize, read_buf: &mut [u8]) {
        let now = Instant::now();
        let engine = Arc::clone(&self.engine);
        for _ in 0..READ_BUDGET {
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            let n = match conn.read_some(read_buf) {
                Ok(Some(0)) | Err(_) => return self.remove(key),
                Ok(Some(n)) => n,
                Ok(None) => return,
            };
            if conn.write_shut || conn.finish_by.is_some() {
                continue; // the session is over; discard what the peer still sends
            }
            let data = &read_buf[..n];
            let http_step = match &mut conn.phase {
                Phase::Http(http) => Some(http.on_input(data, now, &engine, &mut conn.outbox)),
                Phase::Ws(_) => None,
                // An event stream takes no input; what the client sends is discarded.
                Phase::Sse(_) => continue,
            };
            match http_step {
                None => self.feed_ws(key, data, now),
                Some(step) => self.after_http(key, step, now),
            }
            self.mark_dirty(key);
        }
        self.read_again.push(key);
    }

    /// Applies what an HTTP session asked for: closing, the WebSocket upgrade, a census.
    fn after_http(&mut self, key: usize, step: HttpStep, now: Instant) {
        let engine = Arc::clone(&self.engine);
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        match step {
            HttpStep::Continue => {}
            HttpStep::Close => conn.finish_by = Some(Moment::at(now + engine.config.close_timeout)),
            HttpStep::Upgrade { upgrade, leftover } => {
                let acks = upgrade.ack.map(|class| {
                    Unacked::new(class, engine.config.ack_timeout, engine.config.max_unacked)
                });
                let ws = WsSession::new(engine.next_connection_id(), upgrade.filter, now, acks);
                conn.become_subscriber(Phase::Ws(ws), upgrade.overflow);
                engine
                    .counters
                    .thread(self.index)
                    .ws_clients
                    .fetch_add(1, Ordering::Relaxed);
                self.start_delivery(key, upgrade.resume);
                if !leftover.is_empty() {
                    self.feed_ws(key, &leftover, now);
                }
            }
            HttpStep::Sse(sub) => {
                let s = SseSession::new(engine.next_connection_id(), sub.filter);
                conn.become_subscriber(Phase::Sse(s), sub.overflow);
                engine
                    .counters
                    .thread(self.index)
                    .sse_clients
                    .fetch_add(1, Ordering::Relaxed);
                self.start_delivery(key, sub.resume);
            }
            HttpStep::Ask(ask) => {
                let generation = engine.census.request();
                for i in (0..engine.config.io_threads).filter(|&i| i != self.index) {
                    engine.bus.sleeper(i).wake_now();
                }
                self.asks.push(PendingAsk {
                    key,
                    ask,
                    generation,
                    deadline: now + census::WAIT,
                });
            }
        }
    }

    /// Reports this thread's connections if a census asked, and answers this thread's
    /// waiting requests whose reports are all in (or whose wait is over).
    fn census(&mut self) {
        if let Some(generation) = self.engine.census.wanted(self.census_reported) {
            self.census_reported = generation;
            let report = self.census_report(generation);
            self.engine.census.publish(report);
        }
        if self.asks.is_empty() {
            return;
        }
        let now = Instant::now();
        for pending in std::mem::take(&mut self.asks) {
            let (reports, partial) = match self.engine.census.collect(pending.generation) {
                Some(all) => (all, false),
                None if now >= pending.deadline => (self.engine.census.latest(), true),
                None => {
                    self.asks.push(pending);
                    continue;
                }
            };
            let resp = connections::answer(pending.ask, &reports, partial, self.engine.bus.log());
            let engine = Arc::clone(&self.engine);
            let Some(conn) = self.conns.get_mut(pending.key) else {
                continue;
            };
            let Phase::Http(http) = &mut conn.phase else {
                continue;
            };
            let step = http.answer(&resp, now, &engine, &mut conn.outbox);
            self.after_http(pending.key, step, now);
            self.mark_dirty(pending.key);
        }
    }

    /// This thread's subscriber connections, for the census.
    fn census_report(&self, generation: u64) -> Report {
        let now = Instant::now();
        let mut report = Report {
            generation,
            thread: self.index,
            ..Report::default()
        };
        for (_, conn) in &self.conns {
            let Some(filter) = conn.filter() else {
                report.http_connections += 1;
                continue;
            };
            let state = if conn.finish_by.is_some() || !conn.is_subscribed() {
                ConnState::Closing
            } else if conn.replay_next.is_some() {
                ConnState::Replaying
            } else if conn.outbox.is_backpressured() || conn.stalled_since.is_some() {
                ConnState::Backpressure
            } else {
                ConnState::Ok
            };
            report.conns.push(ConnInfo {
                id: conn.subscriber_id(),
                remote: conn.stream.peer_addr().ok(),
                transport: match conn.framing() {
                    Framing::WebSocket => Transport::WebSocket,
                    Framing::Sse => Transport::Sse,
                },
                filters: filter.patterns().iter().map(|p| p.to_string()).collect(),
                policy: conn.outbox.policy(),
                queue_depth: conn.outbox.queued_events(),
                queued_bytes: conn.outbox.queued_bytes(),
                send_buffer: socket2::SockRef::from(&conn.stream).send_buffer_size().ok(),
                delivered: conn.outbox.delivered(),
                dropped: conn.outbox.dropped(),
                last_message_age: conn
                    .last_write
                    .map(|t| now.saturating_duration_since(t.instant())),
                state,
                recent: conn.outbox.recent(),
            });
        }
        report
    }

    fn feed_ws(&mut self, key: usize, data: &[u8], now: Instant) {
        let engine = Arc::clone(&self.engine);
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let Phase::Ws(ws) = &mut conn.phase else {
            return;
        };
        let step = ws.on_input(data, now, &engine, &mut conn.outbox);
        self.after_ws(key, step, now);
    }

    /// Applies what a WebSocket session asked for: router changes, closing, drop counts.
    fn after_ws(&mut self, key: usize, step: WsStep, now: Instant) {
        let close_timeout = self.engine.config.close_timeout;
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let Phase::Ws(ws) = &mut conn.phase else {
            return;
        };
        if let Some(old) = ws.take_replaced_filter() {
            if conn.routed {
                self.router.remove(key, &old);
                self.router.add(key, ws.filter());
            }
        }
        if conn.routed && !ws.is_open() {
            self.router.remove(key, ws.filter());
            conn.routed = false;
        }
        let discarded = ws.take_discarded();
        if step == WsStep::Done && conn.finish_by.is_none() {
            conn.finish_by = Some(Moment::at(now + close_timeout));
        }
        let resume = ws.take_resume().filter(|_| ws.is_open());
        if resume.is_some() {
            // The client starts over after its id: what was outstanding is either done
            // (up to the id) or tracked again as the replay sends it.
            if let Some(acks) = ws.acks_mut() {
                acks.take_all();
            }
        }
        let (redelivered, dead_lettered) = ws.take_ack_counts();
        let counters = self.engine.counters.thread(self.index);
        counters.drop_events(DropReason::Closed, discarded);
        ThreadCounters::add(&counters.redelivered, redelivered);
        ThreadCounters::add(&counters.unacked_dead_lettered, dead_lettered);
        if let Some(position) = resume {
            // Start over: what is queued is either before the position (unwanted) or
            // replayed again after it.
            if conn.routed {
                self.router.remove(key, ws.filter());
                conn.routed = false;
            }
            conn.replay_next = None;
            conn.outbox.clear_events();
            self.replaying.retain(|k| *k != key);
            self.start_delivery(key, Some(position));
        }
    }

    /// Starts delivering to subscriber `key` (WebSocket or SSE) from where `asked` says
    /// (live when `None`): a `welcome`, a `gap` notice if part of it is past retention,
    /// then a replay from the log or straight to live routing.
    fn start_delivery(&mut self, key: usize, asked: Option<Position>) {
        let engine = Arc::clone(&self.engine);
        let log = engine.bus.log();
        let view = LogView {
            epoch: engine.bus.epoch(),
            head: log.head(),
            live_from: self.cursor,
            newest: log.last_seq(),
        };
        let start = resume::plan(asked, view);
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let policy = conn.outbox.policy();
        let welcome = match &conn.phase {
            Phase::Ws(ws) => ws.welcome(view.epoch, &start, policy),
            Phase::Sse(s) => s.welcome(view.epoch, &start, policy),
            Phase::Http(_) => return,
        };
        let counters = engine.counters.thread(self.index);
        let outcome = match start.recovered {
            Ok(()) => Some(ResumeOutcome::Recovered),
            Err(Unrecovered::NotAsked) => None,
            Err(Unrecovered::Gap) => Some(ResumeOutcome::Gap),
            Err(Unrecovered::OtherEpoch) => Some(ResumeOutcome::OtherEpoch),
            Err(Unrecovered::UnknownId) => Some(ResumeOutcome::UnknownId),
        };
        if let Some(o) = outcome {
            ThreadCounters::add(&counters.resumes[o as usize], 1);
        }
        // Best effort, like every control frame: a full control lane closes the session.
        let _ = conn.outbox.push_control(welcome);
        if let Some((from, to)) = start.gap {
            conn.outbox
                .push_notice(message::gap(conn.framing(), from, to));
            ThreadCounters::add(&counters.gap_notices, 1);
        }
        if start.next < self.cursor {
            conn.replay_next = NonZeroU64::new(start.next);
            self.replaying.push(key);
        } else {
            // Events up to `next - 1` are delivered or not wanted (the id may be ahead of
            // this thread's cursor when another thread delivered it).
            if let Some(filter) = conn.filter() {
                self.router.add(key, filter);
            }
            conn.routed = true;
            conn.last_routed = start.next - 1;
        }
        self.mark_dirty(key);
    }

    /// Feeds the replaying connections from the log, as far as their queues have room and
    /// a turn's budget allows; those that catch up join live routing. Returns whether one
    /// ran out of budget (more work now).
    fn replay(&mut self) -> bool {
        if self.replaying.is_empty() {
            return false;
        }
        let engine = Arc::clone(&self.engine);
        let log = engine.bus.log();
        let counters = engine.counters.thread(self.index);
        let mut budget = ROUTE_BATCH;
        let mut more = false;
        for key in std::mem::take(&mut self.replaying) {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            let epoch = engine.bus.epoch();
            match replay_into(conn, log, (self.cursor, epoch), &mut budget, counters) {
                Replayed::CaughtUp => {
                    let next = conn.replay_next.take().map_or(self.cursor, NonZeroU64::get);
                    let Some(filter) = conn.filter() else {
                        continue;
                    };
                    self.router.add(key, filter);
                    conn.routed = true;
                    conn.last_routed = next - 1;
                }
                Replayed::Full => self.replaying.push(key),
                Replayed::Budget => {
                    more = true;
                    self.replaying.push(key);
                }
                Replayed::Over => conn.replay_next = None,
            }
            self.mark_dirty(key);
        }
        more
    }

    /// Whether a replaying connection has room for more (the loop must not sleep).
    fn replay_has_room(&self) -> bool {
        self.replaying.iter().any(|&k| {
            self.conns.get(k).is_some_and(|c| {
                let acks_full = matches!(&c.phase, Phase::Ws(ws) if ws.acks_full());
                c.outbox.has_room() && !acks_full
            })
        })
    }

    fn tick(&mut self, now: Instant) {
        if self.latency.len() != self.latency_published {
            self.latency_published = self.latency.len();
            self.engine
                .counters
                .thread(self.index)
                .latency
                .store(Some(Arc::new(self.latency.clone())));
        }
        if self.accept_again {
            self.accept();
        }
        let engine = Arc::clone(&self.engine);
        let mut expired = Vec::new();
        let mut ws_steps = Vec::new();
        // Connections with new output from their timers (an HTTP timeout's answer, an SSE
        // heartbeat).
        let mut to_flush = Vec::new();
        let stall = engine.config.write_stall_timeout;
        let mut stalled = Vec::new();
        let mut retry = Vec::new();
        for (key, conn) in self.conns.iter_mut() {
            if conn
                .stalled_since
                .is_some_and(|t| now.saturating_duration_since(t.instant()) >= stall)
            {
                stalled.push(key);
                continue;
            }
            if conn.failed_writes > 0 {
                retry.push(key);
            }
            if let Some(deadline) = conn.finish_by {
                if now >= deadline.instant() {
                    expired.push(key);
                }
                continue;
            }
            match &mut conn.phase {
                Phase::Http(http) => {
                    if let HttpStep::Close = http.on_tick(now, &engine, &mut conn.outbox) {
                        conn.finish_by = Some(Moment::at(now + engine.config.close_timeout));
                        to_flush.push(key);
                    }
                }
                Phase::Ws(ws) => ws_steps.push((key, ws.on_tick(now, &engine, &mut conn.outbox))),
                Phase::Sse(s) => {
                    let every = engine.config.ping_interval;
                    s.on_tick(
                        now,
                        conn.last_write.map(Moment::instant),
                        every,
                        &mut conn.outbox,
                    );
                    if !conn.outbox.is_empty() {
                        to_flush.push(key);
                    }
                }
            }
        }
        for (key, step) in ws_steps {
            self.after_ws(key, step, now);
            self.mark_dirty(key);
        }
        for key in to_flush {
            self.mark_dirty(key);
        }
        for key in expired {
            self.remove(key);
        }
        for key in stalled {
            // The socket takes nothing: no close frame could get through either.
            ThreadCounters::add(&engine.counters.thread(self.index).evicted_write_stall, 1);
            self.remove(key);
        }
        for key in retry {
            self.mark_dirty(key);
        }
        self.flush_dirty();
    }

    fn remove(&mut self, key: usize) {
        if !self.conns.contains(key) {
            return;
        }
        let mut conn = self.conns.remove(key);
        let _ = self.poll.registry().deregister(&mut conn.stream);
        let counters = self.engine.counters.thread(self.index);
        if conn.routed {
            if let Some(filter) = conn.filter() {
                self.router.remove(key, filter);
            }
        }
        let queued = conn.outbox.queued_events() as u64;
        match &mut conn.phase {
            Phase::Ws(ws) => {
                counters.ws_clients.fetch_sub(1, Ordering::Relaxed);
                counters.drop_events(DropReason::Closed, ws.take_discarded() + queued);
                ws.dead_letter_unacked(&self.engine, "connection closed before acknowledgement");
                let (redelivered, dead_lettered) = ws.take_ack_counts();
                ThreadCounters::add(&counters.redelivered, redelivered);
                ThreadCounters::add(&counters.unacked_dead_lettered, dead_lettered);
            }
            Phase::Sse(_) => {
                counters.sse_clients.fetch_sub(1, Ordering::Relaxed);
                counters.drop_events(DropReason::Closed, queued);
            }
            Phase::Http(_) => {}
        }
        counters.connections.fetch_sub(1, Ordering::Relaxed);
        self.engine.close_connection();
        self.dirty.retain(|k| *k != key);
        self.read_again.retain(|k| *k != key);
        self.asks.retain(|a| a.key != key);
        self.replaying.retain(|k| *k != key);
    }

    /// Graceful shutdown: stop accepting and replaying; route what was published before
    /// now (nothing later); let what is queued reach the clients for up to
    /// `--drain-timeout` (or until [`Engine::cut_drain_short`]); then close every
    /// connection (WebSocket: a `closing` notice and 1001, both with the last id
    /// delivered), give the close frames [`SHUTDOWN_CLOSE`] to go out, and stop.
    fn shutdown(mut self) {
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        // A turn may have routed only part of a burst before it saw the shutdown: the rest
        // was accepted, so it is delivered too. Stops at a publisher still installing.
        let published = self.engine.bus.log().next_seq();
        while self.cursor < published && self.route() {}
        let start = Instant::now();
        self.drain_until(start + self.engine.config.drain_timeout, true);
        let now = Instant::now();
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for &key in &keys {
            self.end_sse(key, "server shutting down", now);
            let conn = &mut self.conns[key];
            if let Phase::Ws(ws) = &mut conn.phase {
                ws.shut_down(now, &mut conn.outbox);
            }
            conn.finish_by = Some(Moment::at(now));
            self.after_ws(key, WsStep::Done, now);
            self.mark_dirty(key);
        }
        self.flush_dirty();
        self.drain_until(now + SHUTDOWN_CLOSE, false);
        for key in keys {
            self.remove(key);
        }
    }

    /// Writes queued output until every outbox is empty or `deadline` passes (or, if
    /// `cuttable`, the drain is cut short); reads nothing (input is not acted on during
    /// shutdown), and drops peers that went away.
    fn drain_until(&mut self, deadline: Instant, cuttable: bool) {
        let mut events = Events::with_capacity(256);
        loop {
            let keys: Vec<usize> = self
                .conns
                .iter()
                .filter(|(_, c)| !c.outbox.is_empty())
                .map(|(k, _)| k)
                .collect();
            let now = Instant::now();
            let at = Moment::at(now);
            for &key in &keys {
                self.flush(key, now, at);
            }
            let waiting = self.conns.iter().any(|(_, c)| !c.outbox.is_empty());
            let left = deadline.saturating_duration_since(Instant::now());
            if !waiting || left.is_zero() || (cuttable && self.engine.is_drain_cut()) {
                return;
            }
            let _ = self
                .poll
                .poll(&mut events, Some(left.min(Duration::from_millis(20))));
        }
    }
}

/// Counts occurrences of something worth a log line, and says when the line is due: at
/// the first, then at most once per interval, with the count since the last line.
#[derive(Default)]
struct Throttle {
    unlogged: u64,
    logged_at: Option<Instant>,
}

impl Throttle {
    /// Adds `n`; returns the count to report if a line is due at `now`.
    fn due(&mut self, n: u64, now: Instant, every: Duration) -> Option<u64> {
        self.unlogged += n;
        if self
            .logged_at
            .is_some_and(|t| now.duration_since(t) < every)
        {
            return None;
        }
        self.logged_at = Some(now);
        Some(std::mem::take(&mut self.unlogged))
    }
}

/// Answers a connection the server will not keep, then drops it. The answer is followed
/// by a FIN at once (`shutdown`), and what the client sent is read (up to 64 KiB): closing
/// a socket with unread input sends a reset, and a client that gets the reset before the
/// FIN may lose the answer.
fn refuse(stream: &mut mio::net::TcpStream, answer: &[u8]) {
    let _ = io::Write::write(stream, answer);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut sink = [0u8; 4096];
    for _ in 0..16 {
        match io::Read::read(stream, &mut sink) {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
}

/// Records `ws.write` for a write that completed a sampled event. The trace id comes from
/// the log (the event was published moments ago; if the log already lapped it, no span).
#[cold]
fn write_span(engine: &Engine, conn: &Connection, p: &Progress, start: Instant) {
    let Read::Ready(trace_id) = engine.bus.log().read(p.sampled, |ev| ev.trace_id()) else {
        return;
    };
    let connection_id = conn.subscriber_id();
    engine.bus.tracer().record(
        SpanName::WsWrite,
        trace_id,
        (random_span_id(), publish_span_id(p.sampled)),
        start,
        attrs([
            ("connection_id", Attr::from(connection_id)),
            ("event_id", Attr::from(p.sampled)),
            ("events", Attr::from(p.events)),
            ("bytes", Attr::from(p.bytes)),
        ]),
    );
}

/// Replays from `conn.replay_next` towards `live_from` (the next id routed live), pushing
/// the events its filter matches while its queue has room. Events trimmed meanwhile become
/// a `gap` notice. Replayed events carry no stamp: their age is not delivery latency.
fn replay_into(
    conn: &mut Connection,
    log: &crate::log::EventLog<Published>,
    (live_from, epoch): (u64, u64),
    budget: &mut usize,
    counters: &ThreadCounters,
) -> Replayed {
    let (filter, framing, mut acks) = match &mut conn.phase {
        Phase::Ws(ws) if ws.is_open() => {
            let (filter, acks) = ws.filter_and_acks();
            (filter, Framing::WebSocket, acks)
        }
        Phase::Sse(s) if s.is_open() => (s.filter(), Framing::Sse, None),
        _ => return Replayed::Over,
    };
    let now = Instant::now();
    let Some(mut next) = conn.replay_next.map(NonZeroU64::get) else {
        return Replayed::Over;
    };
    let mut replayed = 0;
    let outcome = loop {
        if next >= live_from {
            break Replayed::CaughtUp;
        }
        if !conn.outbox.has_room() || acks.as_ref().is_some_and(|a| a.is_full()) {
            break Replayed::Full;
        }
        if *budget == 0 {
            break Replayed::Budget;
        }
        *budget -= 1;
        let found = log.read(next, |ev| {
            filter.matches(ev.event_type()).then(|| {
                let frame = match framing {
                    Framing::WebSocket => ev.frame().clone(),
                    Framing::Sse => ev.sse_record(epoch),
                };
                let tracked = acks
                    .as_ref()
                    .is_some_and(|a| a.wants(ev.priority()))
                    .then(|| ev.encoded());
                (frame, ev.priority(), tracked)
            })
        });
        match found {
            Read::Ready(Some((frame, priority, tracked))) => {
                if conn
                    .outbox
                    .push_replayed(frame, next, priority, Stamp::default())
                    .is_err()
                {
                    break Replayed::Full;
                }
                if let (Some(a), Some(ev)) = (acks.as_mut(), tracked) {
                    a.track(ev, now);
                }
                replayed += 1;
                next += 1;
            }
            Read::Ready(None) => next += 1,
            Read::Lapped { resume_at } => {
                let to = resume_at.min(live_from) - 1;
                conn.outbox.push_notice(message::gap(framing, next, to));
                ThreadCounters::add(&counters.gap_notices, 1);
                next = to + 1;
            }
            // Everything below `live_from` was installed (the live cursor passed it).
            Read::Pending => break Replayed::Full,
        }
    };
    conn.replay_next = NonZeroU64::new(next);
    ThreadCounters::add(&counters.replayed, replayed);
    outcome
}

/// Pushes one event into every matching connection's outbox. `overflow` lists the
/// connections whose `disconnect` policy overflowed, and those whose `catch-up` queue was
/// full (they replay from this event on).
fn route_event(
    ev: &Published,
    router: &Router,
    conns: &mut Slab<Connection>,
    dirty: &mut Vec<usize>,
    overflow: (&mut Vec<usize>, &mut Vec<usize>),
    counters: &ThreadCounters,
    at: (Instant, u64),
) {
    let mut to = Routing {
        conns,
        dirty,
        overflow,
        counters,
        at,
        lost: 0,
    };
    router.for_each_match(ev.event_type(), |key| to.push(ev, key));
    counters.drop_events(DropReason::QueueFull, to.lost);
}

/// Whether connection `conn` takes the [run](crate::run) that starts at event
/// `first_id` whole: a live WebSocket subscriber under `drop-newest`, not tracking acks,
/// whose filter is one pattern (so no other router list holds it).
fn takes_runs(conn: &Connection, first_id: u64) -> bool {
    conn.replay_next.is_none()
        && conn.last_routed < first_id
        && conn.outbox.policy() == Policy::DropNewest
        && matches!(&conn.phase, Phase::Ws(ws) if !ws.tracks_acks() && ws.filter().patterns().len() == 1)
}

/// Routing one event to connections, one at a time: what [`route_event`] and a run's
/// other subscribers share.
struct Routing<'a> {
    conns: &'a mut Slab<Connection>,
    dirty: &'a mut Vec<usize>,
    overflow: (&'a mut Vec<usize>, &'a mut Vec<usize>),
    counters: &'a ThreadCounters,
    at: (Instant, u64),
    /// Events lost to full queues so far.
    lost: u64,
}

impl Routing<'_> {
    fn push(&mut self, ev: &Published, key: usize) {
        let (now, epoch) = self.at;
        let (overflowed, fell_behind) = (&mut *self.overflow.0, &mut *self.overflow.1);
        let counters = self.counters;
        let id = ev.id();
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.last_routed >= id || conn.replay_next.is_some() {
            return;
        }
        // A full drop-newest queue loses the event before its frame is cloned. Not with
        // ack tracking, which redelivers what was dropped, nor SSE, whose records differ
        // in size.
        let untracked_ws = matches!(&conn.phase, Phase::Ws(ws) if !ws.tracks_acks());
        if untracked_ws && conn.outbox.drop_newest_if_full(id, ev.frame_len()) {
            conn.last_routed = id;
            self.lost += 1;
            return;
        }
        let frame = match &mut conn.phase {
            Phase::Sse(_) => ev.sse_record(epoch),
            Phase::Ws(ws) => {
                if let Some(acks) = ws.acks_mut().filter(|a| a.wants(ev.priority())) {
                    if acks.is_full() {
                        // Flow control: no more until acks come; then it catches up.
                        conn.replay_next = NonZeroU64::new(id);
                        fell_behind.push(key);
                        return;
                    }
                    acks.track(ev.encoded(), now);
                }
                ev.frame().clone()
            }
            Phase::Http(_) => return,
        };
        if conn.outbox.policy() == Policy::CatchUp && !conn.outbox.fits_event(frame.len()) {
            // Nothing is dropped: it reads the log from here at its own pace.
            conn.replay_next = NonZeroU64::new(id);
            fell_behind.push(key);
            return;
        }
        conn.last_routed = id;
        let push = conn
            .outbox
            .push_event_at(frame, id, ev.priority(), ev.stamp());
        if push.lost() > 0 {
            self.lost += push.lost();
            for (counter, n) in counters
                .dropped_by_lane
                .iter()
                .zip(conn.outbox.take_lost_by_lane())
            {
                ThreadCounters::add(counter, n);
            }
        }
        match push {
            Push::Queued | Push::Evicted { .. } => queued(conn, key, self.dirty, now),
            Push::Overflowed => overflowed.push(key),
            Push::Dropped | Push::Closing => {}
        }
    }
}

/// After events were queued for `conn`: a `backlog` notice if one is due, and a flush.
fn queued(conn: &mut Connection, key: usize, dirty: &mut Vec<usize>, now: Instant) {
    if let Some(queued) = conn.outbox.check_backlog(now) {
        // Best effort: a full control lane means the client reads nothing anyway.
        let notice = message::backlog(conn.framing(), queued);
        let _ = conn.outbox.push_control(notice);
    }
    if !conn.dirty {
        conn.dirty = true;
        dirty.push(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_throttle_reports_the_first_then_the_count_once_per_interval() {
        let mut t = Throttle::default();
        let start = Instant::now();
        let every = Duration::from_secs(10);
        assert_eq!(t.due(1, start, every), Some(1));
        assert_eq!(t.due(2, start + Duration::from_secs(3), every), None);
        assert_eq!(t.due(4, start + Duration::from_secs(9), every), None);
        assert_eq!(t.due(1, start + every, every), Some(7));
        assert_eq!(t.due(5, start + every, every), None);
        assert_eq!(t.due(0, start + 2 * every, every), Some(5));
    }
}
