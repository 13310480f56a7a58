//! Engine configuration: every limit in one place, with its default and its check.
//!
//! Memory is a function of these numbers, not of load: the log holds `retention_events`
//! events, each connection at most `queue_capacity` frames plus a bounded control lane,
//! and at most `max_connections` connections exist.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::policy::Policy;

/// Engine settings. `Config::default()` is what `firehose serve` runs with no flags.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address to listen on.
    pub host: IpAddr,
    /// Port (0 = any free port; see [`crate::Bridge::local_addr`]).
    pub port: u16,
    /// I/O threads; each runs its own event loop on its own listening socket.
    pub io_threads: usize,
    /// Pin each I/O thread to a core.
    pub pin_threads: bool,
    /// Events each connection may have waiting; what happens beyond is the overflow policy.
    pub queue_capacity: usize,
    /// Bytes of events each connection may have waiting (the frames are shared, so this
    /// bounds what one connection can pin, not a copy).
    pub queue_max_bytes: usize,
    /// The kernel send buffer of each accepted socket (`SO_SNDBUF`), in bytes. `None`
    /// leaves it to the kernel's autotuning, which lets a subscriber that stops reading
    /// hold up to `net.ipv4.tcp_wmem`'s maximum in the kernel beyond its queue.
    pub socket_send_buffer: Option<usize>,
    /// The overflow policy of subscriptions that do not choose one (`?overflow=`).
    pub overflow: Policy,
    /// The policies clients may choose.
    pub allowed_overflow: Vec<Policy>,
    /// Most events the log retains (see [`crate::retention`]).
    pub retention_events: usize,
    /// Most bytes of encoded events the log retains.
    pub retention_bytes: usize,
    /// Events older than this leave the log (`None`: no age limit).
    pub retention_age: Option<Duration>,
    /// Open connections (HTTP and WebSocket) before new ones are refused with 503.
    pub max_connections: usize,
    /// Largest inbound WebSocket message (after reassembling fragments).
    pub max_message_bytes: usize,
    /// Largest HTTP request head (request line and headers).
    pub max_header_bytes: usize,
    /// Largest HTTP request body.
    pub max_body_bytes: usize,
    /// Largest encoded event.
    pub max_event_bytes: usize,
    /// Most events in one `POST /publish` array.
    pub max_batch_events: usize,
    /// Time a new connection has to send a complete request (and a kept-alive one, the next).
    pub handshake_timeout: Duration,
    /// Inbound silence after which the server sends a ping.
    pub ping_interval: Duration,
    /// Inbound silence after which the server closes the WebSocket (1001).
    pub idle_timeout: Duration,
    /// Time to wait for the client's close frame (and for output to drain) after closing.
    pub close_timeout: Duration,
    /// At shutdown, how long queued events may take to reach their clients before every
    /// connection is closed (1001, with the last id delivered). Zero closes at once.
    pub drain_timeout: Duration,
    /// A connection whose socket takes no bytes for this long, with output waiting, is
    /// evicted (`ws.evicted`, reason `write_stall`).
    pub write_stall_timeout: Duration,
    /// Consecutive failed writes (errors other than "would block") before eviction.
    pub max_failed_writes: u32,
    /// An `ack=` subscription's event not acknowledged this long after it was queued is
    /// redelivered (then after twice, four times as long), and finally dead-lettered.
    pub ack_timeout: Duration,
    /// Most events an `ack=` subscription may have outstanding (queued or unacknowledged);
    /// at the bound it takes no more until acks come (flow control, no loss).
    pub max_unacked: usize,
    /// How long one in-process subscriber call may run before its event goes to the
    /// dead-letter queue.
    pub subscriber_timeout: Duration,
    /// How often the console exporter prints (`/stats` series are per second regardless).
    pub metrics_interval: Duration,
    /// Where metrics go besides `/metrics` and `/stats`.
    pub metrics_exporter: crate::metrics::Exporter,
    /// Dead-letter queue bound in entries (0 = unbounded); the oldest are evicted past it.
    pub dlq_max_entries: usize,
    /// Dead-letter queue bound in bytes (0 = unbounded); the oldest are evicted past it.
    pub dlq_max_bytes: usize,
    /// The probability that an event's trace is sampled (spans recorded), 0 to 1.
    pub trace_sample: f64,
    /// Where sampled spans go besides `GET /spans/recent`.
    pub trace_exporter: crate::trace::TraceExporter,
    /// Spans buffered for the exporter; when full the oldest give way (counted).
    pub trace_buffer: usize,
}

/// Smallest `--socket-send-buffer`: one page, below which the kernel's own floor applies.
pub const MIN_SOCKET_SEND_BUFFER: usize = 4096;
/// Largest `--socket-send-buffer` (the kernel caps it at `net.core.wmem_max` anyway).
pub const MAX_SOCKET_SEND_BUFFER: usize = 1 << 30;

