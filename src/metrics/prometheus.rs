//! The Prometheus text exposition format (version 0.0.4) for `GET /metrics`.
//!
//! Pure: a [`Report`] of the engine's counters in, text out. Names follow the dotted
//! metric names (`events.published` → `firehose_events_published_total`); every family
//! has `# HELP` and `# TYPE`.

use std::fmt::Write as _;

use super::Snapshot;
use crate::dlq::Summary;
use crate::sink::SinkStats;

/// The `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Everything `/metrics` reports.
pub struct Report<'a> {
    /// The I/O threads' counters, summed.
    pub counters: &'a Snapshot,
    /// The dead-letter queue.
    pub dlq: &'a Summary,
    /// In-process subscribers.
    pub subscribers: &'a [SinkStats],
    /// Events in-process subscribers missed because the log lapped them.
    pub subscribers_lost: u64,
    /// Delivery latency (µs), all threads merged.
    pub latency: &'a hdrhistogram::Histogram<u64>,
    /// Seconds since start.
    pub uptime_s: f64,
    /// HTTP responses by status code (or `other`).
    pub http: &'a [(String, u64)],
    /// Spans recorded, overwritten before export, and not delivered by the exporter.
    pub spans: (u64, u64, u64),
}

/// Escapes a label value: backslash, double quote and newline.
pub fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        // Writing into a String cannot fail.
        let _ = writeln!(
            self.0,
            "# HELP firehose_{name} {help}\n# TYPE firehose_{name} {kind}"
        );
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.0.push_str("firehose_");
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape_label(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    /// A counter family with one label, one sample per `(label value, count)`.
    fn by_label(&mut self, name: &str, help: &str, label: &str, values: &[(&str, u64)]) {
        self.family(name, "counter", help);
        for (v, n) in values {
            self.sample(name, &[(label, v)], *n as f64);
        }
    }

    fn one(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }
}

