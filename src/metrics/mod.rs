//! What the engine counts. Counters are relaxed atomics on their own cache lines, one set
//! per I/O thread (so the hot path never shares a line between threads), summed on read.
//! Exporters (Prometheus, console, `/stats`) build on [`Counters::snapshot`].

mod counters;

pub use counters::{Counters, DroppedByLane, Evicted, Snapshot, ThreadCounters};
