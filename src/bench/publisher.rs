//! A publisher connection: sends events whose payload carries a monotonic timestamp, as
//! fast as the server takes them (a bounded window of unconfirmed publishes) or at a set
//! rate, in one of two wire formats ([`Over`]):
//!
//! * **WebSocket**: `{"op":"publish"}` messages. Every 64th carries a `ref`; its
//!   `published` answer confirms it and all before it (the server handles one
//!   connection's messages in order).
//! * **HTTP**: `POST /publish` requests, one event each, pipelined on one kept-alive
//!   connection. Every request is answered, in order, so each `200` confirms one more.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::client::text_frame;
use super::BenchError;
use crate::http::client::{parse_response_head, BodyEnd};
use crate::ws::frame::parse_unmasked;

const REF_EVERY: u64 = 64;

/// The most HTTP requests one publisher leaves unanswered. The server answers a
/// connection's pipelined requests in order and refuses a client that leaves more than
/// 256 answers unread (503), so the window stays well under that.
pub const MAX_HTTP_WINDOW: u64 = 128;

/// Largest answer head accepted from the server.
const MAX_ANSWER_HEAD: usize = 16 * 1024;
/// Largest answer body accepted (firehose's is `{"ids":[N]}` or an error message).
const MAX_ANSWER_BODY: usize = 64 * 1024;

/// How publishers send.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Over {
    /// `{"op":"publish"}` messages on a WebSocket connection to the target.
    #[default]
    Ws,
    /// `POST /publish` requests, pipelined on a kept-alive connection to the target's
    /// host and port.
    Http,
}

impl Over {
    /// The name `--publish-over` takes.
    pub fn name(self) -> &'static str {
        match self {
            Over::Ws => "ws",
            Over::Http => "http",
        }
    }
}

/// Live totals of one publisher.
#[derive(Default, Debug)]
pub struct Sent {
    /// Events written.
    pub sent: AtomicU64,
    /// Events confirmed by the server.
    pub confirmed: AtomicU64,
}

/// Publisher settings.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Bytes of the event payload (`{"t":…,"pad":"…"}`).
    pub payload_bytes: usize,
    /// Unconfirmed events allowed in flight.
    pub window: u64,
    /// Events per second, or `None` for as fast as taken.
    pub rate: Option<f64>,
    /// Event type to publish.
    pub event_type: String,
    /// The wire format.
    pub over: Over,
    /// `Host` of the HTTP requests.
    pub host: String,
}

