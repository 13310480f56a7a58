//! RFC 6455 frames: decoding what clients send, encoding what the server sends.
//!
//! [`parse`] follows the crate's parser contract: `Ok(None)` means "need more bytes" and
//! consumes nothing; `Ok(Some((frame, n)))` consumed `n` bytes; `Err` names the close code
//! the connection must end with. The payload length is checked against the limit before any
//! allocation, so a peer announcing a 2^63-byte frame costs nothing.
//!
//! Server frames are never masked, so one encoded frame is valid for every client.

use bytes::{BufMut, Bytes, BytesMut};

/// Longest header of an unmasked (server) frame: 2 bytes + 8-byte length.
pub const MAX_HEADER_LEN: usize = 10;
/// Longest control-frame payload (RFC 6455 §5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// Frame opcodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpCode {
    /// Continuation of a fragmented message.
    Continuation,
    /// UTF-8 text.
    Text,
    /// Binary data.
    Binary,
    /// Close.
    Close,
    /// Ping.
    Ping,
    /// Pong.
    Pong,
}

impl OpCode {
    fn from_bits(b: u8) -> Option<Self> {
        Some(match b {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            _ => return None,
        })
    }

    fn bits(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
        }
    }

    /// Close, ping and pong.
    pub fn is_control(self) -> bool {
        matches!(self, OpCode::Close | OpCode::Ping | OpCode::Pong)
    }
}

/// Close status codes the server sends (RFC 6455 §7.4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseCode {
    /// 1000: done.
    Normal,
    /// 1001: server shutting down, or idle timeout.
    GoingAway,
    /// 1002: the peer broke the protocol.
    Protocol,
    /// 1003: a data type the server does not accept (binary).
    Unsupported,
    /// 1007: text that is not UTF-8.
    InvalidData,
    /// 1008: a policy was violated.
    Policy,
    /// 1009: a message over the size limit.
    TooBig,
    /// 1011: the server hit an internal error.
    Internal,
}

impl CloseCode {
    /// The numeric code.
    pub fn code(self) -> u16 {
        match self {
            CloseCode::Normal => 1000,
            CloseCode::GoingAway => 1001,
            CloseCode::Protocol => 1002,
            CloseCode::Unsupported => 1003,
            CloseCode::InvalidData => 1007,
            CloseCode::Policy => 1008,
            CloseCode::TooBig => 1009,
            CloseCode::Internal => 1011,
        }
    }
}

/// Why a client frame was refused, with the close code it earns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// RSV1-3 set without a negotiated extension.
    #[error("reserved bits set in a frame header (no extension was negotiated)")]
    ReservedBits,
    /// Unknown opcode.
    #[error("unknown frame opcode {0:#x}")]
    BadOpcode(u8),
    /// Client frames must be masked (RFC 6455 §5.1).
    #[error("client frame is not masked")]
    Unmasked,
    /// Control frames must be short and unfragmented.
    #[error("control frame is fragmented or longer than 125 bytes")]
    BadControl,
    /// A 64-bit length with the top bit set.
    #[error("frame length has the most significant bit set")]
    BadLength,
    /// Over the inbound size limit.
    #[error("frame of {len} bytes is over the {limit}-byte limit")]
    TooBig {
        /// Announced length.
        len: u64,
        /// The limit.
        limit: usize,
    },
}

impl FrameError {
    /// The close code the connection ends with.
    pub fn close_code(&self) -> CloseCode {
        match self {
            FrameError::TooBig { .. } => CloseCode::TooBig,
            _ => CloseCode::Protocol,
        }
    }
}

/// A decoded client frame, payload unmasked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Final fragment.
    pub fin: bool,
    /// Opcode.
    pub opcode: OpCode,
    /// Unmasked payload.
    pub payload: Vec<u8>,
}

