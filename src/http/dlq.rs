//! The dead-letter queue over HTTP: `GET /dlq/summary`, `GET /dlq/entries?limit=N` and
//! `POST /dlq/retry`. Pure: the queue in, a JSON response out.

use std::time::SystemTime;

use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::query;
use super::response::Response;
use crate::dlq::{DeadLetter, DeadLetterQueue, Summary};
use crate::event::Encoded;

/// Entries `GET /dlq/entries` returns when no `limit` is given.
pub const DEFAULT_LIMIT: usize = 100;
/// The most `GET /dlq/entries` returns at once.
pub const MAX_LIMIT: usize = 10_000;

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_micros(t).to_string()
}

/// The summary as JSON.
pub fn summary_json(s: &Summary) -> Value {
    json!({
        "depth": s.depth,
        "oldest_ts": s.oldest.map(rfc3339),
        "newest_ts": s.newest.map(rfc3339),
        "bytes": s.bytes,
        "enqueued": s.enqueued,
        "evicted": s.evicted,
        "retried": s.retried,
    })
}

/// `GET /dlq/summary`.
pub fn summary(dlq: &DeadLetterQueue) -> Response {
    let mut body = summary_json(&dlq.summary());
    let limits = dlq.limits();
    body["max_entries"] = json!(limits.max_entries);
    body["max_bytes"] = json!(limits.max_bytes);
    Response::json(200, &body)
}

/// An encoded event's JSON as a value (the encoding is always one valid JSON object).
pub fn event_json(ev: &Encoded) -> Value {
    let json = ev.json();
    std::str::from_utf8(&json)
        .ok()
        .and_then(|s| serde_json::from_str::<&RawValue>(s).ok())
        .map_or(Value::Null, |raw| json!(raw))
}

fn entry_json(l: &DeadLetter) -> Value {
    json!({
        "entry_id": l.entry_id,
        "event": event_json(&l.event),
        "error_message": l.error,
        "timestamp": rfc3339(l.timestamp),
        "retry_count": l.retry_count,
        "subscriber": &*l.subscriber,
    })
}

/// Parses `limit` from a query string: a whole number from 1 to [`MAX_LIMIT`], the only
/// parameter.
pub fn parse_limit(q: &str) -> Result<usize, String> {
    query::only(q, &["limit"])?;
    query::limit_param(q, DEFAULT_LIMIT, MAX_LIMIT)
}

/// `GET /dlq/entries?limit=N`: the newest entries, newest first.
pub fn entries(dlq: &DeadLetterQueue, q: &str) -> Response {
    match parse_limit(q) {
        Ok(limit) => {
            let entries: Vec<Value> = dlq.newest(limit).iter().map(|l| entry_json(l)).collect();
            Response::json(200, &json!({ "depth": dlq.depth(), "entries": entries }))
        }
        Err(e) => Response::error(400, &e),
    }
}

/// `POST /dlq/retry`: retries every entry. It takes no options, so it refuses any
/// (a query, or a body other than nothing or an empty JSON object) rather than retry
/// everything when the caller meant some.
pub fn retry(dlq: &DeadLetterQueue, query: &str, body: &[u8]) -> Response {
    if let Err(e) = check_retry(query, body) {
        return Response::error(400, &e);
    }
    let o = dlq.retry();
    Response::json(
        200,
        &json!({ "retried": o.retried, "requeued": o.requeued, "not_retried": o.not_retried }),
    )
}

/// `Ok` when a `POST /dlq/retry` asks for nothing but the retry of every entry.
pub fn check_retry(query: &str, body: &[u8]) -> Result<(), String> {
    let body = body.trim_ascii();
    let no_options = body.is_empty()
        || serde_json::from_slice::<serde_json::Map<String, Value>>(body)
            .is_ok_and(|options| options.is_empty());
    if query.is_empty() && no_options {
        return Ok(());
    }
    Err(
        "POST /dlq/retry takes no options, in its query or its body: it retries every entry \
         (GET /dlq/entries lists them); nothing was retried"
            .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_takes_no_options() {
        for ok in [&b""[..], b" \r\n", b"{}", b" { }\n"] {
            assert_eq!(check_retry("", ok), Ok(()), "{ok:?}");
        }
        for (query, body) in [
            ("", &b"{\"entry_ids\":[1]}"[..]),
            ("", b"{\"subscriber\":\"ledger\"}"),
            ("", b"[]"),
            ("", b"{}{}"),
            ("", b"xx"),
            ("", b"\xff"),
            ("subscriber=ledger", b""),
            ("x", b"{}"),
        ] {
            let e = check_retry(query, body).unwrap_err();
            assert!(e.contains("nothing was retried"), "{e}");
        }
    }

    #[test]
    fn limit_is_checked() {
        assert_eq!(parse_limit(""), Ok(DEFAULT_LIMIT));
        assert_eq!(parse_limit("limit=5"), Ok(5));
        assert_eq!(parse_limit("limit=10000"), Ok(MAX_LIMIT));
        for bad in [
            "limit=0",
            "limit=-1",
            "limit=abc",
            "limit=",
            "limit=10001",
            "limit=1e3",
            "limit=%zz",
            // A misspelt or repeated parameter is refused, not ignored.
            "limt=5",
            "limit=5&x=1",
            "limit=5&limit=6",
        ] {
            assert!(parse_limit(bad).is_err(), "{bad}");
        }
    }
}
