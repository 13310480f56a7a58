//! Client control messages and resume positions (`last_event_id`, SSE `Last-Event-ID`):
//! never panic; errors always carry a message; a position prints back to itself.
#![no_main]
use firehose::resume::Position;
use firehose::ws::message;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = message::parse_op(data) {
        assert!(!e.message.is_empty());
    }
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(p) = Position::parse(s) {
            let printed = match p.epoch {
                Some(e) => format!("{e}:{}", p.last_id),
                None => p.last_id.to_string(),
            };
            assert_eq!(Position::parse(&printed), Ok(p));
        }
    }
});
