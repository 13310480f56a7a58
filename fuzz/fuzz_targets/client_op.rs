//! Client control messages and resume positions (`last_event_id`, SSE `Last-Event-ID`):
//! never panic; errors always carry a message; a position prints back to itself; and the
//! event fast path reads nothing serde would refuse or read differently.
#![no_main]
use firehose::event::{fastpath, WireEvent};
use firehose::resume::Position;
use firehose::ws::message;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The server checks UTF-8 before it parses a text message.
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Some(fast) = fastpath::read(s) {
        let slow: WireEvent = serde_json::from_slice(data).expect("serde reads what the fast path reads");
        assert_eq!(format!("{fast:?}"), format!("{slow:?}"));
    }
    if let Err(e) = message::parse_op(s) {
        assert!(!e.message.is_empty());
    }
    if let Ok(p) = Position::parse(s) {
        let printed = match p.epoch {
            Some(e) => format!("{e}:{}", p.last_id),
            None => p.last_id.to_string(),
        };
        assert_eq!(Position::parse(&printed), Ok(p));
    }
});