impl Default for Config {
    fn default() -> Self {
        Self {
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 8765,
            io_threads: default_io_threads(),
            pin_threads: true,
            queue_capacity: 2_000,
            queue_max_bytes: 1024 * 1024,
            socket_send_buffer: None,
            overflow: Policy::DropNewest,
            allowed_overflow: Policy::ALL.to_vec(),
            retention_events: 65_536,
            retention_bytes: 256 * 1024 * 1024,
            retention_age: None,
            max_connections: 100_000,
            max_message_bytes: 64 * 1024,
            max_header_bytes: 16 * 1024,
            max_body_bytes: 1024 * 1024,
            max_event_bytes: 64 * 1024,
            max_batch_events: 10_000,
            handshake_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(60),
            close_timeout: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(5),
            write_stall_timeout: Duration::from_secs(10),
            max_failed_writes: 3,
            ack_timeout: Duration::from_secs(5),
            max_unacked: 1000,
            subscriber_timeout: Duration::from_millis(250),
            metrics_interval: Duration::from_secs(1),
            metrics_exporter: crate::metrics::Exporter::None,
            dlq_max_entries: 100_000,
            dlq_max_bytes: 256 * 1024 * 1024,
            trace_sample: 0.01,
            trace_exporter: crate::trace::TraceExporter::None,
            trace_buffer: 8_192,
        }
    }
}

/// The number of cores this process may run on.
pub fn default_io_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl Config {
    /// What in-process subscribers run with.
    pub fn sink_settings(&self) -> crate::sink::SinkSettings {
        crate::sink::SinkSettings {
            invoke_timeout: self.subscriber_timeout,
            queue_capacity: self.queue_capacity,
        }
    }

    /// The dead-letter queue's bounds.
    pub fn dlq_limits(&self) -> crate::dlq::Limits {
        crate::dlq::Limits {
            max_entries: self.dlq_max_entries,
            max_bytes: self.dlq_max_bytes,
        }
    }

    /// The retention bounds the trimmer enforces.
    pub fn retention(&self) -> crate::retention::Limits {
        crate::retention::Limits {
            events: self.retention_events,
            bytes: self.retention_bytes,
            age: self.retention_age,
        }
    }

    /// Slots in the log's ring: twice the retained count, rounded up to a power of two, so
    /// publishers find slots the trimmer has already emptied.
    pub fn log_capacity(&self) -> usize {
        (self.retention_events.saturating_mul(2)).next_power_of_two()
    }

    /// The socket address to bind.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.port)
    }

    /// Checks that the settings can work together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("io-threads", self.io_threads),
            ("queue-capacity", self.queue_capacity),
            ("retention-events", self.retention_events),
            ("retention-bytes", self.retention_bytes),
            ("max-connections", self.max_connections),
            ("max-message-bytes", self.max_message_bytes),
            ("max-header-bytes", self.max_header_bytes),
            ("max-body-bytes", self.max_body_bytes),
            ("max-event-bytes", self.max_event_bytes),
            ("max-batch-events", self.max_batch_events),
            ("trace-buffer", self.trace_buffer),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        if self.io_threads > 1024 {
            return Err(ConfigError::TooLarge("io-threads", self.io_threads, 1024));
        }
        if self.retention_events > 1 << 24 {
            return Err(ConfigError::TooLarge(
                "retention-events",
                self.retention_events,
                1 << 24,
            ));
        }
        if !(0.0..=1.0).contains(&self.trace_sample) {
            return Err(ConfigError::Probability("trace-sample"));
        }
        if self.max_header_bytes < 1024 {
            return Err(ConfigError::TooSmall(
                "max-header-bytes",
                self.max_header_bytes,
                1024,
            ));
        }
        for (name, d) in [
            ("handshake-timeout", self.handshake_timeout),
            ("ping-interval", self.ping_interval),
            ("idle-timeout", self.idle_timeout),
            ("ack-timeout", self.ack_timeout),
            ("close-timeout", self.close_timeout),
            ("write-stall-timeout", self.write_stall_timeout),
            ("subscriber-timeout-ms", self.subscriber_timeout),
            ("metrics-interval", self.metrics_interval),
        ] {
            if d.is_zero() {
                return Err(ConfigError::Zero(name));
            }
        }
        // Any single event the server accepts must fit an empty queue, and the log.
        let largest_frame = self.max_event_bytes + crate::ws::frame::MAX_HEADER_LEN;
        if self.retention_bytes < largest_frame {
            return Err(ConfigError::BelowLargestEvent(
                "retention-bytes",
                self.retention_bytes,
                self.max_event_bytes,
                largest_frame,
            ));
        }
        if self.retention_age.is_some_and(|a| a.is_zero()) {
            return Err(ConfigError::Zero("retention-age"));
        }
        // An SSE record is the JSON with its `id:`/`data:` lines around it.
        let largest_record = self.max_event_bytes
            + crate::ws::frame::MAX_HEADER_LEN.max(crate::http::sse::MAX_RECORD_OVERHEAD);
        if self.queue_max_bytes < largest_record {
            return Err(ConfigError::BelowLargestEvent(
                "queue-max-bytes",
                self.queue_max_bytes,
                self.max_event_bytes,
                largest_record,
            ));
        }
        // Each connection keeps its bounds in 32 bits (an idle connection's size counts).
        let most = u32::MAX as usize;
        for (name, value) in [
            ("queue-capacity", self.queue_capacity),
            ("queue-max-bytes", self.queue_max_bytes),
        ] {
            if value > most {
                return Err(ConfigError::TooLarge(name, value, most));
            }
        }
        if let Some(bytes) = self.socket_send_buffer {
            if bytes < MIN_SOCKET_SEND_BUFFER {
                return Err(ConfigError::TooSmall(
                    "socket-send-buffer",
                    bytes,
                    MIN_SOCKET_SEND_BUFFER,
                ));
            }
            if bytes > MAX_SOCKET_SEND_BUFFER {
                return Err(ConfigError::TooLarge(
                    "socket-send-buffer",
                    bytes,
                    MAX_SOCKET_SEND_BUFFER,
                ));
            }
        }
        if self.max_unacked == 0 {
            return Err(ConfigError::Zero("max-unacked"));
        }
        if self.max_failed_writes == 0 {
            return Err(ConfigError::Zero("max-failed-writes"));
        }
        if !self.allowed_overflow.contains(&self.overflow) {
            return Err(ConfigError::OverflowNotAllowed(self.overflow));
        }
        if self.idle_timeout <= self.ping_interval {
            return Err(ConfigError::IdleBeforePing);
        }
        Ok(())
    }
}

