//! A minimal WebSocket client handshake for the load generator: connect (from a chosen
//! loopback source address, to spread connections over more ephemeral-port space), send
//! the upgrade, read the 101, keep whatever frames arrived with it.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use super::BenchError;

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
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            if !got.starts_with(b"HTTP/1.1 101") {
                return Err(BenchError::Handshake(
                    String::from_utf8_lossy(&got[..end]).into_owned(),
                ));
            }
            return Ok((stream, got.split_off(end + 4)));
        }
        if got.len() > 16 * 1024 {
            return Err(BenchError::Handshake("response head over 16 KiB".into()));
        }
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
