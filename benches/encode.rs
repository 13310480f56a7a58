//! Encoding an event once: validation + JSON + WebSocket frame (`Staged::new` + `seal`),
//! for 100-byte and 1 KiB payloads.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
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
            b.iter(|| Staged::new(ev, 64 * 1024).unwrap().seal(123_456))
        });
    }
    group.finish();
}

criterion_group!(benches, encode);
criterion_main!(benches);
