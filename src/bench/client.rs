//! A minimal WebSocket client handshake for the load generator: connect (from a chosen
//! loopback source address, to spread connections over more ephemeral-port space), send
//! the upgrade, read the 101, keep whatever frames arrived with it.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use super::BenchError;
use crate::http::client::{parse_response_head, BodyEnd};

/// A target: where to connect and the request path.
#[derive(Clone, Debug)]
pub struct Target {
    /// Server address.
    pub addr: SocketAddr,
    /// Path of the WebSocket endpoint, e.g. `/ws/events`.
    pub path: String,
}

impl Target {
    /// Parses `ws://HOST:PORT/PATH` (the path defaults to `/ws/events`).
    pub fn parse(url: &str) -> Result<Self, BenchError> {
        let bad = || BenchError::Target(url.to_owned());
        let rest = url.strip_prefix("ws://").ok_or_else(bad)?;
        let (hostport, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/ws/events"),
        };
        let addr = std::net::ToSocketAddrs::to_socket_addrs(hostport)
            .map_err(|_| bad())?
            .next()
            .ok_or_else(bad)?;
        Ok(Self {
            addr,
            path: path.to_owned(),
        })
    }
}

/// Connects from `source` (if given): a blocking stream with no delay and a 10 s read
/// timeout.
pub fn open(target: &Target, source: Option<IpAddr>) -> Result<TcpStream, BenchError> {
    let io = |e: io::Error| BenchError::Connect(target.addr, e);
    let socket = Socket::new(
        Domain::for_address(target.addr),
        Type::STREAM,
        Some(Protocol::TCP),
    )
    .map_err(io)?;
    if let Some(ip) = source {
        socket.bind(&SocketAddr::new(ip, 0).into()).map_err(io)?;
    }
    socket
        .connect_timeout(&target.addr.into(), Duration::from_secs(10))
        .map_err(io)?;
    let stream: TcpStream = socket.into();
    stream.set_nodelay(true).map_err(io)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(io)?;
    Ok(stream)
}

/// Connects from `source` (if given) and upgrades to WebSocket with `query`.
/// Returns the blocking stream and bytes received after the 101 response.
pub fn connect(
    target: &Target,
    query: &str,
    source: Option<IpAddr>,
) -> Result<(TcpStream, Vec<u8>), BenchError> {
    let io = |e: io::Error| BenchError::Connect(target.addr, e);
    let mut stream = open(target, source)?;
    let sep = if query.is_empty() { "" } else { "?" };
    let req = format!(
        "GET {}{sep}{query} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        target.path, target.addr
    );
    stream.write_all(req.as_bytes()).map_err(io)?;
    let mut got = Vec::with_capacity(1024);
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).map_err(io)?;
        if n == 0 {
            return Err(BenchError::Handshake(
                String::from_utf8_lossy(&got).into_owned(),
            ));
        }
        got.extend_from_slice(&buf[..n]);
        let head = match parse_response_head(&got, MAX_HEAD) {
            Ok(None) => continue,
            Ok(Some(head)) => head,
            Err(e) => return Err(BenchError::Handshake(e.to_string())),
        };
        if head.status == 101 {
            return Ok((stream, got.split_off(head.len)));
        }
        // The body says why (firehose's does): read it, within bounds.
        if let BodyEnd::Length(n) = head.body {
            while got.len() < head.len + n.min(MAX_REASON) {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(k) => got.extend_from_slice(&buf[..k]),
                }
            }
        }
        return Err(BenchError::Handshake(refusal(&got, head.len)));
    }
}

/// Longest upgrade response head read.
const MAX_HEAD: usize = 16 * 1024;
/// Most characters of a refusal's body quoted in the error.
const MAX_REASON: usize = 512;

/// A refused upgrade's status line and the start of its body, on one line: `response`
/// holds the head, `head_len` bytes with its blank line, then what came of the body.
fn refusal(response: &[u8], head_len: usize) -> String {
    let head = String::from_utf8_lossy(&response[..head_len]);
    let status = head.lines().next().unwrap_or_default();
    let body = String::from_utf8_lossy(response.get(head_len..).unwrap_or_default());
    let body: String = body
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(MAX_REASON)
        .collect();
    if body.is_empty() {
        status.to_owned()
    } else {
        format!("{status}: {body}")
    }
}

/// The local address for connection `i`: 127.0.0.2, 127.0.0.3, … when the target is on
/// loopback and `spread` > 0.
pub fn source_for(target: &Target, i: usize, spread: usize) -> Option<IpAddr> {
    match target.addr.ip() {
        IpAddr::V4(v4) if v4.is_loopback() && spread > 0 => Some(IpAddr::V4(
            std::net::Ipv4Addr::new(127, 0, 0, 2 + (i % spread) as u8),
        )),
        _ => None,
    }
}

/// Masks and frames one client text message (RFC 6455 requires clients to mask).
pub fn text_frame(out: &mut Vec<u8>, payload: &[u8], key: [u8; 4]) {
    crate::ws::frame::encode_masked(out, 0x81, payload, key);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_is_its_status_line_and_body_on_one_line() {
        let r = b"HTTP/1.1 404 Not Found\r\nContent-Length: 20\r\n\r\n{\"error\":\n \"no route\"}";
        let head_len = r.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert_eq!(
            refusal(r, head_len),
            "HTTP/1.1 404 Not Found: {\"error\": \"no route\"}"
        );
        let bare = b"HTTP/1.1 503 Service Unavailable\r\n\r\n";
        assert_eq!(
            refusal(bare, bare.len()),
            "HTTP/1.1 503 Service Unavailable"
        );
        let long = [&b"HTTP/1.1 400 Bad Request\r\n\r\n"[..], &[b'x'; 2000]].concat();
        assert_eq!(
            refusal(&long, 28).len(),
            "HTTP/1.1 400 Bad Request: ".len() + MAX_REASON
        );
    }
}
