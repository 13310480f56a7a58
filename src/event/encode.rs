//! Encode once, on first use. Publishing only checks an event and stamps it ([`Staged`]);
//! the log stores it with its id as a [`Published`]. The first thread that needs its bytes
//! (normally the first I/O thread to route it to a subscriber) encodes it into one buffer
//! holding the ready-to-send WebSocket text frame, whose payload is the event's JSON
//! ([`Encoded`]). Every subscriber gets a clone of the same [`Bytes`].
//!
//! Encoding on the publisher was half of an in-process publish once the log's slots stopped
//! costing (README, *Publish*): copying the fields, formatting the timestamp and trace id,
//! and a second allocation. Moved here, it is done once per event by a thread that was
//! going to touch the event anyway, and not at all for an event nobody subscribed to. The
//! publisher still checks everything that can fail, including the encoded size, so an
//! accepted event always encodes.
//!
//! The encoding takes the event's source and payload, so a retained event holds them once
//! (in the frame). The type stays apart too, for routing without encoding; with the
//! larger log entry that was about 125 bytes more per retained event than encoding on the
//! publisher cost (README, *At a glance*), 48 fewer since the entry shrank to 176 bytes
//! (README, *On an Intel VM*).

use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Instant;

use bytes::{Buf as _, Bytes};

use serde_json::value::RawValue;

use super::timestamp::{self, Stamp};
use super::{Event, EventError, Priority, TraceId};
use crate::clock::Moment;
use crate::log::Sequenced;
use crate::ws::frame::{self, OpCode};

/// `{"id":` + up to 20 digits + `,`.
const MAX_ID_PREFIX: usize = 6 + 20 + 1;
/// Room kept in front of the body for the id prefix and the largest frame header.
const HEADROOM: usize = frame::MAX_HEADER_LEN + MAX_ID_PREFIX;
const TYPE_KEY: &[u8] = b"\"event_type\":\"";
const SOURCE_KEY: &[u8] = b"\",\"source\":\"";
const TIMESTAMP_KEY: &[u8] = b"\",\"timestamp\":\"";
const TRACE_KEY: &[u8] = b"\",\"trace_id\":\"";
const PRIORITY_KEY: &[u8] = b"\",\"priority\":\"";
const PAYLOAD_KEY: &[u8] = b"\",\"payload\":";
/// The body's bytes that do not depend on the event.
const FIXED_BODY: usize = TYPE_KEY.len()
    + SOURCE_KEY.len()
    + TIMESTAMP_KEY.len()
    + timestamp::LEN
    + TRACE_KEY.len()
    + 32
    + PRIORITY_KEY.len()
    + PAYLOAD_KEY.len()
    + 1;

/// An event checked and stamped, waiting for its id.
pub struct Staged {
    event: Event,
    stamp: Stamp,
    trace_id: TraceId,
    sampled: bool,
    /// Bytes of the JSON object after `{"id":N,`.
    body_len: usize,
}

impl Staged {
    /// Checks `event`, including that its encoding fits in `max_bytes` (the whole JSON
    /// object), and stamps its publish time and trace id. Copies nothing.
    ///
    /// Inlined, as are [`seal`](Self::seal) and the clock ([`timestamp::now`]): called,
    /// each handed back its result of a couple of hundred bytes through memory, and the
    /// publish moved the event three times on its way into the log (README, *Publish*).
    #[inline(always)]
    pub fn new(event: Event, max_bytes: usize) -> Result<Self, EventError> {
        event.validate()?;
        let source_len = if is_plain(&event.source) {
            event.source.len()
        } else {
            escaped_len(&event.source)
        };
        let body_len = FIXED_BODY
            + event.event_type.len()
            + source_len
            + event.priority.as_str().len()
            + event.payload.get().len();
        let size = body_len + MAX_ID_PREFIX;
        // The log keeps the body's length in 32 bits.
        let limit = max_bytes.min(u32::MAX as usize);
        if size > limit {
            return Err(EventError::TooLarge { size, limit });
        }
        // Latency and the `event.publish` span are measured from here.
        let stamp = timestamp::now();
        let trace_id = event.trace_id.unwrap_or_else(TraceId::random);
        Ok(Self {
            event,
            stamp,
            trace_id,
            sampled: false,
            body_len,
        })
    }

