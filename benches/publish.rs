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
//!
//! `publish/floor` and `publish/floor_recycled` are not firehose: the bare handoff of an
//! event to another core, for reading the figures above against ([`Floor`]).

use std::io::IoSlice;
use std::mem::size_of;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use crossbeam_queue::ArrayQueue;
use crossbeam_utils::atomic::AtomicCell;
use crossbeam_utils::CachePadded;
use firehose::event::Published;
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

/// The event every case publishes: a 23-byte type and a 77-byte payload.
fn bench_event() -> Event {
    Event::new("workflow.step.completed", "bench")
        .with_payload(&serde_json::json!({"seq": 0, "pad": "x".repeat(60)}))
        .unwrap()
}

fn publish(c: &mut Criterion) {
    let mut group = c.benchmark_group("publish");
    group.throughput(Throughput::Elements(1));
    let event = bench_event();
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

/// The floor under `publish/subscriptions/0` on this machine: the same event moved into
/// a heap entry the size of a log entry (an `Arc<Published>`), with the time read
/// (`Instant::now`), installed in a ring slot with one swap, and taken out a retention
/// behind by another thread, which frees the event. No checks, no trace id, no readers
/// to protect (so no epoch), no wake-up fence: what handing an event to another core
/// costs by itself, to read the figures above against in the same run. `floor` frees
/// each entry on the trimming thread and allocates a new one per publish, as the log
/// does; `floor_recycled` hands emptied entries back to the publisher through a bounded
/// queue instead, the change the README names as what would close most of the rest.
struct Floor {
    slots: Box<[AtomicCell<Option<Box<FloorEntry>>>]>,
    mask: u64,
    tail: CachePadded<AtomicU64>,
    /// Emptied entries on their way back to the publisher (`floor_recycled`).
    recycled: Option<ArrayQueue<Box<FloorEntry>>>,
}

/// Words that bring a floor entry to the size of `Arc<Published>`'s allocation (two
/// counts and the entry).
const PAD: usize =
    (2 * 8 + size_of::<Published>() - size_of::<(u64, Instant, Option<Event>)>()) / 8;

// The floor allocates what the log allocates per event.
const _: () = assert!(size_of::<FloorEntry>() == 2 * 8 + size_of::<Published>());

#[allow(dead_code)] // written as a log entry is, never read
struct FloorEntry {
    seq: u64,
    at: Instant,
    event: Option<Event>,
    pad: [u64; PAD],
}

impl Floor {
    fn new(capacity: usize, recycle: bool) -> Self {
        Self {
            slots: (0..capacity).map(|_| AtomicCell::new(None)).collect(),
            mask: capacity as u64 - 1,
            tail: CachePadded::new(AtomicU64::new(0)),
            recycled: recycle.then(|| ArrayQueue::new(4096)),
        }
    }

    fn publish(&self, event: Event) -> u64 {
        let seq = self.tail.fetch_add(1, Ordering::AcqRel);
        let entry = FloorEntry {
            seq,
            at: Instant::now(),
            event: Some(event),
            pad: [seq; PAD],
        };
        let entry = match self.recycled.as_ref().and_then(ArrayQueue::pop) {
            Some(mut emptied) => {
                *emptied = entry;
                emptied
            }
            None => Box::new(entry),
        };
        // A trimmer a lap behind leaves the old entry here: freed on this thread.
        drop(self.slots[(seq & self.mask) as usize].swap(Some(entry)));
        seq
    }

    /// Takes entries out a retention behind the tail, until `stop`, and waits
    /// [`BUSY_EVERY`](firehose::retention::BUSY_EVERY) whenever it has caught up.
    fn trim(&self, retention: u64, stop: &AtomicBool) {
        let mut head = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let tail = self.tail.load(Ordering::Acquire);
            if head + retention >= tail {
                // In batches, as the retention thread trims (`retention::pause_after`).
                thread::sleep(firehose::retention::BUSY_EVERY);
            }
            while head + retention < tail {
                if let Some(mut entry) = self.slots[(head & self.mask) as usize].take() {
                    drop(entry.event.take());
                    if let Some(queue) = &self.recycled {
                        // A full queue frees the entry here.
                        let _ = queue.push(entry);
                    }
                }
                head += 1;
            }
        }
    }
}

fn floor(c: &mut Criterion) {
    let mut group = c.benchmark_group("publish");
    group.throughput(Throughput::Elements(1));
    let event = bench_event();
    let config = firehose::Config::default();
    for (name, recycle) in [("floor", false), ("floor_recycled", true)] {
        let ring = Arc::new(Floor::new(config.log_capacity(), recycle));
        let stop = Arc::new(AtomicBool::new(false));
        let trimmer = {
            let (ring, stop) = (Arc::clone(&ring), Arc::clone(&stop));
            let retention = config.retention().events as u64;
            thread::spawn(move || ring.trim(retention, &stop))
        };
        group.bench_function(name, |b| {
            b.iter_batched(|| event.clone(), |e| ring.publish(e), BatchSize::SmallInput)
        });
        stop.store(true, Ordering::Relaxed);
        trimmer.join().unwrap();
    }
    group.finish();
}

criterion_group!(benches, publish, floor);
criterion_main!(benches);
