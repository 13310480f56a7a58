//! Publishing by each of the three paths, and what subscribers receive.

use serde_json::json;

use crate::support::*;
use firehose::{Event, Priority, TraceId};

#[test]
fn in_process_publish_reaches_a_subscriber_with_every_field() {
    let bridge = server(|_| {});
    let (mut ws, welcome) = subscribe(bridge.local_addr(), "");
    assert_eq!(welcome["last_id"], 0);
    let trace = TraceId::parse("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
    let ev = Event::new("workflow.step.completed", "test")
        .with_payload(&json!({"seq": 0}))
        .unwrap()
        .with_priority(Priority::Important)
        .with_trace_id(trace);
    let id = bridge.bus().publish(ev.clone()).unwrap();
    let got = next_event(&mut ws, &mut Vec::new());
    assert_eq!(got["id"], id);
    assert_eq!(got["event_type"], "workflow.step.completed");
    assert_eq!(got["source"], "test");
    assert_eq!(got["priority"], "important");
    assert_eq!(got["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(got["payload"], json!({"seq": 0}));
    let ts = got["timestamp"].as_str().unwrap();
    assert!(
        ts.ends_with('Z') && humantime::parse_rfc3339(ts).is_ok(),
        "{ts}"
    );

    // Without a trace id the engine makes one.
    bridge.bus().publish(Event::new("a", "test")).unwrap();
    let got = next_event(&mut ws, &mut Vec::new());
    let t = got["trace_id"].as_str().unwrap();
    assert!(TraceId::parse(t).is_ok(), "{t}");
    assert_eq!(got["priority"], "bulk");
}

#[test]
fn http_publish_answers_ids_and_delivers_in_order() {
    let bridge = server(|_| {});
    let addr = bridge.local_addr();
    let (mut ws, _) = subscribe(addr, "");
    let (status, body) = http_json(
        addr,
        "POST",
        "/publish",
        r#"{"event_type":"a.b","source":"curl","payload":{"k":1}}"#,
    );
    assert_eq!(status, 200, "{body}");
    let first = body["ids"][0].as_u64().unwrap();
    let batch = r#"[{"event_type":"a","source":"s"},{"event_type":"b","source":"s","priority":"critical"},{"event_type":"c","source":"s"}]"#;
    let (status, body) = http_json(addr, "POST", "/publish", batch);
    assert_eq!(status, 200);
    let ids: Vec<u64> = body["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(ids, [first + 1, first + 2, first + 3]);
    assert_eq!(next_types(&mut ws, 4), ["a.b", "a", "b", "c"]);

    // Each refusal below is a 400 and publishes nothing; its message says why.
    let refused = |path: &str, body: &str| {
        let (status, answer) = http_json(addr, "POST", path, body);
        assert_eq!(status, 400, "{answer}");
        answer["error"].as_str().unwrap().to_owned()
    };

    // A batch with one bad event publishes nothing.
    let bad = r#"[{"event_type":"ok","source":"s"},{"event_type":"bad type","source":"s"}]"#;
    // It names the event, for a caller whose batch has thousands.
    let msg = refused("/publish", bad);
    assert!(
        msg.contains("bad type") && msg.contains("event at index 1 of 2"),
        "{msg}"
    );
    // So does one over --max-event-bytes, refused as it is staged.
    let big = format!(
        r#"[{{"event_type":"ok","source":"s"}},{{"event_type":"ok","source":"s"}},{{"event_type":"ok","source":"s","payload":"{}"}}]"#,
        "x".repeat(70_000)
    );
    let msg = refused("/publish", &big);
    assert!(
        msg.contains("--max-event-bytes") && msg.contains("event at index 2 of 3"),
        "{msg}"
    );
    assert_eq!(bridge.bus().last_id(), first + 3);

    // Options in the query would be ignored, so they are refused: nothing is published.
    let event = r#"{"event_type":"a","source":"s"}"#;
    let msg = refused("/publish?priority=critical", event);
    assert!(
        msg.contains("query") && msg.contains("priority=critical"),
        "{msg}"
    );
    assert_eq!(bridge.bus().last_id(), first + 3);
}

#[test]
fn websocket_publish_with_and_without_ref() {
    let bridge = server(|_| {});
    let addr = bridge.local_addr();
    let (mut subscriber, _) = subscribe(addr, "?types=chat.*");
    let (mut publisher, _) = subscribe(addr, "?types=none.such");
    send_json(
        &mut publisher,
        json!({"op":"publish","event_type":"chat.msg","source":"ws","ref":"r1","payload":"hi"}),
    );
    let answer = next_json(&mut publisher);
    assert_eq!(answer["op"], "published");
    assert_eq!(answer["ref"], "r1");
    let id = answer["id"].as_u64().unwrap();
    let got = next_event(&mut subscriber, &mut Vec::new());
    assert_eq!(got["id"], id);
    assert_eq!(got["payload"], "hi");

    // Without ref: silent, but delivered.
    send_json(
        &mut publisher,
        json!({"op":"publish","event_type":"chat.msg","source":"ws","payload":2}),
    );
    assert_eq!(next_event(&mut subscriber, &mut Vec::new())["payload"], 2);
    // A bad publish is answered with an error carrying the ref; the connection stays open.
    send_json(
        &mut publisher,
        json!({"op":"publish","event_type":"","source":"ws","ref":9}),
    );
    let err = next_json(&mut publisher);
    assert_eq!(err["op"], "error");
    assert_eq!(err["ref"], 9);
    assert!(err["error"].as_str().unwrap().contains("event_type"));
    send_json(
        &mut publisher,
        json!({"op":"publish","event_type":"chat.msg","source":"ws","ref":10}),
    );
    assert_eq!(next_json(&mut publisher)["op"], "published");
}

#[test]
fn filters_select_by_exact_type_and_prefix_and_change_with_subscribe() {
    let bridge = server(|_| {});
    let addr = bridge.local_addr();
    let (mut ws, welcome) = subscribe(addr, "?types=workflow.*,agent.started");
    assert_eq!(welcome["types"], json!(["workflow.*", "agent.started"]));
    for t in [
        "workflow.step",
        "agent.stopped",
        "agent.started",
        "other",
        "workflow.step.completed",
        "workflow",
    ] {
        bridge.bus().publish(Event::new(t, "test")).unwrap();
    }
    assert_eq!(
        next_types(&mut ws, 3),
        ["workflow.step", "agent.started", "workflow.step.completed"]
    );

    send_json(
        &mut ws,
        json!({"op":"unsubscribe","types":["workflow.*"],"ref":1}),
    );
    let ack = next_json(&mut ws);
    assert_eq!(
        ack,
        json!({"op":"subscribed","ref":1,"types":["agent.started"]})
    );
    send_json(&mut ws, json!({"op":"subscribe","types":["other"]}));
    assert_eq!(
        next_json(&mut ws)["types"],
        json!(["agent.started", "other"])
    );
    send_json(
        &mut ws,
        json!({"op":"subscribe","types":["bad pattern"],"ref":2}),
    );
    let err = next_json(&mut ws);
    assert_eq!(err["op"], "error");
    assert_eq!(err["ref"], 2);
    for t in ["workflow.step", "other", "agent.started"] {
        bridge.bus().publish(Event::new(t, "test")).unwrap();
    }
    assert_eq!(next_types(&mut ws, 2), ["other", "agent.started"]);
}
