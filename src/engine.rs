//! `Engine`: the state every thread shares — configuration, the bus, the counters — and the
//! answers built from it (`/health`).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use serde_json::{json, Value};

use crate::bus::Bus;
use crate::config::Config;
use crate::metrics::{prometheus, Counters, HttpCounters, Snapshot, Stats};

/// Percentiles of a latency histogram (µs) in ms, and its count; `null`s when empty.
pub fn latency_json(h: &hdrhistogram::Histogram<u64>) -> Value {
    match crate::metrics::latency::percentiles_ms(h) {
        Some((p50, p95, p99, max)) => {
            json!({"p50": p50, "p95": p95, "p99": p99, "max": max, "count": h.len()})
        }
        None => json!({"p50": null, "p95": null, "p99": null, "max": null, "count": 0}),
    }
}

/// Shared engine state. One per [`crate::Bridge`]; I/O threads hold it in an `Arc`.
pub struct Engine {
    /// The validated configuration.
    pub config: Config,
    /// The publish path.
    pub bus: Bus,
    /// Counters, one set per I/O thread.
    pub counters: Counters,
    /// The flusher's per-second samples.
    pub stats: Stats,
    /// HTTP responses by status.
    pub http: HttpCounters,
    /// The newest exported spans (`GET /spans/recent`).
    pub spans: crate::trace::Recent,
    /// The I/O threads' connection reports (`GET /connections`).
    pub census: crate::census::Census,
    started: Instant,
    open_connections: AtomicUsize,
    next_connection_id: AtomicU64,
    shutting_down: AtomicBool,
    drain_cut: AtomicBool,
}

impl Engine {
    /// Engine state for `config`, publishing through `bus`.
    pub fn new(config: Config, bus: Bus) -> Self {
        let counters = Counters::new(config.io_threads);
        let census = crate::census::Census::new(config.io_threads);
        Self {
            config,
            bus,
            counters,
            stats: Stats::default(),
            http: HttpCounters::default(),
            spans: crate::trace::Recent::default(),
            census,
            started: Instant::now(),
            open_connections: AtomicUsize::new(0),
            next_connection_id: AtomicU64::new(1),
            shutting_down: AtomicBool::new(false),
            drain_cut: AtomicBool::new(false),
        }
    }

    /// Claims a connection slot; `false` when `max_connections` are open.
    pub fn try_open_connection(&self) -> bool {
        let prev = self.open_connections.fetch_add(1, Ordering::AcqRel);
        if prev >= self.config.max_connections {
            self.open_connections.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Releases a slot claimed by [`try_open_connection`](Self::try_open_connection).
    pub fn close_connection(&self) {
        self.open_connections.fetch_sub(1, Ordering::AcqRel);
    }

    /// A process-unique connection id, for notices and (later) the admin page.
    pub fn next_connection_id(&self) -> u64 {
        self.next_connection_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Asks the I/O threads to close every connection and stop.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }

    /// Whether shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// Ends a shutdown's drain (`--drain-timeout`) now: the I/O threads stop waiting for
    /// queued events to go out and close every connection as they would at the timeout
    /// (1001 and the last id delivered). Called from another thread while
    /// [`Bridge::shutdown`](crate::Bridge::shutdown) runs, e.g. on a second signal.
    pub fn cut_drain_short(&self) {
        self.drain_cut.store(true, Ordering::Release);
    }

    /// Whether [`cut_drain_short`](Self::cut_drain_short) was called.
    pub fn is_drain_cut(&self) -> bool {
        self.drain_cut.load(Ordering::Acquire)
    }

    /// The counters, summed.
    pub fn snapshot(&self) -> Snapshot {
        self.counters.snapshot(self.bus.last_id())
    }

    /// The `GET /metrics` body (Prometheus text format).
    pub fn metrics_text(&self) -> String {
        prometheus::render(&prometheus::Report {
            counters: &self.snapshot(),
            dlq: &self.bus.dlq().summary(),
            subscribers: &self.bus.subscribers(),
            subscribers_lost: self.bus.subscribers_lost(),
            latency: &self.counters.latency(),
            uptime_s: self.started.elapsed().as_secs_f64(),
            http: &self.http.snapshot(),
            spans: (
                self.bus.tracer().recorded(),
                self.bus.tracer().dropped(),
                self.bus.tracer().export_failed(),
            ),
        })
    }

    /// The `GET /stats` body: totals now, rates over the last second, and the last
    /// minute's per-second series.
    pub fn stats_json(&self) -> Value {
        let s = self.snapshot();
        let sampled = self.stats.sampled();
        let (p, d, x) = sampled.rates;
        json!({
            "uptime_s": self.started.elapsed().as_secs_f64(),
            "totals": {
                "published": s.published, "delivered": s.delivered, "dropped": s.dropped,
                "dropped_by_lane": s.dropped_by_lane,
                "dropped_by_reason": s.dropped_by_reason, "evicted": s.evicted,
                "bytes_out": s.bytes_out,
                "replayed": s.replayed, "resumes": s.resumes, "gap_notices": s.gap_notices,
                "redelivered": s.redelivered, "unacked_dead_lettered": s.unacked_dead_lettered,
                "http_responses": self.http.snapshot()
                    .into_iter()
                    .collect::<std::collections::BTreeMap<_, _>>(),
                "ws_connected_clients": s.ws_connected_clients,
                "sse_connected_clients": s.sse_connected_clients, "connections": s.connections,
                "dlq_size": self.bus.dlq().depth(),
            },
            "rates_per_s": {"published": p, "delivered": d, "dropped": x},
            "delivery_latency_ms": latency_json(&self.counters.latency()),
            "series": sampled.series,
        })
    }

    /// The `/health` body.
    pub fn health(&self) -> Value {
        let s = self.snapshot();
        json!({
            "status": if self.is_shutting_down() { "shutting_down" } else { "ok" },
            "uptime_s": self.started.elapsed().as_secs_f64(),
            "connections": s.connections,
            "ws_connected_clients": s.ws_connected_clients,
            "sse_connected_clients": s.sse_connected_clients,
            "last_event_id": self.bus.last_id(),
            "epoch": self.bus.epoch(),
            "io_threads": self.config.io_threads,
            "events": {
                "published": s.published, "delivered": s.delivered, "dropped": s.dropped,
                "dropped_by_lane": s.dropped_by_lane,
            },
            "evicted": s.evicted,
            "dlq": crate::http::dlq::summary_json(&self.bus.dlq().summary()),
            "subscribers": self.bus.subscribers().iter().map(|s| json!({
                "name": s.name, "types": s.types, "delivered": s.delivered, "failed": s.failed,
                "timed_out": s.timed_out, "overflowed": s.overflowed, "backlog": s.backlog,
            })).collect::<Vec<_>>(),
            "subscribers_lost": self.bus.subscribers_lost(),
        })
    }
}
