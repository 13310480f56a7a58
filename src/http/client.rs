//! The client side of HTTP/1.1, as far as the OTLP exporter needs it: a response head.
//! Pure: bytes in, the status and how to find the body's end out.

/// Most header lines a response may have.
const MAX_HEADERS: usize = 64;

/// How the response body ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyEnd {
    /// After this many bytes (`Content-Length`; 0 for 204 and 304).
    Length(usize),
    /// When the peer closes (chunked or unspecified): the connection cannot be reused.
    Close,
}

/// A parsed response head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponseHead {
    /// The status code.
    pub status: u16,
    /// How the body ends.
    pub body: BodyEnd,
    /// Whether the connection may carry another request.
    pub keep_alive: bool,
    /// The head's length in bytes, blank line included.
    pub len: usize,
}

/// A response head that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    /// Not HTTP/1.x.
    #[error("malformed HTTP response: {0}")]
    Malformed(String),
    /// The head is larger than allowed.
    #[error("the HTTP response head is larger than {0} bytes")]
    TooLarge(usize),
    /// A `Content-Length` that is not one decimal number.
    #[error("the HTTP response has an invalid Content-Length")]
    BadLength,
}

/// Parses a response head from the start of `buf`; `Ok(None)` while incomplete. Heads
/// over `max_len` bytes are refused.
pub fn parse_response_head(
    buf: &[u8],
    max_len: usize,
) -> Result<Option<ResponseHead>, ResponseError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > max_len => {
            return Err(ResponseError::TooLarge(max_len))
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(ResponseError::Malformed(e.to_string())),
    };
    if len > max_len {
        return Err(ResponseError::TooLarge(max_len));
    }
    let (Some(status), Some(version)) = (resp.code, resp.version) else {
        return Err(ResponseError::Malformed("no status".into()));
    };
    if !(100..=599).contains(&status) {
        return Err(ResponseError::Malformed(format!("status code {status}")));
    }
    let mut length = None;
    let mut chunked = false;
    let mut keep_alive = version == 1;
    for h in resp.headers.iter() {
        let value = std::str::from_utf8(h.value).unwrap_or("").trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            let ok = !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit());
            let n = value
                .parse::<usize>()
                .ok()
                .filter(|_| ok)
                .ok_or(ResponseError::BadLength)?;
            if length.is_some_and(|l| l != n) {
                return Err(ResponseError::BadLength);
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = true;
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    keep_alive = true;
                }
            }
        }
    }
    let body = if status == 204 || status == 304 || (100..200).contains(&status) {
        BodyEnd::Length(0)
    } else {
        match length {
            Some(n) if !chunked => BodyEnd::Length(n),
            _ => BodyEnd::Close,
        }
    };
    Ok(Some(ResponseHead {
        status,
        body,
        keep_alive: keep_alive && body != BodyEnd::Close,
        len,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 2\r\n\r\nab";
        assert_eq!(
            parse_response_head(ok, 4096),
            Ok(Some(ResponseHead {
                status: 200,
                body: BodyEnd::Length(2),
                keep_alive: true,
                len: ok.len() - 2,
            }))
        );
        for cut in 0..ok.len() - 2 {
            assert_eq!(parse_response_head(&ok[..cut], 4096), Ok(None), "{cut}");
        }
        let close = b"HTTP/1.1 503 Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
        let h = parse_response_head(close, 4096).unwrap().unwrap();
        assert_eq!((h.status, h.keep_alive), (503, false));
        let chunked =
            b"HTTP/1.1 400 Bad\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n";
        let h = parse_response_head(chunked, 4096).unwrap().unwrap();
        assert_eq!((h.body, h.keep_alive), (BodyEnd::Close, false));
        let old = b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n";
        assert!(!parse_response_head(old, 4096).unwrap().unwrap().keep_alive);
        let empty = b"HTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(
            parse_response_head(empty, 4096).unwrap().unwrap().body,
            BodyEnd::Length(0)
        );
    }

    #[test]
    fn bad_heads() {
        for bad in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            b"SSH-2.0-OpenSSH\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.1 099 Low\r\n\r\n",
            b"HTTP/1.1 600 High\r\n\r\n",
        ] {
            assert!(
                parse_response_head(bad, 4096).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = [b"HTTP/1.1 200 OK\r\nX: ".as_slice(), &[b'a'; 5000]].concat();
        assert_eq!(
            parse_response_head(&long, 4096),
            Err(ResponseError::TooLarge(4096))
        );
    }
}
