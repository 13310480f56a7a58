//! The only module that touches sockets and mio.
//!
//! [`start`] binds one listening socket per I/O thread (same port, SO_REUSEPORT), creates
//! each thread's `Poll` and `Waker`, builds the [`Bus`] that wakes them, and spawns the
//! threads, each pinned to a core and running an [`event_loop::EventLoop`].

mod connection;
mod event_loop;
mod listener;
mod router;

pub use router::Router;

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use mio::{Poll, Waker};

use crate::bus::Bus;
use crate::config::Config;
use crate::engine::Engine;
use crate::wake::{Sleeper, Wake};
use crate::StartError;

struct MioWaker(Waker);

impl Wake for MioWaker {
    fn wake(&self) {
        // Fails only if the eventfd is gone, i.e. the thread has exited: nothing to wake.
        let _ = self.0.wake();
    }
}

/// Running I/O threads.
pub(crate) struct Threads {
    pub engine: Arc<Engine>,
    pub handles: Vec<JoinHandle<()>>,
    /// The metrics flusher (see [`crate::metrics::flusher`]).
    pub flusher: JoinHandle<()>,
    /// The span exporter (see [`crate::trace::export`]).
    pub tracer: JoinHandle<()>,
    /// The log's trimmer (see [`crate::retention`]).
    pub retention: JoinHandle<()>,
    pub local_addr: SocketAddr,
}

/// Binds, spawns and pins the I/O threads for `config`.
pub(crate) fn start(config: Config) -> Result<Threads, StartError> {
    config.validate()?;
    let n = config.io_threads;
    let addr = config.addr();
    let (listeners, local_addr) =
        listener::bind_all(addr, n).map_err(|source| StartError::Bind { addr, source })?;
    let mut polls = Vec::with_capacity(n);
    let mut sleepers = Vec::with_capacity(n);
    for _ in 0..n {
        let poll = Poll::new().map_err(StartError::Poll)?;
        let waker = Waker::new(poll.registry(), event_loop::WAKER).map_err(StartError::Poll)?;
        sleepers.push(Sleeper::new(Box::new(MioWaker(waker))));
        polls.push(poll);
    }
    let span_sink = crate::trace::export::Sink::open(&config.trace_exporter)?;
    let tracer = Arc::new(crate::trace::Tracer::new(
        config.trace_sample,
        config.trace_buffer,
    ));
    let bus = Bus::with_sinks(
        config.log_capacity(),
        config.max_event_bytes,
        sleepers,
        config.sink_settings(),
        config.dlq_limits(),
        tracer,
    );
    let pin = config.pin_threads;
    let engine = Arc::new(Engine::new(config, bus));
    {
        let weak = Arc::downgrade(&engine);
        engine.bus.set_ws_subscriber_count(move || {
            weak.upgrade()
                .map_or(0, |e| e.counters.ws_connected_clients())
        });
    }
    let cores = if pin {
        core_affinity::get_core_ids().unwrap_or_default()
    } else {
        Vec::new()
    };
    let mut handles = Vec::with_capacity(n);
    for (i, (poll, listener)) in polls.into_iter().zip(listeners).enumerate() {
        let lp = event_loop::EventLoop::new(i, Arc::clone(&engine), poll, listener)
            .map_err(StartError::Poll)?;
        let core = (!cores.is_empty()).then(|| cores[i % cores.len()]);
        let handle = std::thread::Builder::new()
            .name(format!("firehose-io-{i}"))
            .spawn(move || {
                if let Some(core) = core {
                    core_affinity::set_for_current(core);
                }
                lp.run();
            })
            .map_err(StartError::Spawn)?;
        handles.push(handle);
    }
    let flusher = {
        let engine = Arc::clone(&engine);
        std::thread::Builder::new()
            .name("firehose-metrics".into())
            .spawn(move || crate::metrics::flusher::run(&engine))
            .map_err(StartError::Spawn)?
    };
    let tracer = {
        let engine = Arc::clone(&engine);
        std::thread::Builder::new()
            .name("firehose-trace".into())
            .spawn(move || {
                crate::trace::export::run(engine.bus.tracer(), &engine.spans, span_sink, || {
                    engine.is_shutting_down()
                })
            })
            .map_err(StartError::Spawn)?
    };
    let retention = {
        let engine = Arc::clone(&engine);
        let limits = engine.config.retention();
        std::thread::Builder::new()
            .name("firehose-retention".into())
            .spawn(move || {
                crate::retention::run(engine.bus.log(), limits, || engine.is_shutting_down())
            })
            .map_err(StartError::Spawn)?
    };
    Ok(Threads {
        engine,
        handles,
        flusher,
        tracer,
        retention,
        local_addr,
    })
}

/// Wakes thread `i` whether or not it announced it was idle (for shutdown).
pub(crate) fn wake_thread(bus: &Bus, i: usize) {
    bus.sleeper(i).wake_now();
}

/// Raises the open-files soft limit to the hard limit; returns (soft, hard) after.
pub fn raise_fd_limit() -> (u64, u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read or write the rlimit struct passed by pointer,
    // which lives on this stack frame for the duration of each call.
    #[allow(unsafe_code)]
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return (0, 0);
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    (lim.rlim_cur, lim.rlim_max)
}
