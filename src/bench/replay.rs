//! `firehose bench --replayers R`: R clients that connect once the measurement starts and
//! resume from id 0, so the server replays its whole retained log to them while the live
//! subscribers are measured. The replay's pace is read from the server itself: its
//! `replayed` total (`GET /stats`) and how long its `/connections?state=replaying` list
//! takes to empty.

use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::client::{self, Target};
use super::BenchError;

/// What the replay measured.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// Events the server replayed to the replayers.
    pub replayed: u64,
    /// From their connecting to the last one leaving the `replaying` state.
    pub seconds: f64,
    /// Whether they all caught up before the measurement ended.
    pub caught_up: bool,
}

/// One GET against the target's HTTP side, as JSON (the stress harness's client).
fn get_json(target: &Target, path: &str) -> Result<serde_json::Value, BenchError> {
    crate::stress::clients::get_json(target.addr, path)
        .map_err(|e| BenchError::Client(e.to_string()))
}

fn replayed_total(target: &Target) -> Result<u64, BenchError> {
    Ok(get_json(target, "/stats")?["totals"]["replayed"]
        .as_u64()
        .unwrap_or(0))
}

/// Connects `n` replayers (each read by its own thread, as fast as the socket gives),
/// waits until the server says none is replaying any more or `until` passes, and returns
/// the pace. The replayers stay connected, reading live events, until `stop`.
pub fn run(
    target: &Target,
    n: usize,
    event_type: &str,
    (first_source, spread): (usize, usize),
    until: Instant,
    stop: Arc<AtomicBool>,
) -> Result<(Outcome, Vec<JoinHandle<()>>), BenchError> {
    let before = replayed_total(target)?;
    let query = format!("types={event_type}&last_event_id=0");
    let started = Instant::now();
    let mut readers = Vec::new();
    for i in 0..n {
        let (mut stream, _) = client::connect(
            target,
            &query,
            client::source_for(target, first_source + i, spread),
        )?;
        let stop = Arc::clone(&stop);
        readers.push(std::thread::spawn(move || {
            let mut buf = vec![0u8; 256 * 1024];
            while !stop.load(Ordering::Relaxed) {
                match stream.read(&mut buf) {
                    Ok(0) => return,
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                    Err(_) => return,
                }
            }
        }));
    }
    let caught_up = loop {
        let replaying = get_json(target, "/connections?state=replaying&limit=1")?["total"]
            .as_u64()
            .unwrap_or(0);
        if replaying == 0 {
            break true;
        }
        if Instant::now() >= until {
            break false;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let seconds = started.elapsed().as_secs_f64();
    let replayed = replayed_total(target)? - before;
    Ok((
        Outcome {
            replayed,
            seconds,
            caught_up,
        },
        readers,
    ))
}
