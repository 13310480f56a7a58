//! The OTLP/HTTP span exporter (cargo feature `otlp`): each batch the exporter thread
//! drains becomes one `ExportTraceServiceRequest` (the OpenTelemetry protobuf messages
//! from `opentelemetry-proto`), POSTed as `application/x-protobuf` over a kept-alive
//! HTTP/1.1 connection to the collector's URL (e.g. `http://127.0.0.1:4318/v1/traces`).
//!
//! Plain `http://` only: a collector on the same host, or a sidecar that terminates TLS.
//! The exporter runs on its own thread, so a slow or absent collector delays only it. After
//! a failure it waits (1 s, doubling to 30 s) before trying again, keeping up to
//! [`MAX_PENDING`] spans meanwhile. Spans it gives up on (a collector's refusal, a full
//! queue, shutdown during an outage) are counted, never silently lost.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span::SpanKind, status, ResourceSpans, ScopeSpans, Status,
};
use prost::Message;

use super::{Attr, Span, SpanName};
use crate::http::client::{parse_response_head, BodyEnd};

/// Most spans in one request (collectors commonly refuse bodies over 4 MiB).
pub const MAX_BATCH: usize = 2048;
/// Most spans kept while the collector is unreachable; older ones give way, counted.
pub const MAX_PENDING: usize = 8 * MAX_BATCH;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const IO_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_HEAD: usize = 16 * 1024;
/// Most response body kept (for the error message).
const MAX_BODY: usize = 64 * 1024;
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Why an `otlp:` URL cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// `https://`.
    #[error("otlp:{0}: only http:// is supported; point it at a collector on this host or at a sidecar that terminates TLS")]
    Tls(String),
    /// Not `http://host[:port][/path]`.
    #[error("otlp:{0}: expected http://HOST[:PORT][/PATH], e.g. http://127.0.0.1:4318/v1/traces")]
    Malformed(String),
}

/// Where the spans go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host:port` for connecting and the `Host` header.
    pub authority: String,
    /// The request path (`/v1/traces` when the URL has none).
    pub path: String,
}

impl Endpoint {
    /// Parses `http://HOST[:PORT][/PATH]`; the port defaults to 4318 (OTLP/HTTP's).
    pub fn parse(url: &str) -> Result<Self, UrlError> {
        if url.starts_with("https://") {
            return Err(UrlError::Tls(url.to_owned()));
        }
        let bad = || UrlError::Malformed(url.to_owned());
        let rest = url.strip_prefix("http://").ok_or_else(bad)?;
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let path = if path.is_empty() || path == "/" {
            "/v1/traces"
        } else {
            path
        };
        let path_ok = path.bytes().all(|b| b.is_ascii_graphic());
        let (host, port) = match authority.strip_prefix('[') {
            // An IPv6 literal: `[::1]` or `[::1]:4318`.
            Some(v6) => {
                let (h, after) = v6.split_once(']').ok_or_else(bad)?;
                let ok = !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit() || c == ':');
                let port = match after {
                    "" => None,
                    p => Some(p.strip_prefix(':').ok_or_else(bad)?),
                };
                (ok.then(|| format!("[{h}]")), port)
            }
            None => {
                let (h, port) = match authority.split_once(':') {
                    Some((h, p)) => (h, Some(p)),
                    None => (authority, None),
                };
                let ok = !h.is_empty()
                    && h.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
                (ok.then(|| h.to_owned()), port)
            }
        };
        let port: Option<u16> = match port {
            None => Some(4318),
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p.parse().ok(),
            Some(_) => None,
        };
        let (Some(host), Some(port), true) = (host, port, path_ok) else {
            return Err(bad());
        };
        let authority: String = format!("{host}:{port}");
        Ok(Self {
            authority,
            path: path.to_owned(),
        })
    }
}

/// Why one export failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Connecting, writing or reading failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The collector's answer is not HTTP.
    #[error("{0}")]
    Response(#[from] crate::http::client::ResponseError),
    /// The collector refused the batch.
    #[error("the collector answered {status}: {body}")]
    Status {
        /// The status code.
        status: u16,
        /// The start of its body.
        body: String,
    },
}

/// An OTLP/HTTP connection to one collector.
pub struct OtlpSink {
    endpoint: Endpoint,
    stream: Option<TcpStream>,
    /// Spans not yet accepted: waiting out a backoff, or to be retried after a failure
    /// the collector says is temporary. At most [`MAX_PENDING`].
    pending: VecDeque<Span>,
    /// No attempt before this (after a failure).
    quiet_until: Option<Instant>,
    backoff: Duration,
    /// The last failure's report, to say it at most once per backoff.
    reported_at: Option<Instant>,
}

impl SendError {
    /// Whether the same batch may succeed later: connection trouble, or a status the
    /// OTLP/HTTP spec calls retryable (429, 502, 503, 504). Anything else is a refusal.
    fn retryable(&self) -> bool {
        match self {
            SendError::Io(_) | SendError::Response(_) => true,
            SendError::Status { status, .. } => matches!(status, 429 | 502 | 503 | 504),
        }
    }
}

