//! HTTP responses, encoded in one buffer.

use bytes::Bytes;
use serde_json::Value;

/// A response to encode.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Extra headers.
    pub headers: Vec<(&'static str, String)>,
    /// `Content-Type` of the body.
    pub content_type: &'static str,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// The interim answer to `Expect: 100-continue`: send the body.
    pub const CONTINUE: Bytes = Bytes::from_static(b"HTTP/1.1 100 Continue\r\n\r\n");

    /// A JSON response.
    pub fn json(status: u16, value: &Value) -> Self {
        Self {
            status,
            headers: Vec::new(),
            content_type: "application/json",
            body: value.to_string().into_bytes(),
        }
    }

    /// A text body of type `content_type`.
    pub fn text(status: u16, content_type: &'static str, body: String) -> Self {
        Self {
            status,
            headers: Vec::new(),
            content_type,
            body: body.into_bytes(),
        }
    }

    /// `{"error": message}` with `status`.
    pub fn error(status: u16, message: &str) -> Self {
        Self::json(status, &serde_json::json!({ "error": message }))
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// Encodes status line, headers and body. `keep_alive` picks the `Connection` header.
    pub fn encode(&self, keep_alive: bool) -> Bytes {
        self.encode_with(keep_alive, true)
    }

    /// The answer to a `HEAD`: [`encode`](Self::encode) without the body, its
    /// `Content-Length` still the body's (RFC 9110, 9.3.2).
    pub fn encode_head(&self, keep_alive: bool) -> Bytes {
        self.encode_with(keep_alive, false)
    }

    fn encode_with(&self, keep_alive: bool, with_body: bool) -> Bytes {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: {}\r\nCache-Control: no-store\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len(),
            if keep_alive { "keep-alive" } else { "close" },
        )
        .into_bytes();
        for (name, value) in &self.headers {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if with_body {
            out.extend_from_slice(&self.body);
        }
        Bytes::from(out)
    }
}

/// The reason phrase of the statuses the server uses.
pub fn reason(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        417 => "Expectation Failed",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_answer_is_the_get_answer_without_its_body() {
        let resp = Response::error(404, "no route").with_header("Allow", "GET, HEAD");
        let (get, head) = (resp.encode(true), resp.encode_head(true));
        let body = br#"{"error":"no route"}"#;
        assert!(get.ends_with(body));
        assert_eq!(&get[..get.len() - body.len()], &head[..]);
        let head = std::str::from_utf8(&head).unwrap();
        assert!(head.starts_with("HTTP/1.1 404 Not Found\r\n"), "{head}");
        assert!(head.contains(&format!("Content-Length: {}\r\n", body.len())));
        assert!(head.ends_with("Allow: GET, HEAD\r\n\r\n"), "{head}");
    }
}
