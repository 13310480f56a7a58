//! `Outbox`: everything waiting to be written to one connection.
//!
//! Two lanes and a cursor:
//!
//! * **events**: a bounded ring of shared event frames (`Bytes` handles, never copies).
//!   When it is full, newer events are refused (`drop-newest`); the refusals of one overflow
//!   episode are summed, and when room returns a single `dropped` notice is queued *in the
//!   event lane*, exactly where the missing events would have been.
//! * **control**: pongs, replies, HTTP responses and the close frame. Small and bounded; it
//!   goes out ahead of queued events, but only at a frame boundary.
//! * **partial**: the frame a short write stopped inside, with the offset reached. It is
//!   always finished first, so frames never interleave.
//!
//! Routing (the producer) and the socket writer (the consumer) run on the same I/O thread,
//! so the outbox needs no atomics. Its memory is allocated on first use and given back when
//! the connection drains, so an idle connection costs almost nothing.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::Bytes;

/// Most control frames that may wait; a peer that keeps asking (pings, publishes with
/// `ref`) without reading the answers is closed rather than allowed to grow this.
pub const MAX_CONTROL_FRAMES: usize = 256;
/// Queues larger than this are shrunk back when they drain.
const SHRINK_ABOVE: usize = 64;

/// A queued frame in the event lane.
#[derive(Clone, Debug)]
struct Item {
    frame: Bytes,
    /// `false` for the `dropped` notices that share the lane.
    is_event: bool,
}

/// An overflow episode: events refused since the lane filled up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Episode {
    /// Events refused.
    pub count: u64,
    /// First refused id.
    pub first_id: u64,
    /// Last refused id.
    pub last_id: u64,
}

/// Why [`Outbox::push_event`] refused an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The event lane is full: the event is dropped for this connection (and counted).
    Full,
    /// The connection is closing: nothing more is queued.
    Closing,
}

/// What [`Outbox::advance`] completed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Event frames fully written (notices and control frames not counted).
    pub events: u64,
}

/// Pending output of one connection.
#[derive(Debug)]
pub struct Outbox {
    events: VecDeque<Item>,
    control: VecDeque<Bytes>,
    partial: Option<(Bytes, usize, bool)>,
    capacity: usize,
    overflow: Option<Episode>,
    closing: bool,
    make_notice: fn(&Episode) -> Bytes,
}

impl Outbox {
    /// An empty outbox whose event lane holds at most `capacity` events. `make_notice`
    /// encodes the `dropped` notice of an episode.
    pub fn new(capacity: usize, make_notice: fn(&Episode) -> Bytes) -> Self {
        Self {
            events: VecDeque::new(),
            control: VecDeque::new(),
            partial: None,
            capacity: capacity.max(1),
            overflow: None,
            closing: false,
            make_notice,
        }
    }

    /// Queues an event frame, or refuses it and records the drop in the current episode.
    pub fn push_event(&mut self, frame: Bytes, id: u64) -> Result<(), Refused> {
        if self.closing {
            return Err(Refused::Closing);
        }
        if self.events.len() >= self.capacity {
            let e = self.overflow.get_or_insert(Episode {
                count: 0,
                first_id: id,
                last_id: id,
            });
            e.count += 1;
            e.last_id = id;
            return Err(Refused::Full);
        }
        self.notice_if_room();
        self.events.push_back(Item {
            frame,
            is_event: true,
        });
        Ok(())
    }

    /// Records events this connection lost before reaching its queue (the I/O thread fell
    /// behind the log): they join the current overflow episode and its notice.
    pub fn record_lost(&mut self, first_id: u64, last_id: u64) {
        if self.closing || last_id < first_id {
            return;
        }
        let e = self.overflow.get_or_insert(Episode {
            count: 0,
            first_id,
            last_id,
        });
        e.count += last_id - first_id + 1;
        e.first_id = e.first_id.min(first_id);
        e.last_id = e.last_id.max(last_id);
        self.notice_if_room();
    }

