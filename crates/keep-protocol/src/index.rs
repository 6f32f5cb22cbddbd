//! Index lines (docs/protocol.md, "Index"): `HASH+SIZE MTIME`, parsed as a
//! body streams in, and the completeness rule: a body is whole only when it
//! ends with the blank line keepstore sends last. Parsed into 20 bytes a line
//! ([`Entry`]): the plan of a 10^8-block cluster is made of these.

use crate::locator::{BlockHash, MAX_BLOCK_SIZE};
use crate::signing::redact_signatures;

/// One index line, without its mtime: 20 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    pub hash: BlockHash,
    pub size: u32,
}

/// Exactly 32 lowercase hex digits, like [`BlockHash::from_hex`] but without
/// a branch per digit: each digit's value and validity are computed with
/// plain arithmetic over a fixed-size array, which the compiler turns into a
/// few SIMD instructions (no table, no `unsafe`), and validity is checked once.
/// This is the hot loop of index parsing (docs/benchmarks.md).
#[inline(always)]
fn hash_from_hex(s: &[u8]) -> Option<BlockHash> {
    let s: &[u8; 32] = s.try_into().ok()?;
    let mut val = [0u8; 32];
    let mut bad = 0u8;
    for (v, &c) in val.iter_mut().zip(s) {
        let d = c.wrapping_sub(b'0');
        let l = c.wrapping_sub(b'a');
        let (is_d, is_l) = (d < 10, l < 6);
        *v = if is_d { d } else { l.wrapping_add(10) };
        bad |= !(is_d | is_l) as u8;
    }
    let mut out = [0u8; 16];
    for (o, pair) in out.iter_mut().zip(val.chunks_exact(2)) {
        *o = (pair[0] << 4) | (pair[1] & 0x0f);
    }
    (bad == 0).then_some(BlockHash(out))
}

/// The length of the run of ASCII digits at the start of `s`, 8 bytes at a
/// time: a byte `b` is a digit when `b ^ 0x30 <= 9`; adding 0x76 to its low
/// 7 bits (no carry can cross bytes) sets bit 7 exactly for bytes that are
/// not, and so does a set bit 7 in `b` itself.
#[inline(always)]
fn digit_run(s: &[u8]) -> usize {
    let mut n = 0;
    while let Some(w) = s.get(n..n + 8) {
        let t = u64::from_le_bytes(w.try_into().unwrap()) ^ 0x3030_3030_3030_3030;
        let k = not_digit_at(t);
        if k < 8 {
            return n + k;
        }
        n += 8;
    }
    n + s[n..].iter().take_while(|b| b.is_ascii_digit()).count()
}

/// Where the first byte that was not a digit is in `t` (8 bytes read
/// little-endian and XOR-ed with 0x30 each), or 8 (see [`digit_run`]).
#[inline]
fn not_digit_at(t: u64) -> usize {
    const LO7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const HI: u64 = 0x8080_8080_8080_8080;
    let not_digit = (((t & LO7) + 0x7676_7676_7676_7676) | t) & HI;
    (not_digit.trailing_zeros() / 8) as usize
}

/// The number written by 8 digit values (0..=9, one a byte, the first in
/// the lowest byte): pairs, then fours, then all eight combined by three
/// multiplies (SWAR); leading zero bytes are leading zeros.
#[inline]
fn digits8(t: u64) -> u32 {
    let t = (t & 0x0f0f_0f0f_0f0f_0f0f).wrapping_mul(10 << 8 | 1) >> 8;
    let t = (t & 0x00ff_00ff_00ff_00ff).wrapping_mul(100 << 16 | 1) >> 16;
    ((t & 0x0000_ffff_0000_ffff).wrapping_mul(10_000 << 32 | 1) >> 32) as u32
}

