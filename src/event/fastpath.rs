//! The fast path for the message firehose reads most: one event object whose keys and
//! string fields are plain (no escapes), as publishers write it in `{"op":"publish",…}`
//! frames and `POST /publish` bodies.
//!
//! [`read`] reads such an object in one pass and returns exactly the [`WireEvent`]
//! `serde_json::from_slice` would, or `None` for anything outside that shape: an escape in
//! a key or a string field, an unknown or repeated field, a field of the wrong type, or
//! JSON that is not valid. The caller then parses with serde, which also writes the error
//! message. So the fast path can neither accept what serde refuses nor read a message
//! differently from it; the `client_op` fuzz target and two property tests check that on
//! every input they see.
//!
//! Why: serde read every publish twice (once for its `op`, once as an event), and that was
//! a tenth of an I/O thread under overload (README, *Performance*). Here the keys and plain
//! strings are a byte scan each, and serde reads only the two raw JSON values (`payload`,
//! `ref`), once, from the already checked `str`.

use serde_json::value::RawValue;

use super::{Priority, WireEvent};

/// Reads `text` as one event object, or returns `None` to say "ask serde".
///
/// It takes `str` because its callers have checked UTF-8 once for the whole message (a
/// WebSocket text message must be UTF-8): the fields are slices of it, not checked again.
pub fn read(text: &str) -> Option<WireEvent> {
    let mut c = Cursor {
        s: text,
        b: text.as_bytes(),
        i: 0,
    };
    c.eat(b'{')?;
    let mut f = Fields::default();
    if c.peek() == Some(b'}') {
        return None; // `{}` lacks the required fields: serde says which.
    }
    loop {
        c.space();
        let key = c.plain_str()?;
        c.eat(b':')?;
        c.space();
        match key {
            "op" => set(&mut f.op, c.opt_str()?)?,
            "event_type" => set(&mut f.event_type, c.plain_str()?)?,
            "source" => set(&mut f.source, c.plain_str()?)?,
            "trace_id" => set(&mut f.trace_id, c.opt_str()?)?,
            "priority" => set(&mut f.priority, c.priority()?)?,
            "payload" => set(&mut f.payload, c.raw()?)?,
            "ref" => set(&mut f.reference, c.raw()?)?,
            _ => return None, // unknown: serde refuses it by name
        }
        match c.next_non_space()? {
            b',' => continue,
            b'}' => break,
            _ => return None,
        }
    }
    c.space();
    if c.i != text.len() {
        return None; // trailing characters
    }
    // Owned only now: a message that falls back to serde allocated nothing here.
    Some(WireEvent {
        op: f.op.flatten().map(str::to_owned),
        reference: f.reference.flatten().map(RawValue::to_owned),
        event_type: f.event_type?.to_owned(),
        source: f.source?.to_owned(),
        payload: f.payload.flatten().map(RawValue::to_owned),
        priority: f.priority.flatten(),
        trace_id: f.trace_id.flatten().map(str::to_owned),
    })
}

/// Fields seen so far, strings borrowed from the message: the outer `Option` is "seen",
/// the inner one the field's own.
#[derive(Default)]
struct Fields<'a> {
    op: Option<Option<&'a str>>,
    reference: Option<Option<&'a RawValue>>,
    event_type: Option<&'a str>,
    source: Option<&'a str>,
    payload: Option<Option<&'a RawValue>>,
    priority: Option<Option<Priority>>,
    trace_id: Option<Option<&'a str>>,
}

/// Records a field the first time; a repeat is serde's "duplicate field" error.
fn set<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    match slot {
        Some(_) => None,
        None => {
            *slot = Some(value);
            Some(())
        }
    }
}

