//! The command line: raw flags, documented once, turned into validated settings.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::bench::BenchArgs;
use crate::config::{default_io_threads, Config};
use crate::policy::Policy;
use crate::stress::StressArgs;

/// firehose: a lock-free event fan-out engine. Publishers push events (in-process,
/// POST /publish, WebSocket publish messages); firehose delivers them to many WebSocket
/// and Server-Sent Events subscribers, with bounded per-client queues so a slow client
/// never slows anyone else.
#[derive(Debug, Parser)]
#[command(name = "firehose", version, propagate_version = true)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server, all on one port: subscriptions over WebSocket (/ws/events) and
    /// Server-Sent Events (/sse/events), POST /publish, the dead-letter queue (/dlq/summary,
    /// /dlq/entries, POST /dlq/retry), and GET /health, /metrics, /stats, /connections and
    /// /spans/recent.
    Serve(ServeArgs),
    /// Measure a running fan-out server end to end: N WebSocket subscribers, publishers
    /// sending as fast as the server takes them (or at a set rate), delivered msg/s and
    /// latency percentiles.
    Bench(BenchArgs),
    /// The reproducible burst scenario: an embedded server (or --target), WebSocket
    /// subscribers, an in-process subscriber failing a seeded fraction of deliveries into
    /// the dead-letter queue, paced publishing; progress each second, then a table.
    Stress(StressArgs),
}

