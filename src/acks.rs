//! Acknowledged delivery: one WebSocket subscription's events that await an `ack`.
//!
//! A subscription opened with `ack=critical` (events of priority `critical` or `control`)
//! or `ack=all` must answer `{"op":"ack","id":N}`, cumulatively: every tracked event up to
//! N is done. An event not acknowledged within `--ack-timeout` is sent again, marked
//! `"redelivered":true`, after 1, 2 and 4 timeouts more (exponential backoff); after
//! [`MAX_REDELIVERIES`] it goes to the dead-letter queue with the reason and the connection
//! id. So does every event still unacknowledged when the connection closes (a client that
//! reconnects with `last_event_id` is sent them again by the replay).
//!
//! `--max-unacked` bounds the events outstanding (queued or written, not yet acknowledged)
//! per connection: that is flow control, not loss. A subscription at the bound takes no
//! more events live; it catches up from the log once acks make room, as a `catch-up`
//! subscriber does.
//!
//! Pure state: the I/O thread tells it what was sent and when, and acts on what it returns.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};

use crate::event::{Encoded, Priority};
use crate::ws::frame::{self, OpCode};

/// Redeliveries before an unacknowledged event goes to the dead-letter queue.
pub const MAX_REDELIVERIES: u32 = 3;

/// Which events a subscription must acknowledge (`ack=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckClass {
    /// `critical` and `control` events.
    Critical,
    /// Every event.
    All,
}

/// An `ack=` value that is not `critical`, `all` or `none`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("ack={0:?}: use critical (acknowledge critical and control events), all, or none")]
pub struct AckClassError(pub String);

impl AckClass {
    /// Parses `ack=`: `None` for `none`.
    pub fn parse(s: &str) -> Result<Option<Self>, AckClassError> {
        match s {
            "critical" => Ok(Some(AckClass::Critical)),
            "all" => Ok(Some(AckClass::All)),
            "none" => Ok(None),
            other => Err(AckClassError(other.chars().take(32).collect())),
        }
    }

    /// Whether an event of priority `p` must be acknowledged.
    pub fn wants(self, p: Priority) -> bool {
        match self {
            AckClass::All => true,
            AckClass::Critical => matches!(p, Priority::Control | Priority::Critical),
        }
    }
}

/// What to do with an event whose acknowledgement is overdue.
#[derive(Debug)]
pub enum Overdue {
    /// Send it again (the `redelivered` frame); this is redelivery number `attempt`.
    Redeliver(Bytes, u32),
    /// Give up: dead-letter it, with how often it was redelivered.
    DeadLetter(Encoded, u32),
}

#[derive(Debug)]
struct Pending {
    event: Encoded,
    redeliveries: u32,
    due: Instant,
}

/// One subscription's unacknowledged events, in id order.
#[derive(Debug)]
pub struct Unacked {
    class: AckClass,
    timeout: Duration,
    max: usize,
    pending: VecDeque<Pending>,
    /// The highest id acknowledged.
    acked: u64,
    /// Redeliveries and events dead-lettered since [`take_counts`](Self::take_counts)
    /// (here rather than in the session, which every subscriber has).
    redelivered: u64,
    dead_lettered: u64,
}

impl Unacked {
    /// Tracking for `class`, with the ack timeout and the bound on outstanding events.
    pub fn new(class: AckClass, timeout: Duration, max: usize) -> Self {
        Self {
            class,
            timeout,
            max: max.max(1),
            pending: VecDeque::new(),
            acked: 0,
            redelivered: 0,
            dead_lettered: 0,
        }
    }

    /// Adds to the redelivery and dead-letter counts.
    pub fn count(&mut self, redelivered: u64, dead_lettered: u64) {
        self.redelivered += redelivered;
        self.dead_lettered += dead_lettered;
    }

    /// Redeliveries and events dead-lettered since the last call; the counts are reset.
    pub fn take_counts(&mut self) -> (u64, u64) {
        (
            std::mem::take(&mut self.redelivered),
            std::mem::take(&mut self.dead_lettered),
        )
    }

    /// Whether an event of priority `p` is tracked.
    pub fn wants(&self, p: Priority) -> bool {
        self.class.wants(p)
    }

    /// Whether `--max-unacked` events are outstanding: take no more until acks come.
    pub fn is_full(&self) -> bool {
        self.pending.len() >= self.max
    }

    /// Events outstanding.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether none is outstanding.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// The highest id acknowledged so far.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// Starts tracking `event`, queued for the client at `now`. Events come in id order.
    pub fn track(&mut self, event: Encoded, now: Instant) {
        self.pending.push_back(Pending {
            event,
            redeliveries: 0,
            due: now + self.timeout,
        });
    }

