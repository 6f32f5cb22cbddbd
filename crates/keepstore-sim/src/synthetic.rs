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
//! Lines are formatted with SWAR arithmetic straight into the chunk buffer
//! and sent in chunks of about 256 KiB, so a 10^8-line index streams in
//! well under a minute.

use std::ops::Range;

use bytes::Bytes;
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

/// Body bytes per chunk (an HTTP chunk, one writev). 256 KiB instead of
/// 64 KiB: a quarter of the writes and of the reader's wakeups (N=1e7 dry
/// run: sims' sys CPU -35 %, wall -10 %); 1 MiB gained nothing more.
const CHUNK: usize = 256 << 10;
const MTIME_BASE_NS: u64 = 1_600_000_000_000_000_000;

/// Room a line needs in the chunk buffer: 32 + 1 + 20 + 1 + 20 + 1.
const LINE_ROOM: usize = 80;

/// 8 hex digits of `x`, most significant first, as the bytes of a
/// big-endian u64: the nibbles are spread one per byte by three shift-and-mask
/// steps, then turned into ASCII with no carry crossing a byte (SWAR).
#[inline]
fn hex8(x: u32) -> u64 {
    let mut x = x as u64;
    x = (x | (x << 16)) & 0x0000_ffff_0000_ffff;
    x = (x | (x << 8)) & 0x00ff_00ff_00ff_00ff;
    x = (x | (x << 4)) & 0x0f0f_0f0f_0f0f_0f0f;
    let letters = ((x + 0x0606_0606_0606_0606) >> 4) & 0x0101_0101_0101_0101;
    x + 0x3030_3030_3030_3030 + letters * (b'a' - b'0' - 10) as u64
}

/// The 32 lowercase hex digits of `v` at `out[..32]`, in four 8-byte stores.
#[inline]
fn put_hex128(out: &mut [u8], v: u128) {
    for (k, chunk) in out[..32].chunks_exact_mut(8).enumerate() {
        let x = (v >> (96 - 32 * k)) as u32;
        chunk.copy_from_slice(&hex8(x).to_be_bytes());
    }
}

/// The 8 decimal digits of `x` (< 10^8, with leading zeros) as the bytes of
/// a little-endian u64, first digit lowest (SWAR): two 4-digit halves in the
/// 32-bit lanes, each split into 2-digit pairs in 16-bit lanes (`y*5243 >> 19`
/// is `y/100` below 43,699), each pair into digits (`y*103 >> 10` is `y/10`
/// below 179), no lane overflowing into the next.
#[inline]
fn digits8(x: u32) -> u64 {
    let mut v = (x / 10_000) as u64 | (((x % 10_000) as u64) << 32);
    let h = ((v * 5243) >> 19) & 0x0000_007f_0000_007f;
    v = h | ((v - h * 100) << 16);
    let h = ((v * 103) >> 10) & 0x000f_000f_000f_000f;
    v = h | ((v - h * 10) << 8);
    v | 0x3030_3030_3030_3030
}

/// The number of decimal digits of `v`.
#[inline]
fn dec_len(v: u64) -> usize {
    v.checked_ilog10().unwrap_or(0) as usize + 1
}

/// Write `v` in decimal so that it ends at `out[end]` (exclusive): as 8, 16
/// or 24 digits with leading zeros, in 8-byte stores, so up to 24 bytes
/// before `end` are overwritten (`end >= 24`); the caller writes what comes
/// before the number afterwards. Plain stores, no staging buffer (a wide
/// copy from freshly stored bytes stalls store-to-load forwarding).
#[inline]
fn put_dec_ending_at(out: &mut [u8], end: usize, v: u64) {
    const E8: u64 = 100_000_000;
    out[end - 8..end].copy_from_slice(&digits8((v % E8) as u32).to_le_bytes());
    if v >= E8 {
        out[end - 16..end - 8].copy_from_slice(&digits8((v / E8 % E8) as u32).to_le_bytes());
    }
    if v >= E8 * E8 {
        out[end - 24..end - 16].copy_from_slice(&digits8((v / (E8 * E8)) as u32).to_le_bytes());
    }
}