    /// The event as published.
    pub fn event(&self) -> &Event {
        &self.event
    }

    /// The event's trace id (given, or generated here).
    pub fn trace_id(&self) -> TraceId {
        self.trace_id
    }

    /// When publishing began.
    pub fn published_at(&self) -> Instant {
        self.stamp.at
    }

    /// Marks the event's trace as sampled: its writes and subscriber calls record spans.
    pub fn set_sampled(&mut self, sampled: bool) {
        self.sampled = sampled;
    }

    /// Whether [`set_sampled`](Self::set_sampled) marked it.
    pub fn is_sampled(&self) -> bool {
        self.sampled
    }

    /// The event with its id: what the log stores.
    #[inline(always)]
    pub fn seal(self, id: u64) -> Published {
        let Event {
            event_type,
            source,
            payload,
            priority,
            ..
        } = self.event;
        Published {
            id,
            published: self.stamp.moment,
            priority,
            sampled: self.sampled,
            wall_us: self.stamp.wall_us,
            trace_id: self.trace_id,
            // Staged::new checked it fits.
            body_len: self.body_len as u32,
            event_type,
            unencoded: Mutex::new(Some((source, payload))),
            frame: OnceLock::new(),
            sse: OnceLock::new(),
        }
    }
}

/// serde_json escapes only `"`, `\` and control characters: a source without them is
/// written as it is.
fn is_plain(s: &str) -> bool {
    s.bytes().all(|b| escaped_width(b) == 1)
}

/// The bytes [`write_escaped`] writes for `s`, counted without writing them.
fn escaped_len(s: &str) -> usize {
    s.bytes().map(escaped_width).sum()
}

/// The character after the backslash when serde_json writes `b` with a short escape
/// (`"`, `\` and five controls). The other controls are written `\u00XX`, everything
/// else as it is (UTF-8 included).
fn short_escape(b: u8) -> Option<u8> {
    match b {
        b'"' | b'\\' => Some(b),
        0x08 => Some(b'b'),
        0x09 => Some(b't'),
        0x0a => Some(b'n'),
        0x0c => Some(b'f'),
        0x0d => Some(b'r'),
        _ => None,
    }
}

/// How many bytes `b` takes inside a JSON string as serde_json writes it.
fn escaped_width(b: u8) -> usize {
    match short_escape(b) {
        Some(_) => 2,
        None if b < 0x20 => 6,
        None => 1,
    }
}

/// Appends `s` as serde_json writes it inside a JSON string (without the quotes).
fn write_escaped(s: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in s.bytes() {
        match short_escape(b) {
            Some(c) => out.extend_from_slice(&[b'\\', c]),
            None if b < 0x20 => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]),
            None => out.push(b),
        }
    }
}

/// A published event as the log holds it: its id, type and stamps, the rest of the event
/// until it is encoded, and its frame once some thread has asked for it
/// ([`frame`](Self::frame)). [`encoded`](Self::encoded) makes the cheap, cloneable view
/// that acknowledgement tracking, in-process subscribers and the dead-letter queue keep.
#[repr(C)]
pub struct Published {
    // In the order of the cache lines they land on (with the `Arc`'s two counts first),
    // see `hot_fields_share_cache_lines`. The first line: what the retention thread reads
    // of each event (the id, size and time), so it touches no other line until it frees
    // the event; and what a reader stamps into an outbox.
    id: u64,
    /// When publishing began, in 8 bytes ([`Moment`]): the instant and the tick derive
    /// from it.
    published: Moment,
    /// Bytes of the JSON object after `{"id":N,`.
    body_len: u32,
    priority: Priority,
    sampled: bool,
    /// Wall-clock microseconds at `published` (the `timestamp` field).
    wall_us: u64,
    trace_id: TraceId,
    // The second line: what every reader routes and writes.
    /// Kept for routing, which needs no encoding.
    event_type: String,
    frame: OnceLock<Bytes>,
    // The third: what only the first encoder, and SSE, touch.
    /// The source and payload, which only the encoding needs: it takes them, so a retained
    /// event holds its text once.
    unencoded: Mutex<Option<(String, Box<RawValue>)>>,
    /// The Server-Sent Events record, made by the first I/O thread that needs one (so a
    /// server without SSE subscribers never pays for it), then shared like the frame.
    /// Boxed: 16 bytes where a `Bytes` takes 40, in every log entry, for one allocation
    /// per event on servers with SSE subscribers.
    sse: OnceLock<Box<Bytes>>,
}

