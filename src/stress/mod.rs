//! `firehose stress`: the reproducible burst scenario.
//!
//! Starts an embedded server on a free loopback port (or drives a running one with
//! `--target`), connects `--clients` WebSocket subscribers, registers an in-process
//! subscriber that fails a seeded fraction of deliveries, and publishes
//! `workflow.step.completed` events with `{"seq": n}` payloads at a fixed rate. It prints a
//! progress line each second and ends with a table: the publisher's achieved rate, what
//! each client received, the dead-letter queue's depth against the expected
//! `ratio × published`, delivery latency, and drops. `--check` turns the healthy-run
//! outcomes into the exit status.
//!
//! Reproducible: the run publishes exactly `rate × duration` events, and whether event
//! `seq` fails is a function of the seed alone ([`inject::fails`]), so two runs with the
//! same seed put the same events (same ids, on a fresh embedded server) in the DLQ.

pub(crate) mod clients;
pub mod inject;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::trace::Tracer;
use crate::{Bridge, Config, Filter};
use clients::{Received, SendTimes, Subscriber, EVENT_TYPE};

/// Name of the failing in-process subscriber (as the DLQ shows it).
pub const FAILING_SUBSCRIBER: &str = "stress.failing";

/// `firehose stress` flags.
#[derive(Debug, Clone, Args)]
pub struct StressArgs {
    /// Events published per second.
    #[arg(long, default_value_t = 1000.0)]
    pub events_per_second: f64,
    /// Seconds of publishing (the run publishes exactly rate × duration events).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Fraction of deliveries the in-process subscriber fails (0 to 1), chosen from the
    /// seed; each failure lands in the dead-letter queue. Needs the embedded server (with
    /// --target, use 0).
    #[arg(long, default_value_t = 0.05)]
    pub failing_subscriber_ratio: f64,
    /// Seed for choosing the failing deliveries: the same seed fails the same events.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// WebSocket subscribers.
    #[arg(long, default_value_t = 10)]
    pub clients: usize,
    /// Drive a running server (http://HOST:PORT) instead of starting an embedded one.
    #[arg(long)]
    pub target: Option<String>,
    /// Exit with status 1 unless the healthy-run outcomes hold: publisher rate within 2 %
    /// of the target, every client received ≥ 99 % of the events, DLQ depth within ±20 %
    /// of ratio × published, p95 delivery latency under 50 ms.
    #[arg(long)]
    pub check: bool,
    /// Write the ids of the events in the DLQ (one per line, ascending) to this file.
    #[arg(long)]
    pub dlq_out: Option<PathBuf>,
    /// Append every span to this file as JSON lines: the harness's `workflow.step` spans
    /// (one per published event, under the event's trace id) and, with the embedded
    /// server (sampling every trace), the server's `event.publish`, `ws.write` and
    /// `subscriber.invoke` spans of the same traces.
    #[arg(long)]
    pub spans_out: Option<PathBuf>,
    /// Seconds to wait, after the last publish, for deliveries still in flight.
    #[arg(long, default_value_t = 5.0)]
    pub drain: f64,
    /// I/O threads of the embedded server [default: usable cores].
    #[arg(long)]
    pub io_threads: Option<usize>,
}

