//! Block hashes and locators (`HASH[+SIZE][+HINT...]`, docs/protocol.md, "Blocks and locators").
//!
//! A [`BlockHash`] is the 16 raw bytes of an MD5: it sorts like its hex form,
//! costs 16 bytes in the plan, and is printed as 32 lowercase hex digits.

use std::fmt;
use std::str::FromStr;

/// The largest block Keep stores: 64 MiB.
pub const MAX_BLOCK_SIZE: u64 = 64 << 20;

/// MD5 of the empty string: the empty block, which real clusters hold.
pub const EMPTY_BLOCK_HASH: &str = "d41d8cd98f00b204e9800998ecf8427e";

/// The MD5 of a block, 16 raw bytes; ordered as its hex string is.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct BlockHash(pub [u8; 16]);

impl BlockHash {
    /// Hash of `data`.
    pub fn of(data: &[u8]) -> BlockHash {
        use md5::{Digest, Md5};
        BlockHash(Md5::digest(data).into())
    }

    /// Parse exactly 32 lowercase hex digits.
    pub fn from_hex(s: &[u8]) -> Option<BlockHash> {
        if s.len() != 32 {
            return None;
        }
        let mut out = [0u8; 16];
        for (i, pair) in s.chunks_exact(2).enumerate() {
            out[i] = (hex_val(pair[0])? << 4) | hex_val(pair[1])?;
        }
        Some(BlockHash(out))
    }

    /// 32 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first hex digit (0..16), used for per-digit breakdowns.
    pub fn first_digit(&self) -> u8 {
        self.0[0] >> 4
    }

    /// Whether the hex form starts with `prefix` (lowercase hex, ≤ 32 digits).
    pub fn has_prefix(&self, prefix: &str) -> bool {
        let mut buf = [0u8; 32];
        hex::encode_to_slice(self.0, &mut buf).expect("32-byte buffer");
        buf.starts_with(prefix.as_bytes())
    }
}

#[inline]
fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

impl fmt::Display for BlockHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 32];
        hex::encode_to_slice(self.0, &mut buf).expect("32-byte buffer");
        f.write_str(std::str::from_utf8(&buf).expect("hex is ascii"))
    }
}

impl fmt::Debug for BlockHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for BlockHash {
    type Err = LocatorError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BlockHash::from_hex(s.as_bytes()).ok_or_else(|| LocatorError::BadHash(s.to_string()))
    }
}

/// Why a locator string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocatorError {
    #[error("{0:?} is not a block hash (32 lowercase hex digits)")]
    BadHash(String),
    #[error("bad size hint {0:?} (a decimal number of bytes up to 64 MiB)")]
    BadSize(String),
    #[error("bad hint {0:?} (hints start with an upper-case letter)")]
    BadHint(String),
}

/// A parsed locator: hash, optional size, and the other hints in order.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Locator {
    pub hash: BlockHash,
    pub size: Option<u64>,
    /// Hints after the size, without their leading `+` (e.g. `A…@…`, `K@zzzzz`).
    pub hints: Vec<String>,
}

impl Locator {
    /// A bare `HASH+SIZE` locator.
    pub fn new(hash: BlockHash, size: u64) -> Locator {
        Locator {
            hash,
            size: Some(size),
            hints: Vec::new(),
        }
    }

    /// `HASH+SIZE` (or `HASH`) without any hint: safe to log.
    pub fn unsigned(&self) -> String {
        match self.size {
            Some(s) => format!("{}+{}", self.hash, s),
            None => self.hash.to_string(),
        }
    }

    /// The `+A` permission hint, if any, as `(signature, expiry_hex)`.
    pub fn permission_hint(&self) -> Option<(&str, &str)> {
        self.hints
            .iter()
            .find_map(|h| h.strip_prefix('A')?.split_once('@'))
    }
}

impl fmt::Display for Locator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.unsigned())?;
        for h in &self.hints {
            write!(f, "+{h}")?;
        }
        Ok(())
    }
}

impl Locator {
    /// Check `s` as [`FromStr`] does and return its hash and size, without
    /// building the hints: for scanning millions of locators (manifest text,
    /// `--blocks-from`). `Ok` exactly when `s.parse::<Locator>()` is.
    pub fn hash_and_size(s: &str) -> Result<(BlockHash, Option<u64>), LocatorError> {
        Self::scan(s, |_| {})
    }

