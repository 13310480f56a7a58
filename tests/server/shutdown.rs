//! Graceful shutdown: no new connections, queued events drained within `--drain-timeout`,
//! then every WebSocket closed with 1001 and the last id it was given, so it can resume.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::Message;

use crate::support::*;
use firehose::Event;

type Read = tungstenite::Result<Message>;

/// Reads to the close frame: the event ids, the `closing` notice's `last_id`, the close.
fn read_to_close(ws: &mut Ws) -> (Vec<u64>, Option<u64>, tungstenite::protocol::CloseFrame) {
    read_to_close_with(ws, &mut |ws: &mut Ws| ws.read())
}

fn read_to_close_with(
    ws: &mut Ws,
    read: &mut dyn FnMut(&mut Ws) -> Read,
) -> (Vec<u64>, Option<u64>, tungstenite::protocol::CloseFrame) {
    let (mut ids, mut closing) = (Vec::new(), None);
    loop {
        match read(ws).expect("read until the close frame") {
            Message::Text(t) => {
                let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                match v["op"].as_str() {
                    None => ids.push(v["id"].as_u64().unwrap()),
                    Some("closing") => {
                        assert_eq!(v["reason"], "server shutting down");
                        closing = v["last_id"].as_u64();
                    }
                    Some(_) => {}
                }
            }
            Message::Close(Some(f)) => return (ids, closing, f),
            _ => {}
        }
    }
}

#[test]
fn shutdown_delivers_what_is_queued_then_closes_with_the_last_id() {
    const N: u64 = 3_000;
    let bridge = server(|c| {
        c.queue_capacity = 10_000;
        c.queue_max_bytes = 16 << 20;
        c.drain_timeout = Duration::from_secs(20);
    });
    let addr = bridge.local_addr();
    // A client that reads nothing until shutdown has begun: its events wait in the queue.
    let (mut ws, _) = small_window_subscriber(addr, "");
    let bus = bridge.bus().clone();
    let pad = serde_json::json!({"pad": "x".repeat(200)});
    for _ in 0..N {
        bus.publish(Event::new("a.b", "t").with_payload(&pad).unwrap())
            .unwrap();
    }
    assert!(eventually(Duration::from_secs(5), || {
        bridge.engine().snapshot().delivered > 0
    }));
    let stopper = thread::spawn(move || bridge.shutdown());
    thread::sleep(Duration::from_millis(300));
    // New connections are refused while it drains.
    assert!(
        std::net::TcpStream::connect(addr).is_err() || http_json(addr, "GET", "/health", "").0 == 0,
        "no new connection is served during shutdown"
    );
    let (ids, closing, close) = read_to_close(&mut ws);
    assert_eq!(
        ids,
        (1..=N).collect::<Vec<_>>(),
        "everything queued arrives"
    );
    assert_eq!(closing, Some(N));
    assert_eq!(close.code, CloseCode::Away);
    assert_eq!(close.reason, format!("server shutting down; last_id={N}"));
    stopper.join().unwrap();
}

#[test]
fn a_drain_timeout_bounds_shutdown_and_the_close_says_where_to_resume() {
    const N: u64 = 5_000;
    let bridge = server(|c| {
        c.queue_capacity = 10_000;
        c.queue_max_bytes = 16 << 20;
        c.drain_timeout = Duration::from_millis(200);
    });
    let addr = bridge.local_addr();
    let (mut ws, welcome) = small_window_subscriber(addr, "");
    let epoch = welcome["epoch"].as_u64().unwrap();
    let bus = bridge.bus().clone();
    let pad = serde_json::json!({"pad": "x".repeat(500)});
    for _ in 0..N {
        bus.publish(Event::new("a.b", "t").with_payload(&pad).unwrap())
            .unwrap();
    }
    // The client reads slowly through the 200 ms drain, then at full speed, so the close
    // frame (which waits behind what the kernel already holds) reaches it. At full speed it
    // also takes a normal receive buffer: the server's kernel may hold megabytes for it by
    // then, and through a 4 KiB buffer they trickle in at a zero-window probe's pace (`ss`
    // showed 2.9 MB left, a 2 KB window and the persist timer: minutes to drain).
    let slow = Arc::new(AtomicBool::new(true));
    let reader = {
        let slow = Arc::clone(&slow);
        thread::spawn(move || {
            let mut widened = false;
            let mut slowly = |ws: &mut Ws| {
                if slow.load(Ordering::Relaxed) {
                    thread::sleep(Duration::from_millis(2));
                } else if !widened {
                    widened = true;
                    socket2::SockRef::from(ws.get_ref())
                        .set_recv_buffer_size(1 << 20)
                        .unwrap();
                }
                ws.read()
            };
            read_to_close_with(&mut ws, &mut slowly)
        })
    };
    let started = Instant::now();
    let stopper = thread::spawn(move || bridge.shutdown());
    thread::sleep(Duration::from_millis(250));
    slow.store(false, Ordering::Relaxed);
    stopper.join().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let (ids, closing, close) = reader.join().unwrap();
    let last = *ids.last().unwrap();
    assert!(
        last < N,
        "the stalled client could not take everything in 200 ms"
    );
    assert_eq!(ids, (1..=last).collect::<Vec<_>>());
    assert_eq!(
        closing,
        Some(last),
        "the notice names the last event delivered"
    );
    assert_eq!(close.code, CloseCode::Away);
    assert_eq!(
        close.reason,
        format!("server shutting down; last_id={last}")
    );
    // The restarted server is another epoch: the client is told it recovered nothing.
    let next = server(|_| {});
    let (_, w) = subscribe(
        next.local_addr(),
        &format!("?last_event_id={last}&epoch={epoch}"),
    );
    assert_eq!(w["recovered"], false);
    assert_eq!(w["reason"], "other_epoch");
}

#[test]
fn shutdown_closes_idle_subscribers_at_once_with_going_away() {
    let bridge = server(|_| {});
    let (mut ws, _) = subscribe(bridge.local_addr(), "");
    let started = Instant::now();
    let stopper = thread::spawn(move || bridge.shutdown());
    let close = read_close(&mut ws);
    assert_eq!(close.code, CloseCode::Away);
    assert_eq!(close.reason, "server shutting down; last_id=0");
    stopper.join().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "nothing to drain: no wait"
    );
}
