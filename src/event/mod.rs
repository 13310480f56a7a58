//! The event model: what publishers send ([`Event`]), how it is checked, and how it is
//! encoded once into the bytes every subscriber receives ([`Encoded`]).
//!
//! Wire shape, as delivered:
//!
//! ```json
//! {"id":1234,"event_type":"workflow.step.completed","source":"stress_harness",
//!  "timestamp":"2026-11-23T16:15:50.123456Z","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736",
//!  "priority":"bulk","payload":{"seq":0}}
//! ```

mod encode;
pub mod fastpath;
mod filter;
pub mod timestamp;
mod trace_id;
mod tsc;
mod wire;

pub use encode::{Encoded, Published, Staged};
pub use filter::{Filter, FilterError, Pattern};
pub use trace_id::TraceId;
pub use wire::{parse_publish_body, WireEvent};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Longest accepted `event_type`, in bytes.
pub const MAX_TYPE_LEN: usize = 128;
/// Longest accepted `source`, in bytes.
pub const MAX_SOURCE_LEN: usize = 256;

/// Delivery priority, highest first. Lanes and overflow policies use it (see DESIGN.md).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Protocol-level messages; never dropped by priority policies.
    Control,
    /// Must arrive.
    Critical,
    /// Should arrive.
    Important,
    /// The default: may be shed first under pressure.
    #[default]
    Bulk,
}

impl Priority {
    /// The name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Control => "control",
            Priority::Critical => "critical",
            Priority::Important => "important",
            Priority::Bulk => "bulk",
        }
    }
}

/// An event as a publisher hands it in: the engine assigns `id` and `timestamp`, and a
/// `trace_id` when there is none.
#[derive(Clone, Debug)]
pub struct Event {
    /// Dotted type such as `workflow.step.completed`; subscribers filter on it.
    pub event_type: String,
    /// Who published it.
    pub source: String,
    /// Any JSON value, kept as the publisher's text so it is never re-serialised.
    pub payload: Box<RawValue>,
    /// Delivery priority.
    pub priority: Priority,
    /// W3C trace id; generated when absent.
    pub trace_id: Option<TraceId>,
}

impl Event {
    /// An event with a `null` payload and `bulk` priority.
    pub fn new(event_type: impl Into<String>, source: impl Into<String>) -> Self {
        Self {
            event_type: event_type.into(),
            source: source.into(),
            payload: null_payload(),
            priority: Priority::Bulk,
            trace_id: None,
        }
    }

    /// Sets the payload to `value` serialised as JSON.
    pub fn with_payload(mut self, value: &impl Serialize) -> Result<Self, EventError> {
        self.payload = serde_json::value::to_raw_value(value)
            .map_err(|e| EventError::Payload(e.to_string()))?;
        Ok(self)
    }

    /// Sets the payload from JSON text, which must be one valid JSON value.
    pub fn with_payload_json(mut self, json: &str) -> Result<Self, EventError> {
        self.payload = RawValue::from_string(json.to_owned())
            .map_err(|e| EventError::Payload(e.to_string()))?;
        Ok(self)
    }

    /// Sets the priority.
    pub fn with_priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }

    /// Sets the trace id.
    pub fn with_trace_id(mut self, trace_id: TraceId) -> Self {
        self.trace_id = Some(trace_id);
        self
    }

    /// Checks the fields a subscriber's filter and the wire format depend on.
    pub fn validate(&self) -> Result<(), EventError> {
        validate_type(&self.event_type)?;
        if self.source.is_empty() {
            return Err(EventError::EmptySource);
        }
        if self.source.len() > MAX_SOURCE_LEN {
            return Err(EventError::SourceTooLong(self.source.len()));
        }
        Ok(())
    }
}

fn null_payload() -> Box<RawValue> {
    RawValue::from_string("null".to_owned()).expect("`null` is valid JSON")
}

/// Checks an event type: 1 to [`MAX_TYPE_LEN`] bytes of `A-Z a-z 0-9 . _ - :`. The narrow
/// alphabet means a type never needs escaping in JSON and never collides with a pattern.
pub fn validate_type(t: &str) -> Result<(), EventError> {
    if t.is_empty() {
        return Err(EventError::EmptyType);
    }
    if t.len() > MAX_TYPE_LEN {
        return Err(EventError::TypeTooLong(t.len()));
    }
    // Every accepted character is ASCII, so a byte check settles it.
    if all_type_bytes(t.as_bytes()) {
        return Ok(());
    }
    match t.chars().find(|c| !is_type_char(*c)) {
        Some(c) => Err(EventError::TypeChar(t.to_owned(), c)),
        None => Ok(()),
    }
}

pub(crate) fn is_type_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':')
}

