//! Synthetic-index mode: a universe of `blocks` block hashes that exist only
//! in index responses (no data), for scale tests with 10^7–10^8 blocks.
//!
//! Block `i` (0..N) has hash `floor(i·2^128/N) + low(seed, i)` with
//! `low < spacing`, so hashes are sorted and uniform, and a prefix maps to an
//! index range by binary search (no scan). Whether block `i` exists in a
//! cluster depends only on `(seed, i)` and `fraction`: a destination at
//! fraction 0.9 holds a subset of a source at 1.0 with the same seed. Block
//! `i` is held by services `(i + k) mod n` for `k < replicas`. Sizes are 64 MiB
//! for 5% of blocks and 1 B..2 MiB otherwise (about 4 MiB on average).
//!
//! Lines are formatted with a lookup table into a reused buffer and sent in
//! chunks of about 64 KiB, so a 10^7-line index streams in seconds.

use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use super::faults::{splitmix64, unit};
use keep_protocol::{BlockHash, MAX_BLOCK_SIZE};

/// A synthetic universe of blocks (see the module doc).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SyntheticIndex {
    /// Size of the universe (N).
    pub blocks: u64,
    /// Seed of hashes, sizes and presence; share it between source and
    /// destination clusters to get the same universe.
    pub seed: u64,
    /// Services holding each present block.
    pub replicas: usize,
    /// Fraction of the universe present in this cluster (0.0..=1.0).
    pub fraction: f64,
}

impl Default for SyntheticIndex {
    fn default() -> Self {
        SyntheticIndex {
            blocks: 0,
            seed: 0,
            replicas: 1,
            fraction: 1.0,
        }
    }
}

const CHUNK: usize = 64 << 10;
const MTIME_BASE_NS: u64 = 1_600_000_000_000_000_000;

static HEX: [[u8; 2]; 256] = {
    let digits = b"0123456789abcdef";
    let mut t = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = [digits[i >> 4], digits[i & 15]];
        i += 1;
    }
    t
};

fn put_hex128(buf: &mut BytesMut, v: u128) {
    let mut out = [0u8; 32];
    for (k, b) in v.to_be_bytes().iter().enumerate() {
        out[2 * k..2 * k + 2].copy_from_slice(&HEX[*b as usize]);
    }
    buf.put_slice(&out);
}

