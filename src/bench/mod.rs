//! `firehose bench`: the end-to-end load generator.
//!
//! Opens N WebSocket subscribers (spread over loopback source addresses 127.0.0.2, …),
//! K of them never reading, and M publishers sending `{"op":"publish"}` frames or
//! `POST /publish` requests (`--publish-over`) whose payload carries a monotonic
//! timestamp; measures delivered events/s and publish→receive latency
//! (sampled), and, with `--server-pid`, the server's CPU seconds and RSS. Prints a progress
//! line each second, then a table and one JSON line.
//!
//! The generator counts frames from their headers alone (no copy, no per-message
//! allocation) and handles many connections per thread, so it is not the bottleneck it
//! measures; with the server on one core and this on the other, compare ratios in one run.

mod client;
mod frames;
mod idle;
mod publisher;
mod replay;
mod subscribers;

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use hdrhistogram::Histogram;
use serde_json::json;

use client::Target;
pub use publisher::Over;

/// `firehose bench` flags.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// WebSocket endpoint of the server under test.
    #[arg(long, default_value = "ws://127.0.0.1:8765/ws/events")]
    pub target: String,
    /// Subscriber connections.
    #[arg(long, default_value_t = 100)]
    pub subscribers: usize,
    /// Of the subscribers, how many connect and then never read (slow consumers). With
    /// K > 0 the run measures twice against the same server, first with no slow
    /// subscribers and then with K, and reports the two side by side.
    #[arg(long, default_value_t = 0)]
    pub slow: usize,
    /// Publisher connections.
    #[arg(long, default_value_t = 1)]
    pub publishers: usize,
    /// Event payload size in bytes.
    #[arg(long, default_value_t = 100)]
    pub payload_bytes: usize,
    /// Events per second across all publishers; 0 = as fast as the server takes them.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// How publishers send: `ws`, `{"op":"publish"}` messages on a WebSocket connection to
    /// --target; `http`, `POST /publish` requests (one event each) pipelined on a kept-alive
    /// connection to --target's host and port.
    #[arg(long, value_enum, default_value_t = Over::Ws)]
    pub publish_over: Over,
    /// Unconfirmed publishes allowed in flight per publisher: 64 to 16384 over WebSocket
    /// (default 4096), 1 to 128 over HTTP (default 128; the server refuses a client that
    /// leaves more than 256 answers unread).
    #[arg(long)]
    pub window: Option<u64>,
    /// Seconds to measure (at most 86,400; with `--idle`, how long the connections are held,
    /// 0 allowed).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds to run before measuring (at most 86,400).
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Threads reading subscriber connections.
    #[arg(long, default_value_t = 1)]
    pub client_threads: usize,
    /// Loopback source addresses to spread connections over (127.0.0.2 …); 0 = the default.
    #[arg(long, default_value_t = 8)]
    pub source_addrs: usize,
    /// The server's process id, to report its CPU seconds and memory.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Event type to publish (subscribers subscribe to it).
    #[arg(long, default_value = "bench.tick")]
    pub event_type: String,
    /// Clients that connect when the measurement starts and resume from id 0, so the
    /// server replays its whole retained log to them (`last_event_id`). With R > 0 the run
    /// measures twice, without and then with them, and reports the replay's pace (from the
    /// server's `replayed` total) beside the live subscribers' latency.
    #[arg(long, default_value_t = 0)]
    pub replayers: usize,
    /// Idle mode: open this many subscriber connections, publish nothing, and report the
    /// server's memory per connection from its RSS before and after (needs
    /// `--server-pid`); the connections are held for `--duration` seconds.
    #[arg(long, default_value_t = 0)]
    pub idle: usize,
}

/// Why a bench run failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Bad `--target`.
    #[error("--target {0:?} is not ws://HOST:PORT[/PATH]")]
    Target(String),
    /// A flag out of range.
    #[error("{0}")]
    Flag(String),
    /// Could not connect.
    #[error("cannot connect to {0}: {1} (is the server running? for many connections raise `ulimit -n`)")]
    Connect(SocketAddr, std::io::Error),
    /// The server refused the upgrade.
    #[error("the server refused the WebSocket upgrade: {0}")]
    Handshake(String),
    /// A publisher failed.
    #[error("publisher: {0}")]
    Publish(String),
    /// A client thread failed.
    #[error("client thread: {0}")]
    Client(String),
}

