//! The raw ceiling: what this machine delivers over loopback with no engine at all, for
//! `firehose bench` to measure beside firehose in one session.
//!
//! One thread, one mio `Poll`. A connection that sends a WebSocket frame is a publisher;
//! every other upgraded connection is a subscriber. Each poll round reads every publish
//! frame that arrived, turns each into one pre-formatted event frame (the same bytes and
//! size as firehose's, or the bare payload with `--bare`), and writes the round's frames to
//! every subscriber with one `write`. There is no queue: what a socket does not take is
//! dropped, except the unwritten rest of a frame it took in part (the stream must stay
//! valid). With `--iovecs` each frame is its own allocation and a subscriber's write is
//! one `sendmsg` with a slice per frame, as firehose writes its queues: the difference
//! between the two is what contiguous output saves the kernel. No filter, no ids in a log, no metrics, no validation, no limits: it is a
//! measuring stick, not a server, and it listens on loopback only.
//!
//! `cargo bench` runs it with no arguments and it prints its usage and exits, so it never
//! holds up a bench run. To serve:
//!
//! ```sh
//! taskset -c 1 cargo bench --bench ceiling -- --serve [--port 8766] [--bare] [--iovecs]
//! taskset -c 0 target/release/firehose bench --target ws://127.0.0.1:8766/ws/events --server-pid PID
//! ```

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

const LISTENER: Token = Token(usize::MAX);
/// Largest publish frame accepted; the bench's are a few KiB at most.
const MAX_FRAME: usize = 1 << 20;
/// firehose's envelope around the payload, with fixed timestamp and trace id of the same
/// length as real ones: the frame has firehose's size without firehose's work.
const ENVELOPE_HEAD: &str = r#","event_type":"bench.tick","source":"bench","timestamp":"2026-11-24T02:29:14.887306Z","trace_id":"c9d116636b9a667ec0de5efb3ab1f9ba","priority":"bulk","payload":"#;

enum Role {
    Handshake,
    Subscriber,
    Publisher,
}

struct Conn {
    sock: TcpStream,
    role: Role,
    input: Vec<u8>,
    /// The unwritten rest of a frame the socket took only in part.
    tail: Vec<u8>,
}

struct Args {
    port: u16,
    bare: bool,
    iovecs: bool,
}

fn parse_args() -> Result<Option<Args>, String> {
    let mut args = Args {
        port: 8766,
        bare: false,
        iovecs: false,
    };
    let mut serve = false;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--serve" => serve = true,
            "--bare" => args.bare = true,
            "--iovecs" => args.iovecs = true,
            "--port" => {
                let v = it.next().ok_or("--port needs a value")?;
                args.port = v
                    .parse()
                    .map_err(|_| format!("--port must be a port number, not {v:?}"))?;
            }
            // `cargo bench` passes `--bench`; filters and other harness flags mean nothing here.
            _ => {}
        }
    }
    Ok(serve.then_some(args))
}

fn main() {
    match parse_args() {
        Ok(Some(args)) => {
            if let Err(e) = serve(&args) {
                eprintln!("ceiling: {e}");
                std::process::exit(1);
            }
        }
        Ok(None) => println!(
            "ceiling: the raw-ceiling fan-out server, for `firehose bench` (see README, Performance).\n\
             Serve with: cargo bench --bench ceiling -- --serve [--port 8766] [--bare] [--iovecs]"
        ),
        Err(e) => {
            eprintln!("ceiling: {e}");
            std::process::exit(2);
        }
    }
}

