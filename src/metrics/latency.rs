//! The delivery-latency histogram (`events.delivery.latency_ms`): publish → frame written
//! to the socket, one per I/O thread, merged on read.

use hdrhistogram::Histogram;

/// Longest latency tracked, in µs (60 s); longer ones are clamped to it.
pub const MAX_US: u64 = 60_000_000;

/// Prometheus bucket bounds, in milliseconds.
pub const BUCKETS_MS: [f64; 16] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0,
    10000.0,
];

/// An empty histogram with the bounds every thread uses (1 µs to 60 s, 2 significant
/// digits: about 1 % precision in a few KiB).
pub fn new_histogram() -> Histogram<u64> {
    let mut h = Histogram::new_with_bounds(1, MAX_US, 2).expect("constant bounds are valid");
    h.auto(false);
    h
}

/// Percentiles in milliseconds (`None` when empty).
pub fn percentiles_ms(h: &Histogram<u64>) -> Option<(f64, f64, f64, f64)> {
    if h.is_empty() {
        return None;
    }
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    Some((ms(0.5), ms(0.95), ms(0.99), h.max() as f64 / 1000.0))
}
