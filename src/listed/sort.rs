//! External sort of listed blocks into one sorted, deduplicated file of
//! fixed 20-byte records (16-byte hash, 4-byte little-endian size), so that
//! a list of 10^8 blocks costs disk, not memory.
//!
//! Entries are gathered in a buffer of at most `run_len`; a full buffer is
//! sorted, deduplicated and written to a temporary file (a "run"). Runs are
//! merged [`FAN_IN`] at a time as soon as that many are waiting at one level
//! (so at most `FAN_IN` files per level are open, however long the input),
//! and what is left is merged at the end into the final file. When the input fits one buffer, that buffer
//! becomes the file directly. Duplicates keep the entry with a known size
//! (entries order by hash, then size, and an unknown size is the largest).
//! Temporary files come from `tempfile` in `$TMPDIR` and vanish when closed.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, Write};

use keep_protocol::BlockHash;

use crate::index::Entry;

/// Bytes per record in run files and the final file.
pub const RECORD: usize = 20;

/// Runs merged at once: each open run costs one read buffer.
pub const FAN_IN: usize = 64;

const READ_BUF: usize = 64 << 10;

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

/// Sorts entries through temporary files.
pub struct Sorter {
    buf: Vec<Entry>,
    run_len: usize,
    /// Runs waiting to be merged, by level: a level-k run merges FAN_IN^k
    /// buffers' worth.
    levels: Vec<Vec<File>>,
}

impl Sorter {
    /// A sorter holding at most `run_len` entries in memory.
    pub fn new(run_len: usize) -> Sorter {
        Sorter {
            buf: Vec::new(),
            run_len: run_len.max(2),
            levels: Vec::new(),
        }
    }

    pub fn push(&mut self, e: Entry) -> std::io::Result<()> {
        if self.buf.len() >= self.run_len {
            self.spill()?;
        }
        self.buf.push(e);
        Ok(())
    }

    /// Sort, deduplicate and write the buffer as a run.
    fn spill(&mut self) -> std::io::Result<()> {
        self.buf.sort_unstable();
        self.buf.dedup_by_key(|e| e.hash);
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
            run = merge(std::mem::take(&mut self.levels[level]))?.0;
            level += 1;
        }
    }

    /// The sorted, deduplicated file (read from its start by offset) and
    /// its number of records.
    pub fn finish(mut self) -> std::io::Result<(File, u64)> {
        if self.levels.is_empty() {
            self.buf.sort_unstable();
            self.buf.dedup_by_key(|e| e.hash);
            let n = self.buf.len() as u64;
            let f = write_run(&self.buf)?;
            return Ok((f, n));
        }
        if !self.buf.is_empty() {
            self.spill()?;
        }
        // The memory goes back before the merge.
        self.buf = Vec::new();
        let mut runs: Vec<File> = std::mem::take(&mut self.levels)
            .into_iter()
            .flatten()
            .collect();
        loop {
            if runs.len() <= FAN_IN {
                return merge(runs);
            }
            let mut next = Vec::with_capacity(runs.len().div_ceil(FAN_IN));
            let mut rest = runs.into_iter();
            loop {
                let group: Vec<File> = rest.by_ref().take(FAN_IN).collect();
                if group.is_empty() {
                    break;
                }
                next.push(merge(group)?.0);
            }
            runs = next;
        }
    }
}

fn write_run(entries: &[Entry]) -> std::io::Result<File> {
    let mut w = BufWriter::with_capacity(READ_BUF, tempfile::tempfile()?);
    for e in entries {
        w.write_all(&encode(e))?;
    }
    let mut f = w.into_inner().map_err(|e| e.into_error())?;
    f.rewind()?;
    Ok(f)
}

/// One run being merged: its reader and its current entry.
struct Run {
    r: BufReader<File>,
}

impl Run {
    fn next(&mut self) -> std::io::Result<Option<Entry>> {
        let mut rec = [0u8; RECORD];
        match self.r.read_exact(&mut rec) {
            Ok(()) => Ok(Some(decode(&rec))),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// K-way merge of sorted runs into one deduplicated file.
fn merge(files: Vec<File>) -> std::io::Result<(File, u64)> {
    let mut runs: Vec<Run> = files
        .into_iter()
        .map(|f| Run {
            r: BufReader::with_capacity(READ_BUF, f),
        })
        .collect();
    let mut heap = BinaryHeap::with_capacity(runs.len());
    for (i, r) in runs.iter_mut().enumerate() {
        if let Some(e) = r.next()? {
            heap.push(Reverse((e, i)));
        }
    }
    let mut w = BufWriter::with_capacity(READ_BUF, tempfile::tempfile()?);
    let mut last: Option<BlockHash> = None;
    let mut n = 0u64;
    while let Some(Reverse((e, i))) = heap.pop() {
        if last != Some(e.hash) {
            w.write_all(&encode(&e))?;
            last = Some(e.hash);
            n += 1;
        }
        if let Some(next) = runs[i].next()? {
            heap.push(Reverse((next, i)));
        }
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
                s.push(*e).unwrap();
            }
            let (f, n) = s.finish().unwrap();
            assert_eq!(n, want.len() as u64, "run_len {run_len}");
            assert_eq!(read_all(f), want, "run_len {run_len}");
        }
        let (f, n) = Sorter::new(10).finish().unwrap();
        assert_eq!((n, read_all(f).len()), (0, 0));
    }
}
