//! Reading a block list: one locator or bare hash per line, or manifest text
//! (docs/protocol.md, "Manifest text"), as a stream of bytes of any size.
//!
//! The input is cut into words at ASCII whitespace and each word is judged
//! on its own, so the same rule serves every form (and mixtures, JSON dumps
//! whose manifests keep their spaces, `psql` output with `\n` escapes):
//!
//! - a **locator** is a word that parses as one (`HASH[+SIZE][+HINT...]`,
//!   keep-protocol's grammar): its hash, and its size when it has one, are
//!   taken; signatures and other hints are dropped;
//! - a word is **locator-shaped** when its part before the first `+` is at
//!   least [`MIN_SHAPED_DIGITS`] hex digits of either case. A locator-shaped
//!   word that is not a locator (31 or 33 digits, upper case, a bad size or
//!   hint) is **malformed**: the list is refused (exit 2), naming the line,
//!   because a list that names a block wrongly cannot prove anything;
//! - every other word (stream names `.`/`./dir`, file tokens `POS:LEN:NAME`,
//!   headers, punctuation, and numbers such as the timestamps of keepstore
//!   index lines, so that an index is a list too) is **not a locator** and
//!   is skipped.
//!
//! The input must be UTF-8 (checked across read boundaries) and must hold
//! at least one locator. Lines (for messages) are counted at `\n`. Memory is
//! one word of at most [`MAX_WORD`] bytes, whatever the length of a line: a
//! manifest line can hold millions of locators.

use keep_protocol::{Locator, LocatorError};

use crate::index::Entry;

/// A locator-shaped word has at least this many hex digits before its
/// first `+`: far more than any word of a manifest but a locator has (file
/// tokens start `POS:`, stream names `.`), fewer than a block hash, so that
/// a hash with a digit missing is caught, not skipped.
pub const MIN_SHAPED_DIGITS: usize = 16;

/// Words are kept up to this length; a longer locator-shaped word is
/// malformed (real locators, hints and all, are a few hundred bytes), a
/// longer other word is skipped unread.
pub const MAX_WORD: usize = 4096;

/// The size recorded for a block listed without one (a bare hash).
pub const UNKNOWN_SIZE: u32 = u32::MAX;

/// Why a list was refused; the caller names the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bad {
    /// Bytes that are not UTF-8, on this line.
    NotUtf8 { line: u64, byte: u8 },
    /// A locator-shaped word that is not a valid locator. `shown` is safe to
    /// print: the word's hex part only (never a hint, so never a signature).
    Malformed {
        line: u64,
        shown: String,
        why: String,
    },
}

/// What one word is.
#[derive(Debug, PartialEq, Eq)]
pub enum Word {
    Locator(Entry),
    NotLocator,
    Malformed { shown: String, why: String },
}

/// Judge one whole word (`overlong`: it was longer than [`MAX_WORD`] and
/// `word` is its first part).
pub fn classify(word: &[u8], overlong: bool) -> Word {
    let head_len = word.iter().position(|&b| b == b'+').unwrap_or(word.len());
    let head = &word[..head_len];
    if head.len() < MIN_SHAPED_DIGITS || !head.iter().all(u8::is_ascii_hexdigit) {
        return Word::NotLocator;
    }
    // A number (an index line's timestamp, a size): a hash shorter than 32
    // digits with no letter among them is too unlikely to guard against.
    if head.len() < 32 && head_len == word.len() && head.iter().all(u8::is_ascii_digit) {
        return Word::NotLocator;
    }
    let shown = {
        // Too long for a hash, it may be something else pasted in (a
        // signature is 40 hex digits): its start only.
        let keep = if head.len() > 32 { 8 } else { 32 };
        let mut s: String = head.iter().take(keep).map(|&b| b as char).collect();
        if head.len() > 32 {
            s.push('…');
        }
        if head_len < word.len() {
            s.push_str("+…");
        }
        s
    };
    let malformed = |why: String| Word::Malformed {
        shown: shown.clone(),
        why,
    };
    if overlong {
        return malformed(format!(
            "a word of more than {MAX_WORD} bytes cannot be a locator"
        ));
    }
    if head.len() != 32 {
        return malformed(format!(
            "it has {} hex digits, and a block hash has exactly 32",
            head.len()
        ));
    }
    if head.iter().any(u8::is_ascii_uppercase) {
        return malformed(
            "it has upper-case hex digits, and block hashes are written in lower case".into(),
        );
    }
    // Locator-shaped words are ASCII up to the first '+'; the rest was
    // checked as UTF-8 with the whole input.
    let Ok(text) = std::str::from_utf8(word) else {
        return malformed("it is not UTF-8".into());
    };
    match Locator::hash_and_size(text) {
        Ok((hash, size)) => Word::Locator(Entry {
            hash,
            size: size.map_or(UNKNOWN_SIZE, |s| s as u32),
        }),
        // Name the rule, never the part: a hint may be a signature.
        Err(LocatorError::BadSize(_)) => malformed(
            "its size hint is not a decimal number of bytes up to 64 MiB (67108864)".into(),
        ),
        Err(LocatorError::BadHint(_)) => malformed(
            "a part after a '+' is neither the size nor a hint (hints start with an upper-case letter)"
                .into(),
        ),
        Err(LocatorError::BadHash(_)) => malformed("its hash is not 32 lowercase hex digits".into()),
    }
}