impl Published {
    /// The log sequence number, which is the event's `id`.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The event type, for routing (no encoding needed).
    pub fn event_type(&self) -> &str {
        &self.event_type
    }

    /// Delivery priority.
    pub fn priority(&self) -> Priority {
        self.priority
    }

    /// When it was handed to the engine (for delivery latency).
    pub fn published_at(&self) -> Instant {
        self.published.instant()
    }

    /// The event's trace id.
    pub fn trace_id(&self) -> TraceId {
        self.trace_id
    }

    /// Whether the event's trace is sampled (spans are recorded for it).
    pub fn sampled(&self) -> bool {
        self.sampled
    }

    /// The publish tick and sampling flag an outbox keeps with the frame.
    pub fn stamp(&self) -> crate::outbox::Stamp {
        crate::outbox::Stamp {
            tick: self.published.tick(),
            sampled: self.sampled,
        }
    }

    /// The length of the encoded frame, known without encoding (retention counts it).
    pub fn frame_len(&self) -> usize {
        let json_len = self.json_len();
        header_len(json_len) + json_len
    }

    /// The complete WebSocket text frame (header + JSON), shared by every subscriber: made
    /// by the first caller on any thread. A second thread that
    /// asks while the first is encoding waits for it: a few hundred nanoseconds, once per
    /// event at most, unless the first is preempted mid-encoding, when the second waits
    /// until it runs again. That is the trade the log already makes for a publisher
    /// preempted between claiming a sequence number and installing its event; letting
    /// each thread encode its own copy instead would mean keeping the event's text beside
    /// its frame for as long as it is retained.
    pub fn frame(&self) -> &Bytes {
        self.frame.get_or_init(|| {
            let taken = self
                .unencoded
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            let (source, payload) =
                taken.expect("get_or_init runs this once, so nothing took the fields before");
            self.encode(&source, &payload)
        })
    }

    /// The event's Server-Sent Events record (`id: EPOCH:ID`, `data: JSON`), made once.
    pub fn sse_record(&self, epoch: u64) -> Bytes {
        Bytes::clone(self.sse.get_or_init(|| {
            let record =
                crate::http::sse::event_record(epoch, self.id, &self.frame()[self.json_at()..]);
            Box::new(record)
        }))
    }

    /// The event as a cheap, cloneable [`Encoded`] (its frame is shared, not copied).
    pub fn encoded(&self) -> Encoded {
        let json_at = self.json_at();
        Encoded {
            id: self.id,
            priority: self.priority,
            published_at: self.published.instant(),
            published_tick: self.published.tick(),
            trace_id: [(self.trace_id.0 >> 64) as u64, self.trace_id.0 as u64],
            sampled: self.sampled,
            frame: self.frame().clone(),
            sse: match self.sse.get() {
                Some(record) => OnceLock::from(Bytes::clone(record)),
                None => OnceLock::new(),
            },
            json_at: json_at as u8,
            type_at: (json_at + id_prefix_len(self.id) + TYPE_KEY.len()) as u32,
            type_len: self.event_type.len() as u16,
        }
    }

    /// Where the JSON starts in the frame: the header's length.
    fn json_at(&self) -> usize {
        header_len(self.json_len())
    }

    /// The JSON object's length: `{"id":N,` and the body.
    fn json_len(&self) -> usize {
        id_prefix_len(self.id) + self.body_len as usize
    }