fn put_dec(buf: &mut BytesMut, mut v: u64) {
    let mut out = [0u8; 20];
    let mut i = out.len();
    loop {
        i -= 1;
        out[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    buf.put_slice(&out[i..]);
}

impl SyntheticIndex {
    /// `(q, r)` with `2^128 = q·N + r`.
    fn spacing(&self) -> (u128, u128) {
        let n = self.blocks.max(1) as u128;
        let (q, r) = (u128::MAX / n, u128::MAX % n + 1);
        if r == n {
            match q.checked_add(1) {
                Some(q) => (q, 0),
                None => (u128::MAX, 0),
            }
        } else {
            (q, r)
        }
    }

    fn hash_u128(&self, i: u64) -> u128 {
        let (q, r) = self.spacing();
        let n = self.blocks.max(1) as u128;
        let base = (i as u128)
            .wrapping_mul(q)
            .wrapping_add((i as u128) * r / n);
        let a = splitmix64(self.seed ^ 0x243F_6A88_85A3_08D3 ^ splitmix64(i));
        let b = splitmix64(a ^ 0x1319_8A2E_0370_7344);
        let low = (((a as u128) << 64) | b as u128) % q.max(1);
        base.wrapping_add(low)
    }

    /// Hash of block `i`.
    pub fn hash(&self, i: u64) -> BlockHash {
        BlockHash(self.hash_u128(i).to_be_bytes())
    }

    /// Whether block `i` exists in this cluster (depends on seed, i, fraction).
    pub fn present(&self, i: u64) -> bool {
        unit(splitmix64(
            splitmix64(self.seed ^ 0x9E37_79B9_7F4A_7C15) ^ i,
        )) < self.fraction
    }

    /// Size of block `i` in bytes (1..=64 MiB, about 4 MiB on average).
    pub fn size(&self, i: u64) -> u64 {
        let s = splitmix64(self.seed ^ 0x5851_F42D_4C95_7F2D ^ splitmix64(i.wrapping_add(1)));
        if unit(s) < 0.05 {
            MAX_BLOCK_SIZE
        } else {
            1 + (s >> 12) % (2 << 20)
        }
    }

    /// Index mtime of block `i`, unix nanoseconds.
    pub fn mtime_ns(&self, i: u64) -> u64 {
        MTIME_BASE_NS + splitmix64(self.seed ^ i) % 31_536_000_000_000_000
    }

    /// Whether service `service` of `n` holds block `i` (if present).
    pub fn held_by(&self, i: u64, service: usize, n: usize) -> bool {
        if n == 0 {
            return false;
        }
        if self.replicas >= n {
            return true;
        }
        let n64 = n as u64;
        let d = (service as u64 + n64 - i % n64) % n64;
        d < self.replicas as u64
    }

    fn first_ge(&self, v: u128) -> u64 {
        let (mut lo, mut hi) = (0u64, self.blocks);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.hash_u128(mid) < v {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// The block numbers whose hashes start with `prefix` (lowercase hex,
    /// at most 32 digits; anything else gives an empty range).
    pub fn range_for_prefix(&self, prefix: &str) -> Range<u64> {
        if !keep_protocol::is_valid_prefix(prefix) {
            return 0..0;
        }
        if prefix.is_empty() {
            return 0..self.blocks;
        }
        let shift = 4 * (32 - prefix.len() as u32);
        let Ok(p) = u128::from_str_radix(prefix, 16) else {
            return 0..0;
        };
        let lo = if shift == 128 { 0 } else { p << shift };
        let start = self.first_ge(lo);
        let end = match 1u128.checked_shl(shift).and_then(|w| lo.checked_add(w)) {
            Some(hi) => self.first_ge(hi),
            None => self.blocks,
        };
        start..end.max(start)
    }

    /// The block number of `h`, if it is in the universe (present or not).
    pub fn lookup(&self, h: &BlockHash) -> Option<u64> {
        let v = u128::from_be_bytes(h.0);
        let i = self.first_ge(v);
        (i < self.blocks && self.hash_u128(i) == v).then_some(i)
    }

    /// The index lines of service `service` of `n` for `prefix`, as chunks.
    pub fn chunks(&self, service: usize, n: usize, prefix: &str) -> IndexChunks {
        let range = self.range_for_prefix(prefix);
        IndexChunks {
            idx: self.clone(),
            next: range.start,
            end: range.end,
            service,
            n,
        }
    }

    /// Count the lines `chunks` would produce (walks the range; for tests).
    pub fn count(&self, service: usize, n: usize, prefix: &str) -> u64 {
        self.range_for_prefix(prefix)
            .filter(|&i| self.held_by(i, service, n) && self.present(i))
            .count() as u64
    }
}

/// Iterator over index chunks of about 64 KiB each.
pub struct IndexChunks {
    idx: SyntheticIndex,
    next: u64,
    end: u64,
    service: usize,
    n: usize,
}

impl Iterator for IndexChunks {
    type Item = Bytes;
    fn next(&mut self) -> Option<Bytes> {
        if self.next >= self.end {
            return None;
        }
        let mut buf = BytesMut::with_capacity(CHUNK + 128);
        while self.next < self.end && buf.len() < CHUNK {
            let i = self.next;
            self.next += 1;
            if !self.idx.held_by(i, self.service, self.n) || !self.idx.present(i) {
                continue;
            }
            put_hex128(&mut buf, self.idx.hash_u128(i));
            buf.put_u8(b'+');
            put_dec(&mut buf, self.idx.size(i));
            buf.put_u8(b' ');
            put_dec(&mut buf, self.idx.mtime_ns(i));
            buf.put_u8(b'\n');
        }
        Some(buf.freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_unique_and_prefix_ranges() {
        let s = SyntheticIndex {
            blocks: 5000,
            seed: 3,
            replicas: 2,
            fraction: 1.0,
        };
        let hs: Vec<_> = (0..s.blocks).map(|i| s.hash(i)).collect();
        assert!(hs.windows(2).all(|w| w[0] < w[1]));
        for p in ["", "0", "a", "ff", "7c3", "0000"] {
            let r = s.range_for_prefix(p);
            let want: Vec<u64> = (0..s.blocks)
                .filter(|&i| hs[i as usize].has_prefix(p))
                .collect();
            assert_eq!(r.clone().collect::<Vec<_>>(), want, "prefix {p:?}");
        }
        assert_eq!(s.lookup(&hs[17]), Some(17));
        assert_eq!(s.lookup(&BlockHash::of(b"nope")), None);
        let avg = (0..s.blocks).map(|i| s.size(i)).sum::<u64>() / s.blocks;
        assert!(avg > (2 << 20) && avg < (7 << 20), "{avg}");
    }

    #[test]
    fn text_format() {
        let s = SyntheticIndex {
            blocks: 100,
            seed: 1,
            replicas: 1,
            fraction: 1.0,
        };
        let text: Vec<u8> = s.chunks(0, 1, "").flatten().collect();
        let text = String::from_utf8(text).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 100);
        let (loc, mtime) = lines[5].split_once(' ').unwrap();
        assert_eq!(loc, format!("{}+{}", s.hash(5), s.size(5)));
        assert_eq!(mtime.parse::<u64>().unwrap(), s.mtime_ns(5));
    }
}
