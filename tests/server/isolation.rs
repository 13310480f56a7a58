//! Isolation: 100 subscribers of which 5 never read. The healthy ones receive every event,
//! and the server's memory growth stays under a bound computed from its limits.

use std::io::Read;
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::*;
use firehose::ws::frame::parse_unmasked;

const CLIENTS: usize = 100;
const SLOW: usize = 5;
const EVENTS: u64 = 20_000;
const BATCH: u64 = 100;
const QUEUE_CAPACITY: usize = 100;
const QUEUE_MAX_BYTES: usize = 256 * 1024;
const RETENTION: usize = 4_096;
const PAYLOAD: usize = 1_000;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads server frames and checks each event's id (the frame starts `{"id":N,`): ids must
/// be exactly `first..first+EVENTS` in order. Notices (`{"op":…}`) other than `backlog`
/// fail the client.
fn read_all(mut s: TcpStream, first: u64, progress: Arc<AtomicU64>) {
    let mut buf = vec![0u8; 256 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    let mut next = first;
    while next < first + EVENTS {
        let n = s.read(&mut buf).expect("read");
        assert!(n > 0, "server closed a healthy client");
        pending.extend_from_slice(&buf[..n]);
        let mut at = 0;
        while let Some((_, body, used)) = parse_unmasked(&pending[at..]) {
            if body.starts_with(b"{\"op\":\"backlog\"") {
            } else if let Some(rest) = body.strip_prefix(b"{\"id\":") {
                let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
                let id: u64 = std::str::from_utf8(&rest[..digits])
                    .unwrap()
                    .parse()
                    .unwrap();
                assert_eq!(id, next, "a healthy client lost or reordered an event");
                next += 1;
                progress.fetch_add(1, Ordering::Relaxed);
            } else {
                panic!("unexpected message {}", String::from_utf8_lossy(body));
            }
            at += used;
        }
        pending.drain(..at);
    }
}

#[test]
fn five_stalled_clients_of_a_hundred_cost_the_others_nothing_and_memory_stays_bounded() {
    let dir = std::env::temp_dir().join(format!("firehose-isolation-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let addr_file = dir.join("addr");
    let child = Command::new(env!("CARGO_BIN_EXE_firehose"))
        .args(["serve", "--port", "0", "--io-threads", "2", "--no-pin"])
        .args(["--queue-capacity", &QUEUE_CAPACITY.to_string()])
        .args(["--queue-max-bytes", &QUEUE_MAX_BYTES.to_string()])
        .args(["--retention-events", &RETENTION.to_string()])
        .arg("--addr-file")
        .arg(&addr_file)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let _server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    let addr = loop {
        if let Some(a) = std::fs::read_to_string(&addr_file)
            .ok()
            .and_then(|s| s.parse().ok())
        {
            break a;
        }
        assert!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(20));
    };
    let _slow: Vec<TcpStream> = (0..SLOW).map(|_| raw_ws(addr, "")).collect();
    let progress: Vec<Arc<AtomicU64>> = (0..CLIENTS - SLOW)
        .map(|_| Arc::new(AtomicU64::new(0)))
        .collect();
    let readers: Vec<_> = progress
        .iter()
        .map(|p| {
            let s = raw_ws(addr, "");
            let p = Arc::clone(p);
            std::thread::spawn(move || read_all(s, 1, p))
        })
        .collect();
    let slowest = || {
        progress
            .iter()
            .map(|p| p.load(Ordering::Relaxed))
            .min()
            .unwrap()
    };
    let rss_before = rss_kib(pid);
    let event = format!(
        r#"{{"event_type":"iso.tick","source":"test","payload":"{}"}}"#,
        "x".repeat(PAYLOAD)
    );
    let batch = format!("[{}]", vec![event; BATCH as usize].join(","));
    for sent in (BATCH..=EVENTS).step_by(BATCH as usize) {
        let (status, body) = http_json(addr, "POST", "/publish", &batch);
        assert_eq!(status, 200, "{body}");
        // Healthy clients keep up: the next batch (one queue's worth) goes out only when
        // every one of them has everything sent so far.
        let caught_up = eventually(Duration::from_secs(30), || slowest() >= sent);
        assert!(
            caught_up,
            "a healthy client stalled at {} of {sent}",
            slowest()
        );
    }
    for r in readers {
        r.join().unwrap();
    }
    let rss_after = rss_kib(pid);
    let health = http_json(addr, "GET", "/health", "").1;
    let dropped = health["events"]["dropped"].as_u64().unwrap();
    assert!(
        dropped > 0,
        "the stalled clients' queues overflowed: {health}"
    );
    // What the limits allow the server to hold: the log's ring of frames (twice the
    // retention, rounded up to a power of two: a lagging retention thread may leave it
    // full, see `Config::log_capacity`), each stalled queue's byte bound (frames are shared
    // with the log, so this double-counts), plus 16 MiB for allocator and buffer slack.
    let frame = (PAYLOAD + 300) as u64;
    let ring = firehose::Config {
        retention_events: RETENTION,
        ..firehose::Config::default()
    }
    .log_capacity() as u64;
    let bound_kib = (ring * frame + SLOW as u64 * QUEUE_MAX_BYTES as u64) / 1024 + 16 * 1024;
    let growth = rss_after.saturating_sub(rss_before);
    eprintln!("isolation: server RSS grew {growth} KiB (bound {bound_kib} KiB), {dropped} events dropped for the 5 stalled clients");
    assert!(
        growth <= bound_kib,
        "RSS grew {growth} KiB; the limits allow {bound_kib} KiB"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
