//! `/metrics` (read with a Prometheus text parser) and `/stats` agree with what clients
//! received, in a run whose counts are known exactly: N events to a reading client, a
//! stalled client whose drops it later accounts for id by id, and an in-process subscriber
//! that fails everything into the DLQ.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use firehose::Event;
use serde_json::Value;

use crate::support::*;

fn scrape(addr: SocketAddr) -> prometheus_parse::Scrape {
    let (status, head, body) = http_raw(
        addr,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200);
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    let text = String::from_utf8(body).unwrap();
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap()
}

/// metric name + sorted labels → value.
fn values(s: &prometheus_parse::Scrape) -> HashMap<String, f64> {
    s.samples
        .iter()
        .map(|x| {
            let mut labels: Vec<String> =
                x.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            labels.sort();
            let v = match x.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            };
            (format!("{}{{{}}}", x.metric, labels.join(",")), v)
        })
        .collect()
}

#[test]
fn metrics_and_stats_agree_with_what_clients_received() {
    const N: u64 = 400;
    let bridge = server(|c| c.queue_capacity = 10);
    let addr = bridge.local_addr();
    refusing_subscriber(bridge.bus(), "nope");
    let (mut stalled, _) = small_window_subscriber(addr, "");
    let (mut healthy, _) = subscribe(addr, "");
    let progress = Arc::new(AtomicU64::new(0));
    let seen = Arc::clone(&progress);
    let reader = thread::spawn(move || {
        let mut notices = Vec::new();
        for i in 1..=N {
            assert_eq!(next_event(&mut healthy, &mut notices)["id"], i);
            seen.store(i, Ordering::Release);
        }
        assert!(notices.is_empty(), "{notices:?}");
        healthy
    });
    let ev = Event::new("m.big", "test")
        .with_payload(&"x".repeat(20_000))
        .unwrap();
    publish_in_step(bridge.bus(), &ev, N, 5, &progress);
    let _healthy = reader.join().unwrap();
    let (missed, _) = account_for_ids(&mut stalled, 1, N);
    assert!(
        missed > 0,
        "the small window must overflow a 10-event queue"
    );
    let delivered = 2 * N - missed;
    assert!(eventually(Duration::from_secs(10), || {
        let s = bridge.engine().snapshot();
        s.delivered == delivered && bridge.bus().dlq().depth() == N as usize
    }));

    let scraped = scrape(addr);
    for family in [
        "firehose_events_published_total",
        "firehose_events_delivered_total",
        "firehose_events_dropped_total",
        "firehose_events_dlq_size",
        "firehose_ws_connected_clients",
    ] {
        assert!(scraped.docs.contains_key(family), "# HELP for {family}");
    }
    let v = values(&scraped);
    let want = [
        ("firehose_events_published_total{}", N as f64),
        ("firehose_events_delivered_total{}", delivered as f64),
        ("firehose_events_dropped_total{}", missed as f64),
        ("firehose_events_dlq_size{}", N as f64),
        ("firehose_events_dlq_enqueued_total{}", N as f64),
        ("firehose_ws_connected_clients{}", 2.0),
        (
            "firehose_subscriber_calls_total{outcome=ok,subscriber=nope}",
            0.0,
        ),
        ("firehose_events_dropped_by_lane_total{lane=bulk}", 0.0),
        ("firehose_ws_evicted_total{reason=write_stall}", 0.0),
        (
            "firehose_events_dropped_by_reason_total{reason=queue_full}",
            missed as f64,
        ),
        (
            "firehose_events_dropped_by_reason_total{reason=retention}",
            0.0,
        ),
        (
            "firehose_events_dropped_by_reason_total{reason=closed}",
            0.0,
        ),
        // The two upgrades; this scrape's own 200 is counted once it is queued.
        ("firehose_http_responses_total{code=101}", 2.0),
    ];
    for (key, value) in want {
        assert_eq!(v.get(key), Some(&value), "{key}: {v:?}");
    }
    assert!(
        v["firehose_bytes_out_total{}"] > (delivered * 20_000) as f64,
        "every delivered frame carries a 20 kB payload: {v:?}"
    );
    let again = values(&scrape(addr));
    assert_eq!(again["firehose_http_responses_total{code=200}"], 1.0);
    // Every event reached the DLQ from the failing subscriber: failed by its handler, or
    // refused by its (10-event) backlog.
    let calls = |outcome: &str| {
        v[&format!("firehose_subscriber_calls_total{{outcome={outcome},subscriber=nope}}")]
    };
    assert_eq!(calls("error") + calls("backlog_full"), N as f64);

    // The latency histogram (published by each I/O thread at its next tick) counts every
    // delivered event once, in non-decreasing cumulative buckets.
    assert!(
        eventually(Duration::from_secs(5), || {
            let s = scrape(addr);
            let buckets = s.samples.iter().find_map(|x| match &x.value {
                prometheus_parse::Value::Histogram(b)
                    if x.metric == "firehose_events_delivery_latency_ms" =>
                {
                    Some(b.clone())
                }
                _ => None,
            });
            let Some(b) = buckets else { return false };
            assert!(b
                .windows(2)
                .all(|w| w[0].count <= w[1].count && w[0].less_than < w[1].less_than));
            assert!(s.docs.contains_key("firehose_events_delivery_latency_ms"));
            b.last()
                .is_some_and(|last| last.less_than.is_infinite() && last.count == delivered as f64)
        }),
        "the latency histogram's +Inf bucket reaches {delivered}"
    );

    let (status, stats) = http_json(addr, "GET", "/stats", "");
    assert_eq!(stats["delivery_latency_ms"]["count"], delivered);
    assert!(stats["delivery_latency_ms"]["p99"].as_f64().unwrap() > 0.0);
    assert_eq!(status, 200);
    let t = &stats["totals"];
    assert_eq!(
        (
            t["published"].clone(),
            t["delivered"].clone(),
            t["dropped"].clone(),
            t["dlq_size"].clone()
        ),
        (
            Value::from(N),
            Value::from(delivered),
            Value::from(missed),
            Value::from(N)
        )
    );
    // The per-second series add up to the totals once a sample follows the last event.
    let mut last_sums = None;
    assert!(
        eventually(Duration::from_secs(5), || {
            let (_, s) = http_json(addr, "GET", "/stats", "");
            let sum = |k: &str| -> u64 {
                s["series"][k]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_u64().unwrap())
                    .sum()
            };
            let sums = (sum("published"), sum("delivered"), sum("dropped"));
            last_sums = Some(sums);
            sums == (N, delivered, missed)
        }),
        "series sums {last_sums:?}, totals {:?}",
        (N, delivered, missed)
    );
}
