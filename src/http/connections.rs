//! `GET /connections` and `GET /connections/{id}/recent`: every subscriber connection, as
//! the I/O threads that own them reported it (see [`crate::census`]), and the last events
//! written to one of them. Pure: the query and the reports in, a response out.
//!
//! The recent events are kept as ids (handles into the event log, not copies) and looked
//! up when asked for; an event the log no longer retains is listed by id alone.

use std::sync::Arc;

use serde_json::{json, Value};

use super::dlq::event_json;
use super::query;
use super::response::Response;
use crate::census::{ConnInfo, ConnState, Report};
use crate::event::Published;
use crate::log::{EventLog, Read};

/// Connections listed when no `limit` is given.
pub const DEFAULT_LIMIT: usize = 1_000;
/// The most listed at once.
pub const MAX_LIMIT: usize = 100_000;

/// A request that needs every I/O thread's report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ask {
    /// `GET /connections`: at most `limit`, in id order, only those in `state` if given.
    List {
        /// At most this many.
        limit: usize,
        /// Only connections in this state.
        state: Option<ConnState>,
    },
    /// `GET /connections/{id}/recent`.
    Recent {
        /// The connection id.
        id: u64,
    },
}

/// Parses the `/connections` query: `limit` (1 to [`MAX_LIMIT`]) and
/// `state=ok|backpressure|closing|replaying`.
pub fn parse_list(q: &str) -> Result<Ask, String> {
    query::only(q, &["limit", "state"])?;
    let limit = query::limit_param(q, DEFAULT_LIMIT, MAX_LIMIT)?;
    let mut state = None;
    for pair in query::pairs(q) {
        let (k, v) = pair.map_err(|e| e.to_string())?;
        if k == "state" {
            state = Some(match &*v {
                "ok" => ConnState::Ok,
                "backpressure" => ConnState::Backpressure,
                "closing" => ConnState::Closing,
                "replaying" => ConnState::Replaying,
                other => {
                    return Err(format!(
                        "state must be ok, backpressure, closing or replaying, not {:?}",
                        other.chars().take(32).collect::<String>()
                    ))
                }
            });
        }
    }
    Ok(Ask::List { limit, state })
}

/// `Some` if `path` is under `/connections/`: the id of `/connections/{id}/recent`, or why
/// the path is not one.
pub fn parse_recent_path(path: &str) -> Option<Result<u64, String>> {
    let rest = path.strip_prefix("/connections/")?;
    let bad = || {
        format!(
            "expected /connections/{{id}}/recent with a connection id from GET /connections, not {:?}",
            path.chars().take(128).collect::<String>()
        )
    };
    let Some((id, "recent")) = rest.split_once('/') else {
        return Some(Err(bad()));
    };
    let digits = !id.is_empty() && id.len() <= 20 && id.bytes().all(|b| b.is_ascii_digit());
    Some(match id.parse::<u64>() {
        Ok(id) if digits && id > 0 => Ok(id),
        _ => Err(bad()),
    })
}

fn conn_json(c: &ConnInfo, thread: usize) -> Value {
    json!({
        "id": c.id,
        "remote": c.remote.map(|a| a.to_string()),
        "transport": c.transport.as_str(),
        "io_thread": thread,
        "filters": c.filters,
        "policy": c.policy.as_str(),
        "queue_depth": c.queue_depth,
        "queued_bytes": c.queued_bytes,
        "send_buffer": c.send_buffer,
        "delivered": c.delivered,
        "dropped": c.dropped,
        "last_message_age_ms": c.last_message_age.map(|d| d.as_micros() as f64 / 1e3),
        "state": c.state.as_str(),
    })
}

/// The answer to `ask`, from the reports in hand; `partial` when a thread did not report
/// in time (its connections are missing or older).
pub fn answer(
    ask: Ask,
    reports: &[Arc<Report>],
    partial: bool,
    log: &EventLog<Published>,
) -> Response {
    match ask {
        Ask::List { limit, state } => list(reports, partial, limit, state),
        Ask::Recent { id } => recent(reports, partial, id, log),
    }
}

fn list(
    reports: &[Arc<Report>],
    partial: bool,
    limit: usize,
    state: Option<ConnState>,
) -> Response {
    let mut all: Vec<(&ConnInfo, usize)> = reports
        .iter()
        .flat_map(|r| r.conns.iter().map(move |c| (c, r.thread)))
        .filter(|(c, _)| state.is_none_or(|s| c.state == s))
        .collect();
    all.sort_unstable_by_key(|(c, _)| c.id);
    let total = all.len();
    let shown: Vec<Value> = all
        .iter()
        .take(limit)
        .map(|(c, t)| conn_json(c, *t))
        .collect();
    Response::json(
        200,
        &json!({
            "connections": shown,
            "total": total,
            "http_connections": reports.iter().map(|r| r.http_connections).sum::<usize>(),
            "partial": partial,
        }),
    )
}

fn recent(reports: &[Arc<Report>], partial: bool, id: u64, log: &EventLog<Published>) -> Response {
    let found = reports
        .iter()
        .find_map(|r| r.conns.iter().find(|c| c.id == id).map(|c| (c, r.thread)));
    let Some((conn, thread)) = found else {
        let why = if partial {
            " (not every I/O thread answered in time; try again)"
        } else {
            " (it may have closed)"
        };
        return Response::error(
            404,
            &format!("no open connection with id {id}{why}; GET /connections lists them"),
        );
    };
    let mut events = Vec::with_capacity(conn.recent.len());
    let mut not_retained = Vec::new();
    for &event_id in &conn.recent {
        match log.read(event_id, |ev| event_json(&ev.encoded())) {
            Read::Ready(v) => events.push(v),
            _ => not_retained.push(event_id),
        }
    }
    Response::json(
        200,
        &json!({
            "connection": conn_json(conn, thread),
            "events": events,
            "not_retained": not_retained,
            "partial": partial,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_queries() {
        assert_eq!(
            parse_list(""),
            Ok(Ask::List {
                limit: DEFAULT_LIMIT,
                state: None
            })
        );
        assert_eq!(
            parse_list("state=backpressure&limit=3"),
            Ok(Ask::List {
                limit: 3,
                state: Some(ConnState::Backpressure)
            })
        );
        for bad in [
            "limit=0",
            "limit=100001",
            "state=slow",
            "state=%zz",
            "state=",
            "status=backpressure",
            "state=ok&state=closing",
            "limit=1&limit=2",
        ] {
            assert!(parse_list(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn recent_paths() {
        assert_eq!(parse_recent_path("/connections"), None);
        assert_eq!(parse_recent_path("/connectionsx/1/recent"), None);
        assert_eq!(parse_recent_path("/connections/42/recent"), Some(Ok(42)));
        for bad in [
            "/connections/",
            "/connections/42",
            "/connections/42/",
            "/connections/42/recent/",
            "/connections/0/recent",
            "/connections/+1/recent",
            "/connections/-1/recent",
            "/connections/99999999999999999999999/recent",
            "/connections/x/recent",
            "/connections//recent",
        ] {
            assert!(
                matches!(parse_recent_path(bad), Some(Err(_))),
                "{bad}: {:?}",
                parse_recent_path(bad)
            );
        }
    }
}
