//! Server-Sent Events: `GET /sse/events` streams the same subscription as the WebSocket
//! endpoint, as `text/event-stream` records. No socket and no clock, like the WebSocket
//! session: the I/O layer routes events into the connection's outbox and calls
//! [`SseSession::on_tick`].
//!
//! The stream, record by record:
//!
//! ```text
//! HTTP/1.1 200 OK                      headers that stop proxies buffering or caching
//! retry: 2000                          how long EventSource waits before reconnecting
//!
//! event: welcome                       notices are named for their `op`: welcome, gap,
//! data: {"op":"welcome",…}             dropped, backlog, closing
//!
//! id: 1795478522141001:42              events have no `event:` line (EventSource's
//! data: {"id":42,"event_type":…}       `onmessage`); the id is EPOCH:ID
//!
//! : heartbeat                          a comment when nothing else was written for a while
//! ```
//!
//! An `EventSource` that reconnects sends the last `id:` as `Last-Event-ID`, and the server
//! resumes from it exactly as for `?last_event_id=` on the WebSocket ([`crate::resume`]):
//! the epoch in the id keeps a restarted server from answering with the wrong events. The
//! body has no length and no chunking: it ends when the connection closes.

use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};

use crate::event::{Filter, Pattern};
use crate::outbox::Outbox;
use crate::policy::Policy;
use crate::resume::Start;
use crate::ws::message::{self, Framing};

/// What `EventSource` waits before reconnecting, sent as `retry:`.
pub const RETRY_MS: u32 = 2000;
/// Sent when nothing else was written for `--ping-interval`: proxies and browsers see
/// the stream is alive, and a dead peer is found by the write.
pub const HEARTBEAT: &[u8] = b": heartbeat\n\n";
/// Bytes an event's record adds to its JSON (`id: `, a 16-digit epoch, `:`, a 20-digit id,
/// `\ndata: `, `\n\n`), for the queue's byte bound.
pub const MAX_RECORD_OVERHEAD: usize = 4 + 16 + 1 + 20 + 7 + 2;

/// The response head and the `retry:` record that open the stream.
pub fn response_head() -> Bytes {
    Bytes::from(format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nCache-Control: no-cache, no-transform\r\nX-Accel-Buffering: no\r\nAccess-Control-Allow-Origin: *\r\n\r\nretry: {RETRY_MS}\n\n"
    ))
}

/// One named record: `event: NAME`, `data: DATA` (DATA is one line of JSON: serde_json
/// escapes every newline inside strings).
pub fn record(event: &str, data: &str) -> Bytes {
    let mut b = BytesMut::with_capacity(event.len() + data.len() + 16);
    b.put_slice(b"event: ");
    b.put_slice(event.as_bytes());
    b.put_slice(b"\ndata: ");
    b.put_slice(data.as_bytes());
    b.put_slice(b"\n\n");
    b.freeze()
}

/// An event's record: `id: EPOCH:ID`, `data: JSON`.
pub fn event_record(epoch: u64, id: u64, json: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(json.len() + MAX_RECORD_OVERHEAD);
    b.put_slice(format!("id: {epoch}:{id}\ndata: ").as_bytes());
    b.put_slice(json);
    b.put_slice(b"\n\n");
    b.freeze()
}

/// One Server-Sent Events subscriber's state.
#[derive(Debug)]
pub struct SseSession {
    id: u64,
    filter: Filter,
    open: bool,
}

impl SseSession {
    /// A new stream with `filter`; `id` is its connection id.
    pub fn new(id: u64, filter: Filter) -> Self {
        Self {
            id,
            filter,
            open: true,
        }
    }

    /// The connection id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The filter.
    pub fn filter(&self) -> &Filter {
        &self.filter
    }

    /// Whether events may still be queued.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// The `welcome` record.
    pub fn welcome(&self, epoch: u64, start: &Start, overflow: Policy) -> Bytes {
        let types: Vec<String> = self
            .filter
            .patterns()
            .iter()
            .map(Pattern::to_string)
            .collect();
        message::welcome(Framing::Sse, self.id, epoch, start, &types, overflow)
    }

    /// Sends a heartbeat comment when nothing was written for `every`.
    pub fn on_tick(
        &mut self,
        now: Instant,
        last_write: Option<Instant>,
        every: Duration,
        out: &mut Outbox,
    ) {
        let quiet = last_write.is_none_or(|t| now.saturating_duration_since(t) >= every);
        if self.open && quiet && out.is_empty() {
            let _ = out.push_control(Bytes::from_static(HEARTBEAT));
        }
    }

    /// Ends the stream after a `closing` record with the last id delivered (`reason`:
    /// `slow consumer`, `server shutting down`). Returns how many queued events were
    /// discarded; 0 if it was already ending.
    pub fn close(&mut self, reason: &str, out: &mut Outbox) -> u64 {
        if !self.open {
            return 0;
        }
        self.open = false;
        out.push_final([message::closing(Framing::Sse, reason, out.last_delivered())])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_well_formed() {
        assert_eq!(
            &event_record(7, 42, br#"{"id":42}"#)[..],
            b"id: 7:42\ndata: {\"id\":42}\n\n"
        );
        assert_eq!(&record("gap", "{}")[..], b"event: gap\ndata: {}\n\n");
        let longest = event_record((1 << 53) - 1, u64::MAX, b"");
        assert!(longest.len() <= MAX_RECORD_OVERHEAD, "{}", longest.len());
        let head = response_head();
        let head = std::str::from_utf8(&head).unwrap();
        assert!(head.contains("Content-Type: text/event-stream"));
        assert!(head.contains("X-Accel-Buffering: no"));
        assert!(head.ends_with("\r\n\r\nretry: 2000\n\n"));
    }

    #[test]
    fn notices_are_named_records_of_one_line() {
        let r = message::gap(Framing::Sse, 3, 9);
        let text = std::str::from_utf8(&r).unwrap();
        assert_eq!(
            text,
            "event: gap\ndata: {\"op\":\"gap\",\"from\":3,\"to\":9}\n\n"
        );
    }
}
