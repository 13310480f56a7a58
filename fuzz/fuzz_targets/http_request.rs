//! HTTP request heads, query strings (the DLQ's `limit`, `/spans/recent`, `/connections`),
//! the `/connections/{id}/recent` path, the WebSocket handshake check and the SSE
//! subscription (with `Last-Event-ID`): never panic,
//! never claim more bytes than given, and a parsed head re-parses to the same request.
#![no_main]
use firehose::http::{dlq, query};
use firehose::http::request::{parse_head, Limits};
use firehose::policy::Policy;
use firehose::ws::handshake;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits { max_header_bytes: 4096, max_body_bytes: 1 << 20 };
    if let Ok(Some((req, used))) = parse_head(data, &limits) {
        assert!(used <= data.len());
        // Absolute-form targets are reduced to their path.
        assert!(req.path.starts_with('/'));
        // HTTP/1.0 cannot wait for a 100 Continue.
        assert!(!req.expect_continue || req.minor_version >= 1);
        assert_eq!(parse_head(&data[..used], &limits), Ok(Some((req.clone(), used))));
        for pair in query::pairs(&req.query) {
            let _ = pair;
        }
        let _ = firehose::http::spans::parse_query(&req.query);
        let _ = firehose::http::connections::parse_list(&req.query);
        if let Some(Ok(id)) = firehose::http::connections::parse_recent_path(&req.path) {
            assert!(id > 0);
        }
        let _ = dlq::check_retry(&req.query, &data[used..]);
        if let Ok(limit) = dlq::parse_limit(&req.query) {
            assert!((1..=dlq::MAX_LIMIT).contains(&limit));
        }
        let _ = handshake::accept(&req, Policy::DropNewest, &Policy::ALL);
        // GET /sse/events: the same parameters, and the Last-Event-ID header.
        let _ = handshake::subscription(
            &req.query,
            req.last_event_id.as_deref(),
            Policy::DropNewest,
            &Policy::ALL,
        );
    }
});
