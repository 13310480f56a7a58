//! `firehose bench --idle N`: hold N idle subscriber connections and report the server's
//! memory per connection, from its RSS before and after (`--server-pid`).

use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::json;

use super::client::{self, Target};
use super::{proc_rss_kib, BenchArgs, BenchError};

/// What holding the connections cost the server.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// Connections held.
    pub connections: usize,
    /// Server RSS before connecting, KiB.
    pub rss_before_kib: u64,
    /// Server RSS with every connection open and settled, KiB.
    pub rss_after_kib: u64,
}

impl Outcome {
    /// Server memory per connection, bytes.
    pub fn bytes_per_connection(&self) -> f64 {
        (self.rss_after_kib as f64 - self.rss_before_kib as f64) * 1024.0
            / self.connections.max(1) as f64
    }
}

/// Connects `args.idle` subscribers, waits for the server to settle, reads its RSS, holds
/// the connections for `--duration` seconds, and prints the result.
pub fn run(args: &BenchArgs, target: &Target) -> Result<Outcome, BenchError> {
    let pid = args.server_pid.ok_or_else(|| {
        BenchError::Flag("--idle needs --server-pid to read the server's memory".into())
    })?;
    let rss = || {
        proc_rss_kib(pid).ok_or_else(|| {
            BenchError::Flag(format!(
                "cannot read /proc/{pid}/status: is --server-pid right?"
            ))
        })
    };
    let rss_before_kib = rss()?;
    let query = format!("types={}", args.event_type);
    let mut held: Vec<TcpStream> = Vec::with_capacity(args.idle);
    let started = Instant::now();
    for i in 0..args.idle {
        let (stream, _) = client::connect(
            target,
            &query,
            client::source_for(target, i, args.source_addrs),
        )?;
        held.push(stream);
        if (i + 1) % 1000 == 0 {
            eprintln!(
                "bench: {} idle connections open ({:.1} s)",
                i + 1,
                started.elapsed().as_secs_f64()
            );
        }
    }
    // Let the I/O threads write the welcomes and give back their first-use buffers (the
    // allocator returns freed pages lazily), then take the median of five samples.
    std::thread::sleep(Duration::from_secs(2));
    let mut samples = Vec::new();
    for _ in 0..5 {
        samples.push(rss()?);
        std::thread::sleep(Duration::from_millis(500));
    }
    samples.sort_unstable();
    let rss_after_kib = samples[2];
    let outcome = Outcome {
        connections: held.len(),
        rss_before_kib,
        rss_after_kib,
    };
    eprintln!(
        "bench: holding {} connections for {:.0} s",
        held.len(),
        args.duration
    );
    std::thread::sleep(Duration::from_secs_f64(args.duration));
    println!();
    println!("  idle connections        {}", outcome.connections);
    println!(
        "  server RSS KiB          {} before, {} with them open",
        outcome.rss_before_kib, outcome.rss_after_kib
    );
    println!(
        "  per connection          {:.0} bytes",
        outcome.bytes_per_connection()
    );
    println!(
        "{}",
        json!({
            "idle_connections": outcome.connections,
            "server": {"rss_before_kib": outcome.rss_before_kib, "rss_after_kib": outcome.rss_after_kib},
            "bytes_per_connection": outcome.bytes_per_connection(),
        })
    );
    drop(held);
    Ok(outcome)
}
