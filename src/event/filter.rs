//! Type filters: which events a subscription wants.
//!
//! A filter is a list of patterns, any of which may match: `*` (everything), an exact type
//! (`agent.started`), or a prefix ending in `.*` (`workflow.*` matches `workflow.step` and
//! `workflow.step.completed`, not `workflow`). No `types` at all means everything.

use std::fmt;

use super::{is_type_char, MAX_TYPE_LEN};

/// Most patterns one subscription may hold (a peer-controlled amount of routing state).
pub const MAX_PATTERNS: usize = 64;

/// One pattern of a filter.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Pattern {
    /// `*`: every event.
    All,
    /// An exact event type.
    Exact(Box<str>),
    /// `prefix.*`, stored as `prefix.` (with the dot).
    Prefix(Box<str>),
}

impl Pattern {
    /// Parses one pattern.
    pub fn parse(s: &str) -> Result<Self, FilterError> {
        if s == "*" {
            return Ok(Pattern::All);
        }
        let (body, prefix) = match s.strip_suffix(".*") {
            Some(body) => (body, true),
            None => (s, false),
        };
        if body.is_empty() {
            return Err(FilterError::Empty);
        }
        if body.len() > MAX_TYPE_LEN {
            return Err(FilterError::TooLong(s.len()));
        }
        if let Some(c) = body.chars().find(|c| !is_type_char(*c)) {
            return Err(FilterError::BadChar(
                s.chars().take(MAX_TYPE_LEN).collect(),
                c,
            ));
        }
        Ok(if prefix {
            Pattern::Prefix(format!("{body}.").into())
        } else {
            Pattern::Exact(body.into())
        })
    }

    /// Whether this pattern matches `event_type`.
    pub fn matches(&self, event_type: &str) -> bool {
        match self {
            Pattern::All => true,
            Pattern::Exact(t) => **t == *event_type,
            Pattern::Prefix(p) => event_type.starts_with(&**p),
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::All => f.write_str("*"),
            Pattern::Exact(t) => f.write_str(t),
            Pattern::Prefix(p) => write!(f, "{p}*"),
        }
    }
}

/// A subscription's set of patterns; an event is wanted if any pattern matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    repr: Repr,
}

/// How a filter holds its patterns. Most subscriptions have one, which is kept inline: every
/// subscriber holds its filter, and a one-pattern `Vec` is a second heap allocation per
/// connection. The variant follows the count (one pattern is always `One`), so the
/// derived equality compares patterns.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Repr {
    One(Pattern),
    /// None, or two or more (a boxed slice: no spare room, and 16 bytes, so the enum is
    /// no larger than a `Pattern`).
    Many(Box<[Pattern]>),
}

impl Default for Filter {
    fn default() -> Self {
        Self::all()
    }
}

impl Filter {
    /// The filter that wants everything.
    pub fn all() -> Self {
        Self {
            repr: Repr::One(Pattern::All),
        }
    }

    /// The filter that wants nothing (after unsubscribing from everything).
    pub fn none() -> Self {
        Self {
            repr: Repr::Many(Box::default()),
        }
    }

    /// Parses a comma-separated list such as `workflow.*,agent.started`.
    pub fn parse_list(list: &str) -> Result<Self, FilterError> {
        Self::from_patterns(list.split(','))
    }

    /// Builds a filter from pattern strings, ignoring duplicates.
    pub fn from_patterns<'a>(
        items: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, FilterError> {
        let mut filter = Self::none();
        for item in items {
            filter.add(Pattern::parse(item.trim())?)?;
        }
        if filter.patterns().is_empty() {
            return Err(FilterError::Empty);
        }
        Ok(filter)
    }

    /// Adds a pattern (no effect if present).
    pub fn add(&mut self, pattern: Pattern) -> Result<(), FilterError> {
        if self.patterns().contains(&pattern) {
            return Ok(());
        }
        if self.patterns().len() == MAX_PATTERNS {
            return Err(FilterError::TooMany);
        }
        self.repr = match std::mem::replace(&mut self.repr, Repr::Many(Box::default())) {
            Repr::Many(v) if v.is_empty() => Repr::One(pattern),
            Repr::One(first) => Repr::Many(Box::new([first, pattern])),
            Repr::Many(v) => {
                let mut v = v.into_vec();
                v.push(pattern);
                Repr::Many(v.into_boxed_slice())
            }
        };
        Ok(())
    }

