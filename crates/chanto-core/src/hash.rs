//! Content hashes: the name of every blob. BLAKE3, written as 64 lowercase hex
//! digits, so the same bytes have the same name in every deploy and every store.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ValidationError;

/// The BLAKE3 hash of a blob's bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentHash([u8; 32]);

impl ContentHash {
    /// Hashes `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }

    /// Wraps a finished BLAKE3 hash.
    pub fn from_blake3(hash: blake3::Hash) -> Self {
        Self(*hash.as_bytes())
    }

    /// The 64-digit lowercase hex form used in APIs, manifests and store keys.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// A hash from its raw bytes (as [`ContentHash::as_bytes`] gives them).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.hex_in(&mut [0u8; 64]))
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentHash({})", self.to_hex())
    }
}

impl FromStr for ContentHash {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            ValidationError::new(
                "hash",
                format!("{:?} is not a content hash: expected 64 lowercase hex digits (BLAKE3)", truncate(s, 80)),
            )
        };
        if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| bad())?;
        Ok(Self(out))
    }
}

impl ContentHash {
    /// The hex form written into `buf`, without allocating (a manifest
    /// holds tens of thousands of hashes).
    fn hex_in<'a>(&self, buf: &'a mut [u8; 64]) -> &'a str {
        hex::encode_to_slice(self.0, buf).expect("64 digits for 32 bytes");
        std::str::from_utf8(buf).expect("hex digits are ASCII")
    }
}

impl Serialize for ContentHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.hex_in(&mut [0u8; 64]))
    }
}

impl<'de> Deserialize<'de> for ContentHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(|e: ValidationError| serde::de::Error::custom(e.message))
    }
}

impl utoipa::PartialSchema for ContentHash {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some("^[0-9a-f]{64}$"))
            .description(Some("BLAKE3 hash of the bytes, 64 lowercase hex digits"))
            .into()
    }
}

impl utoipa::ToSchema for ContentHash {}

/// Cuts `s` to at most `max` bytes on a character boundary, for error messages
/// that quote hostile input.
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_hex() {
        let h = ContentHash::of(b"hello");
        assert_eq!(h.to_hex().len(), 64);
        assert_eq!(h.to_hex().parse::<ContentHash>().unwrap(), h);
        assert_eq!(h.to_hex(), "ea8f163db38682925e4491c5e58d4bb3506ef8c14eb78a86e908c5624a67200f");
    }

    #[test]
    fn rejects_malformed() {
        for bad in ["", "abc", &"A".repeat(64), &"g".repeat(64), &"0".repeat(65), "../../etc/passwd"] {
            assert!(bad.parse::<ContentHash>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn serde_is_hex_string() {
        let h = ContentHash::of(b"x");
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(json, format!("\"{h}\""));
        assert_eq!(serde_json::from_str::<ContentHash>(&json).unwrap(), h);
        assert!(serde_json::from_str::<ContentHash>("\"nope\"").is_err());
    }
}