struct Cursor<'a> {
    s: &'a str,
    /// `s` as bytes, for the scans.
    b: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&mut self) -> Option<u8> {
        self.space();
        self.b.get(self.i).copied()
    }

    /// Skips JSON whitespace (exactly the four bytes JSON allows).
    fn space(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    fn next_non_space(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.i += 1;
        Some(b)
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        (self.next_non_space()? == byte).then_some(())
    }

    /// A string with no escapes and no control bytes; `None` otherwise.
    fn plain_str(&mut self) -> Option<&'a str> {
        if self.b.get(self.i) != Some(&b'"') {
            return None;
        }
        let start = self.i + 1;
        let len = self.b[start..]
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
        if self.b[start + len] != b'"' {
            return None;
        }
        self.i = start + len + 1;
        // Both ends are next to an ASCII `"`, so on character boundaries.
        self.s.get(start..start + len)
    }

    /// Takes a `null` if one is next.
    fn null(&mut self) -> bool {
        let found = self.b[self.i..].starts_with(b"null");
        if found {
            self.i += 4;
        }
        found
    }

    /// `null` or a plain string, as serde reads an `Option<String>`.
    fn opt_str(&mut self) -> Option<Option<&'a str>> {
        if self.null() {
            return Some(None);
        }
        Some(Some(self.plain_str()?))
    }

    /// `null` or one of the four priority names, as serde reads an `Option<Priority>`.
    fn priority(&mut self) -> Option<Option<Priority>> {
        if self.null() {
            return Some(None);
        }
        Some(Some(match self.plain_str()? {
            "control" => Priority::Control,
            "critical" => Priority::Critical,
            "important" => Priority::Important,
            "bulk" => Priority::Bulk,
            _ => return None,
        }))
    }

    /// One JSON value as serde reads an `Option<Box<RawValue>>` field (`null` is
    /// `None`), borrowed from the message.
    fn raw(&mut self) -> Option<Option<&'a RawValue>> {
        let mut values = serde_json::Deserializer::from_str(self.s.get(self.i..)?)
            .into_iter::<Option<&'a RawValue>>();
        let value = values.next()?.ok()?;
        self.i += values.byte_offset();
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn serde(text: &[u8]) -> Result<WireEvent, serde_json::Error> {
        serde_json::from_slice(text)
    }

    /// The contract: whatever the fast path reads, serde reads the same way.
    fn agrees(text: &[u8]) -> bool {
        match std::str::from_utf8(text).ok().and_then(read) {
            Some(fast) => {
                let slow = serde(text).unwrap_or_else(|e| {
                    panic!(
                        "fast path accepted {:?}, serde refused: {e}",
                        String::from_utf8_lossy(text)
                    )
                });
                assert_eq!(format!("{fast:?}"), format!("{slow:?}"));
                true
            }
            None => false,
        }
    }

    #[test]
    fn reads_the_plain_shape_as_serde_does() {
        for text in [
            r#"{"op":"publish","event_type":"a.b","source":"s","payload":{"t":1,"pad":"xx"}}"#,
            " {\n\t\"source\" : \"s\" , \"event_type\":\"a\"\r} \n",
            r#"{"event_type":"a","source":"s","payload":null,"ref":null,"op":null,"priority":null,"trace_id":null}"#,
            r#"{"event_type":"a","source":"é","priority":"critical","ref":{"k":[1,"x"]},"trace_id":"4bf92f3577b34da6a3ce929d0e0e4736"}"#,
            r#"{"event_type":"a","source":"s","payload":"a\"b\\c\u00e9","ref":-1.5e3}"#,
            r#"{"event_type":"","source":"","payload":123456789012345678901234567890}"#,
        ] {
            assert!(agrees(text.as_bytes()), "not on the fast path: {text}");
        }
        // serde_json skips a raw value without a depth limit, read alone or in an object,
        // so deep payloads need no special case (this fails if that changes).
        let deep = format!(
            r#"{{"event_type":"a","source":"s","payload":{}{}}}"#,
            "[".repeat(1000),
            "]".repeat(1000)
        );
        assert!(agrees(deep.as_bytes()));
    }

    #[test]
    fn leaves_everything_else_to_serde() {
        for text in [
            "",
            "{}",
            "{ }",
            "[]",
            r#"{"event_type":"a"}"#,
            r#"{"ev\u0065nt_type":"a","source":"s"}"#,
            r#"{"event_type":"a\u002eb","source":"s"}"#,
            r#"{"event_type":"a","source":"s","priority":"bul\u006b"}"#,
            r#"{"event_type":"a","source":"s","priority":"urgent"}"#,
            r#"{"event_type":"a","source":"s","id":3}"#,
            r#"{"event_type":"a","source":"s","source":"t"}"#,
            r#"{"event_type":"a","source":"s","payload":1,"payload":2}"#,
            r#"{"event_type":"a","source":"s",}"#,
            r#"{"event_type":"a","source":"s"}x"#,
            r#"{"event_type":"a","source":"s"}{}"#,
            r#"{"event_type":"a","source":"s""#,
            r#"{"event_type":null,"source":"s"}"#,
            r#"{"event_type":1,"source":"s"}"#,
            r#"{"event_type":"a","source":"s","op":nullx}"#,
            r#"{"event_type":"a","source":"s","payload":01}"#,
            r#"{"event_type":"a","source":"s","payload":[1,]}"#,
            r#"{"event_type":"a","source":"s","payload":tru}"#,
            "{\"event_type\":\"a\tb\",\"source\":\"s\"}",
            "{\"event_type\":\"a\",\"source\":\"s\"\u{0c}}",
        ] {
            assert!(!agrees(text.as_bytes()), "took the fast path: {text}");
        }
    }

    fn space() -> impl Strategy<Value = String> {
        "[ \t\r\n]{0,2}"
    }

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            8 => prop::sample::select(vec![
                "op", "event_type", "source", "payload", "ref", "priority", "trace_id",
            ]),
            1 => prop::sample::select(vec!["id", "ev\\u0065nt_type", "sourc", ""]),
        ]
        .prop_map(|k| format!("\"{k}\""))
    }

    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            6 => prop::sample::select(vec![
                "null", "\"publish\"", "\"a.b\"", "\"bulk\"", "\"control\"", "\"urgent\"",
                "\"4bf92f3577b34da6a3ce929d0e0e4736\"", "\"é\"", "\"\"", "1", "-0.5e3",
                "true", "{\"k\":[1,2,{}]}", "[]", "\"a\\\"b\"", "\"\\u0062ulk\"",
            ])
            .prop_map(String::from),
            1 => "[a-z0-9\"\\\\{}\\[\\],:. \t-]{0,10}",
        ]
    }

    /// The members of a valid event object with plain strings, in a random order.
    fn plain_members() -> impl Strategy<Value = Vec<String>> {
        let optional = |key: &'static str, values: Vec<&'static str>| {
            prop::option::of(prop::sample::select(values))
                .prop_map(move |v| v.map(|v| format!("\"{key}\":{v}")))
        };
        (
            prop::sample::select(vec!["\"a\"", "\"a.b.c\"", "\"x_y\""]),
            prop::sample::select(vec!["\"s\"", "\"bench\"", "\"é\""]),
            optional("op", vec!["\"publish\"", "null"]),
            optional(
                "payload",
                vec![
                    "null",
                    "{\"t\":1,\"pad\":\"xxxx\"}",
                    "[1,2.5,\"a\"]",
                    "\"p\"",
                ],
            ),
            optional("ref", vec!["7", "\"r\"", "{\"k\":1}", "null"]),
            optional("priority", vec!["\"bulk\"", "\"critical\"", "null"]),
            any::<usize>(),
        )
            .prop_map(|(t, s, op, payload, reference, priority, turn)| {
                let mut members: Vec<String> = [op, payload, reference, priority]
                    .into_iter()
                    .flatten()
                    .chain([format!("\"event_type\":{t}"), format!("\"source\":{s}")])
                    .collect();
                let n = members.len();
                members.rotate_left(turn % n);
                members
            })
    }

    fn plain() -> impl Strategy<Value = String> {
        plain_members().prop_map(|m| format!("{{{}}}", m.join(" , ")))
    }

    /// A valid object with one or two members added, replaced or broken, random
    /// whitespace, and sometimes something after it: mostly near misses.
    fn object() -> impl Strategy<Value = String> {
        let member = (space(), key(), space(), space(), value(), space())
            .prop_map(|(a, k, b, c, v, d)| format!("{a}{k}{b}:{c}{v}{d}"));
        (
            plain_members(),
            prop::collection::vec((any::<usize>(), any::<bool>(), member), 0..3),
            space(),
            prop::sample::select(vec!["", "", "", ",", " ,", ":1"]),
            prop::sample::select(vec!["", "", "", ",", "x", "}", "{}"]),
        )
            .prop_map(|(mut members, edits, b, last, tail)| {
                for (at, replace, member) in edits {
                    let at = at % members.len();
                    if replace {
                        members[at] = member;
                    } else {
                        members.insert(at, member);
                    }
                }
                format!("{b}{{{}{last}}}{b}{tail}", members.join(","))
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        #[test]
        fn never_disagrees_with_serde(text in object()) {
            agrees(text.as_bytes());
        }

        #[test]
        fn takes_every_plain_event(text in plain()) {
            prop_assert!(agrees(text.as_bytes()), "not on the fast path: {}", text);
        }
    }
}