    /// Removes a pattern; returns whether it was there.
    pub fn remove(&mut self, pattern: &Pattern) -> bool {
        let before = self.patterns().len();
        self.repr = match std::mem::replace(&mut self.repr, Repr::Many(Box::default())) {
            Repr::One(p) if p == *pattern => Repr::Many(Box::default()),
            Repr::Many(v) => {
                let mut v = v.into_vec();
                v.retain(|p| p != pattern);
                match v.pop() {
                    Some(last) if v.is_empty() => Repr::One(last),
                    Some(last) => {
                        v.push(last);
                        Repr::Many(v.into_boxed_slice())
                    }
                    None => Repr::Many(Box::default()),
                }
            }
            one => one,
        };
        before != self.patterns().len()
    }

    /// The patterns.
    pub fn patterns(&self) -> &[Pattern] {
        match &self.repr {
            Repr::One(p) => std::slice::from_ref(p),
            Repr::Many(v) => v,
        }
    }

    /// Whether any pattern matches `event_type`.
    pub fn matches(&self, event_type: &str) -> bool {
        self.patterns().iter().any(|p| p.matches(event_type))
    }
}

/// Why a `types` list was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// An empty pattern (`types=` or `a,,b` or `.*`).
    #[error("empty type pattern: give `*`, an exact type such as `agent.started`, or a prefix such as `workflow.*`")]
    Empty,
    /// Too long.
    #[error("type pattern is {0} bytes; the limit is 128")]
    TooLong(usize),
    /// A character outside the type alphabet (including `*` other than a final `.*`).
    #[error("type pattern {0:?} contains {1:?}; use letters, digits and . _ - :, optionally ending in .*")]
    BadChar(String, char),
    /// Too many patterns.
    #[error("more than 64 type patterns in one subscription")]
    TooMany,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_is_no_larger_than_a_pattern_and_compares_by_patterns() {
        assert_eq!(
            std::mem::size_of::<Filter>(),
            std::mem::size_of::<Pattern>()
        );
        let mut f = Filter::parse_list("a,b").unwrap();
        assert!(f.remove(&Pattern::parse("b").unwrap()));
        assert_eq!(f, Filter::parse_list("a").unwrap(), "one left: held inline");
        assert!(!f.remove(&Pattern::parse("b").unwrap()));
        assert!(f.remove(&Pattern::parse("a").unwrap()));
        assert_eq!(f, Filter::none());
        f.add(Pattern::All).unwrap();
        assert_eq!(f, Filter::all());
        f.add(Pattern::parse("x.*").unwrap()).unwrap();
        assert_eq!(f.patterns().len(), 2);
        assert!(f.matches("x.y") && f.matches("anything"));
    }

    #[test]
    fn patterns_match_as_documented() {
        let f = Filter::parse_list("workflow.*,agent.started").unwrap();
        assert!(f.matches("workflow.step"));
        assert!(f.matches("workflow.step.completed"));
        assert!(!f.matches("workflow"));
        assert!(!f.matches("workflowx.step"));
        assert!(f.matches("agent.started"));
        assert!(!f.matches("agent.started.late"));
        assert!(!f.matches("agent"));
        assert!(Filter::parse_list("*").unwrap().matches("anything"));
        assert!(!Filter::none().matches("anything"));
    }

    #[test]
    fn bad_patterns_are_refused_with_reasons() {
        assert_eq!(Filter::parse_list(""), Err(FilterError::Empty));
        assert_eq!(Filter::parse_list("a,,b"), Err(FilterError::Empty));
        assert_eq!(Filter::parse_list(".*"), Err(FilterError::Empty));
        assert!(matches!(
            Filter::parse_list("a*"),
            Err(FilterError::BadChar(..))
        ));
        assert!(matches!(
            Filter::parse_list("a.*.b"),
            Err(FilterError::BadChar(..))
        ));
        assert!(matches!(
            Filter::parse_list("a b"),
            Err(FilterError::BadChar(..))
        ));
        let many: Vec<String> = (0..65).map(|i| format!("t{i}")).collect();
        assert_eq!(
            Filter::parse_list(&many.join(",")),
            Err(FilterError::TooMany)
        );
        assert_eq!(Filter::parse_list("a,a").unwrap().patterns().len(), 1);
    }

    #[test]
    fn display_round_trips() {
        for s in ["*", "a.b", "a.*"] {
            assert_eq!(Pattern::parse(s).unwrap().to_string(), s);
        }
    }
}