/// Renders `r` as the exposition text.
pub fn render(r: &Report<'_>) -> String {
    let c = r.counters;
    let mut o = Out(String::with_capacity(4096));
    o.one(
        "events_published_total",
        "counter",
        "Events accepted into the log (events.published).",
        c.published as f64,
    );
    o.one(
        "events_delivered_total",
        "counter",
        "Event frames completely written to WebSocket subscribers (events.delivered).",
        c.delivered as f64,
    );
    o.one(
        "events_dropped_total",
        "counter",
        "Events a subscriber's queue refused or discarded, all policies (events.dropped).",
        c.dropped as f64,
    );
    let lanes = &c.dropped_by_lane;
    o.by_label(
        "events_dropped_by_lane_total",
        "Events dropped by priority-policy subscriptions, by lane (part of events_dropped_total).",
        "lane",
        &[
            ("control", lanes.control),
            ("critical", lanes.critical),
            ("important", lanes.important),
            ("bulk", lanes.bulk),
        ],
    );
    let why = &c.dropped_by_reason;
    o.by_label(
        "events_dropped_by_reason_total",
        "events_dropped_total by reason: queue_full (the overflow policy refused or evicted it), retention (the I/O thread fell a whole log behind), closed (queued when the connection closed).",
        "reason",
        &[
            ("queue_full", why.queue_full),
            ("retention", why.retention),
            ("closed", why.closed),
        ],
    );
    o.one(
        "spans_recorded_total",
        "counter",
        "Spans recorded for sampled traces (--trace-sample).",
        r.spans.0 as f64,
    );
    o.one(
        "spans_dropped_total",
        "counter",
        "Spans overwritten in a full buffer (--trace-buffer) before the exporter took them.",
        r.spans.1 as f64,
    );
    o.one(
        "spans_export_failed_total",
        "counter",
        "Spans the exporter could not deliver (--trace-exporter: file write or OTLP collector failures).",
        r.spans.2 as f64,
    );
    o.one(
        "bytes_out_total",
        "counter",
        "Bytes written to sockets, all protocols.",
        c.bytes_out as f64,
    );
    o.family(
        "http_responses_total",
        "counter",
        "HTTP responses by status code (101 = WebSocket upgrade).",
    );
    for (code, n) in r.http {
        o.sample("http_responses_total", &[("code", code)], *n as f64);
    }
    o.one(
        "ws_connected_clients",
        "gauge",
        "Open WebSocket subscribers (ws.connected_clients).",
        c.ws_connected_clients as f64,
    );
    o.one(
        "sse_connected_clients",
        "gauge",
        "Open Server-Sent Events subscribers (GET /sse/events).",
        c.sse_connected_clients as f64,
    );
    o.one(
        "connections",
        "gauge",
        "Open connections of any kind.",
        c.connections as f64,
    );
    o.one(
        "events_replayed_total",
        "counter",
        "Events replayed from the log to subscribers that resumed with a last event id.",
        c.replayed as f64,
    );
    o.by_label(
        "resumes_total",
        "Resume requests (last_event_id), by outcome: recovered in full, recovered after a gap notice, or nothing recovered (an id from another epoch, or one this run never gave).",
        "outcome",
        &[
            ("recovered", c.resumes.recovered),
            ("gap", c.resumes.gap),
            ("other_epoch", c.resumes.other_epoch),
            ("unknown_id", c.resumes.unknown_id),
        ],
    );
    o.one(
        "gap_notices_total",
        "counter",
        "gap notices sent: events a subscriber asked for were past retention.",
        c.gap_notices as f64,
    );
    o.one(
        "events_redelivered_total",
        "counter",
        "Events sent again to ack= subscribers that did not acknowledge them within --ack-timeout (with backoff).",
        c.redelivered as f64,
    );
    o.one(
        "events_unacked_dead_lettered_total",
        "counter",
        "Events an ack= subscriber never acknowledged, put in the dead-letter queue (redeliveries exhausted, or the connection closed).",
        c.unacked_dead_lettered as f64,
    );
    o.by_label(
        "ws_evicted_total",
        "Connections evicted, by reason.",
        "reason",
        &[
            ("write_stall", c.evicted.write_stall),
            ("write_errors", c.evicted.write_errors),
            ("slow_consumer", c.evicted.slow_consumer),
        ],
    );
    o.family(
        "events_delivery_latency_ms",
        "histogram",
        "Publish to frame written to the socket, in ms (events.delivery.latency_ms); each write is recorded at the age of its first event, and bucket counts are exact to the histogram's 1 % precision.",
    );
    let h = r.latency;
    for le_ms in super::latency::BUCKETS_MS {
        let le_us = (le_ms * 1000.0) as u64;
        o.sample(
            "events_delivery_latency_ms_bucket",
            &[("le", &le_ms.to_string())],
            h.count_between(0, le_us) as f64,
        );
    }
    o.sample(
        "events_delivery_latency_ms_bucket",
        &[("le", "+Inf")],
        h.len() as f64,
    );
    o.sample(
        "events_delivery_latency_ms_sum",
        &[],
        h.mean() * h.len() as f64 / 1000.0,
    );
    o.sample("events_delivery_latency_ms_count", &[], h.len() as f64);
    let d = r.dlq;
    o.one(
        "events_dlq_size",
        "gauge",
        "Entries waiting in the dead-letter queue (events.dlq.size).",
        d.depth as f64,
    );
    o.one(
        "events_dlq_bytes",
        "gauge",
        "Bytes held by the dead-letter queue's entries.",
        d.bytes as f64,
    );
    o.one(
        "events_dlq_enqueued_total",
        "counter",
        "Entries ever enqueued in the dead-letter queue.",
        d.enqueued as f64,
    );
    o.one(
        "events_dlq_evicted_total",
        "counter",
        "Dead-letter entries evicted by --dlq-max-entries / --dlq-max-bytes.",
        d.evicted as f64,
    );
    o.one(
        "events_dlq_retried_total",
        "counter",
        "Dead-letter entries handed back to their subscribers by retries.",
        d.retried as f64,
    );
    o.family(
        "subscriber_calls_total",
        "counter",
        "In-process subscriber outcomes, by subscriber and outcome.",
    );
    for s in r.subscribers {
        for (outcome, n) in [
            ("ok", s.delivered),
            ("error", s.failed),
            ("timeout", s.timed_out),
            ("backlog_full", s.overflowed),
        ] {
            o.sample(
                "subscriber_calls_total",
                &[("subscriber", &s.name), ("outcome", outcome)],
                n as f64,
            );
        }
    }
    o.family(
        "subscriber_backlog",
        "gauge",
        "Events queued for, or in a call of, each in-process subscriber.",
    );
    for s in r.subscribers {
        o.sample(
            "subscriber_backlog",
            &[("subscriber", &s.name)],
            s.backlog as f64,
        );
    }
    o.one(
        "subscriber_lost_total",
        "counter",
        "Events in-process subscribers never saw because the log's retention lapped them.",
        r.subscribers_lost as f64,
    );
    o.one(
        "uptime_seconds",
        "gauge",
        "Seconds since the engine started.",
        r.uptime_s,
    );
    o.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn every_family_has_help_and_type() {
        let stats = [SinkStats {
            name: "q\"uote".into(),
            types: vec![],
            delivered: 1,
            failed: 2,
            timed_out: 3,
            overflowed: 4,
            backlog: 5,
        }];
        let text = render(&Report {
            counters: &Snapshot::default(),
            dlq: &Summary {
                depth: 0,
                bytes: 0,
                oldest: None,
                newest: None,
                enqueued: 0,
                evicted: 0,
                retried: 0,
            },
            subscribers: &stats,
            subscribers_lost: 0,
            latency: &crate::metrics::latency::new_histogram(),
            uptime_s: 1.5,
            http: &[("200".into(), 3), ("other".into(), 1)],
            spans: (5, 1, 2),
        });
        let families: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| l.split(' ').next().unwrap())
            .collect();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            let name = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .filter(|base| families.contains(base))
                .unwrap_or(name);
            assert!(families.contains(&name), "{name} has no # TYPE");
        }
        assert!(text.contains(
            "firehose_subscriber_calls_total{subscriber=\"q\\\"uote\",outcome=\"timeout\"} 3"
        ));
    }
}