    /// The grammar, once: `HASH[+SIZE][+HINT...]`; `hint` sees each hint.
    fn scan<'a>(
        s: &'a str,
        mut hint: impl FnMut(&'a str),
    ) -> Result<(BlockHash, Option<u64>), LocatorError> {
        let mut parts = s.split('+');
        let hash: BlockHash = parts.next().unwrap_or("").parse()?;
        let mut size = None;
        for (i, part) in parts.enumerate() {
            if i == 0 && part.bytes().next().is_some_and(|b| b.is_ascii_digit()) {
                let n: u64 = part
                    .parse()
                    .map_err(|_| LocatorError::BadSize(part.into()))?;
                if n > MAX_BLOCK_SIZE || !part.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(LocatorError::BadSize(part.into()));
                }
                size = Some(n);
            } else if part.bytes().next().is_some_and(|b| b.is_ascii_uppercase()) {
                hint(part);
            } else {
                return Err(LocatorError::BadHint(part.into()));
            }
        }
        Ok((hash, size))
    }
}

impl FromStr for Locator {
    type Err = LocatorError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut hints = Vec::new();
        let (hash, size) = Locator::scan(s, |h| hints.push(h.to_string()))?;
        Ok(Locator { hash, size, hints })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_roundtrip_and_order() {
        let h: BlockHash = "acbd18db4cc2f85cedef654fccc4a4d8".parse().unwrap();
        assert_eq!(h.to_string(), "acbd18db4cc2f85cedef654fccc4a4d8");
        assert_eq!(h, BlockHash::of(b"foo"));
        let a: BlockHash = "0fffffffffffffffffffffffffffffff".parse().unwrap();
        let b: BlockHash = "10000000000000000000000000000000".parse().unwrap();
        assert!(a < b);
        assert!(h.has_prefix("acb") && !h.has_prefix("acc") && h.has_prefix(""));
        assert_eq!(h.first_digit(), 10);
        assert!("ACBD18DB4CC2F85CEDEF654FCCC4A4D8"
            .parse::<BlockHash>()
            .is_err());
        assert!("acbd".parse::<BlockHash>().is_err());
    }

    #[test]
    fn locator_parse() {
        let l: Locator = "acbd18db4cc2f85cedef654fccc4a4d8+3+Zfoo+Aabc@7fffffff"
            .parse()
            .unwrap();
        assert_eq!(l.size, Some(3));
        assert_eq!(l.hints, vec!["Zfoo", "Aabc@7fffffff"]);
        assert_eq!(l.permission_hint(), Some(("abc", "7fffffff")));
        assert_eq!(l.unsigned(), "acbd18db4cc2f85cedef654fccc4a4d8+3");
        assert_eq!(
            l.to_string(),
            "acbd18db4cc2f85cedef654fccc4a4d8+3+Zfoo+Aabc@7fffffff"
        );
        let bare: Locator = "acbd18db4cc2f85cedef654fccc4a4d8".parse().unwrap();
        assert_eq!(bare.size, None);
        assert!("acbd18db4cc2f85cedef654fccc4a4d8+x"
            .parse::<Locator>()
            .is_err());
        assert!("acbd18db4cc2f85cedef654fccc4a4d8+99999999999"
            .parse::<Locator>()
            .is_err());
        assert!("acbd18db4cc2f85cedef654fccc4a4d8+-1"
            .parse::<Locator>()
            .is_err());
        assert!("".parse::<Locator>().is_err());
    }

    #[test]
    fn hash_and_size_agrees_with_from_str() {
        for s in [
            "acbd18db4cc2f85cedef654fccc4a4d8",
            "acbd18db4cc2f85cedef654fccc4a4d8+3",
            "acbd18db4cc2f85cedef654fccc4a4d8+3+Zfoo+Aabc@7fffffff",
            "acbd18db4cc2f85cedef654fccc4a4d8+K@zzzzz",
            "acbd18db4cc2f85cedef654fccc4a4d8+",
            "acbd18db4cc2f85cedef654fccc4a4d8+3+a",
            "acbd18db4cc2f85cedef654fccc4a4d8+67108865",
            "ACBD18DB4CC2F85CEDEF654FCCC4A4D8+3",
            "acbd18db4cc2f85cedef654fccc4a4d+3",
        ] {
            let full = s.parse::<Locator>().map(|l| (l.hash, l.size));
            assert_eq!(Locator::hash_and_size(s), full, "{s}");
        }
    }
}
