//! HTTP/1.1 request heads, parsed with httparse into the few facts the server acts on.
//!
//! [`parse_head`] follows the parser contract: `Ok(None)` = incomplete (nothing consumed),
//! `Ok(Some((req, n)))` = the head was the first `n` bytes (the body, if any, follows),
//! `Err` = answer with [`HttpError::status`] and close. Sizes are checked before anything is
//! kept, so a peer controls no allocation beyond the configured limits.

/// Most headers in one request.
pub const MAX_HEADERS: usize = 64;

/// Limits on what a client may send.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Request line plus headers.
    pub max_header_bytes: usize,
    /// Body.
    pub max_body_bytes: usize,
}

/// The facts of one request head.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `POST`, …
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The query string, without `?` (empty if none).
    pub query: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// `Content-Length`, if sent.
    pub content_length: Option<usize>,
    /// Whether the connection stays open after the response.
    pub keep_alive: bool,
    /// `Upgrade: websocket` was sent.
    pub upgrade_websocket: bool,
    /// `Connection` lists `upgrade`.
    pub connection_upgrade: bool,
    /// `Sec-WebSocket-Key`.
    pub ws_key: Option<String>,
    /// `Sec-WebSocket-Version`.
    pub ws_version: Option<String>,
    /// `Last-Event-ID` (what a reconnecting `EventSource` sends).
    pub last_event_id: Option<String>,
    /// `Expect: 100-continue` in an HTTP/1.1 request: the client waits for an interim
    /// `100 Continue` (or a final answer) before it sends the body.
    pub expect_continue: bool,
}

impl Request {
    /// Bytes of body that follow the head.
    pub fn body_len(&self) -> usize {
        self.content_length.unwrap_or(0)
    }
}

/// A request the server refuses, with the status it answers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// Not HTTP/1.x.
    #[error("malformed HTTP request: {0}")]
    Malformed(String),
    /// The head exceeds `max_header_bytes`.
    #[error("request head is over the {0}-byte limit")]
    HeadTooLarge(usize),
    /// Over [`MAX_HEADERS`] headers.
    #[error("more than {MAX_HEADERS} headers")]
    TooManyHeaders,
    /// `Content-Length` over `max_body_bytes`.
    #[error("body of {len} bytes is over the {limit}-byte limit")]
    BodyTooLarge {
        /// Announced length.
        len: u64,
        /// The limit.
        limit: usize,
    },
    /// Chunked bodies are not accepted.
    #[error("chunked request bodies are not supported: send Content-Length")]
    LengthRequired,
    /// `Content-Length` unparsable or sent twice with different values.
    #[error("invalid Content-Length header")]
    BadContentLength,
    /// An `Expect` other than `100-continue` (the value, cut to [`MAX_ECHO`] characters).
    #[error("Expect: {0:?} cannot be met: the only expectation supported is 100-continue")]
    ExpectationFailed(String),
}

/// Characters of a refused header value quoted back in the error.
pub const MAX_ECHO: usize = 64;

impl HttpError {
    /// The status code of the answer.
    pub fn status(&self) -> u16 {
        match self {
            HttpError::Malformed(_) | HttpError::BadContentLength => 400,
            HttpError::HeadTooLarge(_) | HttpError::TooManyHeaders => 431,
            HttpError::BodyTooLarge { .. } => 413,
            HttpError::LengthRequired => 411,
            HttpError::ExpectationFailed(_) => 417,
        }
    }
}

fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|b| *b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// The path and query of a request target: the origin form (`/p?q`) as it is, and the
/// absolute form (`http://host/p?q`), which RFC 9112 (3.2.2) says a server must accept,
/// without its scheme and host. `None` for the other forms (`*`, `host:port`).
fn path_and_query(target: &str) -> Option<(&str, &str)> {
    let rest = if target.starts_with('/') {
        target
    } else {
        let (scheme, rest) = target.split_once("://")?;
        let host_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let web = scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https");
        if !web || host_end == 0 {
            return None;
        }
        &rest[host_end..]
    };
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    Some((if path.is_empty() { "/" } else { path }, query))
}