/// Why a stress run could not run (a run whose checks fail is not an error: see
/// [`Outcome::failed_checks`]).
#[derive(Debug, thiserror::Error)]
pub enum StressError {
    /// A flag out of range.
    #[error("{0}")]
    Flag(String),
    /// The embedded server did not start.
    #[error("cannot start the embedded server: {0}")]
    Start(#[from] crate::StartError),
    /// Could not connect.
    #[error("cannot connect to {0}: {1} (is the server running?)")]
    Connect(SocketAddr, String),
    /// The publisher's connection failed.
    #[error("publisher: {0}")]
    Publisher(String),
    /// A subscriber's connection failed or saw something wrong.
    #[error("subscriber: {0}")]
    Subscriber(String),
    /// An HTTP endpoint failed.
    #[error("GET {0}: {1}")]
    Http(String, String),
    /// Writing --dlq-out failed.
    #[error("cannot write {0}: {1}")]
    Write(PathBuf, std::io::Error),
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The table and the JSON line, as printed.
    pub report: Value,
    /// The checks that did not hold (empty when all did).
    pub failed_checks: Vec<String>,
}

impl StressArgs {
    /// How many events the run publishes.
    pub fn total_events(&self) -> u64 {
        (self.events_per_second * self.duration).round() as u64
    }
}

fn check_flags(a: &StressArgs) -> Result<(), StressError> {
    let bad = |m: &str| Err(StressError::Flag(m.to_owned()));
    if !(a.events_per_second > 0.0 && a.events_per_second <= 1_000_000.0) {
        return bad("--events-per-second must be above 0 and at most 1000000");
    }
    if !(a.duration > 0.0 && a.duration <= 86_400.0) {
        return bad("--duration must be above 0 and at most 86400 seconds");
    }
    if a.events_per_second * a.duration > 50_000_000.0 {
        return bad("--events-per-second × --duration must be at most 50000000 events");
    }
    if !(0.0..=1.0).contains(&a.failing_subscriber_ratio) {
        return bad("--failing-subscriber-ratio must be between 0 and 1");
    }
    if a.clients == 0 || a.clients > 10_000 {
        return bad("--clients must be between 1 and 10000");
    }
    if !(a.drain >= 0.0 && a.drain <= 600.0) {
        return bad("--drain must be between 0 and 600 seconds");
    }
    if a.target.is_some() && a.failing_subscriber_ratio > 0.0 {
        return bad("--failing-subscriber-ratio needs the embedded server (the failing subscriber runs in-process); with --target pass --failing-subscriber-ratio 0");
    }
    Ok(())
}

fn parse_target(t: &str) -> Result<SocketAddr, StressError> {
    let bad = || StressError::Flag(format!("--target {t:?} is not http://HOST:PORT"));
    let rest = t.strip_prefix("http://").ok_or_else(bad)?;
    let hostport = rest.trim_end_matches('/');
    hostport
        .to_socket_addrs()
        .map_err(|_| bad())?
        .next()
        .ok_or_else(bad)
}

fn embedded(args: &StressArgs) -> Result<Bridge, StressError> {
    let mut config = Config {
        port: 0,
        pin_threads: false,
        trace_sample: 1.0,
        ..Config::default()
    };
    if let Some(path) = &args.spans_out {
        config.trace_exporter = crate::trace::TraceExporter::Json(path.clone());
        // Every trace is sampled: room for a whole run's spans (a step, a publish, a
        // subscriber call and a write per client, per event) so a busy machine that
        // starves the exporter loses none, within about 85 MB.
        config.trace_buffer = (args.total_events() as usize)
            .saturating_mul(args.clients + 3)
            .clamp(8_192, 262_144);
    }
    if let Some(n) = args.io_threads {
        config.io_threads = n;
    }
    let bridge = Bridge::builder().config(config).start()?;
    let (seed, ratio) = (args.seed, args.failing_subscriber_ratio);
    bridge
        .bus()
        .subscribe(
            FAILING_SUBSCRIBER,
            Filter::parse_list(EVENT_TYPE).expect("a valid type is a valid filter"),
            move |d| {
                let v: Value = serde_json::from_slice(&d.event.json()).unwrap_or_default();
                let seq = v["payload"]["seq"].as_u64().unwrap_or(u64::MAX);
                if inject::fails(seed, seq, ratio) {
                    Err(format!("injected failure (seed {seed}, seq {seq})"))
                } else {
                    Ok(())
                }
            },
        )
        .map_err(|e| StressError::Flag(e.to_string()))?;
    Ok(bridge)
}

/// Appends the harness's own spans to `path` as JSON lines.
fn write_spans(tracer: &Tracer, path: &std::path::Path) -> Result<(), StressError> {
    use std::io::Write;
    let mut spans = Vec::new();
    tracer.drain(&mut spans);
    let text: String = spans.iter().map(|s| format!("{}\n", s.to_json())).collect();
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| StressError::Write(path.to_owned(), e))
}

fn dlq_depth(addr: SocketAddr) -> Result<u64, StressError> {
    Ok(clients::get_json(addr, "/dlq/summary")?["depth"]
        .as_u64()
        .unwrap_or(0))
}

fn dropped(addr: SocketAddr) -> Result<u64, StressError> {
    Ok(clients::get_json(addr, "/health")?["events"]["dropped"]
        .as_u64()
        .unwrap_or(0))
}

