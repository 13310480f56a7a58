//! Server-Sent Events over a real streaming HTTP client (a plain socket reading records as
//! they arrive): headers, the welcome, filtered events with `EPOCH:ID` ids, resume by
//! `Last-Event-ID`, heartbeats, and the closing record at shutdown.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;

use crate::support::*;
use firehose::Event;

/// A streaming SSE client: the response head, then one record at a time.
struct Stream {
    sock: TcpStream,
    buf: Vec<u8>,
}

/// One record: its fields (`id`, `event`, `data`, `retry`), or a comment.
#[derive(Debug, Default)]
struct Record {
    fields: HashMap<String, String>,
    comment: Option<String>,
}

impl Record {
    fn data(&self) -> Value {
        serde_json::from_str(&self.fields["data"]).expect("data is JSON")
    }
}

impl Stream {
    /// Opens `GET /sse/events?{query}` with extra header lines; returns the stream and the
    /// response head.
    fn open(addr: SocketAddr, query: &str, headers: &str) -> (Self, String) {
        let mut sock = TcpStream::connect(addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        write!(
            sock,
            "GET /sse/events?{query} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n{headers}\r\n"
        )
        .unwrap();
        let mut s = Self {
            sock,
            buf: Vec::new(),
        };
        let head = s.until(b"\r\n\r\n");
        (s, String::from_utf8(head).unwrap())
    }

    /// Reads until `delim`; returns what came before it (consumed with it).
    fn until(&mut self, delim: &[u8]) -> Vec<u8> {
        loop {
            if let Some(at) = find(&self.buf, delim) {
                let out = self.buf[..at].to_vec();
                self.buf.drain(..at + delim.len());
                return out;
            }
            let mut chunk = [0u8; 4096];
            let n = self.sock.read(&mut chunk).expect("stream read");
            assert!(
                n > 0,
                "stream ended; so far: {:?}",
                String::from_utf8_lossy(&self.buf)
            );
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn record(&mut self) -> Record {
        let raw = String::from_utf8(self.until(b"\n\n")).unwrap();
        let mut r = Record::default();
        for line in raw.lines() {
            if let Some(c) = line.strip_prefix(':') {
                r.comment = Some(c.trim().to_owned());
            } else if let Some((k, v)) = line.split_once(": ") {
                r.fields.insert(k.to_owned(), v.to_owned());
            } else {
                panic!("malformed line {line:?}");
            }
        }
        r
    }

    /// The next event record (skipping comments and `backlog`), checking no other notice
    /// comes first.
    fn event(&mut self) -> Record {
        loop {
            let r = self.record();
            match r.fields.get("event").map(String::as_str) {
                _ if r.comment.is_some() => continue,
                Some("backlog") => continue,
                Some(other) => panic!("unexpected notice {other}: {r:?}"),
                None => return r,
            }
        }
    }
}

#[test]
fn sse_streams_filtered_events_with_resumable_ids() {
    let bridge = server(|_| {});
    let addr = bridge.local_addr();
    let bus = bridge.bus().clone();
    let (mut s, head) = Stream::open(addr, "types=a.*", "");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    for h in [
        "Content-Type: text/event-stream",
        "Cache-Control: no-cache",
        "X-Accel-Buffering: no",
    ] {
        assert!(head.contains(h), "{h} in {head}");
    }
    assert_eq!(s.record().fields["retry"], "2000");
    let welcome = s.record();
    assert_eq!(welcome.fields["event"], "welcome");
    let w = welcome.data();
    assert_eq!(
        (w["op"].as_str(), w["epoch"].as_u64()),
        (Some("welcome"), Some(bus.epoch()))
    );
    let mut ids = Vec::new();
    for t in ["a.x", "b.y", "a.z"] {
        ids.push(bus.publish(Event::new(t, "test")).unwrap());
    }
    for (want, t) in [(ids[0], "a.x"), (ids[2], "a.z")] {
        let r = s.event();
        assert_eq!(r.fields["id"], format!("{}:{want}", bus.epoch()));
        let v = r.data();
        assert_eq!(
            (v["id"].as_u64(), v["event_type"].as_str()),
            (Some(want), Some(t))
        );
    }
    // The admin view lists it as an SSE subscriber.
    let (_, conns) = http_json(addr, "GET", "/connections", "");
    let list = conns["connections"].as_array().unwrap();
    assert!(list.iter().any(|c| c["transport"] == "sse"), "{conns}");
    assert_eq!(bridge.engine().snapshot().sse_connected_clients, 1);
}

#[test]
fn sse_resumes_from_the_last_event_id_header_like_a_reconnecting_event_source() {
    let bridge = server(|c| c.queue_capacity = 8);
    let addr = bridge.local_addr();
    let bus = bridge.bus().clone();
    let ids: Vec<u64> = (0..200)
        .map(|_| bus.publish(Event::new("a.b", "test")).unwrap())
        .collect();
    // The URL's (stale) parameters lose to the header a reconnecting EventSource sends.
    let header = format!("Last-Event-ID: {}:{}\r\n", bus.epoch(), ids[49]);
    let (mut s, _) = Stream::open(addr, "last_event_id=3&epoch=1", &header);
    s.record(); // retry
    let w = s.record().data();
    assert_eq!(
        (w["recovered"].as_bool(), w["last_id"].as_u64()),
        (Some(true), Some(ids[49]))
    );
    // 150 events through an 8-event queue: replay is paced, nothing dropped.
    for want in &ids[50..] {
        assert_eq!(s.event().data()["id"].as_u64(), Some(*want));
    }
    // The query form, and a resume from before retention would be told as for WebSocket.
    let (mut q, _) = Stream::open(
        addr,
        &format!("last_event_id={}&epoch={}", ids[197], bus.epoch()),
        "",
    );
    q.record();
    assert_eq!(q.record().data()["recovered"], true);
    assert_eq!(q.event().data()["id"].as_u64(), Some(ids[198]));
    // A bad id is refused before the stream starts.
    let (status, _, body) = http_raw(
        addr,
        b"GET /sse/events HTTP/1.1\r\nHost: x\r\nLast-Event-ID: yesterday\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("not an event id"));
}

#[test]
fn sse_sends_heartbeats_and_a_closing_record_at_shutdown() {
    let bridge = server(|c| c.ping_interval = Duration::from_millis(300));
    let addr = bridge.local_addr();
    let (mut s, _) = Stream::open(addr, "", "");
    s.record();
    s.record();
    let beat = s.record();
    assert_eq!(beat.comment.as_deref(), Some("heartbeat"), "{beat:?}");
    let id = bridge.bus().publish(Event::new("x", "test")).unwrap();
    assert_eq!(s.event().data()["id"].as_u64(), Some(id));
    let stopper = std::thread::spawn(move || bridge.shutdown());
    let closing = loop {
        let r = s.record();
        if r.comment.is_none() {
            break r;
        }
    };
    assert_eq!(closing.fields["event"], "closing");
    let c = closing.data();
    assert_eq!(
        (c["reason"].as_str(), c["last_id"].as_u64()),
        (Some("server shutting down"), Some(id))
    );
    let mut rest = Vec::new();
    s.sock.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "the stream ends after the closing record");
    stopper.join().unwrap();
}
