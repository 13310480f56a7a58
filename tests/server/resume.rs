//! Resume: `last_event_id` replays what a client missed (with a `gap` when part of it is
//! past retention, nothing from another epoch), then continues live with no duplicate and
//! no hole at the seam.

use std::collections::HashMap;
use std::thread;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::*;
use firehose::{Bus, Event};

fn publish_n(bus: &Bus, n: u64) -> Vec<u64> {
    (0..n)
        .map(|i| {
            let t = if i % 2 == 0 { "a.tick" } else { "b.tick" };
            bus.publish(Event::new(t, "test")).unwrap()
        })
        .collect()
}

/// Reads events until `last`, checking every id is exactly `expected` (in order) and no
/// notice but `backlog` comes in between.
fn expect_ids(ws: &mut Ws, expected: &[u64]) {
    for want in expected {
        let v = loop {
            let v = next_json(ws);
            if !is_backlog(&v) {
                break v;
            }
        };
        assert_eq!(v["id"].as_u64(), Some(*want), "{v}");
    }
}

#[test]
fn resume_from_the_middle_replays_the_missed_events_then_continues_live() {
    // A queue far smaller than the replay: it is paced by the client, never dropped.
    let bridge = server(|c| c.queue_capacity = 16);
    let addr = bridge.local_addr();
    let bus = bridge.bus().clone();
    let ids = publish_n(&bus, 3_000);
    let epoch = bus.epoch();
    let from = ids[999];
    let (mut ws, welcome) = subscribe(
        addr,
        // catch-up: the live burst below overflows a 16-event queue without losses.
        &format!("?types=a.*&overflow=catch-up&last_event_id={from}&epoch={epoch}"),
    );
    assert_eq!(welcome["recovered"], true, "{welcome}");
    assert_eq!(welcome["epoch"], epoch);
    assert_eq!(welcome["last_id"], from);
    assert!(welcome.get("reason").is_none());
    // Publish while the replay runs, so the seam is crossed under load.
    let live = thread::spawn(move || publish_n(&bus, 2_000));
    let live_ids = live.join().unwrap();
    let want: Vec<u64> = ids
        .iter()
        .chain(&live_ids)
        .copied()
        .filter(|&id| id > from && id % 2 == 1) // a.tick: the odd ids (ids start at 1)
        .collect();
    expect_ids(&mut ws, &want);
    let s = bridge.engine().snapshot();
    assert_eq!(s.resumes.recovered, 1);
    assert!(s.replayed >= 1_000, "{s:?}");
    assert_eq!(s.dropped, 0, "replay waits for room, it never drops");
}

#[test]
fn resume_with_a_plain_id_and_the_resume_message() {
    let bridge = server(|_| {});
    let addr = bridge.local_addr();
    let bus = bridge.bus().clone();
    let (mut ws, welcome) = subscribe(addr, "");
    assert_eq!(welcome["recovered"], false);
    assert_eq!(welcome["reason"], "not_asked");
    let ids = publish_n(&bus, 10);
    expect_ids(&mut ws, &ids);
    // Start over from the third: a new welcome, then the rest again.
    send_json(&mut ws, json!({"op": "resume", "last_event_id": ids[2]}));
    let w = next_json(&mut ws);
    assert_eq!(
        (w["op"].as_str(), w["recovered"].as_bool()),
        (Some("welcome"), Some(true))
    );
    assert_eq!(w["last_id"], ids[2]);
    expect_ids(&mut ws, &ids[3..]);
    let more = publish_n(&bus, 3);
    expect_ids(&mut ws, &more);
    // The compound form, as SSE ids carry it.
    let (mut again, w) = subscribe(addr, &format!("?last_event_id={}:{}", bus.epoch(), ids[8]));
    assert_eq!(w["recovered"], true, "{w}");
    expect_ids(&mut again, &[ids[9], more[0], more[1], more[2]]);
    // A bad resume message is answered, and the subscription goes on.
    send_json(&mut ws, json!({"op": "resume", "last_event_id": "x"}));
    let e = next_json(&mut ws);
    assert_eq!(e["op"], "error", "{e}");
    assert!(
        e["error"].as_str().unwrap().contains("last event id"),
        "{e}"
    );
}

#[test]
fn resume_from_before_retention_gets_a_gap_then_everything_retained() {
    let bridge = server(|c| c.retention_events = 100);
    let addr = bridge.local_addr();
    let bus = bridge.bus().clone();
    let ids = publish_n(&bus, 1_000);
    let log = bus.log();
    assert!(
        eventually(Duration::from_secs(5), || log.head() > 800),
        "the retention thread trims to 100 events"
    );
    let (mut ws, welcome) = subscribe(addr, &format!("?last_event_id=5&epoch={}", bus.epoch()));
    assert_eq!(welcome["recovered"], false, "{welcome}");
    assert_eq!(welcome["reason"], "gap");
    assert_eq!(welcome["last_id"], 5);
    let gap = next_json(&mut ws);
    assert_eq!(gap["op"], "gap", "{gap}");
    assert_eq!(gap["from"], 6);
    let to = gap["to"].as_u64().unwrap();
    assert!((800..1_000).contains(&to), "{gap}");
    let first = (to + 1) as usize - 1; // index of id to+1
    expect_ids(&mut ws, &ids[first..]);
    assert_eq!(bridge.engine().snapshot().resumes.gap, 1);
}

