//! The harness's network parts: WebSocket subscribers that count and time what they
//! receive, the paced publisher, and a small HTTP GET for the server's JSON endpoints.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::Value;
use tungstenite::{Message, WebSocket};

use super::StressError;
use crate::event::TraceId;
use crate::trace::{attrs, random_span_id, Attr, SpanName, Tracer};

/// The event type the harness publishes and subscribes to.
pub const EVENT_TYPE: &str = "workflow.step.completed";
/// How many personas take turns publishing (persona of event `seq` = `seq % PERSONAS`).
pub const PERSONAS: u64 = 8;

/// When each `seq` was sent, in nanoseconds after `base` (0 = not yet).
pub struct SendTimes {
    pub base: Instant,
    pub at: Vec<AtomicU64>,
}

impl SendTimes {
    pub fn new(n: usize) -> Self {
        Self {
            base: Instant::now(),
            at: (0..n).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn since_base(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }
}

/// What one subscriber saw.
pub struct Received {
    /// Events received (each `seq` once).
    pub events: AtomicU64,
    /// Control notices (`dropped`, `backlog`, …).
    pub notices: AtomicU64,
}

fn ws_connect(addr: SocketAddr, query: &str) -> Result<WebSocket<TcpStream>, StressError> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .map_err(|e| StressError::Connect(addr, e.to_string()))?;
    let _ = stream.set_nodelay(true);
    let url = format!("ws://{addr}/ws/events?{query}");
    let (ws, _) = tungstenite::client::client(url.as_str(), stream)
        .map_err(|e| StressError::Connect(addr, e.to_string()))?;
    Ok(ws)
}

/// A connected subscriber, not yet reading.
pub struct Subscriber {
    ws: WebSocket<TcpStream>,
}

impl Subscriber {
    pub fn connect(addr: SocketAddr) -> Result<Self, StressError> {
        let ws = ws_connect(addr, &format!("types={EVENT_TYPE}"))?;
        ws.get_ref()
            .set_read_timeout(Some(Duration::from_millis(100)))
            .map_err(|e| StressError::Connect(addr, e.to_string()))?;
        Ok(Self { ws })
    }

    /// Reads until `stop`, counting events and recording publish→receive latency (µs).
    pub fn run(
        mut self,
        times: &SendTimes,
        got: &Received,
        stop: &AtomicBool,
    ) -> Result<Histogram<u64>, StressError> {
        let mut hist = Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
        let mut last_id = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let msg = match self.ws.read() {
                Ok(m) => m,
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(e) => return Err(StressError::Subscriber(e.to_string())),
            };
            let Message::Text(text) = msg else { continue };
            let v: Value = serde_json::from_str(&text)
                .map_err(|e| StressError::Subscriber(format!("a frame is not JSON: {e}")))?;
            if v.get("op").is_some() {
                if v["op"] != "welcome" {
                    got.notices.fetch_add(1, Ordering::Relaxed);
                }
                continue;
            }
            let id = v["id"].as_u64().unwrap_or(0);
            if id <= last_id {
                return Err(StressError::Subscriber(format!(
                    "ids out of order: {id} after {last_id}"
                )));
            }
            last_id = id;
            let Some(seq) = v["payload"]["seq"].as_u64() else {
                continue;
            };
            let now = times.since_base();
            if let Some(sent) = times.at.get(seq as usize) {
                let sent = sent.load(Ordering::Acquire);
                if sent > 0 {
                    let _ = hist.record((now.saturating_sub(sent) / 1_000).max(1));
                }
            }
            got.events.fetch_add(1, Ordering::Relaxed);
        }
        let _ = self.ws.close(None);
        Ok(hist)
    }
}

/// Publishes `total` events at `rate` per second on a fixed schedule (event n is due at
/// n / rate seconds; a late one goes at once, so the schedule catches up). Returns when
/// the last is sent; `sent` counts as it goes.
///
/// Each event is one step of a persona (`seq % PERSONAS`) and carries a fresh trace id;
/// the step is recorded in `tracer` as a `workflow.step` span under that id, so the
/// server's spans for the event join the same trace.
pub fn publish(
    addr: SocketAddr,
    rate: f64,
    total: u64,
    times: &SendTimes,
    sent: &AtomicU64,
    tracer: &Tracer,
) -> Result<Duration, StressError> {
    // A type nobody publishes: this connection receives only its welcome.
    let mut ws = ws_connect(addr, "types=stress.publisher.none")?;
    let start = Instant::now();
    for seq in 0..total {
        let due = start + Duration::from_secs_f64(seq as f64 / rate);
        loop {
            let now = Instant::now();
            if now >= due {
                break;
            }
            let left = due - now;
            if left > Duration::from_micros(200) {
                std::thread::sleep(left - Duration::from_micros(100));
            } else {
                std::thread::yield_now();
            }
        }
        let trace = TraceId::random();
        let persona = seq % PERSONAS;
        let frame = format!(
            r#"{{"op":"publish","event_type":"{EVENT_TYPE}","source":"stress_harness","trace_id":"{trace}","payload":{{"seq":{seq},"persona":{persona}}}}}"#
        );
        let step = Instant::now();
        times.at[seq as usize].store(times.since_base().max(1), Ordering::Release);
        ws.send(Message::text(frame))
            .map_err(|e| StressError::Publisher(e.to_string()))?;
        sent.fetch_add(1, Ordering::Relaxed);
        if tracer.sampled(trace) {
            let duration_ms = step.elapsed().as_secs_f64() * 1e3;
            tracer.record(
                SpanName::WorkflowStep,
                trace,
                (random_span_id(), 0),
                step,
                attrs([
                    ("persona_id", Attr::from(persona)),
                    ("action_type", Attr::Static(EVENT_TYPE)),
                    ("duration_ms", Attr::from(duration_ms)),
                    ("seq", Attr::from(seq)),
                ]),
            );
        }
    }
    // The interval after the last send belongs to the run: n events take n intervals.
    let elapsed = start.elapsed() + Duration::from_secs_f64(1.0 / rate);
    let _ = ws.close(None);
    Ok(elapsed)
}

/// `GET path` on a fresh connection; the JSON body.
pub fn get_json(addr: SocketAddr, path: &str) -> Result<Value, StressError> {
    let bad = |e: String| StressError::Http(path.to_owned(), e);
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| bad(e.to_string()))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| bad(e.to_string()))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| bad(e.to_string()))?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).map_err(|e| bad(e.to_string()))?;
    let at = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no complete response".into()))?;
    if !out.starts_with(b"HTTP/1.1 200") {
        return Err(bad(String::from_utf8_lossy(&out[..at]).into_owned()));
    }
    serde_json::from_slice(&out[at + 4..]).map_err(|e| bad(e.to_string()))
}
