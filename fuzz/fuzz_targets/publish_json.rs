//! `POST /publish` bodies: never panic; every accepted event encodes into JSON whose fields
//! are, as raw JSON text, exactly what was published (payloads pass through byte for byte,
//! including numbers no f64 or u64 can hold).
#![no_main]
use std::collections::BTreeMap;

use firehose::event::{parse_publish_body, Staged};
use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;

fuzz_target!(|data: &[u8]| {
    let Ok(events) = parse_publish_body(data, 100) else { return };
    for ev in events {
        let Ok(staged) = Staged::new(ev.clone(), 1 << 20) else { continue };
        let published = staged.seal(42);
        let enc = published.encoded();
        assert_eq!(published.frame_len(), enc.frame().len(), "the size known at publish");
        let json = enc.json();
        let fields: BTreeMap<String, Box<RawValue>> = serde_json::from_slice(&json).expect("encoded event is a JSON object");
        assert_eq!(fields["id"].get(), "42");
        assert_eq!(fields["payload"].get(), ev.payload.get());
        assert_eq!(serde_json::from_str::<String>(fields["event_type"].get()).unwrap(), ev.event_type);
        assert_eq!(serde_json::from_str::<String>(fields["source"].get()).unwrap(), ev.source);
        assert_eq!(enc.event_type(), ev.event_type);
    }
});
