//! What metrics and spans cost, measured in one run against the same work without them
//! (issue 5: the goal is under 5 % at the default sampling, `--trace-sample 0.01`).
//!
//! * `publish/*`: `Bus::publish` with tracing off, and at the default sampling (a sampled
//!   event records its `event.publish` span into the bounded buffer; nothing drains it,
//!   so once full every record also overwrites the oldest, the buffer's worst case).
//! * `write/*`: one connection's write path for 64 queued 100-byte events: gather,
//!   `writev` to `/dev/null` (a real syscall), advance; then, with observability on, what
//!   the I/O thread adds per write: the delivered/bytes counters, one latency-histogram
//!   record, and a `ws.write` span when the write completed a sampled event.

use std::fs::File;
use std::io::{IoSlice, Write};
use std::time::Instant;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use firehose::event::TraceId;
use firehose::metrics::{Counters, ThreadCounters};
use firehose::outbox::{Episode, Outbox, Stamp};
use firehose::policy::Policy;
use firehose::trace::{attrs, publish_span_id, random_span_id, Attr, SpanName, Tracer};
use firehose::{Bus, Event, Priority};
use std::sync::Arc;

const DEFAULT_SAMPLE: f64 = 0.01;
const BATCH: u64 = 64;
/// The default `--trace-buffer`.
const SPAN_BUFFER: usize = 8_192;

fn notice(_: &Episode) -> Bytes {
    Bytes::from_static(b"dropped")
}

fn publish(c: &mut Criterion) {
    let mut group = c.benchmark_group("observability/publish");
    group.throughput(Throughput::Elements(1));
    let event = Event::new("workflow.step.completed", "bench")
        .with_payload(&serde_json::json!({"seq": 0, "pad": "x".repeat(60)}))
        .unwrap();
    for (name, sample) in [
        ("off", 0.0),
        ("default_sampling", DEFAULT_SAMPLE),
        ("off_again", 0.0),
    ] {
        let bus = Bus::with_sinks(
            65_536,
            64 * 1024,
            Vec::new(),
            Default::default(),
            Default::default(),
            Arc::new(Tracer::new(sample, SPAN_BUFFER)),
        );
        group.bench_function(name, |b| {
            b.iter_batched(
                || event.clone(),
                |e| bus.publish(e).unwrap(),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

fn write(c: &mut Criterion) {
    let mut group = c.benchmark_group("observability/write");
    group.throughput(Throughput::Elements(BATCH));
    let frame = Bytes::from(vec![b'x'; 100]);
    let mut null = File::create("/dev/null").unwrap();
    let tracer = Tracer::new(DEFAULT_SAMPLE, 65_536);
    let counters = Counters::new(1);
    let mut hist = firehose::metrics::latency::new_histogram();
    // Stamps as routing would set them: 1 % of traces sampled.
    let stamps: Vec<Stamp> = (0..BATCH * 100)
        .map(|_| Stamp {
            tick: firehose::clock::tick(Instant::now()),
            sampled: tracer.sampled(TraceId::random()),
        })
        .collect();
    for on in [false, true] {
        let name = if on { "metrics_and_spans" } else { "off" };
        let mut o = Outbox::new(2_000, usize::MAX, Policy::DropNewest, notice);
        let mut round = 0usize;
        group.bench_function(name, |b| {
            b.iter(|| {
                round = (round + 1) % 100;
                for id in 1..=BATCH {
                    let stamp = stamps[round * BATCH as usize + id as usize - 1];
                    let stamp = if on { stamp } else { Stamp::default() };
                    o.push_event_at(frame.clone(), id, Priority::Bulk, stamp);
                }
                while !o.is_empty() {
                    let mut iov = [IoSlice::new(&[]); 64];
                    let n = o.gather(&mut iov);
                    let written = null.write_vectored(&iov[..n]).unwrap();
                    let p = o.advance(written);
                    if on {
                        let t = counters.thread(0);
                        ThreadCounters::add(&t.delivered, p.events);
                        ThreadCounters::add(&t.bytes_out, written as u64);
                        if p.first_t != 0 {
                            let now = firehose::clock::tick(Instant::now());
                            let age = firehose::clock::age_us(p.first_t, now).max(1);
                            let _ = hist.record_n(u64::from(age), p.events);
                        }
                        if p.sampled != 0 {
                            tracer.record(
                                SpanName::WsWrite,
                                TraceId::random(),
                                (random_span_id(), publish_span_id(p.sampled)),
                                Instant::now(),
                                attrs([
                                    ("connection_id", Attr::from(1u64)),
                                    ("event_id", Attr::from(p.sampled)),
                                    ("events", Attr::from(p.events)),
                                    ("bytes", Attr::from(written as u64)),
                                ]),
                            );
                        }
                    }
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, publish, write);
criterion_main!(benches);