/// What one run measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// Seconds measured.
    pub seconds: f64,
    /// Events published during the measurement.
    pub published: u64,
    /// Events received by all subscribers during the measurement.
    pub delivered: u64,
    /// Notices (`dropped`, …) received.
    pub notices: u64,
    /// Latency histogram (µs).
    pub latency: Histogram<u64>,
    /// Server CPU seconds during the measurement.
    pub server_cpu_s: Option<f64>,
    /// Server RSS at the end, KiB.
    pub server_rss_kib: Option<u64>,
    /// Server RSS growth during the measurement, KiB.
    pub server_rss_growth_kib: Option<i64>,
    /// The replay to `--replayers`, if any.
    pub replay: Option<replay::Outcome>,
}

fn proc_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / clock_ticks() as f64)
}

fn clock_ticks() -> i64 {
    // SAFETY: sysconf only reads a configuration value; it has no pointer arguments.
    #[allow(unsafe_code)]
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t
    } else {
        100
    }
}

fn proc_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Runs the bench described by `args` and prints its report.
pub fn run(args: &BenchArgs) -> Result<(), BenchError> {
    if args.idle > 0 {
        check_seconds("--duration", args.duration, true)?;
        let (soft, _) = crate::raise_fd_limit();
        if soft < (args.idle + 64) as u64 {
            return Err(BenchError::Flag(format!(
                "{} connections need `ulimit -n` of at least {}; it is {soft}",
                args.idle,
                args.idle + 64
            )));
        }
        idle::run(args, &Target::parse(&args.target)?)?;
        return Ok(());
    }
    if args.replayers > 0 && args.slow > 0 {
        return Err(BenchError::Flag(
            "--replayers and --slow each compare two phases: use one at a time".into(),
        ));
    }
    // Once for every phase: a phase differs only in what the full flags already allow.
    let target = check(args)?;
    if args.replayers > 0 {
        let baseline_args = BenchArgs {
            replayers: 0,
            ..args.clone()
        };
        eprintln!("bench: phase 1 of 2: no replay");
        let baseline = measure_at(&baseline_args, &target)?;
        eprintln!(
            "bench: phase 2 of 2: {} clients resume from id 0 as it starts",
            args.replayers
        );
        let with = measure_at(args, &target)?;
        print_comparison(args, &baseline, &with, "with replay");
        return Ok(());
    }
    if args.slow == 0 {
        let report = measure_at(args, &target)?;
        print_report(args, &report);
        return Ok(());
    }
    let baseline_args = BenchArgs {
        slow: 0,
        ..args.clone()
    };
    eprintln!("bench: phase 1 of 2: no slow subscribers");
    let baseline = measure_at(&baseline_args, &target)?;
    eprintln!(
        "bench: phase 2 of 2: {} of {} subscribers never read",
        args.slow, args.subscribers
    );
    let slow = measure_at(args, &target)?;
    let label = format!("{} never reading", args.slow);
    print_comparison(args, &baseline, &slow, &label);
    Ok(())
}

/// The longest `--duration` or `--warmup`, as `firehose stress` allows.
const MAX_SECONDS: f64 = 86_400.0;

/// Checks a number of seconds `flag` gives: finite, at most [`MAX_SECONDS`], above 0
/// unless `zero` allows it.
fn check_seconds(flag: &str, value: f64, zero: bool) -> Result<(), BenchError> {
    let low_ok = if zero { value >= 0.0 } else { value > 0.0 };
    if low_ok && value <= MAX_SECONDS {
        return Ok(());
    }
    Err(BenchError::Flag(format!(
        "{flag} must be a number of seconds {}, not {value}",
        if zero {
            format!("from 0 to {MAX_SECONDS}")
        } else {
            format!("above 0 and at most {MAX_SECONDS}")
        }
    )))
}

