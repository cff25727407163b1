//! Small identifiers stored inline, so the fold never allocates for them.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest identifier Breakwater stores: event ids, reservation ids, idempotency keys,
/// channels. A UUID in text is 36 bytes; 64 leaves room for prefixed ids such as `wms-rcv-…`.
pub const MAX_ID_LEN: usize = 64;

/// An identifier of at most [`MAX_ID_LEN`] bytes of UTF-8, stored inline (`Copy`, no heap).
///
/// The fold keeps root causes and reservation ids in per-key state; storing them inline keeps
/// the hot path free of allocations and the state one contiguous value.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Id {
    len: u8,
    bytes: [u8; MAX_ID_LEN],
}

/// An identifier longer than [`MAX_ID_LEN`] bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("identifier is {len} bytes long, the limit is {MAX_ID_LEN}")]
pub struct IdTooLong {
    /// The length of the rejected identifier in bytes.
    pub len: usize,
}

impl Id {
    /// The empty identifier.
    pub const EMPTY: Id = Id {
        len: 0,
        bytes: [0; MAX_ID_LEN],
    };

    /// Copies `s` into an inline identifier.
    ///
    /// # Errors
    /// [`IdTooLong`] when `s` is longer than [`MAX_ID_LEN`] bytes.
    pub fn new(s: &str) -> Result<Id, IdTooLong> {
        let src = s.as_bytes();
        if src.len() > MAX_ID_LEN {
            return Err(IdTooLong { len: src.len() });
        }
        let mut bytes = [0; MAX_ID_LEN];
        bytes[..src.len()].copy_from_slice(src);
        Ok(Id {
            // Cannot truncate: checked against MAX_ID_LEN (64) above.
            len: src.len() as u8,
            bytes,
        })
    }

    /// The identifier as a string slice.
    pub fn as_str(&self) -> &str {
        // `new` only ever copies a whole `&str`, so the prefix is valid UTF-8; fall back to ""
        // rather than panic should that ever be broken.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("")
    }

    /// True for the empty identifier.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A stable 64-bit fingerprint (FNV-1a) used by the duplicate filter. Stable across builds
    /// and platforms because it is persisted in state.
    pub fn fingerprint(&self) -> u64 {
        fingerprint(self.as_str())
    }
}

/// FNV-1a over the bytes of `s`: stable across releases because fingerprints are persisted.
pub fn fingerprint(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// FNV-1a over `parts` joined by the unit separator (0x1f), without allocating: the identity
/// of an order line (`order_ref`, `line_ref`).
pub fn fingerprint_parts(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h ^= 0x1f;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        for b in p.as_bytes() {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

impl Default for Id {
    fn default() -> Self {
        Id::EMPTY
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Id, D::Error> {
        struct IdVisitor;
        impl Visitor<'_> for IdVisitor {
            type Value = Id;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a string of at most {MAX_ID_LEN} bytes")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Id, E> {
                Id::new(v).map_err(E::custom)
            }
        }
        d.deserialize_str(IdVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_long_ids() {
        let id = Id::new("wms-rcv-0001").unwrap();
        assert_eq!(id.as_str(), "wms-rcv-0001");
        assert_eq!(Id::new(&"x".repeat(64)).unwrap().as_str().len(), 64);
        assert_eq!(Id::new(&"x".repeat(65)), Err(IdTooLong { len: 65 }));
        let bytes = postcard::to_allocvec(&id).unwrap();
        assert_eq!(bytes.len(), 13, "a short id serialises as length + bytes");
        assert_eq!(postcard::from_bytes::<Id>(&bytes).unwrap(), id);
    }

    #[test]
    fn fingerprint_is_stable() {
        // Persisted in state: must stay FNV-1a (published test vectors) across releases.
        assert_eq!(fingerprint(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fingerprint("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fingerprint("foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(fingerprint_parts(&["foobar"]), fingerprint("foobar"));
        assert_eq!(fingerprint_parts(&["a", "b"]), fingerprint("a\u{1f}b"));
        assert_ne!(
            fingerprint_parts(&["ab", ""]),
            fingerprint_parts(&["a", "b"])
        );
    }
}
