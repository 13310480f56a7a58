//! Spans: what happened to one event, on the server, under the event's `trace_id`.
//!
//! Four kinds of span are recorded, all carrying the trace id of the event they are about,
//! so a client can take the `trace_id` it received and find the server's span tree:
//!
//! | span | recorded by | attributes |
//! | --- | --- | --- |
//! | `event.publish` | [`crate::Bus::publish`] (validate, encode, append, wake) | `event_id`, `event_type`, `source`, `subscriber_count` |
//! | `subscriber.invoke` | an in-process subscriber's worker, around the handler | `subscriber_id`, `event_type`, `status` |
//! | `ws.write` | an I/O thread, around one burst of writes to a connection | `connection_id`, `events`, `bytes` |
//! | `workflow.step` | `firehose stress`, for each step a persona publishes | `persona_id`, `action_type`, `duration_ms` |
//!
//! `event.publish` has a span id derived from the event id ([`publish_span_id`]), so the
//! spans recorded later on other threads name it as their parent without carrying it.
//!
//! **Sampling** is decided per trace, from a hash of the trace id ([`Tracer::sampled`]):
//! every span of a trace is kept or none is, and the decision costs a multiply when
//! `--trace-sample` is 0 or 1. Unsampled events cost one branch.
//!
//! **Recording never blocks**: a sampled span goes into a bounded lock-free queue
//! (crossbeam's `ArrayQueue`); when the queue is full the oldest span is overwritten and
//! counted in [`Tracer::dropped`]. One exporter thread ([`export`]) drains the queue every
//! 100 ms into the configured exporter and the recent-spans view (`GET /spans/recent`).

pub mod export;
#[cfg(feature = "otlp")]
pub mod otlp;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_queue::ArrayQueue;
use serde_json::{json, Map, Value};

use crate::event::TraceId;

pub use export::{Recent, TraceExporter};

/// What a span measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanName {
    /// An event accepted by the publish path.
    EventPublish,
    /// One call of an in-process subscriber's handler.
    SubscriberInvoke,
    /// One burst of writes to a WebSocket connection.
    WsWrite,
    /// One step of a stress-harness persona.
    WorkflowStep,
}

impl SpanName {
    /// The span's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EventPublish => "event.publish",
            Self::SubscriberInvoke => "subscriber.invoke",
            Self::WsWrite => "ws.write",
            Self::WorkflowStep => "workflow.step",
        }
    }
}

/// An attribute value.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Attr {
    /// No attribute (an unused place in [`Attrs`]).
    #[default]
    None,
    /// Text known at compile time.
    Static(&'static str),
    /// Text copied in place (see [`Inline`]).
    Text(Inline),
    /// An integer.
    Int(i64),
    /// A number.
    F64(f64),
}

impl From<&str> for Attr {
    fn from(s: &str) -> Self {
        Self::Text(Inline::new(s))
    }
}

/// A short string stored in place, so a buffered span owns no heap memory (spans that
/// held allocations made every publish slower once thousands were buffered: measured in
/// `benches/observability.rs`). Longer text is cut at a character boundary and ends with
/// `…`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Inline {
    len: u8,
    buf: [u8; INLINE_CAP],
}

const INLINE_CAP: usize = 46;

impl Inline {
    /// `s`, cut to fit.
    pub fn new(s: &str) -> Self {
        let mut out = Self {
            len: 0,
            buf: [0; INLINE_CAP],
        };
        let (text, cut) = if s.len() <= INLINE_CAP {
            (s, false)
        } else {
            let mut end = INLINE_CAP - '…'.len_utf8();
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            (&s[..end], true)
        };
        out.buf[..text.len()].copy_from_slice(text.as_bytes());
        let mut len = text.len();
        if cut {
            len += '…'.encode_utf8(&mut out.buf[len..]).len();
        }
        out.len = len as u8;
        out
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // Built from a `&str` cut at a character boundary, plus a whole character.
        std::str::from_utf8(&self.buf[..usize::from(self.len)]).unwrap_or_default()
    }
}

impl std::fmt::Debug for Inline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl Attr {
    fn to_json(&self) -> Value {
        match self {
            Self::None => Value::Null,
            Self::Static(_) | Self::Text(_) => json!(self.text()),
            Self::Int(n) => json!(n),
            Self::F64(n) => json!(n),
        }
    }

    /// The text of a text attribute.
    pub fn text(&self) -> Option<&str> {
        match self {
            Self::Static(s) => Some(s),
            Self::Text(s) => Some(s.as_str()),
            _ => None,
        }
    }
}

