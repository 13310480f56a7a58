//! One accepted socket: its protocol phase, its outbox, and the socket work (read until
//! WouldBlock, write with `send`/`sendmsg` until WouldBlock) that drives them.

use std::io::{self, IoSlice, Read};
use std::net::Shutdown;
use std::num::NonZeroU64;
use std::time::Instant;

use bytes::Bytes;
use mio::net::TcpStream;

use crate::clock::Moment;
use crate::event::Filter;
use crate::http::session::HttpSession;
use crate::http::sse::SseSession;
use crate::outbox::{Episode, Outbox, Progress};
use crate::policy::Policy;
use crate::ws::message::{self, Framing};
use crate::ws::session::WsSession;

/// Frames gathered into one `sendmsg` (the kernel takes at most 1,024 slices).
const IOV_BATCH: usize = 1024;
/// The slice array for a short queue. Filling the 1,024-entry array (16 KiB) for the
/// one or two frames a paced subscriber has waiting was most of a delivery's instructions
/// (callgrind; see the README's performance section).
const IOV_SMALL: usize = 16;

/// Which protocol the connection speaks now.
#[derive(Debug)]
pub enum Phase {
    /// Before (or instead of) a WebSocket upgrade.
    Http(HttpSession),
    /// After the upgrade.
    Ws(WsSession),
    /// Streaming `GET /sse/events`.
    Sse(SseSession),
}

/// An accepted connection, owned by one I/O thread.
pub struct Connection {
    pub(crate) stream: TcpStream,
    pub(crate) outbox: Outbox,
    pub(crate) phase: Phase,
    /// The last event id routed here (skips repeats when several patterns match).
    pub(crate) last_routed: u64,
    /// Listed in the thread's dirty list, waiting for a flush.
    pub(crate) dirty: bool,
    /// Registered with the router.
    pub(crate) routed: bool,
    /// Replaying from the log: the next id to read (not routed live until it catches up).
    /// (Ids start at 1, so `NonZeroU64` keeps the `Option` at 8 bytes.)
    pub(crate) replay_next: Option<NonZeroU64>,
    /// Set once the session is over: when to give up on a clean close.
    pub(crate) finish_by: Option<Moment>,
    /// Our FIN has been sent; what the peer still sends is read and discarded.
    pub(crate) write_shut: bool,
    /// After the final output, wait for the peer's FIN (HTTP: a reset could destroy the
    /// answer while the peer is still sending). A finished WebSocket close handshake needs
    /// no wait: the server closes first (RFC 6455 §7.1.1).
    pub(crate) linger: bool,
    /// Since when output has waited while the socket took nothing (`None`: progressing or
    /// nothing to write).
    pub(crate) stalled_since: Option<Moment>,
    /// Consecutive failed writes (errors other than "would block").
    pub(crate) failed_writes: u32,
    /// When bytes were last written to it.
    pub(crate) last_write: Option<Moment>,
}

/// Why [`Connection::flush`] stopped.
#[derive(Debug)]
pub enum FlushError {
    /// The peer is gone (reset, broken pipe): drop the connection.
    Gone,
    /// Another write error; [`Connection::failed_writes`](Connection) counts them.
    Failed(io::Error),
}

fn peer_gone(e: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(
        e.kind(),
        BrokenPipe | ConnectionReset | ConnectionAborted | NotConnected | WriteZero | UnexpectedEof
    )
}

/// The `dropped` notice of a WebSocket subscriber's overflow episode.
pub(crate) fn dropped_notice(e: &Episode) -> Bytes {
    message::dropped(Framing::WebSocket, e.count, e.first_id, e.last_id, e.lane)
}

/// The same for a Server-Sent Events subscriber.
pub(crate) fn dropped_record(e: &Episode) -> Bytes {
    message::dropped(Framing::Sse, e.count, e.first_id, e.last_id, e.lane)
}

impl Connection {
    /// A new connection in the HTTP phase.
    pub fn new(
        stream: TcpStream,
        session: HttpSession,
        queue_capacity: usize,
        queue_max_bytes: usize,
    ) -> Self {
        Self {
            stream,
            outbox: Outbox::new(
                queue_capacity,
                queue_max_bytes,
                Policy::default(),
                dropped_notice,
            ),
            phase: Phase::Http(session),
            last_routed: 0,
            dirty: false,
            routed: false,
            replay_next: None,
            finish_by: None,
            write_shut: false,
            linger: true,
            stalled_since: None,
            failed_writes: 0,
            last_write: None,
        }
    }

