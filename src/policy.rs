//! Overflow policies: what a subscriber's full queue does with one more event.
//!
//! | policy | when the queue is full |
//! | --- | --- |
//! | `drop-newest` (default) | the incoming event is dropped for this subscriber |
//! | `drop-oldest` | the oldest queued event gives way: the client always gets the freshest |
//! | `priority` | four lanes, `control` > `critical` > `important` > `bulk`, written highest first; the incoming event evicts the oldest event of the lowest non-empty lane below its own, or is dropped if there is none; `control` is never dropped, but past twice the queue's bounds the client is closed as under `disconnect` |
//! | `disconnect` | the connection is closed with 1008 `slow consumer`, after a final notice of the last id delivered |
//! | `catch-up` | nothing is dropped: the subscriber leaves live routing and replays from the log at the pace it reads, then rejoins live; only events trimmed from the log before it reads them are lost, told in a `gap` notice |
//!
//! Every loss is counted and told to the client in a `dropped` (or `gap`) notice.

use std::fmt;
use std::str::FromStr;

/// One subscription's overflow policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Policy {
    /// Drop the incoming event.
    #[default]
    DropNewest,
    /// Drop the oldest queued event.
    DropOldest,
    /// Priority lanes with eviction of lower lanes.
    Priority,
    /// Close the connection.
    Disconnect,
    /// Fall back to reading the log (replay), rejoin live when caught up.
    CatchUp,
}

impl Policy {
    /// Every policy, in documentation order.
    pub const ALL: [Policy; 5] = [
        Policy::DropNewest,
        Policy::DropOldest,
        Policy::Priority,
        Policy::Disconnect,
        Policy::CatchUp,
    ];

    /// The name used in flags and query strings.
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::DropNewest => "drop-newest",
            Policy::DropOldest => "drop-oldest",
            Policy::Priority => "priority",
            Policy::Disconnect => "disconnect",
            Policy::CatchUp => "catch-up",
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown policy name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown overflow policy {0:?}: use drop-newest, drop-oldest, priority, disconnect or catch-up"
)]
pub struct PolicyError(pub String);

impl FromStr for Policy {
    type Err = PolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Policy::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| PolicyError(s.chars().take(32).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for p in Policy::ALL {
            assert_eq!(p.as_str().parse::<Policy>(), Ok(p));
        }
        assert!("drop_newest"
            .parse::<Policy>()
            .unwrap_err()
            .to_string()
            .contains("drop-newest"));
    }
}