/// Cuts a byte stream into words, checks it is UTF-8, counts lines, and
/// hands each locator to a callback.
#[derive(Default)]
pub struct Scanner {
    /// The line being read, from 1.
    line: u64,
    word: Vec<u8>,
    /// The line the current word started on.
    word_line: u64,
    overlong: bool,
    /// Bytes of a UTF-8 sequence cut by the end of the previous chunk.
    carry: Vec<u8>,
    /// Nothing read yet on the current line.
    line_empty: bool,
    /// Words that were locators.
    pub locators: u64,
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// Length of the UTF-8 sequence a leading byte starts (1 for anything else).
fn utf8_len(b: u8) -> usize {
    match b {
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf7 => 4,
        _ => 1,
    }
}

impl Scanner {
    pub fn new() -> Scanner {
        Scanner {
            line: 1,
            line_empty: true,
            ..Default::default()
        }
    }

    /// Lines seen so far (a last line without `\n` counts).
    pub fn lines(&self) -> u64 {
        if self.line_empty {
            self.line - 1
        } else {
            self.line
        }
    }

    /// Scan the next chunk of input.
    pub fn feed(&mut self, chunk: &[u8], on: &mut impl FnMut(Entry)) -> Result<(), Bad> {
        self.check_utf8(chunk)?;
        if let Some(&last) = chunk.last() {
            self.line_empty = last == b'\n';
        }
        for &b in chunk {
            if is_space(b) {
                self.end_word(on)?;
                if b == b'\n' {
                    self.line += 1;
                }
            } else {
                if self.word.is_empty() && !self.overlong {
                    self.word_line = self.line;
                }
                if self.word.len() < MAX_WORD {
                    self.word.push(b);
                } else {
                    self.overlong = true;
                }
            }
        }
        Ok(())
    }

    /// The input has ended.
    pub fn finish(&mut self, on: &mut impl FnMut(Entry)) -> Result<(), Bad> {
        if let Some(&b) = self.carry.first() {
            return Err(Bad::NotUtf8 {
                line: self.line,
                byte: b,
            });
        }
        self.end_word(on)
    }

    fn end_word(&mut self, on: &mut impl FnMut(Entry)) -> Result<(), Bad> {
        if self.word.is_empty() {
            return Ok(());
        }
        let w = classify(&self.word, self.overlong);
        self.word.clear();
        self.overlong = false;
        match w {
            Word::Locator(e) => {
                self.locators += 1;
                on(e);
                Ok(())
            }
            Word::NotLocator => Ok(()),
            Word::Malformed { shown, why } => Err(Bad::Malformed {
                line: self.word_line,
                shown,
                why,
            }),
        }
    }