/// Publishes on `stream` until `stop`.
pub fn run(
    mut stream: TcpStream,
    plan: Plan,
    sent: Arc<Sent>,
    base: Instant,
    stop: Arc<AtomicBool>,
) -> Result<(), BenchError> {
    let io = |e: io::Error| BenchError::Publish(e.to_string());
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(io)?;
    let pad = "x".repeat(plan.payload_bytes.saturating_sub(30));
    let started = Instant::now();
    let (mut n, mut confirmed) = (0u64, 0u64);
    let mut out = Vec::with_capacity(64 * (plan.payload_bytes + 256));
    let mut msg = Vec::with_capacity(plan.payload_bytes + 128);
    let mut answers = Answers::default();
    let mut buf = vec![0u8; 64 * 1024];
    while !stop.load(Ordering::Relaxed) {
        let allowed = match plan.rate {
            Some(r) => ((started.elapsed().as_secs_f64() * r) as u64).saturating_sub(n),
            None => u64::MAX,
        };
        let room = plan
            .window
            .saturating_sub(n - confirmed)
            .min(allowed)
            .min(256);
        if room > 0 {
            out.clear();
            for _ in 0..room {
                n += 1;
                msg.clear();
                let t = base.elapsed().as_nanos() as u64;
                encode(&plan, n, t, &pad, &mut msg, &mut out);
            }
            stream.write_all(&out).map_err(io)?;
            sent.sent.store(n, Ordering::Relaxed);
        }
        if n - confirmed < plan.window {
            if room == 0 {
                std::thread::sleep(Duration::from_micros(100)); // paced: not yet time
            }
            continue;
        }
        // The window is full: wait for confirmations.
        match stream.read(&mut buf) {
            Ok(0) => {
                return Err(BenchError::Publish(
                    "the server closed the publisher connection".into(),
                ))
            }
            Ok(k) => {
                confirmed = answers.read(plan.over, &buf[..k])?;
                sent.confirmed.store(confirmed, Ordering::Relaxed);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(io(e)),
        }
    }
    Ok(())
}

/// Appends publish number `n`, stamped `t`, to `out` (`msg` is scratch).
fn encode(plan: &Plan, n: u64, t: u64, pad: &str, msg: &mut Vec<u8>, out: &mut Vec<u8>) {
    let event_type = &plan.event_type;
    // A WebSocket message is an op, and every 64th carries a ref; a POST body is the event.
    let (open, with_ref) = match plan.over {
        Over::Ws => ("{\"op\":\"publish\",", n % REF_EVERY == 0),
        Over::Http => ("{", false),
    };
    let _ = write!(
        msg,
        "{open}\"event_type\":\"{event_type}\",\"source\":\"bench\","
    );
    if with_ref {
        let _ = write!(msg, "\"ref\":{n},");
    }
    let _ = write!(msg, "\"payload\":{{\"t\":{t},\"pad\":\"{pad}\"}}}}");
    match plan.over {
        Over::Ws => text_frame(out, msg, (n as u32).to_le_bytes()),
        Over::Http => {
            let _ = write!(
                out,
                "POST /publish HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                plan.host,
                msg.len()
            );
            out.extend_from_slice(msg);
        }
    }
}

/// The server's answers read so far, and what they confirmed.
#[derive(Default)]
struct Answers {
    inbox: Vec<u8>,
    /// Every publish up to this one is confirmed.
    confirmed: u64,
}

impl Answers {
    /// Takes `data` from the socket; returns how many publishes are confirmed.
    fn read(&mut self, over: Over, data: &[u8]) -> Result<u64, BenchError> {
        self.inbox.extend_from_slice(data);
        let used = match over {
            Over::Ws => self.read_frames()?,
            Over::Http => self.read_responses()?,
        };
        self.inbox.drain(..used);
        Ok(self.confirmed)
    }

    /// Consumes complete frames: a `published` answer confirms up to its `ref`.
    fn read_frames(&mut self) -> Result<usize, BenchError> {
        let mut at = 0;
        while let Some((_, body, used)) = parse_unmasked(&self.inbox[at..]) {
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
                match v["op"].as_str() {
                    Some("published") => {
                        self.confirmed = self.confirmed.max(v["ref"].as_u64().unwrap_or(0))
                    }
                    Some("error") => {
                        return Err(BenchError::Publish(format!(
                            "the server refused a publish: {}",
                            v["error"]
                        )))
                    }
                    _ => {}
                }
            }
            at += used;
        }
        Ok(at)
    }

    /// Consumes complete responses: each `200` confirms one more request.
    fn read_responses(&mut self) -> Result<usize, BenchError> {
        let mut at = 0;
        loop {
            let rest = &self.inbox[at..];
            let head = parse_response_head(rest, MAX_ANSWER_HEAD)
                .map_err(|e| BenchError::Publish(e.to_string()))?;
            let Some(head) = head else { return Ok(at) };
            let BodyEnd::Length(len) = head.body else {
                return Err(BenchError::Publish(
                    "POST /publish answered without a Content-Length: is --target a firehose server?"
                        .into(),
                ));
            };
            if len > MAX_ANSWER_BODY {
                return Err(BenchError::Publish(format!(
                    "POST /publish answered with a {len}-byte body, over {MAX_ANSWER_BODY}: is --target a firehose server?"
                )));
            }
            let Some(body) = rest.get(head.len..head.len + len) else {
                return Ok(at);
            };
            if head.status != 200 {
                return Err(BenchError::Publish(format!(
                    "POST /publish answered {}: {}",
                    head.status,
                    String::from_utf8_lossy(body)
                )));
            }
            self.confirmed += 1;
            at += head.len + len;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(over: Over) -> Plan {
        Plan {
            payload_bytes: 40,
            window: 64,
            rate: None,
            event_type: "bench.tick".into(),
            over,
            host: "127.0.0.1:8765".into(),
        }
    }

    #[test]
    fn an_http_publish_is_a_request_the_server_parses_with_its_event_as_body() {
        let (mut msg, mut out) = (Vec::new(), Vec::new());
        encode(&plan(Over::Http), 1, 42, "xx", &mut msg, &mut out);
        let limits = crate::http::request::Limits {
            max_header_bytes: 1024,
            max_body_bytes: 1024,
        };
        let (req, used) = crate::http::request::parse_head(&out, &limits)
            .unwrap()
            .unwrap();
        assert_eq!(
            (req.method.as_str(), req.path.as_str()),
            ("POST", "/publish")
        );
        assert_eq!(req.body_len(), out.len() - used);
        let events = crate::event::parse_publish_body(&out[used..], 1).unwrap();
        assert_eq!(events[0].event_type, "bench.tick");
        assert_eq!(events[0].payload.get(), r#"{"t":42,"pad":"xx"}"#);
    }

    #[test]
    fn a_websocket_publish_carries_a_ref_every_64th() {
        let (mut msg, mut out) = (Vec::new(), Vec::new());
        let expect = |with_ref: &str| {
            format!(
                r#"{{"op":"publish","event_type":"bench.tick","source":"bench",{with_ref}"payload":{{"t":9,"pad":"xx"}}}}"#
            )
        };
        for (n, with_ref) in [(63, String::new()), (64, r#""ref":64,"#.to_string())] {
            msg.clear();
            encode(&plan(Over::Ws), n, 9, "xx", &mut msg, &mut out);
            assert_eq!(String::from_utf8_lossy(&msg), expect(&with_ref));
        }
    }

    #[test]
    fn http_answers_confirm_one_each_as_they_complete() {
        let ok =
            crate::http::response::Response::text(200, "application/json", "{\"ids\":[7]}".into())
                .encode(true);
        let two = [&ok[..], &ok[..]].concat();
        let mut answers = Answers::default();
        // One and a half answers, then the rest.
        let cut = ok.len() + ok.len() / 2;
        assert_eq!(answers.read(Over::Http, &two[..cut]).unwrap(), 1);
        assert_eq!(answers.read(Over::Http, &two[cut..]).unwrap(), 2);
        assert!(answers.inbox.is_empty());
        let refused = crate::http::response::Response::error(400, "bad event").encode(true);
        let err = answers.read(Over::Http, &refused).unwrap_err();
        assert!(err.to_string().contains("400") && err.to_string().contains("bad event"));
        // A server announcing a body it will never finish is refused, not waited for.
        let huge = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", usize::MAX);
        let err = Answers::default()
            .read(Over::Http, huge.as_bytes())
            .unwrap_err();
        assert!(err.to_string().contains("body"), "{err}");
    }
}