/// `firehose serve` flags.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (0.0.0.0 for every interface).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Port to listen on (0 picks a free port and prints it).
    #[arg(long, default_value_t = 8765)]
    pub port: u16,
    /// I/O threads, each with its own event loop and listening socket [default: usable cores].
    #[arg(long)]
    pub io_threads: Option<usize>,
    /// Do not pin I/O threads to cores.
    #[arg(long)]
    pub no_pin: bool,
    /// Events a subscriber may have waiting (1 to 4,294,967,295); when full, its overflow
    /// policy (--overflow) decides what gives way, for that subscriber only.
    #[arg(long, default_value_t = 2_000)]
    pub queue_capacity: usize,
    /// Bytes of events a subscriber may have waiting (at least --max-event-bytes + 50, the largest SSE record, and at
    /// most 4 GiB − 1); past it the queue counts as full, whatever --queue-capacity says.
    #[arg(long, default_value_t = 1024 * 1024)]
    pub queue_max_bytes: usize,
    /// Kernel send buffer of each connection (SO_SNDBUF), 4096 bytes to 1 GiB. Unset, the
    /// kernel autotunes it up to net.ipv4.tcp_wmem's maximum (often 4 MiB), so a subscriber
    /// that stops reading can hold that much in the kernel beyond its queue; set, it bounds
    /// that. Linux doubles the value for its bookkeeping and caps it at net.core.wmem_max.
    /// Small values cost throughput (README, "When a client falls behind").
    #[arg(long, value_name = "BYTES")]
    pub socket_send_buffer: Option<usize>,
    /// What a subscriber's full queue does with one more event, unless the subscription
    /// chooses (`?overflow=`): drop-newest (the incoming event is dropped), drop-oldest (the
    /// oldest queued event gives way), priority (lanes control > critical > important >
    /// bulk; lower lanes are evicted first; control is never dropped, but a client whose
    /// queue reaches twice its bounds is closed as under disconnect), disconnect (close
    /// with 1008 "slow consumer" after a final notice of the last id delivered), catch-up
    /// (nothing dropped: the subscriber reads the log at its own pace, then rejoins live;
    /// only events trimmed before it reads them are lost, told in a `gap` notice).
    #[arg(long, default_value = "drop-newest")]
    pub overflow: Policy,
    /// Overflow policies subscriptions may choose, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "drop-newest,drop-oldest,priority,disconnect,catch-up"
    )]
    pub allowed_overflow: Vec<Policy>,
    /// Most events the log retains for lagging I/O threads and for replay to resuming
    /// (`last_event_id`) and `catch-up` subscribers; older ones are trimmed continuously
    /// by a background thread.
    #[arg(long, default_value_t = 65_536)]
    pub retention_events: usize,
    /// Most bytes of encoded events the log retains.
    #[arg(long, default_value_t = 256 * 1024 * 1024)]
    pub retention_bytes: usize,
    /// Events older than this many seconds leave the log; 0 means no age limit.
    #[arg(long, default_value_t = 0.0)]
    pub retention_age: f64,
    /// Open connections (HTTP and WebSocket) before new ones get 503.
    #[arg(long, default_value_t = 100_000)]
    pub max_connections: usize,
    /// Largest inbound WebSocket message in bytes; larger ones close the connection (1009).
    #[arg(long, default_value_t = 64 * 1024)]
    pub max_message_bytes: usize,
    /// Largest HTTP request head in bytes; larger ones get 431.
    #[arg(long, default_value_t = 16 * 1024)]
    pub max_header_bytes: usize,
    /// Largest HTTP request body in bytes; larger ones get 413.
    #[arg(long, default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Largest encoded event in bytes.
    #[arg(long, default_value_t = 64 * 1024)]
    pub max_event_bytes: usize,
    /// Most events in one POST /publish array.
    #[arg(long, default_value_t = 10_000)]
    pub max_batch_events: usize,
    /// Seconds a connection has to send a complete request (and a kept-alive one, its next).
    #[arg(long, default_value_t = 10.0)]
    pub handshake_timeout: f64,
    /// Seconds of inbound silence before the server pings a WebSocket client.
    #[arg(long, default_value_t = 20.0)]
    pub ping_interval: f64,
    /// Seconds of inbound silence before the server closes a WebSocket (1001).
    #[arg(long, default_value_t = 60.0)]
    pub idle_timeout: f64,
    /// Seconds to wait for the client's close frame after the server closes.
    #[arg(long, default_value_t = 5.0)]
    pub close_timeout: f64,
    /// Seconds shutdown (SIGTERM, SIGINT, `Bridge::shutdown`) lets queued events reach
    /// their clients, with no new connections or events taken, before closing every
    /// WebSocket with 1001 and the last id delivered to it (so it can resume elsewhere);
    /// 0 closes at once, and so does a second SIGTERM or SIGINT during the drain.
    #[arg(long, default_value_t = 5.0)]
    pub drain_timeout: f64,
    /// Seconds a subscriber's socket may take no bytes, with output waiting, before the
    /// connection is evicted (counted in `evicted.write_stall`).
    #[arg(long, default_value_t = 10.0)]
    pub write_stall_timeout: f64,
    /// Consecutive failed writes (errors other than "would block") before a connection is
    /// evicted (counted in `evicted.write_errors`).
    #[arg(long, default_value_t = 3)]
    pub max_failed_writes: u32,
    /// Seconds an `ack=critical|all` subscription has to acknowledge an event
    /// (`{"op":"ack","id":N}`, cumulative) before it is sent again marked
    /// `"redelivered":true`; redeliveries back off (1, 2, 4 timeouts) and after 3 the event
    /// goes to the dead-letter queue with the connection id.
    #[arg(long, default_value_t = 5.0)]
    pub ack_timeout: f64,
    /// Most events an `ack=` subscription may have outstanding (queued or not yet
    /// acknowledged); at the bound it takes no more until acks come (flow control: it
    /// catches up from the log, nothing is dropped).
    #[arg(long, default_value_t = 1000)]
    pub max_unacked: usize,
    /// Milliseconds one in-process subscriber call may run; past it the event goes to the
    /// dead-letter queue as "timeout after N ms" (embedders' `Bus::subscribe`).
    #[arg(long, default_value_t = 250)]
    pub subscriber_timeout_ms: u64,
    /// Seconds between console exporter lines.
    #[arg(long, default_value_t = 1.0)]
    pub metrics_interval: f64,
    /// Where metrics go besides GET /metrics (Prometheus) and GET /stats (JSON), which are
    /// always served: `console` prints one line per --metrics-interval on stderr.
    #[arg(long, value_enum, default_value = "none")]
    pub metrics_exporter: crate::metrics::Exporter,
    /// Dead-letter queue bound in entries; past it the oldest entries are evicted and
    /// counted (`dlq.evicted` in /health). 0 = unbounded.
    #[arg(long, default_value_t = 100_000)]
    pub dlq_max_entries: usize,
    /// Dead-letter queue bound in bytes (events, messages and bookkeeping); past it the
    /// oldest entries are evicted and counted. 0 = unbounded.
    #[arg(long, default_value_t = 256 * 1024 * 1024)]
    pub dlq_max_bytes: usize,
    /// The probability (0 to 1) that an event's trace is sampled: its `event.publish`,
    /// `subscriber.invoke` and `ws.write` spans are recorded. Decided per trace id, so a
    /// trace is kept whole or not at all.
    #[arg(long, default_value_t = 0.01)]
    pub trace_sample: f64,
    /// Where sampled spans go besides GET /spans/recent: `none`, `console` (one line per
    /// span on stderr), `json:PATH` (one JSON object per line, appended) or `otlp:URL`
    /// (OTLP/HTTP protobuf, e.g. otlp:http://127.0.0.1:4318/v1/traces; plain http only;
    /// needs a build with `--features otlp`).
    #[arg(long, default_value = "none")]
    pub trace_exporter: crate::trace::TraceExporter,
    /// Spans buffered between recording and export (every 100 ms); when it is full the
    /// oldest give way and are counted (`firehose_spans_dropped_total`).
    #[arg(long, default_value_t = 8_192)]
    pub trace_buffer: usize,
    /// Write the bound address to this file once listening (for scripts using --port 0).
    #[arg(long)]
    pub addr_file: Option<PathBuf>,
}