    /// Queues the notice of a finished overflow episode once the lane has room.
    fn notice_if_room(&mut self) {
        if self.events.len() < self.capacity {
            if let Some(episode) = self.overflow.take() {
                // The notice may take the lane one over capacity: it must not cost an event.
                self.events.push_back(Item {
                    frame: (self.make_notice)(&episode),
                    is_event: false,
                });
            }
        }
    }

    /// Queues a control frame ahead of the events. Refused (handed back) when
    /// [`MAX_CONTROL_FRAMES`] are already waiting or the connection is closing.
    pub fn push_control(&mut self, frame: Bytes) -> Result<(), Bytes> {
        if self.closing || self.control.len() >= MAX_CONTROL_FRAMES {
            return Err(frame);
        }
        self.control.push_back(frame);
        Ok(())
    }

    /// Queues the final frame (a WebSocket close, or an HTTP response followed by closing)
    /// and discards queued events, which will not be sent. Returns how many were discarded.
    /// Later pushes are refused.
    pub fn push_final(&mut self, frame: Bytes) -> u64 {
        if self.closing {
            return 0;
        }
        let discarded = self.events.iter().filter(|i| i.is_event).count() as u64;
        self.events.clear();
        self.overflow = None;
        self.control.push_back(frame);
        self.closing = true;
        discarded
    }

    /// Whether a final frame has been queued.
    pub fn is_closing(&self) -> bool {
        self.closing
    }

    /// Events waiting (including a partly written one).
    pub fn queued_events(&self) -> usize {
        self.events.iter().filter(|i| i.is_event).count()
            + usize::from(matches!(self.partial, Some((_, _, true))))
    }

    /// The current overflow episode, if events are being refused.
    pub fn overflow(&self) -> Option<Episode> {
        self.overflow
    }

    /// Whether nothing at all waits to be written.
    pub fn is_empty(&self) -> bool {
        self.partial.is_none() && self.control.is_empty() && self.events.is_empty()
    }

