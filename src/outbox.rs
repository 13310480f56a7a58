//! `Outbox`: everything waiting to be written to one connection.
//!
//! Lanes and a cursor:
//!
//! * **event lanes**: bounded queues of shared event frames (`Bytes` handles, never copies),
//!   `capacity` events in all. Under the [`Policy::Priority`] policy there are four lanes,
//!   `control` > `critical` > `important` > `bulk`, written highest first; under every
//!   other policy one lane keeps id order. What a full queue does is the [`Policy`]'s
//!   choice. The losses of one overflow episode (per lane) are summed, and when room
//!   returns a single `dropped` notice is queued in that lane.
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

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::event::Priority;
use crate::policy::Policy;

/// Most control frames that may wait; a peer that keeps asking (pings, publishes with
/// `ref`) without reading the answers is closed rather than allowed to grow this.
pub const MAX_CONTROL_FRAMES: usize = 256;
/// Least time between two `backlog` notices to one connection.
pub const BACKLOG_NOTICE_INTERVAL: Duration = Duration::from_secs(5);
/// Queues larger than this are shrunk back when they drain.
const SHRINK_ABOVE: usize = 64;
const LANES: usize = 4;
/// How many of the last written event ids a connection remembers (`GET /connections/{id}/recent`).
pub const RECENT_IDS: usize = 10;

/// The ids of the last [`RECENT_IDS`] events written, a ring. Boxed and made on the first
/// write, so a connection that never gets an event pays one pointer.
#[derive(Debug, Default)]
struct RecentIds {
    ids: [u64; RECENT_IDS],
    /// Where the next id goes.
    next: usize,
}

impl RecentIds {
    fn push(&mut self, id: u64) {
        self.ids[self.next] = id;
        self.next = (self.next + 1) % RECENT_IDS;
    }

    /// Newest first.
    fn newest_first(&self) -> impl Iterator<Item = u64> + '_ {
        (1..=RECENT_IDS)
            .map(|back| self.ids[(self.next + RECENT_IDS - back) % RECENT_IDS])
            .filter(|&id| id != 0)
    }
}

/// A connection's overload bookkeeping: the open overflow episode of each lane, the events
/// lost per lane since [`Outbox::take_lost_by_lane`] (priority policy only; events of
/// unknown priority are not attributed), and when the last `backlog` notice went.
#[derive(Debug, Default)]
struct Losses {
    episodes: [Option<Episode>; LANES],
    lost_by_lane: [u64; LANES],
    backlog_sent_at: Option<Instant>,
}

/// A queued frame, or a [run](crate::run) of frames, in an event lane.
#[derive(Clone, Debug)]
struct Item {
    frame: Bytes,
    /// The event id (of the first frame, for a run); 0 for the `dropped` notices that
    /// share the lanes (ids start at 1).
    id: u64,
    /// When the event (the run's first) was published, and whether it is traced (a run's
    /// events never are).
    t: Stamp,
    /// Event frames in `frame`: 1, or more for a run (consecutive ids from `id`); 0 for a
    /// notice.
    n: u32,
}

/// The frame a short write stopped inside: the frame, the offset reached, its event id
/// (0 if not an event) and stamp. Boxed in the outbox: only a socket that filled up has
/// one, and an idle connection pays a pointer for it.
#[derive(Debug)]
struct Partial {
    frame: Bytes,
    offset: usize,
    id: u64,
    t: Stamp,
}

/// What a connection with no control frame waiting reads as.
static NO_CONTROL: VecDeque<Bytes> = VecDeque::new();

/// The event lanes, highest first. The first is inline, as every policy uses it; the three
/// below it only the priority policy uses, so they are boxed on first use (and kept: a
/// paced priority subscriber would otherwise allocate per event), and a connection's
/// outbox pays 40 bytes for its lanes instead of 128.
#[derive(Debug, Default)]
struct Lanes {
    first: VecDeque<Item>,
    rest: Option<Box<[VecDeque<Item>; LANES - 1]>>,
}

/// What a lane that was never used reads as.
static NO_LANE: VecDeque<Item> = VecDeque::new();

impl Lanes {
    /// The first lane, then the lower ones as a plain slice (empty until used): `advance`
    /// looks for the front lane once per frame written.
    fn iter(&self) -> impl Iterator<Item = &VecDeque<Item>> {
        let rest = self.rest.as_deref().map_or(&[][..], |r| &r[..]);
        std::iter::once(&self.first).chain(rest)
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = &mut VecDeque<Item>> {
        let rest = self.rest.as_deref_mut().map_or(&mut [][..], |r| &mut r[..]);
        std::iter::once(&mut self.first).chain(rest)
    }
}

impl std::ops::Index<usize> for Lanes {
    type Output = VecDeque<Item>;

    fn index(&self, lane: usize) -> &VecDeque<Item> {
        match (lane, &self.rest) {
            (0, _) => &self.first,
            (_, Some(rest)) => &rest[lane - 1],
            (_, None) => &NO_LANE,
        }
    }
}

impl std::ops::IndexMut<usize> for Lanes {
    fn index_mut(&mut self, lane: usize) -> &mut VecDeque<Item> {
        if lane == 0 {
            &mut self.first
        } else {
            &mut self.rest.get_or_insert_with(Box::default)[lane - 1]
        }
    }
}

/// What an event frame carries besides its bytes for the writer's bookkeeping: when it
/// was published, as a [`crate::clock`] tick (0 = not stamped), and whether its trace is
/// sampled (so its write is recorded as a `ws.write` span).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stamp {
    /// The publish tick.
    pub tick: u32,
    /// The event's trace is sampled.
    pub sampled: bool,
}

impl Item {
    fn is_event(&self) -> bool {
        self.id != 0
    }

    fn event(frame: Bytes, id: u64, t: Stamp) -> Self {
        Self { frame, id, t, n: 1 }
    }

    fn notice(frame: Bytes) -> Self {
        Self {
            frame,
            id: 0,
            t: Stamp::default(),
            n: 0,
        }
    }
}

/// The length of the WebSocket frame at the start of `frames` (a run holds whole frames
/// that firehose encoded); all of `frames` if it cannot tell.
fn first_frame_len(frames: &[u8]) -> usize {
    let len = crate::ws::frame::parse_unmasked(frames).map(|(_, _, used)| used);
    debug_assert!(len.is_some(), "a run holds whole frames");
    len.unwrap_or(frames.len())
}

