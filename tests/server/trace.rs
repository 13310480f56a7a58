//! Spans: a client takes the `trace_id` it received and finds the server's span tree in
//! the JSON exporter's file and at `/spans/recent`.

use std::time::Duration;

use firehose::trace::TraceExporter;
use firehose::{Builder, Config, Event, Filter};
use serde_json::Value;

use crate::support::*;

/// A fresh path under the temp directory, unique to this process and `name`.
fn temp_file(name: &str) -> std::path::PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    std::env::temp_dir().join(format!("firehose-{}-{nanos}-{name}", std::process::id()))
}

fn spans_in(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is one JSON object"))
        .collect()
}

fn of_trace<'a>(spans: &'a [Value], trace: &str, name: &str) -> Vec<&'a Value> {
    spans
        .iter()
        .filter(|s| s["trace_id"] == trace && s["name"] == name)
        .collect()
}

#[test]
fn a_clients_trace_id_finds_the_server_span_tree() {
    let file = temp_file("spans.jsonl");
    let bridge = server(|c| {
        c.trace_sample = 1.0;
        c.trace_exporter = TraceExporter::Json(file.clone());
    });
    let addr = bridge.local_addr();
    let calls = counting_subscriber(bridge.bus(), "audit", Filter::all());
    let (mut ws, _) = subscribe(addr, "");
    let (status, body) = http_json(
        addr,
        "POST",
        "/publish",
        r#"{"event_type":"order.placed","source":"shop","payload":{"n":1}}"#,
    );
    assert_eq!(status, 200, "{body}");
    let got = next_event(&mut ws, &mut Vec::new());
    let trace = got["trace_id"].as_str().unwrap().to_owned();
    let id = got["id"].as_u64().unwrap();
    assert!(eventually(Duration::from_secs(5), || calls
        .load(std::sync::atomic::Ordering::Acquire)
        == 1));

    let mut spans = Vec::new();
    assert!(
        eventually(Duration::from_secs(10), || {
            spans = spans_in(&file);
            ["event.publish", "ws.write", "subscriber.invoke"]
                .iter()
                .all(|n| of_trace(&spans, &trace, n).len() == 1)
        }),
        "spans of {trace}: {spans:#?}"
    );
    let publish = of_trace(&spans, &trace, "event.publish")[0];
    let a = &publish["attributes"];
    assert_eq!(a["event_id"], id);
    assert_eq!(a["event_type"], "order.placed");
    assert_eq!(a["source"], "shop");
    assert_eq!(
        a["subscriber_count"], 2,
        "one WebSocket client, one in-process"
    );
    assert_eq!(publish["parent_span_id"], Value::Null);
    let root = &publish["span_id"];
    let write = of_trace(&spans, &trace, "ws.write")[0];
    assert_eq!(&write["parent_span_id"], root);
    assert_eq!(write["attributes"]["event_id"], id);
    assert!(write["attributes"]["events"].as_u64().unwrap() >= 1);
    assert!(write["attributes"]["bytes"].as_u64().unwrap() > 0);
    let invoke = of_trace(&spans, &trace, "subscriber.invoke")[0];
    assert_eq!(&invoke["parent_span_id"], root);
    assert_eq!(invoke["attributes"]["subscriber_id"], "audit");
    assert_eq!(invoke["attributes"]["status"], "ok");
    for s in [publish, write, invoke] {
        let (start, end) = (
            s["start_unix_nano"].as_u64().unwrap(),
            s["end_unix_nano"].as_u64().unwrap(),
        );
        assert!(end >= start && start > 1_700_000_000_000_000_000, "{s}");
    }

    let (status, recent) = http_json(addr, "GET", &format!("/spans/recent?trace_id={trace}"), "");
    assert_eq!(status, 200);
    let names: Vec<&str> = recent["spans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 3, "{recent}");
    for n in ["event.publish", "ws.write", "subscriber.invoke"] {
        assert!(names.contains(&n), "{names:?}");
    }
    let (status, err) = http_json(addr, "GET", "/spans/recent?limit=0", "");
    assert_eq!(status, 400);
    assert!(err["error"].as_str().unwrap().contains("limit"), "{err}");
}

#[test]
fn sampling_keeps_whole_traces_or_none() {
    let file = temp_file("spans.jsonl");
    let bridge = server(|c| {
        c.trace_sample = 0.5;
        c.trace_exporter = TraceExporter::Json(file.clone());
    });
    let (mut ws, _) = subscribe(bridge.local_addr(), "");
    const N: u64 = 200;
    for i in 0..N {
        bridge
            .bus()
            .publish(Event::new("s.x", "test").with_payload(&i).unwrap())
            .unwrap();
    }
    let traces: Vec<String> = (0..N)
        .map(|_| {
            next_event(&mut ws, &mut Vec::new())["trace_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    // Give the I/O thread's write spans time to be exported, then stop (a final drain).
    std::thread::sleep(Duration::from_millis(300));
    drop(bridge);
    let spans = spans_in(&file);
    let mut kept = 0;
    for t in &traces {
        let p = of_trace(&spans, t, "event.publish").len();
        let w = of_trace(&spans, t, "ws.write").len();
        assert!(p <= 1);
        if p == 1 {
            kept += 1;
        }
        // A write span exists only for a sampled trace (a write may carry several
        // events; it names the first sampled one).
        assert!(w == 0 || p == 1, "{t}: write span without its publish span");
    }
    assert!((50..150).contains(&kept), "{kept} of {N} traces at 0.5");
}

#[test]
fn an_unusable_exporter_stops_the_start_with_a_clear_error() {
    let config = Config {
        port: 0,
        io_threads: 1,
        pin_threads: false,
        trace_exporter: TraceExporter::Json("/nonexistent-dir/spans.jsonl".into()),
        ..Config::default()
    };
    let err = Builder::default()
        .config(config.clone())
        .start()
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("/nonexistent-dir/spans.jsonl"), "{err}");
    // Without the `otlp` feature any otlp: URL is refused; with it, an https:// one.
    let otlp = Config {
        trace_exporter: "otlp:https://127.0.0.1:4318/v1/traces".parse().unwrap(),
        ..config
    };
    let err = Builder::default()
        .config(otlp)
        .start()
        .err()
        .unwrap()
        .to_string();
    let want = if cfg!(feature = "otlp") {
        "only http:// is supported"
    } else {
        "not available in this build"
    };
    assert!(err.contains(want), "{err}");
}
