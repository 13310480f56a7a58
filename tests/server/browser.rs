//! A real browser's `EventSource` (headless Chromium, driven over the DevTools protocol):
//! it parses the stream, gets `EPOCH:ID` as `lastEventId`, and when the stream ends (the
//! server shuts down) it reconnects by itself sending `Last-Event-ID`, which the restarted
//! server (a new epoch) answers with `recovered:false` rather than the wrong events.
//!
//! Needs `chromium-headless-shell` (Debian package of that name; `.ci/run` installs it).
//! Without it the test says so and passes, unless `FIREHOSE_REQUIRE_BROWSER=1` (as in CI).

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::Message;

use crate::support::*;
use firehose::Event;

const BROWSER: &str = "chromium-headless-shell";

/// A headless browser and one DevTools session attached to a page.
struct Browser {
    child: Child,
    ws: Ws,
    session: String,
    next_id: u64,
    _profile: tempdir::Dir,
}

mod tempdir {
    /// A directory removed on drop.
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Browser {
    /// Starts the browser and opens `url` in a new page; `None` if it is not installed.
    fn open(url: &str) -> Option<Self> {
        let profile =
            std::env::temp_dir().join(format!("firehose-chromium-{}", std::process::id()));
        let mut child = match Command::new(BROWSER)
            .args([
                "--no-sandbox",
                "--disable-gpu",
                "--remote-debugging-port=0",
                &format!("--user-data-dir={}", profile.display()),
                "about:blank",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // Its own process group: the command may be a wrapper script whose browser is a
            // child, which killing the wrapper alone would leave running.
            .process_group(0)
            .spawn()
        {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => panic!("cannot start {BROWSER}: {e}"),
        };
        // "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/ID"
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let mut endpoint = None;
        for line in stderr.lines() {
            let line = line.unwrap();
            if let Some(at) = line.find("ws://") {
                endpoint = Some(line[at..].trim().to_owned());
                break;
            }
        }
        let endpoint = endpoint.expect("the browser prints its DevTools endpoint");
        let hostport = endpoint["ws://".len()..]
            .split('/')
            .next()
            .unwrap()
            .to_owned();
        let stream = TcpStream::connect(&hostport).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let (ws, _) = tungstenite::client::client(endpoint.as_str(), stream).unwrap();
        let mut b = Self {
            child,
            ws,
            session: String::new(),
            next_id: 1,
            _profile: tempdir::Dir(profile),
        };
        let target = b.call("Target.createTarget", json!({"url": url}))["targetId"].clone();
        let attached = b.call(
            "Target.attachToTarget",
            json!({"targetId": target, "flatten": true}),
        );
        b.session = attached["sessionId"].as_str().unwrap().to_owned();
        Some(b)
    }

    /// One DevTools command (on the page's session once attached); its `result`.
    fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            msg["sessionId"] = self.session.clone().into();
        }
        self.ws.send(Message::text(msg.to_string())).unwrap();
        loop {
            let Message::Text(t) = self.ws.read().unwrap() else {
                continue;
            };
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    /// Evaluates `js` in the page and returns its value (a string of JSON, by convention).
    fn eval(&mut self, js: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": js, "returnByValue": true, "awaitPromise": true}),
        );
        assert!(r.get("exceptionDetails").is_none(), "{js}: {r}");
        r["result"]["value"].clone()
    }

    /// Polls `js` (a boolean expression) until true, for up to `wait`.
    fn until(&mut self, js: &str, wait: Duration) -> bool {
        let end = Instant::now() + wait;
        while Instant::now() < end {
            if self.eval(js) == Value::Bool(true) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    fn state(&mut self) -> Value {
        serde_json::from_str(self.eval("JSON.stringify(window.out)").as_str().unwrap()).unwrap()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The whole group (see `open`), then the child itself.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_browser_event_source_streams_and_reconnects_with_last_event_id() {
    let a = server(|c| c.io_threads = 1);
    let addr = a.local_addr();
    // A page on the server's own origin (its /health), so no CORS or local-network rule
    // stands between the page and the stream.
    let Some(mut browser) = Browser::open(&format!("http://{addr}/health")) else {
        assert!(
            std::env::var("FIREHOSE_REQUIRE_BROWSER").as_deref() != Ok("1"),
            "{BROWSER} is not installed (apt-get install {BROWSER})"
        );
        eprintln!("skipped: {BROWSER} is not installed (apt-get install {BROWSER})");
        return;
    };
    assert!(browser.until(
        "location.protocol === 'http:' && document.readyState === 'complete'",
        Duration::from_secs(20)
    ));
    browser.eval(
        r#"window.out = {events: [], ids: [], welcomes: [], closing: [], errors: 0};
        const es = new EventSource("/sse/events?types=a.*");
        window.es = es;
        es.onmessage = (m) => { out.events.push(JSON.parse(m.data).id); out.ids.push(m.lastEventId); };
        es.addEventListener("welcome", (m) => out.welcomes.push(JSON.parse(m.data)));
        es.addEventListener("closing", (m) => out.closing.push(JSON.parse(m.data)));
        es.onerror = () => out.errors++;
        "ok""#,
    );
    assert!(eventually(Duration::from_secs(10), || {
        a.engine().snapshot().sse_connected_clients == 1
    }));
    let bus = a.bus().clone();
    let ids: Vec<u64> = ["a.one", "b.skip", "a.two", "a.three"]
        .iter()
        .map(|t| bus.publish(Event::new(*t, "browser-test")).unwrap())
        .collect();
    assert!(
        browser.until("out.events.length === 3", Duration::from_secs(10)),
        "{}",
        browser.state()
    );
    let s = browser.state();
    assert_eq!(s["events"], json!([ids[0], ids[2], ids[3]]));
    let epoch_a = bus.epoch();
    assert_eq!(
        s["ids"][2],
        format!("{epoch_a}:{}", ids[3]),
        "lastEventId is EPOCH:ID"
    );
    assert_eq!(s["welcomes"][0]["recovered"], false);

    // The server goes away; the browser reconnects by itself (retry: 2000 ms) to a new
    // server on the same port, sending the last id it saw.
    a.shutdown();
    let b = server(|c| {
        c.io_threads = 1;
        c.port = addr.port();
        c.host = addr.ip();
    });
    assert!(
        browser.until("out.welcomes.length === 2", Duration::from_secs(20)),
        "{}",
        browser.state()
    );
    let s = browser.state();
    assert_eq!(s["closing"][0]["last_id"], ids[3], "{s}");
    let w = &s["welcomes"][1];
    assert_eq!(
        (w["recovered"].as_bool(), w["reason"].as_str()),
        (Some(false), Some("other_epoch")),
        "the browser sent Last-Event-ID {epoch_a}:{}: {w}",
        ids[3]
    );
    assert_ne!(w["epoch"].as_u64(), Some(epoch_a));
    let next = b
        .bus()
        .publish(Event::new("a.after", "browser-test"))
        .unwrap();
    assert!(browser.until("out.events.length === 4", Duration::from_secs(10)));
    assert_eq!(browser.state()["events"][3], next);
}