    /// A cumulative acknowledgement: everything up to `id` is done. Returns how many
    /// outstanding events it settled.
    pub fn ack(&mut self, id: u64) -> usize {
        self.acked = self.acked.max(id);
        let before = self.pending.len();
        while self.pending.front().is_some_and(|p| p.event.id() <= id) {
            self.pending.pop_front();
        }
        before - self.pending.len()
    }

    /// The events whose acknowledgement is overdue at `now`, and what to do with each:
    /// redeliver (backing off: the next deadline is twice as far) or, after
    /// [`MAX_REDELIVERIES`], give up (it stops being tracked).
    pub fn overdue(&mut self, now: Instant) -> Vec<Overdue> {
        let mut out = Vec::new();
        let timeout = self.timeout;
        self.pending.retain_mut(|p| {
            if now < p.due {
                return true;
            }
            if p.redeliveries >= MAX_REDELIVERIES {
                out.push(Overdue::DeadLetter(p.event.clone(), p.redeliveries));
                return false;
            }
            p.redeliveries += 1;
            p.due = now + timeout * (1 << p.redeliveries);
            out.push(Overdue::Redeliver(
                redelivered_frame(&p.event),
                p.redeliveries,
            ));
            true
        });
        out
    }

    /// Everything still outstanding (at close, or when the client starts over), with how
    /// often each was redelivered.
    pub fn take_all(&mut self) -> Vec<(Encoded, u32)> {
        self.pending
            .drain(..)
            .map(|p| (p.event, p.redeliveries))
            .collect()
    }
}

/// The event's WebSocket frame with `"redelivered":true` after its id.
pub fn redelivered_frame(event: &Encoded) -> Bytes {
    let json = event.json();
    // The encoding always starts `{"id":N,`: insert after the first comma.
    let at = json.iter().position(|&b| b == b',').map_or(1, |i| i + 1);
    let mut b = BytesMut::with_capacity(json.len() + 20);
    b.put_slice(&json[..at]);
    b.put_slice(b"\"redelivered\":true,");
    b.put_slice(&json[at..]);
    frame::encode(OpCode::Text, &b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, Staged};

    fn event(id: u64, p: Priority) -> Encoded {
        Staged::new(Event::new("a.b", "t").with_priority(p), 1024)
            .unwrap()
            .seal(id)
            .encoded()
            .clone()
    }

    #[test]
    fn classes_choose_what_is_tracked() {
        assert_eq!(AckClass::parse("none"), Ok(None));
        assert!(AckClass::parse("some").is_err());
        let c = AckClass::parse("critical").unwrap().unwrap();
        assert!(c.wants(Priority::Critical) && c.wants(Priority::Control));
        assert!(!c.wants(Priority::Bulk) && !c.wants(Priority::Important));
        assert!(AckClass::All.wants(Priority::Bulk));
    }

    #[test]
    fn acks_are_cumulative() {
        let t0 = Instant::now();
        let mut u = Unacked::new(AckClass::All, Duration::from_secs(5), 3);
        for id in [2, 4, 7] {
            u.track(event(id, Priority::Bulk), t0);
        }
        assert!(u.is_full());
        assert_eq!(u.ack(4), 2);
        assert_eq!((u.len(), u.acked()), (1, 4));
        assert_eq!(u.ack(3), 0, "an older ack changes nothing");
        assert_eq!(u.acked(), 4);
        assert_eq!(u.ack(100), 1);
        assert!(u.is_empty());
    }

    #[test]
    fn overdue_events_are_redelivered_with_backoff_then_dead_lettered() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut u = Unacked::new(AckClass::All, s, 10);
        u.track(event(9, Priority::Critical), t0);
        assert!(u.overdue(t0 + s / 2).is_empty());
        // Redeliveries at 1, then 1 + 2, then 3 + 4 seconds; dead-lettered at 7 + 8.
        let mut at = t0;
        for (n, wait) in [(1, 1), (2, 2), (3, 4)] {
            assert!(
                u.overdue(at + s * wait - s / 10).is_empty(),
                "not before the backoff"
            );
            at += s * wait;
            match &u.overdue(at)[..] {
                [Overdue::Redeliver(frame, k)] => {
                    assert_eq!(*k, n);
                    let body = if frame[1] & 0x7f == 126 { 4 } else { 2 };
                    let v: serde_json::Value = serde_json::from_slice(&frame[body..]).unwrap();
                    assert_eq!(
                        (v["id"].as_u64(), v["redelivered"].as_bool()),
                        (Some(9), Some(true))
                    );
                    assert_eq!(v["priority"], "critical");
                }
                other => panic!("{other:?}"),
            }
        }
        at += s * 8;
        match &u.overdue(at)[..] {
            [Overdue::DeadLetter(ev, 3)] => assert_eq!(ev.id(), 9),
            other => panic!("{other:?}"),
        }
        assert!(u.is_empty());
    }
}