/// Runs the scenario and prints progress (stderr), the table and a JSON line (stdout).
pub fn run(args: &StressArgs) -> Result<Outcome, StressError> {
    check_flags(args)?;
    if let (Some(path), Some(_)) = (&args.spans_out, &args.target) {
        // Fail now, not after the run (the embedded server's exporter checks at start).
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| StressError::Write(path.clone(), e))?;
    }
    crate::raise_fd_limit();
    let bridge = match &args.target {
        Some(_) => None,
        None => Some(embedded(args)?),
    };
    let addr = match (&bridge, &args.target) {
        (Some(b), _) => b.local_addr(),
        (None, Some(t)) => parse_target(t)?,
        (None, None) => unreachable!("one of the two is set"),
    };
    let total = args.total_events();
    eprintln!(
        "stress: {} {addr}: {total} events at {} ev/s, {} clients, failing ratio {} (seed {})",
        if bridge.is_some() {
            "embedded server on"
        } else {
            "the server at"
        },
        args.events_per_second,
        args.clients,
        args.failing_subscriber_ratio,
        args.seed
    );
    let dlq0 = dlq_depth(addr)?;
    let dropped0 = dropped(addr)?;
    let times = Arc::new(SendTimes::new(total as usize));
    let stop = Arc::new(AtomicBool::new(false));
    let mut subs = Vec::new();
    for _ in 0..args.clients {
        let sub = Subscriber::connect(addr)?;
        let got = Arc::new(Received {
            events: AtomicU64::new(0),
            notices: AtomicU64::new(0),
        });
        let (times, stop, g) = (Arc::clone(&times), Arc::clone(&stop), Arc::clone(&got));
        let handle = std::thread::Builder::new()
            .name("stress-sub".into())
            .spawn(move || sub.run(&times, &g, &stop))
            .map_err(|e| StressError::Subscriber(e.to_string()))?;
        subs.push((got, handle));
    }
    let sent = Arc::new(AtomicU64::new(0));
    // Embedded: steps join the server's spans (and its exporter); against a running
    // server they are the harness's own, written to --spans-out at the end.
    let tracer = match &bridge {
        Some(b) => Arc::clone(b.bus().tracer()),
        None => Arc::new(Tracer::new(1.0, total as usize + 1)),
    };
    let publisher = {
        let (times, sent) = (Arc::clone(&times), Arc::clone(&sent));
        let tracer = Arc::clone(&tracer);
        let rate = args.events_per_second;
        std::thread::Builder::new()
            .name("stress-pub".into())
            .spawn(move || clients::publish(addr, rate, total, &times, &sent, &tracer))
            .map_err(|e| StressError::Publisher(e.to_string()))?
    };
    let delivered = |subs: &[(Arc<Received>, _)]| -> u64 {
        subs.iter()
            .map(|(g, _)| g.events.load(Ordering::Relaxed))
            .sum()
    };
    let t0 = Instant::now();
    let mut next = t0 + Duration::from_secs(1);
    while !publisher.is_finished() {
        std::thread::sleep(Duration::from_millis(20));
        if Instant::now() >= next {
            next += Duration::from_secs(1);
            eprintln!(
                "stress: {:>5.1}s  published {:>9}  delivered {:>10}  dropped {:>6}  dlq {:>7}",
                t0.elapsed().as_secs_f64(),
                sent.load(Ordering::Relaxed),
                delivered(&subs),
                dropped(addr)?.saturating_sub(dropped0),
                dlq_depth(addr)?.saturating_sub(dlq0),
            );
        }
    }
    let publish_time = publisher
        .join()
        .map_err(|_| StressError::Publisher("the publisher thread panicked".into()))??;
    let published = sent.load(Ordering::Relaxed);
    // Drain: every client has everything, and the failing subscriber has judged everything.
    let drain_end = Instant::now() + Duration::from_secs_f64(args.drain);
    let judged = || {
        bridge.as_ref().is_none_or(|b| {
            b.bus()
                .subscribers()
                .iter()
                .all(|s| s.delivered + s.failed + s.timed_out + s.overflowed >= published)
        })
    };
    while Instant::now() < drain_end
        && !(subs
            .iter()
            .all(|(g, _)| g.events.load(Ordering::Relaxed) >= published)
            && judged())
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
    let mut per_client = Vec::new();
    let mut notices = 0;
    for (got, handle) in subs {
        let hist = handle
            .join()
            .map_err(|_| StressError::Subscriber("a subscriber thread panicked".into()))??;
        let _ = latency.add(&hist);
        per_client.push(got.events.load(Ordering::Relaxed));
        notices += got.notices.load(Ordering::Relaxed);
    }
    let dropped_total = dropped(addr)?.saturating_sub(dropped0);
    let mut dlq_ids: Vec<u64> = match &bridge {
        Some(b) => b
            .bus()
            .dlq()
            .entries()
            .iter()
            .map(|l| l.event.id())
            .collect(),
        None => clients::get_json(addr, "/dlq/entries?limit=10000")?["entries"]
            .as_array()
            .map(|a| a.iter().filter_map(|e| e["event"]["id"].as_u64()).collect())
            .unwrap_or_default(),
    };
    dlq_ids.sort_unstable();
    let dlq_depth_now = dlq_depth(addr)?.saturating_sub(dlq0);
    if let Some(path) = &args.dlq_out {
        let text: String = dlq_ids.iter().map(|id| format!("{id}\n")).collect();
        std::fs::write(path, text).map_err(|e| StressError::Write(path.clone(), e))?;
    }
    if tracer.dropped() > 0 {
        eprintln!(
            "stress: {} spans were overwritten before export (raise the span buffer or lower the rate)",
            tracer.dropped()
        );
    }
    match bridge {
        // Its exporter writes the spans out as it stops.
        Some(b) => b.shutdown(),
        None => {
            if let Some(path) = &args.spans_out {
                write_spans(&tracer, path)?;
            }
        }
    }
    let outcome = report(
        args,
        &Measured {
            published,
            publish_time,
            per_client,
            notices,
            latency,
            dropped: dropped_total,
            dlq_depth: dlq_depth_now,
            dlq_ids,
        },
    );
    Ok(outcome)
}