/// A duration flag that is not a finite, non-negative number of seconds.
#[derive(Debug, thiserror::Error)]
#[error("--{0} must be a number of seconds between 0 and 1e9, not {1}")]
pub struct DurationError(pub &'static str, pub f64);

fn seconds(name: &'static str, s: f64) -> Result<Duration, DurationError> {
    if s.is_finite() && (0.0..=1e9).contains(&s) {
        Ok(Duration::from_secs_f64(s))
    } else {
        Err(DurationError(name, s))
    }
}

impl ServeArgs {
    /// The engine configuration these flags ask for (checked later by `Config::validate`).
    pub fn config(&self) -> Result<Config, DurationError> {
        Ok(Config {
            host: self.host,
            port: self.port,
            io_threads: self.io_threads.unwrap_or_else(default_io_threads),
            pin_threads: !self.no_pin,
            queue_capacity: self.queue_capacity,
            queue_max_bytes: self.queue_max_bytes,
            socket_send_buffer: self.socket_send_buffer,
            overflow: self.overflow,
            allowed_overflow: self.allowed_overflow.clone(),
            retention_events: self.retention_events,
            retention_bytes: self.retention_bytes,
            retention_age: Some(seconds("retention-age", self.retention_age)?)
                .filter(|a| !a.is_zero()),
            max_connections: self.max_connections,
            max_message_bytes: self.max_message_bytes,
            max_header_bytes: self.max_header_bytes,
            max_body_bytes: self.max_body_bytes,
            max_event_bytes: self.max_event_bytes,
            max_batch_events: self.max_batch_events,
            handshake_timeout: seconds("handshake-timeout", self.handshake_timeout)?,
            ping_interval: seconds("ping-interval", self.ping_interval)?,
            idle_timeout: seconds("idle-timeout", self.idle_timeout)?,
            close_timeout: seconds("close-timeout", self.close_timeout)?,
            drain_timeout: seconds("drain-timeout", self.drain_timeout)?,
            write_stall_timeout: seconds("write-stall-timeout", self.write_stall_timeout)?,
            max_failed_writes: self.max_failed_writes,
            ack_timeout: seconds("ack-timeout", self.ack_timeout)?,
            max_unacked: self.max_unacked,
            subscriber_timeout: Duration::from_millis(self.subscriber_timeout_ms),
            metrics_interval: seconds("metrics-interval", self.metrics_interval)?,
            metrics_exporter: self.metrics_exporter,
            dlq_max_entries: self.dlq_max_entries,
            dlq_max_bytes: self.dlq_max_bytes,
            trace_sample: self.trace_sample,
            trace_exporter: self.trace_exporter.clone(),
            trace_buffer: self.trace_buffer,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent_and_defaults_match_the_library() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["firehose", "serve"]).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!()
        };
        let cfg = args.config().unwrap();
        let def = Config::default();
        assert_eq!(cfg.port, def.port);
        assert_eq!(cfg.queue_capacity, def.queue_capacity);
        assert_eq!(cfg.overflow, def.overflow);
        assert_eq!(cfg.queue_max_bytes, def.queue_max_bytes);
        assert_eq!(cfg.allowed_overflow, def.allowed_overflow);
        assert_eq!(cfg.retention_events, def.retention_events);
        assert_eq!(cfg.max_message_bytes, def.max_message_bytes);
        assert_eq!(cfg.handshake_timeout, def.handshake_timeout);
        assert_eq!(cfg.idle_timeout, def.idle_timeout);
        assert_eq!(cfg.ping_interval, def.ping_interval);
        assert_eq!(cfg.close_timeout, def.close_timeout);
        assert_eq!(cfg.drain_timeout, def.drain_timeout);
        assert_eq!(cfg.max_connections, def.max_connections);
        assert_eq!(cfg.write_stall_timeout, def.write_stall_timeout);
        assert_eq!(cfg.max_failed_writes, def.max_failed_writes);
        assert_eq!(cfg.ack_timeout, def.ack_timeout);
        assert_eq!(cfg.max_unacked, def.max_unacked);
        assert_eq!(cfg.subscriber_timeout, def.subscriber_timeout);
        assert_eq!(cfg.metrics_interval, def.metrics_interval);
        assert_eq!(cfg.metrics_exporter, def.metrics_exporter);
        assert_eq!(cfg.dlq_max_entries, def.dlq_max_entries);
        assert_eq!(cfg.dlq_max_bytes, def.dlq_max_bytes);
    }

    #[test]
    fn bad_durations_are_named() {
        let cli = Cli::try_parse_from(["firehose", "serve", "--idle-timeout", "NaN"]).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!()
        };
        assert!(args
            .config()
            .unwrap_err()
            .to_string()
            .contains("--idle-timeout"));
    }
}
