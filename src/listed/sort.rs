//! External sort of listed blocks into one sorted, deduplicated file of
//! fixed-size records ([`Listed`]: 16-byte hash, 4-byte little-endian size,
//! 2-byte want; [`Entry`] without the want), so that a list of 10^8 blocks
//! costs disk, not memory.
//!
//! Entries are gathered in a buffer of at most `run_len`; a full buffer is
//! sorted, deduplicated and written to a temporary file (a "run"). Runs are
//! merged [`FAN_IN`] at a time as soon as that many are waiting at one level
//! (so at most `FAN_IN` files per level are open, however long the input),
//! and what is left is merged at the end into the final file. When the input fits one buffer, that buffer
//! becomes the file directly. Duplicates keep the entry with a known size
//! (entries order by hash, then size, and an unknown size is the largest),
//! and the wants of all records of one hash are combined ([`Combine`]).
//! Temporary files come from `tempfile` in `$TMPDIR` and vanish when closed.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, Write};

use keep_protocol::BlockHash;

use crate::index::Entry;
use crate::wants::WantId;

/// Bytes per [`Entry`] record (lost and missing blocks).
pub const RECORD: usize = 20;

/// Runs merged at once: each open run costs one read buffer.
pub const FAN_IN: usize = 64;

const READ_BUF: usize = 64 << 10;

/// A listed block: its hash, size ([`crate::listed::UNKNOWN_SIZE`] when the
/// list gave none) and what its collections want ([`crate::wants`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Listed {
    pub hash: BlockHash,
    pub size: u32,
    pub want: WantId,
}

impl Listed {
    pub fn entry(&self) -> Entry {
        Entry {
            hash: self.hash,
            size: self.size,
        }
    }
}

/// What the sorter sorts: fixed-size records ordered by hash first.
pub trait Record: Copy + Ord {
    const SIZE: usize;
    fn hash(&self) -> BlockHash;
    fn encode(&self, out: &mut [u8]);
    fn decode(r: &[u8]) -> Self;
}

impl Record for Entry {
    const SIZE: usize = RECORD;
    fn hash(&self) -> BlockHash {
        self.hash
    }
    fn encode(&self, out: &mut [u8]) {
        out.copy_from_slice(&encode(self));
    }
    fn decode(r: &[u8]) -> Self {
        decode(r)
    }
}

/// 16-byte hash, 4-byte size, 2-byte want (little-endian).
impl Record for Listed {
    const SIZE: usize = 22;
    fn hash(&self) -> BlockHash {
        self.hash
    }
    fn encode(&self, out: &mut [u8]) {
        out[..16].copy_from_slice(&self.hash.0);
        out[16..20].copy_from_slice(&self.size.to_le_bytes());
        out[20..22].copy_from_slice(&self.want.to_le_bytes());
    }
    fn decode(r: &[u8]) -> Self {
        let e = decode(&r[..RECORD]);
        Listed {
            hash: e.hash,
            size: e.size,
            want: u16::from_le_bytes([r[20], r[21]]),
        }
    }
}

pub fn encode(e: &Entry) -> [u8; RECORD] {
    let mut r = [0u8; RECORD];
    r[..16].copy_from_slice(&e.hash.0);
    r[16..].copy_from_slice(&e.size.to_le_bytes());
    r
}

pub fn decode(r: &[u8]) -> Entry {
    let mut hash = [0u8; 16];
    hash.copy_from_slice(&r[..16]);
    let mut size = [0u8; 4];
    size.copy_from_slice(&r[16..RECORD]);
    Entry {
        hash: BlockHash(hash),
        size: u32::from_le_bytes(size),
    }
}

/// How two records of one hash become one: `kept` (the smaller: a known
/// size before an unknown one) takes in `later`.
pub trait Combine<R> {
    fn combine(&mut self, kept: &mut R, later: &R);
}

/// Keep the first record of a hash.
pub struct KeepFirst;

