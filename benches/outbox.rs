//! The per-connection ring: push 1,000 shared frames, then gather and advance them as a
//! `writev` loop would (batches of 256).

use std::io::IoSlice;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use firehose::outbox::{Episode, Outbox, Push};
use firehose::policy::Policy;
use firehose::Priority;

fn notice(_: &Episode) -> Bytes {
    Bytes::from_static(b"dropped")
}

fn outbox(c: &mut Criterion) {
    let mut group = c.benchmark_group("outbox");
    const N: u64 = 1_000;
    group.throughput(Throughput::Elements(N));
    let frame = Bytes::from(vec![b'x'; 120]);
    group.bench_function("push_then_drain_1000", |b| {
        let mut o = Outbox::new(2_000, usize::MAX, Policy::DropNewest, notice);
        b.iter(|| {
            for id in 0..N {
                assert_eq!(
                    o.push_event(frame.clone(), id, Priority::Bulk),
                    Push::Queued
                );
            }
            while !o.is_empty() {
                let mut iov = [IoSlice::new(&[]); 256];
                let n = o.gather(&mut iov);
                let len: usize = iov[..n].iter().map(|s| s.len()).sum();
                o.advance(len);
            }
        })
    });
    group.finish();
}

criterion_group!(benches, outbox);
criterion_main!(benches);