/// One index line `HASH+SIZE MTIME\n` at the start of `line` (which has
/// [`LINE_ROOM`] bytes); returns its length. Written back to front, as each
/// number overwrites up to 24 bytes before it.
#[inline]
fn put_line(line: &mut [u8], hash: u128, size: u64, mtime: u64) -> usize {
    let size_end = 33 + dec_len(size);
    let mtime_end = size_end + 1 + dec_len(mtime);
    put_dec_ending_at(line, mtime_end, mtime);
    line[mtime_end] = b'\n';
    put_dec_ending_at(line, size_end, size);
    line[size_end] = b' ';
    put_hex128(line, hash);
    line[32] = b'+';
    mtime_end + 1
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
        self.chunks_from(service, n, self.range_for_prefix(prefix))
    }

    /// Count the lines `chunks` would produce (walks the range; for tests).
    pub fn count(&self, service: usize, n: usize, prefix: &str) -> u64 {
        self.range_for_prefix(prefix)
            .filter(|&i| self.held_by(i, service, n) && self.present(i))
            .count() as u64
    }
}

/// Iterator over index chunks of about 256 KiB each.
///
/// Walks the block numbers of the prefix in order, keeping the hash's
/// `floor(i·2^128/N)` part as running sums (no 128-bit division per block)
/// and which service holds block `i` as a running offset; the lines are the
/// ones [`SyntheticIndex::hash`], [`SyntheticIndex::size`] and
/// [`SyntheticIndex::mtime_ns`] describe (unit test `chunks_match_the_definition`).
pub struct IndexChunks {
    idx: SyntheticIndex,
    next: u64,
    end: u64,
    /// `2^128 = q·N + r` (see `spacing`).
    q: u128,
    r: u64,
    n_blocks: u64,
    /// `next·q` (wrapping), and `next·r = quo·N + acc`.
    iq: u128,
    quo: u64,
    acc: u64,
    /// `(service - next) mod n`: the block is held when it is < replicas.
    d: u64,
    n: u64,
    /// Every block held (replicas ≥ services), or none (no services).
    all_held: bool,
    present_key: u64,
}

impl SyntheticIndex {
    fn chunks_from(&self, service: usize, n: usize, range: Range<u64>) -> IndexChunks {
        let (q, r) = self.spacing();
        let n_blocks = self.blocks.max(1);
        let i = range.start;
        let ir = i as u128 * r;
        let n64 = (n as u64).max(1);
        IndexChunks {
            idx: self.clone(),
            next: range.start,
            end: if n == 0 { range.start } else { range.end },
            q,
            r: r as u64,
            n_blocks,
            iq: (i as u128).wrapping_mul(q),
            quo: (ir / n_blocks as u128) as u64,
            acc: (ir % n_blocks as u128) as u64,
            d: (service as u64 % n64 + n64 - i % n64) % n64,
            n: n64,
            all_held: self.replicas >= n,
            present_key: splitmix64(self.seed ^ 0x9E37_79B9_7F4A_7C15),
        }
    }
}

impl IndexChunks {
    /// Move to the next block number.
    #[inline]
    fn step(&mut self) {
        self.next += 1;
        self.iq = self.iq.wrapping_add(self.q);
        // acc + r, which wraps at N at most once (r < N); written so that
        // nothing overflows when N is near 2^64.
        if self.acc >= self.n_blocks - self.r {
            self.acc -= self.n_blocks - self.r;
            self.quo += 1;
        } else {
            self.acc += self.r;
        }
        self.d = if self.d == 0 { self.n - 1 } else { self.d - 1 };
    }

    /// `hash_u128(next)`: the base as running sums, and `X mod q` from a
    /// quotient estimate `floor(X·N / 2^128)` (at most 2 short of the true
    /// quotient, as `q·N` is within N of 2^128) instead of a division.
    #[inline]
    fn hash(&self) -> u128 {
        let i = self.next;
        let base = self.iq.wrapping_add(self.quo as u128);
        let a = splitmix64(self.idx.seed ^ 0x243F_6A88_85A3_08D3 ^ splitmix64(i));
        let b = splitmix64(a ^ 0x1319_8A2E_0370_7344);
        let x = ((a as u128) << 64) | b as u128;
        let q = self.q.max(1);
        let n = self.n_blocks as u128;
        let hi = (a as u128 * n + ((b as u128 * n) >> 64)) >> 64;
        let mut low = x - hi * q;
        while low >= q {
            low -= q;
        }
        base.wrapping_add(low)
    }
}

