//! `GET /spans/recent?limit=N&trace_id=T`: the newest exported spans, newest first,
//! optionally only those of one trace (the admin page's trace view; a client that saw a
//! `trace_id` finds the server's spans for it here).

use serde_json::{json, Value};

use super::query;
use super::response::Response;
use crate::event::TraceId;
use crate::trace::export::RECENT_SPANS;
use crate::trace::Recent;

/// Spans shown when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 100;

/// What a `/spans/recent` query asks for.
#[derive(Debug, PartialEq, Eq)]
pub struct SpanQuery {
    /// At most this many spans.
    pub limit: usize,
    /// Only this trace's.
    pub trace_id: Option<TraceId>,
}

/// Parses the query: `limit` from 1 to [`RECENT_SPANS`], `trace_id` as 32 hex digits.
pub fn parse_query(q: &str) -> Result<SpanQuery, String> {
    query::only(q, &["limit", "trace_id"])?;
    let mut out = SpanQuery {
        limit: DEFAULT_LIMIT,
        trace_id: None,
    };
    for pair in query::pairs(q) {
        let (k, v) = pair.map_err(|e| e.to_string())?;
        match &*k {
            "limit" => out.limit = query::limit(&v, RECENT_SPANS)?,
            "trace_id" => out.trace_id = Some(TraceId::parse(&v).map_err(|e| e.to_string())?),
            _ => {} // refused by `only`
        }
    }
    Ok(out)
}

/// The response.
pub fn recent(spans: &Recent, dropped: u64, q: &str) -> Response {
    match parse_query(q) {
        Ok(q) => {
            let spans: Vec<Value> = spans
                .newest(q.limit, q.trace_id)
                .iter()
                .map(|s| s.to_json())
                .collect();
            Response::json(200, &json!({ "spans": spans, "dropped": dropped }))
        }
        Err(e) => Response::error(400, &e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_parse_and_bad_ones_are_named() {
        assert_eq!(
            parse_query(""),
            Ok(SpanQuery {
                limit: DEFAULT_LIMIT,
                trace_id: None
            })
        );
        let q = parse_query("limit=5&trace_id=4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
        assert_eq!(q.limit, 5);
        assert_eq!(
            q.trace_id.unwrap().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        for bad in [
            "limit=0",
            "limit=1001",
            "limit=x",
            "trace_id=zz",
            // Misspelt, it would list every span; repeated, one trace of two.
            "trace=4bf92f3577b34da6a3ce929d0e0e4736",
            "trace_id=4bf92f3577b34da6a3ce929d0e0e4736&trace_id=4bf92f3577b34da6a3ce929d0e0e4737",
            "trace_id=%",
        ] {
            assert!(parse_query(bad).is_err(), "{bad}");
        }
        assert!(parse_query("trace_id=00000000000000000000000000000000").is_err());
    }
}
