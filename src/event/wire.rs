//! Events as publishers write them in JSON: the body of `POST /publish` and the fields of a
//! WebSocket `{"op":"publish",…}` message. Pure functions over bytes; fuzzed.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{Event, EventError, Priority, TraceId};

/// One event in publisher JSON. `id` and `timestamp` are the engine's to assign, so they
/// (like any other unknown field) are refused rather than silently ignored.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireEvent {
    /// Present only in WebSocket messages (`"publish"`).
    #[serde(default)]
    pub op: Option<String>,
    /// WebSocket only: echoed in the `published` answer.
    #[serde(default, rename = "ref")]
    pub reference: Option<Box<RawValue>>,
    /// The event type.
    pub event_type: String,
    /// The publisher's name.
    pub source: String,
    /// Any JSON value; absent means `null`.
    #[serde(default)]
    pub payload: Option<Box<RawValue>>,
    /// Defaults to `bulk`.
    #[serde(default)]
    pub priority: Option<Priority>,
    /// 32 hex digits; generated when absent.
    #[serde(default)]
    pub trace_id: Option<String>,
}

impl WireEvent {
    /// Checks the fields and builds the [`Event`].
    pub fn into_event(self) -> Result<Event, EventError> {
        let mut event = Event::new(self.event_type, self.source);
        if let Some(payload) = self.payload {
            event.payload = payload;
        }
        event.priority = self.priority.unwrap_or_default();
        if let Some(t) = self.trace_id {
            event.trace_id = Some(TraceId::parse(&t)?);
        }
        event.validate()?;
        Ok(event)
    }
}

/// Parses a `POST /publish` body: one event object or an array of at most `max_events`.
pub fn parse_publish_body(body: &[u8], max_events: usize) -> Result<Vec<Event>, EventError> {
    let shape = |e: serde_json::Error| {
        EventError::Shape(format!("body is not an event or an array of events: {e}"))
    };
    let wires: Vec<WireEvent> = match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[') => serde_json::from_slice(body).map_err(shape)?,
        Some(b'{') => match std::str::from_utf8(body)
            .ok()
            .and_then(super::fastpath::read)
        {
            Some(wire) => vec![wire],
            None => vec![serde_json::from_slice(body).map_err(shape)?],
        },
        _ => {
            return Err(EventError::Shape(
                "body must be a JSON object (one event) or an array of events".into(),
            ))
        }
    };
    if wires.is_empty() {
        return Err(EventError::Shape("the array of events is empty".into()));
    }
    if wires.len() > max_events {
        return Err(EventError::TooMany {
            count: wires.len(),
            limit: max_events,
        });
    }
    let len = wires.len();
    wires
        .into_iter()
        .enumerate()
        .map(|(index, w)| {
            if w.op.is_some() || w.reference.is_some() {
                Err(EventError::Shape(
                    "`op` and `ref` belong to WebSocket messages, not to POST /publish".into(),
                ))
            } else {
                w.into_event()
            }
            .map_err(|e| e.at(index, len))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_event_or_an_array() {
        let one = parse_publish_body(
            br#"{"event_type":"a.b","source":"s","payload":{"k":1}}"#,
            10,
        )
        .unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].payload.get(), r#"{"k":1}"#);
        assert_eq!(one[0].priority, Priority::Bulk);
        let many = parse_publish_body(
            br#" [{"event_type":"a","source":"s"},{"event_type":"b","source":"s","priority":"critical","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736"}]"#,
            10,
        )
        .unwrap();
        assert_eq!(many.len(), 2);
        assert_eq!(many[0].payload.get(), "null");
        assert_eq!(many[1].priority, Priority::Critical);
        assert!(many[1].trace_id.is_some());
    }

    #[test]
    fn payloads_pass_through_byte_for_byte() {
        // Valid JSON that serde_json's Value could not hold (the number) or would reorder.
        let body = br#"{"event_type":"a","source":"s","payload":{"z":1,"n":123456789012345678901234567890,"a":[1.50]}}"#;
        let ev = parse_publish_body(body, 1).unwrap().remove(0);
        assert_eq!(
            ev.payload.get(),
            r#"{"z":1,"n":123456789012345678901234567890,"a":[1.50]}"#
        );
    }

    #[test]
    fn refusals_say_why() {
        let err = |b: &[u8]| parse_publish_body(b, 2).unwrap_err().to_string();
        assert!(err(b"").contains("JSON object"));
        assert!(err(b"42").contains("JSON object"));
        assert!(err(b"[]").contains("empty"));
        assert!(err(br#"{"source":"s"}"#).contains("event_type"));
        assert!(err(br#"{"event_type":"a","source":"s","id":3}"#).contains("unknown field `id`"));
        assert!(err(br#"{"event_type":"a","source":"s","priority":"urgent"}"#).contains("urgent"));
        assert!(err(br#"{"event_type":"a","source":"s","trace_id":"xyz"}"#).contains("trace_id"));
        assert!(err(br#"{"event_type":"a b","source":"s"}"#).contains("letters"));
        assert!(err(br#"{"event_type":"a","source":"s","op":"publish"}"#).contains("WebSocket"));
        let three = br#"[{"event_type":"a","source":"s"},{"event_type":"a","source":"s"},{"event_type":"a","source":"s"}]"#;
        assert!(err(three).contains("limit is 2"));
        assert!(err(br#"{"event_type":"a","source":"s""#).contains("not an event"));
    }

    #[test]
    fn a_refused_event_of_a_batch_is_named_by_its_index() {
        let batch = br#"[{"event_type":"a","source":"s"},{"event_type":"a b","source":"s"}]"#;
        assert_eq!(
            parse_publish_body(batch, 2).unwrap_err(),
            EventError::InBatch {
                index: 1,
                len: 2,
                error: Box::new(EventError::TypeChar("a b".into(), ' ')),
            }
        );
        let one = br#"[{"event_type":"a b","source":"s"}]"#;
        assert_eq!(
            parse_publish_body(one, 2).unwrap_err(),
            EventError::TypeChar("a b".into(), ' ')
        );
    }
}