/// A span's attributes: up to four, in place (recording allocates nothing).
pub type Attrs = [(&'static str, Attr); 4];

/// Up to four attributes as [`Attrs`].
pub fn attrs<const N: usize>(list: [(&'static str, Attr); N]) -> Attrs {
    const { assert!(N <= 4, "a span has at most four attributes of its own") };
    let mut out = Attrs::default();
    for (slot, a) in out.iter_mut().zip(list) {
        *slot = a;
    }
    out
}

impl From<u64> for Attr {
    fn from(n: u64) -> Self {
        Self::Int(i64::try_from(n).unwrap_or(i64::MAX))
    }
}

impl From<f64> for Attr {
    fn from(n: f64) -> Self {
        Self::F64(n)
    }
}

/// One finished span.
#[derive(Clone, Debug)]
pub struct Span {
    /// What it measured.
    pub name: SpanName,
    /// The trace it belongs to: the event's `trace_id`.
    pub trace_id: TraceId,
    /// This span's id (never 0).
    pub span_id: u64,
    /// The parent's span id; 0 for a root.
    pub parent_id: u64,
    /// Start, as Unix nanoseconds.
    pub start_unix_nano: u64,
    /// How long it took.
    pub duration: Duration,
    /// Attributes, in the order recorded.
    pub attrs: Attrs,
}

impl Span {
    /// The attributes that are set, in order.
    pub fn attributes(&self) -> Vec<(&'static str, Value)> {
        self.attrs
            .iter()
            .filter(|(_, v)| *v != Attr::None)
            .map(|(k, v)| (*k, v.to_json()))
            .collect()
    }

    /// The span as one JSON object (the JSON exporter's line and `/spans/recent`'s item).
    pub fn to_json(&self) -> Value {
        let attrs: Map<String, Value> = self
            .attributes()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        let nanos = u64::try_from(self.duration.as_nanos()).unwrap_or(u64::MAX);
        json!({
            "name": self.name.as_str(),
            "trace_id": self.trace_id.to_string(),
            "span_id": format!("{:016x}", self.span_id),
            "parent_span_id": (self.parent_id != 0).then(|| format!("{:016x}", self.parent_id)),
            "start_unix_nano": self.start_unix_nano,
            "end_unix_nano": self.start_unix_nano.saturating_add(nanos),
            "duration_ms": self.duration.as_secs_f64() * 1e3,
            "attributes": attrs,
        })
    }
}

/// The span id of `event.publish` for event `id`: a fixed mix of the id, so spans
/// recorded later (on other threads) can name it as their parent.
pub fn publish_span_id(event_id: u64) -> u64 {
    mix(event_id ^ 0x5bd1_e995_0000_0001) | 1
}

/// A fresh random span id (never 0).
pub fn random_span_id() -> u64 {
    (TraceId::random().0 as u64) | 1
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The sampler and the span buffer. One per engine; shared by every thread.
pub struct Tracer {
    /// A trace is sampled when the hash of its id is below this; 0 samples nothing and
    /// `u64::MAX` everything (so a probability under 2^-64 samples nothing).
    threshold: u64,
    queue: ArrayQueue<Span>,
    recorded: AtomicU64,
    dropped: AtomicU64,
    export_failed: AtomicU64,
    /// The clock pair that turns `Instant`s into Unix time.
    base: (Instant, u64),
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracer")
            .field("threshold", &self.threshold)
            .field("buffered", &self.queue.len())
            .finish()
    }
}

impl Tracer {
    /// A tracer keeping traces with probability `sample` (clamped to 0..=1), buffering up
    /// to `capacity` spans (at least 1) for the exporter.
    pub fn new(sample: f64, capacity: usize) -> Self {
        let sample = if sample.is_nan() {
            0.0
        } else {
            sample.clamp(0.0, 1.0)
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        Self {
            threshold: if sample >= 1.0 {
                u64::MAX
            } else {
                (sample * u64::MAX as f64) as u64
            },
            queue: ArrayQueue::new(capacity.max(1)),
            recorded: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            export_failed: AtomicU64::new(0),
            base: (Instant::now(), now),
        }
    }

    /// A tracer that samples nothing.
    pub fn off() -> Self {
        Self::new(0.0, 1)
    }

    /// Whether spans of `trace` are recorded.
    #[inline]
    pub fn sampled(&self, trace: TraceId) -> bool {
        self.threshold == u64::MAX || mix((trace.0 >> 64) as u64 ^ trace.0 as u64) < self.threshold
    }

    /// `t` as Unix nanoseconds.
    pub fn unix_nanos(&self, t: Instant) -> u64 {
        let (base, unix) = self.base;
        match t.checked_duration_since(base) {
            Some(d) => unix.saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
            None => unix.saturating_sub(
                u64::try_from(base.duration_since(t).as_nanos()).unwrap_or(u64::MAX),
            ),
        }
    }

    /// Records a finished span that started at `start` and ends now. Never blocks: when
    /// the buffer is full the oldest span gives way (and is counted as dropped).
    pub fn record(
        &self,
        name: SpanName,
        trace_id: TraceId,
        ids: (u64, u64),
        start: Instant,
        attrs: Attrs,
    ) {
        let (span_id, parent_id) = ids;
        self.push(Span {
            name,
            trace_id,
            span_id,
            parent_id,
            start_unix_nano: self.unix_nanos(start),
            duration: start.elapsed(),
            attrs,
        });
    }

    /// Records a span built elsewhere (the stress harness's `workflow.step`).
    pub fn push(&self, span: Span) {
        self.recorded.fetch_add(1, Ordering::Relaxed);
        if self.queue.force_push(span).is_some() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Moves every buffered span into `out`, oldest first.
    pub fn drain(&self, out: &mut Vec<Span>) {
        while let Some(s) = self.queue.pop() {
            out.push(s);
        }
    }

    /// Spans recorded since start.
    pub fn recorded(&self) -> u64 {
        self.recorded.load(Ordering::Relaxed)
    }

    /// Spans overwritten in a full buffer before the exporter took them.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Spans the exporter could not deliver (file write or collector failures).
    pub fn export_failed(&self) -> u64 {
        self.export_failed.load(Ordering::Relaxed)
    }

    pub(crate) fn count_export_failed(&self, n: u64) {
        self.export_failed.fetch_add(n, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_is_per_trace_and_roughly_the_asked_fraction() {
        let none = Tracer::new(0.0, 8);
        let all = Tracer::new(1.0, 8);
        let some = Tracer::new(0.25, 8);
        let traces: Vec<TraceId> = (1..=20_000u128).map(|i| TraceId(i * 0x9E37_79B9)).collect();
        assert!(traces.iter().all(|t| all.sampled(*t)));
        assert!(!traces.iter().any(|t| none.sampled(*t)));
        let kept = traces.iter().filter(|t| some.sampled(**t)).count();
        assert!((4_000..6_000).contains(&kept), "{kept} of 20000 at 0.25");
        // The same trace always gets the same answer.
        assert!(traces.iter().all(|t| some.sampled(*t) == some.sampled(*t)));
        assert!(!Tracer::new(f64::NAN, 1).sampled(TraceId(7)));
    }

    #[test]
    fn a_full_buffer_overwrites_the_oldest_and_counts_it() {
        let t = Tracer::new(1.0, 2);
        for i in 1..=3 {
            t.record(
                SpanName::WsWrite,
                TraceId(i),
                (i as u64, 0),
                Instant::now(),
                attrs([("events", Attr::from(i as u64))]),
            );
        }
        let mut out = Vec::new();
        t.drain(&mut out);
        assert_eq!(out.iter().map(|s| s.trace_id.0).collect::<Vec<_>>(), [2, 3]);
        assert_eq!((t.recorded(), t.dropped()), (3, 1));
        let j = out[1].to_json();
        assert_eq!(j["name"], "ws.write");
        assert_eq!(j["trace_id"], "00000000000000000000000000000003");
        assert_eq!(j["parent_span_id"], Value::Null);
        assert_eq!(j["attributes"]["events"], 3);
    }

    #[test]
    fn inline_text_is_cut_at_a_character_boundary() {
        assert_eq!(Inline::new("").as_str(), "");
        assert_eq!(Inline::new("order.placed").as_str(), "order.placed");
        let exact = "x".repeat(INLINE_CAP);
        assert_eq!(Inline::new(&exact).as_str(), exact);
        let long = "é".repeat(40);
        let cut = Inline::new(&long);
        assert!(cut.as_str().ends_with('…') && cut.as_str().len() <= INLINE_CAP);
        assert!(long.starts_with(cut.as_str().trim_end_matches('…')));
    }

    #[test]
    fn publish_span_ids_are_stable_and_nonzero() {
        assert_eq!(publish_span_id(42), publish_span_id(42));
        assert_ne!(publish_span_id(42), publish_span_id(43));
        assert!((0..1000).all(|i| publish_span_id(i) != 0));
    }
}