/// Decodes one client frame from the front of `buf`. `max_payload` bounds the payload.
pub fn parse(buf: &[u8], max_payload: usize) -> Result<Option<(Frame, usize)>, FrameError> {
    let [b0, b1, ..] = *buf else { return Ok(None) };
    if b0 & 0x70 != 0 {
        return Err(FrameError::ReservedBits);
    }
    let fin = b0 & 0x80 != 0;
    let opcode = OpCode::from_bits(b0 & 0x0F).ok_or(FrameError::BadOpcode(b0 & 0x0F))?;
    if b1 & 0x80 == 0 {
        return Err(FrameError::Unmasked);
    }
    let (len, mut at) = match b1 & 0x7F {
        126 => match buf.get(2..4) {
            Some(b) => (u16::from_be_bytes([b[0], b[1]]) as u64, 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => {
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                (u64::from_be_bytes(a), 10)
            }
            None => return Ok(None),
        },
        n => (n as u64, 2),
    };
    if len >> 63 != 0 {
        return Err(FrameError::BadLength);
    }
    if opcode.is_control() && (!fin || len > MAX_CONTROL_PAYLOAD as u64) {
        return Err(FrameError::BadControl);
    }
    if len > max_payload as u64 {
        return Err(FrameError::TooBig {
            len,
            limit: max_payload,
        });
    }
    let Some(key) = buf.get(at..at + 4) else {
        return Ok(None);
    };
    let key = [key[0], key[1], key[2], key[3]];
    at += 4;
    let len = len as usize;
    let Some(masked) = buf.get(at..at + len) else {
        return Ok(None);
    };
    let mut payload = masked.to_vec();
    unmask(&mut payload, key);
    Ok(Some((
        Frame {
            fin,
            opcode,
            payload,
        },
        at + len,
    )))
}

/// XORs `data` with the repeating 4-byte `key`, eight bytes at a time: byte by byte it was
/// 3 % of a server's time as fast as publishers sent (`perf`, README *Throughput*).
fn unmask(data: &mut [u8], key: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    // Chunks of 8 keep the key's phase: the rest starts at key byte 0.
    for (b, k) in chunks.into_remainder().iter_mut().zip(key.iter().cycle()) {
        *b ^= k;
    }
}

/// Writes an unmasked, final frame header for `len` payload bytes; returns its length.
pub fn write_header(out: &mut [u8; MAX_HEADER_LEN], opcode: OpCode, len: usize) -> usize {
    out[0] = 0x80 | opcode.bits();
    if len < 126 {
        out[1] = len as u8;
        2
    } else if len <= u16::MAX as usize {
        out[1] = 126;
        out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        out[1] = 127;
        out[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    }
}

/// Encodes a whole unmasked frame.
pub fn encode(opcode: OpCode, payload: &[u8]) -> Bytes {
    let mut header = [0u8; MAX_HEADER_LEN];
    let n = write_header(&mut header, opcode, payload.len());
    let mut out = BytesMut::with_capacity(n + payload.len());
    out.put_slice(&header[..n]);
    out.put_slice(payload);
    out.freeze()
}

/// Decodes one unmasked frame (as the server sends them) from the front of `buf`, for
/// clients such as `firehose bench`: `(first header byte, payload, bytes used)`, or `None`
/// until the frame is complete (or if its length cannot be addressed).
pub fn parse_unmasked(buf: &[u8]) -> Option<(u8, &[u8], usize)> {
    let (&b0, &b1) = (buf.first()?, buf.get(1)?);
    let (len, at): (usize, usize) = match b1 & 0x7F {
        126 => (u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?]) as usize, 4),
        127 => {
            let b = buf.get(2..10)?;
            let len = u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
            (usize::try_from(len).ok()?, 10)
        }
        n => (n as usize, 2),
    };
    let payload = buf.get(at..at.checked_add(len)?)?;
    Some((b0, payload, at + len))
}

/// Encodes a masked frame as a client sends it. `head` is the first header byte (FIN, RSV
/// and opcode bits), taken raw so tests can also build frames the server must refuse.
pub fn encode_masked(out: &mut Vec<u8>, head: u8, payload: &[u8], key: [u8; 4]) {
    out.push(head);
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xFFFF => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&key);
    out.extend(payload.iter().zip(key.iter().cycle()).map(|(b, k)| b ^ k));
}

/// A close frame with `code` and a reason (cut to fit a control frame at a char boundary).
pub fn close(code: CloseCode, reason: &str) -> Bytes {
    let mut end = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = Vec::with_capacity(2 + end);
    payload.extend_from_slice(&code.code().to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    encode(OpCode::Close, &payload)
}

/// What a client's close frame said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseRequest {
    /// No status code: answer with an empty close.
    Empty,
    /// A valid code to echo.
    Code(u16),
    /// A malformed close payload, answered with this code.
    Invalid(CloseCode),
}

