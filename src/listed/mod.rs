//! Block lists: the blocks named by `--blocks-from` (keep-rsync) and
//! `-block-hash-file` (keep-block-check), in one place so both read the
//! same forms the same way.
//!
//! A list is read once ([`parse`]: locators, bare hashes or manifest text;
//! [`records`]: collection records, each block with what its collections
//! want; a bad list is a configuration error naming the file and line) into
//! a sorted, deduplicated temporary file of 22-byte records ([`sort`]: an
//! external sort), keeping only the hashes under the run's `-prefix`. From
//! then on nothing of it is in memory: a sub-prefix pass loads just its own
//! hashes ([`ListedBlocks::load`], a binary search then one sequential
//! read), and a probe run streams them ([`ListedBlocks::cursor`]).
//!
//! Memory (docs/scale-out.md, "Memory"): while reading, the sort buffer
//! holds at most `run_len` entries of 24 bytes (callers pass the index
//! budget: 24 B × budget, under the 40 B × budget an index pass may take,
//! and the two never overlap); while planning, a pass holds its listed
//! entries (24 B each), counted as one index line each by the pass
//! splitter. Disk: 22 B per distinct listed block, twice over during the
//! merge, in `$TMPDIR`.

pub mod parse;
pub mod records;
pub mod sort;

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;

pub use parse::UNKNOWN_SIZE;

use crate::error::{Error, Result};
use crate::wants::{Wants, RUN_WANT};
pub use records::Form;
use sort::{Listed, Record};

/// Where a list comes from, and how messages name it.
pub struct ListSource<'a> {
    /// A path, or `-` for stdin.
    pub path: &'a str,
    /// The flag that named it (`--blocks-from`, `-block-hash-file`).
    pub flag: &'a str,
}

impl ListSource<'_> {
    fn name(&self) -> String {
        if self.path == "-" {
            format!("the list read from stdin ({} -)", self.flag)
        } else {
            format!("the block list {} ({})", self.path, self.flag)
        }
    }
}

/// A list of blocks, sorted and deduplicated, on disk.
pub struct ListedBlocks {
    file: File,
    /// Distinct blocks under the prefix the list was read for.
    len: u64,
    /// Locators read, duplicates and other prefixes included.
    pub locators: u64,
    /// What the list was.
    pub form: Form,
    /// Collection records read (0 for a plain list).
    pub records: u64,
    /// What the blocks' collections want ([`Listed::want`] indexes it).
    pub wants: Wants,
}

/// How a list is read besides its source.
#[derive(Clone, Default)]
pub struct ListOptions {
    /// `--storage-classes`: replaces the classes collection records ask for.
    pub classes: Option<Vec<String>>,
}

/// The hash range `[lo, hi]` of a prefix of 0–32 lowercase hex digits.
pub fn prefix_range(prefix: &str) -> (u128, u128) {
    let digits = prefix.len().min(32) as u32;
    if digits == 0 {
        return (0, u128::MAX);
    }
    let p = u128::from_str_radix(&prefix[..digits as usize], 16).unwrap_or(0);
    let free = 4 * (32 - digits);
    let lo = p.checked_shl(free).unwrap_or(0);
    let mask = if free == 0 {
        0
    } else {
        u128::MAX >> (128 - free)
    };
    (lo, lo | mask)
}

fn key(e: &Listed) -> u128 {
    u128::from_be_bytes(e.hash.0)
}

const RECORD: usize = <Listed as Record>::SIZE;

/// Read the list `path` names (a file or `-`) for `flag`, keeping the
/// blocks under `prefix`, off the async runtime: a list of 10^8 locators
/// takes a while to read and sort.
pub async fn read_list(
    path: &str,
    flag: &'static str,
    prefix: &str,
    run_len: u64,
    opts: ListOptions,
) -> Result<ListedBlocks> {
    let (path, prefix) = (path.to_string(), prefix.to_string());
    let run_len = usize::try_from(run_len).unwrap_or(usize::MAX);
    tokio::task::spawn_blocking(move || {
        ListedBlocks::read(&ListSource { path: &path, flag }, &prefix, run_len, &opts)
    })
    .await
    .unwrap_or_else(|e| Err(Error::config(format!("reading the block list failed: {e}"))))
}