fn serve(args: &Args) -> io::Result<()> {
    let addr = SocketAddr::from(([127, 0, 0, 1], args.port));
    let mut listener = TcpListener::bind(addr)?;
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    println!(
        "ceiling: pid {} serving ws://{addr}/ws/events ({} frames)",
        std::process::id(),
        if args.bare {
            "bare payload"
        } else {
            "firehose-sized"
        }
    );
    let mut conns: HashMap<usize, Conn> = HashMap::new();
    let mut next_key = 0usize;
    let mut events = Events::with_capacity(1024);
    let mut batch: Vec<u8> = Vec::with_capacity(1 << 20);
    // Where each frame of the batch ends, to keep a partly written frame whole.
    let mut ends: Vec<usize> = Vec::new();
    // `--iovecs`: the same frames, each in its own allocation.
    let mut frames: Vec<bytes::Bytes> = Vec::new();
    let mut body: Vec<u8> = Vec::with_capacity(4096);
    let mut buf = vec![0u8; 64 * 1024];
    let mut next_id = 1u64;
    let mut gone = Vec::new();
    loop {
        poll.poll(&mut events, None)?;
        for ev in events.iter() {
            if ev.token() == LISTENER {
                while let Ok((mut sock, _)) = listener.accept() {
                    let _ = sock.set_nodelay(true);
                    let key = next_key;
                    next_key += 1;
                    poll.registry().register(
                        &mut sock,
                        Token(key),
                        Interest::READABLE | Interest::WRITABLE,
                    )?;
                    let role = Role::Handshake;
                    let (input, tail) = (Vec::new(), Vec::new());
                    conns.insert(
                        key,
                        Conn {
                            sock,
                            role,
                            input,
                            tail,
                        },
                    );
                }
                continue;
            }
            let key = ev.token().0;
            let Some(c) = conns.get_mut(&key) else {
                continue;
            };
            if ev.is_writable() && !c.tail.is_empty() {
                match c.sock.write(&c.tail) {
                    Ok(n) => drop(c.tail.drain(..n)),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => gone.push(key),
                }
            }
            if !(ev.is_readable() || ev.is_read_closed()) {
                continue;
            }
            loop {
                match c.sock.read(&mut buf) {
                    Ok(0) => {
                        gone.push(key);
                        break;
                    }
                    Ok(n) => c.input.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        gone.push(key);
                        break;
                    }
                }
            }
            if matches!(c.role, Role::Handshake) {
                let Some(end) = c.input.windows(4).position(|w| w == b"\r\n\r\n") else {
                    continue;
                };
                let Some(key_hdr) = websocket_key(&c.input[..end]) else {
                    gone.push(key);
                    continue;
                };
                let accept = tungstenite::handshake::derive_accept_key(key_hdr);
                let answer = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
                );
                // A fresh socket's buffer takes 130 bytes.
                let _ = c.sock.write_all(answer.as_bytes());
                c.input.drain(..end + 4);
                c.role = Role::Subscriber;
            }
            let mut used = 0;
            loop {
                match firehose::ws::frame::parse(&c.input[used..], MAX_FRAME) {
                    Ok(Some((frame, n))) => {
                        used += n;
                        if frame.opcode == firehose::ws::frame::OpCode::Close {
                            gone.push(key);
                            break;
                        }
                        if frame.opcode != firehose::ws::frame::OpCode::Text {
                            continue;
                        }
                        c.role = Role::Publisher;
                        let payload = payload_of(&frame.payload);
                        body.clear();
                        if args.bare {
                            body.extend_from_slice(payload);
                        } else {
                            body.extend_from_slice(format!("{{\"id\":{next_id}").as_bytes());
                            body.extend_from_slice(ENVELOPE_HEAD.as_bytes());
                            body.extend_from_slice(payload);
                            body.push(b'}');
                        }
                        let at = batch.len();
                        push_frame(&mut batch, &body);
                        ends.push(batch.len());
                        if args.iovecs {
                            frames.push(bytes::Bytes::copy_from_slice(&batch[at..]));
                        }
                        if let Some(r) = reference(&frame.payload) {
                            let mut answer = Vec::new();
                            let reply = format!(r#"{{"op":"published","ref":{r},"id":{next_id}}}"#);
                            push_frame(&mut answer, reply.as_bytes());
                            let _ = c.sock.write_all(&answer);
                        }
                        next_id += 1;
                    }
                    Ok(None) => break,
                    Err(_) => {
                        gone.push(key);
                        break;
                    }
                }
            }
            c.input.drain(..used);
        }
        if !batch.is_empty() {
            for (key, c) in conns.iter_mut() {
                if !matches!(c.role, Role::Subscriber) {
                    continue;
                }
                let ok = if args.iovecs {
                    write_frames(c, &frames)
                } else {
                    write_batch(c, &batch, &ends)
                };
                if !ok {
                    gone.push(*key);
                }
            }
            batch.clear();
            ends.clear();
            frames.clear();
        }
        for key in gone.drain(..) {
            if let Some(mut c) = conns.remove(&key) {
                let _ = poll.registry().deregister(&mut c.sock);
            }
        }
    }
}

