//! HTTP response heads (what an OTLP collector answers): never panic, never claim more
//! bytes than given, never accept a head over the limit, and a head parses the same when
//! more bytes follow it.
#![no_main]
use firehose::http::client::{parse_response_head, BodyEnd};
use libfuzzer_sys::fuzz_target;

const MAX: usize = 1024;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(head)) = parse_response_head(data, MAX) {
        assert!(head.len <= data.len() && head.len <= MAX);
        assert!((100..=599).contains(&head.status));
        if head.body == BodyEnd::Close {
            assert!(!head.keep_alive);
        }
        assert_eq!(parse_response_head(&data[..head.len], MAX), Ok(Some(head)));
    }
});
