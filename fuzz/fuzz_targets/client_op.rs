//! Client control messages: never panic; errors always carry a message.
#![no_main]
use firehose::ws::message;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = message::parse_op(data) {
        assert!(!e.message.is_empty());
    }
});