impl Iterator for IndexChunks {
    type Item = Bytes;
    fn next(&mut self) -> Option<Bytes> {
        if self.next >= self.end {
            return None;
        }
        let mut buf = vec![0u8; CHUNK + LINE_ROOM];
        let mut at = 0;
        while self.next < self.end && at < CHUNK {
            let i = self.next;
            let held = self.all_held || self.d < self.idx.replicas as u64;
            if held && unit(splitmix64(self.present_key ^ i)) < self.idx.fraction {
                let line = &mut buf[at..at + LINE_ROOM];
                at += put_line(line, self.hash(), self.idx.size(i), self.idx.mtime_ns(i));
            }
            self.step();
        }
        buf.truncate(at);
        Some(Bytes::from(buf))
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

    /// The fast generator sends exactly the lines the definitions give,
    /// for small and huge universes (where `q`, `r` and the quotient
    /// estimate are stretched), every holder pattern and partial presence.
    #[test]
    fn chunks_match_the_definition() {
        let cases: &[(u64, &[&str])] = &[
            (1, &["", "0", "f"]),
            (2, &["", "8"]),
            (3, &[""]),
            (1000, &["", "7", "ff"]),
            (4097, &["", "0", "abc"]),
            (1_000_000, &["3f", "fff", "0000"]),
            (999_999_937, &["12345", "fffff"]),
            (1 << 40, &["abcdef12"]),
            ((1 << 63) + 12_345, &["0123456789ab", "ffffffffffff"]),
            (u64::MAX, &["fedcba987654"]),
            // 2^128 mod N is 8/9 of N: the quotient estimate is often one short.
            (0xc000_0000_0000_0007, &["0123456789ab", "ffffffffffff"]),
        ];
        for &(blocks, prefixes) in cases {
            for (seed, replicas, fraction) in [(3, 2, 1.0), (7, 1, 0.5), (9, 5, 0.9)] {
                let s = SyntheticIndex {
                    blocks,
                    seed,
                    replicas,
                    fraction,
                };
                for n in [1, 3, 4] {
                    for service in 0..n {
                        for p in prefixes {
                            let mut want = String::new();
                            for i in s.range_for_prefix(p) {
                                if s.held_by(i, service, n) && s.present(i) {
                                    want += &format!(
                                        "{:032x}+{} {}\n",
                                        s.hash_u128(i),
                                        s.size(i),
                                        s.mtime_ns(i)
                                    );
                                }
                            }
                            let chunks: Vec<Bytes> = s.chunks(service, n, p).collect();
                            assert!(chunks.iter().all(|c| c.len() < CHUNK + LINE_ROOM));
                            let got: Vec<u8> = chunks.concat();
                            assert!(
                                got == want.as_bytes(),
                                "N={blocks} seed={seed} service {service}/{n} prefix {p:?}"
                            );
                        }
                    }
                }
            }
        }
        let mut vs = vec![u64::MAX, u64::MAX - 1, 1 << 40];
        for k in 0..20 {
            let p = 10u64.pow(k);
            vs.extend([p - 1, p, p + 1, p / 3 * 5]);
        }
        for &v in &vs {
            assert_eq!(dec_len(v), v.to_string().len());
            let mut out = [b'x'; 48];
            put_dec_ending_at(&mut out, 40, v);
            let n = dec_len(v);
            assert_eq!(&out[40 - n..40], v.to_string().as_bytes());
            assert!(out[40..].iter().all(|&b| b == b'x'), "nothing after");
        }
        for v in [
            0u128,
            1,
            0xabc,
            u128::MAX,
            0x0123_4567_89ab_cdef_fedc_ba98_7654_3210,
        ] {
            for (size, mtime) in [
                (0, 0),
                (7, 1),
                (99_999_999, 12_345_678_901),
                (1 << 26, u64::MAX),
            ] {
                let mut line = [b'x'; LINE_ROOM + 8];
                let n = put_line(&mut line, v, size, mtime);
                let want = format!("{v:032x}+{size} {mtime}\n");
                assert_eq!(&line[..n], want.as_bytes());
                assert!(line[n..].iter().all(|&b| b == b'x'), "nothing after");
            }
        }
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
