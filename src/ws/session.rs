//! The WebSocket phase of a connection: decode client frames, act on control messages,
//! keep the connection alive, and close it properly.
//!
//! No socket and no clock: the I/O layer passes bytes and `now`; frames to send go into the
//! connection's [`Outbox`] (events are pushed there by routing, not by the session).
//!
//! States: `Open` → (either side closes) → `Closing` → `Done`. While closing, no event is
//! queued and only the peer's close frame is awaited, for at most the close timeout.

use std::time::Instant;

use bytes::Bytes;

use super::frame::{self, CloseCode, CloseRequest, Frame, OpCode};
use super::message::{self, ClientOp};
use crate::acks::{Overdue, Unacked};
use crate::clock::Moment;
use crate::engine::Engine;
use crate::event::{Filter, Pattern};
use crate::outbox::Outbox;
use crate::policy::Policy;
use crate::resume::{Position, Start};

/// What the I/O layer must do after feeding the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsStep {
    /// Keep going.
    Continue,
    /// Flush what is queued, then close the socket.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    /// Our close frame is queued (or sent); waiting for the peer's.
    Closing {
        since: Moment,
    },
    /// Both close frames exchanged (or the peer's answered): flush and drop.
    Done,
}

/// What a WebSocket session needs only now and then, boxed together and dropped once it is
/// all empty: most subscribers never send a byte after the handshake, and every
/// connection would otherwise carry these fields (`tests/idle_memory.rs`).
#[derive(Debug, Default)]
struct Rare {
    /// The start of a frame that has not fully arrived.
    inbuf: Vec<u8>,
    /// A fragmented text message being reassembled.
    message: Option<Vec<u8>>,
    /// Set when a subscribe/unsubscribe changed the filter: the old one, for the router.
    replaced_filter: Option<Filter>,
    /// A `resume` message asked to start over from here (for the I/O layer, which owns the
    /// log cursor).
    resume: Option<Position>,
}

impl Rare {
    fn is_empty(&self) -> bool {
        self.inbuf.is_empty()
            && self.message.is_none()
            && self.replaced_filter.is_none()
            && self.resume.is_none()
    }
}

/// One WebSocket connection's protocol state.
#[derive(Debug)]
pub struct WsSession {
    id: u64,
    filter: Filter,
    /// What a subscription needs only now and then (see [`Rare`]).
    rare: Option<Box<Rare>>,
    last_input: Moment,
    ping_outstanding: bool,
    state: State,
    /// Events discarded because the connection closed with them still queued.
    discarded: u64,
    /// A frame could not be decoded: the input stream is unusable from here on.
    input_broken: bool,
    /// Events awaiting the client's `ack` (`ack=` subscriptions only; boxed, as most
    /// subscriptions have none).
    acks: Option<Box<Unacked>>,
}

impl WsSession {
    /// A freshly upgraded connection with `filter`, tracking acknowledgements if `acks`.
    pub fn new(id: u64, filter: Filter, now: Instant, acks: Option<Unacked>) -> Self {
        Self {
            id,
            filter,
            rare: None,
            last_input: Moment::at(now),
            ping_outstanding: false,
            state: State::Open,
            discarded: 0,
            input_broken: false,
            acks: acks.map(Box::new),
        }
    }

    /// Whether it is an `ack=` subscription.
    pub fn tracks_acks(&self) -> bool {
        self.acks.is_some()
    }

    /// The acknowledgement tracking, for `ack=` subscriptions.
    pub fn acks_mut(&mut self) -> Option<&mut Unacked> {
        self.acks.as_deref_mut()
    }

    /// The filter and the acknowledgement tracking together (replay reads one while it
    /// updates the other).
    pub fn filter_and_acks(&mut self) -> (&Filter, Option<&mut Unacked>) {
        (&self.filter, self.acks.as_deref_mut())
    }

    /// Whether an `ack=` subscription is at `--max-unacked`: it must take no more now.
    pub fn acks_full(&self) -> bool {
        self.acks.as_deref().is_some_and(Unacked::is_full)
    }

    /// Redeliveries and events dead-lettered since the last call (for the counters).
    pub fn take_ack_counts(&mut self) -> (u64, u64) {
        self.acks
            .as_deref_mut()
            .map_or((0, 0), Unacked::take_counts)
    }

