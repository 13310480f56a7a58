//! Listening sockets: one per I/O thread on the same port (SO_REUSEPORT), so the kernel
//! spreads new connections over the threads and accepting needs no hand-off.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// Pending-connection queue length (mio's own `bind` uses 128, too small for a burst).
const BACKLOG: i32 = 4096;

/// Binds a non-blocking listener with SO_REUSEADDR and SO_REUSEPORT.
pub fn bind(addr: SocketAddr) -> io::Result<mio::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(mio::net::TcpListener::from_std(socket.into()))
}

/// Binds `n` listeners on one port; with port 0 the first picks the port for the rest.
pub fn bind_all(
    addr: SocketAddr,
    n: usize,
) -> io::Result<(Vec<mio::net::TcpListener>, SocketAddr)> {
    let first = bind(addr)?;
    let actual = first.local_addr()?;
    let mut all = vec![first];
    for _ in 1..n {
        all.push(bind(actual)?);
    }
    Ok((all, actual))
}