    /// Fills `iov` with the next bytes to write, in order; returns how many slices it used.
    pub fn gather<'a>(&'a self, iov: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        let mut push = |bytes: &'a [u8]| {
            if n < iov.len() {
                iov[n] = IoSlice::new(bytes);
                n += 1;
                true
            } else {
                false
            }
        };
        if let Some((frame, offset, _)) = &self.partial {
            push(&frame[*offset..]);
        }
        for frame in &self.control {
            if !push(frame) {
                return n;
            }
        }
        for item in &self.events {
            if !push(&item.frame) {
                break;
            }
        }
        n
    }

    /// Records that the first `written` bytes of what [`gather`](Self::gather) offered went out.
    pub fn advance(&mut self, mut written: usize) -> Progress {
        let mut progress = Progress::default();
        if let Some((frame, offset, is_event)) = self.partial.take() {
            let rest = frame.len() - offset;
            if written < rest {
                self.partial = Some((frame, offset + written, is_event));
                return progress;
            }
            written -= rest;
            progress.events += u64::from(is_event);
        }
        while written > 0 {
            let (frame, is_event) = if let Some(frame) = self.control.pop_front() {
                (frame, false)
            } else if let Some(item) = self.events.pop_front() {
                (item.frame, item.is_event)
            } else {
                debug_assert!(false, "advanced past what was gathered");
                break;
            };
            if written < frame.len() {
                self.partial = Some((frame, written, is_event));
                break;
            }
            written -= frame.len();
            progress.events += u64::from(is_event);
        }
        if self.overflow.is_some() && !self.closing {
            self.notice_if_room();
        }
        self.shrink_if_drained();
        progress
    }

    fn shrink_if_drained(&mut self) {
        if self.events.is_empty() && self.events.capacity() > SHRINK_ABOVE {
            self.events = VecDeque::new();
        }
        if self.control.is_empty() && self.control.capacity() > SHRINK_ABOVE {
            self.control = VecDeque::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(e: &Episode) -> Bytes {
        Bytes::from(format!("D{}:{}-{}|", e.count, e.first_id, e.last_id))
    }

    fn drain(o: &mut Outbox, chunk: usize) -> (Vec<u8>, u64) {
        let mut out = Vec::new();
        let mut events = 0;
        while !o.is_empty() {
            let mut iov = [IoSlice::new(&[]); 4];
            let n = o.gather(&mut iov);
            let bytes: Vec<u8> = iov[..n].iter().flat_map(|s| s.iter().copied()).collect();
            let take = bytes.len().min(chunk);
            out.extend_from_slice(&bytes[..take]);
            events += o.advance(take).events;
        }
        (out, events)
    }

    #[test]
    fn overflow_is_reported_once_in_place() {
        let mut o = Outbox::new(2, notice);
        assert!(o.push_event(Bytes::from_static(b"e1|"), 1).is_ok());
        assert!(o.push_event(Bytes::from_static(b"e2|"), 2).is_ok());
        assert_eq!(
            o.push_event(Bytes::from_static(b"e3|"), 3),
            Err(Refused::Full)
        );
        assert_eq!(
            o.push_event(Bytes::from_static(b"e4|"), 4),
            Err(Refused::Full)
        );
        assert_eq!(
            o.overflow(),
            Some(Episode {
                count: 2,
                first_id: 3,
                last_id: 4
            })
        );
        let (out, events) = drain(&mut o, 2);
        assert_eq!(
            out, b"e1|e2|D2:3-4|",
            "the notice follows as soon as there is room"
        );
        assert_eq!(events, 2, "the notice is not an event");
        o.push_event(Bytes::from_static(b"e5|"), 5).unwrap();
        assert_eq!(drain(&mut o, 100).0, b"e5|");
    }

    #[test]
    fn lost_events_join_the_episode() {
        let mut o = Outbox::new(1, notice);
        o.push_event(Bytes::from_static(b"e1|"), 1).unwrap();
        assert_eq!(
            o.push_event(Bytes::from_static(b"e2|"), 2),
            Err(Refused::Full)
        );
        o.record_lost(3, 9);
        assert_eq!(drain(&mut o, 100).0, b"e1|D8:2-9|");
    }

    #[test]
    fn control_goes_first_but_never_splits_a_frame() {
        let mut o = Outbox::new(10, notice);
        o.push_event(Bytes::from_static(b"event-one|"), 1).unwrap();
        let mut iov = [IoSlice::new(&[]); 4];
        o.gather(&mut iov);
        o.advance(3); // part of event-one is on the wire
        o.push_control(Bytes::from_static(b"PONG|")).unwrap();
        o.push_event(Bytes::from_static(b"e2|"), 2).unwrap();
        let (out, events) = drain(&mut o, 4);
        assert_eq!(out, b"nt-one|PONG|e2|");
        assert_eq!(events, 2);
    }

    #[test]
    fn final_frame_discards_events_and_refuses_more() {
        let mut o = Outbox::new(10, notice);
        o.push_event(Bytes::from_static(b"a"), 1).unwrap();
        o.push_event(Bytes::from_static(b"b"), 2).unwrap();
        assert_eq!(o.push_final(Bytes::from_static(b"CLOSE")), 2);
        assert_eq!(
            o.push_event(Bytes::from_static(b"c"), 3),
            Err(Refused::Closing)
        );
        assert!(o.push_control(Bytes::from_static(b"x")).is_err());
        assert_eq!(drain(&mut o, 100).0, b"CLOSE");
    }

    #[test]
    fn control_lane_is_bounded() {
        let mut o = Outbox::new(1, notice);
        for _ in 0..MAX_CONTROL_FRAMES {
            o.push_control(Bytes::from_static(b"p")).unwrap();
        }
        assert!(o.push_control(Bytes::from_static(b"p")).is_err());
    }

    #[test]
    fn memory_is_returned_after_a_burst() {
        let mut o = Outbox::new(10_000, notice);
        for i in 0..5_000 {
            o.push_event(Bytes::from_static(b"x"), i).unwrap();
        }
        drain(&mut o, 1 << 20);
        assert_eq!(o.events.capacity(), 0);
    }
}
