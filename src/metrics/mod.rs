//! What the engine counts and how it is exported. Counters are relaxed atomics on their
//! own cache lines, one set per I/O thread (so the hot path never shares a line between
//! threads), summed on read ([`Counters::snapshot`]). One flusher thread ([`flusher`])
//! samples them each second for `/stats` and the console exporter; `/metrics` renders them
//! in the Prometheus text format ([`prometheus`]).

mod counters;
pub mod flusher;
pub mod latency;
pub mod prometheus;

pub use counters::{
    Counters, DropReason, DroppedByLane, DroppedByReason, Evicted, HttpCounters, ResumeOutcome,
    Resumes, Snapshot, ThreadCounters,
};
pub use flusher::{Exporter, Stats};