impl<R> Combine<R> for KeepFirst {
    fn combine(&mut self, _: &mut R, _: &R) {}
}

/// Listed blocks: the wants of every record of a hash, combined.
impl Combine<Listed> for crate::wants::Wants {
    fn combine(&mut self, kept: &mut Listed, later: &Listed) {
        kept.want = crate::wants::Wants::combine(self, kept.want, later.want);
    }
}

/// Sorts records through temporary files.
pub struct Sorter<R: Record> {
    buf: Vec<R>,
    run_len: usize,
    /// Runs waiting to be merged, by level: a level-k run merges FAN_IN^k
    /// buffers' worth.
    levels: Vec<Vec<File>>,
}

impl<R: Record> Sorter<R> {
    /// A sorter holding at most `run_len` records in memory.
    pub fn new(run_len: usize) -> Sorter<R> {
        Sorter {
            buf: Vec::new(),
            run_len: run_len.max(2),
            levels: Vec::new(),
        }
    }

    pub fn push(&mut self, e: R, c: &mut impl Combine<R>) -> std::io::Result<()> {
        if self.buf.len() >= self.run_len {
            self.spill(c)?;
        }
        self.buf.push(e);
        Ok(())
    }

    fn sort_buf(&mut self, c: &mut impl Combine<R>) {
        self.buf.sort_unstable();
        self.buf.dedup_by(|later, kept| {
            let same = later.hash() == kept.hash();
            if same {
                c.combine(kept, later);
            }
            same
        });
    }

    /// Sort, deduplicate and write the buffer as a run.
    fn spill(&mut self, c: &mut impl Combine<R>) -> std::io::Result<()> {
        self.sort_buf(c);
        let f = write_run(&self.buf)?;
        self.buf.clear();
        let mut level = 0;
        let mut run = f;
        loop {
            if self.levels.len() == level {
                self.levels.push(Vec::new());
            }
            self.levels[level].push(run);
            if self.levels[level].len() < FAN_IN {
                return Ok(());
            }
            run = merge::<R>(std::mem::take(&mut self.levels[level]), c)?.0;
            level += 1;
        }
    }

    /// The sorted, deduplicated file (read from its start by offset) and
    /// its number of records.
    pub fn finish(mut self, c: &mut impl Combine<R>) -> std::io::Result<(File, u64)> {
        if self.levels.is_empty() {
            self.sort_buf(c);
            let n = self.buf.len() as u64;
            let f = write_run(&self.buf)?;
            return Ok((f, n));
        }
        if !self.buf.is_empty() {
            self.spill(c)?;
        }
        // The memory goes back before the merge.
        self.buf = Vec::new();
        let mut runs: Vec<File> = std::mem::take(&mut self.levels)
            .into_iter()
            .flatten()
            .collect();
        loop {
            if runs.len() <= FAN_IN {
                return merge::<R>(runs, c);
            }
            let mut next = Vec::with_capacity(runs.len().div_ceil(FAN_IN));
            let mut rest = runs.into_iter();
            loop {
                let group: Vec<File> = rest.by_ref().take(FAN_IN).collect();
                if group.is_empty() {
                    break;
                }
                next.push(merge::<R>(group, c)?.0);
            }
            runs = next;
        }
    }
}

/// Read a sorted file's records in order.
pub fn records<R: Record>(file: File) -> impl Iterator<Item = std::io::Result<R>> {
    let mut run = Run {
        r: BufReader::with_capacity(READ_BUF, file),
    };
    std::iter::from_fn(move || run.next::<R>().transpose())
}

fn write_run<R: Record>(records: &[R]) -> std::io::Result<File> {
    let mut w = BufWriter::with_capacity(READ_BUF, tempfile::tempfile()?);
    let mut rec = [0u8; 32];
    for e in records {
        e.encode(&mut rec[..R::SIZE]);
        w.write_all(&rec[..R::SIZE])?;
    }
    let mut f = w.into_inner().map_err(|e| e.into_error())?;
    f.rewind()?;
    Ok(f)
}

