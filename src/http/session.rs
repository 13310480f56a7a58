//! The HTTP phase of a connection: read request heads and bodies, answer them (keep-alive
//! and pipelining allowed), until the connection closes or upgrades to WebSocket.
//!
//! No socket and no clock: the I/O layer passes bytes and `now`; answers go into the
//! connection's [`Outbox`].

use std::time::Instant;

use super::connections::Ask;
use super::request::{parse_head, Limits, Request};
use super::response::Response;
use super::routes::{route, Routed};
use crate::engine::Engine;
use crate::outbox::Outbox;
use crate::ws::handshake::{switching_protocols, Subscription, Upgrade};

/// What the I/O layer must do after feeding the session.
#[derive(Debug)]
pub enum HttpStep {
    /// Keep reading.
    Continue,
    /// Flush what is queued, then close.
    Close,
    /// The 101 answer is queued: switch to WebSocket; `leftover` are bytes the client sent
    /// after the request (its first frames).
    Upgrade {
        /// The accepted upgrade.
        upgrade: Upgrade,
        /// Input after the request head.
        leftover: Vec<u8>,
    },
    /// The `GET /sse/events` response head is queued: the connection is now an event
    /// stream for this subscription.
    Sse(Subscription),
    /// The request needs every I/O thread's census report: gather them and call
    /// [`HttpSession::answer`]. Until then later requests wait, unparsed.
    Ask(Ask),
}

/// One connection's HTTP state.
#[derive(Debug)]
pub struct HttpSession {
    inbuf: Vec<u8>,
    /// A head whose body has not fully arrived (boxed: it is rare, and this session is
    /// part of every connection's slab entry until the upgrade).
    pending: Option<Box<Request>>,
    /// When the current request must be complete.
    deadline: Instant,
    /// A request waits for its answer ([`HttpStep::Ask`]).
    waiting: Option<ReplyTo>,
}

/// What an answer needs to know about the request it answers (kept while a request
/// waits for its answer).
#[derive(Clone, Copy, Debug)]
struct ReplyTo {
    /// Keep the connection open after it.
    keep_alive: bool,
    /// It was a `HEAD`: send the answer without its body.
    head: bool,
}

impl ReplyTo {
    fn of(req: &Request) -> Self {
        Self {
            keep_alive: req.keep_alive,
            head: req.method == "HEAD",
        }
    }
}

impl HttpSession {
    /// A new connection, which must send a request within the handshake timeout.
    pub fn new(now: Instant, engine: &Engine) -> Self {
        Self {
            inbuf: Vec::new(),
            pending: None,
            deadline: now + engine.config.handshake_timeout,
            waiting: None,
        }
    }

