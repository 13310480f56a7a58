//! Control messages: the small JSON objects with an `op` that clients send, and the
//! notices the server sends. Pure functions; [`parse_op`] is fuzzed.
//!
//! Client → server: `ack` (`id`), `subscribe` / `unsubscribe` (`types`: a list of patterns),
//! `publish` (the event's own fields; with `ref`, the server answers `published`), `resume`
//! (`last_event_id`, optional `epoch`: start over from there, see [`crate::resume`]).
//! Server → client: `welcome`, `published`, `subscribed`, `dropped`, `gap`, `backlog`,
//! `closing`, `error`.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::frame::{self, OpCode};
use crate::event::{Priority, WireEvent};
use crate::policy::Policy;
use crate::resume::{Position, Start};

/// A parsed client message.
#[derive(Debug)]
pub enum ClientOp {
    /// Cumulative acknowledgement up to `id` (for `ack=` subscriptions, see [`crate::acks`]).
    Ack {
        /// Highest id the client has processed.
        id: u64,
    },
    /// Add patterns to the connection's filter.
    Subscribe {
        /// Patterns to add.
        types: Vec<String>,
        /// Echoed in the answer.
        reference: Option<Box<RawValue>>,
    },
    /// Remove patterns from the connection's filter.
    Unsubscribe {
        /// Patterns to remove.
        types: Vec<String>,
        /// Echoed in the answer.
        reference: Option<Box<RawValue>>,
    },
    /// Publish an event.
    Publish(WireEvent),
    /// Start over from a position: replay what followed it, then continue live.
    Resume(Position),
}

/// A client message the server could not act on; answered with an `error` notice.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct OpError {
    /// What was wrong, for the client.
    pub message: String,
    /// The message's `ref`, when one could be read, so the client can match the answer.
    pub reference: Option<Box<RawValue>>,
}

