//! Routing in runs (`src/run.rs`): under a burst of one event type, a subscriber that
//! takes whole runs and one that is given events one at a time (another policy, a prefix
//! or several patterns) each account for every event exactly once, in order.

use std::time::Duration;

use crate::support::*;
use firehose::Event;

#[test]
fn every_kind_of_subscriber_accounts_for_every_event_of_a_burst() {
    const EVENTS: u64 = 20_000;
    // Traced events end runs (they are routed alone): 5 % of them, so runs of every length.
    let bridge = server(|c| {
        c.queue_capacity = 300;
        c.trace_sample = 0.05;
    });
    let addr = bridge.local_addr();
    let queries = [
        "",                          // `*`, drop-newest: takes runs
        "?types=burst.step",         // one exact type: takes runs
        "?types=burst.*",            // a prefix: one at a time
        "?types=burst.step,burst.*", // two patterns: one at a time
        "?overflow=drop-oldest",     // another policy: one at a time
        "?types=burst.step&overflow=priority",
    ];
    let mut clients: Vec<_> = queries
        .iter()
        .map(|q| {
            let (ws, welcome) = subscribe(addr, q);
            (q, ws, welcome["last_id"].as_u64().unwrap() + 1)
        })
        .collect();
    // Nobody reads during the burst: every queue overflows, so runs are cut by full queues
    // too, and the notices must fall between the right frames.
    let ev = Event::new("burst.step", "test")
        .with_payload(&"x".repeat(100))
        .unwrap();
    for _ in 0..EVENTS {
        bridge.bus().publish(ev.clone()).unwrap();
    }
    let mut missed_total = 0;
    for (q, ws, first) in &mut clients {
        let (missed, _) = account_for_ids(ws, *first, EVENTS);
        assert!(missed > 0, "{q}: a queue of 300 overflowed");
        missed_total += missed;
    }
    assert!(
        eventually(Duration::from_secs(5), || bridge
            .engine()
            .snapshot()
            .dropped
            == missed_total),
        "every loss counted once: {} against {missed_total}",
        bridge.engine().snapshot().dropped
    );
}