/// Checks a close frame's payload (RFC 6455 §5.5.1, §7.4).
pub fn parse_close(payload: &[u8]) -> CloseRequest {
    match payload {
        [] => CloseRequest::Empty,
        [_] => CloseRequest::Invalid(CloseCode::Protocol),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            let valid = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
            if !valid {
                CloseRequest::Invalid(CloseCode::Protocol)
            } else if std::str::from_utf8(reason).is_err() {
                CloseRequest::Invalid(CloseCode::InvalidData)
            } else {
                CloseRequest::Code(code)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame, as a browser would send it.
    pub(crate) fn client_frame(fin: bool, op: u8, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_masked(&mut out, if fin { 0x80 | op } else { op }, payload, key);
        out
    }

    #[test]
    fn unmasking_matches_the_byte_by_byte_definition_at_every_length() {
        let key = [0x12, 0x34, 0x56, 0x78];
        for len in 0..40 {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let mut fast = data.clone();
            unmask(&mut fast, key);
            let slow: Vec<u8> = data
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ key[i % 4])
                .collect();
            assert_eq!(fast, slow, "len {len}");
        }
    }

    #[test]
    fn decodes_every_length_form_and_needs_more_on_every_prefix() {
        for len in [0usize, 1, 125, 126, 127, 65535, 65536, 70000] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let wire = client_frame(true, 0x1, &payload, [1, 2, 3, 4]);
            let (frame, used) = parse(&wire, 1 << 20).unwrap().unwrap();
            assert_eq!(used, wire.len());
            assert_eq!(frame.payload, payload);
            assert!(frame.fin);
            assert_eq!(frame.opcode, OpCode::Text);
            for cut in [0, 1, wire.len() / 2, wire.len() - 1] {
                if cut < wire.len() {
                    assert_eq!(
                        parse(&wire[..cut], 1 << 20),
                        Ok(None),
                        "len {len} cut {cut}"
                    );
                }
            }
        }
    }

    #[test]
    fn refuses_protocol_violations_with_the_right_code() {
        let ok = client_frame(true, 0x1, b"hi", [9, 9, 9, 9]);
        let mut rsv = ok.clone();
        rsv[0] |= 0x40;
        assert_eq!(parse(&rsv, 100), Err(FrameError::ReservedBits));
        let mut unmasked = ok.clone();
        unmasked[1] &= 0x7F;
        assert_eq!(parse(&unmasked, 100), Err(FrameError::Unmasked));
        assert_eq!(
            parse(&client_frame(true, 0x3, b"", [0; 4]), 100),
            Err(FrameError::BadOpcode(3))
        );
        assert_eq!(
            parse(&client_frame(false, 0x9, b"", [0; 4]), 100),
            Err(FrameError::BadControl)
        );
        assert_eq!(
            parse(&client_frame(true, 0x9, &[0; 126], [0; 4]), 1000),
            Err(FrameError::BadControl)
        );
        let big = parse(&client_frame(true, 0x1, &[0; 200], [0; 4]), 100).unwrap_err();
        assert_eq!(big.close_code(), CloseCode::TooBig);
        // A huge announced length is refused from the header alone.
        let mut huge = vec![0x81, 0xFF];
        huge.extend_from_slice(&(1u64 << 40).to_be_bytes());
        assert!(matches!(parse(&huge, 100), Err(FrameError::TooBig { .. })));
        let mut msb = vec![0x81, 0xFF];
        msb.extend_from_slice(&(1u64 << 63).to_be_bytes());
        assert_eq!(parse(&msb, 100), Err(FrameError::BadLength));
    }

    #[test]
    fn server_frames_have_minimal_headers() {
        for (len, hl) in [(0, 2), (125, 2), (126, 4), (65535, 4), (65536, 10)] {
            let f = encode(OpCode::Text, &vec![b'a'; len]);
            assert_eq!(f.len(), len + hl);
        }
        let c = close(CloseCode::Policy, &"é".repeat(100));
        assert_eq!(
            c.len(),
            2 + 2 + 122,
            "reason cut at a char boundary within 125 bytes"
        );
        assert_eq!(&c[2..4], &1008u16.to_be_bytes());
    }

    #[test]
    fn unmasked_frames_decode_back() {
        for len in [0usize, 5, 125, 126, 65535, 65536] {
            let f = encode(OpCode::Text, &vec![b'z'; len]);
            let (b0, payload, used) = parse_unmasked(&f).unwrap();
            assert_eq!((b0, payload.len(), used), (0x81, len, f.len()));
            assert!(parse_unmasked(&f[..f.len() - 1]).is_none() || len == 0);
        }
        assert!(parse_unmasked(&[0x81]).is_none());
    }

    #[test]
    fn close_payloads_are_checked() {
        assert_eq!(parse_close(b""), CloseRequest::Empty);
        assert_eq!(
            parse_close(&[3]),
            CloseRequest::Invalid(CloseCode::Protocol)
        );
        assert_eq!(
            parse_close(&1000u16.to_be_bytes()),
            CloseRequest::Code(1000)
        );
        assert_eq!(
            parse_close(&1005u16.to_be_bytes()),
            CloseRequest::Invalid(CloseCode::Protocol)
        );
        assert_eq!(
            parse_close(&4000u16.to_be_bytes()),
            CloseRequest::Code(4000)
        );
        let mut bad_utf8 = 1000u16.to_be_bytes().to_vec();
        bad_utf8.push(0xFF);
        assert_eq!(
            parse_close(&bad_utf8),
            CloseRequest::Invalid(CloseCode::InvalidData)
        );
    }
}
