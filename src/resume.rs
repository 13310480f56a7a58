//! Where a (re)connecting subscriber starts: the decision, as a pure function.
//!
//! A client that saw events up to id `N` comes back with `last_event_id=N` (WebSocket query
//! or `{"op":"resume"}` message; SSE `Last-Event-ID`). Ids are only meaningful within one
//! **epoch**: the log's history lives in memory, so a restart loses it and numbering starts
//! again at 1. Every server run has its own epoch, sent in the `welcome`, and a resume
//! position may carry it (`epoch=E`, or the compound `E:N` that SSE `id:` fields use).
//!
//! [`plan`] turns the position into a [`Start`]: which id delivery continues after, whether
//! that recovers everything the client missed, and the gap it must be told about when it
//! does not. There is never a partial recovery without a `gap` notice or `recovered:false`.

/// A position a client resumes from: the last event id it processed, perhaps with the
/// epoch that id belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    /// The epoch of `last_id`, when the client sent it.
    pub epoch: Option<u64>,
    /// The last event id the client processed (0: it has seen nothing, send everything).
    pub last_id: u64,
}

/// A resume position that cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PositionError {
    /// Not `N` or `E:N` in decimal.
    #[error("last event id {0:?} is not an event id (N) or an epoch and id (E:N), in decimal")]
    Id(String),
    /// `epoch` is not a number.
    #[error("epoch {0:?} is not a number (use the `epoch` of a `welcome`)")]
    Epoch(String),
    /// `epoch` given alone.
    #[error("epoch without last_event_id: send the last event id processed too")]
    EpochAlone,
    /// The compound form and `epoch=` disagree.
    #[error("last_event_id names epoch {0} but epoch= says {1}")]
    EpochConflict(u64, u64),
}

fn short(s: &str) -> String {
    s.chars().take(64).collect()
}

impl Position {
    /// Parses `N` or `E:N` (the form SSE `id:` fields carry).
    pub fn parse(s: &str) -> Result<Self, PositionError> {
        let s = s.trim();
        let number = |t: &str| {
            (!t.is_empty() && t.len() <= 20 && t.bytes().all(|b| b.is_ascii_digit()))
                .then(|| t.parse::<u64>().ok())
                .flatten()
        };
        let bad = || PositionError::Id(short(s));
        match s.split_once(':') {
            Some((e, n)) => Ok(Self {
                epoch: Some(number(e).ok_or_else(bad)?),
                last_id: number(n).ok_or_else(bad)?,
            }),
            None => Ok(Self {
                epoch: None,
                last_id: number(s).ok_or_else(bad)?,
            }),
        }
    }

    /// The position from a `last_event_id` value and a separate `epoch` value, either of
    /// which may be absent.
    pub fn from_parts(
        last_event_id: Option<&str>,
        epoch: Option<&str>,
    ) -> Result<Option<Self>, PositionError> {
        let epoch = epoch
            .map(|e| {
                e.trim()
                    .parse::<u64>()
                    .map_err(|_| PositionError::Epoch(short(e)))
            })
            .transpose()?;
        let Some(id) = last_event_id else {
            return match epoch {
                Some(_) => Err(PositionError::EpochAlone),
                None => Ok(None),
            };
        };
        let mut p = Self::parse(id)?;
        match (p.epoch, epoch) {
            (Some(a), Some(b)) if a != b => return Err(PositionError::EpochConflict(a, b)),
            (None, e) => p.epoch = e,
            _ => {}
        }
        Ok(Some(p))
    }
}

/// What the log looks like when a subscriber starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogView {
    /// This server run's epoch.
    pub epoch: u64,
    /// The oldest id still retained.
    pub head: u64,
    /// The next id this I/O thread routes live (everything below it has been routed).
    pub live_from: u64,
    /// The newest id claimed by any publisher.
    pub newest: u64,
}

/// Why a resume did not recover everything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unrecovered {
    /// No resume was asked for: a fresh subscription.
    NotAsked,
    /// The id belongs to another epoch (the server restarted): history is lost.
    OtherEpoch,
    /// The id is newer than any event of this epoch: it cannot be from this run.
    UnknownId,
    /// Events after the id are past retention: a gap, then everything retained.
    Gap,
}

impl Unrecovered {
    /// The `reason` of a `welcome` with `recovered:false`.
    pub fn as_str(self) -> &'static str {
        match self {
            Unrecovered::NotAsked => "not_asked",
            Unrecovered::OtherEpoch => "other_epoch",
            Unrecovered::UnknownId => "unknown_id",
            Unrecovered::Gap => "gap",
        }
    }
}

/// Where delivery starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Start {
    /// The `welcome`'s `last_id`: delivery continues after it (with a gap notice first,
    /// when [`gap`](Self::gap) is set).
    pub last_id: u64,
    /// `Ok` when every event after the client's id is delivered; otherwise why not.
    pub recovered: Result<(), Unrecovered>,
    /// Ids the client missed that are no longer retained (`from`, `to`, inclusive).
    pub gap: Option<(u64, u64)>,
    /// The first id to deliver: replay from here while it is below `live_from`.
    pub next: u64,
}