/// An overflow episode: events one lane lost since it filled up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Episode {
    /// Events lost.
    pub count: u64,
    /// Lowest lost id.
    pub first_id: u64,
    /// Highest lost id.
    pub last_id: u64,
    /// The lane, under the priority policy (`None` otherwise, or when unknown).
    pub lane: Option<Priority>,
}

impl Episode {
    /// Adds lost ids to `episode`; returns whether that opened it.
    fn add(
        episode: &mut Option<Self>,
        id_first: u64,
        id_last: u64,
        lane: Option<Priority>,
    ) -> bool {
        let opened = episode.is_none();
        let e = episode.get_or_insert(Episode {
            count: 0,
            first_id: id_first,
            last_id: id_last,
            lane,
        });
        e.count += id_last - id_first + 1;
        e.first_id = e.first_id.min(id_first);
        e.last_id = e.last_id.max(id_last);
        if e.lane != lane {
            e.lane = None;
        }
        opened
    }
}

/// What [`Outbox::push_event`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Push {
    /// Queued.
    Queued,
    /// Queued, after dropping `count` older events (the first with id `first`) to make room.
    Evicted {
        /// Id of the first event dropped.
        first: u64,
        /// Events dropped.
        count: u64,
    },
    /// The queue is full: this event is dropped for this connection.
    Dropped,
    /// The queue is full and the policy is `disconnect`, or a `control` event found the
    /// queue at twice its bounds under `priority`: nothing was queued; the caller must
    /// close the connection (see [`Outbox::last_delivered`]).
    Overflowed,
    /// The connection is closing: nothing more is queued.
    Closing,
}

impl Push {
    /// Events this push lost.
    pub fn lost(self) -> u64 {
        match self {
            Push::Evicted { count, .. } => count,
            Push::Dropped | Push::Overflowed => 1,
            Push::Queued | Push::Closing => 0,
        }
    }
}

/// What [`Outbox::push_run`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunPush {
    /// The run's first events that were queued.
    pub queued: usize,
    /// The rest, lost to a full queue (recorded in the episode and its notice).
    pub lost: u64,
}

/// What [`Outbox::advance`] completed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Event frames fully written (notices and control frames not counted).
    pub events: u64,
    /// The publish tick ([`crate::clock`]) of the first of them (0 = none, or unstamped).
    /// Within one connection events leave in id order per lane, so this is the oldest but
    /// for a higher lane overtaking a lower one.
    pub first_t: u32,
    /// The id of the first event written whose trace is sampled (0 = none).
    pub sampled: u64,
    /// Bytes written, frames of every kind.
    pub bytes: u64,
}

impl Progress {
    /// Adds a later write's progress to this one (the first tick and sampled id stay).
    pub fn add(&mut self, later: Progress) {
        self.events += later.events;
        self.bytes += later.bytes;
        if self.first_t == 0 {
            self.first_t = later.first_t;
        }
        if self.sampled == 0 {
            self.sampled = later.sampled;
        }
    }
}

/// Pending output of one connection.
#[derive(Debug)]
pub struct Outbox {
    lanes: Lanes,
    /// Boxed on first use and dropped when drained: control frames are occasional, and
    /// the box is 8 bytes where an empty `VecDeque` is 32 in every connection
    /// (`tests/idle_memory.rs`).
    #[allow(
        clippy::box_collection,
        reason = "an idle connection's size is measured; the extra allocation is rare"
    )]
    control: Option<Box<VecDeque<Bytes>>>,
    /// A frame partly written: the frame, the offset reached, and its event id (0 if not
    /// an event).
    partial: Option<Box<Partial>>,
    /// The bounds, and the events in the lanes (notices not counted), in 32 bits: every
    /// connection carries them, and an idle connection's size is measured
    /// (`tests/idle_memory.rs`). The configuration keeps the bounds within `u32`.
    capacity: u32,
    max_bytes: u32,
    queued: u32,
    /// The queued events' bytes.
    queued_bytes: usize,
    policy: Policy,
    /// Overflow bookkeeping, boxed on the first loss: most connections never lose an event,
    /// and an idle connection's memory is what `firehose bench --idle` measures.
    losses: Option<Box<Losses>>,
    /// How many episodes are open (a cheap "any notice due?" on the hot path).
    open_episodes: u8,
    last_delivered: u64,
    /// Events written, and events lost, since the connection opened.
    delivered: u64,
    dropped: u64,
    recent: Option<Box<RecentIds>>,
    closing: bool,
    /// Above the high-water mark (half full); cleared at a quarter (hysteresis).
    backpressure: bool,
    make_notice: fn(&Episode) -> Bytes,
}

impl Outbox {
    /// An empty outbox holding at most `capacity` events and `max_bytes` bytes of them,
    /// under `policy`. `make_notice` encodes the `dropped` notice of an episode.
    pub fn new(
        capacity: usize,
        max_bytes: usize,
        policy: Policy,
        make_notice: fn(&Episode) -> Bytes,
    ) -> Self {
        Self {
            lanes: Default::default(),
            control: None,
            partial: None,
            capacity: u32::try_from(capacity.max(1)).unwrap_or(u32::MAX),
            max_bytes: u32::try_from(max_bytes).unwrap_or(u32::MAX),
            queued: 0,
            queued_bytes: 0,
            policy,
            losses: None,
            open_episodes: 0,
            last_delivered: 0,
            delivered: 0,
            dropped: 0,
            recent: None,
            closing: false,
            backpressure: false,
            make_notice,
        }
    }

    /// Events queued (notices not counted).
    fn count(&self) -> usize {
        self.queued as usize
    }

    /// The most events the queue holds.
    fn cap(&self) -> usize {
        self.capacity as usize
    }

    /// The most bytes of events the queue holds.
    fn byte_cap(&self) -> usize {
        self.max_bytes as usize
    }

    /// Changes how overflow episodes' notices are encoded (at the switch to a transport).
    pub fn set_notice(&mut self, make_notice: fn(&Episode) -> Bytes) {
        self.make_notice = make_notice;
    }