/// Checks the flags of a measuring run (not `--idle`) and parses the target, before
/// anything connects: a two-phase run would otherwise find a bad flag only after its
/// first phase.
fn check(args: &BenchArgs) -> Result<Target, BenchError> {
    let (low, high) = window_range(args.publish_over);
    if !(low..=high).contains(&window(args)) {
        return Err(BenchError::Flag(format!(
            "--window must be from {low} to {high} with --publish-over {}",
            args.publish_over.name()
        )));
    }
    if args.slow > args.subscribers
        || args.subscribers == 0
        || args.publishers == 0
        || args.client_threads == 0
    {
        return Err(BenchError::Flag(
            "--subscribers, --publishers and --client-threads must be at least 1, and --slow at most --subscribers".into(),
        ));
    }
    check_seconds("--duration", args.duration, false)?;
    check_seconds("--warmup", args.warmup, true)?;
    if !(args.rate.is_finite() && args.rate >= 0.0) {
        return Err(BenchError::Flag(format!(
            "--rate must be events per second, 0 for as fast as taken, not {}",
            args.rate
        )));
    }
    let (soft, _) = crate::raise_fd_limit();
    let needed = (args.subscribers + args.publishers + 64) as u64;
    if soft < needed {
        return Err(BenchError::Flag(format!(
            "{needed} sockets need `ulimit -n` of at least that; it is {soft}"
        )));
    }
    Target::parse(&args.target)
}

/// The `--window` values allowed over `over`.
fn window_range(over: Over) -> (u64, u64) {
    match over {
        // A `ref` every 64 messages confirms them: a smaller window would wait forever.
        Over::Ws => (64, 16_384),
        Over::Http => (1, publisher::MAX_HTTP_WINDOW),
    }
}

/// `--window`, or its default for the transport.
fn window(args: &BenchArgs) -> u64 {
    args.window.unwrap_or(match args.publish_over {
        Over::Ws => 4096,
        Over::Http => publisher::MAX_HTTP_WINDOW,
    })
}

/// Runs the bench and returns what it measured (progress lines go to stderr).
pub fn measure(args: &BenchArgs) -> Result<Report, BenchError> {
    measure_at(args, &check(args)?)
}

