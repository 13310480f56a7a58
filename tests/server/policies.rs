//! Overflow policies over real sockets: a subscriber that stops reading, under each policy.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use tungstenite::Message;

use crate::support::*;
use firehose::{Event, Priority};

const EVENTS: u64 = 20_000;

/// Publishes `EVENTS` 1 KB events (every `critical_every`-th one critical) in-process while
/// the subscriber does not read; returns the ids and priorities.
fn flood(bridge: &firehose::Bridge, critical_every: u64) -> Vec<(u64, Priority)> {
    flood_with(bridge, |n| {
        if critical_every > 0 && n % critical_every == 0 {
            Priority::Critical
        } else {
            Priority::Bulk
        }
    })
}

/// Publishes `EVENTS` 1 KB events, event `n` (from 1) with priority `priority(n)`.
fn flood_with(
    bridge: &firehose::Bridge,
    priority: impl Fn(u64) -> Priority,
) -> Vec<(u64, Priority)> {
    let pad = "x".repeat(1000);
    (1..=EVENTS)
        .map(|n| {
            let ev = Event::new("flood", "test")
                .with_payload(&pad)
                .unwrap()
                .with_priority(priority(n));
            (bridge.bus().publish(ev).unwrap(), priority(n))
        })
        .collect()
}

/// Whether the server counts exactly one slow consumer evicted, within 5 s.
fn one_slow_consumer_evicted(bridge: &firehose::Bridge) -> bool {
    eventually(Duration::from_secs(5), || {
        bridge.engine().snapshot().evicted.slow_consumer == 1
    })
}

#[test]
fn welcome_names_the_policy_and_refusals_are_clear() {
    let bridge = server(|c| {
        c.allowed_overflow = vec![
            firehose::policy::Policy::DropNewest,
            firehose::policy::Policy::Priority,
        ]
    });
    let addr = bridge.local_addr();
    let (_ws, welcome) = subscribe(addr, "?overflow=priority");
    assert_eq!(welcome["overflow"], "priority");
    let (_ws, welcome) = subscribe(addr, "");
    assert_eq!(welcome["overflow"], "drop-newest");
    let upgrade = |q: &str| {
        format!("GET /ws/events?{q} HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    };
    let (status, _, body) = http_raw(addr, upgrade("overflow=disconnect").as_bytes());
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("allowed: drop-newest, priority"));
    let (status, _, body) = http_raw(addr, upgrade("overflow=fastest").as_bytes());
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("unknown overflow policy"));
}

#[test]
fn drop_oldest_gives_a_stalled_client_the_freshest_events() {
    let bridge = server(|c| c.queue_capacity = 100);
    let (mut ws, welcome) = subscribe(bridge.local_addr(), "?overflow=drop-oldest");
    let first = welcome["last_id"].as_u64().unwrap() + 1;
    let published = flood(&bridge, 0);
    let last = published.last().unwrap().0;
    let (missed, last_received) = account_for_ids(&mut ws, first, EVENTS);
    assert!(missed > 0, "the stalled client lost events");
    assert_eq!(
        last_received, last,
        "the queue gave way from its old end: the newest event arrived"
    );
    assert!(eventually(Duration::from_secs(5), || bridge
        .engine()
        .snapshot()
        .dropped
        == missed));
}

