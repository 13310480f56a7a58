//! Fan-out: many clients, ordering, and isolation from a client that never reads.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use serde_json::json;

use crate::support::*;
use firehose::Event;

#[test]
fn hundred_clients_each_receive_every_event_in_increasing_id_order() {
    const CLIENTS: usize = 100;
    const EVENTS: u64 = 1_000;
    let bridge = server(|_| {});
    let addr = bridge.local_addr();
    let clients: Vec<_> = (0..CLIENTS).map(|_| subscribe(addr, "").0).collect();
    let readers: Vec<_> = clients
        .into_iter()
        .map(|mut ws| {
            thread::spawn(move || {
                let mut ids = Vec::with_capacity(EVENTS as usize);
                let mut notices = Vec::new();
                while ids.len() < EVENTS as usize {
                    ids.push(next_event(&mut ws, &mut notices)["id"].as_u64().unwrap());
                }
                (ids, notices)
            })
        })
        .collect();
    let bus = bridge.bus().clone();
    let publisher = thread::spawn(move || {
        let ev = Event::new("load.tick", "test")
            .with_payload(&json!({"pad": "x".repeat(100)}))
            .unwrap();
        (0..EVENTS)
            .map(|_| bus.publish(ev.clone()).unwrap())
            .collect::<Vec<_>>()
    });
    let published = publisher.join().unwrap();
    for r in readers {
        let (ids, notices) = r.join().unwrap();
        assert!(notices.is_empty(), "no drops expected: {notices:?}");
        assert_eq!(ids, published, "every event, in id order");
    }
    let snap = bridge.engine().snapshot();
    assert_eq!(snap.published, EVENTS);
    assert!(eventually(Duration::from_secs(5), || bridge
        .engine()
        .snapshot()
        .delivered
        == EVENTS * CLIENTS as u64));
    assert_eq!(snap.dropped, 0);
}

#[test]
fn a_client_that_never_reads_does_not_hold_back_the_others_and_learns_what_it_missed() {
    const EVENTS: u64 = 20_000;
    let bridge = server(|c| c.queue_capacity = 100);
    let addr = bridge.local_addr();
    let (mut stalled, _) = subscribe(addr, "");
    let (mut healthy, _) = subscribe(addr, "");
    // The healthy client keeps up; the publisher never runs more than a batch ahead of it,
    // so any drop it saw would be a fault, while the stalled client's queue must overflow.
    let progress = Arc::new(AtomicU64::new(0));
    let seen = Arc::clone(&progress);
    let reader = thread::spawn(move || {
        let mut ids = HashSet::new();
        let mut notices = Vec::new();
        let mut last = 0;
        while ids.len() < EVENTS as usize {
            let id = next_event(&mut healthy, &mut notices)["id"]
                .as_u64()
                .unwrap();
            assert!(id > last, "ids strictly increase");
            last = id;
            ids.insert(id);
            seen.store(ids.len() as u64, Ordering::Release);
        }
        (ids.len(), notices)
    });
    let ev = Event::new("load.big", "test")
        .with_payload(&"x".repeat(1000))
        .unwrap();
    publish_in_step(bridge.bus(), &ev, EVENTS, 50, &progress);
    let (count, notices) = reader.join().unwrap();
    assert_eq!(count, EVENTS as usize, "the healthy client got everything");
    assert!(notices.is_empty(), "{notices:?}");
    assert!(
        eventually(Duration::from_secs(5), || bridge
            .engine()
            .snapshot()
            .dropped
            > 0),
        "the stalled client's drops are counted"
    );

    // Now the stalled client reads. Every id is either received or inside exactly one
    // `dropped` notice (one per overflow episode; the kernel may open room mid-run, which
    // ends an episode), and each notice's count matches its range.
    let (missed, last_received) = account_for_ids(&mut stalled, 1, EVENTS);
    assert!(missed > 0);
    assert!(
        last_received < EVENTS,
        "drop-newest: the newest events were the ones dropped"
    );
    assert_eq!(bridge.engine().snapshot().dropped, missed);
}

#[test]
fn counters_follow_connections() {
    let bridge = server(|_| {});
    let addr = bridge.local_addr();
    let (a, _) = subscribe(addr, "");
    let (b, _) = subscribe(addr, "");
    assert!(eventually(Duration::from_secs(5), || bridge
        .engine()
        .snapshot()
        .ws_connected_clients
        == 2));
    drop(a);
    drop(b);
    assert!(eventually(Duration::from_secs(5), || {
        let s = bridge.engine().snapshot();
        s.ws_connected_clients == 0 && s.connections == 0
    }));
}

#[test]
fn an_io_thread_lapped_by_the_log_reports_every_lost_id() {
    // A 2-event log and a publisher in a tight loop: the I/O thread falls behind the
    // log's retention, and what it could not route must reach the client as `dropped`.
    const EVENTS: u64 = 20_000;
    let bridge = server(|c| {
        c.retention_events = 2;
        c.io_threads = 1;
    });
    let (mut ws, welcome) = subscribe(bridge.local_addr(), "");
    let start = welcome["last_id"].as_u64().unwrap() + 1;
    let bus = bridge.bus().clone();
    let publisher = thread::spawn(move || {
        let ev = Event::new("lap.tick", "test");
        for _ in 0..EVENTS {
            bus.publish(ev.clone()).unwrap();
        }
    });
    publisher.join().unwrap();
    account_for_ids(&mut ws, start, EVENTS);
}
