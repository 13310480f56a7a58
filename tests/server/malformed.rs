//! Bad input gets a clear answer, never a panic, and loses nothing else.

use std::io::Write;

use serde_json::{json, Value};

use crate::support::*;
use firehose::Event;

fn error_of(body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).expect("JSON error body");
    v["error"].as_str().expect("error field").to_owned()
}

#[test]
fn bad_http_gets_json_errors_with_the_right_status() {
    let bridge = server(|c| {
        c.max_header_bytes = 2048;
        c.max_body_bytes = 1000;
    });
    let addr = bridge.local_addr();
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (b"\x16\x03\x01 not http\r\n\r\n".to_vec(), 400, "malformed"),
        (format!("GET /health HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(3000)).into_bytes(), 431, "limit"),
        (b"POST /publish HTTP/1.1\r\nContent-Length: 5000\r\n\r\n".to_vec(), 413, "limit"),
        (b"POST /publish HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(), 411, "Content-Length"),
        (b"POST /publish HTTP/1.1\r\nContent-Length: 3\r\n\r\n{x}".to_vec(), 400, "not an event"),
        (b"GET /nope HTTP/1.1\r\n\r\n".to_vec(), 404, "no route"),
        (b"DELETE /publish HTTP/1.1\r\n\r\n".to_vec(), 405, "not allowed"),
        (b"GET /ws/events HTTP/1.1\r\n\r\n".to_vec(), 426, "WebSocket"),
        (
            b"GET /ws/events HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: short\r\nSec-WebSocket-Version: 13\r\n\r\n".to_vec(),
            400,
            "Sec-WebSocket-Key",
        ),
        (
            b"GET /ws/events HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n".to_vec(),
            426,
            "version 13",
        ),
        (
            b"GET /ws/events?tpyes=a HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".to_vec(),
            400,
            "unknown query parameter",
        ),
        (
            b"GET /ws/events?types=a*b HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".to_vec(),
            400,
            "types",
        ),
    ];
    for (req, status, needle) in cases {
        let (got, head, body) = http_raw(addr, &req);
        assert_eq!(
            got,
            status,
            "{:?}",
            String::from_utf8_lossy(&req[..req.len().min(60)])
        );
        assert!(head.contains("application/json"));
        let msg = error_of(&body);
        assert!(
            msg.contains(needle),
            "{status}: {msg:?} should mention {needle:?}"
        );
    }
    // The server is still fine.
    assert_eq!(http_json(addr, "GET", "/health", "").0, 200);
}

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let bridge = server(|_| {});
    let addr = bridge.local_addr();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let body = r#"{"event_type":"a","source":"s"}"#;
    let req = format!(
        "POST /publish HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    // Two pipelined requests, then a health check that closes.
    s.write_all(format!("{req}{req}GET /health HTTP/1.1\r\nConnection: close\r\n\r\n").as_bytes())
        .unwrap();
    let mut out = String::new();
    std::io::Read::read_to_string(&mut s, &mut out).unwrap();
    assert_eq!(out.matches("HTTP/1.1 200 OK").count(), 3, "{out}");
    assert!(out.contains(r#"{"ids":[1]}"#) && out.contains(r#"{"ids":[2]}"#));
}

#[test]
fn websocket_protocol_violations_close_with_the_right_code() {
    let bridge = server(|c| c.max_message_bytes = 1024);
    let addr = bridge.local_addr();
    let mut unmasked = vec![0x81, 0x02];
    unmasked.extend_from_slice(b"hi");
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (unmasked, 1002),
        (client_frame(true, 0x2, b"\x00\x01"), 1003),
        (client_frame(true, 0x1, b"\xff\xfe"), 1007),
        (client_frame(true, 0x1, &[b'a'; 2000]), 1009),
        (
            [
                client_frame(false, 0x1, &[b'a'; 600]),
                client_frame(true, 0x0, &[b'a'; 600]),
            ]
            .concat(),
            1009,
        ),
        (client_frame(true, 0x0, b"stray"), 1002),
        (client_frame(true, 0x3, b""), 1002),
        (client_frame(false, 0x9, b""), 1002),
        (
            {
                let mut f = client_frame(true, 0x1, b"x");
                f[0] |= 0x40;
                f
            },
            1002,
        ),
    ];
    for (bytes, code) in cases {
        let mut s = raw_ws(addr, "");
        s.write_all(&bytes).unwrap();
        let (got, reason) = read_until_close(&mut s);
        assert_eq!(got, code, "reason {reason:?}");
        assert!(!reason.is_empty());
    }
    // Nobody else was disturbed.
    let (mut ws, _) = subscribe(addr, "");
    bridge.bus().publish(Event::new("still.ok", "t")).unwrap();
    assert_eq!(
        next_event(&mut ws, &mut Vec::new())["event_type"],
        "still.ok"
    );
}

#[test]
fn bad_control_messages_are_answered_and_the_connection_stays() {
    let bridge = server(|_| {});
    let (mut ws, _) = subscribe(bridge.local_addr(), "");
    ws.send(tungstenite::Message::text("not json")).unwrap();
    let e = next_json(&mut ws);
    assert_eq!(e["op"], "error");
    assert!(e["error"].as_str().unwrap().contains("JSON"));
    send_json(&mut ws, json!({"op":"teleport","ref":"x"}));
    let e = next_json(&mut ws);
    assert_eq!(
        (e["op"].as_str(), e["ref"].as_str()),
        (Some("error"), Some("x"))
    );
    assert!(e["error"].as_str().unwrap().contains("unknown op"));
    // A fragmented publish within the limit is reassembled.
    let (mut raw, _) = (raw_ws(bridge.local_addr(), "?types=frag"), ());
    let msg = br#"{"op":"publish","event_type":"frag","source":"s","ref":1}"#;
    raw.write_all(
        &[
            client_frame(false, 0x1, &msg[..10]),
            client_frame(true, 0x9, b"p"),
            client_frame(true, 0x0, &msg[10..]),
        ]
        .concat(),
    )
    .unwrap();
    let mut notices = Vec::new();
    assert_eq!(next_event(&mut ws, &mut notices)["event_type"], "frag");
}

/// Reads from `s` until `needle` has arrived (or the read times out); returns everything.
fn read_until(s: &mut std::net::TcpStream, needle: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while find(&out, needle).is_none() {
        match std::io::Read::read(s, &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    out
}

#[test]
fn expect_100_continue_is_answered_before_the_body() {
    // Without the interim answer the client waits (curl: one second) and this server
    // would wait for the body until the handshake timeout.
    let bridge = server(|c| {
        c.handshake_timeout = std::time::Duration::from_secs(5);
        c.max_body_bytes = 1000;
    });
    let addr = bridge.local_addr();
    let body = r#"{"event_type":"a.b","source":"s"}"#;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let head = |expect: &str, len: usize| {
        format!("POST /publish HTTP/1.1\r\nHost: x\r\nExpect: {expect}\r\nContent-Length: {len}\r\n\r\n")
    };
    // Twice on one connection: each request gets its own 100.
    for id in 1..=2 {
        s.write_all(head("100-Continue", body.len()).as_bytes())
            .unwrap();
        let interim = read_until(&mut s, b"\r\n\r\n");
        assert_eq!(
            String::from_utf8_lossy(&interim),
            "HTTP/1.1 100 Continue\r\n\r\n"
        );
        s.write_all(body.as_bytes()).unwrap();
        let answer = read_until(&mut s, format!(r#"{{"ids":[{id}]}}"#).as_bytes());
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        assert!(!answer.contains("100 Continue"), "{answer}");
    }

    // A body sent with the head anyway needs no 100.
    let (status, head_text, _) = http_raw(
        addr,
        format!("{}{body}", head("100-continue", body.len())).as_bytes(),
    );
    assert_eq!(status, 200, "{head_text}");

    // Too large: the final answer at once, and no 100.
    let (status, head_text, answer) = http_raw(addr, head("100-continue", 5000).as_bytes());
    assert_eq!(status, 413, "{head_text}");
    assert!(error_of(&answer).contains("limit"));

    // An expectation the server cannot meet is refused, saying which.
    let (status, _, answer) = http_raw(addr, head("bananas", body.len()).as_bytes());
    assert_eq!(status, 417);
    let msg = error_of(&answer);
    assert!(
        msg.contains("bananas") && msg.contains("100-continue"),
        "{msg}"
    );

    // HTTP/1.0 clients cannot wait for a 100: the header is ignored (RFC 9110, 10.1.1).
    let (status, _, _) = http_raw(
        addr,
        format!(
            "POST /publish HTTP/1.0\r\nExpect: bananas\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    assert_eq!(status, 200);
}

#[test]
fn an_absolute_form_target_is_served_as_its_path() {
    let bridge = server(|_| {});
    let addr = bridge.local_addr();
    let request = format!("GET http://{addr}/health HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    let (status, head, body) = http_raw(addr, request.as_bytes());
    assert_eq!(status, 200, "{head}");
    let health: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(health["status"], "ok");
}

#[test]
fn misspelt_or_repeated_query_parameters_are_refused_and_repeated_types_joined() {
    let bridge = server(|_| {});
    let addr = bridge.local_addr();
    for (path, says) in [
        (
            "/spans/recent?trace=4bf92f3577b34da6a3ce929d0e0e4736",
            "unknown query parameter \"trace\"",
        ),
        (
            "/connections?status=ok",
            "unknown query parameter \"status\"",
        ),
        ("/dlq/entries?limit=1&limit=2", "\"limit\" is given twice"),
        (
            "/sse/events?overflow=drop-oldest&overflow=priority",
            "\"overflow\" is given twice",
        ),
    ] {
        let (status, body) = http_json(addr, "GET", path, "");
        assert_eq!(status, 400, "{path}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(says),
            "{path}: {body}"
        );
    }
    let (mut ws, welcome) = subscribe(addr, "?types=a.*&types=b.x");
    assert_eq!(welcome["types"], json!(["a.*", "b.x"]));
    for t in ["b.x", "c.x", "a.y"] {
        bridge.bus().publish(Event::new(t, "test")).unwrap();
    }
    assert_eq!(next_types(&mut ws, 2), ["b.x", "a.y"]);
}

#[test]
fn head_answers_as_get_would_without_the_body() {
    let bridge = server(|_| {});
    let addr = bridge.local_addr();
    // Each HEAD is followed, on the same connection, by a GET that closes: a body sent
    // after a HEAD answer would sit where the next status line must be.
    let exchange = |head: &str| {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(
            format!("HEAD {head} HTTP/1.1\r\nHost: x\r\n\r\nGET /health HTTP/1.1\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
        let mut out = String::new();
        std::io::Read::read_to_string(&mut s, &mut out).unwrap();
        let (first, rest) = out.split_once("\r\n\r\n").expect("a HEAD answer");
        assert!(
            rest.starts_with("HTTP/1.1 200 OK"),
            "HEAD {head} sent a body: {out}"
        );
        first.to_owned()
    };
    for path in [
        "/health",
        "/metrics",
        "/stats",
        "/dlq/summary",
        "/connections",
    ] {
        let head = exchange(path);
        assert!(head.starts_with("HTTP/1.1 200 OK"), "HEAD {path}: {head}");
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .expect("Content-Length")
            .parse()
            .unwrap();
        assert!(len > 0, "HEAD {path} announces the GET's length: {head}");
    }
    assert!(exchange("/nope").starts_with("HTTP/1.1 404"));
    for (path, allow) in [
        ("/publish", "POST"),
        ("/ws/events", "GET"),
        ("/sse/events", "GET"),
    ] {
        let head = exchange(path);
        assert!(head.starts_with("HTTP/1.1 405"), "HEAD {path}: {head}");
        assert!(head.contains(&format!("Allow: {allow}")), "{head}");
    }
    // And the GET resources say they take HEAD.
    let (status, head, _) = http_raw(addr, b"POST /health HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(status, 405);
    assert!(head.contains("Allow: GET, HEAD"), "{head}");
}