/// Writes the round's frames to one subscriber; frames it cannot take are dropped.
/// Returns false if the connection failed.
fn write_batch(c: &mut Conn, batch: &[u8], ends: &[usize]) -> bool {
    if let Some(ok) = flush_tail(c) {
        return ok;
    }
    match c.sock.write(batch) {
        Ok(n) if n < batch.len() => {
            // Keep the rest of the frame cut at `n`; drop the frames after it.
            let end = ends.iter().copied().find(|&e| e > n).unwrap_or(batch.len());
            c.tail.extend_from_slice(&batch[n..end]);
            true
        }
        Ok(_) => true,
        Err(e) => e.kind() == io::ErrorKind::WouldBlock,
    }
}

/// [`write_batch`] with a slice per frame, 1,024 per `sendmsg`.
fn write_frames(c: &mut Conn, frames: &[bytes::Bytes]) -> bool {
    if let Some(ok) = flush_tail(c) {
        return ok;
    }
    let socket = socket2::SockRef::from(&c.sock);
    for group in frames.chunks(1024) {
        let iov: Vec<io::IoSlice> = group.iter().map(|f| io::IoSlice::new(f)).collect();
        let want: usize = group.iter().map(|f| f.len()).sum();
        match socket.send_vectored_with_flags(&iov, libc::MSG_NOSIGNAL) {
            Ok(n) if n < want => {
                let mut left = n;
                for f in group {
                    if left < f.len() {
                        c.tail.extend_from_slice(&f[left..]);
                        break;
                    }
                    left -= f.len();
                }
                return true;
            }
            Ok(_) => {}
            Err(e) => return e.kind() == io::ErrorKind::WouldBlock,
        }
    }
    true
}

/// Writes what is left of a partly written frame. `None` when it is all out and the
/// round's frames may follow; `Some(ok)` when they must be dropped: the socket is still
/// full (`true`) or failed (`false`).
fn flush_tail(c: &mut Conn) -> Option<bool> {
    if c.tail.is_empty() {
        return None;
    }
    match c.sock.write(&c.tail) {
        Ok(n) => drop(c.tail.drain(..n)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        Err(_) => return Some(false),
    }
    (!c.tail.is_empty()).then_some(true)
}

/// An unmasked text frame header and `body`.
fn push_frame(out: &mut Vec<u8>, body: &[u8]) {
    let mut head = [0u8; firehose::ws::frame::MAX_HEADER_LEN];
    let n =
        firehose::ws::frame::write_header(&mut head, firehose::ws::frame::OpCode::Text, body.len());
    out.extend_from_slice(&head[..n]);
    out.extend_from_slice(body);
}

fn websocket_key(head: &[u8]) -> Option<&[u8]> {
    const NAME: &[u8] = b"sec-websocket-key:";
    head.split(|&b| b == b'\n').find_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        (line.len() > NAME.len() && line[..NAME.len()].eq_ignore_ascii_case(NAME))
            .then(|| line[NAME.len()..].trim_ascii())
    })
}

/// The publish message's `"payload":{…}` value: from after the key to before the message's
/// closing brace (the bench writes `payload` last).
fn payload_of(msg: &[u8]) -> &[u8] {
    const KEY: &[u8] = b"\"payload\":";
    match msg.windows(KEY.len()).position(|w| w == KEY) {
        Some(at) if msg.len() > at + KEY.len() => &msg[at + KEY.len()..msg.len() - 1],
        _ => b"null",
    }
}

/// The publish message's `"ref":N`, if any.
fn reference(msg: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"ref\":";
    let at = msg.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let digits = msg[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&msg[at..at + digits])
        .ok()?
        .parse()
        .ok()
}