/// [`read_list`] for a run that may have no list.
pub async fn read_for_run(
    path: Option<&str>,
    flag: &'static str,
    prefix: &str,
    run_len: u64,
    opts: ListOptions,
) -> Result<Option<ListedBlocks>> {
    match path {
        Some(p) => read_list(p, flag, prefix, run_len, opts).await.map(Some),
        None => Ok(None),
    }
}

impl ListedBlocks {
    /// Read a list, keeping the blocks under `prefix`, sorting with at most
    /// `run_len` entries in memory. A list that cannot be read, is not
    /// UTF-8, has a malformed locator or none at all is a configuration
    /// error (exit 2) naming the file and line.
    pub fn read(
        src: &ListSource<'_>,
        prefix: &str,
        run_len: usize,
        opts: &ListOptions,
    ) -> Result<ListedBlocks> {
        let name = src.name();
        if src.path == "-" {
            Self::read_from(std::io::stdin().lock(), &name, prefix, run_len, opts)
        } else {
            let f = File::open(src.path).map_err(|e| {
                Error::config(format!(
                    "cannot open {name}: {}. Give a file of block locators, hashes or manifest \
                     text, or - for stdin.",
                    io_why(&e)
                ))
            })?;
            Self::read_from(f, &name, prefix, run_len, opts)
        }
    }

    /// [`Self::read`] from any reader; `name` names it in messages. The
    /// form (locators, or collection records) is told from the first line.
    pub fn read_from(
        mut input: impl Read,
        name: &str,
        prefix: &str,
        run_len: usize,
        opts: &ListOptions,
    ) -> Result<ListedBlocks> {
        let read_err = |line: u64, e: &std::io::Error| {
            Error::config(format!(
                "cannot read {name} (after line {line}): {}.",
                io_why(e)
            ))
        };
        // The first chunk tells the form, then is read again as the rest.
        let mut head = vec![0u8; 256 << 10];
        let mut got = 0;
        while got < head.len() {
            match input.read(&mut head[got..]) {
                Ok(0) => break,
                Ok(n) => {
                    got += n;
                    if head[..got].contains(&b'\n') {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(read_err(0, &e)),
            }
        }
        head.truncate(got);
        let form = records::detect(&head);
        let input = std::io::Cursor::new(head).chain(input);
        let (lo, hi) = prefix_range(prefix);
        let mut sorter = sort::Sorter::<Listed>::new(run_len);
        let mut wants = Wants::new();
        let mut io_err: Option<std::io::Error> = None;
        // Under the prefix, to the sorter (which combines the wants of a
        // hash's records in `w` as it spills).
        let mut keep = |l: Listed, w: &mut Wants| {
            let k = key(&l);
            if (lo..=hi).contains(&k) && io_err.is_none() {
                if let Err(err) = sorter.push(l, w) {
                    io_err = Some(err);
                }
            }
        };
        let (locators, records) = if form == Form::Plain {
            let mut scanner = parse::Scanner::new();
            let mut input = input;
            let mut buf = vec![0u8; 256 << 10];
            let mut plain = |e: crate::index::Entry| {
                let l = Listed {
                    hash: e.hash,
                    size: e.size,
                    want: RUN_WANT,
                };
                keep(l, &mut wants)
            };
            loop {
                let n = match input.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(read_err(scanner.lines(), &e)),
                };
                scanner
                    .feed(&buf[..n], &mut plain)
                    .map_err(|b| bad_list(name, b))?;
            }
            scanner.finish(&mut plain).map_err(|b| bad_list(name, b))?;
            if scanner.locators == 0 {
                let lines = scanner.lines();
                return Err(Error::config(format!(
                    "{name} names no block: none of its {lines} line{} holds a block locator or \
                     hash. Give one locator (HASH+SIZE) or hash per line, manifest text (stream \
                     lines with their locators), or collection records (CSV with a \
                     manifest_text column, or JSON lines).",
                    if lines == 1 { "" } else { "s" }
                )));
            }
            (scanner.locators, 0)
        } else {
            let reading = records::Reading {
                classes: opts.classes.as_deref(),
            };
            let counts = records::read(input, form, &reading, &mut wants, &mut keep)
                .map_err(|e| bad_records(name, form, e))?;
            (counts.locators, counts.records)
        };
        if let Some(e) = io_err {
            return Err(spill_error(&e));
        }
        let (file, len) = sorter.finish(&mut wants).map_err(|e| spill_error(&e))?;
        if let Some(why) = wants.overflowed() {
            return Err(Error::config(format!(
                "{name}: its collections ask for {why}, more than keep-rsync can track; give \
                 -replications N and --storage-classes to use one for every block."
            )));
        }
        Ok(ListedBlocks {
            file,
            len,
            locators,
            form,
            records,
            wants,
        })
    }

    /// Distinct blocks listed under the prefix the list was read for.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn entry_at(&self, i: u64) -> std::io::Result<Listed> {
        let mut rec = [0u8; RECORD];
        self.file.read_exact_at(&mut rec, i * RECORD as u64)?;
        Ok(Listed::decode(&rec))
    }