    /// Feeds bytes read from the socket.
    pub fn on_input(
        &mut self,
        data: &[u8],
        now: Instant,
        engine: &Engine,
        out: &mut Outbox,
    ) -> HttpStep {
        self.inbuf.extend_from_slice(data);
        let limits = Limits {
            max_header_bytes: engine.config.max_header_bytes,
            max_body_bytes: engine.config.max_body_bytes,
        };
        if self.waiting.is_some() {
            // Pipelined behind a pending answer: keep, within one request's bounds.
            if self.inbuf.len() > limits.max_header_bytes + limits.max_body_bytes {
                return self.overloaded(engine, out);
            }
            return HttpStep::Continue;
        }
        loop {
            let mut req = match self.pending.take() {
                Some(req) => *req,
                None => match parse_head(&self.inbuf, &limits) {
                    Ok(None) => break,
                    Ok(Some((req, used))) => {
                        self.inbuf.drain(..used);
                        req
                    }
                    Err(e) => {
                        engine.http.count(e.status());
                        out.push_final([Response::error(e.status(), &e.to_string()).encode(false)]);
                        return HttpStep::Close;
                    }
                },
            };
            let body_len = req.body_len();
            if self.inbuf.len() < body_len {
                // The client waits for this before sending the body (RFC 9110, 10.1.1);
                // not needed once some of it came anyway. Sent once: the flag is cleared.
                if std::mem::take(&mut req.expect_continue)
                    && self.inbuf.is_empty()
                    && out.push_control(Response::CONTINUE).is_err()
                {
                    return self.overloaded(engine, out);
                }
                self.pending = Some(Box::new(req));
                break;
            }
            let routed = route(&req, &self.inbuf[..body_len], engine);
            self.inbuf.drain(..body_len);
            self.deadline = now + engine.config.handshake_timeout;
            match routed {
                Routed::Upgrade(upgrade) => {
                    let accepted = out
                        .push_control(switching_protocols(&upgrade.accept))
                        .is_ok();
                    if !accepted {
                        return self.overloaded(engine, out);
                    }
                    engine.http.count(101);
                    return HttpStep::Upgrade {
                        upgrade,
                        leftover: std::mem::take(&mut self.inbuf),
                    };
                }
                Routed::Respond(resp) => {
                    if let Some(step) = self.respond(&resp, ReplyTo::of(&req), engine, out) {
                        return step;
                    }
                }
                Routed::Sse(sub) => {
                    if out.push_control(super::sse::response_head()).is_err() {
                        return self.overloaded(engine, out);
                    }
                    engine.http.count(200);
                    return HttpStep::Sse(sub);
                }
                Routed::Ask(ask) => {
                    self.waiting = Some(ReplyTo::of(&req));
                    return HttpStep::Ask(ask);
                }
            }
        }
        if self.inbuf.is_empty() && self.inbuf.capacity() > 4096 {
            self.inbuf = Vec::new();
        }
        HttpStep::Continue
    }

    /// Queues `resp`; `Some` if the connection must close after it.
    fn respond(
        &mut self,
        resp: &Response,
        req: ReplyTo,
        engine: &Engine,
        out: &mut Outbox,
    ) -> Option<HttpStep> {
        let encode = |keep_alive| {
            if req.head {
                resp.encode_head(keep_alive)
            } else {
                resp.encode(keep_alive)
            }
        };
        if !req.keep_alive {
            engine.http.count(resp.status);
            out.push_final([encode(false)]);
            return Some(HttpStep::Close);
        }
        if out.push_control(encode(true)).is_err() {
            return Some(self.overloaded(engine, out));
        }
        engine.http.count(resp.status);
        None
    }

    /// Whether a request waits for the answer [`HttpStep::Ask`] asked for.
    pub fn is_waiting(&self) -> bool {
        self.waiting.is_some()
    }

    /// Sends the answer to the request that returned [`HttpStep::Ask`], then goes on with
    /// the requests pipelined behind it.
    pub fn answer(
        &mut self,
        resp: &Response,
        now: Instant,
        engine: &Engine,
        out: &mut Outbox,
    ) -> HttpStep {
        let Some(req) = self.waiting.take() else {
            return HttpStep::Continue;
        };
        self.deadline = now + engine.config.handshake_timeout;
        match self.respond(resp, req, engine, out) {
            Some(step) => step,
            None => self.on_input(&[], now, engine, out),
        }
    }

    /// A client pipelining requests without reading the answers.
    fn overloaded(&mut self, engine: &Engine, out: &mut Outbox) -> HttpStep {
        engine.http.count(503);
        let msg = "too many pipelined requests without reading the responses";
        out.push_final([Response::error(503, msg).encode(false)]);
        HttpStep::Close
    }

    /// Checks the request deadline.
    pub fn on_tick(&mut self, now: Instant, engine: &Engine, out: &mut Outbox) -> HttpStep {
        if now < self.deadline || self.waiting.is_some() {
            return HttpStep::Continue;
        }
        if !self.inbuf.is_empty() || self.pending.is_some() {
            engine.http.count(408);
            out.push_final([Response::error(
                408,
                "request not completed within the handshake timeout",
            )
            .encode(false)]);
        }
        HttpStep::Close
    }
}