/// Parses the request head at the front of `buf`.
pub fn parse_head(buf: &[u8], limits: &Limits) -> Result<Option<(Request, usize)>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let head_len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if buf.len() > limits.max_header_bytes {
                Err(HttpError::HeadTooLarge(limits.max_header_bytes))
            } else {
                Ok(None)
            };
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::TooManyHeaders),
        Err(e) => return Err(HttpError::Malformed(e.to_string())),
    };
    if head_len > limits.max_header_bytes {
        return Err(HttpError::HeadTooLarge(limits.max_header_bytes));
    }
    let (Some(method), Some(target), Some(version)) = (parsed.method, parsed.path, parsed.version)
    else {
        return Err(HttpError::Malformed("incomplete request line".into()));
    };
    let Some((path, query)) = path_and_query(target) else {
        return Err(HttpError::Malformed(
            "request target must be a path starting with / (or an http:// URL)".into(),
        ));
    };
    let mut req = Request {
        method: method.to_owned(),
        path: path.to_owned(),
        query: query.to_owned(),
        minor_version: version,
        keep_alive: version >= 1,
        ..Request::default()
    };
    for h in parsed.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            let len = std::str::from_utf8(h.value)
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or(HttpError::BadContentLength)?;
            if req.content_length.is_some_and(|prev| prev as u64 != len) {
                return Err(HttpError::BadContentLength);
            }
            if len > limits.max_body_bytes as u64 {
                return Err(HttpError::BodyTooLarge {
                    len,
                    limit: limits.max_body_bytes,
                });
            }
            req.content_length = Some(len as usize);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(HttpError::LengthRequired);
        } else if name.eq_ignore_ascii_case("connection") {
            if has_token(h.value, "close") {
                req.keep_alive = false;
            }
            if has_token(h.value, "keep-alive") {
                req.keep_alive = true;
            }
            req.connection_upgrade |= has_token(h.value, "upgrade");
        } else if name.eq_ignore_ascii_case("upgrade") {
            req.upgrade_websocket |= has_token(h.value, "websocket");
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            req.ws_key = Some(String::from_utf8_lossy(h.value).trim().to_owned());
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            req.ws_version = Some(String::from_utf8_lossy(h.value).trim().to_owned());
        } else if name.eq_ignore_ascii_case("expect") && version >= 1 {
            // HTTP/1.0 clients cannot wait for a 100, so their Expect is ignored
            // (RFC 9110, 10.1.1).
            if !h.value.trim_ascii().eq_ignore_ascii_case(b"100-continue") {
                let value = String::from_utf8_lossy(h.value);
                return Err(HttpError::ExpectationFailed(
                    value.trim().chars().take(MAX_ECHO).collect(),
                ));
            }
            req.expect_continue = true;
        } else if name.eq_ignore_ascii_case("last-event-id") {
            req.last_event_id = Some(String::from_utf8_lossy(h.value).trim().to_owned());
        }
    }
    Ok(Some((req, head_len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_header_bytes: 1024,
        max_body_bytes: 100,
    };

    #[test]
    fn parses_a_websocket_upgrade() {
        let raw = b"GET /ws/events?types=a.*,b HTTP/1.1\r\nHost: x\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\nextra";
        let (req, n) = parse_head(raw, &LIMITS).unwrap().unwrap();
        assert_eq!(&raw[n..], b"extra");
        assert_eq!(req.method, "GET");
        assert_eq!(req.path, "/ws/events");
        assert_eq!(req.query, "types=a.*,b");
        assert!(req.upgrade_websocket && req.connection_upgrade && req.keep_alive);
        assert_eq!(req.ws_key.as_deref(), Some("dGhlIHNhbXBsZSBub25jZQ=="));
        assert_eq!(req.ws_version.as_deref(), Some("13"));
    }

    #[test]
    fn incomplete_heads_need_more_until_the_limit() {
        let raw = b"POST /publish HTTP/1.1\r\nContent-Length: 5\r\n\r\n";
        for cut in 0..raw.len() {
            assert_eq!(parse_head(&raw[..cut], &LIMITS), Ok(None), "cut {cut}");
        }
        let (req, _) = parse_head(raw, &LIMITS).unwrap().unwrap();
        assert_eq!(req.body_len(), 5);
        let long = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(2000));
        assert_eq!(
            parse_head(long.as_bytes(), &LIMITS),
            Err(HttpError::HeadTooLarge(1024))
        );
    }

    #[test]
    fn refusals_carry_their_status() {
        let status = |raw: &[u8]| parse_head(raw, &LIMITS).unwrap_err().status();
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nContent-Length: 101\r\n\r\n"),
            413
        );
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n"),
            400
        );
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"),
            400
        );
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            400
        );
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            411
        );
        assert_eq!(status(b"GET / HTTP/2.0\r\n\r\n"), 400);
        assert_eq!(status(b"\x00\x01 garbage\r\n\r\n"), 400);
        // Neither a path nor an http(s) URL: `*`, authority-form, other schemes, no host.
        for target in [
            "*",
            "x.com:80",
            "ftp://x/",
            "http:///health",
            "http:/x",
            "x/y",
        ] {
            let raw = format!("GET {target} HTTP/1.1\r\n\r\n");
            assert_eq!(status(raw.as_bytes()), 400, "{target}");
        }
        let many: String = (0..70).map(|i| format!("H{i}: v\r\n")).collect();
        assert_eq!(
            status(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes()),
            431
        );
    }

    #[test]
    fn expect_is_100_continue_on_http_1_1_or_refused() {
        let parse = |raw: &[u8]| parse_head(raw, &LIMITS).map(|r| r.unwrap().0.expect_continue);
        assert_eq!(
            parse(b"POST / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n"),
            Ok(true)
        );
        assert_eq!(
            parse(b"POST / HTTP/1.1\r\nexpect:  100-CONTINUE \r\n\r\n"),
            Ok(true)
        );
        assert_eq!(parse(b"POST / HTTP/1.1\r\n\r\n"), Ok(false));
        // HTTP/1.0: ignored, whatever it says.
        assert_eq!(
            parse(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n"),
            Ok(false)
        );
        assert_eq!(parse(b"POST / HTTP/1.0\r\nExpect: x\r\n\r\n"), Ok(false));
        for value in ["", "100-continue, x", "200-ok"] {
            let raw = format!("POST / HTTP/1.1\r\nExpect: {value}\r\n\r\n");
            assert_eq!(
                parse(raw.as_bytes()),
                Err(HttpError::ExpectationFailed(value.into()))
            );
        }
        // The value quoted back is cut short, on a character boundary.
        let long = format!("POST / HTTP/1.1\r\nExpect: {}\r\n\r\n", "é".repeat(100));
        let Err(e) = parse(long.as_bytes()) else {
            panic!("accepted")
        };
        assert_eq!(e.status(), 417);
        assert_eq!(e, HttpError::ExpectationFailed("é".repeat(MAX_ECHO)));
    }

    #[test]
    fn absolute_form_targets_are_taken_as_their_path_and_query() {
        // RFC 9112, 3.2.2: a server must accept the absolute form, though clients send it
        // only to proxies.
        let target = |t: &str| {
            let raw = format!("GET {t} HTTP/1.1\r\nHost: y\r\n\r\n");
            let (req, _) = parse_head(raw.as_bytes(), &LIMITS).unwrap().unwrap();
            (req.path, req.query)
        };
        let pq = |p: &str, q: &str| (p.to_owned(), q.to_owned());
        assert_eq!(target("http://x/"), pq("/", ""));
        assert_eq!(
            target("HTTP://x:8765/health?limit=1"),
            pq("/health", "limit=1")
        );
        assert_eq!(
            target("https://[::1]:8765/dlq/entries"),
            pq("/dlq/entries", "")
        );
        assert_eq!(target("http://x"), pq("/", ""));
        assert_eq!(target("http://x?a=1"), pq("/", "a=1"));
        assert_eq!(target("/plain?q"), pq("/plain", "q"));
    }

    #[test]
    fn keep_alive_follows_the_version_and_header() {
        let ka = |raw: &[u8]| parse_head(raw, &LIMITS).unwrap().unwrap().0.keep_alive;
        assert!(ka(b"GET / HTTP/1.1\r\n\r\n"));
        assert!(!ka(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n"));
        assert!(!ka(b"GET / HTTP/1.0\r\n\r\n"));
        assert!(ka(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
    }
}
