//! `Run`: consecutive events' WebSocket frames copied back to back into one buffer, which
//! every subscriber that wants all of them queues as a single item.
//!
//! Under load an I/O thread routes events in runs: up to [`RUN_MAX`] consecutive events of
//! one type (none of them traced). A subscriber whose filter is one pattern matching that
//! type, under `drop-newest`, without ack tracking, takes the run whole: one queue entry,
//! one reference count and, when written, one `sendmsg` slice, instead of one of each per
//! event. Before runs, queueing each event for each subscriber was most of firehose's own
//! time as fast as events were taken, and the kernel's per-slice cost was a quarter of the
//! rest (README, *Throughput*). Every other subscriber gets the events one by one.
//!
//! Memory: a queued run keeps its whole buffer alive. A full queue takes a run's first
//! frames only; fewer than [`RUN_MIN`] are queued from the events' own buffers instead, so
//! a queue pins at most `RUN_MAX / RUN_MIN` times the bytes it holds (for frames of
//! similar size; a run's buffer is at most [`RUN_MAX_BYTES`], and no larger than its
//! frames).

use bytes::Bytes;

use crate::outbox::Stamp;

/// Most events in one run.
pub const RUN_MAX: usize = 64;
/// Fewest frames queued as one run entry (see the module docs).
pub const RUN_MIN: usize = 16;
/// Most bytes in one run. Large events gain little from runs (a frame's own cost already
/// dwarfs the per-entry cost) and would make each run's copy and buffer large: a run ends
/// before it would pass this, and an event larger than `RUN_MAX_BYTES / RUN_MIN` starts none.
pub const RUN_MAX_BYTES: usize = 256 * 1024;

/// Consecutive events' frames, back to back.
#[derive(Debug, Default)]
pub struct Run {
    /// The frames, back to back.
    bytes: Vec<u8>,
    /// Where each frame ends in `bytes`.
    ends: Vec<usize>,
    /// Each event's own frame (the log's buffer), for short prefixes.
    frames: Vec<Bytes>,
    stamps: Vec<Stamp>,
    first_id: u64,
}

/// A finished run: its buffer made shareable.
#[derive(Debug)]
pub struct Frozen<'a> {
    bytes: Bytes,
    run: &'a Run,
}

impl Run {
    /// Empties the run, keeping its vectors' memory (the buffer itself is handed to `Bytes`
    /// by [`freeze`](Self::freeze) and made anew).
    pub fn clear(&mut self) {
        self.ends.clear();
        self.frames.clear();
        self.stamps.clear();
        self.bytes = Vec::new();
        self.first_id = 0;
    }

    /// Whether a run may start with a frame of `len` bytes.
    pub fn may_start(len: usize) -> bool {
        len <= RUN_MAX_BYTES / RUN_MIN
    }

    /// Whether a frame of `len` bytes may join the run.
    pub fn has_room_for(&self, len: usize) -> bool {
        self.bytes.len() + len <= RUN_MAX_BYTES
    }

    /// Appends event `id`'s frame; ids must be consecutive.
    pub fn push(&mut self, id: u64, frame: &Bytes, t: Stamp) {
        if self.frames.is_empty() {
            self.first_id = id;
            self.bytes = Vec::with_capacity((frame.len() * RUN_MAX).min(RUN_MAX_BYTES));
        }
        debug_assert_eq!(id, self.first_id + self.frames.len() as u64, "consecutive");
        self.bytes.extend_from_slice(frame);
        self.ends.push(self.bytes.len());
        self.frames.push(frame.clone());
        self.stamps.push(t);
    }

    /// Events in the run.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether it has none.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Makes the buffer shareable for queueing. It is trimmed to its frames first: queued
    /// runs keep it alive, and spare room would be pinned with it.
    pub fn freeze(&mut self) -> Frozen<'_> {
        let mut bytes = std::mem::take(&mut self.bytes);
        bytes.shrink_to_fit();
        Frozen {
            bytes: Bytes::from(bytes),
            run: self,
        }
    }
}

impl Frozen<'_> {
    /// Events in the run.
    pub fn len(&self) -> usize {
        self.run.len()
    }

    /// Whether it has none.
    pub fn is_empty(&self) -> bool {
        self.run.is_empty()
    }

    /// The id of its first event.
    pub fn first_id(&self) -> u64 {
        self.run.first_id
    }

    /// How many of its first frames fit in `bytes`, and their length.
    pub fn prefix_within(&self, events: usize, bytes: usize) -> (usize, usize) {
        let ends = &self.run.ends[..events.min(self.len())];
        let k = ends.partition_point(|&end| end <= bytes);
        (k, if k == 0 { 0 } else { ends[k - 1] })
    }

    /// The first `len` bytes (whole frames), sharing the buffer.
    pub fn prefix(&self, len: usize) -> Bytes {
        self.bytes.slice(..len)
    }

    /// Event `i`'s own frame and stamp.
    pub fn event(&self, i: usize) -> (&Bytes, Stamp) {
        (&self.run.frames[i], self.run.stamps[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::frame::{self, OpCode};

    #[test]
    fn prefixes_are_whole_frames() {
        let mut run = Run::default();
        let frames: Vec<Bytes> = (0..5)
            .map(|i| frame::encode(OpCode::Text, "x".repeat(10 * (i + 1)).as_bytes()))
            .collect();
        for (i, f) in frames.iter().enumerate() {
            run.push(7 + i as u64, f, Stamp::default());
        }
        let frozen = run.freeze();
        assert_eq!((frozen.len(), frozen.first_id()), (5, 7));
        // Frames of 12, 22, 32, 42, 52 bytes: ends 12, 34, 66, 108, 160.
        assert_eq!(frozen.prefix_within(5, 160), (5, 160));
        assert_eq!(frozen.prefix_within(5, 159), (4, 108));
        assert_eq!(frozen.prefix_within(2, 1000), (2, 34));
        assert_eq!(frozen.prefix_within(5, 11), (0, 0));
        assert_eq!(frozen.prefix_within(0, 1000), (0, 0));
        let joined: Vec<u8> = frames.iter().flat_map(|f| f.iter().copied()).collect();
        assert_eq!(&frozen.prefix(66)[..], &joined[..66]);
        assert_eq!(frozen.event(3).0, &frames[3]);
        run.clear();
        assert!(run.is_empty());
    }

    #[test]
    fn runs_are_bounded_in_bytes_and_hold_only_their_frames() {
        let big = frame::encode(OpCode::Text, &vec![b'x'; RUN_MAX_BYTES / RUN_MIN]);
        assert!(
            !Run::may_start(big.len()),
            "a frame past a sixteenth starts no run"
        );
        let frame = frame::encode(OpCode::Text, &[b'y'; 5000]);
        assert!(Run::may_start(frame.len()));
        let mut run = Run::default();
        let mut id = 1;
        while run.has_room_for(frame.len()) {
            run.push(id, &frame, Stamp::default());
            id += 1;
        }
        assert_eq!(run.len(), RUN_MAX_BYTES / frame.len());
        assert!(run.len() < RUN_MAX);
        let frozen = run.freeze();
        assert_eq!(
            frozen.prefix_within(usize::MAX, usize::MAX).1,
            frozen.bytes.len()
        );
    }
}
