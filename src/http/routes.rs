//! Which request gets which answer. Pure: a parsed request and its body in, a response (or
//! an accepted WebSocket upgrade) out.

use serde_json::json;

use super::connections::{self, Ask};
use super::request::Request;
use super::response::Response;
use super::{dlq, spans};
use crate::engine::Engine;
use crate::event::parse_publish_body;
use crate::metrics::prometheus;
use crate::ws::handshake::{self, Subscription, Upgrade};

/// The outcome of routing one request.
#[derive(Debug)]
pub enum Routed {
    /// Send this response.
    Respond(Response),
    /// Switch the connection to WebSocket.
    Upgrade(Upgrade),
    /// Stream Server-Sent Events for this subscription.
    Sse(Subscription),
    /// The answer needs every I/O thread's census report: the I/O layer gathers them and
    /// answers with [`connections::answer`].
    Ask(Ask),
}

/// What a `GET` resource allows.
const GET: &str = "GET, HEAD";

const ROUTES: &str = "GET /health, GET /metrics, GET /stats, POST /publish, GET /ws/events (WebSocket), GET /sse/events (Server-Sent Events), GET /dlq/summary, GET /dlq/entries?limit=N, POST /dlq/retry, GET /spans/recent?limit=N&trace_id=T, GET /connections?limit=N&state=S, GET /connections/{id}/recent";

/// Routes `req` with its complete `body`. A `HEAD` is routed as a `GET` (the caller
/// sends the answer without its body, [`Response::encode_head`]), except where a `GET`
/// would switch protocols or stream: those answer 405.
pub fn route(req: &Request, body: &[u8], engine: &Engine) -> Routed {
    let allow = |methods: &str| {
        Routed::Respond(
            Response::error(
                405,
                &format!(
                    "{} is not allowed on {}; use {methods}",
                    req.method, req.path
                ),
            )
            .with_header("Allow", methods),
        )
    };
    let method = match req.method.as_str() {
        "HEAD" => "GET",
        method => method,
    };
    match (req.path.as_str(), method) {
        ("/ws/events" | "/sse/events", _) if req.method == "HEAD" => allow("GET"),
        ("/health", "GET") => Routed::Respond(Response::json(200, &engine.health())),
        ("/health", _) => allow(GET),
        ("/metrics", "GET") => Routed::Respond(Response::text(
            200,
            prometheus::CONTENT_TYPE,
            engine.metrics_text(),
        )),
        ("/metrics", _) => allow(GET),
        ("/stats", "GET") => Routed::Respond(Response::json(200, &engine.stats_json())),
        ("/stats", _) => allow(GET),
        ("/publish", "POST") => Routed::Respond(publish(req, body, engine)),
        ("/publish", _) => allow("POST"),
        ("/ws/events", "GET") => {
            match handshake::accept(req, engine.config.overflow, &engine.config.allowed_overflow) {
                Ok(upgrade) => Routed::Upgrade(upgrade),
                Err(e) => {
                    let mut r = Response::error(e.status(), &e.to_string());
                    if e.status() == 426 {
                        r = r
                            .with_header("Sec-WebSocket-Version", "13")
                            .with_header("Upgrade", "websocket");
                    }
                    Routed::Respond(r)
                }
            }
        }
        ("/ws/events", _) => allow("GET"),
        ("/sse/events", "GET") => match handshake::subscription(
            &req.query,
            req.last_event_id.as_deref(),
            engine.config.overflow,
            &engine.config.allowed_overflow,
        ) {
            Ok(sub) if sub.ack.is_some() => Routed::Respond(Response::error(
                400,
                "ack= needs a connection that can send acks: use /ws/events",
            )),
            Ok(sub) => Routed::Sse(sub),
            Err(e) => Routed::Respond(Response::error(400, &e.to_string())),
        },
        ("/sse/events", _) => allow("GET"),
        ("/dlq/summary", "GET") => Routed::Respond(dlq::summary(engine.bus.dlq())),
        ("/dlq/summary", _) => allow(GET),
        ("/dlq/entries", "GET") => Routed::Respond(dlq::entries(engine.bus.dlq(), &req.query)),
        ("/dlq/entries", _) => allow(GET),
        ("/dlq/retry", "POST") => Routed::Respond(dlq::retry(engine.bus.dlq(), &req.query, body)),
        ("/dlq/retry", _) => allow("POST"),
        ("/spans/recent", "GET") => Routed::Respond(spans::recent(
            &engine.spans,
            engine.bus.tracer().dropped(),
            &req.query,
        )),
        ("/spans/recent", _) => allow(GET),
        ("/connections", "GET") => match connections::parse_list(&req.query) {
            Ok(ask) => Routed::Ask(ask),
            Err(e) => Routed::Respond(Response::error(400, &e)),
        },
        ("/connections", _) => allow(GET),
        (path, method) => match connections::parse_recent_path(path) {
            Some(_) if method != "GET" => allow(GET),
            Some(Ok(id)) => Routed::Ask(Ask::Recent { id }),
            Some(Err(e)) => Routed::Respond(Response::error(404, &e)),
            None => not_found(path),
        },
    }
}

fn not_found(path: &str) -> Routed {
    Routed::Respond(Response::error(
        404,
        &format!(
            "no route for {}; this server serves {ROUTES}",
            path.chars().take(128).collect::<String>()
        ),
    ))
}

fn publish(req: &Request, body: &[u8], engine: &Engine) -> Response {
    if req.content_length.is_none() {
        return Response::error(411, "POST /publish needs a Content-Length header");
    }
    if !req.query.is_empty() {
        // Ignored, a `?priority=critical` would publish what the caller did not mean.
        return Response::error(
            400,
            &format!(
                "POST /publish takes no query ({:?}): every field goes in the JSON body; nothing was published",
                req.query.chars().take(128).collect::<String>()
            ),
        );
    }
    let events = match parse_publish_body(body, engine.config.max_batch_events) {
        Ok(events) => events,
        Err(e) => return Response::error(400, &e.to_string()),
    };
    match engine.bus.publish_all(events) {
        Ok(ids) => Response::json(200, &json!({ "ids": ids })),
        Err(e) => Response::error(400, &e.to_string()),
    }
}
