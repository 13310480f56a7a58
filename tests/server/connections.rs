//! `GET /connections` and `/connections/{id}/recent` against clients whose state is known:
//! one that reads everything, one whose socket stalls so its queue overflows.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use firehose::Event;
use serde_json::Value;

use crate::support::*;

fn list(addr: SocketAddr, query: &str) -> Value {
    let (status, body) = http_json(addr, "GET", &format!("/connections{query}"), "");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["partial"], false, "{body}");
    body
}

fn by_id(list: &Value, id: &Value) -> Value {
    list["connections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == *id)
        .cloned()
        .unwrap_or_else(|| panic!("connection {id} in {list}"))
}

#[test]
fn connections_show_each_clients_state_and_last_events() {
    const N: u64 = 400;
    let bridge = server(|c| c.queue_capacity = 10);
    let addr = bridge.local_addr();
    let (mut healthy, hello) = subscribe(addr, "?types=c.*,other.kind");
    let healthy_id = hello["connection_id"].clone();
    let (mut stalled, hello) = small_window_subscriber(addr, "?overflow=drop-oldest");
    let stalled_id = hello["connection_id"].clone();

    let ev = Event::new("c.big", "test")
        .with_payload(&"x".repeat(20_000))
        .unwrap();
    let progress = AtomicU64::new(0);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut notices = Vec::new();
            for i in 1..=N {
                assert_eq!(next_event(&mut healthy, &mut notices)["id"], i);
                progress.store(i, std::sync::atomic::Ordering::Release);
            }
        });
        publish_in_step(bridge.bus(), &ev, N, 5, &progress);
    });

    // The stalled client's queue is full and it has lost events; the healthy one has all.
    // Each may be on its own I/O thread, so wait until both have routed all N: a busy
    // machine can hold the stalled client's thread back after the healthy one is done.
    let mut seen = Value::Null;
    let routed_all = |c: &Value| {
        let n = |k: &str| c[k].as_u64().unwrap_or(0);
        n("delivered") + n("dropped") + n("queue_depth") >= N
    };
    assert!(
        eventually(Duration::from_secs(10), || {
            seen = list(addr, "");
            by_id(&seen, &healthy_id)["delivered"] == N && routed_all(&by_id(&seen, &stalled_id))
        }),
        "{seen}"
    );
    assert_eq!(seen["total"], 2, "{seen}");
    assert!(
        seen["http_connections"].as_u64().unwrap() >= 1,
        "this request's own"
    );
    let h = by_id(&seen, &healthy_id);
    assert_eq!(h["transport"], "websocket");
    assert_eq!(h["filters"], serde_json::json!(["c.*", "other.kind"]));
    assert_eq!(h["policy"], "drop-newest");
    assert_eq!(
        (h["queue_depth"].clone(), h["dropped"].clone()),
        (0.into(), 0.into())
    );
    assert_eq!(h["state"], "ok");
    assert_eq!(
        h["remote"],
        healthy.get_ref().local_addr().unwrap().to_string()
    );
    assert!(h["last_message_age_ms"].as_f64().unwrap() >= 0.0, "{h}");
    let st = by_id(&seen, &stalled_id);
    assert_eq!(st["policy"], "drop-oldest");
    assert_eq!(
        st["filters"],
        serde_json::json!(["*"]),
        "no types: everything"
    );
    assert_eq!(st["state"], "backpressure", "{st}");
    // A full 10-event queue, plus the frame a short write stopped inside, if any.
    let depth = st["queue_depth"].as_u64().unwrap();
    assert!((10..=11).contains(&depth), "{st}");
    let dropped = st["dropped"].as_u64().unwrap();
    assert!(dropped > 0, "{st}");
    assert_eq!(
        st["delivered"].as_u64().unwrap() + dropped + depth,
        N,
        "every event is written, lost or queued: {st}"
    );

    let only = list(addr, "?state=backpressure");
    assert_eq!(only["total"], 1, "{only}");
    assert_eq!(only["connections"][0]["id"], stalled_id);
    assert_eq!(
        list(addr, "?limit=1")["connections"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // The last 10 events written to the healthy client, newest first, in full.
    let (status, recent) = http_json(
        addr,
        "GET",
        &format!("/connections/{healthy_id}/recent"),
        "",
    );
    assert_eq!(status, 200, "{recent}");
    let ids: Vec<u64> = recent["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert_eq!(e["event_type"], "c.big");
            assert_eq!(e["payload"].as_str().map(str::len), Some(20_000));
            e["id"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(ids, (N - 9..=N).rev().collect::<Vec<_>>());
    assert_eq!(recent["connection"]["id"], healthy_id);

    // Once the stalled client reads, what it missed is exactly what the list said it lost.
    let (missed, _) = account_for_ids(&mut stalled, 1, N);
    assert_eq!(missed, dropped);
    assert!(eventually(Duration::from_secs(10), || {
        let st = by_id(&list(addr, ""), &stalled_id);
        st["state"] == "ok" && st["delivered"] == N - missed && st["queue_depth"] == 0
    }));
    drop(healthy);
    assert!(eventually(Duration::from_secs(10), || list(addr, "")
        ["total"]
        == 1));
}

#[test]
fn connection_queries_that_cannot_be_answered() {
    let bridge = server(|_| {});
    let addr = bridge.local_addr();
    for (method, path, status) in [
        ("GET", "/connections/999999/recent", 404),
        ("GET", "/connections/abc/recent", 404),
        ("GET", "/connections/1", 404),
        ("POST", "/connections", 405),
        ("DELETE", "/connections/1/recent", 405),
        ("GET", "/connections?limit=0", 400),
        ("GET", "/connections?state=sleepy", 400),
    ] {
        let (got, body) = http_json(addr, method, path, "");
        assert_eq!(got, status, "{method} {path}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{body}"
        );
    }
}

#[test]
fn requests_pipelined_behind_a_connection_list_keep_their_order() {
    let bridge = server(|_| {});
    let addr = bridge.local_addr();
    let (_sub, _) = subscribe(addr, "");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(
        b"GET /connections HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /health HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /connections?limit=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert_eq!(text.matches("HTTP/1.1 200").count(), 3, "{text}");
    let first = text.find("\"connections\"").unwrap();
    let health = text.find("\"uptime_s\"").unwrap();
    let last = text.rfind("\"connections\"").unwrap();
    assert!(first < health && health < last, "{text}");
}

#[test]
fn socket_send_buffer_sets_each_connections_kernel_buffer() {
    let bridge = server(|c| c.socket_send_buffer = Some(50_000));
    let addr = bridge.local_addr();
    let (_ws, hello) = subscribe(addr, "");
    let seen = list(addr, "");
    // Linux doubles SO_SNDBUF for its bookkeeping (socket(7)) and reports that.
    assert_eq!(
        by_id(&seen, &hello["connection_id"])["send_buffer"],
        100_000,
        "{seen}"
    );
    // Unset, the kernel's autotuned size shows instead.
    let bridge = server(|_| {});
    let (_ws, hello) = subscribe(bridge.local_addr(), "");
    let seen = list(bridge.local_addr(), "");
    let default = &by_id(&seen, &hello["connection_id"])["send_buffer"];
    assert!(
        default.as_u64().is_some_and(|b| b > 0 && b != 100_000),
        "{seen}"
    );
}

/// Every I/O thread's listener takes connections: the first socket binds alone, then
/// opens the port to its siblings (`src/io/listener.rs`), and the kernel spreads new
/// connections over all of them. 32 connections all on one of 2 threads would be a
/// 1-in-2³¹ chance if the spread worked.
#[test]
fn connections_spread_over_every_io_thread() {
    let bridge = server(|_| {});
    let addr = bridge.local_addr();
    let clients: Vec<_> = (0..32).map(|_| subscribe(addr, "").0).collect();
    let listed = list(addr, "?limit=100");
    let mut threads: Vec<u64> = listed["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["io_thread"].as_u64().unwrap())
        .collect();
    assert_eq!(threads.len(), clients.len(), "{listed}");
    threads.sort_unstable();
    threads.dedup();
    assert_eq!(threads, [0, 1], "{listed}");
    bridge.shutdown();
}
