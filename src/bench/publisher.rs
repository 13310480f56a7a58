//! A publisher connection: sends `{"op":"publish"}` frames carrying a monotonic timestamp,
//! as fast as the server takes them (a bounded window of unconfirmed messages) or at a set
//! rate. Every 64th message carries a `ref`; its `published` answer confirms it and all
//! before it (the server handles one connection's messages in order).

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::client::text_frame;
use super::BenchError;
use crate::ws::frame::parse_unmasked;

const REF_EVERY: u64 = 64;

/// Live totals of one publisher.
#[derive(Default, Debug)]
pub struct Sent {
    /// Messages written.
    pub sent: AtomicU64,
    /// Messages confirmed by the server.
    pub confirmed: AtomicU64,
}

/// Publisher settings.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Bytes of the event payload (`{"t":…,"pad":"…"}`).
    pub payload_bytes: usize,
    /// Unconfirmed messages allowed in flight.
    pub window: u64,
    /// Messages per second, or `None` for as fast as taken.
    pub rate: Option<f64>,
    /// Event type to publish.
    pub event_type: String,
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
    let mut out = Vec::with_capacity(64 * (plan.payload_bytes + 128));
    let mut msg = Vec::with_capacity(plan.payload_bytes + 128);
    let mut inbox = Vec::new();
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
                let reference = if n % REF_EVERY == 0 {
                    format!(",\"ref\":{n}")
                } else {
                    String::new()
                };
                let _ = write!(
                    msg,
                    "{{\"op\":\"publish\",\"event_type\":\"{}\",\"source\":\"bench\"{reference},\"payload\":{{\"t\":{t},\"pad\":\"{pad}\"}}}}",
                    plan.event_type
                );
                text_frame(&mut out, &msg, (n as u32).to_le_bytes());
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
                inbox.extend_from_slice(&buf[..k]);
                confirmed = confirmed.max(read_answers(&mut inbox)?);
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

/// Consumes complete frames from `inbox`; returns the highest confirmed `ref`.
fn read_answers(inbox: &mut Vec<u8>) -> Result<u64, BenchError> {
    let mut at = 0;
    let mut best = 0;
    while let Some((_, body, used)) = parse_unmasked(&inbox[at..]) {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
            match v["op"].as_str() {
                Some("published") => best = best.max(v["ref"].as_u64().unwrap_or(0)),
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
    inbox.drain(..at);
    Ok(best)
}