    /// Index of the first entry whose hash is at least `k`.
    fn lower_bound(&self, k: u128) -> std::io::Result<u64> {
        let (mut lo, mut hi) = (0, self.len);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if key(&self.entry_at(mid)?) < k {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }

    /// The record range of a prefix.
    fn span(&self, prefix: &str) -> Result<(u64, u64)> {
        let (lo, hi) = prefix_range(prefix);
        let start = self.lower_bound(lo).map_err(|e| spill_error(&e))?;
        let end = match hi.checked_add(1) {
            Some(h) => self.lower_bound(h).map_err(|e| spill_error(&e))?,
            None => self.len,
        };
        Ok((start, end.max(start)))
    }

    /// Listed blocks whose hash starts with `prefix` (two binary searches).
    pub fn count(&self, prefix: &str) -> Result<u64> {
        let (a, b) = self.span(prefix)?;
        Ok(b - a)
    }

    /// The listed blocks of one pass, sorted.
    pub fn load(&self, prefix: &str) -> Result<Vec<Listed>> {
        let (a, b) = self.span(prefix)?;
        let mut out = Vec::with_capacity((b - a) as usize);
        for e in self.cursor_span(a, b) {
            out.push(e?);
        }
        Ok(out)
    }

    /// The listed blocks under `prefix`, read as they are needed.
    pub fn cursor(&self, prefix: &str) -> Result<Cursor<'_>> {
        let (a, b) = self.span(prefix)?;
        Ok(self.cursor_span(a, b))
    }

    fn cursor_span(&self, at: u64, end: u64) -> Cursor<'_> {
        Cursor {
            file: &self.file,
            at,
            end,
            buf: Vec::new(),
            pos: 0,
        }
    }
}

/// Sequential reader of a record range, 64 KiB at a time.
pub struct Cursor<'a> {
    file: &'a File,
    at: u64,
    end: u64,
    buf: Vec<u8>,
    pos: usize,
}

impl Iterator for Cursor<'_> {
    type Item = Result<Listed>;

    fn next(&mut self) -> Option<Result<Listed>> {
        if self.pos >= self.buf.len() {
            if self.at >= self.end {
                return None;
            }
            let n = (self.end - self.at).min(3276) as usize;
            self.buf.resize(n * RECORD, 0);
            if let Err(e) = self
                .file
                .read_exact_at(&mut self.buf, self.at * RECORD as u64)
            {
                self.at = self.end;
                self.buf.clear();
                return Some(Err(spill_error(&e)));
            }
            self.at += n as u64;
            self.pos = 0;
        }
        let e = Listed::decode(&self.buf[self.pos..self.pos + RECORD]);
        self.pos += RECORD;
        Some(Ok(e))
    }
}

