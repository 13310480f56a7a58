//! Encode once: an event becomes one buffer holding the ready-to-send WebSocket text frame,
//! whose payload is the event's JSON. Every subscriber gets a clone of the same [`Bytes`].
//!
//! Encoding happens in two steps so the expensive part runs before the log claims an id:
//! [`Staged::new`] validates and writes everything after `{"id":N,` into a buffer with room
//! reserved in front; [`Staged::seal`] (run inside the log's append, with the id known)
//! writes the id prefix and the frame header into that room. No copy, one allocation.

use std::time::Instant;

use bytes::{Buf as _, Bytes};

use super::{timestamp, Event, EventError, Priority, TraceId};
use crate::log::Sequenced;
use crate::ws::frame::{self, OpCode};

/// `{"id":` + up to 20 digits + `,`.
const MAX_ID_PREFIX: usize = 6 + 20 + 1;
/// Room kept in front of the body for the id prefix and the largest frame header.
const HEADROOM: usize = frame::MAX_HEADER_LEN + MAX_ID_PREFIX;
const TYPE_KEY: &[u8] = b"\"event_type\":\"";

/// An event validated and encoded except for its id.
pub struct Staged {
    buf: Vec<u8>,
    priority: Priority,
    published_at: Instant,
    trace_id: TraceId,
    sampled: bool,
    /// Offset of the event type's first byte in `buf`.
    type_at: usize,
    type_len: usize,
}

impl Staged {
    /// Validates `event` and encodes its body. `max_bytes` bounds the whole JSON object.
    ///
    /// The buffer is sized exactly before anything is written, so it is one allocation
    /// that never grows, and [`seal`](Self::seal) hands it to `Bytes` without a second
    /// allocation (a `Vec` whose length is its capacity becomes a `Bytes` as it is).
    pub fn new(event: &Event, max_bytes: usize) -> Result<Self, EventError> {
        event.validate()?;
        // Latency and the `event.publish` span are measured from here.
        let (published_at, timestamp) = timestamp::now();
        let payload = event.payload.get();
        // serde_json escapes only `"`, `\` and control characters: a source without them
        // is written as it is.
        let escaped;
        let source = if event
            .source
            .bytes()
            .all(|b| b >= 0x20 && b != b'"' && b != b'\\')
        {
            event.source.as_bytes()
        } else {
            escaped =
                serde_json::to_vec(&event.source).map_err(|e| EventError::Shape(e.to_string()))?;
            &escaped[1..escaped.len() - 1]
        };
        let trace_id = event.trace_id.unwrap_or_else(TraceId::random);
        let priority = event.priority.as_str().as_bytes();
        let parts: [&[u8]; 13] = [
            TYPE_KEY,
            event.event_type.as_bytes(),
            b"\",\"source\":\"",
            source,
            b"\",\"timestamp\":\"",
            &timestamp,
            b"\",\"trace_id\":\"",
            &trace_id.hex(),
            b"\",\"priority\":\"",
            priority,
            b"\",\"payload\":",
            payload.as_bytes(),
            b"}",
        ];
        let body: usize = parts.iter().map(|p| p.len()).sum();
        let size = body + MAX_ID_PREFIX;
        if size > max_bytes {
            return Err(EventError::TooLarge {
                size,
                limit: max_bytes,
            });
        }
        let mut buf = Vec::with_capacity(HEADROOM + body);
        buf.resize(HEADROOM, 0);
        for part in parts {
            buf.extend_from_slice(part);
        }
        debug_assert_eq!(buf.len(), buf.capacity(), "sized exactly");
        Ok(Self {
            buf,
            priority: event.priority,
            published_at,
            trace_id,
            sampled: false,
            type_at: HEADROOM + TYPE_KEY.len(),
            type_len: event.event_type.len(),
        })
    }

    /// The event's trace id (given, or generated here).
    pub fn trace_id(&self) -> TraceId {
        self.trace_id
    }

    /// When publishing began.
    pub fn published_at(&self) -> Instant {
        self.published_at
    }

    /// Marks the event's trace as sampled: its writes and subscriber calls record spans.
    pub fn set_sampled(&mut self, sampled: bool) {
        self.sampled = sampled;
    }

    /// Whether [`set_sampled`](Self::set_sampled) marked it.
    pub fn is_sampled(&self) -> bool {
        self.sampled
    }