struct Measured {
    published: u64,
    publish_time: Duration,
    per_client: Vec<u64>,
    notices: u64,
    latency: Histogram<u64>,
    dropped: u64,
    dlq_depth: u64,
    dlq_ids: Vec<u64>,
}

/// FNV-1a over the ids' little-endian bytes: a short fingerprint to compare runs by eye.
fn fingerprint(ids: &[u64]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in ids.iter().flat_map(|id| id.to_le_bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn report(args: &StressArgs, m: &Measured) -> Outcome {
    let rate = m.published as f64 / m.publish_time.as_secs_f64();
    let rate_err = (rate - args.events_per_second) / args.events_per_second;
    let ratios: Vec<f64> = m
        .per_client
        .iter()
        .map(|&d| {
            if m.published == 0 {
                1.0
            } else {
                d as f64 / m.published as f64
            }
        })
        .collect();
    let min_ratio = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let expected_dlq = args.failing_subscriber_ratio * m.published as f64;
    let dlq_err = if expected_dlq > 0.0 {
        (m.dlq_depth as f64 - expected_dlq) / expected_dlq
    } else if m.dlq_depth == 0 {
        0.0
    } else {
        f64::INFINITY
    };
    let ms = |q: f64| m.latency.value_at_quantile(q) as f64 / 1000.0;
    let (p50, p95, p99) = (ms(0.5), ms(0.95), ms(0.99));
    let checks = [
        (
            rate_err.abs() <= 0.02,
            format!(
                "publisher rate {rate:.1} ev/s is not within 2 % of {}",
                args.events_per_second
            ),
        ),
        (
            min_ratio >= 0.99,
            format!(
                "a client received only {:.2} % of the events",
                min_ratio * 100.0
            ),
        ),
        (
            dlq_err.abs() <= 0.20,
            format!(
                "DLQ depth {} is not within ±20 % of the expected {expected_dlq:.0}",
                m.dlq_depth
            ),
        ),
        (
            m.latency.is_empty() || p95 < 50.0,
            format!("p95 delivery latency {p95:.2} ms is not under 50 ms"),
        ),
    ];
    let ok = |b: bool| if b { "ok" } else { "FAILED" };
    println!();
    println!(
        "  firehose stress: seed {}, {} ev/s for {} s, {} clients, failing ratio {}",
        args.seed,
        args.events_per_second,
        args.duration,
        args.clients,
        args.failing_subscriber_ratio
    );
    println!(
        "  publisher rate        {rate:>10.1} ev/s  (target {}, {:+.2} %)   {}",
        args.events_per_second,
        rate_err * 100.0,
        ok(checks[0].0)
    );
    println!("  published             {:>10}", m.published);
    println!(
        "  delivered/published   min {:.4} over {} clients: {}   {}",
        min_ratio,
        ratios.len(),
        ratios
            .iter()
            .take(10)
            .map(|r| format!("{r:.4}"))
            .collect::<Vec<_>>()
            .join(" ")
            + if ratios.len() > 10 { " …" } else { "" },
        ok(checks[1].0)
    );
    println!(
        "  DLQ depth             {:>10}  (expected ≈ {expected_dlq:.0}, {:+.1} %)   {}",
        m.dlq_depth,
        dlq_err * 100.0,
        ok(checks[2].0)
    );
    println!(
        "  latency p50/p95/p99   {p50:.2} / {p95:.2} / {p99:.2} ms  ({} samples)   {}",
        m.latency.len(),
        ok(checks[3].0)
    );
    println!(
        "  dropped               {:>10}  (notices to clients: {})",
        m.dropped, m.notices
    );
    println!(
        "  DLQ event ids         {} ids, fingerprint {:016x}, first {:?}",
        m.dlq_ids.len(),
        fingerprint(&m.dlq_ids),
        &m.dlq_ids[..m.dlq_ids.len().min(8)]
    );
    let failed_checks: Vec<String> = checks
        .iter()
        .filter(|(pass, _)| !pass)
        .map(|(_, why)| why.clone())
        .collect();
    let report = json!({
        "seed": args.seed, "events_per_second": args.events_per_second,
        "duration_s": args.duration, "clients": args.clients,
        "failing_subscriber_ratio": args.failing_subscriber_ratio,
        "published": m.published, "publisher_rate": rate,
        "delivered_per_client": m.per_client, "min_delivered_ratio": min_ratio,
        "dlq_depth": m.dlq_depth, "dlq_expected": expected_dlq,
        "dlq_fingerprint": format!("{:016x}", fingerprint(&m.dlq_ids)),
        "latency_ms": {"p50": p50, "p95": p95, "p99": p99, "samples": m.latency.len()},
        "dropped": m.dropped, "notices": m.notices,
        "checks_failed": failed_checks,
    });
    println!("{report}");
    Outcome {
        report,
        failed_checks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_and_bad_flags_are_named() {
        assert_eq!(
            parse_target("http://127.0.0.1:8765").unwrap(),
            "127.0.0.1:8765".parse().unwrap()
        );
        assert!(parse_target("ws://127.0.0.1:8765").is_err());
        let base = StressArgs {
            events_per_second: 1000.0,
            duration: 10.0,
            failing_subscriber_ratio: 0.05,
            seed: 42,
            clients: 10,
            target: None,
            check: false,
            dlq_out: None,
            spans_out: None,
            drain: 5.0,
            io_threads: None,
        };
        assert!(check_flags(&base).is_ok());
        for (bad, flag) in [
            (
                StressArgs {
                    events_per_second: 0.0,
                    ..base.clone()
                },
                "--events-per-second",
            ),
            (
                StressArgs {
                    duration: f64::NAN,
                    ..base.clone()
                },
                "--duration",
            ),
            (
                StressArgs {
                    failing_subscriber_ratio: 1.5,
                    ..base.clone()
                },
                "--failing-subscriber-ratio",
            ),
            (
                StressArgs {
                    clients: 0,
                    ..base.clone()
                },
                "--clients",
            ),
            (
                StressArgs {
                    target: Some("http://127.0.0.1:1".into()),
                    ..base.clone()
                },
                "--failing-subscriber-ratio",
            ),
        ] {
            let e = check_flags(&bad).unwrap_err().to_string();
            assert!(e.contains(flag), "{e}");
        }
    }

    #[test]
    fn fingerprint_tells_id_sets_apart() {
        assert_eq!(fingerprint(&[1, 2, 3]), fingerprint(&[1, 2, 3]));
        assert_ne!(fingerprint(&[1, 2, 3]), fingerprint(&[1, 2, 4]));
    }
}