fn io_why(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "it does not exist".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

fn bad_list(name: &str, b: parse::Bad) -> Error {
    match b {
        parse::Bad::NotUtf8 { line, byte } => Error::config(format!(
            "{name}, line {line}: not UTF-8 text (byte 0x{byte:02x}). Give a text file of block \
             locators, hashes or manifest text."
        )),
        parse::Bad::Malformed { line, shown, why } => Error::config(format!(
            "{name}, line {line}: {shown:?} looks like a block locator but is not one: {why}. A \
             locator is 32 lowercase hex digits, optionally +SIZE and +HINTs; fix or remove the \
             word, or the line."
        )),
    }
}

fn bad_records(name: &str, form: Form, e: records::ReadError) -> Error {
    match e {
        records::ReadError::Io { line, error } => Error::config(format!(
            "cannot read {name} (after line {line}): {}.",
            io_why(&error)
        )),
        records::ReadError::Bad(b) => {
            let of = match &b.uuid {
                Some(u) => format!(" (collection {u})"),
                None => String::new(),
            };
            Error::config(format!(
                "{name}, line {}{of}: {}. The list was read as {} (from its first line); fix \
                 or remove the record.",
                b.line,
                b.why,
                form.describe()
            ))
        }
    }
}

/// The temporary file holding the sorted list could not be written or read.
fn spill_error(e: &std::io::Error) -> Error {
    Error::unreadable(format!(
        "cannot keep the sorted block list in a temporary file ({e}): it takes 20 bytes per \
         listed block, twice over while sorting, in $TMPDIR ({}). Point TMPDIR at a filesystem \
         with room.",
        std::env::temp_dir().display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use keep_protocol::BlockHash;

    #[test]
    fn prefix_ranges() {
        assert_eq!(prefix_range(""), (0, u128::MAX));
        assert_eq!(prefix_range("f"), (0xf << 124, u128::MAX));
        assert_eq!(prefix_range("0"), (0, (1 << 124) - 1));
        let h = "acbd18db4cc2f85cedef654fccc4a4d8";
        let v = u128::from_str_radix(h, 16).unwrap();
        assert_eq!(prefix_range(h), (v, v));
        let (lo, hi) = prefix_range("acb");
        assert!(lo <= v && v <= hi);
        assert_eq!(hi - lo, (1 << 116) - 1);
    }

    fn list(hashes: &[BlockHash], prefix: &str, run_len: usize) -> Result<ListedBlocks> {
        let text: String = hashes.iter().map(|h| format!("{h}+1\n")).collect();
        ListedBlocks::read_from(text.as_bytes(), "t", prefix, run_len, &Default::default())
    }

    #[test]
    fn passes_see_their_own_blocks() {
        let hashes: Vec<BlockHash> = (0..3000u32)
            .map(|n| BlockHash::of(&(n % 2000).to_le_bytes()))
            .collect();
        let mut distinct = hashes.clone();
        distinct.sort();
        distinct.dedup();
        for run_len in [100, 100_000] {
            let l = list(&hashes, "", run_len).unwrap();
            assert_eq!((l.len(), l.locators), (2000, 3000));
            assert_eq!(l.count("").unwrap(), 2000);
            let mut all = Vec::new();
            for p in 0..16 {
                let p = format!("{p:x}");
                let pass = l.load(&p).unwrap();
                assert_eq!(pass.len() as u64, l.count(&p).unwrap());
                assert!(pass.iter().all(|e| e.hash.has_prefix(&p) && e.size == 1));
                all.extend(pass.iter().map(|e| e.hash));
            }
            assert_eq!(all, distinct);
            let streamed: Vec<BlockHash> = l.cursor("").unwrap().map(|e| e.unwrap().hash).collect();
            assert_eq!(streamed, distinct);
            assert_eq!(l.count(&distinct[7].to_string()).unwrap(), 1);
        }
        // Read for one prefix: the rest is not kept, but was read.
        let l = list(&hashes, "a", 100).unwrap();
        assert_eq!(
            l.len(),
            distinct.iter().filter(|h| h.has_prefix("a")).count() as u64
        );
        assert_eq!(l.locators, 3000);
    }

    #[test]
    fn bad_lists_are_config_errors_naming_the_line() {
        let e = ListedBlocks::read_from(
            &b"hello\nworld\n"[..],
            "the list x",
            "",
            10,
            &Default::default(),
        )
        .err()
        .unwrap();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("names no block"), "{e}");
        let e = ListedBlocks::read_from(&b""[..], "the list x", "", 10, &Default::default())
            .err()
            .unwrap();
        assert!(e.to_string().contains("names no block"), "{e}");
        let e = ListedBlocks::read_from(
            &b"acbd18db4cc2f85cedef654fccc4a4d8\nACBD18DB4CC2F85CEDEF654FCCC4A4D8\n"[..],
            "the list x",
            "",
            10,
            &Default::default(),
        )
        .err()
        .unwrap();
        assert!(e.to_string().starts_with("the list x, line 2: "), "{e}");
        // Only blocks outside the prefix: not an error, an empty shard.
        let l = ListedBlocks::read_from(
            &b"acbd18db4cc2f85cedef654fccc4a4d8\n"[..],
            "t",
            "0",
            10,
            &Default::default(),
        )
        .unwrap();
        assert!(l.is_empty());
        assert_eq!(l.locators, 1);
    }
}