/// One run being merged.
struct Run {
    r: BufReader<File>,
}

impl Run {
    fn next<R: Record>(&mut self) -> std::io::Result<Option<R>> {
        let mut rec = [0u8; 32];
        match self.r.read_exact(&mut rec[..R::SIZE]) {
            Ok(()) => Ok(Some(R::decode(&rec[..R::SIZE]))),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// K-way merge of sorted runs into one deduplicated file.
fn merge<R: Record>(files: Vec<File>, c: &mut impl Combine<R>) -> std::io::Result<(File, u64)> {
    let mut runs: Vec<Run> = files
        .into_iter()
        .map(|f| Run {
            r: BufReader::with_capacity(READ_BUF, f),
        })
        .collect();
    let mut heap = BinaryHeap::with_capacity(runs.len());
    for (i, r) in runs.iter_mut().enumerate() {
        if let Some(e) = r.next::<R>()? {
            heap.push(Reverse((e, i)));
        }
    }
    let mut w = BufWriter::with_capacity(READ_BUF, tempfile::tempfile()?);
    let mut pending: Option<R> = None;
    let mut n = 0u64;
    let mut rec = [0u8; 32];
    while let Some(Reverse((e, i))) = heap.pop() {
        match pending.as_mut() {
            Some(p) if p.hash() == e.hash() => c.combine(p, &e),
            _ => {
                if let Some(p) = pending.replace(e) {
                    p.encode(&mut rec[..R::SIZE]);
                    w.write_all(&rec[..R::SIZE])?;
                    n += 1;
                }
            }
        }
        if let Some(next) = runs[i].next::<R>()? {
            heap.push(Reverse((next, i)));
        }
    }
    if let Some(p) = pending {
        p.encode(&mut rec[..R::SIZE]);
        w.write_all(&rec[..R::SIZE])?;
        n += 1;
    }
    let mut f = w.into_inner().map_err(|e| e.into_error())?;
    f.rewind()?;
    Ok((f, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(mut f: File) -> Vec<Entry> {
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes).unwrap();
        bytes.chunks_exact(RECORD).map(decode).collect()
    }

    #[test]
    fn records_round_trip() {
        let e = Entry {
            hash: BlockHash::of(b"foo"),
            size: 0xdead_beef,
        };
        assert_eq!(decode(&encode(&e)), e);
    }

    /// Any run length, one level or two, gives the sorted set with one
    /// entry per hash (a known size kept over an unknown one).
    #[test]
    fn sorts_and_deduplicates_at_any_run_length() {
        let mut rng =
            <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(0x9E37_79B9_7F4A_7C15);
        let mut rnd = move || rand::Rng::gen::<u64>(&mut rng);
        let input: Vec<Entry> = (0..5000)
            .map(|_| {
                let n = rnd() % 1500;
                Entry {
                    hash: BlockHash::of(&n.to_le_bytes()),
                    size: if rnd() % 2 == 0 { n as u32 } else { u32::MAX },
                }
            })
            .collect();
        let mut want = input.clone();
        want.sort_unstable();
        want.dedup_by_key(|e| e.hash);
        for run_len in [2, 7, 64, 5000, 100_000] {
            let mut s = Sorter::new(run_len);
            for e in &input {
                s.push(*e, &mut KeepFirst).unwrap();
            }
            let (f, n) = s.finish(&mut KeepFirst).unwrap();
            assert_eq!(n, want.len() as u64, "run_len {run_len}");
            assert_eq!(read_all(f), want, "run_len {run_len}");
        }
        let (f, n) = Sorter::<Entry>::new(10).finish(&mut KeepFirst).unwrap();
        assert_eq!((n, read_all(f).len()), (0, 0));
    }
}