/// One whole, well-formed line `HASH+SIZE[+HINTS] MTIME\n` at the start of
/// `buf`: its entry and its length with the newline. `None` for anything
/// else (a blank, malformed or unfinished line), which the caller then takes
/// through [`parse_line`]; for every line this accepts, [`parse_line`]
/// gives the same entry (unit tests `fast_path_agrees` and `every_split`).
/// One pass over the line, no separate newline search.
#[inline(always)]
fn parse_line_fast(buf: &[u8]) -> Option<(Entry, usize)> {
    if buf.len() < 37 || buf[32] != b'+' {
        return None;
    }
    let hash = hash_from_hex(&buf[..32])?;
    // The size: up to 8 digits from one word (SWAR); 9, or a line too near
    // the end of the buffer for a word, a digit at a time.
    let word = buf
        .get(33..41)
        .map(|w| u64::from_le_bytes(w.try_into().unwrap()));
    let t = word.unwrap_or(0) ^ 0x3030_3030_3030_3030;
    let (n, size) = match (word.is_some(), not_digit_at(t)) {
        (true, n @ 1..=7) => (n, digits8(t << (8 * (8 - n)))),
        (true, 8) if !buf.get(41).is_some_and(u8::is_ascii_digit) => (8, digits8(t)),
        _ => {
            let n = digit_run(&buf[33..buf.len().min(43)]);
            if n == 0 || n > 9 {
                return None;
            }
            let size = buf[33..33 + n]
                .iter()
                .fold(0u32, |v, &b| v * 10 + (b - b'0') as u32);
            (n, size)
        }
    };
    if size as u64 > MAX_BLOCK_SIZE {
        return None;
    }
    let mut at = 33 + n;
    match *buf.get(at)? {
        b' ' => {}
        // Hints: anything up to the first space, on the same line.
        b'+' => {
            at += memchr::memchr2(b' ', b'\n', &buf[at..])?;
            if buf[at] != b' ' {
                return None;
            }
        }
        _ => return None,
    }
    let mtime = &buf[at + 1..];
    let m = digit_run(mtime);
    if m == 0 || *mtime.get(m)? != b'\n' {
        return None;
    }
    Some((Entry { hash, size }, at + 1 + m + 1))
}

/// Parse `HASH+SIZE MTIME` (hints after the size are tolerated and dropped).
pub fn parse_line(line: &[u8]) -> Option<Entry> {
    if line.len() < 36 || line[32] != b'+' {
        return None;
    }
    let hash = hash_from_hex(&line[..32])?;
    let rest = &line[33..];
    let loc_end = memchr::memchr(b' ', rest)?;
    let (loc_rest, mtime) = (&rest[..loc_end], &rest[loc_end + 1..]);
    let size_end = loc_rest
        .iter()
        .position(|&b| b == b'+')
        .unwrap_or(loc_rest.len());
    let size_digits = &loc_rest[..size_end];
    if size_digits.is_empty() || size_digits.len() > 9 {
        return None;
    }
    let mut size: u64 = 0;
    for &b in size_digits {
        if !b.is_ascii_digit() {
            return None;
        }
        size = size * 10 + (b - b'0') as u64;
    }
    if size > MAX_BLOCK_SIZE {
        return None;
    }
    if mtime.is_empty() || !mtime.iter().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(Entry {
        hash,
        size: size as u32,
    })
}

/// Why an index body was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    Malformed { line_no: u64, line: String },
    Incomplete { lines: u64 },
}

/// Incremental parser for an index body arriving in arbitrary chunks.
#[derive(Default)]
pub struct BodyParser {
    partial: Vec<u8>,
    lines: u64,
    terminated: bool,
}

impl BodyParser {
    /// Lines seen so far.
    pub fn lines(&self) -> u64 {
        self.lines
    }

    /// Parse the complete lines in `chunk`, handing each entry to `out`.
    pub fn feed(&mut self, mut chunk: &[u8], out: &mut impl FnMut(Entry)) -> Result<(), BodyError> {
        loop {
            if self.partial.is_empty() && !self.terminated {
                // The common case, a run of whole well-formed lines.
                while let Some((e, n)) = parse_line_fast(chunk) {
                    self.lines += 1;
                    out(e);
                    chunk = &chunk[n..];
                }
            }
            // Anything else, one line at a time.
            let Some(nl) = memchr::memchr(b'\n', chunk) else {
                break;
            };
            if self.partial.is_empty() {
                self.line(&chunk[..nl], out)?;
            } else {
                let mut joined = std::mem::take(&mut self.partial);
                joined.extend_from_slice(&chunk[..nl]);
                let r = self.line(&joined, out);
                joined.clear();
                self.partial = joined;
                r?;
            }
            chunk = &chunk[nl + 1..];
        }
        if !chunk.is_empty() {
            // An unfinished line is line `lines + 1`, whatever the chunking.
            if self.terminated {
                return Err(self.malformed_at(self.lines + 1, chunk));
            }
            self.partial.extend_from_slice(chunk);
            if self.partial.len() > 4096 {
                let p = std::mem::take(&mut self.partial);
                return Err(self.malformed_at(self.lines + 1, &p));
            }
        }
        Ok(())
    }

