//! The dead-letter queue and in-process subscribers: failures, timeouts, panics and full
//! backlogs land in the DLQ with their reasons; the HTTP endpoints; retry semantics.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use firehose::{Event, Filter};
use serde_json::{json, Value};

use crate::support::*;

fn publish_n(addr: std::net::SocketAddr, ty: &str, n: u64) -> Vec<u64> {
    let events: Vec<Value> = (0..n)
        .map(|i| json!({"event_type": ty, "source": "test", "payload": {"n": i}}))
        .collect();
    let (status, body) = http_json(addr, "POST", "/publish", &Value::from(events).to_string());
    assert_eq!(status, 200, "{body}");
    body["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect()
}

fn payload_n(d: &firehose::sink::Delivery<'_>) -> u64 {
    let v: Value = serde_json::from_slice(&d.event.json()).unwrap();
    v["payload"]["n"].as_u64().unwrap()
}

fn entries(addr: std::net::SocketAddr) -> Vec<Value> {
    let (status, body) = http_json(addr, "GET", "/dlq/entries?limit=1000", "");
    assert_eq!(status, 200, "{body}");
    body["entries"].as_array().unwrap().clone()
}

fn depth(addr: std::net::SocketAddr) -> u64 {
    http_json(addr, "GET", "/dlq/summary", "").1["depth"]
        .as_u64()
        .unwrap()
}

/// (subscriber, error_message) → event ids, from the DLQ over HTTP.
fn by_reason(entries: &[Value]) -> BTreeMap<(String, String), Vec<u64>> {
    let mut m: BTreeMap<(String, String), Vec<u64>> = BTreeMap::new();
    for e in entries {
        let key = (
            e["subscriber"].as_str().unwrap().to_owned(),
            e["error_message"].as_str().unwrap().to_owned(),
        );
        m.entry(key)
            .or_default()
            .push(e["event"]["id"].as_u64().unwrap());
    }
    for ids in m.values_mut() {
        ids.sort_unstable();
    }
    m
}

#[test]
fn failing_slow_and_panicking_subscribers_land_in_the_dlq_with_their_reasons() {
    // Generous: a panic's backtrace (RUST_BACKTRACE=1) is slow to print in debug builds.
    let server = server(|c| c.subscriber_timeout = Duration::from_millis(1000));
    let addr = server.local_addr();
    let bus = server.bus();
    let all = Filter::parse_list("job.*").unwrap();
    bus.subscribe("failing", all.clone(), |d| {
        if payload_n(d) % 2 == 1 {
            Err(format!("odd n {}", payload_n(d)))
        } else {
            Ok(())
        }
    })
    .unwrap();
    bus.subscribe("slow", all.clone(), |d| {
        if payload_n(d) == 2 {
            std::thread::sleep(Duration::from_millis(1500));
        }
        Ok::<(), String>(())
    })
    .unwrap();
    bus.subscribe("panicky", all.clone(), |d| {
        assert!(payload_n(d) != 4, "cannot handle four");
        Ok::<(), String>(())
    })
    .unwrap();
    let healthy = counting_subscriber(bus, "healthy", all.clone());
    assert!(matches!(
        bus.subscribe("healthy", all, |_| Ok::<(), String>(())),
        Err(firehose::sink::SubscribeError::Duplicate(_))
    ));
    // Not matching the filters: nobody sees these.
    publish_n(addr, "other.thing", 3);
    let ids = publish_n(addr, "job.done", 6);
    assert!(
        eventually(Duration::from_secs(10), || depth(addr) == 5),
        "depth {}",
        depth(addr)
    );
    assert!(eventually(Duration::from_secs(5), || healthy
        .load(Ordering::Relaxed)
        == 6));
    let entries = entries(addr);
    let got = by_reason(&entries);
    let want: BTreeMap<(String, String), Vec<u64>> = [
        (("failing", "odd n 1"), vec![ids[1]]),
        (("failing", "odd n 3"), vec![ids[3]]),
        (("failing", "odd n 5"), vec![ids[5]]),
        (("slow", "timeout after 1000 ms"), vec![ids[2]]),
        (
            ("panicky", "the handler panicked: cannot handle four"),
            vec![ids[4]],
        ),
    ]
    .into_iter()
    .map(|((s, e), v)| ((s.to_owned(), e.to_owned()), v))
    .collect();
    assert_eq!(got, want);
    for e in &entries {
        assert_eq!(e["retry_count"], 0);
        assert_eq!(e["event"]["event_type"], "job.done");
        let ts = e["timestamp"].as_str().unwrap();
        assert!(humantime::parse_rfc3339(ts).is_ok(), "{ts}");
    }
    // Newest first.
    let order: Vec<u64> = entries
        .iter()
        .map(|e| e["entry_id"].as_u64().unwrap())
        .collect();
    assert!(order.windows(2).all(|w| w[0] > w[1]), "{order:?}");
    let stats: BTreeMap<String, _> = bus
        .subscribers()
        .into_iter()
        .map(|s| (s.name.clone(), s))
        .collect();
    assert_eq!(
        (stats["failing"].delivered, stats["failing"].failed),
        (3, 3)
    );
    assert_eq!(stats["slow"].timed_out, 1);
    // The slow call finished after its timeout: it is not counted twice.
    assert!(eventually(Duration::from_secs(5), || bus
        .subscribers()
        .iter()
        .all(|s| s.backlog == 0)));
    assert_eq!(depth(addr), 5);
    let (_, health) = http_json(addr, "GET", "/health", "");
    assert_eq!(health["dlq"]["depth"], 5);
    assert_eq!(health["subscribers"].as_array().unwrap().len(), 4);
}

#[test]
fn dlq_endpoints_answer_shapes_and_errors() {
    let server = server(|_| {});
    let addr = server.local_addr();
    let (status, s) = http_json(addr, "GET", "/dlq/summary", "");
    assert_eq!(status, 200);
    assert_eq!(
        (
            s["depth"].clone(),
            s["oldest_ts"].clone(),
            s["newest_ts"].clone()
        ),
        (json!(0), Value::Null, Value::Null)
    );
    let (status, e) = http_json(addr, "GET", "/dlq/entries", "");
    assert_eq!((status, e["entries"].clone()), (200, json!([])));
    for bad in [
        "limit=0",
        "limit=abc",
        "limit=-3",
        "limit=99999999",
        "limit=",
    ] {
        let (status, body) = http_json(addr, "GET", &format!("/dlq/entries?{bad}"), "");
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body["error"].as_str().unwrap().contains("limit"), "{body}");
    }
    let (status, r) = http_json(addr, "POST", "/dlq/retry", "");
    assert_eq!(
        (status, r),
        (200, json!({"retried": 0, "requeued": 0, "not_retried": {}}))
    );
    let (status, head, _) = http_raw(
        addr,
        b"GET /dlq/retry HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 405);
    assert!(head.contains("Allow: POST"), "{head}");
    let (status, _) = http_json(addr, "DELETE", "/dlq/summary", "");
    assert_eq!(status, 405);

    // With entries: summary timestamps, limit honoured.
    refusing_subscriber(server.bus(), "nope");
    publish_n(addr, "a.b", 3);
    assert!(
        eventually(Duration::from_secs(10), || depth(addr) == 3),
        "{:?} {:?}",
        http_json(addr, "GET", "/dlq/summary", ""),
        server.bus().subscribers()
    );
    let (_, s) = http_json(addr, "GET", "/dlq/summary", "");
    let oldest = humantime::parse_rfc3339(s["oldest_ts"].as_str().unwrap()).unwrap();
    let newest = humantime::parse_rfc3339(s["newest_ts"].as_str().unwrap()).unwrap();
    assert!(oldest <= newest);
    let (_, e) = http_json(addr, "GET", "/dlq/entries?limit=2", "");
    assert_eq!(e["entries"].as_array().unwrap().len(), 2);
    assert_eq!(e["depth"], 3);

    // A retry with options it does not have is refused, not taken as "retry everything".
    for (path, body) in [
        ("/dlq/retry", r#"{"entry_ids":[1]}"#),
        ("/dlq/retry?subscriber=nope", ""),
    ] {
        let (status, r) = http_json(addr, "POST", path, body);
        assert_eq!(status, 400, "{path} {body}: {r}");
        assert!(
            r["error"].as_str().unwrap().contains("nothing was retried"),
            "{r}"
        );
    }
    let (_, s) = http_json(addr, "GET", "/dlq/summary", "");
    assert_eq!(
        (s["depth"].clone(), s["retried"].clone()),
        (json!(3), json!(0))
    );
}

#[test]
fn retry_redelivers_only_to_the_failed_subscriber_and_counts_retries() {
    let server = server(|_| {});
    let addr = server.local_addr();
    let bus = server.bus();
    let (mut ws, _) = subscribe(addr, "?types=order.*");
    // Fails on first delivery, succeeds on any retry.
    let flaky_seen = Arc::new(Mutex::new(Vec::new()));
    let f = Arc::clone(&flaky_seen);
    let placed = Filter::parse_list("order.placed").unwrap();
    bus.subscribe("flaky", placed.clone(), move |d| {
        f.lock().unwrap().push((d.event.id(), d.retry_count));
        if d.retry_count == 0 {
            Err("first try fails")
        } else {
            Ok(())
        }
    })
    .unwrap();
    bus.subscribe("broken", placed, |_| Err("always fails"))
        .unwrap();
    let healthy = Arc::new(Mutex::new(Vec::new()));
    let h = Arc::clone(&healthy);
    bus.subscribe("healthy", Filter::all(), move |d| {
        h.lock().unwrap().push(d.event.id());
        Ok::<(), String>(())
    })
    .unwrap();
    let ids = publish_n(addr, "order.placed", 3);
    assert!(eventually(Duration::from_secs(10), || depth(addr) == 6));
    let mut notices = Vec::new();
    for id in &ids {
        assert_eq!(next_event(&mut ws, &mut notices)["id"], *id);
    }

    let (status, r) = http_json(addr, "POST", "/dlq/retry", "");
    assert_eq!(
        (status, r),
        (200, json!({"retried": 6, "requeued": 0, "not_retried": {}}))
    );
    // flaky succeeds on retry; broken fails again and comes back with retry_count 1.
    // (Each has its own worker: wait for both to finish their retries.)
    assert!(eventually(Duration::from_secs(10), || {
        let e = entries(addr);
        e.len() == 3
            && e.iter().all(|e| e["retry_count"] == 1)
            && flaky_seen.lock().unwrap().len() == 2 * ids.len()
    }));
    let e = entries(addr);
    assert!(e
        .iter()
        .all(|e| e["subscriber"] == "broken" && e["error_message"] == "always fails"));
    let mut retried: Vec<u64> = e
        .iter()
        .map(|e| e["event"]["id"].as_u64().unwrap())
        .collect();
    retried.sort_unstable();
    assert_eq!(retried, ids);
    let flaky = flaky_seen.lock().unwrap().clone();
    assert_eq!(
        flaky,
        ids.iter()
            .map(|&i| (i, 0))
            .chain(ids.iter().map(|&i| (i, 1)))
            .collect::<Vec<_>>()
    );

    // A second retry: retry_count 2. Healthy subscribers never see a duplicate.
    let (_, r) = http_json(addr, "POST", "/dlq/retry", "");
    assert_eq!(r["retried"], 3);
    assert!(eventually(Duration::from_secs(10), || {
        let e = entries(addr);
        e.len() == 3 && e.iter().all(|e| e["retry_count"] == 2)
    }));
    assert_eq!(*healthy.lock().unwrap(), ids);
    // The WebSocket subscriber gets nothing more: a marker event is the very next thing.
    let marker = bus.publish(Event::new("order.marker", "test")).unwrap();
    assert_eq!(next_event(&mut ws, &mut notices)["id"], marker);
    assert!(notices.is_empty(), "{notices:?}");

    // An entry whose subscriber is gone was not retried: it stays as it was, and the
    // answer says why.
    assert!(bus.unsubscribe("broken"));
    let (_, r) = http_json(addr, "POST", "/dlq/retry", "");
    assert_eq!(
        r,
        json!({"retried": 0, "requeued": 3,
               "not_retried": {"subscriber \"broken\" is not registered": 3}})
    );
    let e = entries(addr);
    assert_eq!(e.len(), 3);
    assert!(e
        .iter()
        .all(|e| e["retry_count"] == 2 && e["error_message"] == "always fails"));
}

#[test]
fn a_stuck_subscriber_overflows_into_the_dlq_and_holds_up_nobody() {
    let server = server(|c| {
        c.queue_capacity = 4;
        c.subscriber_timeout = Duration::from_millis(50);
    });
    let addr = server.local_addr();
    let bus = server.bus();
    let (release, stuck) = mpsc::channel::<()>();
    let stuck = Mutex::new(stuck);
    let calls = Arc::new(AtomicU64::new(0));
    let entered = Arc::clone(&calls);
    bus.subscribe("stuck", Filter::all(), move |_| {
        entered.fetch_add(1, Ordering::Relaxed);
        let _ = stuck.lock().unwrap().recv();
        Ok::<(), String>(())
    })
    .unwrap();
    let healthy = counting_subscriber(bus, "healthy", Filter::all());
    let (mut ws, _) = subscribe(addr, "");
    // One at a time, each after the healthy subscriber took the previous one (its queue
    // is as small as the stuck one's), so only the stuck subscriber's backlog grows.
    let mut ids = Vec::new();
    for n in 1..=10 {
        ids.push(bus.publish(Event::new("x.y", "test")).unwrap());
        assert!(eventually(Duration::from_secs(10), || healthy
            .load(Ordering::Relaxed)
            == n));
        if n == 1 {
            // The stuck call holds the first event before the next is published; on a
            // loaded machine its thread may start late, and the first event would queue.
            assert!(eventually(Duration::from_secs(10), || calls
                .load(Ordering::Relaxed)
                == 1));
        }
    }
    let (first, rest) = (ids[0], ids[1..].to_vec());
    let mut notices = Vec::new();
    for id in std::iter::once(first).chain(rest.iter().copied()) {
        assert_eq!(next_event(&mut ws, &mut notices)["id"], id);
    }
    // First: taken by the stuck call (timed out). Next 4: queued. Last 5: backlog full.
    assert!(eventually(Duration::from_secs(5), || depth(addr) == 6));
    let got = by_reason(&entries(addr));
    assert_eq!(
        got[&("stuck".into(), "timeout after 50 ms".into())],
        vec![first]
    );
    assert_eq!(
        got[&(
            "stuck".into(),
            "backlog full: 4 events already waiting for the handler".into()
        )],
        rest[4..].to_vec()
    );
    let stats = bus.subscribers();
    let s = stats.iter().find(|s| s.name == "stuck").unwrap();
    assert_eq!((s.timed_out, s.overflowed, s.backlog), (1, 5, 5));
    // A retry now cannot hand anything over: the entries stay as they were.
    let (_, r) = http_json(addr, "POST", "/dlq/retry", "");
    assert_eq!(
        r,
        json!({"retried": 0, "requeued": 6, "not_retried":
               {"backlog full: 4 events already waiting for the handler": 6}})
    );
    assert_eq!(by_reason(&entries(addr)), got);
    // Released, it works through its queue; those calls are quick and succeed.
    for _ in 0..5 {
        release.send(()).unwrap();
    }
    assert!(eventually(Duration::from_secs(5), || bus
        .subscribers()
        .iter()
        .find(|s| s.name == "stuck")
        .is_some_and(|s| s.delivered == 4 && s.backlog == 0)));
    assert_eq!(depth(addr), 6);
}

#[test]
fn dlq_bound_evicts_the_oldest_and_counts_them() {
    let server = server(|c| c.dlq_max_entries = 5);
    let addr = server.local_addr();
    refusing_subscriber(server.bus(), "nope");
    let ids = publish_n(addr, "a.b", 8);
    assert!(
        eventually(Duration::from_secs(10), || {
            let (_, s) = http_json(addr, "GET", "/dlq/summary", "");
            s["evicted"] == 3 && s["depth"] == 5
        }),
        "{:?} {:?}",
        http_json(addr, "GET", "/dlq/summary", ""),
        server.bus().subscribers()
    );
    let mut kept: Vec<u64> = entries(addr)
        .iter()
        .map(|e| e["event"]["id"].as_u64().unwrap())
        .collect();
    kept.sort_unstable();
    assert_eq!(kept, ids[3..].to_vec());
}