    /// Changes the policy; only while no event is queued (at the WebSocket upgrade).
    pub fn set_policy(&mut self, policy: Policy) {
        debug_assert_eq!(
            self.count(),
            0,
            "the policy is chosen before events are queued"
        );
        self.policy = policy;
    }

    /// After events were queued: when the queue crosses its high-water mark (half its
    /// events or half its bytes) the connection is marked `backpressure`, and the queue
    /// length is returned when a `backlog` notice is due (at most one per
    /// [`BACKLOG_NOTICE_INTERVAL`]). The mark clears when the queue drains to a quarter.
    pub fn check_backlog(&mut self, now: Instant) -> Option<usize> {
        if self.backpressure || self.closing {
            return None;
        }
        let high = self.count() * 2 >= self.cap() || self.queued_bytes >= self.byte_cap() / 2;
        if !high {
            return None;
        }
        self.backpressure = true;
        let losses = self.losses.get_or_insert_with(Box::default);
        if losses
            .backlog_sent_at
            .is_some_and(|t| now.saturating_duration_since(t) < BACKLOG_NOTICE_INTERVAL)
        {
            return None;
        }
        losses.backlog_sent_at = Some(now);
        Some(self.count())
    }

    /// Whether the queue is above its high-water mark.
    pub fn is_backpressured(&self) -> bool {
        self.backpressure
    }