impl OtlpSink {
    /// An exporter to `url`; connects on the first batch.
    pub fn new(url: &str) -> Result<Self, UrlError> {
        Ok(Self {
            endpoint: Endpoint::parse(url)?,
            stream: None,
            pending: VecDeque::new(),
            quiet_until: None,
            backoff: FIRST_BACKOFF,
            reported_at: None,
        })
    }

    /// Queues `spans` and sends what is queued, unless a backoff is running; returns how
    /// many spans were given up on (refused by the collector, or pushed out of a full
    /// queue), saying why on stderr at most once per backoff period.
    pub fn export(&mut self, spans: &[Span]) -> u64 {
        let mut lost = 0;
        for s in spans {
            if self.pending.len() == MAX_PENDING {
                self.pending.pop_front();
                lost += 1;
            }
            self.pending.push_back(s.clone());
        }
        if self.pending.is_empty() || self.quiet_until.is_some_and(|t| Instant::now() < t) {
            return lost;
        }
        lost + self.flush()
    }

    /// A last attempt at shutdown, backoff or not; returns the spans left undelivered.
    pub fn finish(&mut self) -> u64 {
        self.flush();
        std::mem::take(&mut self.pending).len() as u64
    }

    /// Sends the queue in batches of [`MAX_BATCH`]; returns the spans refused.
    fn flush(&mut self) -> u64 {
        let mut refused = 0;
        while !self.pending.is_empty() {
            let n = self.pending.len().min(MAX_BATCH);
            let body = request(self.pending.range(..n)).encode_to_vec();
            match self.send(&body) {
                Ok(()) => {
                    self.pending.drain(..n);
                    self.backoff = FIRST_BACKOFF;
                    self.quiet_until = None;
                }
                Err(e) if e.retryable() => {
                    self.failed(&e, 0);
                    break;
                }
                Err(e) => {
                    self.pending.drain(..n);
                    refused += n as u64;
                    self.failed(&e, n as u64);
                }
            }
        }
        refused
    }

    fn failed(&mut self, e: &SendError, refused: u64) {
        let now = Instant::now();
        self.stream = None;
        if self
            .reported_at
            .is_none_or(|t| now.duration_since(t) >= self.backoff)
        {
            let what = if refused > 0 {
                format!("{refused} spans refused (counted in firehose_spans_export_failed_total)")
            } else {
                format!(
                    "{} spans kept for a retry in {} s",
                    self.pending.len(),
                    self.backoff.as_secs()
                )
            };
            eprintln!(
                "firehose: OTLP export to http://{}{} failed: {e}; {what}",
                self.endpoint.authority, self.endpoint.path,
            );
            self.reported_at = Some(now);
        }
        if refused == 0 {
            self.quiet_until = Some(now + self.backoff);
            self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// POSTs one body; on a kept-alive connection the collector may have closed, one retry
    /// on a fresh connection.
    fn send(&mut self, body: &[u8]) -> Result<(), SendError> {
        if self.stream.is_some() {
            match self.post(body) {
                Err(SendError::Io(_)) => self.stream = None,
                other => return other,
            }
        }
        self.post(body)
    }

    fn connect(&self) -> io::Result<TcpStream> {
        let mut last = io::Error::new(io::ErrorKind::NotFound, "the host resolves to no address");
        for addr in self.endpoint.authority.to_socket_addrs()? {
            match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
                Ok(s) => {
                    s.set_read_timeout(Some(IO_TIMEOUT))?;
                    s.set_write_timeout(Some(IO_TIMEOUT))?;
                    let _ = s.set_nodelay(true);
                    return Ok(s);
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn post(&mut self, body: &[u8]) -> Result<(), SendError> {
        let mut stream = match self.stream.take() {
            Some(s) => s,
            None => self.connect()?,
        };
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\nUser-Agent: firehose/{}\r\n\r\n",
            self.endpoint.path,
            self.endpoint.authority,
            body.len(),
            env!("CARGO_PKG_VERSION")
        );
        stream.write_all(head.as_bytes())?;
        stream.write_all(body)?;
        let (status, answer, keep_alive) = read_response(&mut stream)?;
        if keep_alive {
            self.stream = Some(stream);
        }
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(SendError::Status {
                status,
                body: String::from_utf8_lossy(&answer[..answer.len().min(200)]).into_owned(),
            })
        }
    }
}

/// Reads one response: (status, body up to [`MAX_BODY`], whether the connection is reusable).
fn read_response(stream: &mut TcpStream) -> Result<(u16, Vec<u8>, bool), SendError> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head = loop {
        if let Some(head) = parse_response_head(&buf, MAX_HEAD)? {
            break head;
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the collector closed the connection",
            )
            .into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let mut body = buf.split_off(head.len);
    match head.body {
        BodyEnd::Length(n) => {
            while body.len() < n {
                let got = stream.read(&mut chunk)?;
                if got == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the collector's answer was cut short",
                    )
                    .into());
                }
                body.extend_from_slice(&chunk[..got]);
                if body.len() > MAX_BODY {
                    // Not worth reading on: give up the connection instead.
                    return Ok((head.status, body, false));
                }
            }
            let reusable = head.keep_alive && body.len() == n;
            Ok((head.status, body, reusable))
        }
        BodyEnd::Close => {
            // Enough for a message; the connection is dropped anyway.
            let _ = stream
                .read(&mut chunk)
                .map(|got| body.extend_from_slice(&chunk[..got]));
            Ok((head.status, body, false))
        }
    }
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..KeyValue::default()
    }
}

