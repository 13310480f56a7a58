//! Listening sockets: one per I/O thread on the same port (SO_REUSEPORT), so the kernel
//! spreads new connections over the threads and accepting needs no hand-off.
//!
//! SO_REUSEPORT alone would also let a second server on the port join the group, and the
//! kernel would split new connections between two servers that share no events. So the
//! first socket binds and listens *without* it, which fails if anything already listens
//! there, and only then turns it on for its siblings to join. Another program of the same
//! user can still join by setting SO_REUSEPORT itself; a second firehose cannot.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// Pending-connection queue length (mio's own `bind` uses 128, too small for a burst).
const BACKLOG: i32 = 4096;

/// Binds a non-blocking listener with SO_REUSEADDR, joining the port's SO_REUSEPORT
/// group when `share` is set (the group must exist already: see [`bind_all`]).
fn bind(addr: SocketAddr, share: bool) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(share)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket)
}

/// Binds `n` listeners on one port; with port 0 the first picks the port for the rest.
/// Fails (`AddrInUse`) if anything listens on the port already.
pub fn bind_all(
    addr: SocketAddr,
    n: usize,
) -> io::Result<(Vec<mio::net::TcpListener>, SocketAddr)> {
    let first = bind(addr, false)?;
    let actual = first
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "listener has no IP address"))?;
    let mut all = Vec::with_capacity(n);
    if n > 1 {
        first.set_reuse_port(true)?;
    }
    all.push(first);
    for _ in 1..n {
        all.push(bind(actual, true)?);
    }
    let all = all
        .into_iter()
        .map(|s| mio::net::TcpListener::from_std(s.into()))
        .collect();
    Ok((all, actual))
}
