//! A load-generator thread holding many subscriber connections on one mio `Poll`: read
//! until WouldBlock, count frames by header, sample latency into its own histogram.

use std::io::{self, Read};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::{Events, Interest, Poll, Token};

use super::frames::{timestamp, Scanner};

/// Sample one event in this many per connection for latency.
const SAMPLE_EVERY: u64 = 16;

/// Live totals of one subscriber thread, read by the progress reporter.
#[derive(Default, Debug)]
pub struct Totals {
    /// Events received.
    pub events: AtomicU64,
    /// Notices received (`dropped`, …).
    pub notices: AtomicU64,
    /// Connections the server closed.
    pub closed: AtomicU64,
}

/// Runs until `stop`; records latency (µs) only while `measuring`. Returns the histogram.
pub fn run(
    conns: Vec<(TcpStream, Vec<u8>)>,
    totals: Arc<Totals>,
    base: Instant,
    measuring: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> io::Result<Histogram<u64>> {
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
    let mut poll = Poll::new()?;
    let mut streams = Vec::with_capacity(conns.len());
    let mut scanners: Vec<Scanner> = Vec::with_capacity(conns.len());
    for (i, (stream, leftover)) in conns.into_iter().enumerate() {
        stream.set_nonblocking(true)?;
        let mut stream = mio::net::TcpStream::from_std(stream);
        poll.registry()
            .register(&mut stream, Token(i), Interest::READABLE)?;
        let mut s = Scanner::default();
        s.scan(&leftover, 0, |_| {});
        streams.push(stream);
        scanners.push(s);
    }
    let mut buf = vec![0u8; 256 * 1024];
    let mut events = Events::with_capacity(1024);
    let (mut total_events, mut total_notices, mut closed) = (0u64, 0u64, 0u64);
    while !stop.load(Ordering::Relaxed) {
        poll.poll(&mut events, Some(Duration::from_millis(50)))?;
        let record = measuring.load(Ordering::Relaxed);
        for ev in events.iter() {
            let i = ev.token().0;
            let s = &mut scanners[i];
            let (before_e, before_n) = (s.events, s.notices);
            loop {
                match streams[i].read(&mut buf) {
                    Ok(0) => {
                        if !s.closed {
                            s.closed = true;
                        }
                        closed += 1;
                        let _ = poll.registry().deregister(&mut streams[i]);
                        break;
                    }
                    Ok(n) => s.scan(&buf[..n], if record { SAMPLE_EVERY } else { 0 }, |body| {
                        if let Some(t) = timestamp(body) {
                            let now = base.elapsed().as_nanos() as u64;
                            let _ = hist.record(now.saturating_sub(t).max(1000) / 1000);
                        }
                    }),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        closed += 1;
                        let _ = poll.registry().deregister(&mut streams[i]);
                        break;
                    }
                }
            }
            total_events += s.events - before_e;
            total_notices += s.notices - before_n;
        }
        totals.events.store(total_events, Ordering::Relaxed);
        totals.notices.store(total_notices, Ordering::Relaxed);
        totals.closed.store(closed, Ordering::Relaxed);
    }
    Ok(hist)
}