    /// The dead-letter queue's name for this connection.
    fn dlq_name(&self) -> String {
        format!("ws/connection/{}", self.id)
    }

    /// Dead-letters every event still unacknowledged (the connection is closing), saying
    /// `why`. A client that resumes with `last_event_id` gets them again from the log.
    pub fn dead_letter_unacked(&mut self, engine: &Engine, why: &str) {
        let name: std::sync::Arc<str> = self.dlq_name().into();
        let Some(acks) = &mut self.acks else {
            return;
        };
        let outstanding = acks.take_all();
        acks.count(0, outstanding.len() as u64);
        for (event, redeliveries) in outstanding {
            engine.bus.dlq().enqueue_retried(
                event,
                std::sync::Arc::clone(&name),
                why.to_owned(),
                redeliveries,
            );
        }
    }

    /// Redelivers or dead-letters the events whose acknowledgement is overdue.
    fn check_acks(&mut self, now: Instant, engine: &Engine, out: &mut Outbox) {
        let Some(acks) = &mut self.acks else {
            return;
        };
        let overdue = acks.overdue(now);
        if overdue.is_empty() {
            return;
        }
        let name: std::sync::Arc<str> = self.dlq_name().into();
        let (mut redelivered, mut dead_lettered) = (0, 0);
        for o in overdue {
            match o {
                // In order with the events, not counted as one (it was counted once).
                Overdue::Redeliver(frame, _) => {
                    out.push_notice(frame);
                    redelivered += 1;
                }
                Overdue::DeadLetter(event, n) => {
                    let why = format!(
                        "not acknowledged after {n} redeliveries (--ack-timeout {} s)",
                        engine.config.ack_timeout.as_secs_f64()
                    );
                    engine
                        .bus
                        .dlq()
                        .enqueue_retried(event, std::sync::Arc::clone(&name), why, n);
                    dead_lettered += 1;
                }
            }
        }
        if let Some(acks) = self.acks.as_deref_mut() {
            acks.count(redelivered, dead_lettered);
        }
    }

    fn rare(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(Box::default)
    }

    /// Drops the [`Rare`] box once nothing in it is in use.
    fn tidy(&mut self) {
        if self.rare.as_ref().is_some_and(|r| r.is_empty()) {
            self.rare = None;
        }
    }

    /// The connection id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The current filter.
    pub fn filter(&self) -> &Filter {
        &self.filter
    }

    /// The filter a subscribe/unsubscribe replaced since the last call, if any.
    pub fn take_replaced_filter(&mut self) -> Option<Filter> {
        let replaced = self.rare.as_mut().and_then(|r| r.replaced_filter.take());
        self.tidy();
        replaced
    }

    /// The position a `resume` message asked for since the last call, if any.
    pub fn take_resume(&mut self) -> Option<Position> {
        let resume = self.rare.as_mut().and_then(|r| r.resume.take());
        self.tidy();
        resume
    }

    /// Events discarded by closing since the last call (for `events.dropped`).
    pub fn take_discarded(&mut self) -> u64 {
        std::mem::take(&mut self.discarded)
    }

    /// Whether events may still be queued.
    pub fn is_open(&self) -> bool {
        self.state == State::Open
    }

    /// The welcome notice: where delivery starts in `epoch`, and whether a resume
    /// recovered everything.
    pub fn welcome(&self, epoch: u64, start: &Start, overflow: Policy) -> Bytes {
        message::welcome(
            message::Framing::WebSocket,
            self.id,
            epoch,
            start,
            &self.types(),
            overflow,
        )
    }

    fn types(&self) -> Vec<String> {
        self.filter
            .patterns()
            .iter()
            .map(Pattern::to_string)
            .collect()
    }

    /// Feeds bytes read from the socket.
    pub fn on_input(
        &mut self,
        data: &[u8],
        now: Instant,
        engine: &Engine,
        out: &mut Outbox,
    ) -> WsStep {
        self.last_input = Moment::at(now);
        self.ping_outstanding = false;
        let waiting = self.rare.as_mut().map(|r| std::mem::take(&mut r.inbuf));
        match waiting.filter(|b| !b.is_empty()) {
            // Nothing waiting: decode straight from `data`, keep only an unfinished frame.
            None => {
                let used = self.consume(data, now, engine, out);
                if used < data.len() {
                    self.rare().inbuf.extend_from_slice(&data[used..]);
                }
            }
            Some(mut buf) => {
                buf.extend_from_slice(data);
                let used = self.consume(&buf, now, engine, out);
                buf.drain(..used);
                if !buf.is_empty() {
                    self.rare().inbuf = buf;
                }
            }
        }
        self.tidy();
        self.step()
    }

