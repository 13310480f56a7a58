//! # firehose
//!
//! A single-node, lock-free event fan-out engine: publishers push events, firehose
//! delivers them to many WebSocket subscribers, and a slow or hostile client never slows
//! the publisher or anyone else.
//!
//! ```text
//!  publishers                         ┌──────────────────────────────────────────┐
//!   in-process Bus::publish ───┐      │ EventLog (log.rs): lock-free ring,       │
//!   POST /publish ─────────────┼────► │ sequence-numbered; each event encoded    │
//!   WS {"op":"publish"} ───────┘      │ ONCE, by its first reader, into a frame  │
//!          (bus.rs)                   └──────────────┬───────────────────────────┘
//!                      one wake per burst (wake.rs)  │ each thread reads at its own cursor
//!              ┌─────────────────────────────────────┴─┐
//!              │ I/O thread k (io/event_loop.rs, pinned,│   ... one per core
//!              │ own mio Poll + own SO_REUSEPORT socket)│
//!              │  route by type filter (io/router.rs),  │
//!              │  under load in runs of frames (run.rs) │
//!              │  → per-connection Outbox (outbox.rs)   │
//!              │  → sendmsg a batch (io/connection.rs)  │
//!              └────────────────────────────────────────┘
//! ```
//!
//! ## Layout
//!
//! * [`bus`] — the one publish path: validate, stamp, append, wake (the event is encoded
//!   once, by the first thread that reads it).
//! * [`event`] — the event model, its one-time encoding, type filters, publisher JSON.
//! * [`log`] — [`EventLog`](log::EventLog), the lock-free ring every event passes through;
//!   [`retention`] trims it to the retention bounds on its own thread; [`resume`] decides
//!   where a reconnecting subscriber starts (replay, gap, or a new epoch).
//! * [`wake`] — the idle-flag protocol that makes a burst cost one wake-up.
//! * [`outbox`] — a connection's bounded queue of frames (events and bytes), with drop
//!   accounting, backlog marks and priority lanes; [`run`] lets a burst of one type be
//!   queued as one entry per subscriber.
//! * [`policy`] — what a full queue does: drop-newest, drop-oldest, priority, disconnect,
//!   catch-up.
//! * [`acks`] — acknowledged delivery: redelivery with backoff, then the dead-letter queue.
//! * [`http`], [`ws`] — the protocols as state machines over bytes (no sockets, no clock).
//! * `io` — sockets and mio: listeners, connections, the event loop (private).
//! * [`engine`], [`config`], [`metrics`] — shared state, limits, counters.
//! * [`census`] — how `GET /connections` gathers each I/O thread's connections on request.
//! * [`trace`] — spans: per-trace sampling, the bounded span buffer, the exporter thread.
//! * [`sink`] — in-process subscribers: a worker each, bounded backlog, invoke timeout.
//! * [`dlq`] on [`seglog`] — the dead-letter queue, a lock-free segmented log, and its
//!   HTTP endpoints ([`http::dlq`]).
//! * [`bench`](mod@bench) — the end-to-end load generator behind `firehose bench`.
//! * [`stress`] — the reproducible burst scenario behind `firehose stress`.
//!
//! ## Invariants
//!
//! * Publishing never blocks, takes no lock, and costs the same whatever the number of
//!   subscribers: it touches the log and one idle flag per I/O thread, never a connection.
//! * An event is encoded once, by the first thread that needs its bytes; subscribers share
//!   them (no per-client copy).
//! * Only `io/` touches sockets; everything that parses peer bytes is a pure function with a
//!   fuzz target, and nothing a peer sends can panic the server.
//! * Every queue is bounded: memory is a function of the configuration, not of the load.
//!   Nothing is dropped silently: drops are counted and told to the client in-band.
//! * A slow client costs only itself: its queue overflows by its policy, and a socket that
//!   takes nothing is evicted; other clients and the publisher are not slowed.

#![warn(missing_docs)]