#[test]
fn priority_lanes_keep_critical_events_through_a_bulk_flood() {
    let bridge = server(|c| c.queue_capacity = 100);
    let (mut ws, _) = subscribe(bridge.local_addr(), "?overflow=priority");
    // 50 critical events among 20,000: fewer than the queue holds, so none may be lost.
    let published = flood(&bridge, 400);
    let priority: HashMap<u64, Priority> = published.iter().copied().collect();
    let criticals: Vec<u64> = published
        .iter()
        .filter(|(_, p)| *p == Priority::Critical)
        .map(|(id, _)| *id)
        .collect();
    let mut received = HashMap::new();
    let mut lost_bulk = 0u64;
    let mut accounted = 0u64;
    while accounted < EVENTS {
        let v: Value = next_json(&mut ws);
        if is_backlog(&v) {
            continue;
        }
        if v["op"] == "dropped" {
            assert_eq!(v["lane"], "bulk", "only bulk events may be lost: {v}");
            lost_bulk += v["count"].as_u64().unwrap();
            accounted += v["count"].as_u64().unwrap();
        } else {
            let id = v["id"].as_u64().unwrap();
            assert_eq!(v["priority"], priority[&id].as_str());
            assert!(received.insert(id, ()).is_none(), "no duplicate");
            accounted += 1;
        }
    }
    assert!(
        criticals.iter().all(|id| received.contains_key(id)),
        "every critical event arrived"
    );
    assert!(lost_bulk > 0);
    let lanes =
        http_json(bridge.local_addr(), "GET", "/health", "").1["events"]["dropped_by_lane"].clone();
    assert_eq!(lanes["bulk"].as_u64().unwrap(), lost_bulk, "{lanes}");
    assert_eq!(
        (lanes["critical"].as_u64(), lanes["control"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(received.len() as u64 + lost_bulk, EVENTS);
}

/// Reads until the server closes with 1008 "slow consumer"; checks that the `closing`
/// notice before it names the last event received. Returns that id.
fn read_until_evicted(ws: &mut Ws) -> u64 {
    // A server that never closes fails the test instead of hanging it.
    ws.get_ref()
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut last_event = 0;
    let mut closing = None;
    loop {
        match ws.read() {
            Ok(Message::Text(t)) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                match v["op"].as_str() {
                    Some("closing") => closing = Some(v),
                    Some("backlog") => {}
                    Some(other) => panic!("unexpected notice {other}: {v}"),
                    None => {
                        assert!(closing.is_none(), "no event after the closing notice");
                        let id = v["id"].as_u64().unwrap();
                        assert!(last_event == 0 || id == last_event + 1, "no gap: {id}");
                        last_event = id;
                    }
                }
            }
            Ok(Message::Close(Some(f))) => {
                assert_eq!(u16::from(f.code), 1008);
                assert_eq!(f.reason.as_str(), "slow consumer");
                break;
            }
            Ok(_) => {}
            Err(e) => panic!("expected close 1008, got {e}"),
        }
    }
    let closing = closing.expect("a closing notice before the close frame");
    assert_eq!(closing["reason"], "slow consumer");
    assert_eq!(
        closing["last_id"].as_u64().unwrap(),
        last_event,
        "the notice says exactly how far the client got"
    );
    last_event
}

#[test]
fn disconnect_closes_a_slow_consumer_with_1008_after_saying_how_far_it_got() {
    let bridge = server(|c| c.queue_capacity = 100);
    let (mut ws, _) = subscribe(bridge.local_addr(), "?overflow=disconnect");
    flood(&bridge, 0);
    assert!(read_until_evicted(&mut ws) < EVENTS);
    assert!(one_slow_consumer_evicted(&bridge));
}

#[test]
fn control_events_past_twice_the_bounds_close_a_stalled_priority_subscriber() {
    // `control` is never dropped, and a publisher chooses it: a client that does not
    // read must not make its queue grow without bound. It is closed, as under
    // `disconnect`, and can resume from the id the closing notice gives.
    let bridge = server(|c| c.queue_capacity = 100);
    let (mut ws, _) = subscribe(bridge.local_addr(), "?overflow=priority");
    flood_with(&bridge, |_| Priority::Control);
    let last = read_until_evicted(&mut ws);
    assert!(last < EVENTS, "evicted before the end of the flood: {last}");
    assert!(one_slow_consumer_evicted(&bridge));
    let lanes = bridge.engine().snapshot().dropped_by_lane;
    assert_eq!(lanes.control, 0, "nothing dropped from the control lane");
}

#[test]
fn a_queue_crossing_its_high_water_mark_sends_one_backlog_notice() {
    let bridge = server(|c| c.queue_capacity = 100);
    let (mut ws, _) = subscribe(bridge.local_addr(), "");
    flood(&bridge, 0);
    let mut backlog = Vec::new();
    let mut accounted = 0;
    while accounted < EVENTS {
        let v = next_json(&mut ws);
        match v["op"].as_str() {
            Some("backlog") => backlog.push(v["queued"].as_u64().unwrap()),
            Some("dropped") => accounted += v["count"].as_u64().unwrap(),
            Some(other) => panic!("unexpected {other}"),
            None => accounted += 1,
        }
    }
    assert_eq!(
        backlog.len(),
        1,
        "one notice for one burst (at most one per 5 s): {backlog:?}"
    );
    assert!(
        backlog[0] >= 50,
        "sent on crossing half the queue: {backlog:?}"
    );
}

#[test]
fn a_socket_that_takes_nothing_is_evicted_after_the_write_stall_timeout() {
    let bridge = server(|c| {
        c.queue_capacity = 100_000;
        c.queue_max_bytes = 1 << 30;
        c.write_stall_timeout = Duration::from_millis(500);
        c.io_threads = 1;
    });
    let addr = bridge.local_addr();
    let mut stalled = raw_ws(addr, "");
    let (mut healthy, _) = subscribe(addr, "");
    let reader = std::thread::spawn(move || {
        let mut notices = Vec::new();
        for _ in 0..2_000 {
            next_event(&mut healthy, &mut notices);
        }
        (notices, healthy) // keep the connection open
    });
    let pad = "x".repeat(16 * 1024);
    for _ in 0..2_000 {
        bridge
            .bus()
            .publish(Event::new("big", "test").with_payload(&pad).unwrap())
            .unwrap();
    }
    let (notices, _healthy) = reader.join().unwrap();
    assert!(
        notices.is_empty(),
        "the healthy client lost nothing: {notices:?}"
    );
    assert!(
        eventually(Duration::from_secs(10), || bridge
            .engine()
            .snapshot()
            .evicted
            .write_stall
            == 1),
        "{:?}",
        bridge.engine().snapshot()
    );
    assert_eq!(
        bridge.engine().snapshot().ws_connected_clients,
        1,
        "only the stalled client went"
    );
    let health = http_json(addr, "GET", "/health", "").1;
    assert_eq!(health["evicted"]["write_stall"], 1);
    // The stalled socket was closed: draining it ends in EOF or a reset, not a hang.
    stalled
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match std::io::Read::read(&mut stalled, &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
}