    fn line(&mut self, line: &[u8], out: &mut impl FnMut(Entry)) -> Result<(), BodyError> {
        self.lines += 1;
        if self.terminated {
            return Err(self.malformed(line));
        }
        if line.is_empty() {
            self.terminated = true;
            return Ok(());
        }
        match parse_line(line) {
            Some(e) => {
                out(e);
                Ok(())
            }
            None => Err(self.malformed(line)),
        }
    }

    fn malformed(&self, line: &[u8]) -> BodyError {
        self.malformed_at(self.lines.max(1), line)
    }

    fn malformed_at(&self, line_no: u64, line: &[u8]) -> BodyError {
        let text: String = String::from_utf8_lossy(line).chars().take(120).collect();
        BodyError::Malformed {
            line_no,
            line: redact_signatures(&text),
        }
    }

    /// The body has ended: it must have ended with the blank line.
    pub fn finish(self) -> Result<u64, BodyError> {
        if self.terminated && self.partial.is_empty() {
            Ok(self.lines - 1)
        } else {
            Err(BodyError::Incomplete { lines: self.lines })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "acbd18db4cc2f85cedef654fccc4a4d8";

    fn parse_all(chunks: &[&[u8]]) -> (Vec<Entry>, Result<u64, BodyError>) {
        let mut p = BodyParser::default();
        let mut out = Vec::new();
        for c in chunks {
            if let Err(e) = p.feed(c, &mut |e| out.push(e)) {
                return (out, Err(e));
            }
        }
        (out, p.finish())
    }

    #[test]
    fn lines() {
        assert_eq!(
            parse_line(format!("{H}+3 1700000000000000000").as_bytes())
                .unwrap()
                .size,
            3
        );
        assert_eq!(
            parse_line(format!("{H}+3+Zx 17").as_bytes()).unwrap().size,
            3
        );
        for bad in [
            format!("{H} 17"),
            format!("{H}+ 17"),
            format!("{H}+3"),
            format!("{H}+3 "),
            format!("{H}+3 x"),
            format!("{H}+99999999 17"),
            format!("{}+3 17", H.to_uppercase()),
            "garbage".to_string(),
        ] {
            assert!(parse_line(bad.as_bytes()).is_none(), "{bad}");
        }
    }

    #[test]
    fn fast_hex_matches_from_hex() {
        let mut digits: Vec<u8> = (0u8..=255).collect();
        digits.extend_from_slice(b"0123456789abcdefABCDEF");
        for &b in &digits {
            for pos in [0, 1, 17, 31] {
                let mut h = *b"0123456789abcdef0123456789abcdef";
                h[pos] = b;
                assert_eq!(hash_from_hex(&h), BlockHash::from_hex(&h), "{b} at {pos}");
            }
        }
        assert_eq!(hash_from_hex(H.as_bytes()), H.parse().ok());
        assert_eq!(hash_from_hex(&H.as_bytes()[..31]), None);
    }

    #[test]
    fn digit_runs() {
        for len in 0..20 {
            for pos in 0..=len {
                for b in [b'/', b':', b'0' ^ 0x80, b'9' ^ 0x80, b' ', b'\n', 0xff, 0] {
                    let mut s = vec![b'7'; len];
                    if pos < len {
                        s[pos] = b;
                    }
                    let want = s.iter().take_while(|b| b.is_ascii_digit()).count();
                    assert_eq!(digit_run(&s), want, "{s:?}");
                }
            }
        }
    }

    /// Whatever the fast path accepts, `parse_line` accepts with the same
    /// entry and the same line end; and it does accept plain lines.
    #[test]
    fn fast_path_agrees() {
        let plain = [
            format!("{H}+3 17"),
            format!("{H}+67108864 1700000000000000000"),
            format!("{H}+012345678 1"),
            format!("{H}+0 00000000000000000000000000001"),
        ];
        let hinted = [format!("{H}+3+Zx+K@zzzzz 17"), format!("{H}+5+ 9")];
        for l in plain.iter().chain(&hinted) {
            let l = l.as_bytes();
            let mut cands = vec![l.to_vec(), l[..l.len() - 1].to_vec()];
            for pos in 0..l.len() {
                for b in [
                    b'0', b'9', b'a', b'f', b'g', b'A', b' ', b'+', b'\n', b'\r', b'/', b':', 0xb0,
                ] {
                    let mut m = l.to_vec();
                    m[pos] = b;
                    cands.push(m.clone());
                    m.insert(pos, b);
                    cands.push(m);
                }
                let mut m = l.to_vec();
                m.remove(pos);
                cands.push(m);
            }
            for c in cands {
                for tail in [&b""[..], b"\n", b"\nnext line\n", b" 5\n"] {
                    let mut buf = c.clone();
                    buf.extend_from_slice(tail);
                    let fast = parse_line_fast(&buf);
                    let Some(nl) = memchr::memchr(b'\n', &buf) else {
                        assert_eq!(fast, None, "{buf:?}");
                        continue;
                    };
                    if let Some((e, n)) = fast {
                        assert_eq!((Some(e), n), (parse_line(&buf[..nl]), nl + 1), "{buf:?}");
                    }
                }
            }
        }
        for l in &plain {
            let buf = format!("{l}\n");
            assert!(parse_line_fast(buf.as_bytes()).is_some(), "{l}");
        }
        // Sizes of every length, as the whole line or followed by more.
        for len in 1..=10 {
            for digits in ["1234567890", "0000000001", "9999999999", "0670000000"] {
                let size = &digits[..len];
                let want = size.parse::<u64>().unwrap();
                for tail in ["", "next\n"] {
                    let buf = format!("{H}+{size} 1\n{tail}");
                    let fast = parse_line_fast(buf.as_bytes()).map(|(e, _)| e.size as u64);
                    let ok = len <= 9 && want <= MAX_BLOCK_SIZE;
                    assert_eq!(fast, ok.then_some(want), "{buf:?}");
                }
            }
        }
    }

    /// Bodies of good, hinted, blank and bad lines, cut at every point, give
    /// what parsing them line by line with `parse_line` gives.
    #[test]
    fn every_split() {
        let good = format!("{H}+3 17\n");
        let long = format!("{H}+67108864 1700000000000000000\n");
        let hinted = format!("{H}+3+Zx 17\n");
        let bad = format!("{H}+3 17x\n");
        let bodies = [
            format!("{good}{long}{hinted}{long}\n"),
            format!("{good}{long}{bad}{good}\n"),
            format!("{long}{good}\n{good}"),
            format!("{long}{long}"),
        ];
        for body in &bodies {
            // Line by line.
            let mut want_entries = Vec::new();
            let mut want = None;
            let mut terminated = false;
            for (k, l) in body.split_inclusive('\n').enumerate() {
                if terminated {
                    want = Some(Err(k as u64 + 1));
                    break;
                }
                let Some(l) = l.strip_suffix('\n') else {
                    want = Some(Err(k as u64));
                    break;
                };
                if !l.is_empty() && parse_line(l.as_bytes()).is_none() {
                    want = Some(Err(k as u64 + 1));
                    break;
                }
                match parse_line(l.as_bytes()) {
                    Some(e) => want_entries.push(e),
                    None => terminated = true,
                }
            }
            let n = want_entries.len() as u64;
            let want = want.unwrap_or(if terminated { Ok(n) } else { Err(n) });
            for cut in 0..body.len() {
                for cut2 in [cut, (cut + 37).min(body.len())] {
                    let b = body.as_bytes();
                    let (e, r) = parse_all(&[&b[..cut], &b[cut..cut2], &b[cut2..]]);
                    let r = r.map_err(|e| match e {
                        BodyError::Malformed { line_no, .. } => line_no,
                        BodyError::Incomplete { lines } => lines,
                    });
                    assert_eq!(r, want, "{body:?} cut at {cut}, {cut2}");
                    if want.is_ok() {
                        assert_eq!(e, want_entries);
                    }
                }
            }
        }
    }

    #[test]
    fn complete_incomplete_malformed() {
        let l = format!("{H}+3 17\n");
        let body = format!("{l}{l}\n");
        // Every split point gives the same answer.
        for cut in 0..body.len() {
            let (a, b) = body.as_bytes().split_at(cut);
            let (e, r) = parse_all(&[a, b]);
            assert_eq!(e.len(), 2);
            assert_eq!(r, Ok(2));
        }
        assert_eq!(parse_all(&[b"\n"]).1, Ok(0));
        assert_eq!(
            parse_all(&[l.as_bytes()]).1,
            Err(BodyError::Incomplete { lines: 1 })
        );
        assert_eq!(parse_all(&[b""]).1, Err(BodyError::Incomplete { lines: 0 }));
        assert_eq!(
            parse_all(&[format!("{l}{H}+3").as_bytes()]).1,
            Err(BodyError::Incomplete { lines: 1 })
        );
        match parse_all(&[format!("{l}bogus line\n\n").as_bytes()]).1 {
            Err(BodyError::Malformed { line_no: 2, line }) => assert_eq!(line, "bogus line"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_all(&[format!("{l}\n{l}").as_bytes()]).1,
            Err(BodyError::Malformed { line_no: 3, .. })
        ));
    }
}
