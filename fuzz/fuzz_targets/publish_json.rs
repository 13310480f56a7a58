//! `POST /publish` bodies: never panic; every accepted event encodes into JSON that parses
//! back with the same type, source and payload.
#![no_main]
use firehose::event::{parse_publish_body, Staged};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(events) = parse_publish_body(data, 100) else { return };
    for ev in events {
        let Ok(staged) = Staged::new(&ev, 1 << 20) else { continue };
        let enc = staged.seal(42);
        let v: serde_json::Value = serde_json::from_slice(&enc.json()).expect("encoded event is JSON");
        assert_eq!(v["id"], 42);
        assert_eq!(v["event_type"], ev.event_type.as_str());
        assert_eq!(v["source"], ev.source.as_str());
        let payload: serde_json::Value = serde_json::from_str(ev.payload.get()).unwrap();
        assert_eq!(v["payload"], payload);
        assert_eq!(enc.event_type(), ev.event_type);
    }
});
