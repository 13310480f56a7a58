//! Shared client helpers.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use firehose::{Bridge, Builder, Bus, Config, Event, Filter};
use serde_json::Value;
use tungstenite::{Message, WebSocket};

pub type Ws = WebSocket<TcpStream>;

/// A server on a free port with 2 unpinned I/O threads and `tweak` applied.
pub fn server(tweak: impl FnOnce(&mut Config)) -> Bridge {
    let mut config = Config {
        port: 0,
        io_threads: 2,
        pin_threads: false,
        ..Config::default()
    };
    tweak(&mut config);
    Builder::default()
        .config(config)
        .start()
        .expect("server starts")
}

/// Connects a WebSocket subscriber with `query` and returns it with its welcome notice.
pub fn subscribe(addr: SocketAddr, query: &str) -> (Ws, Value) {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let url = format!("ws://{addr}/ws/events{query}");
    let (mut ws, resp) = tungstenite::client::client(url.as_str(), stream).expect("handshake");
    assert_eq!(resp.status(), 101);
    let welcome = next_json(&mut ws);
    assert_eq!(welcome["op"], "welcome", "{welcome}");
    (ws, welcome)
}

/// A subscriber (with `query`) whose socket takes only a few KB before the server must
/// queue; returned with its welcome notice.
pub fn small_window_subscriber(addr: SocketAddr, query: &str) -> (Ws, Value) {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&addr.into()).unwrap();
    let stream: TcpStream = sock.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let url = format!("ws://{addr}/ws/events{query}");
    let (mut ws, _) = tungstenite::client::client(url.as_str(), stream).unwrap();
    let welcome = next_json(&mut ws);
    assert_eq!(welcome["op"], "welcome", "{welcome}");
    (ws, welcome)
}

/// The next text message as JSON (pings are answered by tungstenite and skipped).
pub fn next_json(ws: &mut Ws) -> Value {
    loop {
        match ws.read().expect("read a message") {
            Message::Text(t) => return serde_json::from_str(&t).expect("JSON text"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected message {other:?}"),
        }
    }
}

/// Whether a message is a `backlog` notice: it reports the queue's state, not a loss.
pub fn is_backlog(v: &Value) -> bool {
    v["op"] == "backlog"
}

/// The next event (skipping control notices, which are returned through `notices`;
/// `backlog` notices are skipped altogether).
pub fn next_event(ws: &mut Ws, notices: &mut Vec<Value>) -> Value {
    loop {
        let v = next_json(ws);
        if is_backlog(&v) {
            continue;
        }
        if v.get("op").is_some() {
            notices.push(v);
        } else {
            return v;
        }
    }
}

/// The types of the next `n` events; fails on any notice in between.
pub fn next_types(ws: &mut Ws, n: usize) -> Vec<String> {
    let mut notices = Vec::new();
    let types = (0..n)
        .map(|_| {
            next_event(ws, &mut notices)["event_type"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(notices.is_empty(), "{notices:?}");
    types
}

/// Reads until `count` ids starting at `first` are accounted for, and checks that each was
/// either received (in increasing order) or inside exactly one `dropped` notice whose count
/// matches its range. Returns (how many were reported dropped, the last id received).
pub fn account_for_ids(ws: &mut Ws, first: u64, count: u64) -> (u64, u64) {
    let mut covered = vec![0u8; count as usize];
    let (mut seen, mut missed, mut last_event) = (0, 0, 0);
    let mut cover = |id: u64| covered[(id - first) as usize] += 1;
    while seen < count {
        let v = next_json(ws);
        if is_backlog(&v) {
            continue;
        }
        if v["op"] == "dropped" {
            let (a, b) = (
                v["first_id"].as_u64().unwrap(),
                v["last_id"].as_u64().unwrap(),
            );
            assert_eq!(v["count"].as_u64().unwrap(), b - a + 1, "{v}");
            (a..=b).for_each(&mut cover);
            seen += b - a + 1;
            missed += b - a + 1;
        } else {
            assert!(v.get("op").is_none(), "unexpected notice {v}");
            let id = v["id"].as_u64().unwrap();
            assert!(id > last_event, "ids increase");
            last_event = id;
            cover(id);
            seen += 1;
        }
    }
    assert!(
        covered.iter().all(|c| *c == 1),
        "every id received or reported exactly once"
    );
    (missed, last_event)
}

/// Reads until the server's close frame (skipping other messages) and returns it.
pub fn read_close(ws: &mut Ws) -> tungstenite::protocol::CloseFrame {
    loop {
        match ws.read() {
            Ok(Message::Close(Some(f))) => return f,
            Ok(_) => continue,
            Err(e) => panic!("expected a close frame, got {e}"),
        }
    }
}

/// Sends a JSON text message.
pub fn send_json(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).unwrap();
}

/// One HTTP exchange on a fresh connection: returns (status, headers, body).
pub fn http_raw(addr: SocketAddr, request: &[u8]) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
        if let Some(head_end) = find(&out, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&out[..head_end]).to_string();
            let len = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if out.len() >= head_end + 4 + len {
                let status = head[9..12].parse().unwrap();
                return (status, head, out[head_end + 4..head_end + 4 + len].to_vec());
            }
        }
    }
    panic!(
        "incomplete HTTP response: {:?}",
        String::from_utf8_lossy(&out)
    );
}

