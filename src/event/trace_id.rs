//! W3C trace ids: 16 random bytes written as 32 lowercase hex digits.

use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};

use super::EventError;

/// A W3C trace-context trace id (never all zeros).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId(pub u128);

impl TraceId {
    /// Parses 32 hex digits (either case).
    pub fn parse(s: &str) -> Result<Self, EventError> {
        let bad = || EventError::TraceId(s.chars().take(64).collect());
        if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let v = u128::from_str_radix(s, 16).map_err(|_| bad())?;
        if v == 0 {
            return Err(bad());
        }
        Ok(Self(v))
    }

    /// A fresh random trace id, from a per-thread generator seeded from the OS.
    pub fn random() -> Self {
        thread_local! {
            static STATE: Cell<u64> = Cell::new(RandomState::new().build_hasher().finish() | 1);
        }
        STATE.with(|s| {
            let hi = splitmix(s);
            let lo = splitmix(s);
            Self((((hi as u128) << 64) | lo as u128).max(1))
        })
    }

    /// Writes the 32 hex digits.
    pub fn write_hex(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.hex());
    }

    /// The 32 lowercase hex digits.
    pub fn hex(&self) -> [u8; 32] {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 32];
        for (pair, byte) in out.chunks_exact_mut(2).zip(self.0.to_be_bytes()) {
            pair[0] = HEX[usize::from(byte >> 4)];
            pair[1] = HEX[usize::from(byte & 0xf)];
        }
        out
    }
}

fn splitmix(state: &Cell<u64>) -> u64 {
    let s = state.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
    state.set(s);
    let mut z = s;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_round_trip() {
        let s = "4bf92f3577b34da6a3ce929d0e0e4736";
        assert_eq!(TraceId::parse(s).unwrap().to_string(), s);
        assert_eq!(
            TraceId::parse(&s.to_uppercase()).unwrap().to_string(),
            s,
            "upper case is accepted and normalised"
        );
    }

    #[test]
    fn rejects_bad_ids() {
        for bad in [
            "",
            "abc",
            &"0".repeat(32),
            &"g".repeat(32),
            &"a".repeat(33),
            "+bf92f3577b34da6a3ce929d0e0e4736",
        ] {
            assert!(TraceId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn random_ids_differ_and_are_hex() {
        let a = TraceId::random();
        let b = TraceId::random();
        assert_ne!(a, b);
        let mut out = Vec::new();
        a.write_hex(&mut out);
        assert_eq!(out, a.to_string().into_bytes());
    }
}