    fn encode(&self, source: &str, payload: &RawValue) -> Bytes {
        let (event_type, priority) = (&self.event_type, self.priority);
        let mut buf = Vec::with_capacity(HEADROOM + self.body_len as usize);
        buf.resize(HEADROOM, 0);
        for part in [TYPE_KEY, event_type.as_bytes(), SOURCE_KEY] {
            buf.extend_from_slice(part);
        }
        if is_plain(source) {
            buf.extend_from_slice(source.as_bytes());
        } else {
            write_escaped(source, &mut buf);
        }
        for part in [
            TIMESTAMP_KEY,
            &timestamp::format(self.wall_us),
            TRACE_KEY,
            &self.trace_id.hex(),
            PRIORITY_KEY,
            priority.as_str().as_bytes(),
            PAYLOAD_KEY,
            payload.get().as_bytes(),
            b"}",
        ] {
            buf.extend_from_slice(part);
        }
        // Sized exactly: `Bytes::from` below then keeps the buffer as it is.
        debug_assert_eq!(buf.len(), buf.capacity(), "body_len is exact");
        let mut digits = [0u8; 20];
        let n = write_decimal(self.id, &mut digits);
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
        // `advance`, not `slice`, which would clone and so allocate the shared header now.
        let mut frame = Bytes::from(buf);
        frame.advance(frame_at);
        frame
    }
}

impl std::fmt::Debug for Published {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Published")
            .field("id", &self.id)
            .field("event_type", &self.event_type())
            .field("priority", &self.priority())
            .field("encoded", &self.frame.get().is_some())
            .finish()
    }
}

impl Sequenced for Published {
    fn seq(&self) -> u64 {
        self.id
    }
}

/// `{"id":N,` for id `id`. Routing asks for a frame's length per connection, so this
/// counts the digits rather than writing them.
fn id_prefix_len(id: u64) -> usize {
    let digits = id.checked_ilog10().map_or(1, |d| d as usize + 1);
    6 + digits + 1
}

