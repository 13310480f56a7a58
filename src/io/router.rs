//! `Router`: one I/O thread's index from event types to its subscribed connections.
//!
//! Exact types are a hash lookup, `*` subscribers a list, and prefixes a short list scanned
//! per event. A connection whose several patterns all match is listed several times; the
//! caller skips repeats (each connection remembers the last id routed to it).

use std::collections::HashMap;

use crate::event::{Filter, Pattern};

/// Type pattern → connection keys, for one thread's connections.
#[derive(Default, Debug)]
pub struct Router {
    all: Vec<usize>,
    exact: HashMap<Box<str>, Vec<usize>>,
    prefixes: Vec<(Box<str>, Vec<usize>)>,
}

fn remove_key(list: &mut Vec<usize>, key: usize) {
    if let Some(i) = list.iter().position(|k| *k == key) {
        list.swap_remove(i);
    }
}

impl Router {
    /// Adds connection `key` under every pattern of `filter`.
    pub fn add(&mut self, key: usize, filter: &Filter) {
        for p in filter.patterns() {
            match p {
                Pattern::All => self.all.push(key),
                Pattern::Exact(t) => self.exact.entry(t.clone()).or_default().push(key),
                Pattern::Prefix(prefix) => {
                    match self.prefixes.iter_mut().find(|(p, _)| p == prefix) {
                        Some((_, keys)) => keys.push(key),
                        None => self.prefixes.push((prefix.clone(), vec![key])),
                    }
                }
            }
        }
    }

    /// Removes connection `key` from every pattern of `filter` (the filter it was added with).
    pub fn remove(&mut self, key: usize, filter: &Filter) {
        for p in filter.patterns() {
            match p {
                Pattern::All => remove_key(&mut self.all, key),
                Pattern::Exact(t) => {
                    if let Some(keys) = self.exact.get_mut(t) {
                        remove_key(keys, key);
                        if keys.is_empty() {
                            self.exact.remove(t);
                        }
                    }
                }
                Pattern::Prefix(prefix) => {
                    if let Some(i) = self.prefixes.iter().position(|(p, _)| p == prefix) {
                        remove_key(&mut self.prefixes[i].1, key);
                        if self.prefixes[i].1.is_empty() {
                            self.prefixes.swap_remove(i);
                        }
                    }
                }
            }
        }
    }

    /// Calls `f` with every connection subscribed to `event_type` (possibly repeated).
    pub fn for_each_match(&self, event_type: &str, mut f: impl FnMut(usize)) {
        self.all.iter().for_each(|k| f(*k));
        if let Some(keys) = self.exact.get(event_type) {
            keys.iter().for_each(|k| f(*k));
        }
        self.for_each_prefix_match(event_type, f);
    }

    /// The connections whose filters have `*` or exactly `event_type` (with duplicates
    /// when a filter has both): the lists a [run](crate::run) of that type is offered to.
    pub fn all_and_exact<'a>(&'a self, event_type: &str) -> impl Iterator<Item = usize> + 'a {
        let exact = self.exact.get(event_type).map_or(&[][..], |k| &k[..]);
        self.all.iter().chain(exact).copied()
    }

    /// [`for_each_match`](Self::for_each_match) over the prefix patterns alone.
    pub fn for_each_prefix_match(&self, event_type: &str, mut f: impl FnMut(usize)) {
        for (prefix, keys) in &self.prefixes {
            if event_type.starts_with(&**prefix) {
                keys.iter().for_each(|k| f(*k));
            }
        }
    }

    /// Whether no connection is subscribed to anything.
    pub fn is_empty(&self) -> bool {
        self.all.is_empty() && self.exact.is_empty() && self.prefixes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(r: &Router, t: &str) -> Vec<usize> {
        let mut v = Vec::new();
        r.for_each_match(t, |k| v.push(k));
        v.sort_unstable();
        v.dedup();
        v
    }

    #[test]
    fn routes_like_the_filters_match() {
        let filters = [
            Filter::all(),
            Filter::parse_list("a.b").unwrap(),
            Filter::parse_list("a.*,a.b").unwrap(),
            Filter::parse_list("c.*").unwrap(),
        ];
        let mut r = Router::default();
        for (k, f) in filters.iter().enumerate() {
            r.add(k, f);
        }
        for t in ["a.b", "a.c", "c.d.e", "x", "a"] {
            let want: Vec<usize> = (0..filters.len())
                .filter(|k| filters[*k].matches(t))
                .collect();
            assert_eq!(matches(&r, t), want, "{t}");
        }
        for (k, f) in filters.iter().enumerate() {
            r.remove(k, f);
        }
        assert!(r.is_empty());
    }
}
