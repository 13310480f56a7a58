//! The WebSocket opening handshake (RFC 6455 §4.2), on an already-parsed request head.

use bytes::Bytes;

use crate::acks::{AckClass, AckClassError};
use crate::event::{Filter, FilterError};
use crate::http::query::{self, QueryError};
use crate::http::request::Request;
use crate::policy::{Policy, PolicyError};
use crate::resume::{Position, PositionError};

/// What a valid upgrade request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgrade {
    /// `Sec-WebSocket-Accept` value.
    pub accept: String,
    /// The subscription's filter (`types=`; everything when absent).
    pub filter: Filter,
    /// The overflow policy (`overflow=`; the server's default when absent).
    pub overflow: Policy,
    /// Where to resume (`last_event_id=N` or `E:N`, with `epoch=E`); `None`: live only.
    pub resume: Option<Position>,
    /// Which events must be acknowledged (`ack=`); `None`: none.
    pub ack: Option<AckClass>,
}

/// Why an upgrade was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// Plain HTTP to the WebSocket endpoint (or an upgrade over HTTP/1.0).
    #[error("this endpoint speaks WebSocket: send an HTTP/1.1 GET with `Upgrade: websocket` and `Connection: Upgrade`")]
    NotUpgrade,
    /// Not version 13.
    #[error("unsupported Sec-WebSocket-Version {0:?}: this server speaks version 13")]
    Version(String),
    /// Missing or malformed key.
    #[error("Sec-WebSocket-Key must be 24 characters of base64 encoding 16 bytes")]
    Key,
    /// `types` could not be used.
    #[error("types: {0}")]
    Filter(#[from] FilterError),
    /// Undecodable query.
    #[error(transparent)]
    Query(#[from] QueryError),
    /// An unknown overflow policy.
    #[error("overflow: {0}")]
    Policy(#[from] PolicyError),
    /// `ack` could not be used.
    #[error(transparent)]
    Ack(#[from] AckClassError),
    /// `last_event_id` / `epoch` could not be used.
    #[error(transparent)]
    Resume(#[from] PositionError),
    /// A policy this server does not allow.
    #[error("overflow={0} is not allowed on this server; allowed: {1}")]
    PolicyNotAllowed(Policy, String),
    /// A parameter that this endpoint does not know (or does not support yet).
    #[error("unknown query parameter {0:?}: this endpoint accepts `types` (comma-separated patterns), `overflow`, `last_event_id`, `epoch` and (WebSocket) `ack`")]
    UnknownParam(String),
    /// A parameter other than `types` given twice (which one was meant?).
    #[error(
        "query parameter {0:?} is given twice; only `types` may repeat (its patterns are joined)"
    )]
    Repeated(String),
}

impl HandshakeError {
    /// The HTTP status of the refusal.
    pub fn status(&self) -> u16 {
        match self {
            HandshakeError::NotUpgrade | HandshakeError::Version(_) => 426,
            _ => 400,
        }
    }
}

fn is_base64(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'+' || b == b'/'
}

/// Checks an upgrade request to `/ws/events` and reads its subscription parameters;
/// `overflow=` must be one of `allowed` and defaults to `default`.
pub fn accept(
    req: &Request,
    default: Policy,
    allowed: &[Policy],
) -> Result<Upgrade, HandshakeError> {
    if req.method != "GET"
        || !req.upgrade_websocket
        || !req.connection_upgrade
        || req.minor_version < 1
    {
        return Err(HandshakeError::NotUpgrade);
    }
    match req.ws_version.as_deref() {
        Some("13") => {}
        other => {
            return Err(HandshakeError::Version(
                other.unwrap_or("").chars().take(16).collect(),
            ))
        }
    }
    let key = req.ws_key.as_deref().ok_or(HandshakeError::Key)?;
    let k = key.as_bytes();
    // 16 bytes in base64: 22 significant characters, the last carrying 2 bits, then "==".
    let valid = k.len() == 24
        && k[..22].iter().all(|b| is_base64(*b))
        && &k[22..] == b"=="
        && b"AQgw".contains(&k[21]);
    if !valid {
        return Err(HandshakeError::Key);
    }
    let sub = subscription(&req.query, None, default, allowed)?;
    Ok(Upgrade {
        accept: tungstenite::handshake::derive_accept_key(key.as_bytes()),
        filter: sub.filter,
        overflow: sub.overflow,
        resume: sub.resume,
        ack: sub.ack,
    })
}

/// What a subscription asks for, on either transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// `types=` (everything when absent).
    pub filter: Filter,
    /// `overflow=` (`default` when absent).
    pub overflow: Policy,
    /// `last_event_id=` (with `epoch=`), or `last_event_id_header` when given: `None` for
    /// live only.
    pub resume: Option<Position>,
    /// `ack=critical|all|none`.
    pub ack: Option<AckClass>,
}

/// Reads a subscription's query parameters (`types`, `overflow` within `allowed`,
/// `last_event_id`, `epoch`). A `Last-Event-ID` header (`last_event_id_header`) wins over
/// the query: a reconnecting `EventSource` sends it, newer than its URL.
pub fn subscription(
    q: &str,
    last_event_id_header: Option<&str>,
    default: Policy,
    allowed: &[Policy],
) -> Result<Subscription, HandshakeError> {
    let mut types = Vec::new();
    let mut overflow = default;
    let (mut last_event_id, mut epoch, mut ack) = (None, None, None);
    let mut seen = Vec::new();
    for pair in query::pairs(q) {
        let (name, value) = pair?;
        if name != "types" {
            if seen.contains(&name) {
                return Err(HandshakeError::Repeated(name.chars().take(64).collect()));
            }
            seen.push(name.clone());
        }
        match &*name {
            "ack" => ack = AckClass::parse(&value)?,
            "last_event_id" => last_event_id = Some(value),
            "epoch" => epoch = Some(value),
            "types" => types.push(value),
            "overflow" => {
                overflow = value.parse()?;
                if !allowed.contains(&overflow) {
                    let names: Vec<&str> = allowed.iter().map(|p| p.as_str()).collect();
                    return Err(HandshakeError::PolicyNotAllowed(overflow, names.join(", ")));
                }
            }
            other => {
                return Err(HandshakeError::UnknownParam(
                    other.chars().take(64).collect(),
                ))
            }
        }
    }
    // The header (SSE ids are `E:N`) stands alone: the URL's epoch may be older.
    let resume = match last_event_id_header {
        Some(h) => Some(Position::parse(h)?),
        None => Position::from_parts(last_event_id.as_deref(), epoch.as_deref())?,
    };
    let filter = if types.is_empty() {
        Filter::all()
    } else {
        Filter::from_patterns(types.iter().flat_map(|list| list.split(',')))?
    };
    Ok(Subscription {
        filter,
        overflow,
        resume,
        ack,
    })
}

/// The `101 Switching Protocols` answer.
pub fn switching_protocols(accept: &str) -> Bytes {
    Bytes::from(format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept_all(req: &Request) -> Result<Upgrade, HandshakeError> {
        accept(req, Policy::DropNewest, &Policy::ALL)
    }

    #[test]
    fn overflow_is_chosen_within_what_the_server_allows() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        assert_eq!(
            accept_all(&upgrade("", key, "13")).unwrap().overflow,
            Policy::DropNewest
        );
        assert_eq!(
            accept_all(&upgrade("overflow=priority", key, "13"))
                .unwrap()
                .overflow,
            Policy::Priority
        );
        assert!(matches!(
            accept_all(&upgrade("overflow=fast", key, "13")),
            Err(HandshakeError::Policy(_))
        ));
        let only = accept(
            &upgrade("overflow=disconnect", key, "13"),
            Policy::DropNewest,
            &[Policy::DropNewest],
        );
        assert!(only
            .unwrap_err()
            .to_string()
            .contains("allowed: drop-newest"));
    }

    fn upgrade(query: &str, key: &str, version: &str) -> Request {
        Request {
            method: "GET".into(),
            path: "/ws/events".into(),
            query: query.into(),
            minor_version: 1,
            upgrade_websocket: true,
            connection_upgrade: true,
            ws_key: Some(key.into()),
            ws_version: Some(version.into()),
            ..Request::default()
        }
    }

    #[test]
    fn accepts_the_rfc_example() {
        let u = accept_all(&upgrade("types=a.*%2Cb", "dGhlIHNhbXBsZSBub25jZQ==", "13")).unwrap();
        assert_eq!(u.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert!(u.filter.matches("a.x") && u.filter.matches("b") && !u.filter.matches("c"));
    }

    #[test]
    fn repeated_types_are_joined_and_other_repeats_refused() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let u = accept_all(&upgrade("types=a.*&types=b,c", key, "13")).unwrap();
        let patterns: Vec<String> = u.filter.patterns().iter().map(|p| p.to_string()).collect();
        assert_eq!(patterns, ["a.*", "b", "c"]);
        for q in [
            "overflow=drop-oldest&overflow=priority",
            "ack=all&ack=none",
            "last_event_id=1&last_event_id=2",
            "epoch=1&epoch=1",
        ] {
            assert!(
                matches!(
                    accept_all(&upgrade(q, key, "13")),
                    Err(HandshakeError::Repeated(_))
                ),
                "{q}"
            );
        }
    }

    #[test]
    fn refuses_bad_upgrades() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        assert_eq!(
            accept_all(&upgrade("", key, "8")).unwrap_err().status(),
            426
        );
        assert_eq!(
            accept_all(&upgrade("", "short", "13")),
            Err(HandshakeError::Key)
        );
        assert_eq!(
            accept_all(&upgrade("", "dGhlIHNhbXBsZSBub25jZR==", "13")),
            Err(HandshakeError::Key)
        );
        assert!(matches!(
            accept_all(&upgrade("types=", key, "13")),
            Err(HandshakeError::Filter(_))
        ));
        assert!(matches!(
            accept_all(&upgrade("tpyes=a", key, "13")),
            Err(HandshakeError::UnknownParam(_))
        ));
        let mut plain = upgrade("", key, "13");
        plain.upgrade_websocket = false;
        assert_eq!(accept_all(&plain), Err(HandshakeError::NotUpgrade));
        // RFC 6455 §4.1: the upgrade needs HTTP/1.1 or later.
        let mut old = upgrade("", key, "13");
        old.minor_version = 0;
        let refused = accept_all(&old).unwrap_err();
        assert_eq!(refused, HandshakeError::NotUpgrade);
        assert!(refused.to_string().contains("HTTP/1.1 GET"), "{refused}");
    }
}
