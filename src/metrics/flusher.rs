//! The one metrics thread: once a second it samples the counters into the last minute's
//! per-second series (`GET /stats`, the admin page's sparkline), and every
//! `--metrics-interval` it prints a line when the console exporter is on. The hot path
//! only increments its own thread's relaxed counters; everything else happens here.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use serde::Serialize;

use super::Snapshot;
use crate::engine::Engine;

/// Seconds of history the series keep.
pub const SERIES_SECONDS: usize = 60;

/// Where metrics go besides `GET /metrics` and `GET /stats` (always served).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Exporter {
    /// Nothing else.
    #[default]
    None,
    /// One compact line per interval on stderr.
    Console,
}

/// The last minute, one sample per second, oldest first.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Series {
    /// Events published in each second.
    pub published: Vec<u64>,
    /// Event frames delivered in each second.
    pub delivered: Vec<u64>,
    /// Events dropped in each second.
    pub dropped: Vec<u64>,
}

/// What the flusher publishes for readers.
#[derive(Clone, Debug, Default)]
pub struct Sampled {
    /// Per-second series.
    pub series: Series,
    /// Rates over the last second: (published, delivered, dropped) per second.
    pub rates: (f64, f64, f64),
}

/// The flusher's output, read lock-free by `/stats`.
#[derive(Default)]
pub struct Stats {
    latest: ArcSwap<Sampled>,
}

impl Stats {
    /// The latest sample.
    pub fn sampled(&self) -> Arc<Sampled> {
        self.latest.load_full()
    }
}

struct History {
    last: Snapshot,
    last_at: Instant,
    seconds: VecDeque<(u64, u64, u64)>,
}

impl History {
    fn sample(&mut self, now: Snapshot, at: Instant) -> Sampled {
        let d = (
            now.published.saturating_sub(self.last.published),
            now.delivered.saturating_sub(self.last.delivered),
            now.dropped.saturating_sub(self.last.dropped),
        );
        let secs = at.duration_since(self.last_at).as_secs_f64().max(1e-9);
        self.last = now;
        self.last_at = at;
        if self.seconds.len() == SERIES_SECONDS {
            self.seconds.pop_front();
        }
        self.seconds.push_back(d);
        Sampled {
            series: Series {
                published: self.seconds.iter().map(|s| s.0).collect(),
                delivered: self.seconds.iter().map(|s| s.1).collect(),
                dropped: self.seconds.iter().map(|s| s.2).collect(),
            },
            rates: (d.0 as f64 / secs, d.1 as f64 / secs, d.2 as f64 / secs),
        }
    }
}

/// Runs until the engine shuts down (woken by `Thread::unpark`).
pub fn run(engine: &Engine) {
    let start = Instant::now();
    let mut history = History {
        // Zero, not a snapshot: this thread may start after the first events (a busy
        // machine), and the series must still add up to the totals.
        last: Snapshot::default(),
        last_at: start,
        seconds: VecDeque::with_capacity(SERIES_SECONDS),
    };
    let interval = engine.config.metrics_interval;
    let mut next_sample = start + Duration::from_secs(1);
    let mut next_print = start + interval;
    let mut printed = (history.last, start);
    while !engine.is_shutting_down() {
        let now = Instant::now();
        let wake_at = next_sample.min(next_print);
        if now < wake_at {
            std::thread::park_timeout(wake_at - now);
            continue;
        }
        if now >= next_sample {
            next_sample += Duration::from_secs(1);
            let sampled = history.sample(engine.snapshot(), now);
            engine.stats.latest.store(Arc::new(sampled));
        }
        if now >= next_print {
            next_print += interval;
            if engine.config.metrics_exporter == Exporter::Console {
                let s = engine.snapshot();
                let secs = now.duration_since(printed.1).as_secs_f64().max(1e-9);
                let rate = |a: u64, b: u64| a.saturating_sub(b) as f64 / secs;
                let lat = super::latency::percentiles_ms(&engine.counters.latency()).map_or_else(
                    || "-".to_owned(),
                    |(p50, p95, p99, _)| format!("{p50:.2}/{p95:.2}/{p99:.2} ms"),
                );
                eprintln!(
                    "metrics: published {:.0}/s delivered {:.0}/s dropped {:.0}/s | p50/p95/p99 since start {lat} | clients {} connections {} | dlq {} | evicted {}",
                    rate(s.published, printed.0.published),
                    rate(s.delivered, printed.0.delivered),
                    rate(s.dropped, printed.0.dropped),
                    s.ws_connected_clients,
                    s.connections,
                    engine.bus.dlq().depth(),
                    s.evicted.write_stall + s.evicted.write_errors + s.evicted.slow_consumer,
                );
                printed = (s, now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_keep_the_last_minute_of_deltas() {
        let t0 = Instant::now();
        let mut h = History {
            last: Snapshot::default(),
            last_at: t0,
            seconds: VecDeque::new(),
        };
        let mut out = Sampled::default();
        for i in 1..=70u64 {
            let snap = Snapshot {
                published: i * 10,
                delivered: i * 100,
                ..Snapshot::default()
            };
            out = h.sample(snap, t0 + Duration::from_secs(i));
        }
        assert_eq!(out.series.published.len(), SERIES_SECONDS);
        assert!(out.series.published.iter().all(|&n| n == 10));
        assert!(out.series.delivered.iter().all(|&n| n == 100));
        assert_eq!(out.rates.0, 10.0);
    }
}
