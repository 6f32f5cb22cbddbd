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

/// Value of each byte as a lowercase hex digit; 0x10 marks any other byte.
static HEX_VAL: [u8; 256] = {
    let mut t = [0x10u8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

/// Exactly 32 lowercase hex digits, like [`BlockHash::from_hex`] but without
/// a branch per digit: the validity bits are OR-ed together and checked once.
/// This is the hot loop of index parsing (profiled at ~40 % of a `--dry-run`
/// over 10^7 blocks with the per-digit `match`; see docs/benchmarks.md).
#[inline]
fn hash_from_hex(s: &[u8]) -> Option<BlockHash> {
    let s: &[u8; 32] = s.try_into().ok()?;
    let mut out = [0u8; 16];
    let mut bad = 0u8;
    for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        let (hi, lo) = (HEX_VAL[pair[0] as usize], HEX_VAL[pair[1] as usize]);
        bad |= hi | lo;
        *o = (hi << 4) | (lo & 0x0f);
    }
    (bad & 0x10 == 0).then_some(BlockHash(out))
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
        while let Some(nl) = memchr::memchr(b'\n', chunk) {
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