    /// Decodes and handles whole frames from `input`; returns the bytes used.
    fn consume(&mut self, input: &[u8], now: Instant, engine: &Engine, out: &mut Outbox) -> usize {
        if self.input_broken {
            return input.len();
        }
        let max = engine.config.max_message_bytes;
        let mut used = 0;
        while self.state != State::Done {
            match frame::parse(&input[used..], max) {
                Ok(None) => break,
                Ok(Some((f, n))) => {
                    used += n;
                    self.on_frame(f, now, engine, out);
                }
                Err(e) => {
                    self.close(e.close_code(), &e.to_string(), now, out);
                    self.input_broken = true;
                    return input.len();
                }
            }
        }
        if self.state == State::Done {
            return input.len();
        }
        used
    }

    fn step(&self) -> WsStep {
        if self.state == State::Done {
            WsStep::Done
        } else {
            WsStep::Continue
        }
    }

    fn on_frame(&mut self, f: Frame, now: Instant, engine: &Engine, out: &mut Outbox) {
        if let State::Closing { .. } = self.state {
            // After our close, only the peer's close matters (RFC 6455 §5.5.1).
            if f.opcode == OpCode::Close {
                self.state = State::Done;
            }
            return;
        }
        match f.opcode {
            OpCode::Text if self.rare.as_ref().is_some_and(|r| r.message.is_some()) => self.close(
                CloseCode::Protocol,
                "new message before the fragmented one ended",
                now,
                out,
            ),
            OpCode::Text if f.fin => self.on_text(&f.payload, engine, now, out),
            OpCode::Text => self.rare().message = Some(f.payload),
            OpCode::Continuation => {
                let Some(mut msg) = self.rare.as_mut().and_then(|r| r.message.take()) else {
                    return self.close(
                        CloseCode::Protocol,
                        "continuation frame without a message",
                        now,
                        out,
                    );
                };
                if msg.len() + f.payload.len() > engine.config.max_message_bytes {
                    let reason = format!(
                        "message over the {}-byte limit",
                        engine.config.max_message_bytes
                    );
                    return self.close(CloseCode::TooBig, &reason, now, out);
                }
                msg.extend_from_slice(&f.payload);
                if f.fin {
                    self.on_text(&msg, engine, now, out);
                } else {
                    self.rare().message = Some(msg);
                }
            }
            OpCode::Binary => self.close(
                CloseCode::Unsupported,
                "binary messages are not accepted: send JSON text",
                now,
                out,
            ),
            OpCode::Ping => self.reply(frame::encode(OpCode::Pong, &f.payload), now, out),
            OpCode::Pong => {}
            OpCode::Close => {
                let answer = match frame::parse_close(&f.payload) {
                    CloseRequest::Empty => frame::encode(OpCode::Close, &[]),
                    CloseRequest::Code(code) => frame::encode(OpCode::Close, &code.to_be_bytes()),
                    CloseRequest::Invalid(code) => frame::close(code, "invalid close frame"),
                };
                self.discarded += out.push_final([answer]);
                self.state = State::Done;
            }
        }
    }

    fn on_text(&mut self, text: &[u8], engine: &Engine, now: Instant, out: &mut Outbox) {
        let Ok(text) = std::str::from_utf8(text) else {
            return self.close(
                CloseCode::InvalidData,
                "text message is not valid UTF-8",
                now,
                out,
            );
        };
        let answer = match message::parse_op(text) {
            Err(e) => Some(message::error(e.reference.as_deref(), &e.message)),
            // Without `ack=` there is nothing to settle: accepted and ignored.
            Ok(ClientOp::Ack { id }) => {
                if let Some(acks) = &mut self.acks {
                    acks.ack(id);
                }
                None
            }
            Ok(ClientOp::Resume(position)) => {
                self.rare().resume = Some(position);
                None
            }
            Ok(ClientOp::Subscribe { types, reference }) => {
                Some(self.change_filter(&types, true, reference.as_deref()))
            }
            Ok(ClientOp::Unsubscribe { types, reference }) => {
                Some(self.change_filter(&types, false, reference.as_deref()))
            }
            Ok(ClientOp::Publish(mut wire)) => {
                let reference = wire.reference.take();
                match wire.into_event().and_then(|ev| engine.bus.publish(ev)) {
                    Ok(id) => reference.map(|r| message::published(&r, id)),
                    Err(e) => Some(message::error(reference.as_deref(), &e.to_string())),
                }
            }
        };
        if let Some(answer) = answer {
            self.reply(answer, now, out);
        }
    }