#[derive(Deserialize)]
struct Envelope {
    op: Option<String>,
    #[serde(default, rename = "ref")]
    reference: Option<Box<RawValue>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AckMsg {
    #[allow(dead_code)]
    op: String,
    id: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResumeMsg {
    #[allow(dead_code)]
    op: String,
    /// A number, or a string `N` / `E:N`.
    last_event_id: Value,
    #[serde(default)]
    epoch: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TypesMsg {
    #[allow(dead_code)]
    op: String,
    types: Vec<String>,
    #[serde(default, rename = "ref")]
    reference: Option<Box<RawValue>>,
}

/// Parses one client text message (UTF-8, as every WebSocket text message must be).
pub fn parse_op(text: &str) -> Result<ClientOp, OpError> {
    // Most messages are publishes: read those in one pass when they have the plain shape.
    if let Some(event) = crate::event::fastpath::read(text) {
        if event.op.as_deref() == Some("publish") {
            return Ok(ClientOp::Publish(event));
        }
    }
    let envelope: Envelope = serde_json::from_str(text).map_err(|e| OpError {
        message: format!("message is not a JSON object with an `op`: {e}"),
        reference: None,
    })?;
    let reference = envelope.reference;
    let fail = |message: String| OpError {
        message,
        reference: reference.clone(),
    };
    let shape = |e: serde_json::Error| {
        fail(format!(
            "bad `{}` message: {e}",
            envelope.op.as_deref().unwrap_or("")
        ))
    };
    match envelope.op.as_deref() {
        Some("ack") => {
            let m: AckMsg = serde_json::from_str(text).map_err(shape)?;
            Ok(ClientOp::Ack { id: m.id })
        }
        Some(op @ ("subscribe" | "unsubscribe")) => {
            let m: TypesMsg = serde_json::from_str(text).map_err(shape)?;
            Ok(if op == "subscribe" {
                ClientOp::Subscribe {
                    types: m.types,
                    reference: m.reference,
                }
            } else {
                ClientOp::Unsubscribe {
                    types: m.types,
                    reference: m.reference,
                }
            })
        }
        Some("publish") => Ok(ClientOp::Publish(
            serde_json::from_str(text).map_err(shape)?,
        )),
        Some("resume") => {
            let m: ResumeMsg = serde_json::from_str(text).map_err(shape)?;
            let id = match &m.last_event_id {
                Value::Number(n) => n.to_string(),
                Value::String(s) => s.clone(),
                _ => {
                    return Err(fail(
                        "bad `resume` message: last_event_id must be a number or a string".into(),
                    ))
                }
            };
            let epoch = m.epoch.map(|e| e.to_string());
            Position::from_parts(Some(&id), epoch.as_deref())
                .map(|p| ClientOp::Resume(p.expect("an id was given")))
                .map_err(|e| fail(format!("bad `resume` message: {e}")))
        }
        Some(other) => Err(fail(format!(
            "unknown op {:?}: use ack, subscribe, unsubscribe, publish or resume",
            other.chars().take(32).collect::<String>()
        ))),
        None => Err(fail(
            "message has no `op`: use ack, subscribe, unsubscribe, publish or resume".into(),
        )),
    }
}

fn text(value: Value) -> Bytes {
    frame::encode(OpCode::Text, value.to_string().as_bytes())
}

/// How a subscriber's notices are framed: a WebSocket text message, or a Server-Sent
/// Events record named for its `op` (`event: gap`), so `EventSource` listeners can pick
/// them apart from events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// A WebSocket text frame of the JSON.
    WebSocket,
    /// `event: OP` / `data: JSON`.
    Sse,
}

fn notice(framing: Framing, op: &str, value: Value) -> Bytes {
    match framing {
        Framing::WebSocket => text(value),
        Framing::Sse => crate::http::sse::record(op, &value.to_string()),
    }
}

fn reference_value(reference: Option<&RawValue>) -> Value {
    reference
        .and_then(|r| serde_json::from_str(r.get()).ok())
        .unwrap_or(Value::Null)
}

/// `{"op":"welcome",…}`: the subscription is live; every event after `last_id` that matches
/// the filter will be delivered (or reported as dropped, or as a `gap` when it is past
/// retention). `recovered` says whether a resume got everything it asked for; when not,
/// `reason` says why (`not_asked`, `other_epoch`, `unknown_id`, `gap`).
pub fn welcome(
    framing: Framing,
    connection_id: u64,
    epoch: u64,
    start: &Start,
    types: &[String],
    overflow: Policy,
) -> Bytes {
    let mut v = json!({
        "op": "welcome", "connection_id": connection_id, "epoch": epoch,
        "recovered": start.recovered.is_ok(), "last_id": start.last_id,
        "types": types, "overflow": overflow.as_str(),
    });
    if let Err(why) = start.recovered {
        v["reason"] = why.as_str().into();
    }
    notice(framing, "welcome", v)
}

/// `{"op":"gap","from":A,"to":B}`: events `A..=B` existed but are no longer retained; what
/// follows is what was.
pub fn gap(framing: Framing, from: u64, to: u64) -> Bytes {
    notice(framing, "gap", json!({"op": "gap", "from": from, "to": to}))
}

/// `{"op":"published","ref":…,"id":N}`.
pub fn published(reference: &RawValue, id: u64) -> Bytes {
    text(json!({"op": "published", "ref": reference_value(Some(reference)), "id": id}))
}

/// `{"op":"subscribed","ref":…,"types":[…]}`: the filter after a subscribe/unsubscribe.
pub fn subscribed(reference: Option<&RawValue>, types: &[String]) -> Bytes {
    text(json!({"op": "subscribed", "ref": reference_value(reference), "types": types}))
}

/// `{"op":"error","ref":…,"error":"…"}`.
pub fn error(reference: Option<&RawValue>, message: &str) -> Bytes {
    text(json!({"op": "error", "ref": reference_value(reference), "error": message}))
}

/// `{"op":"dropped","count":N,"first_id":A,"last_id":B}`: one per overflow episode, with
/// `"lane"` under the priority policy.
pub fn dropped(
    framing: Framing,
    count: u64,
    first_id: u64,
    last_id: u64,
    lane: Option<Priority>,
) -> Bytes {
    let mut v = json!({"op": "dropped", "count": count, "first_id": first_id, "last_id": last_id});
    if let Some(lane) = lane {
        v["lane"] = lane.as_str().into();
    }
    notice(framing, "dropped", v)
}

/// `{"op":"backlog","queued":N}`: this connection's queue crossed its high-water mark;
/// a UI can show "catching up".
pub fn backlog(framing: Framing, queued: usize) -> Bytes {
    notice(
        framing,
        "backlog",
        json!({"op": "backlog", "queued": queued}),
    )
}

/// `{"op":"closing","reason":"…","last_id":N}`: the server is about to close; `last_id` is
/// the last event this connection delivered, where the client can resume.
pub fn closing(framing: Framing, reason: &str, last_id: u64) -> Bytes {
    notice(
        framing,
        "closing",
        json!({"op": "closing", "reason": reason, "last_id": last_id}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_op() {
        assert!(matches!(
            parse_op(r#"{"op":"ack","id":5}"#),
            Ok(ClientOp::Ack { id: 5 })
        ));
        match parse_op(r#"{"op":"subscribe","types":["a.*"],"ref":7}"#).unwrap() {
            ClientOp::Subscribe { types, reference } => {
                assert_eq!(types, ["a.*"]);
                assert_eq!(reference.unwrap().get(), "7");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_op(r#"{"op":"unsubscribe","types":[]}"#),
            Ok(ClientOp::Unsubscribe { .. })
        ));
        match parse_op(r#"{"op":"publish","event_type":"a","source":"s","ref":"x","payload":[1]}"#)
            .unwrap()
        {
            ClientOp::Publish(w) => {
                assert_eq!(w.event_type, "a");
                assert_eq!(w.reference.unwrap().get(), "\"x\"");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn errors_keep_the_ref_when_they_can() {
        let e = parse_op(r#"{"op":"fly","ref":3}"#).unwrap_err();
        assert!(e.message.contains("unknown op"));
        assert_eq!(e.reference.unwrap().get(), "3");
        let e = parse_op(r#"{"op":"publish","ref":4,"source":"s"}"#).unwrap_err();
        assert!(e.message.contains("event_type"), "{}", e.message);
        assert_eq!(e.reference.unwrap().get(), "4");
        assert!(parse_op("not json").unwrap_err().reference.is_none());
        assert!(parse_op("{}").unwrap_err().message.contains("no `op`"));
        assert!(parse_op(r#"{"op":"ack"}"#)
            .unwrap_err()
            .message
            .contains("id"));
    }

    #[test]
    fn notices_are_text_frames_of_json() {
        let f = dropped(Framing::WebSocket, 3, 10, 12, None);
        assert_eq!(f[0], 0x81);
        let v: Value = serde_json::from_slice(&f[2..]).unwrap();
        assert_eq!(
            v,
            json!({"op":"dropped","count":3,"first_id":10,"last_id":12})
        );
        let v: Value = serde_json::from_slice(
            &dropped(Framing::WebSocket, 1, 5, 5, Some(Priority::Bulk))[2..],
        )
        .unwrap();
        assert_eq!(v["lane"], "bulk");
        let r = RawValue::from_string("{\"k\":1}".into()).unwrap();
        let v: Value = serde_json::from_slice(&published(&r, 9)[2..]).unwrap();
        assert_eq!(v, json!({"op":"published","ref":{"k":1},"id":9}));
    }
}