/// A setting that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Must be at least 1.
    #[error("--{0} must be greater than 0")]
    Zero(&'static str),
    /// Over the supported maximum.
    #[error("--{0} is {1}; the most supported is {2}")]
    TooLarge(&'static str, usize, usize),
    /// Under the supported minimum.
    #[error("--{0} is {1}; the least supported is {2}")]
    TooSmall(&'static str, usize, usize),
    /// A byte bound that the largest event allowed (`--max-event-bytes`) would not fit.
    #[error("--{0} is {1}; it must hold the largest event (--max-event-bytes {2} and its framing): at least {3}")]
    BelowLargestEvent(&'static str, usize, usize, usize),
    /// The default policy is not among the allowed ones.
    #[error("--overflow {0} is not in --allowed-overflow")]
    OverflowNotAllowed(Policy),
    /// Not a probability.
    #[error("--{0} must be a probability between 0 and 1")]
    Probability(&'static str),
    /// The idle timeout would fire before a ping could keep the connection alive.
    #[error("--idle-timeout must be longer than --ping-interval, or live clients are closed before they are pinged")]
    IdleBeforePing,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        assert_eq!(Config::default().validate(), Ok(()));
        let c = Config {
            queue_capacity: 0,
            ..Config::default()
        };
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "--queue-capacity must be greater than 0"
        );
        let c = Config {
            queue_max_bytes: 1000,
            ..Config::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("--queue-max-bytes"));
        // Raising --max-event-bytes alone: the error says why the queue bound is too small.
        let c = Config {
            max_event_bytes: 100_000_000,
            retention_bytes: 1 << 30,
            ..Config::default()
        };
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "--queue-max-bytes is 1048576; it must hold the largest event \
             (--max-event-bytes 100000000 and its framing): at least 100000050"
        );
        let c = Config {
            queue_max_bytes: 8 << 30,
            ..Config::default()
        };
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            format!(
                "--queue-max-bytes is {}; the most supported is {}",
                8u64 << 30,
                u32::MAX
            )
        );
        let c = Config {
            idle_timeout: Duration::from_secs(1),
            ..Config::default()
        };
        assert_eq!(c.validate(), Err(ConfigError::IdleBeforePing));
        for (c, flag) in [
            (
                Config {
                    retention_bytes: 1000,
                    ..Config::default()
                },
                "--retention-bytes",
            ),
            (
                Config {
                    retention_age: Some(Duration::ZERO),
                    ..Config::default()
                },
                "--retention-age",
            ),
        ] {
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(flag), "{e}");
        }
        assert_eq!(Config::default().log_capacity(), 131_072);
    }

    #[test]
    fn a_socket_send_buffer_is_optional_and_bounded() {
        let with = |bytes| Config {
            socket_send_buffer: Some(bytes),
            ..Config::default()
        };
        assert_eq!(with(4096).validate(), Ok(()));
        assert_eq!(
            with(1000).validate().unwrap_err().to_string(),
            "--socket-send-buffer is 1000; the least supported is 4096"
        );
        assert_eq!(
            with(2 << 30).validate(),
            Err(ConfigError::TooLarge(
                "socket-send-buffer",
                2 << 30,
                1 << 30
            ))
        );
    }
}
