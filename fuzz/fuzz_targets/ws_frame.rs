//! Client frame decoding: never panics, consumes no more than given, respects the payload
//! limit, and `Ok(None)` on a prefix of a complete frame.
#![no_main]
use firehose::ws::frame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    const MAX: usize = 4096;
    match frame::parse(data, MAX) {
        Ok(Some((f, used))) => {
            assert!(used <= data.len());
            assert!(f.payload.len() <= MAX);
            assert_eq!(frame::parse(&data[..used - 1], MAX), Ok(None));
            if f.opcode == frame::OpCode::Close {
                let _ = frame::parse_close(&f.payload);
            }
        }
        Ok(None) | Err(_) => {}
    }
});