#[test]
fn an_id_from_another_epoch_or_the_future_recovers_nothing() {
    let old = server(|_| {});
    let old_epoch = old.bus().epoch();
    publish_n(old.bus(), 50);
    old.shutdown();
    // A restart: new epoch, ids from 1 again.
    let bridge = server(|_| {});
    let bus = bridge.bus().clone();
    assert_ne!(bus.epoch(), old_epoch);
    publish_n(&bus, 60);
    let addr = bridge.local_addr();
    let (mut ws, w) = subscribe(addr, &format!("?last_event_id=20&epoch={old_epoch}"));
    assert_eq!(
        (w["recovered"].as_bool(), w["reason"].as_str()),
        (Some(false), Some("other_epoch"))
    );
    assert_eq!(w["last_id"], 60, "live from the newest event: {w}");
    let (mut ws2, w) = subscribe(addr, "?last_event_id=1000");
    assert_eq!(w["reason"], "unknown_id", "{w}");
    let next = publish_n(&bus, 1);
    expect_ids(&mut ws, &next);
    expect_ids(&mut ws2, &next);
    let s = bridge.engine().snapshot();
    assert_eq!((s.resumes.other_epoch, s.resumes.unknown_id), (1, 1));
    let (_, metrics, body) = http_raw(
        addr,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains("firehose_resumes_total{outcome=\"other_epoch\"} 1"),
        "{metrics}{text}"
    );
    assert!(text.contains("firehose_events_replayed_total 0"), "{text}");
}

#[test]
fn bad_resume_parameters_are_refused_with_a_reason() {
    let bridge = server(|_| {});
    let addr = bridge.local_addr();
    for (query, needle) in [
        ("last_event_id=abc", "not an event id"),
        ("epoch=5", "epoch without last_event_id"),
        ("last_event_id=1:2&epoch=3", "epoch= says 3"),
        ("last_event_id=1&epoch=x", "epoch \\\"x\\\" is not a number"),
    ] {
        let req = format!(
            "GET /ws/events?{query} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        );
        let (status, _, body) = http_raw(addr, req.as_bytes());
        let body = String::from_utf8_lossy(&body);
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body.contains(needle), "{query}: {body}");
    }
}

/// A small deterministic generator (xorshift), so a failure can be replayed by seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// The reliability claim: 1,000 random disconnect/reconnect cycles over 20 clients while
/// events are published; each client resumes from the last id it processed, and ends with
/// every event of its filter exactly once, in id order.
#[test]
fn a_thousand_random_reconnects_lose_nothing_and_repeat_nothing() {
    const CLIENTS: u64 = 20;
    const CYCLES_EACH: u64 = 50;
    const EVENTS: u64 = 20_000;
    let bridge = server(|c| c.queue_capacity = 64);
    let addr = bridge.local_addr();
    let bus = bridge.bus().clone();
    let epoch = bus.epoch();
    let publisher = thread::spawn(move || {
        let mut ids = HashMap::new();
        for i in 0..EVENTS {
            let t = ["a.x", "b.y", "a.z"][(i % 3) as usize];
            let id = bus.publish(Event::new(t, "test")).unwrap();
            ids.insert(id, t);
            if i % 200 == 0 {
                thread::sleep(Duration::from_millis(2));
            }
        }
        ids
    });
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            thread::spawn(move || {
                // catch-up: a client that falls behind reads the log instead of losing
                // events, so "exactly once" holds under bursts too.
                let types = if c % 2 == 0 {
                    "overflow=catch-up&"
                } else {
                    "overflow=catch-up&types=a.*&"
                };
                let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (c + 1));
                let expected = expected_len(c);
                let mut got: Vec<u64> = Vec::new();
                let mut cycles = 0;
                let mut last = 0;
                loop {
                    let query = if cycles == 0 {
                        format!("?{types}last_event_id=0&epoch={epoch}")
                    } else {
                        format!("?{types}last_event_id={last}&epoch={epoch}")
                    };
                    let (mut ws, w) = subscribe(addr, &query);
                    assert_eq!(w["recovered"], true, "client {c} cycle {cycles}: {w}");
                    let quota = if cycles < CYCLES_EACH {
                        1 + rng.below(300)
                    } else {
                        u64::MAX
                    };
                    let mut read = 0;
                    while read < quota {
                        let v: Value = next_json(&mut ws);
                        if is_backlog(&v) {
                            continue;
                        }
                        assert!(v.get("op").is_none(), "client {c}: unexpected notice {v}");
                        let id = v["id"].as_u64().unwrap();
                        assert!(id > last, "client {c}: id {id} after {last}");
                        last = id;
                        got.push(id);
                        read += 1;
                        if got.len() as u64 == expected {
                            return (got, cycles);
                        }
                    }
                    // Vanish without a close handshake half the time.
                    if rng.below(2) == 0 {
                        drop(ws);
                    } else {
                        let _ = ws.close(None);
                    }
                    cycles += 1;
                }
            })
        })
        .collect();
    fn expected_len(c: u64) -> u64 {
        // Odd clients take a.x and a.z: every i with i % 3 != 1.
        (0..EVENTS).filter(|i| c % 2 == 0 || i % 3 != 1).count() as u64
    }
    let types = publisher.join().unwrap();
    let mut all_cycles = 0;
    for (c, client) in clients.into_iter().enumerate() {
        let (got, cycles) = client.join().unwrap();
        all_cycles += cycles;
        let want: Vec<u64> = (1..=EVENTS)
            .filter(|id| c % 2 == 0 || types[id].starts_with("a."))
            .collect();
        assert_eq!(got.len(), want.len(), "client {c}");
        assert!(
            got == want,
            "client {c}: every event exactly once, in order"
        );
    }
    assert_eq!(
        all_cycles,
        CLIENTS * CYCLES_EACH,
        "every client finished its cycles"
    );
    let s = bridge.engine().snapshot();
    assert_eq!(s.resumes.recovered, CLIENTS * (CYCLES_EACH + 1));
    assert_eq!(s.gap_notices, 0);
}