/// Whether every byte of `t` passes [`is_type_byte`]. It runs on every publish, so it
/// checks 16 bytes at a time without stopping at the first bad one (one run of vector
/// compares per block): the whole blocks, then the last 16 bytes as one more block,
/// overlapping the others, instead of a vector loop and a byte-by-byte tail (a 23-byte
/// type is two blocks). Under 16 bytes, a table lookup per byte.
fn all_type_bytes(t: &[u8]) -> bool {
    match t.last_chunk::<16>() {
        Some(last) => {
            // Lane by lane across the blocks, reduced once at the end.
            let mut ok = [1u8; 16];
            for block in t.chunks_exact(16).chain([last.as_slice()]) {
                for (lane, &b) in ok.iter_mut().zip(block) {
                    *lane &= u8::from(is_type_byte(b));
                }
            }
            u128::from_ne_bytes(ok) == u128::from_ne_bytes([1; 16])
        }
        None => t
            .iter()
            .fold(true, |ok, &c| ok & TYPE_BYTES[usize::from(c)]),
    }
}

/// [`is_type_byte`] of every byte.
static TYPE_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = is_type_byte(b as u8);
        b += 1;
    }
    table
};

/// [`is_type_char`] for one byte, written as range compares that vectorise (setting bit
/// 5 folds `A-Z` onto `a-z`, and no other byte onto them).
const fn is_type_byte(b: u8) -> bool {
    let folded = b | 0x20;
    folded.is_ascii_lowercase()
        | b.is_ascii_digit()
        | (b == b'.')
        | (b == b'_')
        | (b == b'-')
        | (b == b':')
}

/// Why an event was refused. The message names the field and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// Empty `event_type`.
    #[error("`event_type` is empty: give a dotted name such as `workflow.step.completed`")]
    EmptyType,
    /// Over-long `event_type`.
    #[error("`event_type` is {0} bytes; the limit is 128")]
    TypeTooLong(usize),
    /// Bad character in `event_type`.
    #[error("`event_type` {0:?} contains {1:?}; use only letters, digits and . _ - :")]
    TypeChar(String, char),
    /// Empty `source`.
    #[error("`source` is empty: name the publisher")]
    EmptySource,
    /// Over-long `source`.
    #[error("`source` is {0} bytes; the limit is 256")]
    SourceTooLong(usize),
    /// Bad `trace_id`.
    #[error("`trace_id` {0:?} is not 32 hex digits (W3C trace context), or is all zeros")]
    TraceId(String),
    /// Payload could not be represented.
    #[error("`payload` is not valid JSON: {0}")]
    Payload(String),
    /// The encoded event is over the limit.
    #[error("the encoded event is {size} bytes; the limit is {limit} (--max-event-bytes)")]
    TooLarge {
        /// Encoded size.
        size: usize,
        /// Configured limit.
        limit: usize,
    },
    /// The JSON did not have the event shape.
    #[error("{0}")]
    Shape(String),
    /// An array of events was too long.
    #[error("{count} events in one request; the limit is {limit}")]
    TooMany {
        /// Events sent.
        count: usize,
        /// Configured limit.
        limit: usize,
    },
    /// One event of a batch was refused, so none of the batch was published.
    #[error("event at index {index} of {len}: {error}; nothing was published")]
    InBatch {
        /// Its position in the batch, from 0.
        index: usize,
        /// How many events the batch had.
        len: usize,
        /// Why it was refused.
        error: Box<EventError>,
    },
}

impl EventError {
    /// This error for event `index` of a batch of `len`, naming its position when there
    /// is more than one (a caller with thousands of events needs to know which).
    pub(crate) fn at(self, index: usize, len: usize) -> Self {
        if len > 1 {
            EventError::InBatch {
                index,
                len,
                error: Box::new(self),
            }
        } else {
            self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_byte_check_admits_exactly_the_type_characters() {
        for b in 0..=u8::MAX {
            assert_eq!(
                is_type_byte(b),
                b.is_ascii() && is_type_char(char::from(b)),
                "byte {b:#04x}"
            );
        }
    }

    #[test]
    fn a_bad_character_anywhere_is_named() {
        assert_eq!(validate_type("workflow.step.completed"), Ok(()));
        assert_eq!(validate_type("A-Z_0:9"), Ok(()));
        for bad in ["a b", "a.*", "x@", "[", "`", "{", "a/b", "tab\t", "é"] {
            assert!(
                matches!(validate_type(bad), Err(EventError::TypeChar(..))),
                "{bad:?}"
            );
        }
        assert_eq!(
            validate_type("ok.é.ok"),
            Err(EventError::TypeChar("ok.é.ok".into(), 'é'))
        );
    }

    /// Every length through both paths (the table under 16 bytes; whole blocks and an
    /// overlapping last block from 16), every byte value, at every position.
    #[test]
    fn every_byte_is_checked_at_every_length_and_position() {
        for len in 1..=MAX_TYPE_LEN {
            let good = vec![b'a'; len];
            assert!(all_type_bytes(&good), "{len}");
            for at in 0..len {
                for b in 0..=255u8 {
                    let mut t = good.clone();
                    t[at] = b;
                    assert_eq!(all_type_bytes(&t), is_type_byte(b), "{len} {at} {b}");
                }
            }
        }
    }
}