    /// Check `chunk` continues valid UTF-8 (a sequence may straddle chunks).
    fn check_utf8(&mut self, chunk: &[u8]) -> Result<(), Bad> {
        let bad = |at: usize, line: u64| Bad::NotUtf8 {
            line: line + chunk[..at].iter().filter(|&&b| b == b'\n').count() as u64,
            byte: chunk[at],
        };
        let mut start = 0;
        if let Some(&lead) = self.carry.first() {
            let need = utf8_len(lead) - self.carry.len();
            let take = need.min(chunk.len());
            self.carry.extend_from_slice(&chunk[..take]);
            if take < need {
                return Ok(());
            }
            if std::str::from_utf8(&self.carry).is_err() {
                let byte = self.carry[0];
                return Err(Bad::NotUtf8 {
                    line: self.line,
                    byte,
                });
            }
            self.carry.clear();
            start = take;
        }
        match std::str::from_utf8(&chunk[start..]) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_none() => {
                self.carry
                    .extend_from_slice(&chunk[start + e.valid_up_to()..]);
                Ok(())
            }
            Err(e) => Err(bad(start + e.valid_up_to(), self.line)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keep_protocol::BlockHash;

    const FOO: &str = "acbd18db4cc2f85cedef654fccc4a4d8";

    fn scan(text: &[u8], chunk: usize) -> Result<Vec<Entry>, Bad> {
        let mut s = Scanner::new();
        let mut out = Vec::new();
        for c in text.chunks(chunk.max(1)) {
            s.feed(c, &mut |e| out.push(e))?;
        }
        s.finish(&mut |e| out.push(e))?;
        Ok(out)
    }

    fn e(hash: &str, size: u32) -> Entry {
        Entry {
            hash: hash.parse::<BlockHash>().unwrap(),
            size,
        }
    }

    #[test]
    fn words() {
        let loc = |w: &str| classify(w.as_bytes(), false);
        assert_eq!(loc(FOO), Word::Locator(e(FOO, UNKNOWN_SIZE)));
        assert_eq!(loc(&format!("{FOO}+3")), Word::Locator(e(FOO, 3)));
        assert_eq!(
            loc(&format!(
                "{FOO}+3+A89118b78732c33104a4d6231e8b5a5fa1e4301e3@7fffffff+K@zzzzz"
            )),
            Word::Locator(e(FOO, 3))
        );
        for not in [
            ".",
            "./dir",
            "0:3:foo",
            "0:3:foo\\n./sub",
            "manifest_text",
            "(3",
            "rows)",
        ] {
            assert_eq!(loc(not), Word::NotLocator, "{not}");
        }
        // Hex-led but too short to be meant as a hash; a hash in quotes.
        assert_eq!(loc("deadbeef"), Word::NotLocator);
        assert_eq!(loc(&format!("\"{FOO}+3\",")), Word::NotLocator);
        // Numbers: the timestamp of an index line (`HASH+SIZE UNIXNANO`).
        assert_eq!(loc("1611413425003139053"), Word::NotLocator);
        for (bad, why) in [
            ("1611413425003139053+3", "19 hex digits"),
            (&FOO[..31], "31 hex digits"),
            (&format!("{FOO}0")[..], "33 hex digits"),
            (&FOO.to_uppercase()[..], "upper-case"),
            (&format!("{FOO}+x")[..], "neither the size nor a hint"),
            (&format!("{FOO}+")[..], "neither the size nor a hint"),
            (&format!("{FOO}+99999999999")[..], "size hint"),
            (&format!("{FOO}+3,")[..], "size hint"),
        ] {
            match loc(bad) {
                Word::Malformed { why: w, .. } => assert!(w.contains(why), "{bad}: {w}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_malformed_word_never_shows_its_hints() {
        let sig = "89118b78732c33104a4d6231e8b5a5fa1e4301e3";
        let Word::Malformed { shown, .. } =
            classify(format!("{FOO}+3+a{sig}@7fffffff").as_bytes(), false)
        else {
            panic!("lower-case hint accepted");
        };
        assert_eq!(shown, format!("{FOO}+…"));
        assert!(!shown.contains(sig));
    }

    #[test]
    fn every_form_and_every_chunking() {
        let text = format!(
            "{FOO}\n{FOO}+3\r\n\n  {FOO}+3+Aabcdef0123456789@7fffffff \t\n\
             . {FOO}+3+A89118b78732c33104a4d6231e8b5a5fa1e4301e3@7fffffff 0:3:foo\\040bar\n\
             ./sub d41d8cd98f00b204e9800998ecf8427e+0 0:0:empty"
        );
        for chunk in [1, 2, 3, 7, 64, 1 << 20] {
            let got = scan(text.as_bytes(), chunk).unwrap();
            assert_eq!(got.len(), 5, "chunk {chunk}");
            assert_eq!(got[0], e(FOO, UNKNOWN_SIZE));
            assert_eq!(got[4], e("d41d8cd98f00b204e9800998ecf8427e", 0));
        }
    }

    #[test]
    fn lines_are_counted() {
        for (text, n) in [("", 0), ("a", 1), ("a\n", 1), ("a\nb", 2), ("\n\n", 2)] {
            let mut s = Scanner::new();
            for c in text.as_bytes().chunks(1) {
                s.feed(c, &mut |_| {}).unwrap();
            }
            assert_eq!(s.lines(), n, "{text:?}");
        }
    }

    #[test]
    fn lines_are_named() {
        let text = format!(". {FOO}+3 0:3:a\n\n. {} 0:3:b\n", &FOO[..31]);
        for chunk in [1, 5, 100] {
            match scan(text.as_bytes(), chunk) {
                Err(Bad::Malformed { line, shown, .. }) => {
                    assert_eq!(line, 3);
                    assert_eq!(shown, &FOO[..31]);
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn utf8_is_checked_across_chunks() {
        // Multi-byte characters in file names are fine, however cut.
        let good = format!(". {FOO}+3 0:3:caf\u{e9}\u{1f600}\n");
        for chunk in 1..8 {
            assert_eq!(scan(good.as_bytes(), chunk).unwrap().len(), 1);
        }
        let mut bad = format!("{FOO}\n{FOO}+3\n").into_bytes();
        bad.extend_from_slice(b"x\xff\n");
        for chunk in [1, 2, 3, 100] {
            assert_eq!(
                scan(&bad, chunk),
                Err(Bad::NotUtf8 {
                    line: 3,
                    byte: 0xff
                }),
                "chunk {chunk}"
            );
        }
        // A sequence cut off by the end of the input.
        let mut cut = format!("{FOO}\n").into_bytes();
        cut.push(0xe2);
        assert!(matches!(scan(&cut, 4), Err(Bad::NotUtf8 { line: 2, .. })));
    }

    #[test]
    fn long_words_cost_bounded_memory() {
        // A file token of 100 KiB is skipped; a locator-shaped one is refused.
        let long_name = format!(". {FOO}+3 0:3:{}\n", "n".repeat(100 << 10));
        assert_eq!(scan(long_name.as_bytes(), 4096).unwrap().len(), 1);
        let long_loc = format!("{FOO}+3+Z{}\n", "z".repeat(MAX_WORD));
        assert!(matches!(
            scan(long_loc.as_bytes(), 4096),
            Err(Bad::Malformed { line: 1, .. })
        ));
    }
}
