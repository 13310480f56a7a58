//! The OTLP/HTTP exporter (cargo feature `otlp`) against a collector written here: a
//! listener that decodes each POST with the OpenTelemetry protobuf messages. A client's
//! `trace_id` finds its span tree there; a collector that refuses a batch costs only the
//! spans of that batch, counted in `/metrics`, and export resumes after the backoff.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use firehose::trace::TraceExporter;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

use crate::support::*;

/// One span as the collector received it: name, trace id hex, span id, parent id.
#[derive(Debug, Clone)]
struct Got {
    name: String,
    trace: String,
    span: Vec<u8>,
    parent: Vec<u8>,
    attrs: Vec<String>,
}

/// One accepted request: path, content type, its spans.
type Request = (String, String, Vec<Got>);
type Received = mpsc::Receiver<Request>;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A collector on a free port; the first `refuse` requests get status `refusal`. Each
/// accepted request's (path, content type, decoded spans) go to the returned channel.
fn collector(refuse: usize, refusal: u16) -> (SocketAddr, Received, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    let requests = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&requests);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let tx = tx.clone();
            let count = Arc::clone(&count);
            std::thread::spawn(move || serve(conn, &tx, &count, (refuse, refusal)));
        }
    });
    (addr, rx, requests)
}

fn serve(
    mut conn: TcpStream,
    tx: &mpsc::Sender<Request>,
    count: &AtomicUsize,
    (refuse, refusal): (usize, u16),
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        let Ok(httparse::Status::Complete(head)) = req.parse(&buf) else {
            match conn.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            continue;
        };
        let header = |name: &str| {
            req.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).into_owned())
                .unwrap_or_default()
        };
        let len: usize = header("content-length").parse().unwrap();
        let (path, ctype) = (req.path.unwrap().to_owned(), header("content-type"));
        while buf.len() < head + len {
            match conn.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body: Vec<u8> = buf.drain(..head + len).skip(head).collect();
        let n = count.fetch_add(1, Ordering::SeqCst);
        if n < refuse {
            let msg = "collector says no";
            let _ = write!(
                conn,
                "HTTP/1.1 {refusal} No\r\nContent-Length: {}\r\n\r\n{msg}",
                msg.len()
            );
            continue;
        }
        let decoded = ExportTraceServiceRequest::decode(&*body).expect("a valid protobuf body");
        let spans = decoded
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .map(|s| Got {
                name: s.name.clone(),
                trace: hex(&s.trace_id),
                span: s.span_id.clone(),
                parent: s.parent_span_id.clone(),
                attrs: s
                    .attributes
                    .iter()
                    .map(|kv| format!("{}={:?}", kv.key, kv.value))
                    .collect(),
            })
            .collect();
        let _ = tx.send((path, ctype, spans));
        let _ = conn.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n",
        );
    }
}

fn publish_and_trace(addr: SocketAddr, ws: &mut Ws, n: u64) -> String {
    let body = format!(r#"{{"event_type":"order.placed","source":"shop","payload":{{"n":{n}}}}}"#);
    let (status, resp) = http_json(addr, "POST", "/publish", &body);
    assert_eq!(status, 200, "{resp}");
    let got = next_event(ws, &mut Vec::new());
    got["trace_id"].as_str().unwrap().to_owned()
}

/// Collects spans until `done` holds or 10 s pass.
fn gather(rx: &Received, spans: &mut Vec<Got>, done: impl Fn(&[Got]) -> bool) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !done(spans) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok((path, ctype, got)) => {
                assert_eq!(path, "/v1/traces");
                assert_eq!(ctype, "application/x-protobuf");
                spans.extend(got);
            }
            Err(_) => return false,
        }
    }
    true
}

#[test]
fn otlp_collector_receives_the_span_tree_of_a_clients_trace_id() {
    let (collector_addr, rx, _) = collector(0, 0);
    let bridge = server(|c| {
        c.trace_sample = 1.0;
        c.trace_exporter = TraceExporter::Otlp(format!("http://{collector_addr}/v1/traces"));
    });
    let addr = bridge.local_addr();
    let (mut ws, _) = subscribe(addr, "");
    let trace = publish_and_trace(addr, &mut ws, 1);
    let mut spans = Vec::new();
    let of = |spans: &[Got], name: &str| -> Vec<Got> {
        spans
            .iter()
            .filter(|s| s.trace == trace && s.name == name)
            .cloned()
            .collect()
    };
    assert!(
        gather(&rx, &mut spans, |s| !of(s, "event.publish").is_empty()
            && !of(s, "ws.write").is_empty()),
        "spans of {trace}: {spans:#?}"
    );
    let publish = &of(&spans, "event.publish")[0];
    assert!(publish.parent.is_empty(), "event.publish is the root");
    assert_eq!(publish.span.len(), 8);
    assert!(
        publish
            .attrs
            .iter()
            .any(|a| a.starts_with("event_type=") && a.contains("order.placed")),
        "{publish:?}"
    );
    let write = &of(&spans, "ws.write")[0];
    assert_eq!(
        write.parent, publish.span,
        "ws.write's parent is event.publish"
    );
    assert_eq!(bridge.bus().tracer().export_failed(), 0);
}

fn export_failed_metric(addr: SocketAddr) -> f64 {
    let (status, _, body) = http_raw(
        addr,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200);
    let text = String::from_utf8(body).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("firehose_spans_export_failed_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no firehose_spans_export_failed_total in {text}"))
}

/// A server exporting to a collector that answers its first request with `status`;
/// returns once that request was made, with a subscriber and the first trace's id.
fn refused_once(status: u16) -> (firehose::Bridge, Received, Ws, String) {
    let (collector_addr, rx, requests) = collector(1, status);
    let bridge = server(|c| {
        c.trace_sample = 1.0;
        c.trace_exporter = TraceExporter::Otlp(format!("http://{collector_addr}"));
    });
    let (mut ws, _) = subscribe(bridge.local_addr(), "");
    let first = publish_and_trace(bridge.local_addr(), &mut ws, 1);
    let asked = || requests.load(Ordering::SeqCst) >= 1;
    assert!(eventually(Duration::from_secs(10), asked));
    (bridge, rx, ws, first)
}

fn published(spans: &[Got], trace: &str) -> bool {
    spans
        .iter()
        .any(|g| g.trace == trace && g.name == "event.publish")
}

#[test]
fn a_busy_collector_gets_the_batch_again_after_the_backoff() {
    let (bridge, rx, mut ws, first) = refused_once(503);
    let addr = bridge.local_addr();
    let second = publish_and_trace(addr, &mut ws, 2);
    let mut spans = Vec::new();
    assert!(
        gather(&rx, &mut spans, |s| published(s, &first)
            && published(s, &second)),
        "503 is temporary: both traces arrive after the 1 s backoff: {spans:#?}"
    );
    assert_eq!(export_failed_metric(addr), 0.0);
}

#[test]
fn a_refused_batch_is_counted_and_export_goes_on() {
    let (bridge, rx, mut ws, first) = refused_once(400);
    let addr = bridge.local_addr();
    let counted = || export_failed_metric(addr) >= 1.0;
    assert!(eventually(Duration::from_secs(5), counted));
    let second = publish_and_trace(addr, &mut ws, 2);
    let mut spans = Vec::new();
    assert!(
        gather(&rx, &mut spans, |s| published(s, &second)),
        "{spans:#?}"
    );
    assert!(
        !published(&spans, &first),
        "a 400 is final: the refused batch is counted, not resent"
    );
}
