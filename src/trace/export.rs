//! The span exporter thread and the recent-spans view.
//!
//! Every 100 ms (and once more at shutdown) the thread drains the [`Tracer`]'s buffer,
//! hands the spans to the configured [`TraceExporter`] and keeps the newest
//! [`RECENT_SPANS`] for `GET /spans/recent`. Exporting is this thread's work only: a slow
//! file or collector delays export, never a publisher or an I/O thread (their spans wait
//! in the bounded buffer, and the oldest give way if it fills).

use std::collections::VecDeque;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::{Span, Tracer};

/// How many spans `GET /spans/recent` can show.
pub const RECENT_SPANS: usize = 1_000;

/// How often the exporter drains the buffer.
pub const EXPORT_EVERY: Duration = Duration::from_millis(100);

/// Where sampled spans go besides `GET /spans/recent` (`--trace-exporter`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum TraceExporter {
    /// Only `/spans/recent`.
    #[default]
    None,
    /// One line per span on stderr.
    Console,
    /// One JSON object per line, appended to this file.
    Json(PathBuf),
    /// OTLP/HTTP (protobuf) to this URL, e.g. `http://127.0.0.1:4318/v1/traces`. Only in
    /// builds with the cargo feature `otlp`; others refuse it at start.
    Otlp(String),
}

/// A `--trace-exporter` value that is not one of the forms.
#[derive(Debug, thiserror::Error)]
#[error("--trace-exporter must be none, console, json:PATH or otlp:URL, not {0:?}")]
pub struct ExporterParseError(String);

impl FromStr for TraceExporter {
    type Err = ExporterParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Self::None),
            "console" => Ok(Self::Console),
            _ => match s.split_once(':') {
                Some(("json", path)) if !path.is_empty() => Ok(Self::Json(PathBuf::from(path))),
                Some(("otlp", url))
                    if url.starts_with("http://") || url.starts_with("https://") =>
                {
                    Ok(Self::Otlp(url.to_owned()))
                }
                _ => Err(ExporterParseError(s.to_owned())),
            },
        }
    }
}

impl fmt::Display for TraceExporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("none"),
            Self::Console => f.write_str("console"),
            Self::Json(p) => write!(f, "json:{}", p.display()),
            Self::Otlp(u) => write!(f, "otlp:{u}"),
        }
    }
}

/// Why the exporter cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The JSON file cannot be opened for appending.
    #[error("cannot open the span file {path} for appending: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `otlp:` asked for, but this build has no OTLP exporter.
    #[error("--trace-exporter otlp:URL is not available in this build: rebuild with `cargo build --release --features otlp`, or use json:PATH or console")]
    OtlpNotBuilt,
    /// The `otlp:` URL cannot be used.
    #[cfg(feature = "otlp")]
    #[error(transparent)]
    OtlpUrl(#[from] super::otlp::UrlError),
}

/// The newest spans, for `GET /spans/recent`. Only the exporter thread writes it.
#[derive(Debug, Default)]
pub struct Recent {
    spans: Mutex<VecDeque<Arc<Span>>>,
}

impl Recent {
    fn extend(&self, spans: &[Span]) {
        let mut q = self.spans.lock().unwrap_or_else(PoisonError::into_inner);
        for s in spans.iter().skip(spans.len().saturating_sub(RECENT_SPANS)) {
            if q.len() == RECENT_SPANS {
                q.pop_front();
            }
            q.push_back(Arc::new(s.clone()));
        }
    }

    /// Up to `limit` spans, newest first, only of `trace` when given.
    pub fn newest(&self, limit: usize, trace: Option<crate::event::TraceId>) -> Vec<Arc<Span>> {
        let q = self.spans.lock().unwrap_or_else(PoisonError::into_inner);
        q.iter()
            .rev()
            .filter(|s| trace.is_none_or(|t| s.trace_id == t))
            .take(limit)
            .cloned()
            .collect()
    }
}

/// A ready exporter: the sink spans are written to.
pub enum Sink {
    /// Nothing but `/spans/recent`.
    None,
    /// stderr lines.
    Console,
    /// JSON lines.
    Json(BufWriter<File>),
    /// OTLP/HTTP.
    #[cfg(feature = "otlp")]
    Otlp(super::otlp::OtlpSink),
}