/// The WebSocket header length for a payload of `len` bytes.
fn header_len(len: usize) -> usize {
    frame::write_header(&mut [0; frame::MAX_HEADER_LEN], OpCode::Text, len)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(event: &Event, id: u64) -> Encoded {
        Staged::new(event.clone(), 64 * 1024)
            .unwrap()
            .seal(id)
            .encoded()
    }

    #[test]
    fn the_trace_id_survives_sealing() {
        let t = TraceId::parse("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
        let enc = encoded(&Event::new("a.b", "t").with_trace_id(t), 1);
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
            let enc = encoded(&ev, id);
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
            let enc = encoded(&Event::new("a.b", source), 5);
            let json = std::str::from_utf8(&enc.json()).unwrap().to_owned();
            let expected = format!(",\"source\":{},", serde_json::to_string(source).unwrap());
            assert!(json.contains(&expected), "{json} lacks {expected}");
            let v: serde_json::Value = serde_json::from_str(&json).unwrap();
            assert_eq!(v["source"], source);
        }
    }

    /// serde_json's text for `s` inside its quotes.
    fn serde_escaped(s: &str) -> String {
        let quoted = serde_json::to_string(s).unwrap();
        quoted[1..quoted.len() - 1].to_owned()
    }

    fn escaped(s: &str) -> String {
        let mut out = Vec::new();
        write_escaped(s, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn every_ascii_character_is_escaped_and_counted_as_serde_json_does() {
        for c in (0u8..=0x7f)
            .map(char::from)
            .chain(['\u{e9}', '\u{2028}', '\u{1f980}'])
        {
            let s = format!("a{c}b");
            assert_eq!(escaped(&s), serde_escaped(&s), "{:?}", c);
            assert_eq!(escaped_len(&s), serde_escaped(&s).len(), "{:?}", c);
        }
    }

    proptest::proptest! {
        #[test]
        fn any_source_is_escaped_and_counted_as_serde_json_does(s in proptest::prelude::any::<String>()) {
            proptest::prop_assert_eq!(escaped(&s), serde_escaped(&s));
            proptest::prop_assert_eq!(escaped_len(&s), serde_escaped(&s).len());
        }
    }

    #[test]
    fn large_payload_uses_the_16_bit_length() {
        let big = "x".repeat(1000);
        let enc = encoded(&Event::new("a", "b").with_payload(&big).unwrap(), 3);
        assert_eq!(enc.frame()[1], 126);
        let v: serde_json::Value = serde_json::from_slice(&enc.json()).unwrap();
        assert_eq!(v["payload"].as_str().unwrap().len(), 1000);
    }

    #[test]
    fn a_log_entry_stays_within_192_bytes() {
        // With the Arc's two counts, 192 bytes, which the `mimalloc` crate's aligned
        // calls serve from 224-byte blocks. At 240 bytes (256-byte blocks) the publish
        // floor ran 96.4 against 90.0 ns (README, *On an Intel VM*).
        assert!(std::mem::size_of::<Published>() + 16 <= 192);
    }

    #[test]
    fn hot_fields_share_cache_lines() {
        // Byte ranges in the `Arc`'s allocation (its two counts come first), as if it
        // began a cache line. Its 224-byte block begins on a line or 32 bytes into one
        // (README, *mimalloc's aligned calls*). Measured with the publish bench, the
        // trimmer reading one line per event instead of two made `subscriptions/0` 145
        // against 130 ns (README, *On an Intel VM*).
        use std::mem::{offset_of, size_of};
        let at = |offset: usize, size: usize| 16 + offset..16 + offset + size;
        let first = [
            at(offset_of!(Published, id), 8),
            at(offset_of!(Published, published), size_of::<Moment>()),
            at(offset_of!(Published, body_len), 4),
            at(offset_of!(Published, priority), 1),
            at(offset_of!(Published, sampled), 1),
        ];
        for r in first {
            assert!(r.end <= 64, "{r:?} is past the first line");
        }
        let second = [
            at(offset_of!(Published, event_type), size_of::<String>()),
            at(offset_of!(Published, frame), size_of::<OnceLock<Bytes>>()),
        ];
        for r in second {
            assert!(
                r.start >= 64 && r.end <= 128,
                "{r:?} is not the second line"
            );
        }
    }

    #[test]
    fn size_limit_counts_the_whole_object() {
        let ev = Event::new("a", "b").with_payload(&"x".repeat(200)).unwrap();
        assert!(matches!(
            Staged::new(ev.clone(), 100),
            Err(EventError::TooLarge { limit: 100, .. })
        ));
        assert!(Staged::new(ev.clone(), 400).is_ok());
    }

    #[test]
    fn invalid_events_are_refused() {
        assert_eq!(
            Staged::new(Event::new("", "s"), 1000).err(),
            Some(EventError::EmptyType)
        );
        assert!(matches!(
            Staged::new(Event::new("a b", "s"), 1000),
            Err(EventError::TypeChar(..))
        ));
        assert!(matches!(
            Staged::new(Event::new("a.*", "s"), 1000),
            Err(EventError::TypeChar(..))
        ));
        assert_eq!(
            Staged::new(Event::new("a", ""), 1000).err(),
            Some(EventError::EmptySource)
        );
    }

    #[test]
    fn the_size_known_at_publish_is_the_size_encoded() {
        let long = format!("\"{}\"", "y".repeat(300));
        for (source, payload) in [
            ("s", "1"),
            ("caf\u{e9} \"q\"\n", "{\"a\":[1,2]}"),
            ("s", &long),
        ] {
            let ev = Event::new("a.b.c", source)
                .with_payload_json(payload)
                .unwrap();
            for id in [1, 9, 10, 99_999, u64::MAX] {
                let published = Staged::new(ev.clone(), 64 * 1024).unwrap().seal(id);
                assert_eq!(published.frame_len(), published.frame().len());
                let encoded = published.encoded();
                assert_eq!(encoded.event_type(), "a.b.c", "type_at is right");
                let json: serde_json::Value = serde_json::from_slice(&encoded.json()).unwrap();
                assert_eq!(json["id"], id, "json_at is right");
            }
            // The limit bounds the JSON object with the longest id.
            let json_max = encoded(&ev, u64::MAX).json().len();
            assert!(Staged::new(ev.clone(), json_max).is_ok());
            assert!(matches!(
                Staged::new(ev.clone(), json_max - 1),
                Err(EventError::TooLarge { size, .. }) if size == json_max
            ));
        }
    }

    #[test]
    fn threads_racing_to_encode_see_one_encoding() {
        let published =
            std::sync::Arc::new(Staged::new(Event::new("a.b", "t"), 1024).unwrap().seal(7));
        let frames: Vec<Bytes> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| s.spawn(|| published.frame().clone()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for f in &frames {
            assert_eq!(
                f.as_ptr(),
                frames[0].as_ptr(),
                "every thread got the stored one"
            );
        }
    }
}