/// Decides where a subscriber that asked for `asked` starts, given the log.
pub fn plan(asked: Option<Position>, log: LogView) -> Start {
    let live = |why| Start {
        last_id: log.live_from - 1,
        recovered: Err(why),
        gap: None,
        next: log.live_from,
    };
    let Some(p) = asked else {
        return live(Unrecovered::NotAsked);
    };
    if p.epoch.is_some_and(|e| e != log.epoch) {
        return live(Unrecovered::OtherEpoch);
    }
    if p.last_id > log.newest {
        return live(Unrecovered::UnknownId);
    }
    let head = log.head.max(1);
    if p.last_id + 1 >= head {
        return Start {
            last_id: p.last_id,
            recovered: Ok(()),
            gap: None,
            next: p.last_id + 1,
        };
    }
    Start {
        last_id: p.last_id,
        recovered: Err(Unrecovered::Gap),
        gap: Some((p.last_id + 1, head - 1)),
        next: head,
    }
}

/// A new epoch: milliseconds since the Unix epoch times 1,000, plus a per-process count,
/// so a restart (or a second engine in one process) gets a different, larger one. Below
/// 2^53, so JavaScript clients read it exactly.
pub fn new_epoch() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let n = COUNT.fetch_add(1, Ordering::Relaxed) % 1000;
    (ms.saturating_mul(1000) + n + 1) & ((1 << 53) - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: LogView = LogView {
        epoch: 7,
        head: 100,
        live_from: 500,
        newest: 520,
    };

    fn at(epoch: Option<u64>, last_id: u64) -> Option<Position> {
        Some(Position { epoch, last_id })
    }

    #[test]
    fn parses_plain_and_compound_ids() {
        assert_eq!(
            Position::parse("42").unwrap(),
            Position {
                epoch: None,
                last_id: 42
            }
        );
        assert_eq!(
            Position::parse(" 7:0 ").unwrap(),
            Position {
                epoch: Some(7),
                last_id: 0
            }
        );
        for bad in [
            "",
            "x",
            "-1",
            "1:",
            ":1",
            "1:2:3",
            "+5",
            "99999999999999999999",
            "1.5",
        ] {
            assert!(Position::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn combines_the_id_and_the_epoch() {
        assert_eq!(Position::from_parts(None, None).unwrap(), None);
        assert_eq!(
            Position::from_parts(Some("5"), Some("7")).unwrap(),
            at(Some(7), 5)
        );
        assert_eq!(
            Position::from_parts(Some("7:5"), Some("7")).unwrap(),
            at(Some(7), 5)
        );
        assert_eq!(
            Position::from_parts(Some("7:5"), Some("8")),
            Err(PositionError::EpochConflict(7, 8))
        );
        assert_eq!(
            Position::from_parts(None, Some("8")),
            Err(PositionError::EpochAlone)
        );
        assert!(matches!(
            Position::from_parts(Some("5"), Some("x")),
            Err(PositionError::Epoch(_))
        ));
    }

    #[test]
    fn a_fresh_subscription_starts_live() {
        let s = plan(None, LOG);
        assert_eq!((s.last_id, s.next, s.gap), (499, 500, None));
        assert_eq!(s.recovered, Err(Unrecovered::NotAsked));
    }

    #[test]
    fn resumes_within_retention_recover_everything() {
        for (epoch, id) in [(None, 250), (Some(7), 250), (Some(7), 99), (None, 510)] {
            let s = plan(at(epoch, id), LOG);
            assert_eq!(s.recovered, Ok(()));
            assert_eq!((s.last_id, s.next, s.gap), (id, id + 1, None));
        }
    }

    #[test]
    fn resumes_before_retention_get_a_gap_then_everything_retained() {
        let s = plan(at(Some(7), 10), LOG);
        assert_eq!(s.recovered, Err(Unrecovered::Gap));
        assert_eq!((s.last_id, s.gap, s.next), (10, Some((11, 99)), 100));
        let s = plan(at(None, 0), LOG);
        assert_eq!((s.gap, s.next), (Some((1, 99)), 100));
        // Nothing trimmed yet: id 0 means "everything", with no gap.
        let s = plan(at(None, 0), LogView { head: 1, ..LOG });
        assert_eq!((s.recovered, s.gap, s.next), (Ok(()), None, 1));
    }

    #[test]
    fn ids_from_elsewhere_are_not_trusted() {
        let s = plan(at(Some(6), 250), LOG);
        assert_eq!(s.recovered, Err(Unrecovered::OtherEpoch));
        assert_eq!((s.last_id, s.next), (499, 500));
        let s = plan(at(None, 521), LOG);
        assert_eq!(s.recovered, Err(Unrecovered::UnknownId));
        assert_eq!(s.next, 500);
    }

    #[test]
    fn epochs_differ_and_fit_in_a_double() {
        let (a, b) = (new_epoch(), new_epoch());
        assert_ne!(a, b);
        assert!(a < 1 << 53 && b < 1 << 53 && a > 0);
    }
}
