//! Acknowledged delivery: `ack=critical|all` subscriptions, cumulative acks, redelivery
//! with backoff, the dead-letter queue after the retries, and `--max-unacked` flow control.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::Message;

use crate::support::*;
use firehose::{Event, Priority};

fn critical() -> Event {
    Event::new("orders.paid", "test").with_priority(Priority::Critical)
}

/// The next message within `wait`, or `None` (the socket's timeout is set for it).
fn next_within(ws: &mut Ws, wait: Duration) -> Option<Value> {
    ws.get_mut().set_read_timeout(Some(wait)).unwrap();
    let got = loop {
        match ws.read() {
            Ok(Message::Text(t)) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                if !is_backlog(&v) {
                    break Some(v);
                }
            }
            Ok(_) => continue,
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break None
            }
            Err(e) => panic!("{e}"),
        }
    };
    ws.get_mut()
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    got
}

fn dlq_entries(addr: std::net::SocketAddr) -> Vec<Value> {
    let (status, v) = http_json(addr, "GET", "/dlq/entries?limit=100", "");
    assert_eq!(status, 200);
    v["entries"].as_array().unwrap().clone()
}

#[test]
fn unacknowledged_critical_events_are_redelivered_with_backoff_then_dead_lettered() {
    let bridge = server(|c| c.ack_timeout = Duration::from_millis(300));
    let addr = bridge.local_addr();
    let (mut ws, welcome) = subscribe(addr, "?ack=critical");
    let conn = welcome["connection_id"].as_u64().unwrap();
    let bus = bridge.bus();
    let c = bus.publish(critical()).unwrap();
    let b = bus.publish(Event::new("orders.viewed", "test")).unwrap();
    let start = Instant::now();
    assert_eq!(next_json(&mut ws)["id"], c);
    assert_eq!(next_json(&mut ws)["id"], b);
    let mut at = Vec::new();
    for n in 1..=3 {
        let v = next_within(&mut ws, Duration::from_secs(5)).expect("a redelivery");
        assert_eq!(
            (v["id"].as_u64(), v["redelivered"].as_bool()),
            (Some(c), Some(true)),
            "{n}: {v}"
        );
        assert_eq!(v["priority"], "critical");
        at.push(start.elapsed());
    }
    // Backoff: 0.3 s, then 0.6 s, then 1.2 s later (to the 250 ms timer).
    let gaps = [at[0], at[1] - at[0], at[2] - at[1]];
    assert!(gaps[1] > gaps[0] && gaps[2] > gaps[1], "{gaps:?}");
    assert!(gaps[2] >= Duration::from_millis(1_100), "{gaps:?}");
    // Then, 2.4 s later, the dead-letter queue; the bulk event was never tracked.
    assert!(eventually(Duration::from_secs(6), || !dlq_entries(addr).is_empty()));
    let entries = dlq_entries(addr);
    assert_eq!(entries.len(), 1, "{entries:?}");
    let e = &entries[0];
    assert_eq!(e["event"]["id"], c);
    assert_eq!(e["subscriber"], format!("ws/connection/{conn}"));
    assert_eq!(e["retry_count"], 3);
    assert!(
        e["error_message"]
            .as_str()
            .unwrap()
            .contains("not acknowledged after 3 redeliveries"),
        "{e}"
    );
    assert_eq!(
        next_within(&mut ws, Duration::from_millis(700)),
        None,
        "nothing after giving up"
    );
    let s = bridge.engine().snapshot();
    assert_eq!((s.redelivered, s.unacked_dead_lettered), (3, 1));
}

#[test]
fn a_cumulative_ack_settles_everything_up_to_its_id() {
    let bridge = server(|c| c.ack_timeout = Duration::from_millis(300));
    let addr = bridge.local_addr();
    let (mut ws, _) = subscribe(addr, "?ack=all");
    let ids: Vec<u64> = (0..5)
        .map(|_| bridge.bus().publish(Event::new("a", "test")).unwrap())
        .collect();
    for id in &ids {
        assert_eq!(next_json(&mut ws)["id"], *id);
    }
    send_json(&mut ws, json!({"op": "ack", "id": ids[4]}));
    assert_eq!(
        next_within(&mut ws, Duration::from_millis(1_500)),
        None,
        "no redelivery"
    );
    assert!(dlq_entries(addr).is_empty());
    assert_eq!(bridge.engine().snapshot().redelivered, 0);
}

#[test]
fn max_unacked_holds_events_back_until_acks_make_room() {
    let bridge = server(|c| {
        c.ack_timeout = Duration::from_secs(30);
        c.max_unacked = 3;
    });
    let addr = bridge.local_addr();
    let (mut ws, _) = subscribe(addr, "?ack=all");
    let ids: Vec<u64> = (0..10)
        .map(|_| bridge.bus().publish(Event::new("a", "test")).unwrap())
        .collect();
    let mut got = Vec::new();
    for window in [3, 3, 3, 1] {
        for _ in 0..window {
            let v = next_within(&mut ws, Duration::from_secs(5)).expect("an event");
            assert!(v.get("op").is_none(), "no notice, nothing dropped: {v}");
            got.push(v["id"].as_u64().unwrap());
        }
        if got.len() < ids.len() {
            assert_eq!(
                next_within(&mut ws, Duration::from_millis(400)),
                None,
                "at most 3 outstanding"
            );
        }
        send_json(&mut ws, json!({"op": "ack", "id": got.last().unwrap()}));
    }
    assert_eq!(got, ids, "in order, each once");
}

#[test]
fn unacknowledged_events_of_a_closed_connection_are_dead_lettered_and_replayed_on_resume() {
    let bridge = server(|c| c.ack_timeout = Duration::from_secs(30));
    let addr = bridge.local_addr();
    let (mut ws, welcome) = subscribe(addr, "?ack=critical");
    let epoch = welcome["epoch"].as_u64().unwrap();
    let a = bridge.bus().publish(critical()).unwrap();
    let b = bridge.bus().publish(critical()).unwrap();
    assert_eq!(next_json(&mut ws)["id"], a);
    assert_eq!(next_json(&mut ws)["id"], b);
    send_json(&mut ws, json!({"op": "ack", "id": a}));
    ws.close(None).unwrap();
    assert!(eventually(Duration::from_secs(5), || dlq_entries(addr)
        .len()
        == 1));
    let e = &dlq_entries(addr)[0];
    assert_eq!(e["event"]["id"], b);
    assert_eq!(
        e["error_message"],
        "connection closed before acknowledgement"
    );
    // Back with the last id it acknowledged: the unacknowledged one comes again.
    let (mut again, w) = subscribe(
        addr,
        &format!("?ack=critical&last_event_id={a}&epoch={epoch}"),
    );
    assert_eq!(w["recovered"], true);
    assert_eq!(next_json(&mut again)["id"], b);
}

#[test]
fn acks_need_a_websocket_and_a_known_class() {
    let bridge = server(|_| {});
    let addr = bridge.local_addr();
    let (status, _, body) = http_raw(
        addr,
        b"GET /sse/events?ack=all HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("use /ws/events"));
    let req = "GET /ws/events?ack=maybe HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    let (status, _, body) = http_raw(addr, req.as_bytes());
    assert_eq!(status, 400);
    assert!(
        String::from_utf8_lossy(&body).contains("use critical"),
        "{}",
        String::from_utf8_lossy(&body)
    );
}