    /// Writes the id and the frame header in front of the body.
    pub fn seal(self, id: u64) -> Encoded {
        let mut buf = self.buf;
        let mut digits = [0u8; 20];
        let n = write_decimal(id, &mut digits);
        let prefix_len = 6 + n + 1;
        let json_at = HEADROOM - prefix_len;
        buf[json_at..json_at + 6].copy_from_slice(b"{\"id\":");
        buf[json_at + 6..json_at + 6 + n].copy_from_slice(&digits[20 - n..]);
        buf[HEADROOM - 1] = b',';
        let json_len = buf.len() - json_at;
        let mut header = [0u8; frame::MAX_HEADER_LEN];
        let header_len = frame::write_header(&mut header, OpCode::Text, json_len);
        let frame_at = json_at - header_len;
        buf[frame_at..json_at].copy_from_slice(&header[..header_len]);
        // Length equals capacity (see `new`): no allocation here. `advance`, not `slice`,
        // which would clone and so allocate the shared header now, on the publisher.
        let mut frame = Bytes::from(buf);
        frame.advance(frame_at);
        Encoded {
            id,
            priority: self.priority,
            published_at: self.published_at,
            published_tick: crate::clock::tick(self.published_at),
            trace_id: [(self.trace_id.0 >> 64) as u64, self.trace_id.0 as u64],
            sampled: self.sampled,
            frame,
            sse: std::sync::OnceLock::new(),
            json_at: header_len as u8,
            type_at: (self.type_at - frame_at) as u32,
            type_len: self.type_len as u16,
        }
    }
}

/// Writes `v` right-aligned into `out`; returns the number of digits.
fn write_decimal(mut v: u64, out: &mut [u8; 20]) -> usize {
    let mut i = out.len();
    loop {
        i -= 1;
        out[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            return out.len() - i;
        }
    }
}

/// A published event: id, routing facts, and its one shared encoding.
#[derive(Clone)]
pub struct Encoded {
    id: u64,
    priority: Priority,
    published_at: Instant,
    published_tick: u32,
    /// The trace id's halves (two `u64`s keep the struct 8-aligned, and small).
    trace_id: [u64; 2],
    sampled: bool,
    frame: Bytes,
    /// The Server-Sent Events record, made by the first I/O thread that needs one (so a
    /// server without SSE subscribers never pays for it), then shared like the frame.
    sse: std::sync::OnceLock<Bytes>,
    json_at: u8,
    type_at: u32,
    type_len: u16,
}

impl Encoded {
    /// The log sequence number, which is the event's `id`.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Delivery priority.
    pub fn priority(&self) -> Priority {
        self.priority
    }

    /// When it was handed to the engine (for delivery latency).
    pub fn published_at(&self) -> Instant {
        self.published_at
    }

    /// [`published_at`](Self::published_at) as a [`crate::clock`] tick.
    pub fn published_tick(&self) -> u32 {
        self.published_tick
    }

    /// The event's trace id.
    pub fn trace_id(&self) -> TraceId {
        TraceId((u128::from(self.trace_id[0]) << 64) | u128::from(self.trace_id[1]))
    }

    /// Whether the event's trace is sampled (spans are recorded for it).
    pub fn sampled(&self) -> bool {
        self.sampled
    }

    /// The publish tick and sampling flag an outbox keeps with the frame.
    pub fn stamp(&self) -> crate::outbox::Stamp {
        crate::outbox::Stamp {
            tick: self.published_tick,
            sampled: self.sampled,
        }
    }

    /// The event type, for routing.
    pub fn event_type(&self) -> &str {
        let at = self.type_at as usize;
        // Always ASCII: validate_type admits nothing else.
        std::str::from_utf8(&self.frame[at..at + self.type_len as usize]).unwrap_or_default()
    }

    /// The complete WebSocket text frame (header + JSON), shared by every subscriber.
    pub fn frame(&self) -> &Bytes {
        &self.frame
    }

    /// The event's Server-Sent Events record (`id: EPOCH:ID`, `data: JSON`), made once.
    pub fn sse_record(&self, epoch: u64) -> Bytes {
        self.sse
            .get_or_init(|| {
                crate::http::sse::event_record(epoch, self.id, &self.frame[self.json_at as usize..])
            })
            .clone()
    }

    /// The event's JSON object (shares the frame's memory).
    pub fn json(&self) -> Bytes {
        self.frame.slice(self.json_at as usize..)
    }
}