impl Sink {
    /// Opens what `exporter` names. Fails early (at server start) on a file that cannot
    /// be opened or an OTLP URL without the feature.
    pub fn open(exporter: &TraceExporter) -> Result<Self, ExportError> {
        Ok(match exporter {
            TraceExporter::None => Self::None,
            TraceExporter::Console => Self::Console,
            TraceExporter::Json(path) => {
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| ExportError::Open {
                        path: path.clone(),
                        source,
                    })?;
                Self::Json(BufWriter::new(file))
            }
            #[cfg(feature = "otlp")]
            TraceExporter::Otlp(url) => Self::Otlp(super::otlp::OtlpSink::new(url)?),
            #[cfg(not(feature = "otlp"))]
            TraceExporter::Otlp(_) => return Err(ExportError::OtlpNotBuilt),
        })
    }

    /// Writes `spans`; returns how many could not be delivered.
    fn export(&mut self, spans: &[Span]) -> u64 {
        match self {
            // OTLP runs even with nothing new: it may hold spans for a retry.
            #[cfg(feature = "otlp")]
            Self::Otlp(otlp) => otlp.export(spans),
            _ if spans.is_empty() => 0,
            Self::None => 0,
            Self::Console => {
                for s in spans {
                    let attrs: Vec<String> = s
                        .attributes()
                        .iter()
                        .map(|(k, v)| match v.as_str() {
                            Some(x) => format!("{k}={x}"),
                            None => format!("{k}={v}"),
                        })
                        .collect();
                    eprintln!(
                        "span {} trace={} {:.3} ms {}",
                        s.name.as_str(),
                        s.trace_id,
                        s.duration.as_secs_f64() * 1e3,
                        attrs.join(" ")
                    );
                }
                0
            }
            Self::Json(out) => {
                let written = spans
                    .iter()
                    .try_for_each(|s| writeln!(out, "{}", s.to_json()))
                    .and_then(|()| out.flush());
                match written {
                    Ok(()) => 0,
                    Err(e) => {
                        eprintln!("firehose: cannot write spans to the JSON file: {e}");
                        spans.len() as u64
                    }
                }
            }
        }
    }

    /// At shutdown: returns the spans still undelivered, given up on now.
    fn finish(&mut self) -> u64 {
        match self {
            #[cfg(feature = "otlp")]
            Self::Otlp(otlp) => otlp.finish(),
            _ => 0,
        }
    }
}

/// The exporter thread's loop: drains every [`EXPORT_EVERY`] until `stopping()` says so,
/// then once more.
pub fn run(tracer: &Tracer, recent: &Recent, mut sink: Sink, stopping: impl Fn() -> bool) {
    let mut batch = Vec::new();
    loop {
        let last = stopping();
        tracer.drain(&mut batch);
        // Called even with nothing new: an exporter may hold spans for a retry.
        tracer.count_export_failed(sink.export(&batch));
        recent.extend(&batch);
        batch.clear();
        if last {
            tracer.count_export_failed(sink.finish());
            return;
        }
        std::thread::park_timeout(EXPORT_EVERY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exporter_flags_parse_and_print_back() {
        for s in [
            "none",
            "console",
            "json:/tmp/spans.jsonl",
            "otlp:http://127.0.0.1:4318/v1/traces",
        ] {
            assert_eq!(s.parse::<TraceExporter>().unwrap().to_string(), s);
        }
        for bad in ["", "json:", "otlp:127.0.0.1:4318", "file:/x", "Console"] {
            let e = bad.parse::<TraceExporter>().unwrap_err().to_string();
            assert!(e.contains("json:PATH"), "{e}");
        }
    }

    #[test]
    fn recent_keeps_the_newest_and_filters_by_trace() {
        let t = Tracer::new(1.0, 4096);
        let recent = Recent::default();
        for i in 1..=(RECENT_SPANS as u128 + 5) {
            t.record(
                super::super::SpanName::EventPublish,
                crate::event::TraceId(i),
                (1, 0),
                std::time::Instant::now(),
                Default::default(),
            );
        }
        let mut b = Vec::new();
        t.drain(&mut b);
        recent.extend(&b);
        let newest = recent.newest(3, None);
        let ids: Vec<u128> = newest.iter().map(|s| s.trace_id.0).collect();
        let top = RECENT_SPANS as u128 + 5;
        assert_eq!(ids, [top, top - 1, top - 2]);
        assert!(recent.newest(10, Some(crate::event::TraceId(3))).is_empty());
        assert_eq!(recent.newest(10, Some(crate::event::TraceId(top))).len(), 1);
        assert_eq!(recent.newest(usize::MAX, None).len(), RECENT_SPANS);
    }
}