/// `METHOD path` with a JSON body; returns (status, JSON body).
pub fn http_json(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, Value) {
    let req = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    let (status, _, body) = http_raw(addr, req.as_bytes());
    (status, serde_json::from_slice(&body).expect("JSON body"))
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Polls `cond` until it holds or `timeout` passes.
pub fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}

/// A raw TCP connection upgraded to WebSocket by hand (for sending what tungstenite won't).
pub fn raw_ws(addr: SocketAddr, query: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let req = format!(
        "GET /ws/events{query} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes()).unwrap();
    // Read the 101 and the welcome frame.
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while find(&got, b"\"op\":\"welcome\"").is_none() {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed during handshake");
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got.starts_with(b"HTTP/1.1 101"));
    s
}

/// A masked client frame.
pub fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    firehose::ws::frame::encode_masked(
        &mut out,
        if fin { 0x80 | opcode } else { opcode },
        payload,
        [0x37, 0xfa, 0x21, 0x3d],
    );
    out
}

/// Reads server frames from a raw stream until a close frame; returns (code, reason).
pub fn read_until_close(s: &mut TcpStream) -> (u16, String) {
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        let mut at = 0;
        while let Some((head, payload, used)) = firehose::ws::frame::parse_unmasked(&got[at..]) {
            if head & 0x0F == 0x8 {
                let code = if payload.len() >= 2 {
                    u16::from_be_bytes([payload[0], payload[1]])
                } else {
                    1005
                };
                let reason =
                    String::from_utf8_lossy(payload.get(2..).unwrap_or_default()).to_string();
                return (code, reason);
            }
            at += used;
        }
        got.drain(..at);
        match s.read(&mut buf) {
            Ok(0) => panic!("connection closed without a close frame"),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!("read failed: {e}"),
        }
    }
}

/// Publishes `ev` `n` times, never more than `window` events ahead of `progress` (how many
/// a reading client has taken), so that client can never be the one to overflow.
pub fn publish_in_step(bus: &Bus, ev: &Event, n: u64, window: u64, progress: &AtomicU64) {
    for sent in 1..=n {
        bus.publish(ev.clone()).unwrap();
        if sent % window == 0 {
            assert!(eventually(Duration::from_secs(20), || progress
                .load(Ordering::Acquire)
                + window
                >= sent));
        }
    }
}

/// An in-process subscriber `name` that counts the events `filter` lets through.
pub fn counting_subscriber(bus: &Bus, name: &str, filter: Filter) -> Arc<AtomicU64> {
    let count = Arc::new(AtomicU64::new(0));
    let c = Arc::clone(&count);
    bus.subscribe(name, filter, move |_| {
        c.fetch_add(1, Ordering::Relaxed);
        Ok::<(), String>(())
    })
    .unwrap();
    count
}

/// An in-process subscriber `name` that fails every event with "refused".
pub fn refusing_subscriber(bus: &Bus, name: &str) {
    bus.subscribe(name, Filter::all(), |_| Err("refused"))
        .unwrap();
}
