//! `Bus::publish` ns/op with 1, 1,000 and 100,000 subscriptions registered.
//!
//! The subscriptions live below the socket layer: a consumer thread follows the log the way
//! an I/O thread does, routing every event through the real `Router` into one real `Outbox`
//! per subscription (all subscribed to `*`) and draining them. Publishing never looks at
//! subscriptions, so the three figures should be within noise of each other, even when the
//! consumer (100,000 pushes per event) cannot keep up. The consumer sleeps like an I/O
//! thread (idle flag, woken once per burst), so it does not spin on the publisher's cache
//! lines; `subscriptions/0` is the same publish with no consumer at all. The consumer also
//! encodes each event, as the first I/O thread to route it does
//! ([`firehose::event::Published`]); publishing only checks, stamps and stores it. As in the server,
//! a retention thread trims the log ([`firehose::retention`]), so the publisher installs
//! into emptied slots and frees nothing.

use std::io::IoSlice;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use firehose::log::Read;
use firehose::outbox::{Episode, Outbox};
use firehose::policy::Policy;
use firehose::wake::{Sleeper, Wake};
use firehose::{Bus, Event, Filter, Router};

/// The server binary's allocator (see `src/main.rs`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn notice(_: &Episode) -> Bytes {
    Bytes::from_static(b"dropped")
}

/// Follows the log like an I/O thread until `stop`.
struct Unpark(thread::Thread);

impl Wake for Unpark {
    fn wake(&self) {
        self.0.unpark();
    }
}

fn consumer(bus: Bus, subscriptions: usize, stop: Arc<AtomicBool>) {
    let mut router = Router::default();
    let mut outboxes: Vec<Outbox> = (0..subscriptions)
        .map(|_| Outbox::new(2_000, usize::MAX, Policy::DropNewest, notice))
        .collect();
    for key in 0..subscriptions {
        router.add(key, &Filter::all());
    }
    let mut cursor = bus.log().next_seq();
    while !stop.load(Ordering::Relaxed) {
        let routed = bus.log().read(cursor, |ev| {
            router.for_each_match(ev.event_type(), |k| {
                let frame = ev.frame().clone();
                let _ = outboxes[k].push_event(frame, ev.id(), ev.priority());
            });
        });
        match routed {
            Read::Ready(()) => cursor += 1,
            Read::Lapped { resume_at } => cursor = resume_at,
            Read::Pending => {
                // Drain as a socket writer would.
                for o in &mut outboxes {
                    let mut iov = [IoSlice::new(&[]); 64];
                    let n = o.gather(&mut iov);
                    let len: usize = iov[..n].iter().map(|s| s.len()).sum();
                    o.advance(len);
                }
                let flag = &bus.sleeper(0).flag;
                flag.announce_idle();
                if matches!(bus.log().read(cursor, |_| ()), Read::Pending)
                    && !stop.load(Ordering::Relaxed)
                {
                    thread::park_timeout(std::time::Duration::from_millis(10));
                }
                flag.announce_busy();
            }
        }
    }
}

/// The server's retention thread: trims the log to the default retention, so publishers
/// find emptied slots, as in `firehose serve`.
struct Trimming {
    stop: Arc<AtomicBool>,
    handle: thread::JoinHandle<()>,
}

impl Trimming {
    fn start(bus: &Bus, config: &firehose::Config) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (bus, flag, limits) = (bus.clone(), Arc::clone(&stop), config.retention());
        let handle = thread::spawn(move || {
            firehose::retention::run(bus.log(), limits, || flag.load(Ordering::Relaxed))
        });
        Self { stop, handle }
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.thread().unpark();
        self.handle.join().unwrap();
    }
}

/// The measured work: one `Bus::publish`. The event it moves into the log is cloned
/// beforehand, outside the timing (`iter_batched`), as a caller builds its own events.
fn publish_on(bus: &Bus) -> impl FnMut(Event) -> u64 + '_ {
    move |event| bus.publish(event).unwrap()
}

fn publish(c: &mut Criterion) {
    let mut group = c.benchmark_group("publish");
    group.throughput(Throughput::Elements(1));
    let event = Event::new("workflow.step.completed", "bench")
        .with_payload(&serde_json::json!({"seq": 0, "pad": "x".repeat(60)}))
        .unwrap();
    let config = firehose::Config::default();
    let bus = Bus::new(config.log_capacity(), 64 * 1024, Vec::new());
    let trimmer = Trimming::start(&bus, &config);
    group.bench_function(BenchmarkId::new("subscriptions", 0), |b| {
        b.iter_batched(|| event.clone(), publish_on(&bus), BatchSize::SmallInput)
    });
    trimmer.stop();
    for subscriptions in [1usize, 1_000, 100_000] {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let handle = {
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                let bus: Bus = rx.recv().unwrap();
                consumer(bus, subscriptions, stop)
            })
        };
        let bus = Bus::new(
            config.log_capacity(),
            64 * 1024,
            vec![Sleeper::new(Box::new(Unpark(handle.thread().clone())))],
        );
        tx.send(bus.clone()).unwrap();
        let trimmer = Trimming::start(&bus, &config);
        group.bench_with_input(
            BenchmarkId::new("subscriptions", subscriptions),
            &subscriptions,
            |b, _| b.iter_batched(|| event.clone(), publish_on(&bus), BatchSize::SmallInput),
        );
        stop.store(true, Ordering::Relaxed);
        handle.join().unwrap();
        trimmer.stop();
    }
    group.finish();
}

criterion_group!(benches, publish);
criterion_main!(benches);
