//! Encoding an event once: the JSON and WebSocket frame a `Published` event gets on first
//! use (`Published::encoded`, on the first I/O thread to route it), for 100-byte and 1 KiB
//! payloads. Checking and stamping the event (`Staged::new`, on the publisher) is not
//! counted: `benches/publish.rs` measures that. `validate_type/bytes/N` times the first of
//! those checks alone.

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use firehose::event::Staged;
use firehose::Event;

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Elements(1));
    for size in [100usize, 1024] {
        let event = Event::new("workflow.step.completed", "bench")
            .with_payload(&serde_json::json!({"pad": "x".repeat(size)}))
            .unwrap();
        group.bench_with_input(BenchmarkId::new("payload_bytes", size), &event, |b, ev| {
            b.iter_batched(
                || Staged::new(ev.clone(), 64 * 1024).unwrap().seal(123_456),
                |published| published.frame().len(),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

/// The event-type check every publish runs first (`firehose::event::validate_type`), on a
/// short type (under 16 bytes: the table), a typical one and a long one.
fn check_type(c: &mut Criterion) {
    let mut group = c.benchmark_group("validate_type");
    for t in [
        "order.created".to_owned(),
        "workflow.step.completed".to_owned(),
        "a.".repeat(50),
    ] {
        group.bench_with_input(BenchmarkId::new("bytes", t.len()), &t, |b, t| {
            b.iter(|| firehose::event::validate_type(std::hint::black_box(t)).is_ok())
        });
    }
    group.finish();
}

criterion_group!(benches, encode, check_type);
criterion_main!(benches);