    /// The policy.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    fn lane_of(&self, p: Priority) -> usize {
        if self.policy == Policy::Priority {
            p as usize
        } else {
            0
        }
    }

    fn lane_name(&self, lane: usize) -> Option<Priority> {
        (self.policy == Policy::Priority).then(|| {
            [
                Priority::Control,
                Priority::Critical,
                Priority::Important,
                Priority::Bulk,
            ][lane]
        })
    }

    fn lose(&mut self, lane: usize, first: u64, last: u64, name: Option<Priority>) {
        let losses = self.losses.get_or_insert_with(Box::default);
        if Episode::add(&mut losses.episodes[lane], first, last, name) {
            self.open_episodes += 1;
        }
        self.dropped += last - first + 1;
        if name.is_some() {
            losses.lost_by_lane[lane] += last - first + 1;
        }
    }

    /// Events lost per lane (`control`, `critical`, `important`, `bulk`) under the priority
    /// policy since the last call; the counts are reset.
    pub fn take_lost_by_lane(&mut self) -> [u64; LANES] {
        self.losses
            .as_mut()
            .map_or([0; LANES], |l| std::mem::take(&mut l.lost_by_lane))
    }

    /// Removes the oldest event (not a notice) of `lane`; returns its id.
    fn evict_oldest(&mut self, lane: usize) -> Option<u64> {
        let i = self.lanes[lane].iter().position(Item::is_event)?;
        let item = self.lanes[lane].remove(i)?;
        debug_assert_eq!(item.n, 1, "runs are queued under drop-newest only");
        self.queued -= 1;
        self.queued_bytes -= item.frame.len();
        let name = self.lane_name(lane);
        self.lose(lane, item.id, item.id, name);
        Some(item.id)
    }

    fn fits(&self, queued: usize, bytes: usize, len: usize) -> bool {
        queued < self.cap() && bytes + len <= self.byte_cap()
    }

    /// How many events, taken oldest first from `lanes` in order, must go before an event
    /// of `len` bytes fits; `None` if it cannot fit even then.
    fn evictions_needed(&self, lanes: &[usize], len: usize) -> Option<usize> {
        if lanes.is_empty() {
            return None;
        }
        let (mut queued, mut bytes, mut need) = (self.count(), self.queued_bytes, 0);
        let candidates = lanes
            .iter()
            .flat_map(|l| self.lanes[*l].iter().filter(|i| i.is_event()));
        for item in candidates {
            if self.fits(queued, bytes, len) {
                break;
            }
            queued -= 1;
            bytes -= item.frame.len();
            need += 1;
        }
        self.fits(queued, bytes, len).then_some(need)
    }

    /// Offers an event frame; the policy decides what happens when the queue is full (by
    /// count or by bytes).
    pub fn push_event(&mut self, frame: Bytes, id: u64, priority: Priority) -> Push {
        self.push_event_at(frame, id, priority, Stamp::default())
    }

    /// [`push_event`](Self::push_event) with the event's [`Stamp`], reported back in
    /// [`Progress`] when it is written.
    pub fn push_event_at(&mut self, frame: Bytes, id: u64, priority: Priority, t: Stamp) -> Push {
        if self.closing {
            return Push::Closing;
        }
        let lane = self.lane_of(priority);
        let len = frame.len();
        let outcome = if self.fits(self.count(), self.queued_bytes, len) {
            if self.open_episodes > 0 {
                // Room (not made by an eviction): a finished episode's notice goes first.
                self.notices_if_room();
            }
            Push::Queued
        } else {
            match self.make_room(lane, priority, id, len) {
                Some(Push::Overflowed) => return Push::Overflowed,
                Some(outcome) => outcome,
                None => return Push::Dropped,
            }
        };
        self.lanes[lane].push_back(Item::event(frame, id, t));
        self.queued += 1;
        self.queued_bytes += len;
        outcome
    }

    /// The queue is full for an event of `len` bytes: applies the policy. `Some` if the
    /// event may be queued now (after evictions, or `control` over the bounds), except
    /// `Some(Push::Overflowed)`: nothing is queued and the connection must close
    /// (`disconnect`, or `control` past twice the bounds). `None` if it is lost (recorded
    /// in its lane's episode).
    fn make_room(&mut self, lane: usize, priority: Priority, id: u64, len: usize) -> Option<Push> {
        let mut victims = [0usize; LANES];
        let n = match self.policy {
            Policy::Disconnect => return Some(Push::Overflowed),
            // `catch-up` is applied by routing, which stops pushing to a full queue; an
            // event that still does not fit (by bytes) is dropped like `drop-newest`.
            Policy::DropNewest | Policy::CatchUp => 0,
            Policy::DropOldest => 1, // lane 0
            Policy::Priority => {
                // Lanes below the incoming one, lowest first.
                let below = (lane + 1..LANES).rev();
                let n = below.len();
                for (slot, l) in victims.iter_mut().zip(below) {
                    *slot = l;
                }
                n
            }
        };
        let victims = &victims[..n];
        match self.evictions_needed(victims, len) {
            Some(need) => {
                // `need` > 0: the event did not fit before.
                let mut first = None;
                let mut left = need;
                for &l in victims {
                    while left > 0 {
                        let Some(evicted) = self.evict_oldest(l) else {
                            break;
                        };
                        first.get_or_insert(evicted);
                        left -= 1;
                    }
                }
                Some(Push::Evicted {
                    first: first.unwrap_or(0),
                    count: need as u64,
                })
            }
            // `control` is never dropped: it may take the queue over its bounds, up to twice
            // them, since a publisher decides what is `control`. Past that the client is
            // not reading: close it, as `disconnect` would, so it resumes where it stopped.
            None if self.policy == Policy::Priority && priority == Priority::Control => {
                let (cap, byte_cap) = (2 * self.cap(), self.byte_cap().saturating_mul(2));
                Some(
                    if self.count() < cap && self.queued_bytes + len <= byte_cap {
                        Push::Queued
                    } else {
                        Push::Overflowed
                    },
                )
            }
            None => {
                let name = self.lane_name(lane);
                self.lose(lane, id, id, name);
                None
            }
        }
    }

    /// Queues a replayed event if it fits, whatever the policy: replay pulls from the log
    /// at the pace the client reads, so it waits for room rather than dropping. Hands the
    /// frame back when the queue is full (or closing). An event larger than the byte bound
    /// is queued when the queue is empty, so it cannot block replay for ever.
    pub fn push_replayed(
        &mut self,
        frame: Bytes,
        id: u64,
        priority: Priority,
        t: Stamp,
    ) -> Result<(), Bytes> {
        let empty = self.count() == 0;
        if self.closing || !(empty || self.fits(self.count(), self.queued_bytes, frame.len())) {
            return Err(frame);
        }
        let lane = self.lane_of(priority);
        self.queued += 1;
        self.queued_bytes += frame.len();
        self.lanes[lane].push_back(Item::event(frame, id, t));
        Ok(())
    }

    /// Whether an event of `len` bytes fits without the policy's help.
    pub fn fits_event(&self, len: usize) -> bool {
        self.fits(self.count(), self.queued_bytes, len)
    }

    /// Under `drop-newest`, with no room for an event of `len` bytes: counts event `id` as
    /// lost and returns true, without the event's frame ever being cloned (under overload
    /// most routed events end here). False, and nothing done, in every other case.
    pub fn drop_newest_if_full(&mut self, id: u64, len: usize) -> bool {
        if self.policy != Policy::DropNewest || self.closing || self.fits_event(len) {
            return false;
        }
        self.lose(0, id, id, None);
        true
    }

    /// Offers a whole [run](crate::run) of events, under `drop-newest` (debug-checked; the
    /// router offers runs to no other policy). Its first frames that fit are queued (as
    /// one entry, or frame by frame from the events' own buffers when fewer than
    /// [`RUN_MIN`](crate::run::RUN_MIN)); the rest are lost, as one event at a time would be.
    pub fn push_run(&mut self, run: &crate::run::Frozen<'_>) -> RunPush {
        debug_assert_eq!(self.policy, Policy::DropNewest);
        if self.closing || run.is_empty() {
            return RunPush::default();
        }
        let (k, len) = run.prefix_within(
            self.cap().saturating_sub(self.count()),
            self.byte_cap().saturating_sub(self.queued_bytes),
        );
        let first = run.first_id();
        if k > 0 {
            if self.open_episodes > 0 {
                self.notices_if_room();
            }
            if k >= crate::run::RUN_MIN {
                let (_, t) = run.event(0);
                self.lanes[0].push_back(Item {
                    frame: run.prefix(len),
                    id: first,
                    t,
                    n: k as u32,
                });
            } else {
                for i in 0..k {
                    let (frame, t) = run.event(i);
                    self.lanes[0].push_back(Item::event(frame.clone(), first + i as u64, t));
                }
            }
            self.queued += k as u32;
            self.queued_bytes += len;
        }
        let lost = (run.len() - k) as u64;
        if lost > 0 {
            self.lose(0, first + k as u64, first + run.len() as u64 - 1, None);
        }
        RunPush { queued: k, lost }
    }

    /// Whether [`push_replayed`](Self::push_replayed) may take another event.
    pub fn has_room(&self) -> bool {
        !self.closing && self.count() < self.cap() && self.queued_bytes < self.byte_cap()
    }

    /// Queues a notice in order with the events (in the highest lane, which is written
    /// first): it is about the events that follow it. Not counted as an event.
    pub fn push_notice(&mut self, frame: Bytes) {
        if !self.closing {
            self.lanes[0].push_back(Item::notice(frame));
        }
    }

    /// Discards the queued events and notices (not a partly written frame, nor control
    /// frames), because the client asked to start over; returns how many events went.
    pub fn clear_events(&mut self) -> u64 {
        let cleared = self.count() as u64;
        self.lanes.iter_mut().for_each(VecDeque::clear);
        self.queued = 0;
        self.queued_bytes = 0;
        if let Some(losses) = self.losses.as_mut() {
            losses.episodes = [None; LANES];
        }
        self.open_episodes = 0;
        cleared
    }

    /// Records events this connection lost before reaching its queue (the I/O thread fell
    /// behind the log): they join an overflow episode and its notice.
    pub fn record_lost(&mut self, first_id: u64, last_id: u64) {
        if self.closing || last_id < first_id {
            return;
        }
        // Their priorities are unknown: report them in the lowest lane, lane unknown.
        let lane = self.lane_of(Priority::Bulk);
        self.lose(lane, first_id, last_id, None);
        self.notices_if_room();
    }

    /// Queues the notices of finished overflow episodes once the queue has room.
    fn notices_if_room(&mut self) {
        if self.count() >= self.cap() || self.queued_bytes >= self.byte_cap() {
            return;
        }
        let Some(losses) = self.losses.as_mut() else {
            return;
        };
        let episodes = std::mem::take(&mut losses.episodes);
        for (lane, episode) in episodes.into_iter().enumerate() {
            if let Some(episode) = episode {
                self.open_episodes -= 1;
                // A notice may take the queue over capacity: it must not cost an event.
                self.lanes[lane].push_back(Item::notice((self.make_notice)(&episode)));
            }
        }
    }

    fn control(&self) -> &VecDeque<Bytes> {
        self.control.as_deref().unwrap_or(&NO_CONTROL)
    }

    fn control_mut(&mut self) -> &mut VecDeque<Bytes> {
        self.control.get_or_insert_with(Box::default)
    }

    /// Queues a control frame ahead of the events. Refused (handed back) when
    /// [`MAX_CONTROL_FRAMES`] are already waiting or the connection is closing.
    pub fn push_control(&mut self, frame: Bytes) -> Result<(), Bytes> {
        if self.closing || self.control().len() >= MAX_CONTROL_FRAMES {
            return Err(frame);
        }
        self.control_mut().push_back(frame);
        Ok(())
    }

    /// Queues the final frames (e.g. a last notice and a WebSocket close, or an HTTP
    /// response followed by closing) and discards queued events, which will not be sent.
    /// Returns how many were discarded. Later pushes are refused.
    pub fn push_final(&mut self, frames: impl IntoIterator<Item = Bytes>) -> u64 {
        if self.closing {
            return 0;
        }
        let discarded = self.clear_events();
        self.control_mut().extend(frames);
        self.closing = true;
        discarded
    }

    /// Events waiting (including a partly written one).
    pub fn queued_events(&self) -> usize {
        self.count() + usize::from(self.partial.as_ref().is_some_and(|p| p.id != 0))
    }

    /// The ids of the queued events, in the order they will be written (a partly written
    /// one excluded).
    pub fn queued(&self) -> impl Iterator<Item = u64> + '_ {
        self.lanes
            .iter()
            .flatten()
            .filter(|i| i.is_event())
            .flat_map(|i| i.id..i.id + u64::from(i.n))
    }

    /// The id of the last event completely written (0 if none), or of the one being
    /// written: what the client will have when the queue is discarded.
    pub fn last_delivered(&self) -> u64 {
        match &self.partial {
            Some(p) if p.id != 0 => p.id,
            _ => self.last_delivered,
        }
    }

    /// Events completely written since the connection opened.
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// Events lost since the connection opened (queue full, or not routed in time); not
    /// those discarded at close.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Bytes of the queued events.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// The ids of the last [`RECENT_IDS`] events completely written, newest first.
    pub fn recent(&self) -> Vec<u64> {
        self.recent
            .as_deref()
            .map_or_else(Vec::new, |r| r.newest_first().collect())
    }

    /// The current overflow episodes, if events are being lost.
    pub fn overflow(&self) -> impl Iterator<Item = Episode> + '_ {
        self.losses
            .iter()
            .flat_map(|l| l.episodes.iter().flatten().copied())
    }

    /// Whether nothing at all waits to be written.
    pub fn is_empty(&self) -> bool {
        self.partial.is_none()
            && self.control().is_empty()
            && self.lanes.iter().all(VecDeque::is_empty)
    }

    /// Frames waiting to be written (events, notices, control frames, a partial one).
    pub fn frames_waiting(&self) -> usize {
        usize::from(self.partial.is_some())
            + self.control().len()
            + self.lanes.iter().map(VecDeque::len).sum::<usize>()
    }

    /// Fills `iov` with the next bytes to write, in order; returns how many slices it used.
    pub fn gather<'a>(&'a self, iov: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        if let Some(p) = &self.partial {
            if n == iov.len() {
                return n;
            }
            iov[n] = IoSlice::new(&p.frame[p.offset..]);
            n += 1;
        }
        for frame in self.control() {
            if n == iov.len() {
                return n;
            }
            iov[n] = IoSlice::new(frame);
            n += 1;
        }
        for lane in self.lanes.iter() {
            for item in lane {
                if n == iov.len() {
                    return n;
                }
                iov[n] = IoSlice::new(&item.frame);
                n += 1;
            }
        }
        n
    }

    /// The first lane with anything queued.
    fn front_lane(&mut self) -> Option<&mut VecDeque<Item>> {
        self.lanes.iter_mut().find(|l| !l.is_empty())
    }

    /// Records that the first `written` bytes of what [`gather`](Self::gather) offered went out.
    pub fn advance(&mut self, mut written: usize) -> Progress {
        let mut progress = Progress {
            bytes: written as u64,
            ..Progress::default()
        };
        if let Some(mut p) = self.partial.take() {
            let rest = p.frame.len() - p.offset;
            if written < rest {
                p.offset += written;
                self.partial = Some(p);
                return progress;
            }
            written -= rest;
            self.completed(p.id, 1, p.t, &mut progress);
        }
        while written > 0 {
            let control = self.control.as_mut().and_then(|c| c.pop_front());
            let (frame, id, t, n) = if let Some(frame) = control {
                (frame, 0, Stamp::default(), 0)
            } else if let Some(item) = self.front_lane().and_then(VecDeque::pop_front) {
                if item.is_event() {
                    self.queued -= item.n;
                    self.queued_bytes -= item.frame.len();
                }
                (item.frame, item.id, item.t, item.n)
            } else {
                debug_assert!(false, "advanced past what was gathered");
                break;
            };
            if written < frame.len() {
                if n > 1 {
                    self.split_run((frame, id, n), t, written, &mut progress);
                } else {
                    self.partial = Some(Box::new(Partial {
                        frame,
                        offset: written,
                        id,
                        t,
                    }));
                }
                break;
            }
            written -= frame.len();
            self.completed(id, n.max(1), t, &mut progress);
        }
        if !self.closing && self.open_episodes > 0 {
            self.notices_if_room();
        }
        if self.backpressure
            && self.count() * 4 <= self.cap()
            && self.queued_bytes <= self.byte_cap() / 4
        {
            self.backpressure = false;
        }
        self.shrink_if_drained();
        progress
    }

    /// A run (`frames` of events from `id`) that a write stopped inside, `written` bytes
    /// in: its whole frames are complete, the frame cut becomes the partial one, and the
    /// rest goes back to the front of the lane as a shorter run (keeping the first
    /// event's stamp: an upper bound for their age).
    fn split_run(
        &mut self,
        (frames, id, n): (Bytes, u64, u32),
        t: Stamp,
        written: usize,
        p: &mut Progress,
    ) {
        let (mut at, mut done) = (0, 0u32);
        let cut_len = loop {
            let len = first_frame_len(&frames[at..]);
            if at + len > written {
                break len;
            }
            at += len;
            done += 1;
        };
        if done > 0 {
            self.completed(id, done, t, p);
        }
        let cut = id + u64::from(done);
        self.partial = Some(Box::new(Partial {
            frame: frames.slice(at..at + cut_len),
            offset: written - at,
            id: cut,
            t,
        }));
        let rest = frames.slice(at + cut_len..);
        let n = n - done - 1;
        if n > 0 {
            self.queued += n;
            self.queued_bytes += rest.len();
            self.lanes[0].push_front(Item {
                frame: rest,
                id: cut + 1,
                t,
                n,
            });
        }
    }

    /// `n` event frames from `id` went out (`id` 0: a notice or control frame).
    fn completed(&mut self, id: u64, n: u32, t: Stamp, progress: &mut Progress) {
        if id != 0 {
            let last = id + u64::from(n) - 1;
            progress.events += u64::from(n);
            self.last_delivered = last;
            self.delivered += u64::from(n);
            let recent = self.recent.get_or_insert_with(Box::default);
            for id in id.max(last.saturating_sub(RECENT_IDS as u64 - 1))..=last {
                recent.push(id);
            }
            if progress.first_t == 0 {
                progress.first_t = t.tick;
            }
            if t.sampled && progress.sampled == 0 {
                progress.sampled = id;
            }
        }
    }

    fn shrink_if_drained(&mut self) {
        for lane in self.lanes.iter_mut() {
            if lane.is_empty() && lane.capacity() > SHRINK_ABOVE {
                *lane = VecDeque::new();
            }
        }
        // Control frames are rare (replies, pings, the welcome): an idle connection keeps
        // no buffer for them.
        if self.control.as_ref().is_some_and(|c| c.is_empty()) {
            self.control = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(e: &Episode) -> Bytes {
        let lane = e.lane.map_or("", Priority::as_str);
        Bytes::from(format!("D{lane}{}:{}-{}|", e.count, e.first_id, e.last_id))
    }

    fn ev(id: u64) -> Bytes {
        Bytes::from(format!("e{id}|"))
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

    fn outbox(capacity: usize, policy: Policy) -> Outbox {
        Outbox::new(capacity, usize::MAX, policy, notice)
    }

    #[test]
    fn counts_and_remembers_what_it_wrote() {
        let mut o = outbox(3, Policy::DropNewest);
        assert!(o.recent().is_empty());
        for id in 1..=5 {
            o.push_event(ev(id), id, Priority::Bulk);
        }
        assert_eq!((o.dropped(), o.queued_bytes()), (2, 9));
        drain(&mut o, 3);
        assert_eq!(o.delivered(), 3);
        assert_eq!(o.recent(), [3, 2, 1]);
        for id in 6..=20 {
            o.push_event(ev(id), id, Priority::Bulk);
            drain(&mut o, 100);
        }
        assert_eq!(o.delivered(), 18);
        assert_eq!(
            o.recent(),
            (11..=20).rev().collect::<Vec<_>>(),
            "the last 10"
        );
        assert_eq!(o.dropped(), 2);
    }

    #[test]
    fn bytes_bound_the_queue_too() {
        let big = |id: u64| Bytes::from(format!("{id:0>10}|"));
        let mut o = Outbox::new(100, 35, Policy::DropNewest, notice);
        for id in 1..=3 {
            assert_eq!(o.push_event(big(id), id, Priority::Bulk), Push::Queued);
        }
        assert_eq!(
            o.push_event(big(4), 4, Priority::Bulk),
            Push::Dropped,
            "33 + 11 bytes > 35"
        );
        let mut o = Outbox::new(100, 35, Policy::DropOldest, notice);
        for id in 1..=3 {
            o.push_event(big(id), id, Priority::Bulk);
        }
        let huge = Bytes::from(vec![b'h'; 30]);
        assert_eq!(
            o.push_event(huge, 4, Priority::Bulk),
            Push::Evicted { first: 1, count: 3 },
            "evicts until it fits"
        );
        let mut o = Outbox::new(100, 35, Policy::Priority, notice);
        o.push_event(big(1), 1, Priority::Bulk);
        o.push_event(big(2), 2, Priority::Critical);
        o.push_event(big(3), 3, Priority::Critical);
        let huge = Bytes::from(vec![b'h'; 30]);
        assert_eq!(
            o.push_event(huge, 4, Priority::Important),
            Push::Dropped,
            "evicting the bulk event would not make room: nothing is evicted"
        );
        assert_eq!(o.queued().count(), 3);
    }

    #[test]
    fn drop_newest_reports_each_episode_once_in_place() {
        let mut o = outbox(2, Policy::DropNewest);
        assert_eq!(o.push_event(ev(1), 1, Priority::Bulk), Push::Queued);
        assert_eq!(o.push_event(ev(2), 2, Priority::Bulk), Push::Queued);
        assert_eq!(o.push_event(ev(3), 3, Priority::Bulk), Push::Dropped);
        assert_eq!(o.push_event(ev(4), 4, Priority::Critical), Push::Dropped);
        assert_eq!(
            o.overflow()
                .next()
                .map(|e| (e.count, e.first_id, e.last_id)),
            Some((2, 3, 4))
        );
        let (out, events) = drain(&mut o, 2);
        assert_eq!(
            out, b"e1|e2|D2:3-4|",
            "the notice follows as soon as there is room"
        );
        assert_eq!(events, 2, "the notice is not an event");
        assert_eq!(o.last_delivered(), 2);
        o.push_event(ev(5), 5, Priority::Bulk);
        assert_eq!(drain(&mut o, 100).0, b"e5|");
    }

    #[test]
    fn drop_oldest_keeps_the_freshest() {
        let mut o = outbox(2, Policy::DropOldest);
        for id in 1..=5 {
            o.push_event(ev(id), id, Priority::Bulk);
        }
        assert_eq!(o.queued().collect::<Vec<_>>(), [4, 5]);
        assert_eq!(drain(&mut o, 100).0, b"e4|e5|D3:1-3|");
    }

    #[test]
    fn priority_writes_high_lanes_first_and_evicts_the_lowest() {
        use Priority::*;
        let evicted = |first| Push::Evicted { first, count: 1 };
        let mut o = outbox(3, Policy::Priority);
        let steps = [
            (1, Bulk, Push::Queued),
            (2, Important, Push::Queued),
            (3, Bulk, Push::Queued),
            (4, Critical, evicted(1)), // full: the oldest bulk event gives way
            (5, Bulk, Push::Dropped),  // nothing below bulk: the incoming one is dropped
            (6, Important, evicted(3)), // the remaining bulk event gives way
            (7, Critical, evicted(2)), // no bulk left: the oldest important one goes
            (8, Control, evicted(6)),
            (9, Control, evicted(4)),
            (10, Control, evicted(7)),
            (11, Control, Push::Queued), // only control left: it goes over capacity, never dropped
            (12, Control, Push::Queued),
            (13, Control, Push::Queued),     // six: twice the capacity
            (14, Control, Push::Overflowed), // past that the connection is closed instead
        ];
        for (id, priority, outcome) in steps {
            assert_eq!(o.push_event(ev(id), id, priority), outcome, "event {id}");
        }
        assert_eq!(o.queued_events(), 6);
        assert_eq!(
            o.take_lost_by_lane(),
            [0, 2, 2, 3],
            "critical 4 and 7, important 2 and 6, bulk 1, 3 and 5"
        );
        assert_eq!(o.take_lost_by_lane(), [0; 4]);
        let (out, _) = drain(&mut o, 100);
        let out = String::from_utf8(out).unwrap();
        assert!(out.starts_with("e8|e9|e10|e11|e12|e13|"), "{out}");
        for lost in ["Dcritical2:4-7|", "Dimportant2:2-6|", "Dbulk3:1-5|"] {
            assert!(out.contains(lost), "{out} lacks {lost}");
        }
    }

    #[test]
    fn disconnect_refuses_and_reports_how_far_the_client_got() {
        let mut o = outbox(2, Policy::Disconnect);
        o.push_event(ev(1), 1, Priority::Bulk);
        o.push_event(ev(2), 2, Priority::Bulk);
        let mut iov = [IoSlice::new(&[]); 4];
        o.gather(&mut iov);
        o.advance(4); // e1 written, e2 started
                      // e2 is on the wire: it no longer takes a place in the queue.
        assert_eq!(o.push_event(ev(3), 3, Priority::Bulk), Push::Queued);
        assert_eq!(o.push_event(ev(4), 4, Priority::Bulk), Push::Queued);
        assert_eq!(o.push_event(ev(5), 5, Priority::Bulk), Push::Overflowed);
        assert_eq!(
            o.last_delivered(),
            2,
            "e2 is on its way: it will be complete"
        );
        assert_eq!(o.push_final([Bytes::from_static(b"BYE|")]), 2);
        assert_eq!(drain(&mut o, 100).0, b"2|BYE|");
    }

    #[test]
    fn backlog_is_noticed_on_the_rising_edge_with_hysteresis_and_a_rate_limit() {
        let t0 = Instant::now();
        let mut o = outbox(8, Policy::DropNewest);
        let mut notices = Vec::new();
        let mut push_and_check = |o: &mut Outbox, id: u64, now: Instant| {
            o.push_event(ev(id), id, Priority::Bulk);
            if let Some(q) = o.check_backlog(now) {
                notices.push(q);
            }
        };
        for id in 1..=8 {
            push_and_check(&mut o, id, t0);
        }
        assert!(o.is_backpressured());
        let write_events = |o: &mut Outbox, n: usize| {
            for _ in 0..n {
                let mut iov = [IoSlice::new(&[]); 1];
                o.gather(&mut iov);
                let len = iov[0].len();
                o.advance(len);
            }
        };
        write_events(&mut o, 5); // 3 left: above a quarter, still marked
        assert!(o.is_backpressured());
        write_events(&mut o, 1); // 2 left: a quarter
        assert!(!o.is_backpressured());
        for id in 9..=12 {
            push_and_check(&mut o, id, t0 + Duration::from_secs(1)); // crosses again within 5 s
        }
        assert!(o.is_backpressured());
        write_events(&mut o, 6);
        for id in 13..=16 {
            push_and_check(&mut o, id, t0 + Duration::from_secs(6));
        }
        assert_eq!(
            notices,
            [4, 4],
            "one notice per crossing, none within 5 s of the last"
        );
    }

    #[test]
    fn lost_events_join_the_episode() {
        let mut o = outbox(1, Policy::DropNewest);
        o.push_event(ev(1), 1, Priority::Bulk);
        assert_eq!(o.push_event(ev(2), 2, Priority::Bulk), Push::Dropped);
        o.record_lost(3, 9);
        assert_eq!(drain(&mut o, 100).0, b"e1|D8:2-9|");
    }

    /// Real WebSocket frames (a run's frames are split by their headers): event `id`'s
    /// payload is `e{id}` padded to `pad` bytes.
    fn ws_ev(id: u64, pad: usize) -> Bytes {
        let payload = format!("e{id}{}", ".".repeat(pad));
        crate::ws::frame::encode(crate::ws::frame::OpCode::Text, payload.as_bytes())
    }

    fn run_of(run: &mut crate::run::Run, ids: std::ops::RangeInclusive<u64>, pad: usize) {
        run.clear();
        for id in ids {
            let t = Stamp {
                tick: id as u32 * 10,
                sampled: false,
            };
            run.push(id, &ws_ev(id, pad), t);
        }
    }

    fn joined(ids: impl IntoIterator<Item = u64>, pad: usize) -> Vec<u8> {
        ids.into_iter()
            .flat_map(|id| ws_ev(id, pad).to_vec())
            .collect()
    }

    #[test]
    fn a_run_is_one_entry_written_in_any_pieces() {
        for chunk in [1, 7, 50, 100_000] {
            let mut o = outbox(100, Policy::DropNewest);
            let mut run = crate::run::Run::default();
            run_of(&mut run, 1..=20, 30);
            let frozen = run.freeze();
            let pushed = o.push_run(&frozen);
            assert_eq!(
                pushed,
                RunPush {
                    queued: 20,
                    lost: 0
                }
            );
            assert_eq!(o.frames_waiting(), 1, "one entry");
            assert_eq!(o.queued_events(), 20);
            assert_eq!(o.queued().collect::<Vec<_>>(), (1..=20).collect::<Vec<_>>());
            // Progress is counted by whole frames however the writes cut them.
            let mut iov = [IoSlice::new(&[]); 4];
            let n = o.gather(&mut iov);
            let first = iov[..n].iter().map(|s| s.len()).sum::<usize>().min(chunk);
            let p = o.advance(first);
            let frame_len = ws_ev(1, 30).len();
            assert_eq!(p.events as usize, first / frame_len, "chunk {chunk}");
            assert_eq!(o.queued_events(), 20 - first / frame_len, "chunk {chunk}");
            let (out, events) = drain(&mut o, chunk);
            let mut all = joined(1..=20, 30)[..first].to_vec();
            all.extend_from_slice(&out);
            assert_eq!(all, joined(1..=20, 30), "chunk {chunk}");
            assert_eq!(p.events + events, 20);
            assert_eq!((o.delivered(), o.last_delivered()), (20, 20));
            assert_eq!(o.recent(), (11..=20).rev().collect::<Vec<_>>());
            assert!(o.is_empty() && o.queued_events() == 0 && o.queued_bytes() == 0);
        }
    }

    #[test]
    fn a_full_queue_takes_a_runs_first_frames_and_notices_the_rest_in_place() {
        let mut o = outbox(30, Policy::DropNewest);
        for id in 1..=5 {
            o.push_event(ws_ev(id, 0), id, Priority::Bulk);
        }
        let mut run = crate::run::Run::default();
        run_of(&mut run, 6..=40, 0);
        let pushed = o.push_run(&run.freeze());
        assert_eq!(
            pushed,
            RunPush {
                queued: 25,
                lost: 10
            }
        );
        assert_eq!(o.dropped(), 10);
        assert_eq!(
            o.overflow()
                .map(|e| (e.count, e.first_id, e.last_id))
                .next(),
            Some((10, 31, 40))
        );
        // Room returns as the queue drains; the next run follows the notice.
        let (out, events) = drain(&mut o, 3);
        let mut want = joined(1..=30, 0);
        want.extend_from_slice(b"D10:31-40|");
        assert_eq!(out, want);
        assert_eq!(events, 30);
        run_of(&mut run, 41..=60, 0);
        assert_eq!(o.push_run(&run.freeze()).queued, 20);
        assert_eq!(drain(&mut o, 1000).0, joined(41..=60, 0));
    }

    #[test]
    fn a_short_prefix_is_queued_from_the_events_own_frames() {
        let mut o = outbox(4, Policy::DropNewest);
        o.push_event(ws_ev(1, 0), 1, Priority::Bulk);
        let mut run = crate::run::Run::default();
        run_of(&mut run, 2..=40, 0);
        let frozen = run.freeze();
        assert_eq!(
            o.push_run(&frozen),
            RunPush {
                queued: 3,
                lost: 36
            }
        );
        // Three entries that share nothing with the run's buffer.
        assert_eq!(o.frames_waiting(), 4);
        assert_eq!(o.queued().collect::<Vec<_>>(), vec![1, 2, 3, 4]);
        let (out, events) = drain(&mut o, 5);
        let mut want = joined(1..=4, 0);
        want.extend_from_slice(b"D36:5-40|");
        assert_eq!((out, events), (want, 4));
        o.push_final([Bytes::from_static(b"bye")]);
        run_of(&mut run, 41..=60, 0);
        assert_eq!(o.push_run(&run.freeze()), RunPush::default(), "closing");
    }

    #[test]
    fn control_goes_first_but_never_splits_a_frame() {
        let mut o = outbox(10, Policy::DropNewest);
        o.push_event(Bytes::from_static(b"event-one|"), 1, Priority::Bulk);
        let mut iov = [IoSlice::new(&[]); 4];
        o.gather(&mut iov);
        o.advance(3); // part of event-one is on the wire
        o.push_control(Bytes::from_static(b"PONG|")).unwrap();
        o.push_event(ev(2), 2, Priority::Bulk);
        let (out, events) = drain(&mut o, 4);
        assert_eq!(out, b"nt-one|PONG|e2|");
        assert_eq!(events, 2);
    }

    #[test]
    fn final_frames_discard_events_and_refuse_more() {
        let mut o = outbox(10, Policy::DropNewest);
        o.push_event(ev(1), 1, Priority::Bulk);
        o.push_event(ev(2), 2, Priority::Bulk);
        assert_eq!(o.push_final([Bytes::from_static(b"CLOSE")]), 2);
        assert_eq!(o.push_event(ev(3), 3, Priority::Bulk), Push::Closing);
        assert!(o.push_control(Bytes::from_static(b"x")).is_err());
        assert_eq!(drain(&mut o, 100).0, b"CLOSE");
    }

    #[test]
    fn control_lane_is_bounded() {
        let mut o = outbox(1, Policy::DropNewest);
        for _ in 0..MAX_CONTROL_FRAMES {
            o.push_control(Bytes::from_static(b"p")).unwrap();
        }
        assert!(o.push_control(Bytes::from_static(b"p")).is_err());
    }

    #[test]
    fn drop_newest_if_full_loses_only_under_drop_newest_when_full() {
        let mut o = outbox(2, Policy::DropNewest);
        assert!(!o.drop_newest_if_full(1, 3), "room: nothing done");
        o.push_event(ev(1), 1, Priority::Bulk);
        o.push_event(ev(2), 2, Priority::Bulk);
        assert!(o.drop_newest_if_full(3, 3));
        assert!(o.drop_newest_if_full(4, 3));
        assert_eq!(o.dropped(), 2);
        // The episode's notice follows the queued events, as with a refused push.
        assert_eq!(drain(&mut o, 100), (b"e1|e2|D2:3-4|".to_vec(), 2));
        let mut old = outbox(1, Policy::DropOldest);
        old.push_event(ev(1), 1, Priority::Bulk);
        assert!(
            !old.drop_newest_if_full(2, 3),
            "another policy decides itself"
        );
        assert_eq!(old.dropped(), 0);
    }

    #[test]
    fn memory_is_returned_after_a_burst() {
        let mut o = outbox(10_000, Policy::DropNewest);
        for i in 0..5_000 {
            o.push_event(Bytes::from_static(b"x"), i, Priority::Bulk);
        }
        drain(&mut o, 1 << 20);
        assert!(o.lanes.iter().all(|l| l.capacity() == 0));
    }
}