    /// Switches from HTTP to a subscriber phase (WebSocket or SSE) with `overflow`: its
    /// notices framed for that transport, and no lingering close (the protocol ends it).
    pub fn become_subscriber(&mut self, phase: Phase, overflow: Policy) {
        self.outbox.set_policy(overflow);
        if matches!(phase, Phase::Sse(_)) {
            self.outbox.set_notice(dropped_record);
        }
        self.phase = phase;
        self.linger = false;
    }

    /// The subscription's filter (`None` before it subscribes: still HTTP).
    pub fn filter(&self) -> Option<&Filter> {
        match &self.phase {
            Phase::Ws(ws) => Some(ws.filter()),
            Phase::Sse(s) => Some(s.filter()),
            Phase::Http(_) => None,
        }
    }

    /// Whether it is a subscriber that may still be given events.
    pub fn is_subscribed(&self) -> bool {
        match &self.phase {
            Phase::Ws(ws) => ws.is_open(),
            Phase::Sse(s) => s.is_open(),
            Phase::Http(_) => false,
        }
    }

    /// The subscriber's connection id (0 while HTTP).
    pub fn subscriber_id(&self) -> u64 {
        match &self.phase {
            Phase::Ws(ws) => ws.id(),
            Phase::Sse(s) => s.id(),
            Phase::Http(_) => 0,
        }
    }

    /// How its notices are framed.
    pub fn framing(&self) -> Framing {
        match self.phase {
            Phase::Sse(_) => Framing::Sse,
            _ => Framing::WebSocket,
        }
    }

    /// Writes as much of the outbox as the socket takes. `Ok` with the progress made, even
    /// if output remains (a writable event will come); `Err` when the socket failed. Keeps
    /// track of stalls (output waiting, nothing taken) and consecutive write errors.
    pub fn flush(&mut self, now: Instant) -> Result<Progress, FlushError> {
        let mut total = Progress::default();
        let mut wrote = false;
        while !self.outbox.is_empty() {
            let attempt = if self.outbox.frames_waiting() <= IOV_SMALL {
                self.write_batch::<IOV_SMALL>()
            } else {
                self.write_batch::<IOV_BATCH>()
            };
            match attempt {
                Ok(0) => return Err(FlushError::Gone),
                Ok(written) => {
                    wrote = true;
                    total.add(self.outbox.advance(written));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if peer_gone(&e) => return Err(FlushError::Gone),
                Err(e) => {
                    self.failed_writes += 1;
                    return Err(FlushError::Failed(e));
                }
            }
        }
        if wrote {
            self.failed_writes = 0;
        }
        if wrote || self.outbox.is_empty() {
            self.stalled_since = None;
        } else {
            self.stalled_since.get_or_insert(Moment::at(now));
        }
        if self.finish_by.is_some() && self.outbox.is_empty() && self.linger && !self.write_shut {
            // Everything is out: send FIN, then wait for the peer's (lingering close, so a
            // final response is not destroyed by a reset).
            self.write_shut = true;
            let _ = self.stream.shutdown(Shutdown::Write);
        }
        Ok(total)
    }

    /// One `send`/`sendmsg` of up to `N` queued frames. Not `writev`: on a socket it goes
    /// through the VFS (file position lock, permission hook, iovec import), which cost a
    /// paced server 5 % of its CPU (README, Performance).
    fn write_batch<const N: usize>(&mut self) -> io::Result<usize> {
        let mut iov = [IoSlice::new(&[]); N];
        let n = self.outbox.gather(&mut iov);
        let socket = socket2::SockRef::from(&self.stream);
        // A peer that reset the connection is an error to handle, not a SIGPIPE, even in a
        // host program that did not ignore the signal.
        if n == 1 {
            socket.send_with_flags(&iov[0], libc::MSG_NOSIGNAL)
        } else {
            socket.send_vectored_with_flags(&iov[..n], libc::MSG_NOSIGNAL)
        }
    }

    /// Whether the connection is over and everything is written: drop it now.
    pub fn is_done(&self) -> bool {
        self.finish_by.is_some() && self.outbox.is_empty() && !self.linger
    }

    /// Reads once into `buf`. `Ok(None)` = would block.
    pub fn read_some(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        loop {
            return match self.stream.read(buf) {
                Ok(n) => Ok(Some(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            };
        }
    }
}
