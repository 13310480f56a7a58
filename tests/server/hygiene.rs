//! Connection hygiene: close handshake, ping/pong, timeouts, connection cap, shutdown.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::Message;

use crate::support::*;

#[test]
fn client_close_is_echoed_and_the_connection_released() {
    let bridge = server(|_| {});
    let (mut ws, _) = subscribe(bridge.local_addr(), "");
    ws.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    }))
    .unwrap();
    assert_eq!(read_close(&mut ws).code, CloseCode::Normal);
    // Well inside the 5 s close timeout: the server closes first once both close frames passed.
    let released = eventually(Duration::from_secs(2), || {
        bridge.engine().snapshot().connections == 0
    });
    assert!(released, "{:?}", bridge.engine().snapshot());
}

#[test]
fn ping_gets_pong_with_the_same_payload() {
    let bridge = server(|_| {});
    let (mut ws, _) = subscribe(bridge.local_addr(), "");
    ws.send(Message::Ping(b"are you there".to_vec().into()))
        .unwrap();
    loop {
        match ws.read().unwrap() {
            Message::Pong(p) => break assert_eq!(&p[..], b"are you there"),
            _ => continue,
        }
    }
}

#[test]
fn silent_clients_are_pinged_then_closed_for_idleness() {
    let bridge = server(|c| {
        c.ping_interval = Duration::from_millis(300);
        c.idle_timeout = Duration::from_millis(900);
    });
    let mut s = raw_ws(bridge.local_addr(), "");
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while find(&got, &[0x88]).is_none() {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got.starts_with(&[0x89, 0x00]), "a ping came first: {got:?}");
    let close_at = find(&got, &[0x88]).unwrap();
    assert_eq!(&got[close_at + 2..close_at + 4], &1001u16.to_be_bytes());
    assert!(started.elapsed() >= Duration::from_millis(500));
}

#[test]
fn a_connection_that_sends_no_request_is_closed_after_the_handshake_timeout() {
    let bridge = server(|c| c.handshake_timeout = Duration::from_millis(300));
    let mut s = TcpStream::connect(bridge.local_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = Instant::now();
    assert_eq!(s.read(&mut [0u8; 64]).unwrap(), 0, "closed without a word");
    assert!(started.elapsed() < Duration::from_secs(3));
    // A half-sent request gets 408.
    let mut s = TcpStream::connect(bridge.local_addr()).unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 408"), "{out}");
}

#[test]
fn connections_over_the_cap_get_503() {
    let bridge = server(|c| {
        c.max_connections = 2;
        c.io_threads = 1;
    });
    let addr = bridge.local_addr();
    let (_a, _) = subscribe(addr, "");
    let (_b, _) = subscribe(addr, "");
    let (status, _, body) = http_raw(addr, b"GET /health HTTP/1.1\r\n\r\n");
    assert_eq!(status, 503);
    assert!(String::from_utf8_lossy(&body).contains("connection limit of 2"));
    // A request already in the socket when the server refuses it (under load, the backlog
    // holds such connections): the refusal must still arrive whole, not as a reset that
    // discards it. Each client writes at once, before the server gets to accept it.
    for i in 0..20 {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut out = Vec::new();
        let read = s.read_to_end(&mut out);
        let out = String::from_utf8_lossy(&out);
        assert!(read.is_ok(), "client {i}: {read:?} after {out:?}");
        assert!(out.starts_with("HTTP/1.1 503"), "client {i}: {out}");
        assert!(out.contains("connection limit of 2"), "client {i}: {out}");
    }
}