/// The request for one batch.
pub fn request<'a>(spans: impl IntoIterator<Item = &'a Span>) -> ExportTraceServiceRequest {
    let text = |s: &str| any_value::Value::StringValue(s.to_owned());
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", text("firehose")),
                    kv("service.version", text(env!("CARGO_PKG_VERSION"))),
                ],
                ..Resource::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "firehose".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..InstrumentationScope::default()
                }),
                spans: spans.into_iter().map(span).collect(),
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }],
    }
}

fn span(s: &Span) -> opentelemetry_proto::tonic::trace::v1::Span {
    let kind = match s.name {
        SpanName::EventPublish => SpanKind::Producer,
        SpanName::SubscriberInvoke => SpanKind::Consumer,
        SpanName::WsWrite | SpanName::WorkflowStep => SpanKind::Internal,
    };
    let mut failed = None;
    let attributes = s
        .attrs
        .iter()
        .filter_map(|(key, v)| {
            let value = match v {
                Attr::None => return None,
                Attr::Int(i) => any_value::Value::IntValue(*i),
                Attr::F64(x) => any_value::Value::DoubleValue(*x),
                Attr::Static(_) | Attr::Text(_) => {
                    let t = v.text().unwrap_or_default();
                    if *key == "status" && t != "ok" {
                        failed = Some(t.to_owned());
                    }
                    any_value::Value::StringValue(t.to_owned())
                }
            };
            Some(kv(key, value))
        })
        .collect();
    let duration = u64::try_from(s.duration.as_nanos()).unwrap_or(u64::MAX);
    opentelemetry_proto::tonic::trace::v1::Span {
        trace_id: s.trace_id.0.to_be_bytes().to_vec(),
        span_id: s.span_id.to_be_bytes().to_vec(),
        parent_span_id: if s.parent_id == 0 {
            Vec::new()
        } else {
            s.parent_id.to_be_bytes().to_vec()
        },
        name: s.name.as_str().to_owned(),
        kind: kind as i32,
        start_time_unix_nano: s.start_unix_nano,
        end_time_unix_nano: s.start_unix_nano.saturating_add(duration),
        attributes,
        status: failed.map(|message| Status {
            message,
            code: status::StatusCode::Error as i32,
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let e = |authority: &str, path: &str| Endpoint {
            authority: authority.into(),
            path: path.into(),
        };
        assert_eq!(
            Endpoint::parse("http://127.0.0.1:4318/v1/traces"),
            Ok(e("127.0.0.1:4318", "/v1/traces"))
        );
        assert_eq!(
            Endpoint::parse("http://collector"),
            Ok(e("collector:4318", "/v1/traces"))
        );
        assert_eq!(Endpoint::parse("http://[::1]:9/x"), Ok(e("[::1]:9", "/x")));
        assert_eq!(
            Endpoint::parse("http://[::1]/"),
            Ok(e("[::1]:4318", "/v1/traces"))
        );
        assert!(matches!(
            Endpoint::parse("https://c:4318"),
            Err(UrlError::Tls(_))
        ));
        for bad in [
            "http://",
            "http://:4318/x",
            "http://h:99999/",
            "http://h:port/",
            "http://a b/",
            "http://h/a b",
            "ftp://h/",
            "http://user@h/",
        ] {
            assert!(
                matches!(Endpoint::parse(bad), Err(UrlError::Malformed(_))),
                "{bad}: {:?}",
                Endpoint::parse(bad)
            );
        }
    }

    #[test]
    fn spans_become_otlp_messages() {
        let t = super::super::Tracer::new(1.0, 16);
        t.record(
            SpanName::SubscriberInvoke,
            crate::event::TraceId(0x0102),
            (7, 9),
            Instant::now(),
            super::super::attrs([
                ("status", Attr::Static("timeout")),
                ("event_id", Attr::from(3u64)),
            ]),
        );
        let mut spans = Vec::new();
        t.drain(&mut spans);
        let req = request(&spans);
        let decoded = ExportTraceServiceRequest::decode(&*req.encode_to_vec()).unwrap();
        let s = &decoded.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(s.name, "subscriber.invoke");
        assert_eq!(s.trace_id[14..], [1, 2]);
        assert_eq!((s.span_id[7], s.parent_span_id[7]), (7, 9));
        assert_eq!(s.kind, SpanKind::Consumer as i32);
        assert_eq!(
            s.status.as_ref().map(|s| s.code),
            Some(status::StatusCode::Error as i32)
        );
        assert_eq!(s.attributes.len(), 2);
        assert!(s.end_time_unix_nano >= s.start_time_unix_nano);
    }
}