impl std::fmt::Debug for Encoded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoded")
            .field("id", &self.id)
            .field("event_type", &self.event_type())
            .field("priority", &self.priority)
            .field("bytes", &self.frame.len())
            .finish()
    }
}

impl Sequenced for Encoded {
    fn seq(&self) -> u64 {
        self.id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn staged(event: &Event) -> Staged {
        Staged::new(event, 64 * 1024).unwrap()
    }

    #[test]
    fn the_trace_id_survives_sealing() {
        let t = TraceId::parse("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
        let enc = staged(&Event::new("a.b", "t").with_trace_id(t)).seal(1);
        assert_eq!(enc.trace_id(), t);
    }

    #[test]
    fn frame_is_header_plus_json_with_all_fields() {
        let ev = Event::new("workflow.step.completed", "tester \"q\"")
            .with_payload(&serde_json::json!({"seq": 7}))
            .unwrap()
            .with_priority(Priority::Critical)
            .with_trace_id(TraceId::parse("4bf92f3577b34da6a3ce929d0e0e4736").unwrap());
        for id in [1, 9, 10, 1234, u64::MAX] {
            let enc = staged(&ev).seal(id);
            let frame = enc.frame();
            assert_eq!(frame[0], 0x81, "FIN + text");
            let (len, hl) = match frame[1] {
                126 => (u16::from_be_bytes([frame[2], frame[3]]) as usize, 4),
                n => (n as usize, 2),
            };
            assert_eq!(frame.len(), hl + len);
            let v: serde_json::Value = serde_json::from_slice(&enc.json()).unwrap();
            assert_eq!(v["id"], id);
            assert_eq!(v["event_type"], "workflow.step.completed");
            assert_eq!(v["source"], "tester \"q\"");
            assert_eq!(v["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
            assert_eq!(v["priority"], "critical");
            assert_eq!(v["payload"]["seq"], 7);
            let ts = v["timestamp"].as_str().unwrap();
            assert!(humantime::parse_rfc3339(ts).is_ok(), "{ts}");
            assert!(ts.ends_with('Z'));
            assert_eq!(enc.event_type(), "workflow.step.completed");
        }
    }

    #[test]
    fn sources_are_escaped_as_serde_json_escapes_them() {
        for source in [
            "plain",
            "caf\u{e9} \u{1f980}",
            "q\"uote",
            "back\\slash",
            "nl\n\ttab\u{1}",
            "\u{7f}del",
        ] {
            let enc = staged(&Event::new("a.b", source)).seal(5);
            let json = std::str::from_utf8(&enc.json()).unwrap().to_owned();
            let expected = format!(",\"source\":{},", serde_json::to_string(source).unwrap());
            assert!(json.contains(&expected), "{json} lacks {expected}");
            let v: serde_json::Value = serde_json::from_str(&json).unwrap();
            assert_eq!(v["source"], source);
        }
    }

    #[test]
    fn large_payload_uses_the_16_bit_length() {
        let big = "x".repeat(1000);
        let enc = staged(&Event::new("a", "b").with_payload(&big).unwrap()).seal(3);
        assert_eq!(enc.frame()[1], 126);
        let v: serde_json::Value = serde_json::from_slice(&enc.json()).unwrap();
        assert_eq!(v["payload"].as_str().unwrap().len(), 1000);
    }

    #[test]
    fn size_limit_counts_the_whole_object() {
        let ev = Event::new("a", "b").with_payload(&"x".repeat(200)).unwrap();
        assert!(matches!(
            Staged::new(&ev, 100),
            Err(EventError::TooLarge { limit: 100, .. })
        ));
        assert!(Staged::new(&ev, 400).is_ok());
    }

    #[test]
    fn invalid_events_are_refused() {
        assert_eq!(
            Staged::new(&Event::new("", "s"), 1000).err(),
            Some(EventError::EmptyType)
        );
        assert!(matches!(
            Staged::new(&Event::new("a b", "s"), 1000),
            Err(EventError::TypeChar(..))
        ));
        assert!(matches!(
            Staged::new(&Event::new("a.*", "s"), 1000),
            Err(EventError::TypeChar(..))
        ));
        assert_eq!(
            Staged::new(&Event::new("a", ""), 1000).err(),
            Some(EventError::EmptySource)
        );
    }
}