/// [`measure`] with `args` checked and its target parsed.
fn measure_at(args: &BenchArgs, target: &Target) -> Result<Report, BenchError> {
    let query = format!("types={}", args.event_type);
    let base = Instant::now();
    eprintln!(
        "bench: connecting {} subscriber{} ({} never reading) to {}",
        args.subscribers,
        if args.subscribers == 1 { "" } else { "s" },
        args.slow,
        target.addr
    );
    let mut slow = Vec::new();
    let mut groups: Vec<Vec<(TcpStream, Vec<u8>)>> =
        (0..args.client_threads).map(|_| Vec::new()).collect();
    for i in 0..args.subscribers {
        let conn = client::connect(
            target,
            &query,
            client::source_for(target, i, args.source_addrs),
        )?;
        if i < args.slow {
            slow.push(conn);
        } else {
            groups[i % args.client_threads].push(conn);
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    let mut reader_totals = Vec::new();
    for (i, conns) in groups
        .into_iter()
        .enumerate()
        .filter(|(_, g)| !g.is_empty())
    {
        let totals = Arc::new(subscribers::Totals::default());
        reader_totals.push(Arc::clone(&totals));
        let (stop, measuring) = (Arc::clone(&stop), Arc::clone(&measuring));
        readers.push(
            std::thread::Builder::new()
                .name(format!("bench-sub-{i}"))
                .spawn(move || subscribers::run(conns, totals, base, measuring, stop))
                .map_err(|e| BenchError::Client(e.to_string()))?,
        );
    }
    let plan = publisher::Plan {
        payload_bytes: args.payload_bytes,
        window: window(args),
        rate: (args.rate > 0.0).then(|| args.rate / args.publishers as f64),
        event_type: args.event_type.clone(),
        over: args.publish_over,
        host: target.addr.to_string(),
    };
    let mut pubs = Vec::new();
    let mut pub_totals = Vec::new();
    for i in 0..args.publishers {
        let source = client::source_for(target, args.subscribers + i, args.source_addrs);
        let stream = match args.publish_over {
            // Publishers subscribe to a type nobody publishes, so they receive only answers.
            Over::Ws => client::connect(target, "types=bench.publisher.answers-only", source)?.0,
            Over::Http => client::open(target, source)?,
        };
        let sent = Arc::new(publisher::Sent::default());
        pub_totals.push(Arc::clone(&sent));
        let (plan, stop) = (plan.clone(), Arc::clone(&stop));
        pubs.push(std::thread::spawn(move || {
            publisher::run(stream, plan, sent, base, stop)
        }));
    }
    let delivered = || {
        reader_totals
            .iter()
            .map(|t| t.events.load(Ordering::Relaxed))
            .sum::<u64>()
    };
    let notices = || {
        reader_totals
            .iter()
            .map(|t| t.notices.load(Ordering::Relaxed))
            .sum::<u64>()
    };
    let published = || {
        pub_totals
            .iter()
            .map(|t| t.sent.load(Ordering::Relaxed))
            .sum::<u64>()
    };
    std::thread::sleep(Duration::from_secs_f64(args.warmup));
    measuring.store(true, Ordering::Relaxed);
    let cpu0 = args.server_pid.and_then(proc_cpu_seconds);
    let rss0 = args.server_pid.and_then(proc_rss_kib);
    let (d0, n0, p0, t0) = (delivered(), notices(), published(), Instant::now());
    let end = t0 + Duration::from_secs_f64(args.duration);
    let replayers = (args.replayers > 0).then(|| {
        let (target, stop) = (target.clone(), Arc::clone(&stop));
        let (n, event_type) = (args.replayers, args.event_type.clone());
        let sources = (args.subscribers + args.publishers, args.source_addrs);
        std::thread::spawn(move || replay::run(&target, n, &event_type, sources, end, stop))
    });
    let (mut last_d, mut last_p, mut last_t) = (d0, p0, t0);
    while Instant::now() < end {
        std::thread::sleep(
            Duration::from_secs(1).min(end.saturating_duration_since(Instant::now())),
        );
        let (d, p, now) = (delivered(), published(), Instant::now());
        let dt = now.duration_since(last_t).as_secs_f64().max(1e-9);
        eprintln!(
            "bench: {:>5.1}s  delivered {:>12.0}/s  published {:>10.0}/s  notices {}",
            now.duration_since(t0).as_secs_f64(),
            (d - last_d) as f64 / dt,
            (p - last_p) as f64 / dt,
            notices() - n0
        );
        (last_d, last_p, last_t) = (d, p, now);
        if pubs.iter().any(|h| h.is_finished()) {
            break;
        }
    }
    let (d1, n1, p1, t1) = (delivered(), notices(), published(), Instant::now());
    measuring.store(false, Ordering::Relaxed);
    let cpu1 = args.server_pid.and_then(proc_cpu_seconds);
    let rss1 = args.server_pid.and_then(proc_rss_kib);
    stop.store(true, Ordering::Relaxed);
    let replay = match replayers {
        None => None,
        Some(h) => {
            let (outcome, readers) = h
                .join()
                .map_err(|_| BenchError::Client("replayer panicked".into()))??;
            for r in readers {
                let _ = r.join();
            }
            Some(outcome)
        }
    };
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
    for h in pubs {
        h.join()
            .map_err(|_| BenchError::Client("publisher panicked".into()))??;
    }
    for r in readers {
        let hist = r
            .join()
            .map_err(|_| BenchError::Client("reader panicked".into()))?
            .map_err(|e| BenchError::Client(e.to_string()))?;
        latency
            .add(&hist)
            .map_err(|e| BenchError::Client(e.to_string()))?;
    }
    drop(slow);
    Ok(Report {
        seconds: t1.duration_since(t0).as_secs_f64(),
        published: p1 - p0,
        delivered: d1 - d0,
        notices: n1 - n0,
        latency,
        server_cpu_s: cpu0.zip(cpu1).map(|(a, b)| b - a),
        server_rss_kib: rss1,
        server_rss_growth_kib: rss0.zip(rss1).map(|(a, b)| b as i64 - a as i64),
        replay,
    })
}

fn report_json(args: &BenchArgs, r: &Report, slow: usize) -> serde_json::Value {
    let q = |p: f64| r.latency.value_at_quantile(p);
    let rate = |n: u64| n as f64 / r.seconds;
    json!({
        "subscribers": args.subscribers, "slow": slow, "publishers": args.publishers,
        "publish_over": args.publish_over.name(),
        "payload_bytes": args.payload_bytes, "rate": args.rate, "seconds": r.seconds,
        "published": r.published, "published_per_s": rate(r.published),
        "delivered": r.delivered, "delivered_per_s": rate(r.delivered), "notices": r.notices,
        "latency_us": {"p50": q(0.5), "p99": q(0.99), "p999": q(0.999), "max": r.latency.max(), "samples": r.latency.len()},
        "server": {"cpu_s": r.server_cpu_s, "rss_kib": r.server_rss_kib, "rss_growth_kib": r.server_rss_growth_kib},
        "replay": r.replay.map(|o| json!({
            "replayers": args.replayers, "replayed": o.replayed, "seconds": o.seconds,
            "events_per_s": o.replayed as f64 / o.seconds.max(1e-9), "caught_up": o.caught_up,
        })),
    })
}

/// "N ev/s" or "as fast as taken".
fn rate_label(args: &BenchArgs) -> String {
    if args.rate > 0.0 {
        format!("{} ev/s", args.rate)
    } else {
        "as fast as taken".into()
    }
}

fn print_comparison(args: &BenchArgs, base: &Report, slow: &Report, label: &str) {
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    let row = |name: &str, f: &dyn Fn(&Report) -> String| {
        println!("  {name:<28} {:>16} {:>16}", f(base), f(slow))
    };
    println!();
    println!(
        "  {} subscribers, {} B payloads, {}",
        args.subscribers,
        args.payload_bytes,
        rate_label(args)
    );
    let first = if args.slow > 0 {
        "0 never reading"
    } else {
        "no replay"
    };
    println!("  {:<28} {:>16} {:>16}", "", first, label);
    row("published ev/s", &|r| {
        format!("{:.0}", r.published as f64 / r.seconds)
    });
    row("delivered msg/s (healthy)", &|r| {
        format!("{:.0}", r.delivered as f64 / r.seconds)
    });
    row("healthy p50 latency µs", &|r| {
        r.latency.value_at_quantile(0.5).to_string()
    });
    row("healthy p99 latency µs", &|r| {
        r.latency.value_at_quantile(0.99).to_string()
    });
    row("healthy max latency µs", &|r| r.latency.max().to_string());
    row("notices to healthy", &|r| r.notices.to_string());
    row("server CPU s", &|r| {
        opt(r.server_cpu_s.map(|c| format!("{c:.2}")))
    });
    row("server RSS KiB (end)", &|r| {
        opt(r.server_rss_kib.map(|v| v.to_string()))
    });
    row("server RSS growth KiB", &|r| {
        opt(r.server_rss_growth_kib.map(|v| v.to_string()))
    });
    if let Some(r) = slow.replay {
        let state = if r.caught_up { "" } else { " (not caught up)" };
        println!(
            "  replayed to {} clients      {} events in {:.3} s = {:.0} ev/s{state}",
            args.replayers,
            r.replayed,
            r.seconds,
            r.replayed as f64 / r.seconds.max(1e-9)
        );
    }
    let second = if args.slow > 0 {
        "with_slow"
    } else {
        "with_replay"
    };
    println!(
        "{}",
        json!({"baseline": report_json(args, base, 0), second: report_json(args, slow, args.slow)})
    );
}

fn print_report(args: &BenchArgs, r: &Report) {
    let q = |p: f64| r.latency.value_at_quantile(p);
    let rate = |n: u64| n as f64 / r.seconds;
    println!();
    println!(
        "  subscribers        {} ({} never reading)",
        args.subscribers, args.slow
    );
    println!(
        "  publishers         {} over {} (payload {} B, {})",
        args.publishers,
        args.publish_over.name(),
        args.payload_bytes,
        rate_label(args)
    );
    println!("  measured           {:.1} s", r.seconds);
    println!("  published          {:>14.0} ev/s", rate(r.published));
    println!("  delivered          {:>14.0} msg/s", rate(r.delivered));
    println!(
        "  latency p50 / p99  {} / {} µs (max {} µs, {} samples)",
        q(0.5),
        q(0.99),
        r.latency.max(),
        r.latency.len()
    );
    if let Some(cpu) = r.server_cpu_s {
        println!("  server CPU         {cpu:.2} s");
    }
    if let (Some(rss), Some(growth)) = (r.server_rss_kib, r.server_rss_growth_kib) {
        println!("  server RSS         {rss} KiB (growth {growth} KiB)");
    }
    let line = report_json(args, r, args.slow);
    println!("{line}");
}