pub mod acks;
pub mod bench;
pub mod bus;
pub mod census;
pub mod cli;
pub mod clock;
pub mod config;
pub mod dlq;
pub mod engine;
pub mod event;
pub mod http;
mod io;
pub mod log;
pub mod metrics;
pub mod outbox;
pub mod policy;
pub mod resume;
pub mod retention;
pub mod run;
pub mod seglog;
pub mod sink;
pub mod stress;
mod sync;
pub mod trace;
pub mod wake;
pub mod ws;

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

pub use bus::Bus;
pub use config::{Config, ConfigError};
pub use engine::Engine;
pub use event::{Event, EventError, Filter, Priority, TraceId};
pub use io::{raise_fd_limit, Router};

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A setting cannot work.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source} (is another process using the port? try --port)")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The OS refused an event queue.
    #[error("cannot create an event loop: {0} (check the open-files limit, `ulimit -n`)")]
    Poll(std::io::Error),
    /// The span exporter cannot start (`--trace-exporter`).
    #[error(transparent)]
    Trace(#[from] crate::trace::export::ExportError),
    /// The OS refused a thread.
    #[error("cannot start an I/O thread: {0}")]
    Spawn(std::io::Error),
}

/// A running engine: the handle embedders keep.
///
/// ```no_run
/// use firehose::{Bridge, Event};
/// let bridge = Bridge::builder().port(0).start()?;
/// let id = bridge.bus().publish(Event::new("workflow.started", "example"))?;
/// println!("published {id} on ws://{}/ws/events", bridge.local_addr());
/// bridge.shutdown();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Bridge {
    engine: Arc<Engine>,
    handles: Vec<JoinHandle<()>>,
    flusher: Option<JoinHandle<()>>,
    tracer: Option<JoinHandle<()>>,
    retention: Option<JoinHandle<()>>,
    local_addr: SocketAddr,
}

/// Configures a [`Bridge`]; every setting defaults as in [`Config::default`].
#[derive(Clone, Debug, Default)]
pub struct Builder {
    config: Config,
}

impl Builder {
    /// Replaces the whole configuration.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Address to listen on.
    pub fn host(mut self, host: std::net::IpAddr) -> Self {
        self.config.host = host;
        self
    }

    /// Port (0 = any free port).
    pub fn port(mut self, port: u16) -> Self {
        self.config.port = port;
        self
    }

    /// Number of I/O threads.
    pub fn io_threads(mut self, n: usize) -> Self {
        self.config.io_threads = n;
        self
    }

    /// Per-connection queue capacity, in events.
    pub fn queue_capacity(mut self, n: usize) -> Self {
        self.config.queue_capacity = n;
        self
    }

    /// Events the log retains.
    pub fn retention_events(mut self, n: usize) -> Self {
        self.config.retention_events = n;
        self
    }

    /// Binds the listeners and starts the I/O threads.
    pub fn start(self) -> Result<Bridge, StartError> {
        let threads = io::start(self.config)?;
        Ok(Bridge {
            engine: threads.engine,
            handles: threads.handles,
            flusher: Some(threads.flusher),
            tracer: Some(threads.tracer),
            retention: Some(threads.retention),
            local_addr: threads.local_addr,
        })
    }
}

impl Bridge {
    /// A builder with the default configuration.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// The publish handle (cheap to clone, usable from any thread).
    pub fn bus(&self) -> &Bus {
        &self.engine.bus
    }

    /// The shared engine state (configuration, counters); clone the `Arc` to reach it
    /// from another thread, e.g. to [cut a drain short](Engine::cut_drain_short).
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Closes every connection (WebSocket clients get close code 1001) and stops the threads.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if self.handles.is_empty() {
            return;
        }
        self.engine.begin_shutdown();
        for i in 0..self.handles.len() {
            io::wake_thread(&self.engine.bus, i);
        }
        // While the I/O threads close their connections.
        let deadline = std::time::Instant::now() + self.engine.config.close_timeout;
        self.engine.bus.close_subscribers(deadline);
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
        for t in [
            self.flusher.take(),
            self.tracer.take(),
            self.retention.take(),
        ]
        .into_iter()
        .flatten()
        {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.stop();
    }
}
