//! Reading a publisher's `{"op":"publish",…}` message as the WebSocket session does (UTF-8
//! check, then `ws::message::parse_op`), in the shape `firehose bench` sends, for 100-byte
//! and 1 KiB payloads; and serde_json reading the same bytes as a `WireEvent` once, for
//! comparison.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use firehose::event::WireEvent;
use firehose::ws::message::{parse_op, ClientOp};

fn message(payload_bytes: usize) -> Vec<u8> {
    let pad = "x".repeat(payload_bytes.saturating_sub(30));
    format!(
        r#"{{"op":"publish","event_type":"bench.event","source":"bench","payload":{{"t":123456789012,"pad":"{pad}"}}}}"#
    )
    .into_bytes()
}

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse_op");
    group.throughput(Throughput::Elements(1));
    for size in [100usize, 1024] {
        let msg = message(size);
        group.bench_with_input(BenchmarkId::new("payload_bytes", size), &msg, |b, m| {
            // As the WebSocket session does: check UTF-8, then parse.
            b.iter(|| match std::str::from_utf8(m).map(parse_op) {
                Ok(Ok(ClientOp::Publish(w))) => w,
                _ => unreachable!("the message is a valid publish"),
            })
        });
        group.bench_with_input(BenchmarkId::new("serde_once", size), &msg, |b, m| {
            b.iter(|| serde_json::from_slice::<WireEvent>(m).expect("valid"))
        });
    }
    group.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);