    fn change_filter(
        &mut self,
        types: &[String],
        add: bool,
        reference: Option<&serde_json::value::RawValue>,
    ) -> Bytes {
        let mut next = self.filter.clone();
        for t in types {
            let pattern = match Pattern::parse(t) {
                Ok(p) => p,
                Err(e) => return message::error(reference, &format!("types: {e}")),
            };
            if add {
                if let Err(e) = next.add(pattern) {
                    return message::error(reference, &format!("types: {e}"));
                }
            } else {
                next.remove(&pattern);
            }
        }
        if next != self.filter {
            let old = std::mem::replace(&mut self.filter, next);
            self.rare().replaced_filter.get_or_insert(old);
        }
        message::subscribed(reference, &self.types())
    }

    fn reply(&mut self, frame: Bytes, now: Instant, out: &mut Outbox) {
        if out.push_control(frame).is_err() {
            self.close(
                CloseCode::Policy,
                "too many unread replies: read from the socket",
                now,
                out,
            );
        }
    }
    /// Starts a server-side close with `code` and `reason`.
    pub fn close(&mut self, code: CloseCode, reason: &str, now: Instant, out: &mut Outbox) {
        self.close_with(None, code, reason, now, out);
    }

    /// The `disconnect` policy's end: a `closing` notice with the last id delivered (the
    /// frame being written, if any, is finished first), then close 1008 `slow consumer`.
    /// Returns whether this call closed the session (it may already be closing).
    pub fn disconnect_slow_consumer(&mut self, now: Instant, out: &mut Outbox) -> bool {
        if self.state != State::Open {
            return false;
        }
        let notice = message::closing(
            message::Framing::WebSocket,
            "slow consumer",
            out.last_delivered(),
        );
        self.close_with(Some(notice), CloseCode::Policy, "slow consumer", now, out);
        true
    }

    /// Graceful shutdown: a `closing` notice with the last id delivered, then close 1001
    /// with that id in the reason too, so the client can resume on another server.
    pub fn shut_down(&mut self, now: Instant, out: &mut Outbox) {
        let last_id = out.last_delivered();
        let notice = message::closing(message::Framing::WebSocket, "server shutting down", last_id);
        let reason = format!("server shutting down; last_id={last_id}");
        self.close_with(Some(notice), CloseCode::GoingAway, &reason, now, out);
    }

    fn close_with(
        &mut self,
        notice: Option<Bytes>,
        code: CloseCode,
        reason: &str,
        now: Instant,
        out: &mut Outbox,
    ) {
        if self.state != State::Open {
            return;
        }
        self.discarded += out.push_final(notice.into_iter().chain([frame::close(code, reason)]));
        if let Some(rare) = self.rare.as_mut() {
            rare.message = None;
        }
        self.state = State::Closing {
            since: Moment::at(now),
        };
    }

    /// Keep-alive and timeouts.
    pub fn on_tick(&mut self, now: Instant, engine: &Engine, out: &mut Outbox) -> WsStep {
        let cfg = &engine.config;
        match self.state {
            State::Open => {
                self.check_acks(now, engine, out);
                let silent = now.saturating_duration_since(self.last_input.instant());
                if silent >= cfg.idle_timeout {
                    self.close(CloseCode::GoingAway, "idle timeout", now, out);
                } else if silent >= cfg.ping_interval
                    && !self.ping_outstanding
                    && out.push_control(frame::encode(OpCode::Ping, b"")).is_ok()
                {
                    self.ping_outstanding = true;
                }
            }
            State::Closing { since }
                if now.saturating_duration_since(since.instant()) >= cfg.close_timeout =>
            {
                self.state = State::Done
            }
            _ => {}
        }
        self.step()
    }
}
