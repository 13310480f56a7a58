//! No heap allocation per event per connection on the fan-out path.
//!
//! A counting global allocator (this test binary only) counts every allocation in the
//! process. The same burst of events goes to 1 subscriber, then to 100; the subscribers
//! are raw sockets that read into a fixed buffer and count frames from their headers, so
//! they allocate nothing. If routing, queueing or writing allocated per event per
//! connection, the 100-subscriber run would make about 99 × EVENTS more allocations;
//! the test allows 200 per extra connection (its queue growing, its first-use buffers).
//!
//! One test in its own binary: other tests running beside it would be counted too.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use firehose::{Builder, Config, Event};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every method forwards to the system allocator with the caller's own arguments,
// so it upholds exactly the contract the caller relies on; the counter has no effect on
// memory.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged; the caller guarantees `layout` is valid.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc`/`realloc` above, which is `System`'s.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged; `ptr` is `System`'s.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const EVENTS: u64 = 5_000;

/// A subscriber that upgrades, then counts server frames without allocating.
fn subscriber(addr: std::net::SocketAddr, frames_wanted: u64) -> thread::JoinHandle<u64> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET /ws/events HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    .unwrap();
    thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        let (mut have, mut frames, mut head_done) = (0usize, 0u64, false);
        // The 101 head, then the welcome frame, then `frames_wanted` events.
        while frames < frames_wanted + 1 {
            let n = s.read(&mut buf[have..]).expect("read");
            assert!(n > 0, "server closed");
            have += n;
            let mut at = 0;
            if !head_done {
                let Some(end) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") else {
                    continue;
                };
                at = end + 4;
                head_done = true;
            }
            loop {
                let rest = &buf[at..have];
                if rest.len() < 2 {
                    break;
                }
                let (len, hdr) = match rest[1] & 0x7f {
                    126 if rest.len() >= 4 => (u16::from_be_bytes([rest[2], rest[3]]) as usize, 4),
                    126 => break,
                    127 => panic!("no 64-bit frames expected"),
                    n => (n as usize, 2),
                };
                if rest.len() < hdr + len {
                    break;
                }
                at += hdr + len;
                frames += 1;
            }
            buf.copy_within(at..have, 0);
            have -= at;
        }
        frames - 1
    })
}

/// Allocations made while `subscribers` connections receive the burst.
fn allocations_for(subscribers: usize) -> u64 {
    let bridge = Builder::default()
        .config(Config {
            port: 0,
            io_threads: 1,
            pin_threads: false,
            queue_capacity: 10_000,
            queue_max_bytes: 64 << 20,
            ..Config::default()
        })
        .start()
        .unwrap();
    let addr = bridge.local_addr();
    let readers: Vec<_> = (0..subscribers).map(|_| subscriber(addr, EVENTS)).collect();
    let end = Instant::now() + Duration::from_secs(10);
    while bridge.engine().snapshot().ws_connected_clients < subscribers as u64 {
        assert!(Instant::now() < end, "subscribers connect");
        thread::sleep(Duration::from_millis(5));
    }
    let ev = Event::new("alloc.tick", "test")
        .with_payload(&serde_json::json!({"pad": "x".repeat(100)}))
        .unwrap();
    // Warm up: every queue and buffer reaches its working size first.
    thread::sleep(Duration::from_millis(300));
    let before = ALLOCS.load(Ordering::Relaxed);
    for _ in 0..EVENTS {
        bridge.bus().publish(ev.clone()).unwrap();
    }
    for r in readers {
        assert_eq!(r.join().unwrap(), EVENTS);
    }
    let after = ALLOCS.load(Ordering::Relaxed);
    assert_eq!(bridge.engine().snapshot().dropped, 0);
    bridge.shutdown();
    after - before
}

#[test]
fn fan_out_allocates_nothing_per_event_per_connection() {
    let one = allocations_for(1);
    let hundred = allocations_for(100);
    let extra = hundred.saturating_sub(one);
    eprintln!(
        "allocations for {EVENTS} events: {one} with 1 subscriber, {hundred} with 100 ({:.3} per event per extra connection)",
        extra as f64 / (EVENTS * 99) as f64
    );
    assert!(
        extra <= 99 * 200,
        "{extra} more allocations for 99 more subscribers: per-event allocation on the fan-out path"
    );
}
